"""Instrumented threading locks: ``ThreadLock``, ``ThreadRLock``, ``ThreadCondition``,
``ThreadSemaphore``, ``ThreadBoundedSemaphore``, ``ThreadRWLock``.

Each is a drop-in for its ``threading`` counterpart and a ``thread_lock`` node:
the holder thread ``holds`` it, blocked threads ``need`` it, and it counts
acquisitions, contentions, wait and hold time (totals and maxima).

The uncontended path stays short: a non-blocking acquire of the real lock, then
the holder's ident and a timestamp (plus one thread-local list append for
lock-order validation).  Waiter bookkeeping only happens on contention.  With
peeps disabled the constructors return the plain ``threading`` primitive.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from . import _lockdep
from ._config import STATE
from ._lockdep import HELD_BY_THREAD, held_here
from ._registry import REGISTRY, Clock, Location, WaitSet, base_attrs, capture_location, new_id
from ._threads import COARSE_NOW, current_thread_entity, entity_for_ident
from .types import Edge, Node

_get_ident = threading.get_ident
_monotonic_ns = time.monotonic_ns
#: The sampler's last tick (monotonic ns), 0 when no sampler runs: the fast path
#: reads this instead of the clock (docs/threads.md, "Fast path").
_COARSE_NOW = COARSE_NOW


class _Instrumented:
    """Identity, statistics and the description shared by every thread lock."""

    __slots__ = (
        "__weakref__",
        "_peeps_acquisitions",
        "_peeps_class",
        "_peeps_contentions",
        "_peeps_created_mono_ns",
        "_peeps_hold_max_ns",
        "_peeps_hold_total_ns",
        "_peeps_id",
        "_peeps_location",
        "_peeps_meta",
        "_peeps_name",
        "_peeps_wait_max_ns",
        "_peeps_wait_total_ns",
        "_peeps_waiters",
    )

    lock_type = "lock"

    def _peeps_init(self, name: str | None, meta: dict[str, Any], location: Location | None) -> None:
        self._peeps_id = new_id("thread_lock")
        self._peeps_location = location
        self._peeps_class = _lockdep.lock_class(name, location)
        self._peeps_name = name or f"{self.lock_type}@{self._peeps_class}"
        self._peeps_meta = meta or None
        self._peeps_created_mono_ns = _monotonic_ns()
        self._peeps_acquisitions = 0
        self._peeps_contentions = 0
        self._peeps_wait_total_ns = 0
        self._peeps_wait_max_ns = 0
        self._peeps_hold_total_ns = 0
        self._peeps_hold_max_ns = 0
        self._peeps_waiters = WaitSet()
        REGISTRY.track(self)

    @property
    def name(self) -> str:
        return self._peeps_name

    def _waited(self, waited_ns: int) -> None:
        self._peeps_wait_total_ns += waited_ns
        if waited_ns > self._peeps_wait_max_ns:
            self._peeps_wait_max_ns = waited_ns

    def _held(self, held_ns: int) -> None:
        self._peeps_hold_total_ns += held_ns
        if held_ns > self._peeps_hold_max_ns:
            self._peeps_hold_max_ns = held_ns

    # Subclasses: [(holder ident, count, since_mono_ns)].
    def _holders(self) -> list[tuple[int, int, int]]:
        return []

    def _extra_attrs(self) -> dict[str, Any]:
        return {}

    def statistics(self) -> dict[str, Any]:
        """A plain record of the lock's state and counters (the node's attrs
        without the shared ones)."""
        holders = self._holders()
        now = _monotonic_ns()
        return {
            "name": self._peeps_name,
            "lock_type": self.lock_type,
            "lock_class": self._peeps_class,
            "locked": bool(holders),
            "holders": len(holders),
            "waiters": len(self._peeps_waiters),
            "held_ns": max((now - since for _, _, since in holders), default=None),
            "acquisitions": self._peeps_acquisitions,
            "contentions": self._peeps_contentions,
            "total_wait_ns": self._peeps_wait_total_ns,
            "max_wait_ns": self._peeps_wait_max_ns,
            "total_hold_ns": self._peeps_hold_total_ns,
            "max_hold_ns": self._peeps_hold_max_ns,
            **self._extra_attrs(),
        }

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self._peeps_created_mono_ns, self._peeps_location, self._peeps_meta,
                           now)
        attrs.update(self.statistics())
        attrs["lockdep_reports"] = list(_lockdep.CLASS_REPORTS.get(self._peeps_class, ()))
        edges = self._peeps_waiters.needs_edges(self._peeps_id, now)
        holder_ids = []
        for ident, count, since in self._holders():
            entity = entity_for_ident(ident)
            if entity is None:
                continue
            holder_ids.append(entity.id)
            edges.append({"src": entity.id, "dst": self._peeps_id, "kind": "holds",
                          "attrs": {"count": count, "since_ns": now.wall_of(since),
                                    "held_ns": max(0, now.mono_ns - since)}})
        attrs["holder_thread_ids"] = holder_ids
        attrs["holder"] = holder_ids[0] if holder_ids else None
        node: Node = {"id": self._peeps_id, "kind": "thread_lock", "label": self._peeps_name,
                      "attrs": attrs}
        return node, edges


def _lockdep_push(lock: Any) -> list[Any]:
    held: list[Any] = held_here()
    if held:
        _lockdep.check(held, lock)
    held.append(lock)
    return held


def _lockdep_unpop(held: list[Any], top: Any, lock: Any) -> None:
    """The release popped ``top``, not ``lock`` (locks released out of order):
    put it back and remove ``lock`` itself."""
    held.append(top)
    _lockdep_pop(held, lock)


def _lockdep_pop(held: list[Any] | None, lock: Any) -> None:
    if not held:
        return
    if held[-1] is lock:
        held.pop()
        return
    for i in range(len(held) - 1, -1, -1):
        if held[i] is lock:
            del held[i]
            return


def _waiter() -> Any:
    try:
        return current_thread_entity()
    except Exception as exc:
        REGISTRY.part_failed("thread lock waiters", exc)
        return None


class ThreadLock(_Instrumented):
    """``threading.Lock`` that shows its holder, waiters and timings.

    ``ThreadLock("demo.shared.left")``; ``name`` is also its lock-order class.
    """

    __slots__ = ("_lock", "_lockdep_held", "_lockdep_on", "_owner", "_since", "_try")

    def __new__(cls, name: str | None = None, **meta: Any) -> ThreadLock:
        if not STATE.enabled:
            return threading.Lock()  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        self._lock = threading.Lock()
        self._try = self._lock.acquire
        self._owner: int | None = None
        self._since = 0
        self._lockdep_held: list[Any] | None = None
        self._lockdep_on = _lockdep.ENABLED
        self._peeps_init(name, meta, capture_location())

    # The fast path is written out in full (no helper calls): each Python call
    # costs about as much as the whole plain acquire/release pair.
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._try(False):
            me = self._owner = _get_ident()
            self._since = _COARSE_NOW[0] or _monotonic_ns()
            self._peeps_acquisitions += 1
            if self._lockdep_on:
                try:
                    held = HELD_BY_THREAD[me]
                except KeyError:
                    held = _lockdep.held_by(me)
                if held:
                    _lockdep.check(held, self)
                held.append(self)
                self._lockdep_held = held
            return True
        if not blocking:
            return False
        return self._acquire_contended(timeout)

    __enter__ = acquire

    def _acquire_contended(self, timeout: float) -> bool:
        waiter = _waiter()
        self._peeps_contentions += 1
        if self._lockdep_on and held_here():
            _lockdep.check(held_here(), self)
        self._peeps_waiters.add(waiter, "acquire")
        start = _monotonic_ns()
        try:
            acquired = self._lock.acquire(True, timeout)
        finally:
            self._peeps_waiters.remove(waiter)
        now = _monotonic_ns()
        self._waited(now - start)
        if acquired:
            self._owner = _get_ident()
            self._since = now
            self._peeps_acquisitions += 1
            if self._lockdep_on:
                held = held_here()
                held.append(self)
                self._lockdep_held = held
        return acquired

    def release(self) -> None:
        if self._owner is not None:
            held_ns = (_COARSE_NOW[0] or _monotonic_ns()) - self._since
            if held_ns > 0:
                self._peeps_hold_total_ns += held_ns
                if held_ns > self._peeps_hold_max_ns:
                    self._peeps_hold_max_ns = held_ns
            self._owner = None
            held = self._lockdep_held
            if held and (top := held.pop()) is not self:
                _lockdep_unpop(held, top, self)
        self._lock.release()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # release(), written out again: ``with`` is the common case.
        if self._owner is not None:
            held_ns = (_COARSE_NOW[0] or _monotonic_ns()) - self._since
            if held_ns > 0:
                self._peeps_hold_total_ns += held_ns
                if held_ns > self._peeps_hold_max_ns:
                    self._peeps_hold_max_ns = held_ns
            self._owner = None
            held = self._lockdep_held
            if held and (top := held.pop()) is not self:
                _lockdep_unpop(held, top, self)
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    # threading.Condition protocol.
    def _release_save(self) -> Any:
        self.release()
        return None

    def _acquire_restore(self, state: Any) -> None:
        self.acquire()

    def _is_owned(self) -> bool:
        if self._lock.acquire(False):
            self._lock.release()
            return False
        return True

    def _holders(self) -> list[tuple[int, int, int]]:
        owner = self._owner
        return [(owner, 1, self._since)] if owner is not None else []

    def __repr__(self) -> str:
        return f"<peeps.ThreadLock {self._peeps_name!r} {'locked' if self.locked() else 'unlocked'}>"


class ThreadRLock(_Instrumented):
    """``threading.RLock`` that shows its holder (with its recursion count),
    waiters and timings."""

    __slots__ = ("_count", "_lock", "_lockdep_held", "_lockdep_on", "_owner", "_since", "_try")

    lock_type = "rlock"

    def __new__(cls, name: str | None = None, **meta: Any) -> ThreadRLock:
        if not STATE.enabled:
            return threading.RLock()  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        self._lock = threading.RLock()
        self._try = self._lock.acquire
        self._owner: int | None = None
        self._count = 0
        self._since = 0
        self._lockdep_held: list[Any] | None = None
        self._lockdep_on = _lockdep.ENABLED
        self._peeps_init(name, meta, capture_location())

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._try(False):
            me = _get_ident()
            if self._owner == me:
                self._count += 1
                return True
            self._owner = me
            self._count = 1
            self._since = _COARSE_NOW[0] or _monotonic_ns()
            self._peeps_acquisitions += 1
            if self._lockdep_on:
                try:
                    held = HELD_BY_THREAD[me]
                except KeyError:
                    held = _lockdep.held_by(me)
                if held:
                    _lockdep.check(held, self)
                held.append(self)
                self._lockdep_held = held
            return True
        if not blocking:
            return False
        return self._acquire_contended(timeout)

    def _acquire_contended(self, timeout: float) -> bool:
        waiter = _waiter()
        self._peeps_contentions += 1
        if self._lockdep_on and held_here():
            _lockdep.check(held_here(), self)
        self._peeps_waiters.add(waiter, "acquire")
        start = _monotonic_ns()
        try:
            acquired = self._lock.acquire(True, timeout)
        finally:
            self._peeps_waiters.remove(waiter)
        now = _monotonic_ns()
        self._waited(now - start)
        if acquired:
            self._owner = _get_ident()
            self._count = 1
            self._since = now
            self._peeps_acquisitions += 1
            if self._lockdep_on:
                held = held_here()
                held.append(self)
                self._lockdep_held = held
        return acquired

    def release(self) -> None:
        if self._owner == _get_ident():
            if self._count > 1:
                self._count -= 1
            else:
                self._release_bookkeeping()
        self._lock.release()  # raises RuntimeError for a non-owner, as RLock does

    def _release_bookkeeping(self) -> None:
        held_ns = (_COARSE_NOW[0] or _monotonic_ns()) - self._since
        if held_ns > 0:
            self._held(held_ns)
        self._owner = None
        self._count = 0
        _lockdep_pop(self._lockdep_held, self)
        self._lockdep_held = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    # threading.Condition protocol: wait() releases every recursion level.
    def _release_save(self) -> Any:
        count = self._count
        if self._owner == _get_ident():
            self._held(_monotonic_ns() - self._since)
            self._owner = None
            self._count = 0
            _lockdep_pop(self._lockdep_held, self)
            self._lockdep_held = None
        return (self._lock._release_save(), count)  # type: ignore[attr-defined]

    def _acquire_restore(self, state: Any) -> None:
        inner, count = state
        self._lock._acquire_restore(inner)  # type: ignore[attr-defined]
        self._owner = _get_ident()
        self._count = count
        self._since = _monotonic_ns()
        if self._lockdep_on:
            self._lockdep_held = _lockdep_push(self)

    def _is_owned(self) -> bool:
        return bool(self._lock._is_owned())  # type: ignore[attr-defined]

    def _holders(self) -> list[tuple[int, int, int]]:
        owner = self._owner
        return [(owner, self._count, self._since)] if owner is not None else []

    def __repr__(self) -> str:
        return f"<peeps.ThreadRLock {self._peeps_name!r} owner={self._owner} count={self._count}>"


class ThreadCondition(threading.Condition):
    """``threading.Condition`` over a :class:`ThreadRLock` (or the lock given);
    threads in ``wait()`` ``need`` the condition node (op ``wait``)."""

    def __new__(cls, lock: Any = None, name: str | None = None, **meta: Any) -> ThreadCondition:
        if not STATE.enabled:
            return threading.Condition(lock)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, lock: Any = None, name: str | None = None, **meta: Any) -> None:
        location = capture_location()
        if lock is None:
            lock = ThreadRLock(f"{name}.lock" if name else None)
        super().__init__(lock)
        self._peeps_id = new_id("thread_lock")
        self._peeps_name = name or f"condition@{_lockdep.lock_class(None, location)}"
        self._peeps_location = location
        self._peeps_meta = meta or None
        self._peeps_created_mono_ns = _monotonic_ns()
        self._peeps_waiters = WaitSet()
        self._peeps_waits = 0
        self._peeps_notifies = 0
        self._peeps_lock_id: str | None = getattr(lock, "_peeps_id", None)
        REGISTRY.track(self)

    @property
    def name(self) -> str:
        return self._peeps_name

    def wait(self, timeout: float | None = None) -> bool:
        waiter = _waiter()
        self._peeps_waits += 1
        self._peeps_waiters.add(waiter, "wait")
        try:
            return super().wait(timeout)
        finally:
            self._peeps_waiters.remove(waiter)

    def notify(self, n: int = 1) -> None:
        self._peeps_notifies += 1
        super().notify(n)

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self._peeps_created_mono_ns, self._peeps_location, self._peeps_meta,
                           now)
        attrs.update(name=self._peeps_name, lock_type="condition", waiters=len(self._peeps_waiters),
                     waits=self._peeps_waits, notifies=self._peeps_notifies,
                     lock_id=self._peeps_lock_id)
        node: Node = {"id": self._peeps_id, "kind": "thread_lock", "label": self._peeps_name,
                      "attrs": attrs}
        edges = self._peeps_waiters.needs_edges(self._peeps_id, now)
        if self._peeps_lock_id is not None:
            edges.append({"src": self._peeps_id, "dst": self._peeps_lock_id, "kind": "touches",
                          "attrs": {"op": "uses_lock"}})
        return node, edges


class ThreadSemaphore(_Instrumented):
    """``threading.Semaphore`` (``bounded=True``: ``BoundedSemaphore``) whose
    permit holders ``hold`` it and whose blocked acquirers ``need`` it.

    A permit released by a thread that did not acquire it (producer/consumer
    hand-off) is taken off the longest-standing holder."""

    __slots__ = ("_holders_by_ident", "_sem", "_try", "_value", "bounded")

    lock_type = "semaphore"

    def __new__(cls, value: int = 1, name: str | None = None, *, bounded: bool = False,
                **meta: Any) -> ThreadSemaphore:
        if not STATE.enabled:
            plain = threading.BoundedSemaphore(value) if bounded else threading.Semaphore(value)
            return plain  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, value: int = 1, name: str | None = None, *, bounded: bool = False,
                 **meta: Any) -> None:
        self._sem = threading.BoundedSemaphore(value) if bounded else threading.Semaphore(value)
        self._try = self._sem.acquire
        self._value = value
        self.bounded = bounded
        #: ident -> [count, since_mono_ns]
        self._holders_by_ident: dict[int, list[int]] = {}
        self._peeps_init(name, meta, capture_location())

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if self._try(False):
            self._took(_monotonic_ns())
            return True
        if not blocking:
            return False
        waiter = _waiter()
        self._peeps_contentions += 1
        self._peeps_waiters.add(waiter, "acquire")
        start = _monotonic_ns()
        try:
            acquired = self._sem.acquire(True, timeout)
        finally:
            self._peeps_waiters.remove(waiter)
        now = _monotonic_ns()
        self._waited(now - start)
        if acquired:
            self._took(now)
        return acquired

    def _took(self, now: int) -> None:
        self._peeps_acquisitions += 1
        entry = self._holders_by_ident.get(_get_ident())
        if entry is None:
            self._holders_by_ident[_get_ident()] = [1, now]
        else:
            entry[0] += 1

    def release(self, n: int = 1) -> None:
        self._sem.release(n)  # first: BoundedSemaphore raises before any bookkeeping
        holders = self._holders_by_ident
        for _ in range(n):
            ident = _get_ident()
            entry = holders.get(ident)
            if entry is None:
                try:
                    ident, entry = min(holders.copy().items(), key=lambda kv: kv[1][1])
                except ValueError:
                    return
            entry[0] -= 1
            if entry[0] <= 0:
                holders.pop(ident, None)
                self._held(_monotonic_ns() - entry[1])

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def _holders(self) -> list[tuple[int, int, int]]:
        return [(ident, c, since) for ident, (c, since) in self._holders_by_ident.copy().items()]

    def _extra_attrs(self) -> dict[str, Any]:
        return {"initial_value": self._value, "bounded": self.bounded,
                "available": getattr(self._sem, "_value", None),
                "lock_type": "bounded_semaphore" if self.bounded else "semaphore"}


def ThreadBoundedSemaphore(value: int = 1, name: str | None = None,
                           **meta: Any) -> ThreadSemaphore:
    """``threading.BoundedSemaphore`` counterpart of :class:`ThreadSemaphore`."""
    return ThreadSemaphore(value, name, bounded=True, **meta)


class PlainRWLock:
    """What :class:`ThreadRWLock` is with peeps disabled: the same readers-writer
    lock (writer preference) with no bookkeeping."""

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers: dict[int, int] = {}
        self._writer: int | None = None
        self._writer_count = 0
        self._writers_waiting = 0

    def _can_read(self, me: int) -> bool:
        if self._writer is not None:
            return self._writer == me
        return self._writers_waiting == 0 or me in self._readers

    def _can_write(self, me: int) -> bool:
        # A reader cannot upgrade: taking the write lock while reading deadlocks,
        # as with any writer-preference readers-writer lock.
        return self._writer is None and not self._readers

    def acquire_read(self, blocking: bool = True, timeout: float | None = None) -> bool:
        me = _get_ident()
        with self._cond:
            if not self._can_read(me) and (
                    not blocking or not self._wait_for(lambda: self._can_read(me), timeout, "read")):
                return False
            self._readers[me] = self._readers.get(me, 0) + 1
            self._took("read", me)
            return True

    def release_read(self) -> None:
        me = _get_ident()
        with self._cond:
            count = self._readers.get(me)
            if not count:
                raise RuntimeError("release_read() by a thread that holds no read lock")
            if count == 1:
                del self._readers[me]
                self._released("read", me)
            else:
                self._readers[me] = count - 1
            self._cond.notify_all()

    def acquire_write(self, blocking: bool = True, timeout: float | None = None) -> bool:
        me = _get_ident()
        with self._cond:
            if self._writer == me:
                self._writer_count += 1
                return True
            if self._readers or self._writer is not None:
                if not blocking:
                    return False
                self._writers_waiting += 1
                try:
                    ok = self._wait_for(lambda: self._can_write(me), timeout, "write")
                finally:
                    self._writers_waiting -= 1
                if not ok:
                    self._cond.notify_all()
                    return False
            self._writer = me
            self._writer_count = 1
            self._took("write", me)
            return True

    def release_write(self) -> None:
        me = _get_ident()
        with self._cond:
            if self._writer != me:
                raise RuntimeError("release_write() by a thread that does not hold the write lock")
            self._writer_count -= 1
            if self._writer_count == 0:
                self._writer = None
                self._released("write", me)
            self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        """``with rw.read():`` shared access."""
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        """``with rw.write():`` exclusive access."""
        self.acquire_write()
        try:
            yield
        finally:
            self.release_write()

    # Hooks for the instrumented subclass (called with the condition held).
    def _wait_for(self, predicate: Any, timeout: float | None, op: str) -> bool:
        return bool(self._cond.wait_for(predicate, timeout))

    def _took(self, op: str, me: int) -> None:
        pass

    def _released(self, op: str, me: int) -> None:
        pass


class ThreadRWLock(PlainRWLock):
    """A readers-writer lock for threads (writer preference, re-entrant per
    thread): ``with rw.read(): ...`` / ``with rw.write(): ...``.  Readers and the
    writer ``hold`` it; blocked threads ``need`` it with op ``read``/``write``."""

    def __new__(cls, name: str | None = None, **meta: Any) -> ThreadRWLock:
        if not STATE.enabled:
            return PlainRWLock(name, **meta)  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        super().__init__(name, **meta)
        self._stats = _RWStats(self, name, meta, capture_location())
        self._since: dict[tuple[str, int], int] = {}

    @property
    def name(self) -> str:
        return self._stats._peeps_name

    @property
    def _peeps_id(self) -> str:
        return self._stats._peeps_id

    def _wait_for(self, predicate: Any, timeout: float | None, op: str) -> bool:
        stats = self._stats
        waiter = _waiter()
        stats._peeps_contentions += 1
        if _lockdep.ENABLED and held_here():
            _lockdep.check(held_here(), stats)
        stats._peeps_waiters.add(waiter, op)
        start = _monotonic_ns()
        try:
            return bool(self._cond.wait_for(predicate, timeout))
        finally:
            stats._peeps_waiters.remove(waiter)
            stats._waited(_monotonic_ns() - start)

    def _took(self, op: str, me: int) -> None:
        stats = self._stats
        stats._peeps_acquisitions += 1
        if (op == "read" and self._readers.get(me) == 1) or op == "write":
            self._since[(op, me)] = _monotonic_ns()
            if _lockdep.ENABLED:
                _lockdep_push(stats)

    def _released(self, op: str, me: int) -> None:
        since = self._since.pop((op, me), None)
        if since is not None:
            self._stats._held(_monotonic_ns() - since)
        if _lockdep.ENABLED:
            _lockdep_pop(held_here(), self._stats)


class _RWStats(_Instrumented):
    """The node of a :class:`ThreadRWLock` (kept apart so the lock holds it strongly
    and the registry weakly)."""

    __slots__ = ("_rw",)

    lock_type = "rwlock"

    def __init__(self, rw: ThreadRWLock, name: str | None, meta: dict[str, Any],
                 location: Location | None) -> None:
        self._rw = weakref.ref(rw)
        self._peeps_init(name, meta, location)

    def _holders(self) -> list[tuple[int, int, int]]:
        rw = self._rw()
        if rw is None:
            return []
        since = rw._since.copy()
        out = [(ident, count, since.get(("read", ident), 0))
               for ident, count in rw._readers.copy().items()]
        writer = rw._writer
        if writer is not None:
            out.append((writer, rw._writer_count, since.get(("write", writer), 0)))
        return out

    def _extra_attrs(self) -> dict[str, Any]:
        rw = self._rw()
        if rw is None:
            return {}
        return {"readers": len(rw._readers), "writer": rw._writer is not None,
                "writers_waiting": rw._writers_waiting}
