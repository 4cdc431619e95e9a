"""Event-loop stall detection on a real loop blocked by real synchronous code."""

from __future__ import annotations

import asyncio
import asyncio.events
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import peeps
from graph_support import edges
from library._threads_support import node_labelled, voluntary_switches, wait_for_graph
from peeps import _deadline, _watchdog

HERE = __file__


def _stall_events(loop_id: str) -> list[dict[str, Any]]:
    return [dict(e) for e in peeps.collect_graph()["events"]
            if e["name"] == "loop.stall" and e["entity_id"] == loop_id]


def _stalled_loop(graph: Mapping[str, Any]) -> bool:
    return any(n["kind"] == "loop" and n["attrs"]["stalled"] and n["attrs"]["task_id"]
               for n in graph["nodes"])


def test_stall_is_visible_while_it_lasts_and_recorded_when_it_ends() -> None:
    during: dict[str, Any] = {}

    async def blocker() -> None:
        await asyncio.sleep(0.1)
        time.sleep(0.6)  # the stall

    async def main() -> None:
        watch = peeps.watch_loop(threshold_ms=100)
        assert watch is not None
        task = peeps.tasks.spawn_tracked("t.stall.blocker", blocker())
        # The snapshot is taken from another thread while the loop is stuck.
        snapper = threading.Thread(
            target=lambda: during.update(graph=wait_for_graph(_stalled_loop, timeout=3)))
        snapper.start()
        await task
        await asyncio.sleep(0.1)  # let the heartbeat come back and record the stall
        snapper.join(5)
        watch.stop()

    asyncio.run(main())
    graph = during["graph"]
    loop_node = next(n for n in graph["nodes"] if n["kind"] == "loop")
    task_node = node_labelled(graph, "t.stall.blocker", "task")
    attrs = loop_node["attrs"]
    assert attrs["stalled_ns"] > 100_000_000
    assert attrs["task_id"] == task_node["id"] and attrs["task_name"] == "t.stall.blocker"
    line = Path(HERE).read_text().splitlines().index("        time.sleep(0.6)  # the stall") + 1
    assert attrs["frame"] == f"{HERE}:{line} in blocker"
    assert attrs["stack"][-1] == attrs["frame"]
    [step] = edges(graph, "needs", src=loop_node["id"])
    assert step["dst"] == task_node["id"] and step["attrs"]["op"] == "step"

    # (A loaded machine may add short stalls of its own: pick the blocker's.)
    [event] = [e for e in _stall_events(loop_node["id"])
               if e["attrs"]["task_id"] == task_node["id"]]
    ev = event["attrs"]
    assert 500_000_000 <= ev["duration_ns"] < 2_000_000_000
    assert ev["task_id"] == task_node["id"] and ev["frame"] == attrs["frame"]
    assert ev["location"] == f"{HERE}:{line}"
    assert event["entity_id"] == loop_node["id"] and event["parent_entity_id"] == task_node["id"]


def test_an_idle_or_busy_but_yielding_loop_has_no_stalls() -> None:
    async def main() -> tuple[int, str]:
        # A generous threshold: on a loaded machine the process itself may be
        # descheduled for tens of milliseconds, which is a real (if innocent) stall.
        watch = peeps.watch_loop(threshold_ms=300)
        assert watch is not None
        for _ in range(20):
            await asyncio.sleep(0.01)
            time.sleep(0.005)  # short steps are fine
        stalls = watch.stalls
        watch.stop()
        return stalls, watch._peeps_id

    stalls, loop_id = asyncio.run(main())
    assert stalls == 0
    assert _stall_events(loop_id) == []


def test_init_watchdog_watches_loops_started_later_and_shutdown_unhooks() -> None:
    original = asyncio.events._set_running_loop
    peeps.init("t-watchdog", sampler="off", watchdog=True, stall_threshold_ms=100)
    assert asyncio.events._set_running_loop is not original

    async def main() -> _watchdog.LoopWatch:
        await asyncio.sleep(0.05)
        [watch] = _watchdog.watched_loops()
        time.sleep(0.4)  # the stall
        await asyncio.sleep(0.15)
        return watch

    watch = asyncio.run(main())
    line = Path(HERE).read_text().splitlines().index("        time.sleep(0.4)  # the stall") + 1
    stalls = _stall_events(watch._peeps_id)
    assert watch.stalls >= 1
    assert [e for e in stalls if e["attrs"]["location"] == f"{HERE}:{line}"
            and e["attrs"]["duration_ns"] >= 300_000_000]
    peeps.shutdown()
    assert asyncio.events._set_running_loop is original
    assert not [t for t in threading.enumerate() if t.name == "peeps-watchdog"]
    assert _watchdog.watched_loops() == []


def test_a_stopped_loop_is_not_a_stalled_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        watch = peeps.watch_loop(loop, threshold_ms=100)
        assert watch is not None
        loop.run_until_complete(asyncio.sleep(0.05))
        time.sleep(0.4)  # the loop is not running: nobody is starved
        loop.run_until_complete(asyncio.sleep(0.05))
        assert watch.stalls == 0
        watch.stop()
    finally:
        loop.close()


def test_with_the_thread_sampler_on_the_sampler_polls_and_the_stall_is_caught() -> None:
    """The sampler's thread polls the watchdog (the watchdog's own thread only
    looks in twice a second); a stall is still caught while it lasts, stack and all."""
    peeps.init("t-watchdog-sampler", sampler="thread", sampler_hz=100, watchdog=True,
               stall_threshold_ms=100)

    async def main() -> _watchdog.LoopWatch:
        await asyncio.sleep(0.3)
        assert _watchdog._sampler_polls_for_us()
        [watch] = _watchdog.watched_loops()
        time.sleep(0.4)  # the stall under the sampler
        await asyncio.sleep(0.15)
        return watch

    watch = asyncio.run(main())
    line = Path(HERE).read_text().splitlines().index(
        "        time.sleep(0.4)  # the stall under the sampler") + 1
    stalls = _stall_events(watch._peeps_id)
    assert [e for e in stalls if e["attrs"]["location"] == f"{HERE}:{line}"
            and e["attrs"]["captured"]], stalls
    peeps.shutdown()


@pytest.mark.skipif(not _deadline.available(), reason="kernel deadlines are Linux timerfd")
def test_on_a_healthy_loop_the_watchdog_thread_sleeps_until_a_deadline() -> None:
    """The heartbeat re-arms a kernel deadline; the watchdog thread blocks on it
    instead of polling at threshold/4 (40 Hz here), so a healthy loop does not
    wake it at all -- and a stall still wakes it in time to catch the stack."""

    async def main() -> tuple[int, _watchdog.LoopWatch]:
        watch = peeps.watch_loop(threshold_ms=100)
        assert watch is not None and watch.deadline is not None
        await asyncio.sleep(0.1)
        [thread] = [t for t in threading.enumerate() if t.name == "peeps-watchdog"]
        before = voluntary_switches(thread)
        for _ in range(50):  # 0.5 s of a healthy, busy loop: ~10 heartbeats
            await asyncio.sleep(0.01)
        woke = voluntary_switches(thread) - before
        time.sleep(0.4)  # the stall the deadline catches
        await asyncio.sleep(0.15)
        watch.stop()
        return woke, watch

    woke, watch = asyncio.run(main())
    # Polling would be ~20 wake-ups; allow a couple for the machine's noise.
    assert woke <= 3, woke
    line = Path(HERE).read_text().splitlines().index(
        "        time.sleep(0.4)  # the stall the deadline catches") + 1
    stalls = _stall_events(watch._peeps_id)
    assert [e for e in stalls if e["attrs"]["location"] == f"{HERE}:{line}"
            and e["attrs"]["captured"]], stalls


@pytest.mark.skipif(not _deadline.available(), reason="kernel deadlines are Linux timerfd")
def test_a_deadline_passes_only_when_it_is_not_rearmed_in_time() -> None:
    import select

    deadline = _deadline.create(0.05)
    assert deadline is not None
    try:
        start = time.monotonic()
        while time.monotonic() - start < 0.2:  # re-armed every ~10 ms: never passes
            deadline.arm()
            assert select.select([deadline.fileno()], [], [], 0.01)[0] == []
        t0 = time.monotonic()
        assert select.select([deadline.fileno()], [], [], 2.0)[0] == [deadline.fileno()]
        assert 0.03 <= time.monotonic() - t0 < 1.0
        deadline.drain()  # consumed: blocks again
        assert select.select([deadline.fileno()], [], [], 0.1)[0] == []
    finally:
        deadline.close()
    assert deadline.fileno() == -1
