"""Synchronization primitives that put themselves in the wait-for graph.

``Lock``, ``Semaphore``, ``BoundedSemaphore``, ``Event`` and ``Condition`` are
subclasses of their ``asyncio`` counterparts (same API, ``isinstance`` holds);
``RWLock``, ``Notify`` and ``OnceCell`` have no stdlib counterpart.  Holders
become ``holds`` edges, waiters ``needs`` edges.  Each has ``statistics()``
returning a frozen record.

With peeps disabled when one is created, ``Lock()`` etc. return the plain
stdlib object (no registry work at all); the non-stdlib ones return their
uninstrumented base class.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from ._config import STATE
from ._registry import (
    REGISTRY,
    Clock,
    HoldSet,
    Location,
    WaitSet,
    base_attrs,
    capture_location,
    format_location,
    new_id,
)
from ._tasks import (
    _C_CURRENT_TASK,
    _current_task,
    _current_tasks,
    _get_running_loop,
    _task_of,
    _waiter_id,
    current_holder,
    current_waiter,
    holder_id,
    id_of,
    speedups_wanted,
)
from ._tasks import _speedups as _c_speedups
from .types import Edge, Node

T = TypeVar("T")

# The originals, captured before ``peeps.patch()`` can replace the asyncio names.
_StdLock = asyncio.Lock
_StdSemaphore = asyncio.Semaphore
_StdBoundedSemaphore = asyncio.BoundedSemaphore
_StdEvent = asyncio.Event
_StdCondition = asyncio.Condition

_monotonic_ns = time.monotonic_ns
_std_lock_acquire = asyncio.Lock.acquire
_std_semaphore_acquire = asyncio.Semaphore.acquire


class _Identity:
    """Id, label, creation site and metadata shared by every primitive."""

    #: 3.11 only: the loop this primitive was last used on.  3.11's
    #: ``_get_running_loop`` costs ~180 ns (a third of an uncontended lock);
    #: the loop's running task is one dict lookup away.
    _peeps_loop: Any = None

    def _peeps_running_task(self) -> Any:
        """``current_holder()`` for 3.11, via the cached loop."""
        loop = self._peeps_loop
        if loop is not None:
            task = _task_of(loop) if _task_of is not None else None
            if task is not None:
                # The cached loop's running task is ours only when that loop runs
                # in this thread; a loop runs in one thread, and asyncio
                # primitives are not shared across threads.
                return task
        loop = _get_running_loop()
        self._peeps_loop = loop
        return current_holder()

    _peeps_id: str
    _peeps_kind: str
    _peeps_name: str | None
    _peeps_meta: dict[str, Any] | None
    _peeps_location: Location | None
    _peeps_created_mono_ns: int

    def _peeps_identity(self, kind: str, name: str | None, meta: dict[str, Any]) -> None:
        self._peeps_id = new_id(kind)
        self._peeps_kind = kind
        self._peeps_name = name
        self._peeps_meta = meta or None
        self._peeps_location = capture_location()
        self._peeps_created_mono_ns = _monotonic_ns()

    @property
    def name(self) -> str:
        """The label in the graph: the given name, else ``kind@file:line``."""
        if self._peeps_name is not None:
            return self._peeps_name
        loc = format_location(self._peeps_location)
        if loc is None:
            return self._peeps_kind
        return f"{self._peeps_kind}@{loc.rsplit('/', 1)[-1]}"

    def _peeps_node(self, now: Clock, **attrs: Any) -> Node:
        full = base_attrs(self._peeps_created_mono_ns, self._peeps_location,
                          self._peeps_meta, now)
        full.update(attrs)
        return {"id": self._peeps_id, "kind": self._peeps_kind, "label": self.name,
                "attrs": full}


# -- ``async with`` without coroutines ---------------------------------------------

#: ``peeps._speedups.DONE``, an awaitable that is already done (``await DONE``
#: is None at once), when the C extension was built and is wanted; else None
#: and ``async with`` goes through the stdlib's coroutines.
_DONE: Awaitable[None] | None = (
    getattr(_c_speedups, "DONE", None) if _c_speedups is not None and speedups_wanted else None)


def _fast_aenter(self: Lock | Semaphore) -> Awaitable[None]:
    """``async with``'s enter: a free primitive is taken now and the ``await``
    completes at once; otherwise the wait is the returned coroutine.  The
    stdlib's ``__aenter__`` is a coroutine that awaits ``acquire()``, another;
    together with ``__aexit__`` they are most of an uncontended ``async with``."""
    if self._peeps_take():
        return _DONE  # type: ignore[return-value]
    return self._peeps_wait()


def _fast_aexit(self: Lock | Semaphore, exc_type: Any, exc: Any, tb: Any) -> Awaitable[None]:
    """``async with``'s exit: release now, an ``await`` that completes at once."""
    self.release()
    return _DONE  # type: ignore[return-value]


def _async_with_through_overrides(cls: type[Any]) -> None:
    """A subclass that overrides ``acquire`` or ``release`` gets the stdlib's
    ``__aenter__``/``__aexit__``, which call them."""
    if _DONE is not None and ("acquire" in vars(cls) or "release" in vars(cls)):
        cls.__aenter__ = _StdLock.__aenter__
        cls.__aexit__ = _StdLock.__aexit__


class _TakeOrWait:
    """``acquire()`` for Lock and Semaphore: ``_peeps_take()`` at once when
    the primitive is free, else wait in the stdlib's queue as a ``needs``
    edge, counted and timed, with a rate-limited contention event."""

    #: The contention event's name, and the stdlib's acquire (its wait).
    _peeps_contended_event: ClassVar[str]
    _peeps_std_acquire: ClassVar[Callable[[Any], Awaitable[Any]]]
    _peeps_waiters: WaitSet
    _peeps_contentions: int
    _peeps_total_wait_ns: int
    _peeps_max_wait_ns: int

    def _peeps_take(self) -> bool:
        """Take the primitive now if it is free; whether it was."""
        raise NotImplementedError

    def _peeps_acquired_after_wait(self, me: Any, now: int) -> None:
        """Record ``me`` as a holder after a wait that ended at ``now``."""
        raise NotImplementedError

    def _peeps_contended_attrs(self) -> dict[str, Any]:
        """The contention event's attributes."""
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _async_with_through_overrides(cls)

    async def acquire(self) -> Literal[True]:
        if not self._peeps_take():
            await self._peeps_wait()
        return True

    async def _peeps_wait(self) -> None:
        """The contended acquire (also ``async with``'s, which awaits it directly)."""
        me = current_holder()  # the task itself: named only if described
        self._peeps_contentions += 1
        start = _monotonic_ns()
        event = self._peeps_contended_event
        if REGISTRY.repeat_due(self, event, start):
            REGISTRY.emit_repeated(self, event, self._peeps_contended_attrs(), holder_id(me))
        self._peeps_waiters.add(me, "acquire", start)
        try:
            # The stdlib's wait (BoundedSemaphore's too), without super()'s object.
            await self._peeps_std_acquire()
        finally:
            self._peeps_waiters.remove(me)
        now = _monotonic_ns()
        waited = now - start
        self._peeps_total_wait_ns += waited
        if waited > self._peeps_max_wait_ns:
            self._peeps_max_wait_ns = waited
        self._peeps_acquired_after_wait(me, now)


# -- Lock ----------------------------------------------------------------------


@dataclass(frozen=True)
class LockStatistics:
    """``Lock.statistics()``: a point-in-time record.  Times in ns."""

    locked: bool
    #: Node id of the holding task/thread, if known.
    holder: str | None
    held_ns: int
    waiters: int
    acquisitions: int
    contentions: int
    total_wait_ns: int
    max_wait_ns: int


class Lock(_TakeOrWait, asyncio.Lock, _Identity):
    """``asyncio.Lock`` in the graph: the holder ``holds`` it, waiters ``need`` it.

    ``Lock(name=None, **meta)``; counts acquisitions, contention, wait and hold
    times.  Emits ``lock.acquire.contended`` when an acquire has to wait.
    """

    _peeps_contended_event = "lock.acquire.contended"
    _peeps_std_acquire = _std_lock_acquire
    # What the C fast path (``_speedups.aio_methods``) reads and writes, at
    # fixed offsets: the stdlib's state (its ``__init__`` sets it here too) and
    # the holder's.  Everything else stays in the instance dict.
    __slots__ = ("_locked", "_peeps_acquisitions", "_peeps_held_since", "_peeps_holder",
                 "_peeps_loop", "_waiters")

    def __new__(cls, name: str | None = None, **meta: Any) -> Lock:
        if cls is Lock and not STATE.enabled:
            return _StdLock()  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        super().__init__()
        self._peeps_identity("lock", name, meta)
        self._peeps_loop = None
        self._peeps_holder: Any = None
        self._peeps_held_since = 0
        self._peeps_waiters = WaitSet()
        self._peeps_acquisitions = 0
        self._peeps_contentions = 0
        self._peeps_total_wait_ns = 0
        self._peeps_max_wait_ns = 0
        REGISTRY.track(self)

    def _peeps_take(self) -> bool:
        """The uncontended acquire: if the lock is free and nobody waits (the
        stdlib's fast path, 3.11-3.13), take it and record the holder."""
        if self._locked or self._waiters:  # type: ignore[has-type]
            return False
        self._locked = True
        # current_holder(), inlined: this is the hottest path in the module.
        if _C_CURRENT_TASK:
            try:
                self._peeps_holder = _current_task() or current_holder()
            except RuntimeError:
                self._peeps_holder = current_holder()
        else:  # 3.11: _peeps_running_task(), its common case inlined
            loop = self._peeps_loop
            holder = _task_of(loop) if loop is not None else None  # type: ignore[misc]
            self._peeps_holder = holder if holder is not None else self._peeps_running_task()
        self._peeps_held_since = _monotonic_ns()
        self._peeps_acquisitions += 1
        return True

    def _peeps_acquired_after_wait(self, me: Any, now: int) -> None:
        self._peeps_holder = me
        self._peeps_held_since = now
        self._peeps_acquisitions += 1

    def _peeps_contended_attrs(self) -> dict[str, Any]:
        return {"holder": holder_id(self._peeps_holder)}

    def release(self) -> None:
        if not self._locked:
            raise RuntimeError("Lock is not acquired.")
        self._locked = False
        if self._waiters:
            self._wake_up_first()  # type: ignore[attr-defined]
        # No hold-time totals here: a clock read per release costs a fifth of
        # the whole acquire/release; the current hold's age is ``held_ns``.
        self._peeps_holder = None

    def statistics(self) -> LockStatistics:
        locked = self.locked()
        return LockStatistics(
            locked=locked,
            holder=holder_id(self._peeps_holder) if locked else None,
            held_ns=_monotonic_ns() - self._peeps_held_since if locked else 0,
            waiters=len(self._peeps_waiters),
            acquisitions=self._peeps_acquisitions,
            contentions=self._peeps_contentions,
            total_wait_ns=self._peeps_total_wait_ns,
            max_wait_ns=self._peeps_max_wait_ns,
        )

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        holder = holder_id(self._peeps_holder)
        since = self._peeps_held_since
        locked = self.locked()
        node = self._peeps_node(
            now,
            locked=locked,
            holder=holder if locked else None,
            held_ns=max(0, now.mono_ns - since) if locked else 0,
            waiters=len(self._peeps_waiters),
            acquisitions=self._peeps_acquisitions,
            contentions=self._peeps_contentions,
            total_wait_ns=self._peeps_total_wait_ns,
            max_wait_ns=self._peeps_max_wait_ns,
        )
        edges = self._peeps_waiters.needs_edges(self._peeps_id, now)
        if locked and holder is not None:
            edges.append({"src": holder, "dst": self._peeps_id, "kind": "holds",
                          "attrs": {"since_ns": now.wall_of(since),
                                    "held_ns": max(0, now.mono_ns - since)}})
        return node, edges


# -- Semaphore ---------------------------------------------------------------------


@dataclass(frozen=True)
class SemaphoreStatistics:
    """``Semaphore.statistics()``."""

    permits_total: int
    permits_available: int
    #: Node ids of the tasks/threads holding permits (acquire without release).
    holders: tuple[str, ...]
    waiters: int
    acquisitions: int
    contentions: int
    total_wait_ns: int
    max_wait_ns: int


class Semaphore(_TakeOrWait, asyncio.Semaphore, _Identity):
    """``asyncio.Semaphore`` in the graph: permit holders ``hold`` it, waiters
    ``need`` it.  ``Semaphore(value=1, name=None, **meta)``.

    asyncio permits are not owned: a release by a task that did not acquire
    drops the oldest holder record.  Emits ``semaphore.acquire.contended``.
    """

    _peeps_kind_name = "semaphore"
    _peeps_contended_event = "semaphore.acquire.contended"
    _peeps_std_acquire = _std_semaphore_acquire
    #: ``BoundedSemaphore``: ``release`` goes through the stdlib's bound check.
    _peeps_bounded = False
    # What the C fast path reads and writes (see ``Lock.__slots__``).
    __slots__ = ("_peeps_acquisitions", "_peeps_extra", "_peeps_holding", "_peeps_loop",
                 "_value", "_waiters")

    def __new__(cls, value: int = 1, name: str | None = None, **meta: Any) -> Semaphore:
        if not STATE.enabled:
            if cls is Semaphore:
                return _StdSemaphore(value)  # type: ignore[return-value]
            if cls is BoundedSemaphore:
                return _StdBoundedSemaphore(value)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, value: int = 1, name: str | None = None, **meta: Any) -> None:
        super().__init__(value)
        self._peeps_identity("semaphore", name, meta)
        self._peeps_loop = None
        self._peeps_total = value
        # holder (task object or thread entity) -> since (mono ns), resolved to
        # node ids only at snapshot; holders with more than one permit also
        # have holder -> permits in ``_peeps_extra`` (the common single-permit
        # hold allocates nothing but the dict slot).
        self._peeps_holding: dict[Any, int] = {}
        self._peeps_extra: dict[Any, int] = {}
        self._peeps_waiters = WaitSet()
        self._peeps_acquisitions = 0
        self._peeps_contentions = 0
        self._peeps_total_wait_ns = 0
        self._peeps_max_wait_ns = 0
        REGISTRY.track(self)

    def _peeps_take(self) -> bool:
        """The uncontended acquire: if a permit is free and nobody waits for
        one (the stdlib's fast path, 3.11-3.13), take it and record the holder;
        the first test spares ``locked()``'s generator when nobody waits."""
        if (self._value > 0 and not self._waiters) or not self.locked():
            self._value -= 1
            self._peeps_hold()
            return True
        return False

    def _peeps_acquired_after_wait(self, me: Any, now: int) -> None:
        self._peeps_hold()

    def _peeps_contended_attrs(self) -> dict[str, Any]:
        return {"available": self._value}

    def _peeps_hold(self) -> None:
        """Record a permit taken by what runs now."""
        if _C_CURRENT_TASK:
            try:
                holder = _current_task() or current_holder()
            except RuntimeError:
                holder = current_holder()
        else:  # 3.11: _peeps_running_task(), its common case inlined
            loop = self._peeps_loop
            holder = _task_of(loop) if loop is not None else None  # type: ignore[misc]
            if holder is None:
                holder = self._peeps_running_task()
        holding = self._peeps_holding
        if holder not in holding:
            holding[holder] = _monotonic_ns()
        else:
            extra = self._peeps_extra
            extra[holder] = extra.get(holder, 1) + 1
        self._peeps_acquisitions += 1

    def release(self) -> None:
        if self._peeps_bounded:
            super().release()
        else:  # the stdlib's release (3.11-3.13), inlined
            self._value += 1
            if self._waiters:
                self._wake_up_next()
        self._peeps_unhold()

    def _peeps_unhold(self) -> None:
        """Drop the hold record of a permit given back by what runs now."""
        holding = self._peeps_holding
        if _C_CURRENT_TASK:
            try:
                holder = _current_task() or current_holder()
            except RuntimeError:
                holder = current_holder()
        else:
            loop = self._peeps_loop
            holder = _task_of(loop) if loop is not None else None  # type: ignore[misc]
            if holder is None:
                holder = self._peeps_running_task()
        if holder not in holding:
            # asyncio permits are not owned: drop the oldest holder record.
            holder = next(iter(holding.copy()), None)
            if holder is None:
                return
        extra = self._peeps_extra
        if extra and holder in extra:
            count = extra.pop(holder, 2) - 1
            if count > 1:
                extra[holder] = count
        else:
            holding.pop(holder, None)

    def _permits_available(self) -> int:
        return max(0, int(self._value))

    def _holder_items(self) -> list[tuple[str, int, int]]:
        out = []
        extra = self._peeps_extra.copy()
        for holder, since in list(self._peeps_holding.copy().items()):
            count = extra.get(holder, 1)
            node_id = holder_id(holder)
            if node_id is not None:
                out.append((node_id, count, since))
        return out

    def statistics(self) -> SemaphoreStatistics:
        return SemaphoreStatistics(
            permits_total=self._peeps_total,
            permits_available=self._permits_available(),
            holders=tuple(h for h, _, _ in self._holder_items()),
            waiters=len(self._peeps_waiters),
            acquisitions=self._peeps_acquisitions,
            contentions=self._peeps_contentions,
            total_wait_ns=self._peeps_total_wait_ns,
            max_wait_ns=self._peeps_max_wait_ns,
        )

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        holders = self._holder_items()
        node = self._peeps_node(
            now,
            permits_total=self._peeps_total,
            permits_available=self._permits_available(),
            bounded=isinstance(self, asyncio.BoundedSemaphore),
            holders=len(holders),
            waiters=len(self._peeps_waiters),
            acquisitions=self._peeps_acquisitions,
            contentions=self._peeps_contentions,
            total_wait_ns=self._peeps_total_wait_ns,
            max_wait_ns=self._peeps_max_wait_ns,
        )
        edges = self._peeps_waiters.needs_edges(self._peeps_id, now)
        for node_id, count, since in holders:
            edges.append({"src": node_id, "dst": self._peeps_id, "kind": "holds",
                          "attrs": {"count": count, "since_ns": now.wall_of(since),
                                    "held_ns": max(0, now.mono_ns - since)}})
        return node, edges


class BoundedSemaphore(Semaphore, asyncio.BoundedSemaphore):
    """``asyncio.BoundedSemaphore`` in the graph (see :class:`Semaphore`)."""

    _peeps_bounded = True


#: The Python methods the C fast paths fall back to, and the reference for
#: them: (Lock, Semaphore) -> {name: function}.
PY_METHODS: dict[type[Any], dict[str, Any]] = {
    cls: {"__aenter__": _fast_aenter, "__aexit__": _fast_aexit, "release": cls.release}
    for cls in (Lock, Semaphore)
}


def _c_methods() -> dict[type[Any], dict[str, Any]] | None:
    """The C fast paths of ``async with`` and ``release`` for Lock and
    Semaphore (``peeps._speedups.aio_methods``), or None without them."""
    aio_methods = getattr(_c_speedups, "aio_methods", None)
    if _DONE is None or aio_methods is None or (_task_of is None and not _C_CURRENT_TASK):
        return None
    methods = aio_methods(
        Lock, Semaphore, BoundedSemaphore,
        _current_task if _C_CURRENT_TASK else None, _current_tasks, current_holder,
        _monotonic_ns, _fast_aenter, PY_METHODS[Lock]["release"], _fast_aenter,
        PY_METHODS[Semaphore]["release"])
    names = ("__aenter__", "__aexit__", "release")
    return {Lock: dict(zip(names, methods[:3], strict=True)),
            Semaphore: dict(zip(names, methods[3:], strict=True))}


#: What Lock and Semaphore use for ``async with`` and ``release``: the C
#: methods where the extension was built, else the Python ones above.
C_METHODS = _c_methods()


def use_methods(methods: dict[type[Any], dict[str, Any]]) -> None:
    """Install ``methods`` on Lock and Semaphore (tests switch between the C
    and the Python paths with it)."""
    for cls, by_name in methods.items():
        for name, method in by_name.items():
            setattr(cls, name, method)


# ``async with`` without coroutines (see _fast_aenter).
if C_METHODS is not None:
    use_methods(C_METHODS)
elif _DONE is not None:
    use_methods({cls: {"__aenter__": _fast_aenter, "__aexit__": _fast_aexit}
                 for cls in (Lock, Semaphore)})


# -- Event -------------------------------------------------------------------------


@dataclass(frozen=True)
class EventStatistics:
    """``Event.statistics()``."""

    is_set: bool
    waiters: int
    sets: int
    last_set_by: str | None


class Event(asyncio.Event, _Identity):
    """``asyncio.Event`` in the graph: waiters ``need`` it; records who set it."""

    def __new__(cls, name: str | None = None, **meta: Any) -> Event:
        if cls is Event and not STATE.enabled:
            return _StdEvent()  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        super().__init__()
        self._peeps_identity("event", name, meta)
        self._peeps_waiters = WaitSet()
        self._peeps_sets = 0
        #: The node id of who set it last.  An id, not the task: a long-lived
        #: event would otherwise keep a finished setter (and its traceback) alive.
        self._peeps_last_set_by: str | None = None
        self._peeps_last_set_mono_ns: int | None = None
        REGISTRY.track(self)

    async def wait(self) -> Literal[True]:
        if self._value:
            return True
        me = current_holder()  # the task itself: named only if described
        waiting = self._peeps_waiters._waiting
        if me is not None:
            waiting[me] = ("wait", _monotonic_ns())
        # The stdlib's wait (the same on 3.11-3.13) and the WaitSet's add and
        # remove, inlined: awaiting ``super().wait()`` made a second coroutine
        # and a super object per wait.
        fut = self._get_loop().create_future()  # type: ignore[attr-defined]
        waiters = self._waiters
        waiters.append(fut)
        try:
            await fut
            return True
        finally:
            waiters.remove(fut)
            if me is not None:
                waiting.pop(me, None)

    def set(self) -> None:
        if not self._value:  # type: ignore[has-type]
            # The stdlib's set (the same on 3.11-3.13) around peeps' record,
            # inlined: ``super().set()`` made a super object and a call per set.
            self._value = True
            self._peeps_sets += 1
            self._peeps_last_set_by = _waiter_id(current_holder())
            self._peeps_last_set_mono_ns = _monotonic_ns()
            for fut in self._waiters:
                if not fut.done():
                    fut.set_result(True)

    def statistics(self) -> EventStatistics:
        return EventStatistics(is_set=self.is_set(), waiters=len(self._peeps_waiters),
                               sets=self._peeps_sets, last_set_by=self._peeps_last_set_by)

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        last = self._peeps_last_set_mono_ns
        node = self._peeps_node(
            now,
            is_set=self.is_set(),
            waiters=len(self._peeps_waiters),
            sets=self._peeps_sets,
            last_set_by=self._peeps_last_set_by,
            last_set_at_ns=now.wall_of(last) if last is not None else None,
        )
        return node, self._peeps_waiters.needs_edges(self._peeps_id, now)


# -- Condition ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionStatistics:
    """``Condition.statistics()``."""

    waiters: int
    notifies: int
    last_notified_by: str | None
    lock: str | None


class Condition(asyncio.Condition, _Identity):
    """``asyncio.Condition`` in the graph: waiters ``need`` it; records the last
    ``notify`` and by whom.  Without a ``lock`` argument it creates an
    instrumented :class:`Lock` named ``<name>.lock``."""

    def __new__(cls, lock: asyncio.Lock | None = None, name: str | None = None,
                **meta: Any) -> Condition:
        if cls is Condition and not STATE.enabled:
            return _StdCondition(lock)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, lock: asyncio.Lock | None = None, name: str | None = None,
                 **meta: Any) -> None:
        self._peeps_identity("condition", name, meta)
        if lock is None:
            lock = Lock(f"{self.name}.lock")
        super().__init__(lock)
        self._peeps_waiters = WaitSet()
        self._peeps_notifies = 0
        self._peeps_last_notified_by: str | None = None
        self._peeps_last_notified_mono_ns: int | None = None
        REGISTRY.track(self)

    async def wait(self) -> Literal[True]:
        me = current_waiter()
        self._peeps_waiters.add(me, "wait")
        try:
            return await super().wait()
        finally:
            self._peeps_waiters.remove(me)

    def notify(self, n: int = 1) -> None:
        self._peeps_notifies += 1
        self._peeps_last_notified_by = id_of(current_waiter())
        self._peeps_last_notified_mono_ns = _monotonic_ns()
        super().notify(n)

    def statistics(self) -> ConditionStatistics:
        lock = self._lock  # type: ignore[attr-defined]
        return ConditionStatistics(
            waiters=len(self._peeps_waiters), notifies=self._peeps_notifies,
            last_notified_by=self._peeps_last_notified_by,
            lock=getattr(lock, "_peeps_id", None),
        )

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        last = self._peeps_last_notified_mono_ns
        lock = self._lock  # type: ignore[attr-defined]
        node = self._peeps_node(
            now,
            waiters=len(self._peeps_waiters),
            notifies=self._peeps_notifies,
            last_notified_by=self._peeps_last_notified_by,
            last_notified_at_ns=now.wall_of(last) if last is not None else None,
            lock=getattr(lock, "_peeps_id", None),
            locked=self.locked(),
        )
        edges = self._peeps_waiters.needs_edges(self._peeps_id, now)
        lock_id = getattr(lock, "_peeps_id", None)
        if lock_id is not None:
            edges.append({"src": self._peeps_id, "dst": lock_id, "kind": "touches",
                          "attrs": {"role": "lock"}})
        return node, edges


# -- Notify (tokio-style) ---------------------------------------------------------------


@dataclass(frozen=True)
class NotifyStatistics:
    """``Notify.statistics()``."""

    waiters: int
    permit_stored: bool
    notify_one_calls: int
    notify_waiters_calls: int
    last_notified_by: str | None


class PlainNotify:
    """Wake-one / wake-all notification (tokio's ``Notify``), uninstrumented.

    ``await notify.notified()`` waits.  ``notify_one()`` wakes one waiter, or
    stores a single permit that the next ``notified()`` consumes at once.
    ``notify_waiters()`` wakes every current waiter and stores nothing.
    """

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._permit = False
        self._notify_one_calls = 0
        self._notify_waiters_calls = 0

    async def notified(self) -> None:
        if self._permit:
            self._permit = False
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                # Woken and cancelled at once: pass the wake-up on.
                self.notify_one()
            raise
        finally:
            with suppress(ValueError):
                self._waiters.remove(fut)

    def notify_one(self) -> None:
        self._notify_one_calls += 1
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._permit = True

    def notify_waiters(self) -> None:
        self._notify_waiters_calls += 1
        waiters, self._waiters = self._waiters, collections.deque()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class Notify(PlainNotify, _Identity):
    """:class:`PlainNotify` in the graph: waiters ``need`` it."""

    def __new__(cls, name: str | None = None, **meta: Any) -> PlainNotify:  # type: ignore[misc]
        if cls is Notify and not STATE.enabled:
            return PlainNotify()
        return super().__new__(cls)

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        super().__init__()
        self._peeps_identity("notify", name, meta)
        self._peeps_waitset = WaitSet()
        self._peeps_last_notified_by: str | None = None
        self._peeps_last_notified_mono_ns: int | None = None
        REGISTRY.track(self)

    async def notified(self) -> None:
        if self._permit:
            self._permit = False
            return
        me = current_waiter()
        self._peeps_waitset.add(me, "notified")
        try:
            await super().notified()
        finally:
            self._peeps_waitset.remove(me)

    def _record(self) -> None:
        self._peeps_last_notified_by = id_of(current_waiter())
        self._peeps_last_notified_mono_ns = _monotonic_ns()

    def notify_one(self) -> None:
        self._record()
        super().notify_one()

    def notify_waiters(self) -> None:
        self._record()
        super().notify_waiters()

    def statistics(self) -> NotifyStatistics:
        return NotifyStatistics(
            waiters=len(self._peeps_waitset), permit_stored=self._permit,
            notify_one_calls=self._notify_one_calls,
            notify_waiters_calls=self._notify_waiters_calls,
            last_notified_by=self._peeps_last_notified_by,
        )

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        last = self._peeps_last_notified_mono_ns
        node = self._peeps_node(
            now,
            waiters=len(self._peeps_waitset),
            permit_stored=self._permit,
            notify_one_calls=self._notify_one_calls,
            notify_waiters_calls=self._notify_waiters_calls,
            last_notified_by=self._peeps_last_notified_by,
            last_notified_at_ns=now.wall_of(last) if last is not None else None,
        )
        return node, self._peeps_waitset.needs_edges(self._peeps_id, now)


# -- RWLock ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RWLockStatistics:
    """``RWLock.statistics()``."""

    readers: int
    writer: str | None
    reader_holders: tuple[str, ...]
    waiting_readers: int
    waiting_writers: int
    read_acquisitions: int
    write_acquisitions: int
    contentions: int


class PlainRWLock:
    """An asyncio reader-writer lock, uninstrumented.  FIFO-fair: once anyone
    waits, new readers queue behind them, so writers are not starved.

    ``async with rw.read(): ...`` / ``async with rw.write(): ...``, or the
    ``acquire_read``/``release_read``/``acquire_write``/``release_write`` pairs.
    """

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        self._readers = 0
        self._writer = False
        self._queue: collections.deque[tuple[asyncio.Future[None], bool]] = collections.deque()
        self._read_acquisitions = 0
        self._write_acquisitions = 0
        self._contentions = 0

    def _grant(self) -> None:
        queue = self._queue
        while queue:
            fut, is_write = queue[0]
            if fut.done():
                queue.popleft()
                continue
            if is_write:
                if self._readers == 0 and not self._writer:
                    queue.popleft()
                    self._writer = True
                    fut.set_result(None)
                return
            if self._writer:
                return
            queue.popleft()
            self._readers += 1
            fut.set_result(None)

    async def _wait_turn(self, is_write: bool) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (fut, is_write)
        self._queue.append(entry)
        self._contentions += 1
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                # Granted, then cancelled before running: give it back.
                if is_write:
                    self._writer = False
                else:
                    self._readers -= 1
            else:
                with suppress(ValueError):
                    self._queue.remove(entry)
            self._grant()
            raise

    async def acquire_read(self) -> None:
        if not self._writer and not self._queue:
            self._readers += 1
        else:
            await self._wait_turn(False)
        self._read_acquisitions += 1

    def release_read(self) -> None:
        if self._readers <= 0:
            raise RuntimeError("RWLock.release_read() without a read hold")
        self._readers -= 1
        self._grant()

    async def acquire_write(self) -> None:
        if not self._writer and self._readers == 0 and not self._queue:
            self._writer = True
        else:
            await self._wait_turn(True)
        self._write_acquisitions += 1

    def release_write(self) -> None:
        if not self._writer:
            raise RuntimeError("RWLock.release_write() without the write hold")
        self._writer = False
        self._grant()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[None]:
        await self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[None]:
        await self.acquire_write()
        try:
            yield
        finally:
            self.release_write()

    def locked(self) -> bool:
        """True when a writer holds it (readers can still share it otherwise)."""
        return self._writer


class RWLock(PlainRWLock, _Identity):
    """:class:`PlainRWLock` in the graph: readers and the writer ``hold`` it
    (edge attr ``mode``), waiters ``need`` it with op ``read``/``write``."""

    def __new__(cls, name: str | None = None, **meta: Any) -> PlainRWLock:  # type: ignore[misc]
        if cls is RWLock and not STATE.enabled:
            return PlainRWLock()
        return super().__new__(cls)

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        super().__init__()
        self._peeps_identity("rwlock", name, meta)
        self._peeps_readers = HoldSet()
        self._peeps_writer = HoldSet()
        self._peeps_waitset = WaitSet()
        REGISTRY.track(self)

    async def _wait_turn(self, is_write: bool) -> None:
        me = current_waiter()
        if REGISTRY.repeat_due(self, "rwlock.acquire.contended"):
            REGISTRY.emit_repeated(self, "rwlock.acquire.contended",
                                   {"mode": "write" if is_write else "read"}, id_of(me))
        self._peeps_waitset.add(me, "write" if is_write else "read")
        try:
            await super()._wait_turn(is_write)
        finally:
            self._peeps_waitset.remove(me)

    async def acquire_read(self) -> None:
        await super().acquire_read()
        self._peeps_readers.add(current_waiter())

    def release_read(self) -> None:
        super().release_read()
        _drop_holder(self._peeps_readers)

    async def acquire_write(self) -> None:
        await super().acquire_write()
        self._peeps_writer.add(current_waiter())

    def release_write(self) -> None:
        super().release_write()
        _drop_holder(self._peeps_writer)

    def statistics(self) -> RWLockStatistics:
        queue = list(self._queue)
        writers = self._peeps_writer.holders()
        return RWLockStatistics(
            readers=self._readers,
            writer=writers[0].id if writers else None,
            reader_holders=tuple(h.id for h in self._peeps_readers.holders()),
            waiting_readers=sum(1 for _, w in queue if not w),
            waiting_writers=sum(1 for _, w in queue if w),
            read_acquisitions=self._read_acquisitions,
            write_acquisitions=self._write_acquisitions,
            contentions=self._contentions,
        )

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        stats = self.statistics()
        node = self._peeps_node(
            now,
            readers=stats.readers,
            writer=stats.writer,
            write_locked=self._writer,
            waiting_readers=stats.waiting_readers,
            waiting_writers=stats.waiting_writers,
            read_acquisitions=stats.read_acquisitions,
            write_acquisitions=stats.write_acquisitions,
            contentions=stats.contentions,
        )
        edges = self._peeps_waitset.needs_edges(self._peeps_id, now)
        for mode, holds in (("read", self._peeps_readers), ("write", self._peeps_writer)):
            for edge in holds.holds_edges(self._peeps_id, now):
                edge["attrs"]["mode"] = mode
                edges.append(edge)
        return node, edges


def _drop_holder(holds: HoldSet) -> None:
    me = current_waiter()
    if me is None or me not in holds._holding:
        current = holds.holders()
        me = current[0] if current else None
    holds.remove(me)


# -- OnceCell ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OnceCellStatistics:
    """``OnceCell.statistics()``."""

    initialized: bool
    initializing: str | None
    waiters: int
    init_ns: int | None
    init_attempts: int


class PlainOnceCell(Generic[T]):
    """Async lazy initialization, uninstrumented: the first caller of
    ``get_or_init(factory)`` runs ``await factory()``; concurrent callers wait
    for it.  If it raises, the next waiter tries."""

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        self._value: T | None = None
        self._initialized = False
        self._initializing = False
        self._waiters: list[asyncio.Future[None]] = []
        self._init_attempts = 0
        self._init_ns: int | None = None

    def initialized(self) -> bool:
        return self._initialized

    def get(self) -> T | None:
        """The value, or ``None`` before initialization."""
        return self._value

    def set(self, value: T) -> None:
        """Set the value if not initialized yet (``RuntimeError`` otherwise)."""
        if self._initialized or self._initializing:
            raise RuntimeError("OnceCell is already initialized or initializing")
        self._value = value
        self._initialized = True
        self._wake_all()

    def _wake_all(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _wait(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    async def _run_init(self, factory: Callable[[], Awaitable[T]]) -> T:
        return await factory()

    async def get_or_init(self, factory: Callable[[], Awaitable[T]]) -> T:
        while not self._initialized:
            if self._initializing:
                await self._wait()
                continue
            self._initializing = True
            self._init_attempts += 1
            start = _monotonic_ns()
            try:
                value = await self._run_init(factory)
            except BaseException:
                self._initializing = False
                self._wake_all()  # someone else gets to try
                raise
            self._initializing = False
            self._init_ns = _monotonic_ns() - start
            self._value = value
            self._initialized = True
            self._wake_all()
            return value
        return self._value  # type: ignore[return-value]


class OnceCell(PlainOnceCell[T], _Identity):
    """:class:`PlainOnceCell` in the graph: the initializing task ``holds`` the
    cell, callers waiting for the value ``need`` it (op ``init``)."""

    def __new__(cls, name: str | None = None, **meta: Any) -> PlainOnceCell[T]:  # type: ignore[misc]
        if cls is OnceCell and not STATE.enabled:
            return PlainOnceCell()
        return super().__new__(cls)

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        super().__init__()
        self._peeps_identity("once_cell", name, meta)
        self._peeps_holder = HoldSet()
        self._peeps_waitset = WaitSet()
        REGISTRY.track(self)

    async def _wait(self) -> None:
        me = current_waiter()
        self._peeps_waitset.add(me, "init")
        try:
            await super()._wait()
        finally:
            self._peeps_waitset.remove(me)

    async def _run_init(self, factory: Callable[[], Awaitable[T]]) -> T:
        me = current_waiter()
        self._peeps_holder.add(me)
        try:
            return await super()._run_init(factory)
        finally:
            self._peeps_holder.remove(me)

    def statistics(self) -> OnceCellStatistics:
        holders = self._peeps_holder.holders()
        return OnceCellStatistics(
            initialized=self._initialized,
            initializing=holders[0].id if holders else None,
            waiters=len(self._peeps_waitset),
            init_ns=self._init_ns,
            init_attempts=self._init_attempts,
        )

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        stats = self.statistics()
        node = self._peeps_node(
            now,
            initialized=stats.initialized,
            initializing=stats.initializing,
            waiters=stats.waiters,
            init_ns=stats.init_ns,
            init_attempts=stats.init_attempts,
        )
        edges = self._peeps_waitset.needs_edges(self._peeps_id, now)
        edges.extend(self._peeps_holder.holds_edges(self._peeps_id, now))
        return node, edges
