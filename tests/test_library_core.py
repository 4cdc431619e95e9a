"""The library core in-process: graph contents, lifecycle, retention, disabled mode."""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

import peeps
from peeps import _channel
from peeps import _tasks as peeps_tasks
from peeps._config import STATE
from peeps._registry import REGISTRY


def nodes_by_label(graph: Any) -> dict[str, Any]:
    return {n["label"]: n for n in graph["nodes"]}


def edges_of(graph: Any, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e["src"], e["dst"], e["attrs"]) for e in graph["edges"] if e["kind"] == kind]


@pytest.fixture
def disabled() -> Iterator[None]:
    STATE.enabled = False
    try:
        yield
    finally:
        STATE.enabled = True


def test_blocked_send_is_a_needs_edge_to_the_full_channel() -> None:
    async def scenario() -> Any:
        queue = peeps.channel("t.queue", 2)
        await queue.put(1)
        await queue.put(2)
        sender = peeps.tasks.spawn_tracked("t.sender", queue.put(3))
        await asyncio.sleep(0.01)
        graph = peeps.collect_graph()
        sender.cancel()
        return graph

    graph = asyncio.run(scenario())
    nodes = nodes_by_label(graph)
    channel = nodes["t.queue"]
    assert channel["kind"] == "channel"
    assert (channel["attrs"]["depth"], channel["attrs"]["capacity"]) == (2, 2)
    assert channel["attrs"]["blocked_senders"] == 1
    sender = nodes["t.sender"]
    needs = edges_of(graph, "needs")
    [(src, _dst, attrs)] = [e for e in needs if e[1] == channel["id"]]
    assert src == sender["id"]
    assert attrs["op"] == "send"
    assert attrs["waited_ns"] > 0
    assert re.search(r"test_library_core\.py:\d+$", sender["attrs"]["meta"]["ctx.location"])


def test_needs_edge_vanishes_when_the_wait_ends() -> None:
    async def scenario() -> tuple[Any, Any]:
        queue = peeps.channel("t.queue2", 1)
        await queue.put(0)
        sender = peeps.tasks.spawn_tracked("t.sender2", queue.put(1))
        await asyncio.sleep(0.01)
        during = peeps.collect_graph()
        await queue.get()
        await sender
        after = peeps.collect_graph()
        return during, after

    during, after = asyncio.run(scenario())
    channel_id = nodes_by_label(during)["t.queue2"]["id"]
    assert [e for e in edges_of(during, "needs") if e[1] == channel_id]
    assert not [e for e in edges_of(after, "needs") if e[1] == channel_id]


def test_spawned_lineage_and_task_stack() -> None:
    async def child() -> None:
        await peeps.sleep(10, label="t.child.sleep")

    async def parent() -> Any:
        task = peeps.tasks.spawn_tracked("t.child", child())
        await asyncio.sleep(0.01)
        graph = peeps.collect_graph()
        task.cancel()
        return graph

    async def main() -> Any:
        return await peeps.tasks.spawn_tracked("t.parent", parent())

    graph = asyncio.run(main())
    nodes = nodes_by_label(graph)
    assert (nodes["t.parent"]["id"], nodes["t.child"]["id"], {}) in edges_of(graph, "spawned")
    stack = nodes["t.child"]["attrs"]["stack"]
    assert any("in child" in frame for frame in stack), stack
    sleep_node = nodes["t.child.sleep"]
    assert sleep_node["attrs"]["remaining_ns"] > 9 * 10**9
    assert (nodes["t.child"]["id"], sleep_node["id"]) in [(s, d) for s, d, _ in edges_of(graph, "needs")]


def test_peep_node_is_needed_while_awaited_and_gone_after() -> None:
    async def scenario() -> tuple[Any, Any]:
        gate = asyncio.Event()

        async def waiter() -> None:
            await peeps.peep(gate.wait(), "t.gate", shard=3)

        task = peeps.tasks.spawn_tracked("t.waiter", waiter())
        await asyncio.sleep(0.01)
        during = peeps.collect_graph()
        gate.set()
        await task
        return during, peeps.collect_graph()

    during, after = asyncio.run(scenario())
    node = nodes_by_label(during)["t.gate"]
    assert node["kind"] == "peep"
    assert node["attrs"]["meta"]["shard"] == 3
    assert (nodes_by_label(during)["t.waiter"]["id"], node["id"]) in [
        (s, d) for s, d, _ in edges_of(during, "needs")]
    assert "t.gate" not in nodes_by_label(after)


def test_dropped_channel_leaves_the_graph() -> None:
    queue = peeps.channel("t.dropped", 4)
    assert "t.dropped" in nodes_by_label(peeps.collect_graph())
    del queue
    gc.collect()
    assert "t.dropped" not in nodes_by_label(peeps.collect_graph())


def test_many_short_tasks_leave_bounded_retention() -> None:
    async def noop() -> None:
        return None

    async def scenario() -> None:
        for batch in range(20):
            await asyncio.gather(*(peeps.tasks.spawn_tracked(f"t.short.{batch}.{i}", noop())
                                   for i in range(250)))

    asyncio.run(scenario())
    gc.collect()
    graph = peeps.collect_graph()
    short = [n for n in graph["nodes"] if n["label"].startswith("t.short.")]
    assert not [n for n in short if n["attrs"]["state"] not in ("done",)]
    # Only the newest finished tasks are retained, bounded by count.
    assert len(short) <= STATE.finished_task_retention
    assert not [t for t in REGISTRY.tasks.values() if t.name.startswith("t.short.")]
    assert all(n["attrs"]["outcome"] == "done" for n in short)


def test_finished_tasks_expire_by_age(monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered at creation (PEEPS_EAGER_TASKS=1): a lazily tracked task that
    # finishes before any snapshot sees it leaves no trace to expire.
    monkeypatch.setattr(peeps_tasks, "lazy_spawn", False)

    async def boom() -> None:
        raise KeyError("x")

    async def scenario() -> None:
        task = peeps.tasks.spawn_tracked("t.failed", boom())
        with pytest.raises(KeyError):
            await task

    asyncio.run(scenario())
    failed = nodes_by_label(peeps.collect_graph())["t.failed"]
    assert failed["attrs"]["outcome"] == "failed"
    assert failed["attrs"]["exception_type"] == "KeyError"
    old_age = STATE.finished_task_max_age_ns
    STATE.finished_task_max_age_ns = 0
    try:
        assert "t.failed" not in nodes_by_label(peeps.collect_graph())
    finally:
        STATE.finished_task_max_age_ns = old_age


def test_a_broken_entity_costs_only_itself() -> None:
    class Broken:
        _peeps_id = "broken:1"

        def _peeps_describe(self, now: object) -> Any:
            raise RuntimeError("bad describe")

    broken = Broken()
    REGISTRY.track(broken)  # type: ignore[arg-type]
    queue = peeps.channel("t.survivor", 1)
    try:
        graph = peeps.collect_graph()
    finally:
        REGISTRY.untrack(broken)  # type: ignore[arg-type]
    assert "t.survivor" in nodes_by_label(graph)
    assert queue.maxsize == 1


def test_disabled_wrappers_are_plain_and_register_nothing(disabled: None) -> None:
    before_resources = len(REGISTRY.live_resources())
    before_tasks = len(REGISTRY.tasks)

    async def scenario() -> None:
        queue = peeps.channel("t.off", 1)
        assert type(queue) is _channel.PlainChannel
        await queue.send(1)
        assert await queue.recv() == 1
        awaitable = asyncio.sleep(0)
        assert peeps.peep(awaitable, "t.off.peep") is awaitable
        await awaitable
        await peeps.tasks.spawn_tracked("t.off.task", peeps.sleep(0))

    asyncio.run(scenario())
    assert len(REGISTRY.live_resources()) == before_resources
    assert len(REGISTRY.tasks) == before_tasks
    assert "t.off.task" not in nodes_by_label(peeps.collect_graph())


def test_channel_rejects_nonsense_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        peeps.channel("t.bad", 0)


def test_init_without_dashboard_sends_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PEEPS_DASHBOARD", raising=False)
    peeps.init("t-no-dashboard")
    assert STATE.proc_key.startswith("t-no-dashboard-")
    from peeps import _collector
    assert _collector.current_collector() is None


def test_a_bad_frame_cap_setting_is_logged_not_raised(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from peeps import _collector
    from peeps.types import DEFAULT_MAX_FRAME_BYTES

    monkeypatch.setenv("PEEPS_MAX_FRAME_BYTES", "lots")
    try:
        with caplog.at_level("WARNING", logger="peeps"):
            peeps.init("t-bad-cap", dashboard="127.0.0.1:9", sampler="off", watchdog=False)
        collector = _collector.current_collector()
        assert collector is not None and collector.max_frame_bytes == DEFAULT_MAX_FRAME_BYTES
        assert "PEEPS_MAX_FRAME_BYTES='lots' is not a number of bytes" in caplog.text
    finally:
        peeps.shutdown()


def test_init_rejects_malformed_dashboard_address() -> None:
    with pytest.raises(ValueError, match="host:port"):
        peeps.init("t", dashboard="nonsense")


def test_sliced_collection_hands_off_the_gil_and_builds_the_same_graph(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector's ``collect_graph(slices=True)`` checks between entities
    whether to hand the GIL away (after ``HANDOFF_NS`` of work, so a busy loop
    never waits a whole switch interval) and describes exactly what the
    unsliced call does."""
    from peeps import _reply_encoder

    async def scenario() -> None:
        channels = [peeps.channel(f"sliced-{i}", capacity=1) for i in range(150)]
        waiters = [peeps.tasks.spawn_tracked(f"recv-{i}", ch.get())
                   for i, ch in enumerate(channels)]
        await asyncio.sleep(0.01)
        plain = peeps.collect_graph()
        yields: list[float] = []
        real_sleep = time.sleep

        def counting_sleep(seconds: float) -> None:
            yields.append(seconds)
            real_sleep(seconds)

        monkeypatch.setattr(time, "sleep", counting_sleep)  # what hand_off calls
        monkeypatch.setattr(_reply_encoder, "HANDOFF_NS", 0)  # every check hands off
        sliced = peeps.collect_graph(slices=True)
        monkeypatch.undo()
        assert {n["id"] for n in sliced["nodes"]} == {n["id"] for n in plain["nodes"]}
        assert ({(e["src"], e["dst"], e["kind"]) for e in sliced["edges"]}
                == {(e["src"], e["dst"], e["kind"]) for e in plain["edges"]})
        # 150 channels + 150 tasks (+ whatever else is live), checked every 8.
        assert len(yields) >= 300 // 8 and set(yields) == {0}
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

    asyncio.run(scenario())
