"""Automatic task tracking: the chaining factory, hooks for later loops, tasks
created by code that knows nothing of peeps, lineage, outcomes, step stats,
cancel attribution, and the await-chain edges of gather/wait/shield/TaskGroup."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import os
import sys
import textwrap
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import peeps
from graph_support import edges, node, settle
from peeps import _autotrack, _redact, _registry, _reply_encoder, _tasks
from peeps._config import STATE
from peeps._registry import REGISTRY
from peeps._tasks import current_task_entity, entity_for_task
from peeps.types import HEADER
from peeps.types._wire import decode_body

THIRD_PARTY = '''
"""A library that knows nothing of peeps."""
import asyncio

async def _worker(n):
    await asyncio.sleep(3600)
    return n

def start_workers(count):
    return [asyncio.create_task(_worker(i)) for i in range(count)]

def start_future():
    return asyncio.ensure_future(_worker(99))
'''


@pytest.fixture(autouse=True, params=["c", "python"])
def factory_impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs against both task factories: the C one
    (``peeps._speedups``, when built) and the Python one it falls back to."""
    if request.param == "c" and _autotrack._speedups is None:
        if os.environ.get("PEEPS_TEST_REQUIRE_SPEEDUPS"):
            pytest.fail("peeps._speedups was not built, and PEEPS_TEST_REQUIRE_SPEEDUPS is set")
        pytest.skip("peeps._speedups was not built (no C compiler at install)")
    monkeypatch.setattr(_autotrack, "use_speedups", request.param == "c")
    monkeypatch.setattr(_tasks, "_record_spawn", _autotrack._speedups.record_spawn
                        if request.param == "c" and _autotrack._speedups else None)
    return str(request.param)


@pytest.fixture(autouse=True)
def _factory_restored() -> Iterator[None]:
    yield
    _autotrack.uninstall_task_factory()
    assert not _autotrack.loop_hooks_installed()
    assert not _autotrack.step_stats_enabled()


@pytest.fixture
def third_party(tmp_path: Path) -> Iterator[ModuleType]:
    path = tmp_path / "thirdparty_lib.py"
    path.write_text(textwrap.dedent(THIRD_PARTY))
    spec = importlib.util.spec_from_file_location("thirdparty_lib", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["thirdparty_lib"] = module
    yield module
    sys.modules.pop("thirdparty_lib", None)








def tid(task: Any) -> str:
    entity = entity_for_task(task)
    assert entity is not None, f"{task!r} is not tracked"
    return entity.id


async def cancel_all(tasks: list[Any]) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_auto_tracks_tasks_of_a_library_that_knows_nothing_of_peeps(
        third_party: ModuleType) -> None:
    async def scenario() -> None:
        assert peeps.install_task_factory() is True
        me = current_task_entity()
        assert me is not None
        workers = third_party.start_workers(2)
        fut = third_party.start_future()
        await settle()
        g = peeps.collect_graph()
        for t in [*workers, fut]:
            attrs = node(g, tid(t))["attrs"]
            assert attrs["coro"] == "_worker"
            assert attrs["source"] == "auto" and attrs["tracked"] is False
            assert attrs["state"] == "pending"
            assert "thirdparty_lib.py:" in attrs["meta"]["ctx.location"]
            # The whole await chain, outermost first: _worker, then asyncio.sleep.
            assert "in _worker" in attrs["stack"][0] and "in sleep" in attrs["stack"][-1]
            assert edges(g, "spawned", src=me.id, dst=tid(t))
            # Blocked in asyncio.sleep: the chain ends at the sleep's future.
            (needs,) = edges(g, "needs", src=tid(t))
            assert node(g, needs["dst"])["kind"] == "future"
        await cancel_all([*workers, fut])

    asyncio.run(scenario())


def test_init_auto_before_the_loop_exists_tracks_the_main_task(
        third_party: ModuleType) -> None:
    peeps.init(auto=True)
    assert _autotrack.loop_hooks_installed()

    async def main() -> tuple[str, str | None]:
        me = current_task_entity()
        assert me is not None
        workers = third_party.start_workers(1)
        await settle()
        peeps.collect_graph()  # lazily tracked tasks get their entity when first seen
        parent = entity_for_task(workers[0])
        await cancel_all(workers)
        return me.source, parent.parent_id if parent else None

    source, parent_id = asyncio.run(main())
    assert source == "auto"
    assert parent_id is not None


def test_loop_started_without_new_event_loop_gets_the_factory() -> None:
    _autotrack.install_loop_hooks()
    loop = asyncio.SelectorEventLoop()  # not through asyncio.new_event_loop
    try:
        async def main() -> bool:
            t = asyncio.create_task(asyncio.sleep(0))
            await t
            # The C type itself (its fast paths test for the exact type), with
            # the spawn record in an attribute.
            return type(t) is asyncio.Task and t._peeps_spawn[3] > 0  # type: ignore[attr-defined]

        assert loop.run_until_complete(main())
        assert _autotrack.factory_state(loop.get_task_factory()) is not None
    finally:
        loop.close()


def test_the_spawn_record_reads_the_same_from_either_factory(factory_impl: str) -> None:
    """The record both factories and ``spawn_tracked`` store: parent task id,
    creating code and offset, creation time, meta -- indexed and unpacked alike,
    whether it is the Python tuple or the C extension's ``SpawnRecord``."""
    import time

    async def child() -> None:
        await asyncio.sleep(0)

    async def scenario() -> None:
        peeps.install_task_factory()
        parent = asyncio.current_task()
        before = time.monotonic_ns()
        auto = asyncio.create_task(child())
        tracked = peeps.tasks.spawn_tracked("tracked", child(), shard=3)
        bare = peeps.tasks.spawn_tracked("bare", child())
        after = time.monotonic_ns()
        await asyncio.gather(auto, tracked, bare)
        here = sys._getframe().f_code
        for task, meta in ((auto, None), (tracked, {"shard": 3}), (bare, {})):
            record = task._peeps_spawn  # type: ignore[attr-defined]
            # The C record holds no meta (a tuple keeps it, in the collector's sight).
            assert (type(record).__name__ == "SpawnRecord") == (factory_impl == "c" and not meta)
            parent_id, code, lasti, created, got_meta = record
            assert (parent_id, code, got_meta) == (id(parent), here, meta)
            assert len(record) == 5 and list(record) == [parent_id, code, lasti, created, meta]
            assert record[0] == id(parent) and record[4] == meta and record[-1] == meta
            assert before <= created <= after and record[3] == created
            assert _tasks.line_of(code, lasti) > here.co_firstlineno
        with pytest.raises(IndexError):
            auto._peeps_spawn[5]  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_the_spawn_site_is_the_callers_instruction_on_every_path(factory_impl: str) -> None:
    """The record's (code, offset) is the calling frame's code and the offset
    of its call instruction, as ``sys._getframe`` sees it, whichever way the
    task is made: ``loop.create_task``, ``asyncio.create_task`` and
    ``ensure_future`` (asyncio's own frames skipped), a ``TaskGroup``,
    ``spawn_tracked``, from a coroutine or a plain function it calls, through
    a C function (``map``) calling ``create_task``, and from a frame reached
    through ``await`` of another coroutine."""
    sites: list[tuple[Any, Any]] = []

    def here() -> tuple[Any, int]:
        caller = sys._getframe(1)
        return caller.f_code, caller.f_lasti

    def from_a_function(loop: asyncio.AbstractEventLoop) -> None:
        code, lasti = here()
        sites.append((loop.create_task(asyncio.sleep(0)), (code, lasti)))

    async def nested(tg: asyncio.TaskGroup) -> None:
        code, lasti = here()
        sites.append((tg.create_task(asyncio.sleep(0)), (code, lasti)))
        code, lasti = here()
        sites.append((peeps.tasks.spawn_tracked("t", asyncio.sleep(0)), (code, lasti)))

    async def scenario() -> None:
        peeps.install_task_factory()
        loop = asyncio.get_running_loop()
        code, lasti = here()
        sites.append((loop.create_task(asyncio.sleep(0)), (code, lasti)))
        code, lasti = here()
        sites.append((asyncio.create_task(asyncio.sleep(0)), (code, lasti)))
        code, lasti = here()
        sites.append((asyncio.ensure_future(asyncio.sleep(0)), (code, lasti)))
        from_a_function(loop)
        code, lasti = here()  # through a C call (map) between the site and create_task
        sites.extend((t, (code, lasti)) for t in list(map(loop.create_task, [asyncio.sleep(0)])))
        async with asyncio.TaskGroup() as tg:
            await nested(tg)
        await asyncio.gather(*(task for task, _ in sites))

    asyncio.run(scenario())
    assert len(sites) == 7
    for task, (code, before) in sites:
        record = task._peeps_spawn  # type: ignore[attr-defined]
        assert record[1] is code, (task, record[1], code)
        # The site is the call after ``here()``'s, on the next line.
        assert record[2] > before
        assert _tasks.line_of(code, record[2]) == _tasks.line_of(code, before) + 1


def test_the_c_spawn_record_adds_nothing_to_the_collectors_young_generation(
        factory_impl: str) -> None:
    """A task with the C record counts towards the garbage collector's
    threshold as a plain one does, plus its instance dict: the record is not a
    GC object (one per live task would bring every young collection sooner; a
    tuple from the free list is not counted either)."""
    if factory_impl != "c":
        pytest.skip("the Python factory stores a tuple, counted when the free list is empty")

    async def young_per_task(track: bool) -> float:
        if track:
            peeps.install_task_factory()
        else:
            peeps.uninstall_task_factory()
        loop = asyncio.get_running_loop()
        gate = asyncio.Event()
        gc.collect()
        before = gc.get_count()[0]
        tasks = [loop.create_task(gate.wait()) for _ in range(300)]
        after = gc.get_count()[0]
        gate.set()
        await asyncio.gather(*tasks)
        if track:
            assert getattr(tasks[0], "_peeps_spawn", None) is not None
        return (after - before) / len(tasks)

    async def scenario() -> tuple[float, float]:
        return await young_per_task(False), await young_per_task(True)

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        plain, tracked = asyncio.run(scenario())
    finally:
        if was_enabled:
            gc.enable()
    assert tracked == pytest.approx(plain + 1, abs=0.05)  # + the task's instance dict


def test_a_spawn_record_whose_meta_refers_to_its_task_is_collected() -> None:
    """meta is the caller's dict and may hold the task: the cycle through the
    record (the C one included) is still found by the garbage collector."""
    refs: list[weakref.ref[Any]] = []

    async def scenario() -> None:
        meta: dict[str, Any] = {}
        task = peeps.tasks.spawn_tracked("cyclic", asyncio.sleep(0), holder=meta)
        meta["task"] = task
        await task
        refs.append(weakref.ref(task))

    asyncio.run(scenario())
    gc.collect()
    assert refs[0]() is None


def test_factory_chains_to_an_existing_factory_and_uninstall_restores_it() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        made: list[Any] = []

        def user_factory(loop: Any, coro: Any, **kwargs: Any) -> Any:
            task = asyncio.Task(coro, loop=loop, **kwargs)
            made.append(task)
            return task

        loop.set_task_factory(user_factory)
        peeps.install_task_factory()
        assert peeps.install_task_factory() is False  # idempotent
        t = asyncio.create_task(asyncio.sleep(0), name="chained")
        assert entity_for_task(t) is not None  # chained: registered at creation
        await t
        assert made == [t]
        assert node(peeps.collect_graph(), tid(t))["label"] == "chained"
        peeps.uninstall_task_factory(loop)
        assert loop.get_task_factory() is user_factory
        loop.set_task_factory(None)

    asyncio.run(scenario())


def test_tasks_keep_their_names_in_the_host_and_the_graph() -> None:
    """An unnamed task keeps asyncio's "Task-N" and a named one its name, in
    the host and in the graph, while the factory is installed.  (On CPython
    3.13.0-3.13.2 ``loop.create_task`` renames every unnamed task "None" once
    any factory is set: python/cpython#130033.)"""
    async def own_name() -> str:
        await asyncio.sleep(0)
        current = asyncio.current_task()
        assert current is not None
        return current.get_name()

    async def parked(release: asyncio.Event) -> None:
        await release.wait()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        peeps.install_task_factory()
        unnamed = asyncio.create_task(own_name())
        named = asyncio.create_task(own_name(), name="kept")
        async with asyncio.TaskGroup() as tg:
            grouped = tg.create_task(own_name())
        assert (await unnamed).startswith("Task-")
        assert await named == "kept"
        assert grouped.result().startswith("Task-")
        release = asyncio.Event()
        waiting = loop.create_task(parked(release))
        await asyncio.sleep(0)
        label = node(peeps.collect_graph(), tid(waiting))["label"]
        assert label.endswith("parked"), label
        release.set()
        await waiting
        peeps.uninstall_task_factory(loop)
        assert "create_task" not in vars(loop)  # asyncio's own method again
        assert (await asyncio.create_task(own_name())).startswith("Task-")

    asyncio.run(scenario())


def test_a_loop_class_with_its_own_create_task_keeps_it() -> None:
    """peeps gives a loop its own ``create_task`` only where asyncio's method
    is the loop class's: a subclass's override stays in charge."""
    calls: list[Any] = []

    class CustomLoop(asyncio.SelectorEventLoop):
        def create_task(self, coro: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            calls.append(kwargs.get("name"))
            return super().create_task(coro, **kwargs)

    async def step() -> None:
        await asyncio.sleep(0)

    loop = CustomLoop()
    try:
        _autotrack.install_task_factory(loop)
        assert "create_task" not in vars(loop)
        loop.run_until_complete(loop.create_task(step(), name="custom"))
        assert calls == ["custom"]
    finally:
        _autotrack.uninstall_task_factory(loop)
        loop.close()


def test_a_closed_loop_that_had_the_factory_is_freed_without_the_collector() -> None:
    """Nothing peeps puts on a loop refers back to it (on 3.13.0-3.13.2 that
    includes its own ``create_task``): dropping a closed loop frees it."""
    async def step() -> None:
        await asyncio.sleep(0)

    gc.collect()
    gc.disable()
    try:
        loop = asyncio.new_event_loop()
        _autotrack.install_task_factory(loop)
        loop.run_until_complete(loop.create_task(step()))
        loop.close()
        ref = weakref.ref(loop)
        del loop
        assert ref() is None
    finally:
        gc.enable()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_eager_task_factory_keeps_working_and_is_tracked() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        peeps.install_task_factory()
        ran_eagerly = False

        async def quick() -> int:
            nonlocal ran_eagerly
            ran_eagerly = True
            return 5

        t = asyncio.create_task(quick())
        assert ran_eagerly and t.done()  # eager: ran inside create_task
        assert await t == 5
        entity = entity_for_task(t)
        assert entity is not None and entity.outcome == "done"

        async def slow() -> None:
            await asyncio.sleep(3600)

        s = asyncio.create_task(slow())
        g = peeps.collect_graph()
        assert node(g, tid(s))["attrs"]["state"] == "pending"
        await cancel_all([s])
        peeps.uninstall_task_factory(loop)
        assert loop.get_task_factory() is asyncio.eager_task_factory  # type: ignore[attr-defined]

    asyncio.run(scenario())


def test_spawn_tracked_names_tasks_the_factory_saw_first() -> None:
    async def scenario() -> None:
        peeps.install_task_factory()
        t = peeps.tasks.spawn_tracked("named", asyncio.sleep(0), role="test")
        peeps.collect_graph()  # a snapshot sees the lazily tracked task
        entity = entity_for_task(t)
        assert entity is not None
        assert entity.name == "named" and entity.source == "spawn_tracked"
        assert entity.explicit_name == "named"
        assert entity.meta == {"role": "test"}
        await t

    asyncio.run(scenario())


@pytest.mark.parametrize("auto", [False, True], ids=["plain-loop", "auto-factory"])
def test_spawn_tracked_is_lazy_until_a_snapshot_sees_it(auto: bool) -> None:
    async def child() -> None:
        await asyncio.sleep(10)

    async def parent() -> tuple[Any, asyncio.Task[None], int]:
        line = _line() + 1
        task = peeps.tasks.spawn_tracked("lazy.child", child(), shard=7)
        assert entity_for_task(task) is None  # nothing registered at spawn
        await asyncio.sleep(0)
        graph = peeps.collect_graph()
        return graph, task, line

    async def scenario() -> None:
        if auto:
            peeps.install_task_factory()
        outer = peeps.tasks.spawn_tracked("lazy.parent", parent())
        graph, task, line = await outer
        task.cancel()
        # By id, not label: finished tasks of earlier tests may still be retained.
        child_node, parent_node = node(graph, tid(task)), node(graph, tid(outer))
        assert (child_node["label"], parent_node["label"]) == ("lazy.child", "lazy.parent")
        assert child_node["attrs"]["source"] == "spawn_tracked"
        assert child_node["attrs"]["meta"]["shard"] == 7
        assert child_node["attrs"]["meta"]["ctx.location"] == f"{__file__}:{line}"
        assert {"src": parent_node["id"], "dst": child_node["id"], "kind": "spawned",
                "attrs": {}} in graph["edges"]

    asyncio.run(scenario())


def test_spawn_tracked_on_alternating_loops_leaves_no_loop_unregistered() -> None:
    """``spawn_tracked`` remembers the loop it last spawned on; spawning on
    another loop in between (another thread's) must not leave either loop's
    lazily spawned tasks out of a snapshot."""
    import threading

    other_ready = threading.Event()
    spawn_other = threading.Event()
    other_spawned = threading.Event()
    stop_other = threading.Event()
    other_tasks: list[asyncio.Task[None]] = []

    async def idle() -> None:
        await asyncio.sleep(3600)

    async def other_loop() -> None:
        other_ready.set()
        while not spawn_other.is_set():
            await asyncio.sleep(0.001)
        other_tasks.append(peeps.tasks.spawn_tracked("alt.other", idle()))
        other_spawned.set()
        while not stop_other.is_set():
            await asyncio.sleep(0.001)
        for t in other_tasks:
            t.cancel()

    thread = threading.Thread(target=asyncio.run, args=(other_loop(),))
    thread.start()

    async def main_loop() -> Any:
        assert other_ready.wait(5)
        mine = [peeps.tasks.spawn_tracked("alt.main.1", idle())]
        spawn_other.set()  # the other loop spawns: it is now the last one used
        assert other_spawned.wait(5)
        mine.append(peeps.tasks.spawn_tracked("alt.main.2", idle()))
        await asyncio.sleep(0)
        graph = peeps.collect_graph()
        for t in mine:
            t.cancel()
        return graph

    try:
        graph = asyncio.run(main_loop())
    finally:
        stop_other.set()
        thread.join(5)
    labels = {n["label"] for n in graph["nodes"] if n["kind"] == "task"}
    assert {"alt.main.1", "alt.other", "alt.main.2"} <= labels, labels


def test_a_task_seen_before_its_lazy_parent_still_gets_its_spawned_edge() -> None:
    async def child(gate: asyncio.Event) -> None:
        jobs: Any = peeps.channel("lazy.jobs")
        jobs.put_nowait(1)
        await jobs.join()  # first sight: a join waiter is registered here

    async def parent() -> Any:
        task = peeps.tasks.spawn_tracked("early.child", child(asyncio.Event()))
        await asyncio.sleep(0.01)
        assert entity_for_task(task) is not None and entity_for_task(_current()) is None
        graph = peeps.collect_graph()
        task.cancel()
        return graph

    graph = asyncio.run(_spawn_and_wait("early.parent", parent))
    by_label = {n["label"]: n for n in graph["nodes"]}
    assert {"src": by_label["early.parent"]["id"], "dst": by_label["early.child"]["id"],
            "kind": "spawned", "attrs": {}} in graph["edges"]


def test_a_task_named_by_its_contention_event_keeps_its_spawned_edge() -> None:
    """A blocked send's event names the sender from the loop, before any
    snapshot, while its parent (an untracked task) has no entity: the next
    snapshot still links the two."""

    async def sender(ch: Any) -> None:
        for i in range(3):
            await ch.send(i)  # the third blocks: channel.send.blocked names it

    async def main() -> Any:
        ch: Any = peeps.channel("test.full", 2)
        task = peeps.tasks.spawn_tracked("blocked.sender", sender(ch))
        await settle()
        assert entity_for_task(task) is not None  # named by the event
        graph = peeps.collect_graph()
        task.cancel()
        return graph, _current(), task

    graph, parent, child = asyncio.run(main())
    parent_entity, child_entity = entity_for_task(parent), entity_for_task(child)
    assert parent_entity is not None and child_entity is not None
    spawned = [(e["src"], e["dst"]) for e in graph["edges"] if e["kind"] == "spawned"]
    assert (parent_entity.id, child_entity.id) in spawned


async def _spawn_and_wait(name: str, body: Any) -> Any:
    return await peeps.tasks.spawn_tracked(name, body())


def _current() -> Any:
    return asyncio.current_task()


def _line() -> int:
    return sys._getframe(1).f_lineno


def test_lazy_tasks_seen_alive_keep_their_outcome() -> None:
    async def scenario() -> None:
        peeps.install_task_factory()
        gate = asyncio.Event()

        async def fails_later() -> None:
            await gate.wait()
            raise ValueError("late")

        async def short() -> None:
            return None

        t = asyncio.create_task(fails_later())
        unseen = asyncio.create_task(short())
        await unseen
        await settle()
        g = peeps.collect_graph()  # t is seen (pending) here; unseen already finished
        assert node(g, tid(t))["attrs"]["state"] == "pending"
        assert entity_for_task(unseen) is None  # lazily tracked and never seen: no trace
        gate.set()
        await asyncio.gather(t, return_exceptions=True)
        await settle()
        attrs = node(peeps.collect_graph(), tid(t))["attrs"]
        assert attrs["outcome"] == "failed" and attrs["exception_type"] == "ValueError"

    asyncio.run(scenario())


def test_a_snapshot_from_another_thread_wakes_the_loop_once_for_all_it_adopts() -> None:
    """A snapshot adopts every task that started since the last one; their done
    callbacks must be added on the loop, but in one ``call_soon_threadsafe``
    (one self-pipe write, one wake-up), not one per task -- and still added."""
    async def scenario() -> None:
        peeps.install_task_factory()
        gate = asyncio.Event()

        async def waiter() -> None:
            await gate.wait()

        tasks = [asyncio.create_task(waiter()) for _ in range(20)]
        await settle()
        assert all(entity_for_task(t) is None for t in tasks)  # lazily tracked
        loop = asyncio.get_running_loop()
        ours: list[Any] = []
        real = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
            if getattr(callback, "__module__", None) == "peeps._tasks":
                ours.append(callback)
            return real(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        try:
            await asyncio.to_thread(peeps.collect_graph)  # as the collector thread does
        finally:
            del loop.call_soon_threadsafe
        assert all(entity_for_task(t) is not None for t in tasks)
        assert len(ours) == 1, ours
        gate.set()
        await asyncio.gather(*tasks)
        await settle()
        outcomes = {entity.outcome for t in tasks if (entity := entity_for_task(t))}
        assert outcomes == {"done"}  # every adopted task's done callback was added

    asyncio.run(scenario())


def test_finished_tasks_keep_outcome_and_exception_type() -> None:
    async def scenario() -> None:
        _autotrack.enable_auto(step_stats=True)  # registers every task at creation

        async def boom() -> None:
            raise KeyError("x")

        async def fine() -> int:
            return 1

        async def forever() -> None:
            await asyncio.sleep(3600)

        b = asyncio.create_task(boom())
        f = asyncio.create_task(fine())
        c = asyncio.create_task(forever())
        await settle()
        c.cancel()
        await asyncio.gather(b, f, c, return_exceptions=True)
        await settle()
        g = peeps.collect_graph()
        assert node(g, tid(b))["attrs"]["outcome"] == "failed"
        assert node(g, tid(b))["attrs"]["exception_type"] == "KeyError"
        assert node(g, tid(f))["attrs"]["state"] == "done"
        assert node(g, tid(c))["attrs"]["state"] == "cancelled"
        assert any(e["name"] == "task.run.failed" and e["entity_id"] == tid(b)
                   for e in g["events"])

    asyncio.run(scenario())


def _sent(graph: Any) -> dict[str, Any]:
    """What the dashboard receives for ``graph``: the collector's reply frame
    made by the real encoder, decoded."""
    frame = _reply_encoder.encode_reply_frame({"type": "graph_reply", "graph": graph})
    return decode_body(bytes(frame[HEADER.size:]))["graph"]  # type: ignore[no-any-return]


def test_a_finished_task_is_described_and_encoded_once_then_reused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished tasks are most task nodes of a busy service's snapshot and no
    longer change: their durations are as of when they finished, and each is
    described, scrubbed and encoded once.  Every later snapshot must show what
    a fresh description would, send it without encoding it again, and still
    show a late rename."""
    async def scenario() -> None:
        _autotrack.enable_auto(step_stats=True)  # steps, cancel origin: every timed field

        async def fine() -> int:
            await asyncio.sleep(0)
            return 1

        async def forever() -> None:
            await asyncio.sleep(3600)

        tasks = [asyncio.create_task(fine()), asyncio.create_task(forever())]
        named = peeps.tasks.spawn_tracked("fin.named", fine(), role="r")
        await settle()
        tasks[1].cancel()
        await asyncio.gather(*tasks, named, return_exceptions=True)
        await settle()
        entities = [entity_for_task(t) for t in (*tasks, named)]
        assert all(e is not None and e.outcome is not None for e in entities)
        first = peeps.collect_graph()  # the first description of each

        built: list[Any] = []
        real = _tasks.TaskEntity._describe

        def counting(self: Any, task: Any, now: Any) -> Any:
            built.append(self)
            return real(self, task, now)

        encoded_again: list[Any] = []
        real_plain = _reply_encoder._encode_plain

        def plain(items: list[Any]) -> str:
            encoded_again.extend(item.get("id") or (item.get("src"), item.get("dst"))
                                 for item in items if isinstance(item, dict))
            return real_plain(items)

        monkeypatch.setattr(_tasks.TaskEntity, "_describe", counting)
        monkeypatch.setattr(_reply_encoder, "_encode_plain", plain)
        await asyncio.sleep(0.002)  # the clock moves on
        graph = peeps.collect_graph()
        sent = _sent(graph)
        assert not [e for e in entities if e in built]  # not built again
        now = _registry.Clock()
        for entity in entities:
            assert entity is not None and entity.finished_mono_ns is not None
            shown = node(graph, entity.id)
            assert shown is node(first, entity.id)  # the same node, in every snapshot
            assert entity.id not in encoded_again  # its JSON made once, and sent
            assert node(sent, entity.id) == shown
            spawned = (entity.parent_id, entity.id)
            assert spawned not in encoded_again  # its edge's too
            assert [e for e in sent["edges"] if (e["src"], e["dst"]) == spawned] == [
                {"src": entity.parent_id, "dst": entity.id, "kind": "spawned", "attrs": {}}]
            fresh = real(entity, entity.task_ref(), now)[0]
            assert set(shown["attrs"]) == set(fresh["attrs"])
            for key, value in fresh["attrs"].items():
                if key.endswith("_at_ns"):  # two clocks' wall offsets: within a ms
                    assert abs(shown["attrs"][key] - value) < 1_000_000, key
                else:
                    assert shown["attrs"][key] == value, key
            # Its durations are as of when it finished: its age is its lifetime.
            assert shown["attrs"]["age_ns"] == entity.finished_mono_ns - entity.created_mono_ns
        assert "cancel_requested_at_ns" in node(graph, tid(tasks[1]))["attrs"]
        attrs0 = node(graph, tid(tasks[0]))["attrs"]
        assert attrs0["steps"] >= 2
        assert 0 <= attrs0["since_resumed_ns"] <= attrs0["age_ns"]
        assert [n for n in sent["nodes"] if n["id"] not in {e.id for e in entities if e}]
        assert encoded_again  # the live nodes are encoded as ever

        tasks[0].set_name("fin.renamed")  # the label is part of the key
        renamed = node(_sent(peeps.collect_graph()), tid(tasks[0]))
        assert (renamed["label"], renamed["attrs"]["name"]) == ("fin.renamed", "fin.renamed")

    asyncio.run(scenario())


def test_a_finished_tasks_reused_node_follows_redaction_and_survives_bad_meta() -> None:
    """The reused node was scrubbed before it was encoded: it is redacted like
    any node, and made again when the patterns change.  Meta JSON cannot take
    is sent as for any node (``peeps_error``), never cached half made."""
    async def scenario() -> None:
        _autotrack.enable_auto()
        go = asyncio.Event()

        async def fine() -> None:
            await go.wait()

        secret = peeps.tasks.spawn_tracked("fin.secret", fine(), api_token="s3cret")
        odd = peeps.tasks.spawn_tracked("fin.odd", fine(), shape={(1, 2): "a tuple key"})
        await settle()  # seen live (lazily tracked tasks get their entity at a snapshot)
        peeps.collect_graph()
        go.set()
        await asyncio.gather(secret, odd)
        await settle()
        sid, oid = tid(secret), tid(odd)
        for _ in range(2):  # made, then reused
            sent = _sent(peeps.collect_graph())
            assert node(sent, sid)["attrs"]["meta"]["api_token"] == _redact.REDACTED
            assert "peeps_error" in node(sent, oid)["attrs"]
        del secret, odd  # the task objects gone: reused without asking them
        gc.collect()
        for _ in range(2):
            sent = _sent(peeps.collect_graph())
            assert node(sent, sid)["attrs"]["meta"]["api_token"] == _redact.REDACTED
            assert "peeps_error" in node(sent, oid)["attrs"]
        was = _redact.REDACTOR
        try:
            _redact.set_patterns(("nothing-matches",))
            assert node(_sent(peeps.collect_graph()), sid)["attrs"]["meta"]["api_token"] == "s3cret"
        finally:
            _redact.REDACTOR = was
        assert node(_sent(peeps.collect_graph()), sid)["attrs"]["meta"]["api_token"] == _redact.REDACTED

    asyncio.run(scenario())


def test_a_finished_task_keeps_its_name_and_node_when_its_task_object_is_gone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In a busy service most finished tasks are garbage by the next snapshot.
    Their node keeps the task's name (also when the task object was gone
    before any snapshot saw it finished), and once made it is reused without
    as much as asking for the name again."""
    async def scenario() -> None:
        _autotrack.enable_auto()
        loop = asyncio.get_running_loop()
        go_seen, go_unseen = asyncio.Event(), asyncio.Event()
        seen = loop.create_task(go_seen.wait(), name="kept.seen")
        unseen = loop.create_task(go_unseen.wait(), name="kept.unseen")
        await settle()
        peeps.collect_graph()  # both adopted while they run
        ids = {t.get_name(): tid(t) for t in (seen, unseen)}
        go_seen.set()
        await seen
        await settle()
        assert node(peeps.collect_graph(), ids["kept.seen"])["label"] == "kept.seen"
        go_unseen.set()
        await unseen
        await settle()
        del seen, unseen
        gc.collect()

        labels: list[Any] = []
        real_label = _tasks.TaskEntity.label

        def label(self: Any, task: Any) -> str:
            labels.append(self.id)
            return real_label(self, task)  # type: ignore[no-any-return]

        built: list[Any] = []
        real_describe = _tasks.TaskEntity._describe

        def describe(self: Any, task: Any, now: Any) -> Any:
            built.append(self.id)
            return real_describe(self, task, now)

        monkeypatch.setattr(_tasks.TaskEntity, "label", label)
        monkeypatch.setattr(_tasks.TaskEntity, "_describe", describe)
        for _ in range(2):
            graph = peeps.collect_graph()
            for name, node_id in ids.items():
                shown = node(graph, node_id)
                assert (shown["label"], shown["attrs"]["name"]) == (name, name)
                assert shown["attrs"]["outcome"] == "done"
        # The one seen finished before its task was gone is not built again,
        # nor its name asked for; the other is built once, at its first
        # snapshot as finished.
        assert ids["kept.seen"] not in labels and ids["kept.seen"] not in built
        assert built.count(ids["kept.unseen"]) == 1

    asyncio.run(scenario())


def test_finished_task_retention_is_bounded_by_count_and_age() -> None:
    async def scenario() -> None:
        _autotrack.enable_auto(step_stats=True)
        assert REGISTRY.finished.maxlen == STATE.finished_task_retention
        for _ in range(REGISTRY.finished.maxlen + 10):  # type: ignore[operator]
            await asyncio.create_task(asyncio.sleep(0))
        assert len(REGISTRY.finished) == REGISTRY.finished.maxlen
        old_age = STATE.finished_task_max_age_ns
        STATE.finished_task_max_age_ns = 0
        try:
            g = peeps.collect_graph()
        finally:
            STATE.finished_task_max_age_ns = old_age
        assert not [n for n in g["nodes"] if n["kind"] == "task"
                    and n["attrs"].get("outcome") == "done"]

    asyncio.run(scenario())


def test_step_stats_and_cancel_attribution() -> None:
    async def scenario() -> None:
        _autotrack.enable_auto(step_stats=True)

        async def stepper() -> None:
            for _ in range(5):
                await asyncio.sleep(0)
            await asyncio.sleep(3600)

        t = asyncio.create_task(stepper())
        await settle(12)
        g = peeps.collect_graph()
        attrs = node(g, tid(t))["attrs"]
        assert attrs["steps"] >= 6
        assert attrs["busy_ns"] > 0 and attrs["longest_step_ns"] > 0
        assert attrs["waiting_ns"] >= 0 and attrs["since_resumed_ns"] >= 0
        me = current_task_entity()
        assert me is not None
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        await settle()
        attrs = node(peeps.collect_graph(), tid(t))["attrs"]
        assert attrs["state"] == "cancelled" and attrs["cancelled_by"] == me.id

    asyncio.run(scenario())


def test_gather_becomes_a_group_node_with_needs_to_children() -> None:
    async def scenario() -> None:
        peeps.install_task_factory()

        async def child() -> None:
            await asyncio.sleep(3600)

        async def parent() -> None:
            await asyncio.gather(child(), child())

        p = asyncio.create_task(parent())
        await settle()
        g = peeps.collect_graph()
        (needs,) = edges(g, "needs", src=tid(p))
        group = node(g, needs["dst"])
        assert group["kind"] == "group" and group["label"] == "gather(2)"
        children = edges(g, "needs", src=group["id"])
        assert len(children) == 2
        assert all(node(g, e["dst"])["attrs"]["coro"].endswith(".child") for e in children)
        await cancel_all([p])

    asyncio.run(scenario())


def test_taskgroup_wait_shield_and_wait_for_keep_the_chain() -> None:
    async def scenario() -> None:
        peeps.install_task_factory()
        gate = asyncio.Event()

        async def child() -> None:
            await gate.wait()

        async def with_taskgroup() -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(child())
                tg.create_task(child())

        async def with_wait() -> None:
            await asyncio.wait([asyncio.create_task(child())])

        async def with_shield() -> None:
            await asyncio.shield(asyncio.create_task(child()))

        async def with_wait_for() -> None:
            await asyncio.wait_for(asyncio.create_task(child()), 3600)

        parents = {name: asyncio.create_task(fn(), name=name) for name, fn in [
            ("tg", with_taskgroup), ("wait", with_wait), ("shield", with_shield),
            ("wait_for", with_wait_for)]}
        await settle()
        g = peeps.collect_graph()
        for name, p in parents.items():
            # parent --needs--> (group/future) --needs--> child task(s), or directly
            # to the child task (wait_for on 3.12+ awaits the task itself).
            reached: set[str] = set()
            frontier = [tid(p)]
            while frontier:
                src = frontier.pop()
                for e in edges(g, "needs", src=src):
                    if e["dst"] not in reached:
                        reached.add(e["dst"])
                        frontier.append(e["dst"])
            kids = [n for n in g["nodes"] if n["id"] in reached and n["kind"] == "task"
                    and n["attrs"]["coro"].endswith(".child")]
            assert kids, f"{name}: the chain from the parent does not reach its children"
            if name == "tg":
                assert len(kids) == 2
                assert any(n["label"] == "TaskGroup" for n in g["nodes"] if n["id"] in reached)
        gate.set()
        await asyncio.gather(*parents.values())

    asyncio.run(scenario())


def test_task_awaiting_a_task_needs_it_directly() -> None:
    async def scenario() -> None:
        inner = peeps.tasks.spawn_tracked("inner", asyncio.sleep(3600))

        async def outer() -> None:
            await inner

        o = peeps.tasks.spawn_tracked("outer", outer())
        await settle()
        g = peeps.collect_graph()
        assert edges(g, "needs", src=tid(o), dst=tid(inner))
        await cancel_all([o, inner])

    asyncio.run(scenario())


def test_collected_pending_task_leaves_the_graph() -> None:
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()

        async def stuck(fut: asyncio.Future[None]) -> None:
            await fut

        peeps.install_task_factory(loop)
        t = loop.create_task(stuck(fut))
        loop.run_until_complete(asyncio.sleep(0))
        peeps.collect_graph()  # first seen: the entity is made
        task_node = tid(t)
        assert task_node in {n["id"] for n in peeps.collect_graph()["nodes"]}
        loop.set_exception_handler(lambda loop, ctx: None)  # "destroyed but pending"
        del t, fut
    finally:
        loop.close()
    gc.collect()
    assert task_node not in {n["id"] for n in peeps.collect_graph()["nodes"]}


def test_uninstall_when_another_factory_was_installed_on_top() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        peeps.install_task_factory()
        ours = loop.get_task_factory()
        assert _autotrack.factory_state(ours) is not None

        def on_top(loop: Any, coro: Any, **kwargs: Any) -> Any:
            return ours(loop, coro, **kwargs)

        loop.set_task_factory(on_top)
        peeps.uninstall_task_factory(loop)
        assert loop.get_task_factory() is on_top  # theirs is left alone
        t = asyncio.create_task(asyncio.sleep(0))
        await t
        assert entity_for_task(t) is None  # ours now only passes through
        loop.set_task_factory(None)

    asyncio.run(scenario())


def test_the_factory_reads_its_switches_at_every_spawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """``STATE.enabled`` and the factory's ``active`` (slots the C factory reads
    directly) take effect at the next spawn, whatever truthy value they hold."""
    from peeps._config import STATE

    async def recorded() -> bool:
        t = asyncio.create_task(asyncio.sleep(0))
        await t
        return getattr(t, "_peeps_spawn", None) is not None

    async def scenario() -> None:
        peeps.install_task_factory()
        state = _autotrack.factory_state(asyncio.get_running_loop().get_task_factory())
        assert state is not None
        assert await recorded()
        monkeypatch.setattr(STATE, "enabled", False)
        assert not await recorded()
        monkeypatch.setattr(STATE, "enabled", 1)
        assert await recorded()
        monkeypatch.setattr(STATE, "enabled", "")
        assert not await recorded()
        monkeypatch.setattr(STATE, "enabled", True)
        state.active = False
        assert not await recorded()
        state.active = True
        assert await recorded()

    asyncio.run(scenario())


def test_event_loop_node_and_lazy_cancel_attribution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_tasks, "cancel_origin", True)

    async def scenario() -> None:
        peeps.install_task_factory()
        me = current_task_entity()
        assert me is not None
        t = asyncio.create_task(asyncio.sleep(3600))
        tracked = peeps.tasks.spawn_tracked("tracked", asyncio.sleep(3600))
        assert type(t) is _tasks.TrackedTask and type(tracked) is _tasks.TrackedTask
        await settle()
        t.cancel()  # before anyone saw the task: kept in its slot
        g = peeps.collect_graph()
        (loop_node,) = [n for n in g["nodes"] if n["kind"] == "event_loop"]
        assert loop_node["attrs"]["running"] is True and loop_node["attrs"]["tasks"] >= 2
        attrs = node(g, tid(t))["attrs"]
        assert attrs["cancelled_by"] == me.id
        assert node(g, tid(tracked))["attrs"]["tracked"] is True
        await cancel_all([tracked])
        await asyncio.gather(t, return_exceptions=True)

    asyncio.run(scenario())


def test_default_tasks_are_plain_asyncio_tasks_without_cancel_origin() -> None:
    """By default neither the factory nor ``spawn_tracked`` subclasses the C
    ``Task``: spawn records live in an attribute, and who cancelled is not known."""

    async def scenario() -> None:
        peeps.install_task_factory()
        t = asyncio.create_task(asyncio.sleep(3600))
        tracked = peeps.tasks.spawn_tracked("tracked", asyncio.sleep(3600), job=7)
        assert type(t) is asyncio.Task and type(tracked) is asyncio.Task
        await settle()
        attrs = node(peeps.collect_graph(), tid(tracked))["attrs"]  # both are seen
        assert attrs["tracked"] is True and attrs["meta"]["job"] == 7
        assert attrs["source"] == "spawn_tracked" and attrs["name"] == "tracked"
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        g = peeps.collect_graph()
        assert node(g, tid(t))["attrs"]["state"] == "cancelled"
        assert "cancelled_by" not in node(g, tid(t))["attrs"]
        await cancel_all([tracked])

    asyncio.run(scenario())


def test_sites_can_be_switched_off() -> None:
    async def scenario() -> None:
        peeps.install_task_factory()
        _autotrack.capture_sites = False
        try:
            t = asyncio.create_task(asyncio.sleep(3600))
        finally:
            _autotrack.capture_sites = True
        await settle()
        attrs = node(peeps.collect_graph(), tid(t))["attrs"]
        assert "ctx.location" not in attrs["meta"]
        assert attrs["coro"] == "sleep"
        await cancel_all([t])

    asyncio.run(scenario())


def test_auto_creation_sites_are_exact_lines_through_asyncio_helpers() -> None:
    """The lean factory records the caller's code and instruction offset; the
    line decoded from them at snapshot is the line that created the task,
    whether through ``loop.create_task`` or ``asyncio.create_task``."""

    async def scenario() -> None:
        peeps.install_task_factory()
        loop = asyncio.get_running_loop()
        lines, tasks = [], []
        for _ in range(2):  # the second round hits the same-site fast path
            lines.append(_line() + 1)
            tasks.append(loop.create_task(asyncio.sleep(10)))
            lines.append(_line() + 1)
            tasks.append(asyncio.create_task(asyncio.sleep(10)))
        g = peeps.collect_graph()
        try:
            for task, line in zip(tasks, lines, strict=True):
                assert node(g, tid(task))["attrs"]["meta"]["ctx.location"] == f"{__file__}:{line}"
        finally:
            await cancel_all(tasks)

    asyncio.run(scenario())


def test_the_factory_installed_is_the_one_asked_for(factory_impl: str) -> None:
    """The C factory when built and wanted, else the Python function; both
    name their PeepsTaskFactory, which uninstall finds them by."""

    async def scenario() -> None:
        peeps.install_task_factory()
        factory = asyncio.get_running_loop().get_task_factory()
        if factory_impl == "c":
            assert type(factory).__name__ == "TaskFactory"
            assert type(factory).__module__ == "peeps._speedups"
        else:
            assert type(factory).__name__ == "function"
        assert isinstance(_autotrack.factory_state(factory), _autotrack.PeepsTaskFactory)

    asyncio.run(scenario())


def test_spawning_keeps_no_reference_to_the_site_the_loop_or_the_parent() -> None:
    """A spawn record holds the site's code while its task lives, and nothing
    once it is gone: a thousand spawns and finishes from one line leave the
    code object, the loop and the spawning task with the references they had."""

    async def child() -> None:
        return None

    async def scenario() -> None:
        peeps.install_task_factory()
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        # A site of its own (not a constant shared with other runs of this test).
        ns: dict[str, Any] = {}
        exec(textwrap.dedent("""
            async def round_of(loop, child, n):
                for _ in range(n):
                    await loop.create_task(child())
            """), ns)
        round_of = ns["round_of"]
        code = round_of.__code__

        await round_of(loop, child, 10)  # warm: the factory's last-site cache holds one reference
        gc.collect()
        before = (sys.getrefcount(code), sys.getrefcount(loop), sys.getrefcount(me))
        await round_of(loop, child, 1000)
        gc.collect()
        assert (sys.getrefcount(code), sys.getrefcount(loop), sys.getrefcount(me)) == before

    asyncio.run(scenario())


def test_a_failure_while_recording_a_spawn_is_reported_not_raised(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The task is made and returned; the record's failure goes to the log once."""

    class Exploding:
        def __bool__(self) -> bool:
            raise RuntimeError("boom while recording")

    monkeypatch.setattr(REGISTRY, "_failed_parts", set())

    async def scenario() -> None:
        peeps.install_task_factory()
        monkeypatch.setattr(_autotrack, "capture_sites", Exploding())
        t = asyncio.create_task(asyncio.sleep(0, result=7))
        assert await t == 7
        assert getattr(t, "_peeps_spawn", None) is None

    with caplog.at_level("WARNING", logger="peeps"):
        asyncio.run(scenario())
    assert "automatic task tracking failed" in caplog.text
    assert "boom while recording" in caplog.text
