"""Where a snapshot's work runs (``peeps._loopside``): on a running event loop
that answers, in slices between its callbacks; on the collector thread when
the loop is blocked, for a step that may block, or when switched off."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

import peeps
from peeps import _loopside
from peeps._reply_encoder import OFF_LOOP, Steps


@contextlib.contextmanager
def _running_in_a_thread(run: Callable[[asyncio.AbstractEventLoop], None]
                         ) -> Iterator[tuple[asyncio.AbstractEventLoop, threading.Thread]]:
    """A new loop, run by ``run(loop)`` in its own thread and offered for
    snapshot work; stopped and closed after."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=run, args=(loop,), name="test-loop", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not loop.is_running():
        assert thread.is_alive() and time.monotonic() < deadline, "the loop did not start"
        time.sleep(0.001)
    _loopside.forget_loops()
    _loopside.remember_loop(loop)
    try:
        yield loop, thread
    finally:
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        _loopside.forget_loops()


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop running in its own thread, offered for snapshot work."""
    with _running_in_a_thread(lambda loop: loop.run_forever()) as (loop, _):
        yield loop


def _loop_ident(loop: asyncio.AbstractEventLoop) -> int:
    ident: Future[int] = Future()
    loop.call_soon_threadsafe(lambda: ident.set_result(threading.get_ident()))
    return ident.result(5)


def _recording_steps(where: list[int], n: int, *, off_loop_at: int | None = None,
                     work_s: float = 0.0) -> Steps[str]:
    """``n`` steps, each noting the thread it ran on."""
    for i in range(n):
        if i == off_loop_at:
            yield OFF_LOOP
        where.append(threading.get_ident())
        if work_s:
            time.sleep(work_s)
        yield None
    return "done"


def test_steps_run_on_a_running_loop(loop_thread: asyncio.AbstractEventLoop) -> None:
    where: list[int] = []
    assert _loopside.run_snapshot_steps(_recording_steps(where, 50)) == "done"
    assert len(where) == 50
    assert set(where) == {_loop_ident(loop_thread)}
    assert _loopside._unanswered is None  # answered: neither the job nor its loop held


def test_the_loop_runs_its_own_callbacks_between_slices(
        loop_thread: asyncio.AbstractEventLoop) -> None:
    """Slices of about HANDOFF_NS (1 ms) each, the loop's own callbacks
    running between them: 40 steps of 0.5 ms come in runs of a few."""
    order: list[str] = []  # both sides append on the loop's thread: exact order
    stop = threading.Event()

    def tick() -> None:
        order.append("tick")
        if not stop.is_set():
            loop_thread.call_soon(tick)

    def steps() -> Steps[str]:
        for _ in range(40):
            order.append("step")
            time.sleep(0.0005)
            yield None
        return "done"

    loop_thread.call_soon_threadsafe(tick)
    assert _loopside.run_snapshot_steps(steps()) == "done"
    stop.set()
    runs = [len(run) for run in "".join("s" if e == "step" else "t" for e in order)
            .strip("t").split("t") if run]
    assert sum(runs) == 40
    assert len(runs) >= 5, runs  # the loop got control back again and again
    assert max(runs) <= 6, runs  # ~1 ms of 0.5 ms steps per slice, not the lot


def test_a_step_that_may_block_runs_off_the_loop(loop_thread: asyncio.AbstractEventLoop) -> None:
    where: list[int] = []
    assert _loopside.run_snapshot_steps(_recording_steps(where, 6, off_loop_at=3)) == "done"
    loop_ident = _loop_ident(loop_thread)
    assert where[:3] == [loop_ident] * 3
    assert where[3] == threading.get_ident()  # the step after OFF_LOOP: here
    assert where[4:] == [loop_ident] * 2  # and the rest back on the loop


def test_a_blocked_loop_leaves_the_work_to_the_collector(
        loop_thread: asyncio.AbstractEventLoop) -> None:
    release = threading.Event()
    loop_thread.call_soon_threadsafe(release.wait, 10)  # the loop is stuck in a callback
    try:
        where: list[int] = []
        start = time.monotonic()
        assert _loopside.run_snapshot_steps(_recording_steps(where, 5)) == "done"
        first = time.monotonic() - start
        assert set(where) == {threading.get_ident()}
        assert first < _loopside.LOOP_PATIENCE_S + 2.0
        # Still stuck, and it never ran the last job: no waiting for it this time.
        where.clear()
        start = time.monotonic()
        assert _loopside.run_snapshot_steps(_recording_steps(where, 5)) == "done"
        assert set(where) == {threading.get_ident()}
        assert time.monotonic() - start < _loopside.LOOP_PATIENCE_S / 2
        assert _loopside._unanswered is not None  # the job it has not run
    finally:
        release.set()
    # Unstuck: the late callback runs (and does nothing), and the loop is used again.
    deadline = time.monotonic() + 5
    where = []
    while time.monotonic() < deadline:
        where.clear()
        _loopside.run_snapshot_steps(_recording_steps(where, 3))
        if set(where) == {_loop_ident(loop_thread)}:
            break
        time.sleep(0.01)
    assert set(where) == {_loop_ident(loop_thread)}
    assert _loopside._unanswered is None


def test_a_loop_that_blocks_midway_hands_the_rest_back(
        loop_thread: asyncio.AbstractEventLoop) -> None:
    release = threading.Event()
    loop_ident = _loop_ident(loop_thread)

    def steps(where: list[int]) -> Steps[str]:
        for i in range(6):
            where.append(threading.get_ident())
            if i == 2 and threading.get_ident() == loop_ident:
                # Block the loop right after this slice, as a host callback would.
                loop_thread.call_soon(release.wait, 10)
                time.sleep(0.002)  # end the slice here
            yield None
        return "done"

    try:
        where: list[int] = []
        assert _loopside.run_snapshot_steps(steps(where)) == "done"
        assert where[:3] == [loop_ident] * 3
        assert threading.get_ident() in where[3:]
        assert len(where) == 6  # every step ran once
    finally:
        release.set()


def test_errors_reach_the_collector_not_the_loop(loop_thread: asyncio.AbstractEventLoop) -> None:
    handled: list[object] = []
    loop_thread.set_exception_handler(lambda loop, context: handled.append(context))

    def failing() -> Steps[str]:
        yield None
        raise ValueError("describing went wrong")

    with pytest.raises(ValueError, match="describing went wrong"):
        _loopside.run_snapshot_steps(failing())
    assert handled == []


def test_switched_off_keeps_the_work_here(loop_thread: asyncio.AbstractEventLoop,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_loopside, "enabled", False)
    where: list[int] = []
    assert _loopside.run_snapshot_steps(_recording_steps(where, 5)) == "done"
    assert set(where) == {threading.get_ident()}


def test_a_stopped_loop_is_not_used() -> None:
    loop = asyncio.new_event_loop()
    try:
        _loopside.forget_loops()
        _loopside.remember_loop(loop)
        where: list[int] = []
        start = time.monotonic()
        assert _loopside.run_snapshot_steps(_recording_steps(where, 3)) == "done"
        assert set(where) == {threading.get_ident()}
        assert time.monotonic() - start < _loopside.LOOP_PATIENCE_S / 2
    finally:
        loop.close()
        _loopside.forget_loops()


def test_the_snapshot_shows_the_loop_thread_where_the_host_is(
        loop_thread: asyncio.AbstractEventLoop) -> None:
    """Taken on the loop, the loop thread's stack is the loop between
    callbacks, not peeps' snapshot code nor the callback that runs it."""
    from peeps._reply_encoder import run_steps
    from peeps._snapshot import collect_steps

    peeps.start_sampler(mode="thread", hz=100)
    try:
        time.sleep(0.2)  # threads get their nodes once sampled
        graph = _loopside.run_snapshot_steps(collect_steps())
        # Taken here instead, this thread's own innermost frame is this test.
        here = run_steps(collect_steps())
    finally:
        peeps.stop_sampler()
    loop_ident = _loop_ident(loop_thread)
    threads = [n for n in graph["nodes"] if n["kind"] == "thread"
               and n["attrs"].get("ident") == loop_ident]
    assert threads, [n["attrs"] for n in graph["nodes"] if n["kind"] == "thread"]
    stack = threads[0]["attrs"].get("stack") or []
    assert stack, threads[0]["attrs"]
    assert not any("/peeps/" in frame for frame in stack), stack
    assert "in _run_once" in stack[-1], stack  # the loop, between callbacks
    [me] = [n for n in here["nodes"] if n["kind"] == "thread"
            and n["attrs"].get("ident") == threading.get_ident()]
    assert "test_loopside.py" in me["attrs"]["stack"][-1], me["attrs"]["stack"]


def test_tasks_adopted_on_the_loop_are_watched_to_the_end(
        loop_thread: asyncio.AbstractEventLoop) -> None:
    """Adoption batches the tasks' done callbacks per step: nothing is left
    batched on the loop's thread, and the adopted tasks are seen finishing."""
    from peeps import _tasks
    from peeps._snapshot import collect_steps

    async def spawn() -> asyncio.Event:
        ev = asyncio.Event()
        for i in range(3):
            peeps.tasks.spawn_tracked(f"adoptee-{i}", ev.wait())
        await asyncio.sleep(0)
        return ev

    ev = asyncio.run_coroutine_threadsafe(spawn(), loop_thread).result(5)

    def adoptees(graph: peeps.types.GraphSnapshot) -> dict[str, str]:
        return {n["label"]: n["attrs"]["state"] for n in graph["nodes"]
                if n["kind"] == "task" and n["label"].startswith("adoptee-")}

    graph = _loopside.run_snapshot_steps(collect_steps())
    assert adoptees(graph) == {f"adoptee-{i}": "pending" for i in range(3)}
    left: Future[object] = Future()
    loop_thread.call_soon_threadsafe(
        lambda: left.set_result(getattr(_tasks._batch_local, "watches", None)))
    assert left.result(5) is None
    loop_thread.call_soon_threadsafe(ev.set)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        states = adoptees(_loopside.run_snapshot_steps(collect_steps()))
        if set(states.values()) == {"done"}:
            break
        time.sleep(0.01)
    assert states == {f"adoptee-{i}": "done" for i in range(3)}


def test_a_keyboard_interrupt_in_a_slice_is_the_hosts() -> None:
    """Ctrl-C landing while a slice runs goes on out of the host's loop, and
    the snapshot fails cleanly instead of carrying it to the collector."""
    escaped: list[BaseException] = []

    def run(loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_forever()
        except KeyboardInterrupt as exc:
            escaped.append(exc)

    with _running_in_a_thread(run) as (_, thread):
        def interrupted() -> Steps[str]:
            yield None
            if threading.get_ident() == thread.ident:
                raise KeyboardInterrupt
            yield None
            return "done"

        with pytest.raises(RuntimeError, match="interrupted on the loop"):
            _loopside.run_snapshot_steps(interrupted())
        thread.join(5)
        assert len(escaped) == 1  # out of run_forever, in the loop's own thread


@pytest.mark.parametrize(("hint", "on_loop"), [(None, False), (10, True),
                                               (_loopside.MAX_LOOP_NODES + 1, False)])
def test_where_by_the_last_snapshots_size(loop_thread: asyncio.AbstractEventLoop,
                                          hint: int | None, on_loop: bool) -> None:
    where: list[int] = []
    _loopside.run_snapshot_steps(_recording_steps(where, 3), nodes_hint=hint)
    expected = _loop_ident(loop_thread) if on_loop else threading.get_ident()
    assert set(where) == {expected}


def test_the_collector_works_its_second_snapshot_on_the_loop(
        loop_thread: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real collector, over a real socket: its first snapshot (size not
    known yet) on its own thread, the next on the running loop."""
    import socket
    import struct

    from peeps import _collector
    from peeps._snapshot import collect_steps
    from peeps.types import decode_body, encode_frame

    where: list[tuple[int, int]] = []

    def recording() -> Steps[peeps.types.GraphSnapshot]:
        steps = collect_steps()
        while True:
            where.append((snapshot[0], threading.get_ident()))
            try:
                marker = next(steps)
            except StopIteration as stop:
                graph: peeps.types.GraphSnapshot = stop.value
                return graph
            yield marker

    monkeypatch.setattr(_collector, "collect_steps", recording)
    snapshot = [0]
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    collector = _collector.Collector(listener.getsockname())
    collector.start()
    try:
        conn, _ = listener.accept()
        conn.settimeout(10)

        def read_frame() -> tuple[int, dict[str, Any]]:
            def exact(n: int) -> bytes:
                buf = b""
                while len(buf) < n:
                    chunk = conn.recv(n - len(buf))
                    assert chunk, "the collector hung up"
                    buf += chunk
                return buf

            (length,) = struct.unpack(">I", exact(4))
            return 4 + length, decode_body(exact(length))

        assert read_frame()[1]["type"] == "hello"
        replies = []
        for snapshot_id in (1, 2, 3):
            snapshot[0] = snapshot_id
            conn.sendall(encode_frame({"type": "snapshot_request", "snapshot_id": snapshot_id,
                                       "timeout_ms": 5000}))
            size, reply = read_frame()
            assert reply["type"] == "graph_reply" and reply["snapshot_id"] == snapshot_id
            assert isinstance(reply["graph"], dict) and reply["graph"]["nodes"]
            replies.append((size, reply["graph"]))
        conn.close()
    finally:
        collector.stop()
        listener.close()
    first = {ident for n, ident in where if n == 1}
    second = {ident for n, ident in where if n == 2}
    assert first == {collector._thread.ident}
    assert second == {_loop_ident(loop_thread)}

    # Its thread's node reports what the previous snapshot cost, and where.
    def report(graph: Any) -> dict[str, Any]:
        [node] = [n for n in graph["nodes"]  # (an earlier test's may be shown as exited)
                  if n["kind"] == "thread" and n["label"] == "peeps-collector"
                  and "collector" in n["attrs"]]
        stats: dict[str, Any] = node["attrs"]["collector"]
        return stats

    after_first, after_second = report(replies[1][1]), report(replies[2][1])
    assert after_first["snapshots_answered"] == 1
    assert after_first["last_snapshot"]["loop_slices"] == 0  # worked on its thread
    assert after_first["last_snapshot"]["loop_ms"] == 0
    assert after_first["last_snapshot"]["bytes"] == replies[0][0]
    assert after_first["last_snapshot"]["nodes"] == len(replies[0][1]["nodes"])
    assert after_second["snapshots_answered"] == 2
    last = after_second["last_snapshot"]
    assert last["loop_slices"] >= 1 and last["loop_ms"] > 0  # worked on the loop
    assert last["bytes"] == replies[1][0]
    assert last["nodes"] == len(replies[1][1]["nodes"])
    assert last["reply_ms"] >= last["loop_ms"]
    assert after_second["loop_ms_total"] >= last["loop_ms"]
    assert after_second["dashboard"] == "{}:{}".format(*collector.address)


def test_the_loops_share_is_measured(loop_thread: asyncio.AbstractEventLoop) -> None:
    """``cost`` gets the loop's slices and their time; work done on the
    collector's thread costs the loop nothing."""
    on_loop = _loopside.LoopCost()
    where: list[int] = []
    _loopside.run_snapshot_steps(_recording_steps(where, 6, work_s=0.002), cost=on_loop)
    assert set(where) == {_loop_ident(loop_thread)}
    assert on_loop.slices >= 2  # ~1 ms slices of 2 ms steps
    assert on_loop.loop_ns >= 6 * 2_000_000  # the steps slept there

    here = _loopside.LoopCost()
    _loopside.run_snapshot_steps(_recording_steps(where, 3), nodes_hint=None, cost=here)
    assert here.slices == 0 and here.loop_ns == 0
