"""Channels: instrumented ``asyncio.Queue`` subclasses that show depth, capacity,
who is blocked sending, receiving or in ``join()``, and how a channel closed;
plus ``oneshot`` (one value, one receiver) and ``watch`` (latest value)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._config import STATE
from ._registry import REGISTRY, Clock, Location, WaitSet, base_attrs, capture_location, new_id
from ._tasks import (
    _await_frames,
    current_task_entity,
    current_waiter,
    holder_id,
    id_of,
    running_task,
)
from .types import Edge, Node

T = TypeVar("T")

_StdQueue = asyncio.Queue
_HAS_SHUTDOWN = hasattr(asyncio.Queue, "shutdown")  # 3.13+

if _HAS_SHUTDOWN:
    #: Raised by ``put`` on a closed channel and by ``get`` on a closed, drained
    #: one.  On 3.13+ it *is* ``asyncio.QueueShutDown``.
    ChannelClosed: type[Exception] = asyncio.QueueShutDown  # type: ignore[attr-defined]
else:
    class ChannelClosed(Exception):  # type: ignore[no-redef]
        """Raised by ``put`` on a closed channel and by ``get`` on a closed,
        drained one (``asyncio.QueueShutDown`` on 3.13+)."""


def _abandon_wait(queue: Any, waiters: Any, fut: asyncio.Future[None], ready: bool) -> None:
    """A channel wait that ends in an exception (cancelled, or closed before
    3.13), as the stdlib's ``Queue.get``/``put`` handle it: drop its future and,
    if it had been woken for an item or slot that is still there (``ready``),
    pass the wake-up on to the next waiter."""
    fut.cancel()  # in case it is not done yet
    with contextlib.suppress(ValueError):  # the waking put/get (or a close) removed it
        waiters.remove(fut)
    if ready and not fut.cancelled():
        queue._wakeup_next(waiters)


class _Closable(asyncio.Queue[T]):
    """``close()`` for every Python version: ``shutdown()`` where it exists
    (3.13+), our own equivalent before.  No per-operation overrides: before
    3.13 a closed channel switches to a subclass whose operations check."""

    _closed_flag = False
    _close_cause: str | None = None

    def close(self, cause: str | None = None) -> None:
        """Close the channel: later sends raise :class:`ChannelClosed`; receivers
        drain what is left, then get :class:`ChannelClosed`."""
        if self._closed_flag:
            return
        self._closed_flag = True
        self._close_cause = cause
        if _HAS_SHUTDOWN:
            asyncio.Queue.shutdown(self)  # type: ignore[attr-defined]
            return
        self.__class__ = _closed_class(type(self))
        for waiters in (self._putters, self._getters):  # type: ignore[attr-defined]
            for fut in list(waiters):
                if not fut.done():
                    fut.set_exception(ChannelClosed(cause or "channel closed"))

    @property
    def closed(self) -> bool:
        return self._closed_flag or bool(getattr(self, "_is_shutdown", False))

    if _HAS_SHUTDOWN:
        def shutdown(self, immediate: bool = False) -> None:
            if not self._closed_flag:
                self._closed_flag = True
                self._close_cause = "shutdown(immediate=True)" if immediate else "shutdown"
            super().shutdown(immediate)  # type: ignore[misc]


_CLOSED_CLASSES: dict[type[Any], type[Any]] = {}


def _closed_class(cls: type[Any]) -> type[Any]:
    """``cls`` plus closed checks on every operation (before 3.13)."""
    closed = _CLOSED_CLASSES.get(cls)
    if closed is not None:
        return closed

    def _err(self: Any) -> Exception:
        return ChannelClosed(self._close_cause or "channel closed")

    def put_nowait(self: Any, item: Any) -> None:
        raise _err(self)

    def get_nowait(self: Any) -> Any:
        if self.empty():
            raise _err(self)
        return super(closed, self).get_nowait()  # type: ignore[arg-type]

    async def put(self: Any, item: Any) -> None:
        raise _err(self)

    async def get(self: Any) -> Any:
        return get_nowait(self)

    closed = type(cls.__name__, (cls,), {
        "put_nowait": put_nowait, "get_nowait": get_nowait, "put": put, "get": get,
        "send": put, "recv": get, "send_nowait": put_nowait, "recv_nowait": get_nowait,
        "__module__": cls.__module__, "__qualname__": cls.__qualname__,
    })
    _CLOSED_CLASSES[cls] = closed
    return closed


class PlainChannel(_Closable[T], Generic[T]):
    """What ``channel()`` returns with peeps disabled: a plain queue plus the
    ``send``/``recv`` names and ``close()``, with no bookkeeping at all."""

    send = _Closable.put
    recv = _Closable.get
    send_nowait = _Closable.put_nowait
    recv_nowait = _Closable.get_nowait


@dataclass(frozen=True)
class ChannelStatistics:
    """``Channel.statistics()``."""

    capacity: int | None
    depth: int
    sent: int
    received: int
    blocked_senders: int
    blocked_receivers: int
    blocked_joiners: int
    unfinished_tasks: int
    tasks_done: int
    closed: bool
    close_cause: str | None
    closed_by: str | None


class Channel(_Closable[T], Generic[T]):
    """A bounded or unbounded queue that describes itself in the graph.

    Drop-in for ``asyncio.Queue`` (``put``/``get``/``task_done``/``join`` and
    friends) with ``send``/``recv`` aliases and ``close()``.  Blocked senders,
    receivers and joiners become ``needs`` edges (op ``send``/``recv``/``join``).
    Events: ``channel.send.blocked``/``unblocked`` (at most one each per
    100 ms, with a ``repeats`` count), ``channel.join.blocked``,
    ``channel.closed``.  A receiver waiting on an empty channel is not an event:
    that is a consumer pool's idle state.
    """

    def __init__(self, name: str | None = None, capacity: int | None = None,
                 **meta: Any) -> None:
        # ``maxsize`` keeps ``Channel(maxsize=n)`` working as a drop-in Queue.
        maxsize = meta.pop("maxsize", None)
        if capacity is None and maxsize:
            capacity = int(maxsize)
        super().__init__(maxsize=capacity or 0)
        self._peeps_id = new_id("channel")
        self._peeps_location = capture_location()
        self._peeps_name = name if name is not None else _default_label(self._peeps_location)
        self._peeps_meta = meta or None
        self._peeps_created_mono_ns = time.monotonic_ns()
        self._peeps_received = 0
        self._peeps_tasks_done = 0
        self._peeps_closed_by: str | None = None
        self._peeps_closed_mono_ns: int | None = None
        self._peeps_waiters = WaitSet()
        REGISTRY.track(self)

    @property
    def name(self) -> str:
        return self._peeps_name

    def get_nowait(self) -> T:
        if self._queue:  # type: ignore[attr-defined]
            # The stdlib's non-empty path (3.11-3.13), inlined: an item is
            # taken even after shutdown, so there is nothing else to check.
            item: T = self._get()
            self._wakeup_next(self._putters)  # type: ignore[attr-defined]
        else:
            item = super().get_nowait()  # raises QueueEmpty (or QueueShutDown)
        self._peeps_received += 1
        return item

    async def put(self, item: T) -> None:
        # ``not self.full()``, inlined (``full`` and ``qsize`` are two calls).
        maxsize = self._maxsize  # type: ignore[attr-defined]
        if maxsize <= 0 or len(self._queue) < maxsize or self._closed_flag:  # type: ignore[attr-defined]
            return self.put_nowait(item)
        # Blocked: the stdlib's wait loop (3.11-3.13) and the WaitSet's
        # add/remove inlined, as in ``get``.
        queue = self._queue  # type: ignore[attr-defined]
        waiter = running_task()  # the task itself: named only if described
        waiting = self._peeps_waiters._waiting
        since = time.monotonic_ns()
        if waiter is not None:
            waiting[waiter] = ("send", since)
        if REGISTRY.repeat_due(self, "channel.send.blocked", since):
            REGISTRY.emit_repeated(self, "channel.send.blocked", {"depth": len(queue)},
                                   holder_id(waiter))
        try:
            putters = self._putters  # type: ignore[attr-defined]
            while len(queue) >= maxsize:
                if _HAS_SHUTDOWN and self._is_shutdown:  # type: ignore[attr-defined]
                    raise asyncio.QueueShutDown  # type: ignore[attr-defined]
                putter = self._get_loop().create_future()  # type: ignore[attr-defined]
                putters.append(putter)
                try:
                    await putter
                except BaseException:
                    _abandon_wait(self, putters, putter, len(queue) < maxsize)
                    raise
            self.put_nowait(item)
        finally:
            if waiter is not None:
                waiting.pop(waiter, None)
        if REGISTRY.repeat_due(self, "channel.send.unblocked"):
            REGISTRY.emit_repeated(self, "channel.send.unblocked", None, holder_id(waiter))
        return None

    async def get(self) -> T:
        queue = self._queue  # type: ignore[attr-defined]
        if queue:
            return self.get_nowait()
        # A worker pool's consumers wait here whenever the channel runs dry, so
        # this is a hot path too: the stdlib's wait loop (3.11-3.13) is inlined
        # (awaiting ``super().get()`` made a second coroutine and a super
        # object per wait), and so is the WaitSet's add/remove.
        waiter = running_task()  # the task itself: named only if described
        waiting = self._peeps_waiters._waiting
        if waiter is not None:
            waiting[waiter] = ("recv", time.monotonic_ns())
        # No event: a consumer waiting on an empty channel is a pool's idle
        # state, not news; its ``needs`` edge shows it while it lasts.
        try:
            getters = self._getters  # type: ignore[attr-defined]
            while not queue:
                if _HAS_SHUTDOWN and self._is_shutdown:  # type: ignore[attr-defined]
                    raise asyncio.QueueShutDown  # type: ignore[attr-defined]
                getter = self._get_loop().create_future()  # type: ignore[attr-defined]
                getters.append(getter)
                try:
                    await getter
                except BaseException:
                    _abandon_wait(self, getters, getter, bool(queue))
                    raise
            return self.get_nowait()
        finally:
            if waiter is not None:
                waiting.pop(waiter, None)

    def task_done(self) -> None:
        super().task_done()
        self._peeps_tasks_done += 1

    async def join(self) -> None:
        if not self._unfinished_tasks:  # type: ignore[attr-defined]
            return
        waiter = current_waiter()
        self._peeps_waiters.add(waiter, "join")
        REGISTRY.emit(self._peeps_id, "channel.join.blocked",
                      {"unfinished_tasks": self._unfinished_tasks},  # type: ignore[attr-defined]
                      id_of(waiter))
        try:
            await super().join()
        finally:
            self._peeps_waiters.remove(waiter)

    def close(self, cause: str | None = None) -> None:
        if not self.closed:
            self._record_close(cause or "close")
        super().close(cause)

    if _HAS_SHUTDOWN:
        def shutdown(self, immediate: bool = False) -> None:
            if not self.closed:
                self._record_close("shutdown(immediate=True)" if immediate else "shutdown")
            super().shutdown(immediate)

    def _record_close(self, cause: str) -> None:
        closer = current_waiter()
        self._peeps_closed_by = id_of(closer)
        self._peeps_closed_mono_ns = time.monotonic_ns()
        REGISTRY.emit(self._peeps_id, "channel.closed",
                      {"cause": cause, "depth": self.qsize()}, self._peeps_closed_by)

    send = put
    recv = get
    send_nowait = asyncio.Queue.put_nowait
    recv_nowait = get_nowait

    def statistics(self) -> ChannelStatistics:
        waiting = self._peeps_waiters.counts()
        return ChannelStatistics(
            capacity=self.maxsize or None,
            depth=self.qsize(),
            # Every item put was either received or is still queued.
            sent=self._peeps_received + self.qsize(),
            received=self._peeps_received,
            blocked_senders=waiting.get("send", 0),
            blocked_receivers=waiting.get("recv", 0),
            blocked_joiners=waiting.get("join", 0),
            unfinished_tasks=int(self._unfinished_tasks),  # type: ignore[attr-defined]
            tasks_done=self._peeps_tasks_done,
            closed=self.closed,
            close_cause=self._close_cause,
            closed_by=self._peeps_closed_by,
        )

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self._peeps_created_mono_ns, self._peeps_location,
                           self._peeps_meta, now)
        stats = self.statistics()
        attrs.update(
            capacity=stats.capacity,
            depth=stats.depth,
            sent=stats.sent,
            received=stats.received,
            blocked_senders=stats.blocked_senders,
            blocked_receivers=stats.blocked_receivers,
            blocked_joiners=stats.blocked_joiners,
            unfinished_tasks=stats.unfinished_tasks,
            tasks_done=stats.tasks_done,
            closed=stats.closed,
        )
        if stats.closed:
            attrs["close_cause"] = stats.close_cause
            attrs["closed_by"] = stats.closed_by
            if self._peeps_closed_mono_ns is not None:
                attrs["closed_at_ns"] = now.wall_of(self._peeps_closed_mono_ns)
        node: Node = {"id": self._peeps_id, "kind": "channel", "label": self._peeps_name,
                      "attrs": attrs}
        edges = self._peeps_waiters.needs_edges(self._peeps_id, now)
        for edge in edges:
            if edge["attrs"]["op"] == "join":
                edge["attrs"]["unfinished_tasks"] = stats.unfinished_tasks
        return node, edges


def _default_label(location: Location | None) -> str:
    if location is None:
        return "channel"
    return f"channel@{location[0].rsplit('/', 1)[-1]}:{location[1]}"


def channel(name: str, capacity: int | None = None, **meta: Any) -> asyncio.Queue[Any]:
    """A named queue: bounded when ``capacity`` is given, unbounded otherwise.

    Returns a :class:`Channel` (``PlainChannel`` when peeps is disabled); both are
    ``asyncio.Queue`` subclasses with ``send``/``recv`` aliases and ``close()``.
    """
    if capacity is not None and capacity <= 0:
        raise ValueError(f"channel capacity must be positive or None, got {capacity!r}")
    if not STATE.enabled:
        return PlainChannel(maxsize=capacity or 0)
    return Channel(name, capacity, **meta)


class Queue(Channel[T], Generic[T]):
    """``asyncio.Queue(maxsize=0)``-compatible constructor for :func:`peeps.patch`:
    an unnamed :class:`Channel` (plain ``asyncio.Queue`` when disabled)."""

    def __new__(cls, maxsize: int = 0, **meta: Any) -> Queue[T]:
        if cls is Queue and not STATE.enabled:
            return _StdQueue(maxsize)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, maxsize: int = 0, **meta: Any) -> None:
        name = meta.pop("name", None)
        super().__init__(name, maxsize or None, **meta)


# -- oneshot -----------------------------------------------------------------------


class OneshotClosed(Exception):
    """The oneshot will never get a value: its sender was closed or dropped."""


@dataclass(frozen=True)
class OneshotStatistics:
    """``OneshotReceiver.statistics()``."""

    state: str
    sender_alive: bool
    receiver_waiting: bool
    close_cause: str | None


class _OneshotCore:
    """The shared state of one oneshot pair (uninstrumented)."""

    def __init__(self) -> None:
        self.value: Any = None
        self.state = "pending"  # pending | sent | received | closed
        self.close_cause: str | None = None
        self.fut: asyncio.Future[None] | None = None
        self.sender_ref: weakref.ref[OneshotSender[Any]] | None = None

    def _wake(self) -> None:
        fut = self.fut
        if fut is None or fut.done():
            return
        try:
            if fut.get_loop() is _running_loop():
                fut.set_result(None)
            else:
                fut.get_loop().call_soon_threadsafe(_set_if_pending, fut)
        except RuntimeError:  # the loop is closed: nobody can be waiting any more
            pass

    def closed_by_drop(self) -> None:
        if self.state == "pending":
            self.state = "closed"
            self.close_cause = "sender_dropped"
            self._wake()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _set_if_pending(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class OneshotSender(Generic[T]):
    """The sending half: ``send(value)`` once, or ``close()``.  Dropping it
    unresolved closes the oneshot (the receiver gets :class:`OneshotClosed`)."""

    __slots__ = ("__weakref__", "_core")

    def __init__(self, core: _OneshotCore) -> None:
        self._core = core

    def send(self, value: T) -> bool:
        """Deliver ``value``; ``False`` if the oneshot was already used or closed."""
        core = self._core
        if core.state != "pending":
            return False
        core.value = value
        core.state = "sent"
        if isinstance(core, _TrackedOneshot):
            core.on_send()
        core._wake()
        return True

    def close(self, cause: str = "closed") -> None:
        core = self._core
        if core.state == "pending":
            core.state = "closed"
            core.close_cause = cause
            if isinstance(core, _TrackedOneshot):
                core.on_close(cause)
            core._wake()

    def is_closed(self) -> bool:
        return self._core.state != "pending"

    def __del__(self) -> None:
        try:
            core = self._core
            if core.state == "pending":
                if isinstance(core, _TrackedOneshot):
                    core.on_close("sender_dropped")
                core.closed_by_drop()
        except Exception:  # never raise from a finalizer
            pass


class OneshotReceiver(Generic[T]):
    """The receiving half: ``await rx`` (or ``await rx.recv()``) for the value."""

    __slots__ = ("_core",)

    def __init__(self, core: _OneshotCore) -> None:
        self._core = core

    async def recv(self) -> T:
        core = self._core
        if core.state == "pending":
            if core.fut is not None and not core.fut.done():
                raise RuntimeError("oneshot already has a waiting receiver")
            core.fut = asyncio.get_running_loop().create_future()
            tracked = isinstance(core, _TrackedOneshot)
            waiter = current_waiter() if tracked else None
            if tracked:
                core.waiters.add(waiter, "recv")  # type: ignore[attr-defined]
            try:
                await core.fut
            finally:
                core.fut = None
                if tracked:
                    core.waiters.remove(waiter)  # type: ignore[attr-defined]
        if core.state == "closed":
            raise OneshotClosed(core.close_cause or "closed")
        if core.state == "received":
            raise RuntimeError("oneshot value already received")
        core.state = "received"
        value: T = core.value
        core.value = None
        return value

    def __await__(self) -> Generator[Any, None, T]:
        return self.recv().__await__()

    def try_recv(self) -> T | None:
        """The value if it was sent (consuming it), else ``None``."""
        core = self._core
        if core.state != "sent":
            return None
        core.state = "received"
        value: T = core.value
        core.value = None
        return value

    def statistics(self) -> OneshotStatistics:
        core = self._core
        sender = core.sender_ref() if core.sender_ref is not None else None
        return OneshotStatistics(
            state=core.state, sender_alive=sender is not None,
            receiver_waiting=core.fut is not None and not core.fut.done(),
            close_cause=core.close_cause,
        )


class _TrackedOneshot(_OneshotCore):
    """A oneshot's shared state, in the graph as a ``oneshot`` node."""

    def __init__(self, name: str, location: Location | None, meta: dict[str, Any] | None) -> None:
        super().__init__()
        self._peeps_id = new_id("oneshot")
        self.name = name
        self.location = location
        self.meta = meta
        self.created_mono_ns = time.monotonic_ns()
        self.creator = id_of(current_task_entity())
        self.waiters = WaitSet()
        self.sent_by: str | None = None
        self.closed_by: str | None = None
        self.finished_mono_ns: int | None = None

    def on_send(self) -> None:
        self.sent_by = id_of(current_waiter())
        self.finished_mono_ns = time.monotonic_ns()
        REGISTRY.emit(self._peeps_id, "oneshot.send", None, self.sent_by)

    def on_close(self, cause: str) -> None:
        # A dropped sender is finalized in the context of whoever dropped it
        # (usually the task whose frame held it, as it finishes).
        try:
            self.closed_by = id_of(current_task_entity())
        except Exception:
            self.closed_by = None
        self.finished_mono_ns = time.monotonic_ns()
        REGISTRY.emit(self._peeps_id, f"oneshot.{cause}", None, self.closed_by)

    def _holders(self, sender: Any) -> list[str]:
        """Live tasks whose await-chain frames reference the sender directly."""
        held: list[str] = []
        for entity in list(REGISTRY.tasks.copy().values()):
            task_ref = getattr(entity, "task_ref", None)
            task = task_ref() if task_ref is not None else None
            if task is None or not isinstance(task, asyncio.Task) or task.done():
                continue
            for frame in _await_frames(task.get_coro()):
                if any(v is sender for v in list(frame.f_locals.values())):
                    held.append(entity.id)
                    break
        return held

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, self.meta, now)
        sender = self.sender_ref() if self.sender_ref is not None else None
        waiting = self.fut is not None and not self.fut.done()
        held_by: list[str] | None = None
        if sender is not None and self.state == "pending":
            held_by = self._holders(sender) or None
        resolvable = self.state == "sent" or (self.state == "pending" and held_by is not None)
        attrs.update(
            state=self.state,
            sender_alive=sender is not None,
            sender_held_by=held_by,
            resolvable=resolvable,
            receiver_waiting=waiting,
            close_cause=self.close_cause,
            sent_by=self.sent_by,
            created_by=self.creator,
        )
        node: Node = {"id": self._peeps_id, "kind": "oneshot", "label": self.name,
                      "attrs": attrs}
        edges = self.waiters.needs_edges(self._peeps_id, now)
        if self.state == "closed" and self.closed_by is not None:
            edges.append({"src": self._peeps_id, "dst": self.closed_by, "kind": "closed_by",
                          "attrs": {"cause": self.close_cause}})
        return node, edges


def oneshot(name: str | None = None, **meta: Any) -> tuple[OneshotSender[Any], OneshotReceiver[Any]]:
    """A single-value channel: ``tx.send(v)`` once, ``await rx`` once.

    In the graph (kind ``oneshot``) the waiting receiver ``needs`` it; attrs
    say whether the sender is still alive, which live tasks' frames hold it
    (``sender_held_by``) and whether anyone can still resolve it
    (``resolvable``).  A sender garbage-collected unresolved closes it
    (``close_cause: sender_dropped``) and the receiver gets :class:`OneshotClosed`.
    """
    core: _OneshotCore
    if STATE.enabled:
        location = capture_location()
        label = name or (f"oneshot@{location[0].rsplit('/', 1)[-1]}:{location[1]}"
                         if location else "oneshot")
        core = _TrackedOneshot(label, location, meta or None)
    else:
        core = _OneshotCore()
    sender: OneshotSender[Any] = OneshotSender(core)
    core.sender_ref = weakref.ref(sender)
    if isinstance(core, _TrackedOneshot):
        REGISTRY.track(core)
    return sender, OneshotReceiver(core)


# -- watch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchStatistics:
    """``Watch.statistics()``."""

    version: int
    receivers: int
    waiting: int
    closed: bool


class Watch(Generic[T]):
    """A latest-value channel (tokio's ``watch``): ``send(v)`` replaces the value
    and wakes every receiver; ``rx = w.subscribe()``; ``await rx.changed()``
    waits for a version the receiver has not seen; ``rx.borrow()`` reads it."""

    def __init__(self, initial: T, name: str | None = None, **meta: Any) -> None:
        self._value = initial
        self._version = 0
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []
        self._receivers: weakref.WeakSet[WatchReceiver[T]] = weakref.WeakSet()
        self._tracked = STATE.enabled
        if self._tracked:
            self._peeps_id = new_id("watch")
            self._location = capture_location()
            self._name = name or "watch"
            self._meta = meta or None
            self._created_mono_ns = time.monotonic_ns()
            self._waitset = WaitSet()
            self._last_sent_by: str | None = None
            REGISTRY.track(self)

    @property
    def value(self) -> T:
        return self._value

    @property
    def version(self) -> int:
        return self._version

    def send(self, value: T) -> None:
        if self._closed:
            raise ChannelClosed("watch closed")
        self._value = value
        self._version += 1
        if self._tracked:
            self._last_sent_by = id_of(current_waiter())
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def subscribe(self) -> WatchReceiver[T]:
        rx = WatchReceiver(self)
        self._receivers.add(rx)
        return rx

    def statistics(self) -> WatchStatistics:
        return WatchStatistics(version=self._version, receivers=len(self._receivers),
                               waiting=len(self._waiters), closed=self._closed)

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self._created_mono_ns, self._location, self._meta, now)
        stats = self.statistics()
        attrs.update(version=stats.version, receivers=stats.receivers,
                     waiting=stats.waiting, closed=stats.closed,
                     last_sent_by=self._last_sent_by)
        node: Node = {"id": self._peeps_id, "kind": "watch", "label": self._name,
                      "attrs": attrs}
        return node, self._waitset.needs_edges(self._peeps_id, now)


class WatchReceiver(Generic[T]):
    """One subscriber of a :class:`Watch`."""

    __slots__ = ("__weakref__", "_seen", "_watch")

    def __init__(self, watch: Watch[T]) -> None:
        self._watch = watch
        self._seen = watch._version

    def borrow(self) -> T:
        """The latest value (marks it seen)."""
        self._seen = self._watch._version
        return self._watch._value

    async def changed(self) -> T:
        """Wait until a value this receiver has not seen is sent; return it.
        Raises :class:`ChannelClosed` once the watch is closed."""
        watch = self._watch
        while self._seen == watch._version:
            if watch._closed:
                raise ChannelClosed("watch closed")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            watch._waiters.append(fut)
            waiter = current_waiter() if watch._tracked else None
            if watch._tracked:
                watch._waitset.add(waiter, "changed")
            try:
                await fut
            finally:
                if watch._tracked:
                    watch._waitset.remove(waiter)
        return self.borrow()


def watch(initial: T, name: str | None = None, **meta: Any) -> Watch[T]:
    """A latest-value channel; see :class:`Watch`."""
    return Watch(initial, name, **meta)

