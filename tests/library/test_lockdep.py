"""Lock-order validation: inversions are reported with both acquisition sites
before anything deadlocks, once, in the graph, the events and the API."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import peeps
from graph_support import edges
from library._threads_support import node_labelled
from peeps import _lockdep


@pytest.fixture(autouse=True)
def _fresh_lock_orders(lock_fast_path: str) -> Iterator[None]:
    """Every test here runs on each of ThreadLock's fast paths."""
    _lockdep.reset()
    yield
    _lockdep.reset()


def in_thread(fn: object) -> None:
    t = threading.Thread(target=fn)  # type: ignore[arg-type]
    t.start()
    t.join(5)


def test_opposite_orders_are_reported_without_any_deadlock() -> None:
    a = peeps.ThreadLock("t.dep.a")
    b = peeps.ThreadLock("t.dep.b")

    def a_then_b() -> None:
        with a, b:  # site one
            pass

    def b_then_a() -> None:
        with b, a:  # site two
            pass

    in_thread(a_then_b)
    assert peeps.lock_order_reports() == []
    in_thread(b_then_a)  # runs after the first thread: no deadlock ever happens
    [report] = peeps.lock_order_reports()
    assert report["cycle"] == ["t.dep.b", "t.dep.a", "t.dep.b"]
    sites = {(o["first"], o["then"]): o["site"] for o in report["orders"]}
    src = Path(__file__).read_text().splitlines()
    one = src.index("        with a, b:  # site one") + 1
    two = src.index("        with b, a:  # site two") + 1
    assert sites == {("t.dep.a", "t.dep.b"): f"{__file__}:{one}",
                     ("t.dep.b", "t.dep.a"): f"{__file__}:{two}"}
    assert all(o["stack"][-1].endswith(("in a_then_b", "in b_then_a")) for o in report["orders"])

    graph = peeps.collect_graph()
    node = node_labelled(graph, report["title"], "lockdep")
    assert {e["dst"] for e in edges(graph, "touches", src=node["id"])} == {a._peeps_id, b._peeps_id}
    assert node_labelled(graph, "t.dep.a")["attrs"]["lockdep_reports"] == [report["id"]]
    [event] = [e for e in graph["events"] if e["name"] == "lock.order.inversion"
               and e["attrs"]["report_id"] == report["id"]]
    assert event["attrs"]["cycle"] == report["cycle"]
    assert sorted(event["attrs"]["sites"]) == sorted(sites.values())

    in_thread(b_then_a)  # the same inversion again: still one report
    assert len(peeps.lock_order_reports()) == 1


def test_a_consistent_order_and_recursion_report_nothing() -> None:
    outer = peeps.ThreadRLock("t.dep.outer")
    inner = peeps.ThreadLock("t.dep.inner")
    for _ in range(3):
        with outer, outer, inner:
            pass
    assert peeps.lock_order_reports() == []


def test_a_three_lock_cycle_is_found() -> None:
    x, y, z = (peeps.ThreadLock(f"t.dep.{n}") for n in "xyz")
    for first, second in ((x, y), (y, z), (z, x)):
        with first, second:
            pass
    [report] = peeps.lock_order_reports()
    assert report["cycle"] == ["t.dep.z", "t.dep.x", "t.dep.y", "t.dep.z"]
    assert len(report["orders"]) == 3


def test_unnamed_locks_are_classed_by_creation_site() -> None:
    def make() -> peeps.ThreadLock:
        return peeps.ThreadLock()  # one class for every lock made here

    first, second = make(), make()
    named = peeps.ThreadLock("t.dep.named")
    with first, named:
        pass
    with named, second:  # a different lock, but the same class as ``first``
        pass
    [report] = peeps.lock_order_reports()
    assert any(cls.startswith(f"{__file__}:") for cls in report["cycle"])


def test_inversion_is_reported_before_the_blocking_acquire() -> None:
    """The deadlocking order: reported while the second thread is about to block."""
    left = peeps.ThreadLock("t.dep.left")
    right = peeps.ThreadLock("t.dep.right")
    with left, right:
        pass
    reported = threading.Event()
    left.acquire()

    def inverted() -> None:
        with right:
            # left is held by the main thread: this acquire blocks.
            if left.acquire(timeout=5):
                left.release()

    t = threading.Thread(target=inverted)
    t.start()
    try:
        for _ in range(500):
            if peeps.lock_order_reports():
                reported.set()
                break
            t.join(0.01)
    finally:
        left.release()
        t.join(5)
    assert reported.is_set()


def test_lockdep_off_records_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_lockdep, "ENABLED", False)
    a = peeps.ThreadLock("t.dep.off.a")
    b = peeps.ThreadLock("t.dep.off.b")
    with a, b:
        pass
    with b, a:
        pass
    assert peeps.lock_order_reports() == []


def _has_cycle(pairs: set[tuple[int, int]]) -> bool:
    """Reference: does the directed graph of (first, then) pairs have a cycle?"""
    graph: dict[int, set[int]] = {}
    for a, b in pairs:
        graph.setdefault(a, set()).add(b)
    state: dict[int, int] = {}

    def visit(node: int) -> bool:
        state[node] = 1
        for nxt in graph.get(node, ()):
            if state.get(nxt) == 1 or (nxt not in state and visit(nxt)):
                return True
        state[node] = 2
        return False

    return any(node not in state and visit(node) for node in list(graph))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=12))
def test_reports_match_a_reference_cycle_check(nestings: list[tuple[int, int]]) -> None:
    """Nest lock pairs in a random order: an inversion is reported exactly when
    the orders taken so far contain a cycle, and every reported cycle is real."""
    _lockdep.reset()
    locks = [peeps.ThreadLock(f"t.prop.{i}") for i in range(5)]
    pairs: set[tuple[int, int]] = set()
    for outer, inner in nestings:
        if outer == inner:
            continue
        with locks[outer], locks[inner]:
            pass
        pairs.add((outer, inner))
    reports = peeps.lock_order_reports()
    assert bool(reports) == _has_cycle(pairs)
    for report in reports:
        steps = [int(c.rsplit(".", 1)[1]) for c in report["cycle"]]
        assert steps[0] == steps[-1]
        assert all(step in pairs for step in itertools.pairwise(steps))
    _lockdep.reset()


def test_out_of_order_and_foreign_releases_keep_the_held_chain_right() -> None:
    """Locks released out of order, or by another thread (legal for a Lock), leave
    the thread's chain holding exactly what it holds: later orders are real."""
    a, b, c = (peeps.ThreadLock(f"t.chain.{n}") for n in "abc")
    chain = _lockdep.chain_here()
    a.acquire()
    b.acquire()
    a.release()  # out of order: b stays held
    assert _lockdep.held_locks(chain) == [b]
    with c:  # records b -> c only
        assert _lockdep.held_locks(chain) == [c, b]
    in_thread(b.release)  # another thread releases b
    assert _lockdep.held_locks(chain) == []
    with a, c:  # a -> c: no cycle with b -> c
        pass
    assert peeps.lock_order_reports() == []
    with c, b:  # c -> b closes b -> c
        pass
    [report] = peeps.lock_order_reports()
    assert report["cycle"] in (["t.chain.b", "t.chain.c", "t.chain.b"],
                               ["t.chain.c", "t.chain.b", "t.chain.c"])
    assert chain.top is None


def test_a_stale_chain_entry_is_repaired_not_followed() -> None:
    """A race (a foreign release while the holder takes another lock) can leave a
    released lock linked in; the next nested acquire drops it, and no walk loops."""
    a, b = peeps.ThreadLock("t.stale.a"), peeps.ThreadLock("t.stale.b")
    chain = _lockdep.chain_here()
    a.acquire()
    a._owner = None  # as if released elsewhere while still linked
    a._lock.release()
    a.acquire()  # a is linked onto itself: repaired
    with b:
        assert _lockdep.held_locks(chain) == [b, a]
    a.release()
    assert chain.top is None and peeps.lock_order_reports() == []


def test_rlock_and_rwlock_take_part_in_lock_order() -> None:
    r = peeps.ThreadRLock("t.mixed.r")
    rw = peeps.ThreadRWLock("t.mixed.rw")
    with r, r, rw.read():
        pass
    with rw.write(), r:
        pass
    [report] = peeps.lock_order_reports()
    assert set(report["cycle"]) == {"t.mixed.r", "t.mixed.rw"}
    assert _lockdep.chain_here().top is None
