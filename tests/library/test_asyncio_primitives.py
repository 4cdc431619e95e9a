"""Each instrumented asyncio primitive under a real wait: the ``needs``/``holds``
edges and attributes in ``collect_graph()``, the edges gone once the wait ends,
the node gone once the primitive is garbage collected."""

from __future__ import annotations

import asyncio
import gc
import os
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import peeps
from graph_support import edges, node, settle
from peeps import _sync
from peeps._tasks import current_task_entity


def ids(graph: Any) -> set[str]:
    return {n["id"] for n in graph["nodes"]}


def task_id(task: asyncio.Task[Any]) -> str:
    from peeps._tasks import entity_for_task

    entity = entity_for_task(task)
    assert entity is not None
    return entity.id


def assert_collected(ref: weakref.ref[Any], node_id: str) -> None:
    gc.collect()
    assert ref() is None, "the primitive is still referenced"
    assert node_id not in ids(peeps.collect_graph())


def _require_speedups() -> None:
    if os.environ.get("PEEPS_TEST_REQUIRE_SPEEDUPS"):
        pytest.fail("peeps._speedups was not built, and PEEPS_TEST_REQUIRE_SPEEDUPS is set")
    pytest.skip("peeps._speedups was not built (no C compiler at install)")


@pytest.fixture(params=["c", "done", "coroutines"])
def async_with(request: pytest.FixtureRequest) -> Iterator[str]:
    """``async with`` and ``release`` on Lock and Semaphore every way: in C
    (``peeps._speedups.aio_methods``, what is installed where the extension
    was built), in Python without coroutines (``__aenter__`` takes a free
    primitive at once and returns ``peeps._speedups.DONE``), and through the
    stdlib's coroutines, the fallback without the extension.  The first two
    must not be skipped where the C extension can be built."""
    classes = (peeps.Lock, peeps.Semaphore)
    names = ("__aenter__", "__aexit__", "release")
    saved = {cls: {name: vars(cls).get(name) for name in names} for cls in classes}
    if request.param == "c":
        if _sync.C_METHODS is None:
            _require_speedups()
        assert _sync.C_METHODS is not None
        for cls in classes:
            for name in names:
                assert vars(cls)[name] is _sync.C_METHODS[cls][name]
                assert type(vars(cls)[name]).__name__ == "method_descriptor"
        yield "c"
        return
    if _sync._DONE is None:
        if request.param == "done":
            _require_speedups()
    elif request.param == "done":
        _sync.use_methods(_sync.PY_METHODS)
    else:
        _sync.use_methods({cls: {"__aenter__": _sync._StdLock.__aenter__,
                                 "__aexit__": _sync._StdLock.__aexit__,
                                 "release": _sync.PY_METHODS[cls]["release"]}
                           for cls in classes})
    try:
        yield request.param
    finally:
        for cls, by_name in saved.items():
            for name, method in by_name.items():
                if method is None:
                    if name in vars(cls):
                        delattr(cls, name)
                else:
                    setattr(cls, name, method)


async def cancel_all(*tasks: asyncio.Task[Any]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.usefixtures("async_with")
def test_lock_holder_holds_and_waiter_needs() -> None:
    async def scenario() -> None:
        lock = peeps.Lock("test.lock")
        assert isinstance(lock, asyncio.Lock)
        release = asyncio.Event()

        async def holder(lock: asyncio.Lock) -> None:
            async with lock:
                await release.wait()

        async def waiter(lock: asyncio.Lock) -> None:
            async with lock:
                pass

        h = peeps.tasks.spawn_tracked("holder", holder(lock))
        await settle()
        w = peeps.tasks.spawn_tracked("waiter", waiter(lock))
        await settle()
        g = peeps.collect_graph()
        lock_id = lock._peeps_id
        attrs = node(g, lock_id)["attrs"]
        assert node(g, lock_id)["kind"] == "lock"
        assert attrs["locked"] is True
        assert attrs["holder"] == task_id(h)
        assert attrs["waiters"] == 1
        assert attrs["contentions"] == 1
        assert attrs["meta"]["ctx.location"].endswith("test_asyncio_primitives.py:" +
                                                      attrs["meta"]["ctx.location"].rsplit(":")[-1])
        (holds,) = edges(g, "holds", dst=lock_id)
        assert holds["src"] == task_id(h) and holds["attrs"]["held_ns"] >= 0
        (needs,) = edges(g, "needs", dst=lock_id)
        assert needs["src"] == task_id(w) and needs["attrs"]["op"] == "acquire"
        assert any(e["name"] == "lock.acquire.contended" and e["entity_id"] == lock_id
                   for e in g["events"])
        stats = lock.statistics()
        assert stats.locked and stats.holder == task_id(h) and stats.waiters == 1

        release.set()
        await asyncio.gather(h, w)
        g = peeps.collect_graph()
        assert not edges(g, "holds", dst=lock_id)
        assert not edges(g, "needs", dst=lock_id)
        stats = lock.statistics()
        assert not stats.locked and stats.acquisitions == 2 and stats.max_wait_ns > 0

        ref = weakref.ref(lock)
        del lock, stats
        assert_collected(ref, lock_id)

    asyncio.run(scenario())


@pytest.mark.usefixtures("async_with")
@pytest.mark.parametrize("cls", [peeps.Lock, peeps.Semaphore, peeps.BoundedSemaphore])
def test_async_with_holds_inside_and_releases_on_exit_or_error(cls: Any) -> None:
    """Uncontended ``async with``: the primitive is held by the running task
    inside the block (``as`` binds None, as the stdlib's does) and released on
    leaving it, also when the block raises."""
    async def body() -> None:
        prim = cls(name="with.prim")
        for round_ in (1, 2):
            async with prim as bound:
                assert bound is None
                assert prim.locked()
                (holds,) = edges(peeps.collect_graph(), "holds", dst=prim._peeps_id)
                assert holds["src"] == task_id(asyncio.current_task())  # type: ignore[arg-type]
            assert not prim.locked()
            assert not edges(peeps.collect_graph(), "holds", dst=prim._peeps_id)
            assert prim.statistics().acquisitions == round_
        with pytest.raises(KeyError, match="inside"):
            async with prim:
                raise KeyError("inside")
        assert not prim.locked()
        assert not edges(peeps.collect_graph(), "holds", dst=prim._peeps_id)
        assert prim.statistics().acquisitions == 3 and prim.statistics().contentions == 0

    async def scenario() -> None:
        await peeps.tasks.spawn_tracked("with.body", body())

    asyncio.run(scenario())


@pytest.mark.usefixtures("async_with")
@pytest.mark.parametrize("cls", [peeps.Lock, peeps.Semaphore])
def test_async_with_waiter_cancelled_while_waiting_leaves_the_primitive_usable(cls: Any) -> None:
    """A contended ``async with`` waits as a ``needs`` edge; cancelled in the
    wait it leaves no edge, does not hold, and the next ``async with`` works."""
    async def scenario() -> None:
        prim = cls(name="with.cancel")
        entered = []

        async def waiter() -> None:
            async with prim:
                entered.append(True)

        async with prim:
            w = peeps.tasks.spawn_tracked("with.waiter", waiter())
            await settle()
            (needs,) = edges(peeps.collect_graph(), "needs", dst=prim._peeps_id)
            assert needs["src"] == task_id(w)
            await cancel_all(w)
            assert w.cancelled() and not entered
            assert not edges(peeps.collect_graph(), "needs", dst=prim._peeps_id)
        assert not prim.locked()
        stats = prim.statistics()
        assert stats.contentions == 1 and stats.acquisitions == 1

        async with prim:
            assert prim.locked()
        assert not prim.locked() and prim.statistics().acquisitions == 2

    asyncio.run(scenario())


@pytest.mark.usefixtures("async_with")
@pytest.mark.parametrize("base", [peeps.Lock, peeps.Semaphore])
def test_async_with_goes_through_a_subclass_acquire_and_release(base: Any) -> None:
    """A subclass that overrides ``acquire``/``release`` has them called by
    ``async with``, as with the stdlib's primitives."""
    calls: list[str] = []

    class Counted(base):  # type: ignore[misc,valid-type]
        async def acquire(self) -> bool:
            calls.append("acquire")
            return await super().acquire()  # type: ignore[no-any-return]

        def release(self) -> None:
            calls.append("release")
            super().release()

    async def scenario() -> None:
        prim = Counted(name="with.subclass")
        async with prim as bound:
            assert bound is None and prim.locked()
        assert not prim.locked()

    asyncio.run(scenario())
    assert calls == ["acquire", "release"]


@pytest.mark.usefixtures("async_with")
@pytest.mark.parametrize("cls", [peeps.Lock, peeps.Semaphore])
def test_a_waiter_that_gets_the_primitive_holds_it_and_the_wait_is_recorded(cls: Any) -> None:
    """Contended: the wait emits ``<kind>.acquire.contended``, and once the
    holder lets go the waiter is the one that ``holds``, its wait timed."""
    kind = "lock" if cls is peeps.Lock else "semaphore"

    async def scenario() -> None:
        prim = cls(name="handover.prim")
        let_go, inside = asyncio.Event(), asyncio.Event()
        finish = asyncio.Event()

        async def first() -> None:
            async with prim:
                await let_go.wait()

        async def second() -> None:
            async with prim:
                inside.set()
                await finish.wait()

        h = peeps.tasks.spawn_tracked("handover.first", first())
        await settle()
        w = peeps.tasks.spawn_tracked("handover.second", second())
        await settle()
        g = peeps.collect_graph()
        (contended,) = [e for e in g["events"] if e["entity_id"] == prim._peeps_id]
        assert contended["name"] == f"{kind}.acquire.contended"
        assert contended["attrs"] == ({"holder": task_id(h)} if kind == "lock"
                                      else {"available": 0})
        let_go.set()
        await inside.wait()
        (holds,) = edges(peeps.collect_graph(), "holds", dst=prim._peeps_id)
        assert holds["src"] == task_id(w)
        stats = prim.statistics()
        assert stats.contentions == 1 and stats.acquisitions == 2
        assert stats.total_wait_ns > 0 and stats.max_wait_ns == stats.total_wait_ns
        if kind == "lock":
            assert stats.holder == task_id(w)
        finish.set()
        await asyncio.gather(h, w)
        assert not prim.locked()

    asyncio.run(scenario())


def test_done_is_an_awaitable_that_is_already_done() -> None:
    """``peeps._speedups.DONE``: ``await`` gives None without suspending, any
    number of times; as an iterator it stops at once; ``throw`` raises."""
    done = _sync._DONE
    if done is None:
        if os.environ.get("PEEPS_TEST_REQUIRE_SPEEDUPS"):
            pytest.fail("peeps._speedups was not built, and PEEPS_TEST_REQUIRE_SPEEDUPS is set")
        pytest.skip("peeps._speedups was not built (no C compiler at install)")

    async def twice() -> list[Any]:
        return [await done, await done]

    coro = twice()
    with pytest.raises(StopIteration) as stop:
        coro.send(None)  # finishes on the first step: nothing suspended
    assert stop.value.value == [None, None]
    assert list(done.__await__()) == []
    with pytest.raises(StopIteration):
        done.send(None)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="thrown"):
        done.throw(ValueError("thrown"))  # type: ignore[attr-defined]
    done.close()  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        type(done)()
    assert asyncio.run(twice()) == [None, None]


@pytest.mark.usefixtures("async_with")
def test_lock_release_by_unlocked_raises_like_stdlib() -> None:
    async def scenario() -> None:
        lock = peeps.Lock()
        with pytest.raises(RuntimeError):
            lock.release()
        # Unnamed primitives are labelled by creation site.
        g = peeps.collect_graph()
        assert node(g, lock._peeps_id)["label"].startswith("lock@test_asyncio_primitives.py:")

    asyncio.run(scenario())


def test_lock_waiter_cancelled_leaves_no_edge() -> None:
    async def scenario() -> None:
        lock = peeps.Lock("cancel.lock")
        await lock.acquire()
        w = asyncio.create_task(lock.acquire())
        await settle()
        assert edges(peeps.collect_graph(), "needs", dst=lock._peeps_id)
        await cancel_all(w)
        assert not edges(peeps.collect_graph(), "needs", dst=lock._peeps_id)
        lock.release()
        assert not lock.locked()

    asyncio.run(scenario())


@pytest.mark.usefixtures("async_with")
@pytest.mark.parametrize("cls", [peeps.Semaphore, peeps.BoundedSemaphore])
def test_semaphore_permits_holders_waiters(cls: Any) -> None:
    async def scenario() -> None:
        sem = cls(2, name="test.sem")
        assert isinstance(sem, asyncio.Semaphore)
        release = asyncio.Event()

        async def holder(sem: asyncio.Semaphore) -> None:
            async with sem:
                await release.wait()

        holders = [peeps.tasks.spawn_tracked(f"holder{i}", holder(sem)) for i in range(2)]
        await settle()
        waiter = peeps.tasks.spawn_tracked("waiter", holder(sem))
        await settle()
        g = peeps.collect_graph()
        attrs = node(g, sem._peeps_id)["attrs"]
        assert node(g, sem._peeps_id)["kind"] == "semaphore"
        assert attrs["permits_total"] == 2 and attrs["permits_available"] == 0
        assert attrs["holders"] == 2 and attrs["waiters"] == 1
        assert attrs["bounded"] is (cls is peeps.BoundedSemaphore)
        assert {e["src"] for e in edges(g, "holds", dst=sem._peeps_id)} == {
            task_id(t) for t in holders}
        (needs,) = edges(g, "needs", dst=sem._peeps_id)
        assert needs["src"] == task_id(waiter) and needs["attrs"]["op"] == "acquire"
        stats = sem.statistics()
        assert stats.permits_available == 0 and len(stats.holders) == 2

        release.set()
        await asyncio.gather(*holders, waiter)
        g = peeps.collect_graph()
        assert not edges(g, "holds", dst=sem._peeps_id)
        assert not edges(g, "needs", dst=sem._peeps_id)
        assert sem.statistics().permits_available == 2
        if cls is peeps.BoundedSemaphore:
            with pytest.raises(ValueError):
                sem.release()
        ref, sem_id = weakref.ref(sem), sem._peeps_id
        del sem, stats
        assert_collected(ref, sem_id)

    asyncio.run(scenario())


def test_event_waiters_and_setter() -> None:
    async def scenario() -> None:
        event = peeps.Event("test.event")
        assert isinstance(event, asyncio.Event)
        w = peeps.tasks.spawn_tracked("waiter", event.wait())
        await settle()
        g = peeps.collect_graph()
        (needs,) = edges(g, "needs", dst=event._peeps_id)
        assert needs["src"] == task_id(w) and needs["attrs"]["op"] == "wait"
        assert node(g, event._peeps_id)["attrs"]["is_set"] is False

        async def setter() -> None:
            event.set()

        s = peeps.tasks.spawn_tracked("setter", setter())
        await asyncio.gather(w, s)
        g = peeps.collect_graph()
        assert not edges(g, "needs", dst=event._peeps_id)
        attrs = node(g, event._peeps_id)["attrs"]
        assert attrs["is_set"] is True and attrs["last_set_by"] == task_id(s)
        assert event.statistics().sets == 1
        assert await event.wait() is True  # set: returns at once

    asyncio.run(scenario())


def test_event_does_not_keep_its_setter_task_alive() -> None:
    async def scenario() -> None:
        event = peeps.Event("test.event.setter")

        async def setter() -> None:
            event.set()

        task = asyncio.get_running_loop().create_task(setter())
        await task
        ref = weakref.ref(task)
        del task
        await settle()  # its done callbacks run
        gc.collect()
        assert ref() is None  # finished and unreferenced: freed, though it set the event
        assert event.statistics().last_set_by is not None

    asyncio.run(scenario())


def test_event_wait_cancelled_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        event = peeps.Event("test.event.cancel")
        gone = peeps.tasks.spawn_tracked("gone", event.wait())
        stays = peeps.tasks.spawn_tracked("stays", event.wait())
        await settle()
        assert len(edges(peeps.collect_graph(), "needs", dst=event._peeps_id)) == 2
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        assert gone.cancelled() and len(event._waiters) == 1
        (needs,) = edges(peeps.collect_graph(), "needs", dst=event._peeps_id)
        assert needs["src"] == task_id(stays)
        event.set()
        assert await asyncio.wait_for(stays, 1) is True
        assert not event._waiters
        assert not edges(peeps.collect_graph(), "needs", dst=event._peeps_id)

    asyncio.run(scenario())


def test_condition_waiters_and_notifier() -> None:
    async def scenario() -> None:
        cond = peeps.Condition(name="test.cond")
        assert isinstance(cond, asyncio.Condition)
        ready = False

        async def waiter() -> None:
            async with cond:
                await cond.wait_for(lambda: ready)

        w = peeps.tasks.spawn_tracked("waiter", waiter())
        await settle()
        g = peeps.collect_graph()
        (needs,) = edges(g, "needs", dst=cond._peeps_id)
        assert needs["src"] == task_id(w) and needs["attrs"]["op"] == "wait"
        lock_id = cond.statistics().lock
        assert lock_id is not None and node(g, lock_id)["label"] == "test.cond.lock"
        assert not edges(g, "holds", dst=lock_id)  # wait() released the lock

        async def notifier() -> None:
            nonlocal ready
            async with cond:
                ready = True
                cond.notify_all()

        n = peeps.tasks.spawn_tracked("notifier", notifier())
        await asyncio.gather(w, n)
        g = peeps.collect_graph()
        assert not edges(g, "needs", dst=cond._peeps_id)
        attrs = node(g, cond._peeps_id)["attrs"]
        assert attrs["notifies"] == 1 and attrs["last_notified_by"] == task_id(n)

    asyncio.run(scenario())


def test_notify_wake_one_wake_all_and_stored_permit() -> None:
    async def scenario() -> None:
        notify = peeps.Notify("test.notify")
        woken: list[int] = []

        async def waiter(i: int) -> None:
            await notify.notified()
            woken.append(i)

        tasks = [peeps.tasks.spawn_tracked(f"w{i}", waiter(i)) for i in range(3)]
        await settle()
        g = peeps.collect_graph()
        assert {e["src"] for e in edges(g, "needs", dst=notify._peeps_id)} == {
            task_id(t) for t in tasks}
        notify.notify_one()
        await settle()
        assert woken == [0]
        assert len(edges(peeps.collect_graph(), "needs", dst=notify._peeps_id)) == 2
        notify.notify_waiters()
        await asyncio.gather(*tasks)
        assert sorted(woken) == [0, 1, 2]
        assert not edges(peeps.collect_graph(), "needs", dst=notify._peeps_id)
        # notify_one with nobody waiting stores one permit.
        notify.notify_one()
        assert notify.statistics().permit_stored
        await asyncio.wait_for(notify.notified(), 1)
        assert not notify.statistics().permit_stored

    asyncio.run(scenario())


def test_rwlock_readers_share_writer_waits() -> None:
    async def scenario() -> None:
        rw = peeps.RWLock("test.rw")
        release = asyncio.Event()

        async def reader() -> None:
            async with rw.read():
                await release.wait()

        async def writer() -> None:
            async with rw.write():
                pass

        readers = [peeps.tasks.spawn_tracked(f"r{i}", reader()) for i in range(2)]
        await settle()
        w = peeps.tasks.spawn_tracked("writer", writer())
        await settle()
        late = peeps.tasks.spawn_tracked("late_reader", reader())  # queues behind the writer
        await settle()
        g = peeps.collect_graph()
        holds = edges(g, "holds", dst=rw._peeps_id)
        assert {e["src"] for e in holds} == {task_id(t) for t in readers}
        assert {e["attrs"]["mode"] for e in holds} == {"read"}
        ops = {e["src"]: e["attrs"]["op"] for e in edges(g, "needs", dst=rw._peeps_id)}
        assert ops == {task_id(w): "write", task_id(late): "read"}
        attrs = node(g, rw._peeps_id)["attrs"]
        assert attrs["readers"] == 2 and attrs["waiting_writers"] == 1
        release.set()
        await asyncio.gather(*readers, w, late)
        g = peeps.collect_graph()
        assert not edges(g, "holds", dst=rw._peeps_id)
        assert not edges(g, "needs", dst=rw._peeps_id)
        stats = rw.statistics()
        assert stats.read_acquisitions == 3 and stats.write_acquisitions == 1

    asyncio.run(scenario())


def test_rwlock_writer_holds_with_mode_write() -> None:
    async def scenario() -> None:
        rw = peeps.RWLock("test.rw2")
        await rw.acquire_write()
        me = current_task_entity()
        assert me is not None
        r = asyncio.create_task(rw.acquire_read())
        await settle()
        g = peeps.collect_graph()
        (holds,) = edges(g, "holds", dst=rw._peeps_id)
        assert holds["src"] == me.id and holds["attrs"]["mode"] == "write"
        rw.release_write()
        await r
        rw.release_read()
        with pytest.raises(RuntimeError):
            rw.release_read()

    asyncio.run(scenario())


def test_once_cell_initializer_holds_waiters_need() -> None:
    async def scenario() -> None:
        cell: Any = peeps.OnceCell("test.cell")
        gate = asyncio.Event()
        calls = 0

        async def init() -> str:
            nonlocal calls
            calls += 1
            await gate.wait()
            return "value"

        first = peeps.tasks.spawn_tracked("first", cell.get_or_init(init))
        await settle()
        second = peeps.tasks.spawn_tracked("second", cell.get_or_init(init))
        await settle()
        g = peeps.collect_graph()
        (holds,) = edges(g, "holds", dst=cell._peeps_id)
        assert holds["src"] == task_id(first)
        (needs,) = edges(g, "needs", dst=cell._peeps_id)
        assert needs["src"] == task_id(second) and needs["attrs"]["op"] == "init"
        assert node(g, cell._peeps_id)["attrs"]["initializing"] == task_id(first)
        gate.set()
        assert await asyncio.gather(first, second) == ["value", "value"]
        assert calls == 1
        g = peeps.collect_graph()
        assert not edges(g, "holds", dst=cell._peeps_id)
        attrs = node(g, cell._peeps_id)["attrs"]
        assert attrs["initialized"] is True and attrs["init_ns"] > 0

    asyncio.run(scenario())


def test_once_cell_failed_init_lets_the_next_caller_try() -> None:
    async def scenario() -> None:
        cell: Any = peeps.OnceCell("test.cell2")
        attempts = 0

        async def flaky() -> int:
            nonlocal attempts
            attempts += 1
            await asyncio.sleep(0)
            if attempts == 1:
                raise ValueError("first try fails")
            return 7

        results = await asyncio.gather(cell.get_or_init(flaky), cell.get_or_init(flaky),
                                       return_exceptions=True)
        assert isinstance(results[0], ValueError) and results[1] == 7
        assert cell.get() == 7 and cell.statistics().init_attempts == 2

    asyncio.run(scenario())


def test_timeout_node_and_expiry() -> None:
    async def scenario() -> None:
        seen: dict[str, Any] = {}

        async def bounded() -> None:
            async with peeps.timeout(5, label="test.timeout") as scope:
                g = peeps.collect_graph()
                (n,) = [x for x in g["nodes"] if x["kind"] == "timeout"]
                seen["node"] = n
                seen["edges"] = edges(g, "touches", dst=n["id"])
                seen["id"] = scope._peeps_id

        t = peeps.tasks.spawn_tracked("bounded", bounded())
        await t
        attrs = seen["node"]["attrs"]
        assert seen["node"]["label"] == "test.timeout"
        assert 0 < attrs["remaining_ns"] <= 5_000_000_000 and attrs["delay_ns"] == 5_000_000_000
        assert [e["src"] for e in seen["edges"]] == [task_id(t)]
        assert seen["id"] not in ids(peeps.collect_graph())

        with pytest.raises(TimeoutError):
            async with peeps.timeout(0.01) as scope:
                await asyncio.sleep(1)
        assert scope.expired()
        assert any(e["name"] == "timer.timeout.expired" for e in peeps.collect_graph()["events"])

    asyncio.run(scenario())


def test_interval_ticks_and_waiter_needs() -> None:
    async def scenario() -> None:
        ticker = peeps.interval(0.02, label="test.interval")
        ticks = []
        async for tick in ticker:
            ticks.append(tick)
            if tick == 2:
                break
        assert ticks == [0, 1, 2]
        t = peeps.tasks.spawn_tracked("ticking", ticker.tick())
        await settle()
        g = peeps.collect_graph()
        (needs,) = edges(g, "needs", dst=ticker._peeps_id)
        assert needs["src"] == task_id(t) and needs["attrs"]["op"] == "tick"
        assert node(g, ticker._peeps_id)["attrs"]["period_ns"] == 20_000_000
        assert await t == 3

    asyncio.run(scenario())


def test_sleep_waiter_needs_sleep_node() -> None:
    async def scenario() -> None:
        t = peeps.tasks.spawn_tracked("sleeper", peeps.sleep(5, label="test.sleep"))
        await settle()
        g = peeps.collect_graph()
        (n,) = [x for x in g["nodes"] if x["label"] == "test.sleep"]
        assert edges(g, "needs", src=task_id(t), dst=n["id"])
        await cancel_all(t)
        assert n["id"] not in ids(peeps.collect_graph())

    asyncio.run(scenario())


@pytest.mark.parametrize("make", [
    lambda: peeps.Lock("gc"),
    lambda: peeps.RWLock("gc"),
    lambda: peeps.Semaphore(2, name="gc"),
    lambda: peeps.BoundedSemaphore(2, name="gc"),
    lambda: peeps.Event("gc"),
    lambda: peeps.Notify("gc"),
    lambda: peeps.Condition(name="gc"),
    lambda: peeps.OnceCell("gc"),
    lambda: peeps.channel("gc", 1),
    lambda: peeps.watch(0, name="gc"),
    lambda: peeps.interval(1, label="gc"),
], ids=["lock", "rwlock", "semaphore", "bounded", "event", "notify", "condition",
        "once_cell", "channel", "watch", "interval"])
def test_garbage_collected_primitive_leaves_the_graph(make: Any) -> None:
    async def scenario() -> None:
        obj = make()
        obj_id = obj._peeps_id
        assert obj_id in ids(peeps.collect_graph())
        ref = weakref.ref(obj)
        del obj
        assert_collected(ref, obj_id)

    asyncio.run(scenario())


@pytest.mark.usefixtures("async_with")
def test_semaphore_counts_several_permits_per_holder_and_ownerless_releases() -> None:
    async def scenario() -> None:
        sem = peeps.Semaphore(4, name="test.sem.multi")
        me = asyncio.current_task()
        for _ in range(3):
            await sem.acquire()

        def holds() -> list[int]:
            return [e["attrs"]["count"] for e in edges(peeps.collect_graph(), "holds",
                                                       dst=sem._peeps_id)]

        assert holds() == [3]
        assert sem.statistics().holders == (task_id(me),)
        sem.release()
        assert holds() == [2]

        async def other() -> None:  # a task that never acquired releases a permit
            sem.release()

        await peeps.tasks.spawn_tracked("releaser", other())
        assert holds() == [1]
        sem.release()
        assert holds() == []
        assert sem.statistics().permits_available == 4
        sem.release()  # one more than was taken: nothing recorded, nothing raised
        assert holds() == []

    asyncio.run(scenario())


@pytest.mark.usefixtures("async_with")
def test_contention_events_are_rate_limited_per_primitive_and_count_what_they_drop() -> None:
    """A busy contended lock must not flush the event ring: one
    ``lock.acquire.contended`` per lock per 100 ms, the next one kept saying how
    many were dropped.  A consumer blocking on an empty channel (a pool's idle
    state) emits nothing at all."""
    from peeps import _registry

    async def scenario() -> None:
        lock = peeps.Lock("busy.lock")
        other = peeps.Lock("other.lock")
        jobs = peeps.channel("idle.jobs", capacity=4)

        async def contend(lk: asyncio.Lock) -> None:
            for _ in range(50):
                async with lk:
                    await asyncio.sleep(0)

        consumer = peeps.tasks.spawn_tracked("idle.consumer", jobs.get())
        await asyncio.gather(*(contend(lock) for _ in range(4)), contend(other), contend(other))
        assert lock.statistics().contentions > 50  # really contended, many times
        names = [(e["name"], e["entity_id"], e["attrs"]) for e in peeps.collect_graph()["events"]]
        mine = [a for n, i, a in names if n == "lock.acquire.contended" and i == lock._peeps_id]
        theirs = [a for n, i, a in names if n == "lock.acquire.contended" and i == other._peeps_id]
        assert len(mine) == 1 and len(theirs) == 1, names  # one per lock inside 100 ms
        assert not any(n.startswith("channel.recv") for n, _, _ in names)

        await asyncio.sleep(_registry.REPEAT_GAP_NS / 1e9 + 0.02)
        before = lock.statistics().contentions
        await asyncio.gather(*(contend(lock) for _ in range(2)))
        events = [e for e in peeps.collect_graph()["events"]
                  if e["name"] == "lock.acquire.contended" and e["entity_id"] == lock._peeps_id]
        assert len(events) == 2
        # The second kept event counts the contentions dropped since the first.
        dropped = events[1]["attrs"]["repeats"]
        assert 50 <= dropped <= before - 1, (dropped, before)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)

    asyncio.run(scenario())


@pytest.mark.usefixtures("async_with")
def test_nested_async_with_holds_one_permit_per_level_and_gives_each_back() -> None:
    """One task entering the same semaphore three times holds three permits,
    counted on one ``holds`` edge, and each exit gives one back."""
    async def scenario() -> None:
        sem = peeps.Semaphore(3, name="test.sem.nested")

        def holds() -> list[int]:
            return [e["attrs"]["count"] for e in edges(peeps.collect_graph(), "holds",
                                                       dst=sem._peeps_id)]

        async with sem:
            assert holds() == [1]
            async with sem:
                async with sem:
                    assert holds() == [3] and sem.locked()
                    assert sem.statistics().permits_available == 0
                assert holds() == [2]
            assert holds() == [1]
        assert holds() == [] and sem.statistics().permits_available == 3
        assert sem.statistics().acquisitions == 3

    asyncio.run(scenario())


@pytest.mark.usefixtures("async_with")
def test_a_bounded_semaphore_released_past_its_bound_raises_like_stdlib() -> None:
    async def scenario() -> None:
        sem = peeps.BoundedSemaphore(1, name="test.bounded")
        async with sem:
            assert sem.locked()
        with pytest.raises(ValueError):
            sem.release()
        assert sem.statistics().permits_available == 1
        async with sem:  # still usable
            assert edges(peeps.collect_graph(), "holds", dst=sem._peeps_id)

    asyncio.run(scenario())


@pytest.mark.usefixtures("async_with")
@pytest.mark.parametrize("cls", [peeps.Lock, peeps.Semaphore])
def test_a_primitive_used_on_two_loops_in_turn_records_each_loops_task(cls: Any) -> None:
    """The running task is looked up per acquire (on 3.11 through the loop
    the primitive saw last): a primitive reused by a later ``asyncio.run``
    records that run's task, not a task of the loop it saw before."""
    prim = cls(name="two.loops")
    seen: list[tuple[str, str]] = []

    async def use() -> None:
        async with prim:
            (holds,) = edges(peeps.collect_graph(), "holds", dst=prim._peeps_id)
            seen.append((holds["src"], task_id(asyncio.current_task())))  # type: ignore[arg-type]

    async def scenario() -> None:
        await peeps.tasks.spawn_tracked("two.loops.user", use())
        await use()

    asyncio.run(scenario())
    asyncio.run(scenario())
    assert len(seen) == 4 and len({mine for _, mine in seen}) == 4
    assert all(src == mine for src, mine in seen)
    assert prim.statistics().acquisitions == 4


@pytest.mark.usefixtures("async_with")
@pytest.mark.parametrize("threads", [False, True], ids=["threads-untracked", "threads-tracked"])
@pytest.mark.parametrize("cls", [peeps.Lock, peeps.Semaphore])
def test_async_with_outside_a_running_loop_neither_raises_nor_names_a_task(
        cls: Any, threads: bool, request: pytest.FixtureRequest) -> None:
    """A coroutine stepped by hand, with no loop running: the primitive is
    taken and given back; its holder is no task but the thread when threads
    are tracked (``peeps.init``), else nothing."""
    if threads:
        peeps.init("no-loop", sampler="off")
        request.addfinalizer(peeps.shutdown)
    prim = cls(name="no.loop")
    holders: list[Any] = []

    async def use() -> None:
        async with prim:
            holders.append(prim.statistics().holder if cls is peeps.Lock
                           else prim.statistics().holders)

    coro = use()
    with pytest.raises(StopIteration):
        coro.send(None)
    assert not prim.locked() and prim.statistics().acquisitions == 1
    from peeps._tasks import current_holder, holder_id

    thread = holder_id(current_holder())  # what runs here: no task
    assert (thread is not None) is threads
    (holder,) = holders
    if cls is peeps.Lock:
        assert holder == thread
    else:
        assert holder == (() if thread is None else (thread,))


@pytest.mark.usefixtures("async_with")
@pytest.mark.parametrize("cls", [peeps.Lock, peeps.Semaphore])
def test_a_released_primitive_keeps_no_reference_to_its_last_holder(cls: Any) -> None:
    """Once given back, the primitive no longer refers to the task that held
    it: a finished task is freed even while the primitive lives on."""
    prim = cls(name="no.leak")
    refs: list[weakref.ref[Any]] = []

    async def use() -> None:
        refs.append(weakref.ref(asyncio.current_task()))  # type: ignore[arg-type]
        async with prim:
            pass

    async def scenario() -> None:
        await asyncio.create_task(use())

    asyncio.run(scenario())
    gc.collect()
    assert refs[0]() is None, "the released primitive still refers to its holder"
    assert prim.statistics().acquisitions == 1
