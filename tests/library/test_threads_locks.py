"""Thread locks on real threads: holders, waiters, counters, deadlock cycles
found through ``collect_graph()``, thread calls, and disabled mode."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

import peeps
from graph_support import edges
from library._threads_support import node_labelled, thread_node, wait_for_graph
from peeps import _lockdep, _threads
from peeps._config import STATE


@pytest.fixture(autouse=True)
def _fresh_lock_orders() -> Iterator[None]:
    _lockdep.reset()
    yield
    _lockdep.reset()


@pytest.fixture
def disabled() -> Iterator[None]:
    STATE.enabled = False
    try:
        yield
    finally:
        STATE.enabled = True


def _waiting_on(graph: Mapping[str, Any], lock_id: str) -> list[str]:
    return [e["src"] for e in edges(graph, "needs", dst=lock_id)]


def test_holder_holds_and_blocked_thread_needs_the_lock() -> None:
    lock = peeps.ThreadLock("t.locks.shared")
    holder_ready, let_go = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            holder_ready.set()
            let_go.wait()

    def waiter() -> None:
        with lock:
            pass

    threads = [threading.Thread(target=holder, name="t.holder"),
               threading.Thread(target=waiter, name="t.waiter")]
    threads[0].start()
    holder_ready.wait()
    threads[1].start()
    try:
        graph = wait_for_graph(lambda g: len(_waiting_on(g, lock._peeps_id)) == 1)
    finally:
        let_go.set()
        for t in threads:
            t.join(5)
    node = node_labelled(graph, "t.locks.shared", "thread_lock")
    holder_node = thread_node(graph, "t.holder")
    waiter_node = thread_node(graph, "t.waiter")
    assert holder_node is not None and waiter_node is not None
    [held] = edges(graph, "holds", dst=node["id"])
    assert held["src"] == holder_node["id"] and held["attrs"]["held_ns"] > 0
    [needed] = edges(graph, "needs", dst=node["id"])
    assert needed["src"] == waiter_node["id"] and needed["attrs"]["op"] == "acquire"
    attrs = node["attrs"]
    assert attrs["locked"] is True and attrs["waiters"] == 1 and attrs["contentions"] == 1
    assert attrs["holder_thread_ids"] == [holder_node["id"]] and attrs["holder"] == holder_node["id"]
    assert attrs["meta"]["ctx.location"].startswith(__file__)
    # After both are done: counts and timings add up, nobody holds it.
    stats = lock.statistics()
    assert stats["acquisitions"] == 2 and stats["contentions"] == 1
    assert stats["total_wait_ns"] >= stats["max_wait_ns"] > 0
    assert stats["total_hold_ns"] >= stats["max_hold_ns"] > 0
    assert stats["locked"] is False and stats["waiters"] == 0


@pytest.mark.usefixtures("lock_fast_path")
def test_every_fast_path_introspects_like_the_python_methods() -> None:
    """The C methods carry the Python methods' signatures and name ThreadLock."""
    from peeps import _thread_locks
    reference = _thread_locks._PY_TICK_TIMED
    for name in ("acquire", "release", "__enter__", "__exit__"):
        method = getattr(peeps.ThreadLock, name)
        want = list(inspect.signature(reference[name]).parameters)
        assert list(inspect.signature(method).parameters) == want, (name, method)
        assert "ThreadLock" in repr(method) or "_clocked" in repr(method), method
    assert list(inspect.signature(peeps.ThreadLock("t.sig").acquire).parameters) == [
        "blocking", "timeout"]


@pytest.mark.usefixtures("lock_fast_path")
def test_fast_path_keeps_lock_semantics() -> None:
    lock = peeps.ThreadLock("t.locks.fast")
    assert lock.acquire() is True
    assert lock.locked() and lock.acquire(blocking=False) is False
    assert lock.acquire(timeout=0.01) is False
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()
    with lock:
        assert lock.locked()
    assert lock.statistics()["acquisitions"] == 2


def test_the_c_fast_path_releases_the_lock_when_its_bookkeeping_fails() -> None:
    """If counting an acquire raises in C (here a counter whose ``+`` fails),
    the acquire raises that error and leaves the real lock free, not held by
    nobody.  (The clocked C pair; the tick-timed one shares that code.)"""
    from peeps import _thread_locks

    if _thread_locks._speedups is None:
        if os.environ.get("PEEPS_TEST_REQUIRE_SPEEDUPS"):
            pytest.fail("peeps._speedups was not built, and PEEPS_TEST_REQUIRE_SPEEDUPS is set")
        pytest.skip("peeps._speedups was not built (no C compiler at install)")

    class Failing(int):
        def __add__(self, other: object) -> int:
            raise ArithmeticError("counter broken")

    peeps.stop_sampler()
    wanted = _thread_locks.use_speedups
    _thread_locks.use_speedups = True
    try:
        _thread_locks._time_holds_by_ticks(False)
        assert peeps.ThreadLock.acquire is _thread_locks._C_CLOCKED["acquire"]
        for lock in (peeps.ThreadLock("t.locks.failcount"),
                     peeps.ThreadRLock("t.locks.rfailcount")):
            lock._peeps_acquisitions = Failing(0)
            with pytest.raises(ArithmeticError, match="counter broken"):
                lock.acquire()
            assert not lock.locked() and lock._owner is None, lock
            lock._peeps_acquisitions = 0
            with lock:
                assert lock.locked()
            assert not lock.locked()
    finally:
        _thread_locks.use_speedups = wanted
        _thread_locks._time_holds_by_ticks(bool(_threads.COARSE_NOW[0]))


@pytest.mark.usefixtures("lock_fast_path")
def test_rlock_times_holds_and_waits_for_another_holder() -> None:
    """Re-entry only counts; the outermost release times the hold (without a
    sampler) and frees the lock; held by another thread, an acquire waits for
    it (contention counted, the graph's waiter shown) and then holds it once."""
    rlock = peeps.ThreadRLock("t.locks.rtimed")
    clocked = _threads.COARSE_NOW[0] == 0
    with rlock:
        with rlock:
            threading.Event().wait(0.02)
        assert rlock._count == 1 and rlock.locked()
    stats = rlock.statistics()
    assert stats["acquisitions"] == 1 and not stats["locked"] and rlock._count == 0
    if clocked:
        assert 20_000_000 <= stats["total_hold_ns"] < 10_000_000_000
    held, go = threading.Event(), threading.Event()

    def holder() -> None:
        with rlock:
            held.set()
            go.wait(5)

    t = threading.Thread(target=holder, name="t.rholder")
    t.start()
    assert held.wait(5)
    assert rlock.acquire(blocking=False) is False
    timer = threading.Timer(0.05, go.set)
    timer.start()
    assert rlock.acquire() is True
    assert rlock._count == 1 and rlock._owner is _lockdep.chain_here()
    rlock.release()
    t.join(5)
    timer.join(5)
    stats = rlock.statistics()
    assert stats["acquisitions"] == 3 and stats["contentions"] == 1
    assert stats["max_wait_ns"] > 0 and not stats["locked"]


@pytest.mark.usefixtures("lock_fast_path")
def test_rlock_counts_recursion_and_rejects_foreign_release() -> None:
    rlock = peeps.ThreadRLock("t.locks.rlock")
    with rlock, rlock:
        graph = peeps.collect_graph()
        node = node_labelled(graph, "t.locks.rlock")
        [held] = edges(graph, "holds", dst=node["id"])
        assert held["attrs"]["count"] == 2
        errors: list[BaseException] = []

        def foreign() -> None:
            try:
                rlock.release()
            except RuntimeError as exc:
                errors.append(exc)

        t = threading.Thread(target=foreign)
        t.start()
        t.join()
        assert len(errors) == 1
    assert rlock.statistics()["locked"] is False
    assert rlock.statistics()["acquisitions"] == 1


@pytest.mark.usefixtures("lock_fast_path")
def test_condition_waiters_need_the_condition_and_wake_up() -> None:
    cond = peeps.ThreadCondition(name="t.locks.cond")
    items: list[int] = []

    def consumer() -> None:
        with cond:
            cond.wait_for(lambda: bool(items), timeout=5)

    t = threading.Thread(target=consumer, name="t.consumer")
    t.start()
    graph = wait_for_graph(lambda g: len(_waiting_on(g, cond._peeps_id)) == 1)
    [edge] = edges(graph, "needs", dst=cond._peeps_id)
    assert edge["attrs"]["op"] == "wait"
    consumer_node = thread_node(graph, "t.consumer")
    assert consumer_node is not None and edge["src"] == consumer_node["id"]
    # While waiting, the consumer does not hold the condition's lock.
    lock_node = node_labelled(graph, "t.locks.cond.lock")
    assert edges(graph, "holds", dst=lock_node["id"]) == []
    with cond:
        items.append(1)
        cond.notify()
    t.join(5)
    assert not t.is_alive()


def test_semaphore_permit_holders_and_handoff_release() -> None:
    sem = peeps.ThreadSemaphore(2, "t.locks.sem")
    sem.acquire()
    sem.acquire()
    graph = peeps.collect_graph()
    node = node_labelled(graph, "t.locks.sem")
    [held] = edges(graph, "holds", dst=node["id"])
    assert held["attrs"]["count"] == 2
    assert node["attrs"]["available"] == 0
    # Released by another thread (a hand-off): the holder's count goes down.
    t = threading.Thread(target=sem.release)
    t.start()
    t.join()
    sem.release()
    assert sem.statistics()["holders"] == 0
    bounded = peeps.ThreadBoundedSemaphore(1, "t.locks.bounded")
    with pytest.raises(ValueError):
        bounded.release()
    assert bounded.statistics()["holders"] == 0


def test_rwlock_readers_share_and_writer_waits() -> None:
    rw = peeps.ThreadRWLock("t.locks.rw")
    readers_in = threading.Barrier(3)
    done = threading.Event()

    def reader() -> None:
        with rw.read():
            readers_in.wait()
            done.wait()

    def writer() -> None:
        with rw.write():
            pass

    readers = [threading.Thread(target=reader, name=f"t.reader{i}") for i in range(2)]
    for t in readers:
        t.start()
    readers_in.wait()
    w = threading.Thread(target=writer, name="t.writer")
    w.start()
    try:
        graph = wait_for_graph(lambda g: len(_waiting_on(g, rw._peeps_id)) == 1)
    finally:
        done.set()
        for t in [*readers, w]:
            t.join(5)
    node = node_labelled(graph, "t.locks.rw")
    assert len(edges(graph, "holds", dst=node["id"])) == 2
    [need] = edges(graph, "needs", dst=node["id"])
    assert need["attrs"]["op"] == "write"
    assert node["attrs"]["readers"] == 2 and node["attrs"]["writers_waiting"] == 1
    stats = rw._stats.statistics()
    assert stats["acquisitions"] == 3 and stats["holders"] == 0


@pytest.mark.usefixtures("lock_fast_path")
def test_two_threads_deadlocked_on_two_locks_form_a_cycle() -> None:
    left = peeps.ThreadLock("t.dead.left")
    right = peeps.ThreadLock("t.dead.right")
    both = threading.Barrier(2)

    def take(first: peeps.ThreadLock, second: peeps.ThreadLock) -> None:
        first.acquire()
        both.wait()
        if second.acquire(timeout=10):
            second.release()
        with contextlib.suppress(RuntimeError):  # the test may have released it
            first.release()

    a = threading.Thread(target=take, args=(left, right), name="t.dead.a", daemon=True)
    b = threading.Thread(target=take, args=(right, left), name="t.dead.b", daemon=True)
    a.start()
    b.start()
    try:
        graph = wait_for_graph(lambda g: len(_waiting_on(g, left._peeps_id)) == 1
                               and len(_waiting_on(g, right._peeps_id)) == 1)
        deadlocks = peeps.find_deadlocks()
    finally:
        # Break the deadlock from outside: a Lock may be released by any thread.
        left.release()
        a.join(5)
        b.join(5)
    [cycle] = deadlocks
    a_node, b_node = thread_node(graph, "t.dead.a"), thread_node(graph, "t.dead.b")
    assert a_node is not None and b_node is not None
    assert set(cycle["node_ids"]) == {a_node["id"], b_node["id"], left._peeps_id, right._peeps_id}
    assert "t.dead.a" in cycle["title"] and "t.dead.b" in cycle["title"]
    assert not a.is_alive() and not b.is_alive()
    assert peeps.find_deadlocks() == []


def test_wait_chain_runs_from_a_task_through_a_worker_thread_to_the_lock_holder() -> None:
    """task --needs--> thread_call --needs--> worker thread --needs--> thread_lock
    <--holds-- holder thread: the chain a suspect follows to the real culprit."""
    lock = peeps.ThreadLock("t.chain.lock")
    holding, let_go = threading.Event(), threading.Event()

    def holder() -> None:
        with lock:
            holding.set()
            let_go.wait(5)

    def take() -> None:
        with lock:
            pass

    async def scenario() -> dict[str, Any]:
        task = peeps.tasks.spawn_tracked("t.chain.task", peeps.to_thread(take))
        graph = await asyncio.to_thread(
            wait_for_graph, lambda g: len(_waiting_on(g, lock._peeps_id)) == 1)
        let_go.set()
        await task
        return dict(graph)

    h = threading.Thread(target=holder, name="t.chain.holder")
    h.start()
    holding.wait()
    try:
        graph = asyncio.run(scenario())
    finally:
        let_go.set()
        h.join(5)
    task = node_labelled(graph, "t.chain.task", "task")
    [to_call] = edges(graph, "needs", src=task["id"])
    [to_worker] = edges(graph, "needs", src=to_call["dst"])
    [to_lock] = edges(graph, "needs", src=to_worker["dst"])
    assert to_lock["dst"] == lock._peeps_id
    [held] = edges(graph, "holds", dst=lock._peeps_id)
    holder_node = thread_node(graph, "t.chain.holder")
    assert holder_node is not None and held["src"] == holder_node["id"]


def test_to_thread_shows_the_call_and_its_worker() -> None:
    started, finish = threading.Event(), threading.Event()

    def work(x: int) -> int:
        started.set()
        finish.wait(5)
        return x * 2

    async def scenario() -> tuple[int, dict[str, Any]]:
        task = peeps.tasks.spawn_tracked("t.to_thread", peeps.to_thread(work, 21))
        await asyncio.to_thread(started.wait)
        graph = await asyncio.to_thread(peeps.collect_graph)
        finish.set()
        return await task, dict(graph)

    result, graph = asyncio.run(scenario())
    assert result == 42
    call = node_labelled(graph, "test_to_thread_shows_the_call_and_its_worker.<locals>.work",
                         "thread_call")
    assert call["attrs"]["state"] == "running"
    task_node = node_labelled(graph, "t.to_thread", "task")
    [awaits] = edges(graph, "needs", dst=call["id"])
    assert awaits["src"] == task_node["id"] and awaits["attrs"]["op"] == "await"
    [runs] = edges(graph, "needs", src=call["id"])
    worker = next(n for n in graph["nodes"] if n["id"] == runs["dst"])
    assert worker["kind"] == "thread" and runs["attrs"]["op"] == "run"
    assert not [n for n in peeps.collect_graph()["nodes"] if n["kind"] == "thread_call"]


def test_disabled_mode_gives_plain_threading_primitives(disabled: None) -> None:
    made: list[object] = [peeps.ThreadLock("x"), peeps.ThreadRLock("x"),
                          peeps.ThreadCondition(name="x"), peeps.ThreadSemaphore(2, "x"),
                          peeps.ThreadBoundedSemaphore(2, "x")]
    assert [type(m) for m in made] == [type(threading.Lock()), type(threading.RLock()),
                                       threading.Condition, threading.Semaphore,
                                       threading.BoundedSemaphore]
    rw = peeps.ThreadRWLock("x")
    assert type(rw).__name__ == "PlainRWLock"
    with rw.read(), rw.read():
        pass
    with rw.write():
        pass
    assert not any(n["label"] == "x" for n in peeps.collect_graph()["nodes"])
    assert _threads.current_thread_entity() is None or True


def test_thread_waiter_hook_names_the_calling_thread() -> None:
    from peeps import _registry

    peeps.init("t-hook", sampler="off")
    hook = _registry.thread_waiter_hook
    assert hook is not None
    seen: list[Any] = []
    t = threading.Thread(target=lambda: seen.extend([hook(), hook()]), name="t.hooked")
    t.start()
    t.join()
    first, second = seen
    assert first is second and first.name == "t.hooked"
    assert first.id.startswith("thread:")
    peeps.shutdown()
    assert _registry.thread_waiter_hook is None


def test_with_the_sampler_running_holds_are_timed_by_its_ticks() -> None:
    """The fast path reads no clock while the sampler runs: the sampler's ticks
    time holds, to a tick, and a held lock's ``held_ns`` grows."""
    sampler = peeps.start_sampler(mode="thread", hz=100)
    assert sampler is not None
    try:
        wait_until_ticks = sampler.ticks + 3
        lock, rlock = peeps.ThreadLock("t.locks.sampled"), peeps.ThreadRLock("t.locks.rsampled")
        with lock, rlock, rlock:
            while sampler.ticks < wait_until_ticks:
                threading.Event().wait(0.01)
            [(_, _, since)] = lock._holders()
            assert since > 0
            assert lock.statistics()["held_ns"] > 0
            assert rlock.statistics()["held_ns"] > 0
        for stats in (lock.statistics(), rlock.statistics()):
            assert stats["total_hold_ns"] >= stats["max_hold_ns"] > 0
            assert stats["acquisitions"] == 1 and not stats["locked"]
        # Short holds between ticks count (about) nothing, and never go negative.
        for _ in range(1000):
            with lock:
                pass
        assert lock.statistics()["acquisitions"] == 1001
    finally:
        peeps.stop_sampler()


def test_the_fast_path_reads_the_clock_only_while_no_sampler_ticks() -> None:
    """Without a sampler ThreadLock carries the clocked fast path (each hold
    timed by the clock); from a sampler's first tick to its stop, the one that
    reads no clock and leaves holds to the ticks."""
    from peeps import _thread_locks

    peeps.stop_sampler()
    clocked = _thread_locks.fast_path_methods(False)
    lock = peeps.ThreadLock("t.locks.switching")
    assert type(lock).acquire is clocked["acquire"]
    with lock:
        threading.Event().wait(0.02)
    assert lock.statistics()["max_hold_ns"] >= 20_000_000  # the clock timed it
    assert lock._since_gen == lock._peeps_acquisitions
    sampler = peeps.start_sampler(mode="thread", hz=100)
    assert sampler is not None
    try:
        wait_until_ticks = sampler.ticks + 2
        while sampler.ticks < wait_until_ticks:
            threading.Event().wait(0.01)
        assert type(lock).acquire is not clocked["acquire"]
        lock.acquire()
        lock.release()
        # No clock read: the lock does not know when that hold started.
        assert lock._since_gen != lock._peeps_acquisitions
    finally:
        peeps.stop_sampler()
    assert _threads.COARSE_NOW[0] == 0
    assert type(lock).acquire is clocked["acquire"]
    assert type(lock).__exit__ is clocked["__exit__"]
    before = lock.statistics()["total_hold_ns"]
    with lock:
        threading.Event().wait(0.02)
    assert lock.statistics()["total_hold_ns"] - before >= 20_000_000


@pytest.mark.usefixtures("lock_fast_path")
def test_every_fast_path_times_holds_without_double_counting() -> None:
    """Clocked, a hold's time is added at its release, once; ticking, the
    sampler's ticks time it.  A hold that began under one fast path and ends
    under the other is counted by the side that knows its start, never twice
    and never negative."""
    from peeps import _thread_locks

    lock = peeps.ThreadLock("t.locks.timed")
    clocked = _threads.COARSE_NOW[0] == 0
    with lock:
        threading.Event().wait(0.03)
    stats = lock.statistics()
    if clocked:
        assert 30_000_000 <= stats["max_hold_ns"] == stats["total_hold_ns"] < 10_000_000_000
        assert lock._since_gen == lock._peeps_acquisitions
    lock.acquire()
    threading.Event().wait(0.01)
    lock.release()
    after = lock.statistics()
    assert after["acquisitions"] == 2
    assert after["total_hold_ns"] >= after["max_hold_ns"] >= stats["max_hold_ns"] >= 0
    if clocked:
        assert after["total_hold_ns"] - stats["total_hold_ns"] >= 10_000_000
        # Started while the clock timed holds, ended after a switch to the
        # ticking path: the ticking release adds nothing for it...
        lock.acquire()
        _thread_locks._time_holds_by_ticks(True)
        try:
            lock.release()
        finally:
            _thread_locks._time_holds_by_ticks(False)
        assert lock.statistics()["total_hold_ns"] == after["total_hold_ns"]
        # ...and a hold that began ticking is not timed by a clocked release.
        _thread_locks._time_holds_by_ticks(True)
        try:
            lock.acquire()
        finally:
            _thread_locks._time_holds_by_ticks(False)
        threading.Event().wait(0.01)
        lock.release()
        assert lock.statistics()["total_hold_ns"] == after["total_hold_ns"]


@pytest.mark.usefixtures("lock_fast_path")
def test_the_fast_path_leaves_no_reference_behind() -> None:
    """A thousand nested holds and plain acquire/release pairs leave both
    locks and the thread's chain with the references they had (the C fast
    path keeps its own counts)."""
    import sys

    outer, inner = peeps.ThreadLock("t.refs.outer"), peeps.ThreadLock("t.refs.inner")
    rlock = peeps.ThreadRLock("t.refs.rlock")
    chain = _lockdep.chain_here()

    def rounds(n: int) -> None:
        for _ in range(n):
            with outer, inner:
                pass
            outer.acquire()
            outer.release()
            with rlock, outer, rlock:
                pass
            rlock.acquire()
            rlock.release()

    def counts() -> tuple[int, ...]:
        return (sys.getrefcount(outer), sys.getrefcount(inner), sys.getrefcount(rlock),
                sys.getrefcount(chain))

    def zero_refs() -> int:
        # The count at rest is the small int 0, which the whole process shares
        # (refcounted on 3.11): other threads move its count by a few, a
        # reference leaked per acquire would move it by thousands.
        return sys.getrefcount(rlock._count)

    rounds(10)
    before, zero_before = counts(), zero_refs()
    rounds(1000)
    assert counts() == before
    assert abs(zero_refs() - zero_before) < 500, (zero_before, zero_refs())
    assert chain.top is None and outer._owner is None and inner._owner is None
    assert rlock._owner is None and rlock._count == 0 and not rlock.locked()
