"""Instrumented threading locks: ``ThreadLock``, ``ThreadRLock``, ``ThreadCondition``,
``ThreadSemaphore``, ``ThreadBoundedSemaphore``, ``ThreadRWLock``.

Each is a drop-in for its ``threading`` counterpart and a ``thread_lock`` node:
the holder thread ``holds`` it, blocked threads ``need`` it, and it counts
acquisitions, contentions, wait and hold time (totals and maxima).

The uncontended path stays short: a non-blocking acquire of the real lock, a
counter, and linking the lock onto the thread's chain of held locks (which is
also how the holder is known, and what lock-order validation walks).  Hold
times come from the sampler's ticks (``account_holds``), so the fast path reads
no clock while a sampler runs.  Waiter bookkeeping only happens on contention.
With peeps disabled the constructors return the plain ``threading`` primitive.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from . import _lockdep, _tasks, _threads
from ._config import STATE
from ._lockdep import _LOCAL, HeldChain, chain_here, nested, push, unlink
from ._registry import REGISTRY, Clock, Location, WaitSet, base_attrs, capture_location, new_id
from ._threads import COARSE_NOW, current_thread_entity, entity_for_ident, quiet_now
from .types import Edge, Node

_get_ident = threading.get_ident
_monotonic_ns = time.monotonic_ns
#: The sampler's last tick (monotonic ns), 0 when no sampler runs.  While it
#: runs the sampler times holds (``account_holds``); without it the fast path
#: reads the clock itself (docs/threads.md, "Fast path").
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


def _waiter() -> Any:
    try:
        return current_thread_entity()
    except Exception as exc:
        REGISTRY.part_failed("thread lock waiters", exc)
        return None


class _Exclusive(_Instrumented):
    """What ``ThreadLock`` and ``ThreadRLock`` share: one holder at a time, kept
    as ``_owner`` (the holder's :class:`~peeps._lockdep.HeldChain`), and hold
    times measured by the sampler or, without one, by the clock.

    ``_since`` is when the hold numbered ``_since_gen`` (an ``acquisitions``
    count) started; a hold the sampler has not seen yet has an older
    ``_since_gen`` and started after its last tick.
    """

    __slots__ = ("_lock", "_lockdep_before", "_lockdep_prev", "_owner", "_rel", "_since",
                 "_since_gen", "_try")

    def _exclusive_init(self, lock: Any, name: str | None, meta: dict[str, Any]) -> None:
        self._lock = lock
        self._try = lock.acquire
        self._rel = lock.release
        self._owner: HeldChain | None = None
        self._lockdep_prev: Any = None
        self._since = 0
        self._since_gen = -1
        self._peeps_init(name, meta, capture_location())
        self._lockdep_before = _lockdep.before_set(self._peeps_class)

    def _took_contended(self, chain: HeldChain, now: int) -> None:
        """Bookkeeping after a blocking acquire (the clock was read anyway)."""
        self._peeps_acquisitions += 1
        self._since = now
        self._since_gen = self._peeps_acquisitions
        push(chain, self)

    def _acquire_contended(self, chain: HeldChain, timeout: float) -> bool:
        waiter = _waiter()
        self._peeps_contentions += 1
        # Before blocking: an inversion is reported even if this acquire deadlocks.
        _lockdep.check_before_wait(chain, self)
        self._peeps_waiters.add(waiter, "acquire")
        start = _monotonic_ns()
        try:
            acquired = self._try(True, timeout)
        finally:
            self._peeps_waiters.remove(waiter)
        now = _monotonic_ns()
        self._waited(now - start)
        if acquired:
            self._took_contended(chain, now)
        return bool(acquired)

    def _untimed_release(self) -> None:
        """No sampler running: time the hold with the clock (when its start is known)."""
        if self._since_gen == self._peeps_acquisitions:
            held_ns = _monotonic_ns() - self._since
            self._peeps_hold_total_ns += held_ns
            if held_ns > self._peeps_hold_max_ns:
                self._peeps_hold_max_ns = held_ns

    def _unlinked(self, chain: HeldChain) -> None:
        """Out of ``chain`` (``_owner`` already cleared)."""
        if chain.top is self:
            chain.top = self._lockdep_prev
        else:
            unlink(chain, self)

    def _since_now(self) -> int:
        """When the current hold started (to a sampler tick, a quiet one included:
        nothing ran, so nothing was acquired, before the last of those)."""
        if self._since_gen == self._peeps_acquisitions:
            return self._since
        coarse = _COARSE_NOW[0]
        return max(coarse, quiet_now()) if coarse else _monotonic_ns()

    def _holder(self) -> tuple[HeldChain, int] | None:
        chain = self._owner
        if chain is None:
            return None
        return chain, self._since_now()


class ThreadLock(_Exclusive):
    """``threading.Lock`` that shows its holder, waiters and timings.

    ``ThreadLock("demo.shared.left")``; ``name`` is also its lock-order class.
    """

    __slots__ = ()

    def __new__(cls, name: str | None = None, **meta: Any) -> ThreadLock:
        if not STATE.enabled:
            return threading.Lock()  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        self._exclusive_init(threading.Lock(), name, meta)

    # The fast path is written out in full (no helper calls): each Python call
    # costs about as much as the whole plain acquire/release pair.  These are
    # the methods while a thread sampler ticks: it times the holds, so they
    # read no clock and do not even test whether to.  Without one the class
    # carries the _clocked_* functions below instead (_time_holds_by_ticks).
    # (Bound methods taken before the sampler stops keep these: those holds
    # then go untimed, never counted twice.)
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        try:
            chain: HeldChain = _LOCAL.chain
        except AttributeError:
            chain = chain_here()
        if self._try(False):
            self._peeps_acquisitions += 1
            top = chain.top
            if top is not None:
                top = nested(chain, top, self)
            self._lockdep_prev = top
            chain.top = self
            self._owner = chain
            return True
        if not blocking:
            return False
        return self._acquire_contended(chain, timeout)

    __enter__ = acquire

    def release(self, exc_type: type[BaseException] | None = None,
                exc: BaseException | None = None, tb: TracebackType | None = None) -> None:
        """Release the lock.  Also ``__exit__`` (the exception arguments are
        unused; a separate method would only save filling in their defaults)."""
        chain = self._owner
        if chain is not None:
            self._owner = None
            if chain.top is self:
                chain.top = self._lockdep_prev
            else:
                unlink(chain, self)
        self._rel()

    __exit__ = release

    def locked(self) -> bool:
        return bool(self._lock.locked())

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
        holder = self._holder()
        return [(holder[0].ident, 1, holder[1])] if holder is not None else []

    def __repr__(self) -> str:
        return f"<peeps.ThreadLock {self._peeps_name!r} {'locked' if self.locked() else 'unlocked'}>"


# ThreadLock's fast path without a thread sampler: the clock times each hold.
# These still test COARSE_NOW: ``threading.Condition`` (and callers) keep bound
# methods, which must stay right after a sampler starts.
def _clocked_acquire(self: ThreadLock, blocking: bool = True, timeout: float = -1) -> bool:
    try:
        chain: HeldChain = _LOCAL.chain
    except AttributeError:
        chain = chain_here()
    if self._try(False):
        self._peeps_acquisitions += 1
        if not _COARSE_NOW[0]:  # no sampler to time the hold
            self._since = _monotonic_ns()
            self._since_gen = self._peeps_acquisitions
        top = chain.top
        if top is not None:
            top = nested(chain, top, self)
        self._lockdep_prev = top
        chain.top = self
        self._owner = chain
        return True
    if not blocking:
        return False
    return self._acquire_contended(chain, timeout)


def _clocked_release(self: ThreadLock, exc_type: type[BaseException] | None = None,
                     exc: BaseException | None = None, tb: TracebackType | None = None) -> None:
    """``release()`` and ``__exit__`` both (the exception arguments are unused;
    a second copy would only save filling in their defaults)."""
    chain = self._owner
    if chain is not None:
        if not _COARSE_NOW[0] and self._since_gen == self._peeps_acquisitions:
            held_ns = _monotonic_ns() - self._since
            self._peeps_hold_total_ns += held_ns
            if held_ns > self._peeps_hold_max_ns:
                self._peeps_hold_max_ns = held_ns
        self._owner = None
        if chain.top is self:
            chain.top = self._lockdep_prev
        else:
            unlink(chain, self)
    self._rel()


#: The C extension, if it was built; ``use_speedups``: whether to use it
#: (``PEEPS_SPEEDUPS``; tests switch it and call ``_time_holds_by_ticks``).
_speedups = _tasks._speedups
use_speedups: bool = _tasks.speedups_wanted
_PY_TICK_TIMED = {"acquire": ThreadLock.acquire, "__enter__": ThreadLock.acquire,
                  "release": ThreadLock.release, "__exit__": ThreadLock.release}
_CLOCKED = {"acquire": _clocked_acquire, "__enter__": _clocked_acquire,
            "release": _clocked_release, "__exit__": _clocked_release}
#: The C versions of _PY_TICK_TIMED and _CLOCKED, and of ThreadRLock's
#: methods (_PY_RLOCK), made on first use.
_C_TICK_TIMED: dict[str, Any] = {}
_C_CLOCKED: dict[str, Any] = {}
_C_RLOCK: dict[str, Any] = {}


def _c_methods() -> bool:
    """Make the C fast paths (``peeps._speedups``, which call the Python
    methods for anything but the plain ``acquire()``, ``release()`` and
    ``with``) if they were built and are wanted; whether there are some."""
    if _speedups is None or not use_speedups:
        return False
    if not _C_TICK_TIMED:
        try:
            acquire, release, clocked_acquire, clocked_release = _speedups.lock_methods(
                ThreadLock, HeldChain, _LOCAL, chain_here, nested, unlink,
                _PY_TICK_TIMED["acquire"], _PY_TICK_TIMED["release"],
                _clocked_acquire, _clocked_release, _COARSE_NOW, _monotonic_ns)
            r_acquire, r_release, r_exit = _speedups.rlock_methods(
                ThreadRLock, _PY_RLOCK["acquire"], _PY_RLOCK["release"])
        except Exception as exc:  # reported; the Python methods serve
            REGISTRY.part_failed("thread lock fast path in C", exc)
            return False
        _C_TICK_TIMED.update(acquire=acquire, __enter__=acquire, release=release,
                             __exit__=release)
        _C_CLOCKED.update(acquire=clocked_acquire, __enter__=clocked_acquire,
                          release=clocked_release, __exit__=clocked_release)
        _C_RLOCK.update(acquire=r_acquire, __enter__=r_acquire, release=r_release,
                        __exit__=r_exit)
    return True


def fast_path_methods(ticking: bool) -> dict[str, Any]:
    """ThreadLock's methods while a sampler ticks (``ticking``: they read no
    clock) or while none does (they time each hold): in C when it was built
    and is wanted, else in Python."""
    if _c_methods():
        return _C_TICK_TIMED if ticking else _C_CLOCKED
    return _PY_TICK_TIMED if ticking else _CLOCKED


def _time_holds_by_ticks(ticking: bool) -> None:
    """Give ThreadLock the fast path for whether a sampler times holds now
    (``_threads.ON_COARSE_CLOCK``).  A hold that straddles the switch is timed
    by whichever side knows its start (``_since_gen``).  ThreadRLock has one
    fast path for both (it tests the clock's switch itself): the C one, when
    the C ones are used."""
    for name, method in fast_path_methods(ticking).items():
        setattr(ThreadLock, name, method)
    for name, method in (_C_RLOCK if _c_methods() else _PY_RLOCK).items():
        setattr(ThreadRLock, name, method)


class ThreadRLock(_Exclusive):
    """``threading.RLock`` that shows its holder (with its recursion count),
    waiters and timings.

    Re-entrancy is counted here over a plain lock, like ``threading``'s Python
    RLock: a nested acquire by the holder never touches the real lock."""

    __slots__ = ("_count",)

    lock_type = "rlock"

    def __new__(cls, name: str | None = None, **meta: Any) -> ThreadRLock:
        if not STATE.enabled:
            return threading.RLock()  # type: ignore[return-value]
        return super().__new__(cls)

    def __init__(self, name: str | None = None, **meta: Any) -> None:
        self._count = 0
        self._exclusive_init(threading.Lock(), name, meta)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        try:
            chain: HeldChain = _LOCAL.chain
        except AttributeError:
            chain = chain_here()
        if self._owner is chain:
            self._count += 1
            return True
        if self._try(False):
            self._count = 1
            self._peeps_acquisitions += 1
            if not _COARSE_NOW[0]:
                self._since = _monotonic_ns()
                self._since_gen = self._peeps_acquisitions
            top = chain.top
            if top is not None:
                top = nested(chain, top, self)
            self._lockdep_prev = top
            chain.top = self
            self._owner = chain
            return True
        if not blocking:
            return False
        acquired = self._acquire_contended(chain, timeout)
        if acquired:
            self._count = 1
        return acquired

    __enter__ = acquire

    def release(self) -> None:
        try:
            chain: HeldChain | None = _LOCAL.chain
        except AttributeError:
            chain = None
        if chain is None or self._owner is not chain:
            raise RuntimeError("cannot release un-acquired lock")
        count = self._count - 1
        if count:
            self._count = count
            return
        self._count = 0
        if not _COARSE_NOW[0]:
            self._untimed_release()
        self._owner = None
        if chain.top is self:
            chain.top = self._lockdep_prev
        else:
            unlink(chain, self)
        self._rel()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    # threading.Condition protocol: wait() releases every recursion level.
    def _release_save(self) -> Any:
        chain = chain_here()
        if self._owner is not chain:
            raise RuntimeError("cannot release un-acquired lock")
        count = self._count
        self._count = 0
        if not _COARSE_NOW[0]:
            self._untimed_release()
        self._owner = None
        self._unlinked(chain)
        self._rel()
        return count

    def _acquire_restore(self, state: Any) -> None:
        self._try()
        self._count = state
        self._took_contended(chain_here(), _monotonic_ns())

    def _is_owned(self) -> bool:
        return self._owner is chain_here()

    def locked(self) -> bool:
        return bool(self._lock.locked())

    def _holders(self) -> list[tuple[int, int, int]]:
        holder = self._holder()
        return [(holder[0].ident, self._count, holder[1])] if holder is not None else []

    def __repr__(self) -> str:
        holder = self._owner
        owner = holder.ident if holder is not None else None
        return f"<peeps.ThreadRLock {self._peeps_name!r} owner={owner} count={self._count}>"


#: ThreadRLock's methods in Python (the reference for the C ones).
_PY_RLOCK = {"acquire": ThreadRLock.acquire, "__enter__": ThreadRLock.acquire,
             "release": ThreadRLock.release, "__exit__": ThreadRLock.__exit__}
_time_holds_by_ticks(bool(COARSE_NOW[0]))
_threads.ON_COARSE_CLOCK = _time_holds_by_ticks


def account_holds(chain: HeldChain, now: int, last_tick: int) -> None:
    """Called by the sampler each tick for a thread holding locks: time their holds.

    A hold seen for the first time started after the last tick (or is timed by
    the clock already); it counts from that tick, as a coarse clock would: a
    hold shorter than a tick usually counts 0, one spanning a tick counts a tick.
    A hold seen again (same ``acquisitions`` count) lasted the whole interval."""
    entry = chain.top
    depth = 0
    while entry is not None and depth < _lockdep.MAX_DEPTH:
        if entry._owner is chain and isinstance(entry, _Exclusive):
            gen = entry._peeps_acquisitions
            if entry._since_gen != gen:
                entry._since_gen = gen
                entry._since = last_tick or now
            since = entry._since
            step = now - (since if since > last_tick else last_tick)
            if step > 0:
                entry._peeps_hold_total_ns += step
                held_ns = now - since
                if held_ns > entry._peeps_hold_max_ns:
                    entry._peeps_hold_max_ns = held_ns
        entry = entry._lockdep_prev
        depth += 1


_threads.HOLD_ACCOUNTING = account_holds


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
        #: (op, ident) -> the hold's link in the thread's chain of held locks.
        self._links: dict[tuple[str, int], _RWHold] = {}

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
        _lockdep.check_before_wait(chain_here(), _RWHold(stats))
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
            link = self._links[(op, me)] = _RWHold(stats)
            push(chain_here(), link)

    def _released(self, op: str, me: int) -> None:
        since = self._since.pop((op, me), None)
        if since is not None:
            self._stats._held(_monotonic_ns() - since)
        link = self._links.pop((op, me), None)
        if link is None:
            return
        chain = link._owner
        if chain is not None:
            link._owner = None
            under = link._lockdep_prev
            if chain.top is link:
                chain.top = under
            else:
                unlink(chain, link)


class _RWHold:
    """One thread's read or write hold of a :class:`ThreadRWLock` in that thread's
    chain of held locks (several threads can hold a read lock at once, so the
    lock cannot be its own link)."""

    __slots__ = ("_lockdep_before", "_lockdep_prev", "_owner", "_peeps_class", "_peeps_id")

    def __init__(self, stats: _RWStats) -> None:
        self._peeps_id = stats._peeps_id
        self._peeps_class = stats._peeps_class
        self._lockdep_before = stats._lockdep_before
        self._owner: HeldChain | None = None
        self._lockdep_prev: Any = None


class _RWStats(_Instrumented):
    """The node of a :class:`ThreadRWLock` (kept apart so the lock holds it strongly
    and the registry weakly)."""

    __slots__ = ("_lockdep_before", "_rw")

    lock_type = "rwlock"

    def __init__(self, rw: ThreadRWLock, name: str | None, meta: dict[str, Any],
                 location: Location | None) -> None:
        self._rw = weakref.ref(rw)
        self._peeps_init(name, meta, location)
        self._lockdep_before = _lockdep.before_set(self._peeps_class)

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
