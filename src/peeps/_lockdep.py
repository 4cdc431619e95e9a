"""Lock-order validation (lockdep-style) for peeps' threading locks.

Each lock belongs to a *class*: its ``name`` or, unnamed, its creation site.
Whenever a thread takes a lock of class B while holding one of class A, the
order ``A -> B`` is recorded once, with the site and stack where it happened.
When a new order closes a cycle in the order graph (``A -> B`` here, ``B -> A``
somewhere else, or a longer loop) the inversion is reported — before any
deadlock, since the check runs before a contended acquire blocks:

* event ``lock.order.inversion`` (attrs: ``cycle``, ``orders``),
* a ``lockdep`` node per report (``touches`` edges to the locks involved),
* ``lockdep_reports`` on the locks' nodes, and ``peeps.lock_order_reports()``.

Each thread's held locks form a chain linked through the locks themselves
(``HeldChain``): taking a lock while holding none costs two attribute stores,
and an order already seen costs one set lookup per held lock.  The order graph
is only locked when a pair of classes is seen for the first time.
"""

from __future__ import annotations

import collections
import itertools
import sys
import threading
import time
from typing import Any, Final, Protocol

from ._config import env_flag
from ._registry import _PKG_DIR, REGISTRY, Clock, capture_location, format_location, new_id
from .types import Edge, Node

ENV_LOCKDEP: Final = "PEEPS_LOCKDEP"
MAX_REPORTS: Final = 64
#: Distinct (first, then) class pairs remembered.  Lock names built per request
#: (``f"conn-{n}"``) would otherwise grow the order graph without bound.
MAX_ORDERS: Final = 20_000
STACK_LIMIT: Final = 12

#: Read by the lock wrappers on every acquire; ``PEEPS_LOCKDEP=0`` turns it off.
ENABLED: bool = env_flag(ENV_LOCKDEP, default=True)


class OrderedLock(Protocol):
    _peeps_id: str
    _peeps_class: str
    #: The chain of the thread holding it, or None.
    _owner: HeldChain | None
    #: The lock the same thread took just before it (next in the chain).
    _lockdep_prev: OrderedLock | None
    #: Classes already recorded as taken before this lock's class (shared per class).
    _lockdep_before: set[str]


#: A chain walk gives up after this many steps (a chain damaged by a race must
#: never hang the host).
MAX_DEPTH: Final = 256


class HeldChain:
    """The locks one thread holds, innermost first, linked through the locks'
    ``_lockdep_prev``: taking a lock is two attribute stores, releasing it one,
    and nothing is allocated.  A lock is in the chain while ``lock._owner is chain``.
    """

    __slots__ = ("ident", "top")

    def __init__(self, ident: int) -> None:
        self.ident = ident
        self.top: OrderedLock | None = None


#: Per thread: ``_LOCAL.chain`` (a ``threading.local`` attribute is the cheapest
#: per-thread lookup: no ``get_ident`` call, and a reused ident gets a fresh chain).
_LOCAL = threading.local()
#: Thread ident -> its chain, for the sampler and snapshots.  Chains of exited
#: threads are dropped by the sampler (``forget_thread``).
CHAINS: dict[int, HeldChain] = {}


def chain_here() -> HeldChain:
    """The calling thread's chain (created on first use)."""
    try:
        chain: HeldChain = _LOCAL.chain
    except AttributeError:
        ident = threading.get_ident()
        chain = _LOCAL.chain = CHAINS[ident] = HeldChain(ident)
    return chain


def held_locks(chain: HeldChain) -> list[OrderedLock]:
    """The locks in ``chain``, innermost first (entries a race left behind skipped)."""
    out: list[OrderedLock] = []
    entry = chain.top
    while entry is not None and len(out) < MAX_DEPTH:
        if entry._owner is chain and entry not in out:
            out.append(entry)
        entry = entry._lockdep_prev
    return out


def nested(chain: HeldChain, top: OrderedLock, lock: OrderedLock) -> OrderedLock | None:
    """``lock`` is being taken while the thread holds ``top`` (and what is under
    it): record orders not seen before, report any cycle they close, and return
    the top to link ``lock`` onto.

    The lock fast path calls this only when the thread already holds a lock, and
    an order already recorded costs one set lookup per held lock."""
    before = lock._lockdep_before
    entry: OrderedLock | None = top
    depth = 0
    while entry is not None:
        if entry._owner is not chain or entry is lock or depth >= MAX_DEPTH:
            return _repair(chain, lock)
        if entry._peeps_class not in before and ENABLED:
            _record(entry, lock)
        entry = entry._lockdep_prev
        depth += 1
    return top


def push(chain: HeldChain, lock: OrderedLock) -> None:
    """``lock`` is now held by ``chain``'s thread: check its order against what
    the thread holds and put it on top.  (The locks' uncontended fast paths
    write this out inline: a call costs as much as the rest of the pair.)"""
    top = chain.top
    if top is not None:
        top = nested(chain, top, lock)
    lock._lockdep_prev = top
    chain.top = lock
    lock._owner = chain


def _repair(chain: HeldChain, lock: OrderedLock) -> OrderedLock | None:
    """Relink ``chain`` from the locks this thread really holds (a lock released by
    another thread mid-acquire can leave a stale entry), then check as usual."""
    held = [entry for entry in held_locks(chain) if entry is not lock]
    under: OrderedLock | None = None
    for entry in reversed(held):
        entry._lockdep_prev = under
        under = entry
    chain.top = under
    if ENABLED:
        before = lock._lockdep_before
        for entry in held:
            if entry._peeps_class not in before:
                _record(entry, lock)
    return chain.top


def check_before_wait(chain: HeldChain, lock: OrderedLock) -> None:
    """Record the orders of a lock about to be waited for (before it is held)."""
    if chain.top is None or not ENABLED:
        return
    before = lock._lockdep_before
    for entry in held_locks(chain):
        if entry is not lock and entry._peeps_class not in before:
            _record(entry, lock)


def unlink(chain: HeldChain, lock: OrderedLock) -> None:
    """Take ``lock`` out of ``chain`` when it is not on top (released out of order)."""
    entry = chain.top
    depth = 0
    while entry is not None and depth < MAX_DEPTH:
        under = entry._lockdep_prev
        if under is lock:
            entry._lockdep_prev = lock._lockdep_prev
            return
        entry = under
        depth += 1


def forget_thread(ident: int) -> None:
    chain = CHAINS.get(ident)
    if chain is not None and chain.top is None:
        CHAINS.pop(ident, None)


#: lock class -> the classes recorded as taken before it (plus itself: nesting
#: within one class is not an order).  Locks keep a reference to their class's set.
_BEFORE: dict[str, set[str]] = {}


def before_set(cls: str) -> set[str]:
    before = _BEFORE.get(cls)
    if before is None:
        before = _BEFORE.setdefault(cls, {cls})
    return before


def _record(first: OrderedLock, then: OrderedLock) -> None:
    try:
        _new_order(first, then)
    except Exception as exc:
        REGISTRY.part_failed("lock order validation", exc)
    # Also when not recorded (over MAX_ORDERS): the check stays one set lookup.
    then._lockdep_before.add(first._peeps_class)


class OrderRecord:
    """The first time a thread took ``then`` while holding ``first``."""

    __slots__ = ("at_mono_ns", "first", "first_lock_id", "site", "stack", "then",
                 "then_lock_id", "thread")

    def __init__(self, first: OrderedLock, then: OrderedLock) -> None:
        self.first = first._peeps_class
        self.then = then._peeps_class
        self.first_lock_id = first._peeps_id
        self.then_lock_id = then._peeps_id
        self.site = format_location(capture_location())
        self.stack = _user_stack()
        self.thread = threading.current_thread().name
        self.at_mono_ns = time.monotonic_ns()

    def as_dict(self, now: Clock) -> dict[str, Any]:
        return {"first": self.first, "then": self.then, "site": self.site, "stack": self.stack,
                "thread": self.thread, "at_ns": now.wall_of(self.at_mono_ns),
                "first_lock_id": self.first_lock_id, "then_lock_id": self.then_lock_id}


def _user_stack() -> list[str]:
    frame = sys._getframe(2)
    out: list[str] = []
    while frame is not None and len(out) < STACK_LIMIT:
        if not frame.f_code.co_filename.startswith(_PKG_DIR):
            out.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        frame = frame.f_back  # type: ignore[assignment]
    out.reverse()
    return out


class LockOrderReport:
    """One lock-order cycle: the classes in order and where each step was taken."""

    __slots__ = ("__weakref__", "_peeps_id", "created_mono_ns", "cycle", "orders")

    def __init__(self, cycle: list[str], orders: list[OrderRecord]) -> None:
        self._peeps_id = new_id("lockdep")
        self.cycle = cycle
        self.orders = orders
        self.created_mono_ns = time.monotonic_ns()

    @property
    def title(self) -> str:
        return "lock order inversion: " + " -> ".join(self.cycle)

    def as_dict(self, now: Clock | None = None) -> dict[str, Any]:
        now = now or Clock()
        return {
            "id": self._peeps_id,
            "title": self.title,
            "cycle": list(self.cycle),
            "orders": [o.as_dict(now) for o in self.orders],
            "sites": [o.site for o in self.orders],
            "detected_at_ns": now.wall_of(self.created_mono_ns),
        }

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = {
            "meta": {"ctx.location": self.orders[-1].site} if self.orders[-1].site else {},
            "created_at_ns": now.wall_of(self.created_mono_ns),
            "age_ns": max(0, now.mono_ns - self.created_mono_ns),
            **self.as_dict(now),
        }
        node: Node = {"id": self._peeps_id, "kind": "lockdep", "label": self.title,
                      "attrs": attrs}
        lock_ids = {o.first_lock_id for o in self.orders} | {o.then_lock_id for o in self.orders}
        edges: list[Edge] = [{"src": self._peeps_id, "dst": lock_id, "kind": "touches",
                              "attrs": {"op": "lock_order"}} for lock_id in sorted(lock_ids)]
        return node, edges


_MUTEX = threading.Lock()
#: (first class, then class) -> the first time that order was seen.
_ORDERS: dict[tuple[str, str], OrderRecord] = {}
_AFTER: dict[str, set[str]] = collections.defaultdict(set)
_REPORTS: collections.deque[LockOrderReport] = collections.deque(maxlen=MAX_REPORTS)
_REPORTED: set[frozenset[tuple[str, str]]] = set()
#: lock class -> ids of the reports naming it (shown on the locks' nodes).
CLASS_REPORTS: dict[str, list[str]] = {}


def _new_order(first: OrderedLock, then: OrderedLock) -> None:
    key = (first._peeps_class, then._peeps_class)
    if len(_ORDERS) >= MAX_ORDERS:
        REGISTRY.part_failed("lock order validation",
                             RuntimeError(f"more than {MAX_ORDERS} lock-order pairs; are lock "
                                          "names unique per object? New orders are not recorded"))
        return
    record = OrderRecord(first, then)
    with _MUTEX:
        if key in _ORDERS:
            return
        _ORDERS[key] = record
        _AFTER[key[0]].add(key[1])
        path = _path(key[1], key[0])
        if path is None:
            return
        cycle = [key[0], *path]  # first -> then -> ... -> first
        pairs = list(itertools.pairwise(cycle))
        signature = frozenset(pairs)
        if signature in _REPORTED:
            return
        _REPORTED.add(signature)
        report = LockOrderReport(cycle, [_ORDERS[p] for p in pairs])
        _REPORTS.append(report)
        for cls in set(cycle):
            CLASS_REPORTS.setdefault(cls, []).append(report._peeps_id)
    REGISTRY.track(report)
    REGISTRY.emit(then._peeps_id, "lock.order.inversion",
                  {"report_id": report._peeps_id, "cycle": cycle,
                   "sites": [o.site for o in report.orders],
                   "orders": [{"first": o.first, "then": o.then, "site": o.site,
                               "thread": o.thread} for o in report.orders]},
                  report._peeps_id)


def _path(start: str, goal: str) -> list[str] | None:
    """Classes from ``start`` to ``goal`` along recorded orders (BFS), or None."""
    previous: dict[str, str | None] = {start: None}
    queue = collections.deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while (prev := previous[path[-1]]) is not None:
                path.append(prev)
            path.reverse()
            return path
        for nxt in _AFTER.get(node, ()):
            if nxt not in previous:
                previous[nxt] = node
                queue.append(nxt)
    return None


def reports() -> list[dict[str, Any]]:
    """Every lock-order inversion found so far (oldest first), as plain dicts."""
    now = Clock()
    return [r.as_dict(now) for r in list(_REPORTS)]


def reset() -> None:
    """Forget recorded orders and reports (tests; a fresh start after a fix)."""
    with _MUTEX:
        for report in _REPORTS:
            REGISTRY.untrack(report)
        _ORDERS.clear()
        _AFTER.clear()
        _REPORTS.clear()
        _REPORTED.clear()
        CLASS_REPORTS.clear()
        for cls, before in list(_BEFORE.items()):
            before.intersection_update((cls,))


def lock_class(name: str | None, location: tuple[str, int] | None) -> str:
    if name:
        return name
    return format_location(location) or "<unknown>"


def find_deadlocks() -> list[dict[str, Any]]:
    """Wait-for cycles in this process now: ``collect_graph()`` checked with the
    same detector the server uses (``peeps.analysis.find_deadlocks``).  Each is a
    suspect record (``title``, ``reason`` with the chain, ``node_ids``)."""
    from ._snapshot import collect_graph
    from .analysis import GraphIndex
    from .analysis import find_deadlocks as _find_cycles

    graph = collect_graph()
    return [dict(s) for s in _find_cycles(GraphIndex.build(graph["nodes"], graph["edges"]))]
