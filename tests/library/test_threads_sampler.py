"""The thread sampler on real threads: verdicts, CPU, vanished threads, its own
cost and back-off, shutdown, and the SIGPROF mode's documented limit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import select
import signal
import socket
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any, Literal

import pytest

import peeps
from library._threads_support import (
    thread_node,
    verdict_of,
    voluntary_switches,
    wait_for_graph,
    wait_until,
)
from peeps import _deadline, _registry, _threads
from peeps._config import STATE

HERE = __file__


@pytest.fixture
def sampler() -> Iterator[_threads.Sampler]:
    started = peeps.start_sampler(mode="thread", hz=100, window_s=0.5)
    assert started is not None
    try:
        yield started
    finally:
        peeps.stop_sampler()


def _event_names(thread_name: str) -> set[str]:
    return {e["name"] for e in peeps.collect_graph()["events"]
            if e["attrs"].get("thread") == thread_name}


class Spinner:
    """A thread in a tight pure-Python loop until stopped."""

    def __init__(self, name: str = "t.spinner") -> None:
        self.stop = False
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def run(self) -> None:
        n = 0
        while not self.stop:
            n += 1  # spin line

    def __enter__(self) -> Spinner:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop = True
        self.thread.join(5)


def test_blocked_and_spinning_threads_get_their_verdicts(sampler: _threads.Sampler) -> None:
    release = threading.Event()
    blocker = threading.Thread(target=release.wait, name="t.blocker", daemon=True)
    blocker.start()
    try:
        with Spinner():
            graph = wait_for_graph(lambda g: verdict_of(g, "t.spinner") == "spinning"
                                   and verdict_of(g, "t.blocker") == "blocked")
            # The sampler announces it once the region has settled for a window.
            wait_until(lambda: "thread.verdict.spinning" in _event_names("t.spinner"))
    finally:
        release.set()
        blocker.join(5)
    spin = thread_node(graph, "t.spinner")
    assert spin is not None
    attrs = spin["attrs"]
    busy = attrs["runnable_share"] if attrs["runnable_share"] is not None else attrs["cpu_share"]
    assert busy >= _threads.HIGH_CPU_SHARE
    assert attrs["dominant_frame"].startswith(f"{HERE}:")
    assert attrs["dominant_frame"].endswith(" in run")
    assert attrs["dominant_frames"][0]["share"] > 0.5
    assert attrs["verdict_ns"] > 0
    assert attrs["native_id"] == attrs["native_id"] and attrs["ident"]
    assert attrs["stack"][-1].endswith(" in run")
    # ... and that it stopped, when the thread ended.
    wait_until(lambda: "thread.verdict.cleared" in _event_names("t.spinner"))
    block = thread_node(graph, "t.blocker")
    assert block is not None
    assert block["attrs"]["cpu_share"] <= _threads.LOW_CPU_SHARE
    # Blocked inside threading.Event.wait: the innermost sampled frame is the
    # standard library, the dominant frame is the nearest frame of the program.
    assert "threading.py" in block["attrs"]["top_frames"][0]["frame"]
    assert block["attrs"]["daemon"] is True


def test_pool_workers_waiting_for_work_and_peeps_threads_are_idle(
        sampler: _threads.Sampler) -> None:
    with concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="t.pool") as pool:
        pool.submit(time.sleep, 0).result()
        # The sampler's own thread is in the graph from its first tick, which
        # a busy machine can delay past the pool worker's first appearance.
        graph = wait_for_graph(lambda g: thread_node(g, "peeps-sampler") is not None and any(
            n["kind"] == "thread" and n["label"].startswith("t.pool")
            and n["attrs"]["verdict"] == "idle" for n in g["nodes"]))
    assert verdict_of(graph, "peeps-sampler") == "idle"
    sampler_node = thread_node(graph, "peeps-sampler")
    assert sampler_node is not None and sampler_node["attrs"]["sampler"]["mode"] == "thread"


def test_a_thread_that_ends_leaves_the_graph(sampler: _threads.Sampler) -> None:
    done = threading.Event()
    worker = threading.Thread(target=done.wait, name="t.short_lived")
    worker.start()
    wait_for_graph(lambda g: thread_node(g, "t.short_lived") is not None)
    done.set()
    worker.join()
    wait_for_graph(lambda g: thread_node(g, "t.short_lived") is None)
    assert not any(e.name == "t.short_lived" for e in _threads._BY_IDENT.values())


def test_a_snapshot_reads_the_thread_frames_once_and_keeps_none_of_them(
        sampler: _threads.Sampler, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sys._current_frames()`` walks every thread: read once per snapshot,
    not once per thread node.  And the frames it returns (the snapshot's own
    among them) must not outlive the snapshot, or a thread's locals would stay
    alive until a garbage collection."""
    class Marker:
        pass

    release = threading.Event()
    started = threading.Event()
    marker_ref: list[Any] = []

    def holder() -> None:
        local = Marker()
        marker_ref.append(weakref.ref(local))
        started.set()
        release.wait()

    threads = [threading.Thread(target=release.wait, name=f"t.frames{i}", daemon=True)
               for i in range(4)]
    threads.append(threading.Thread(target=holder, name="t.holder", daemon=True))
    for t in threads:
        t.start()
    assert started.wait(5)
    wait_for_graph(lambda g: all(thread_node(g, t.name) is not None for t in threads))
    calls: list[int] = []
    real = sys._current_frames
    me = threading.get_ident()

    def counting() -> dict[int, Any]:
        # The running sampler reads the frames too, from its own thread: only
        # the snapshot's reads (this thread's) are counted.
        if threading.get_ident() == me:
            calls.append(1)
        return real()

    gc_was = gc.isenabled()
    gc.disable()  # a cycle would then keep the holder's frame, and its marker
    try:
        monkeypatch.setattr(sys, "_current_frames", counting)
        graph = peeps.collect_graph()
        monkeypatch.undo()
        assert all(thread_node(graph, t.name) is not None for t in threads)
        assert len(calls) == 1
        release.set()
        for t in threads:
            t.join(5)
        # The sampler's own read may hold the holder's frame until its tick
        # ends; a frame the snapshot kept would stay (the collector is off).
        deadline = time.monotonic() + 2
        while marker_ref[0]() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert marker_ref[0]() is None
    finally:
        release.set()
        if gc_was:
            gc.enable()


def test_cpu_clock_matches_pthread_getcpuclockid() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the clock id is only derived from the kernel tid on Linux")
    me = threading.current_thread()
    assert me.ident is not None
    assert _threads.cpu_clock_id(me.ident, me.native_id) == time.pthread_getcpuclockid(me.ident)
    # An exited thread's clock fails cleanly (EINVAL) instead of reading freed
    # memory -- unless the kernel already gave its tid to another thread of this
    # process, whose clock is then read: still safe, and the sampler forgets
    # entities of exited threads before that matters.
    gone = threading.Thread(target=lambda: None)
    gone.start()
    gone.join()
    assert gone.ident is not None and gone.native_id is not None
    clock = _threads.cpu_clock_id(gone.ident, gone.native_id)
    _threads._read_cpu_ns(clock)  # None, or a reused tid's clock: never a crash
    assert _threads._read_cpu_ns(_threads.cpu_clock_id(0, 2**22 + 12345)) is None


def test_a_thread_without_a_kernel_id_gets_no_clock_and_no_pthread_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread the sampler meets after it left ``threading._active`` has no
    ``native_id``; ``pthread_getcpuclockid`` on its (possibly freed) handle
    segfaulted CPython 3.12 about once in 25 runs of bench_threads."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux derives clocks from kernel tids only")

    def forbidden(ident: int) -> int:
        raise AssertionError("pthread_getcpuclockid called with a thread handle")

    monkeypatch.setattr(time, "pthread_getcpuclockid", forbidden)
    gone = threading.Thread(target=lambda: None)
    gone.start()
    gone.join()
    assert gone.ident is not None
    assert _threads.cpu_clock_id(gone.ident, None) is None


def test_sampler_measures_its_cost_and_backs_off_over_budget() -> None:
    # A budget no sampler can meet: it must halve its rate and say so once.
    sampler = peeps.start_sampler(mode="thread", hz=200, budget=1e-9)
    assert sampler is not None
    try:
        wait_until(lambda: sampler.backoffs >= 1, timeout=5)
        stats = peeps.sampler_stats()
        assert stats is not None
        assert stats["effective_hz"] < 200
        assert stats["ticks"] > 0 and stats["cost_ns"] > 0
        assert 0 < stats["cpu_share"] < 0.5
    finally:
        peeps.stop_sampler()


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="needs thread CPU clocks")
def test_sampler_counts_its_threads_wake_ups_against_its_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The sampler thread's CPU between its ticks (waking from each sleep) is
    # the sampler's cost too: stats and the budget count it beside the ticks.
    budgeted: list[int] = []
    account = _threads.Sampler._account

    def spy(self: _threads.Sampler, cost_ns: int) -> None:
        budgeted.append(cost_ns)
        account(self, cost_ns)

    monkeypatch.setattr(_threads.Sampler, "_account", spy)
    # Every tick a real one: a quiet sleep (test_a_quiet_process_...) would
    # count its CPU only at the next real tick, maybe after this second.
    monkeypatch.setattr(_threads, "_quiet_sleep", None)
    release = threading.Event()
    parked = [threading.Thread(target=release.wait, daemon=True) for _ in range(5)]
    for t in parked:
        t.start()
    sampler = peeps.start_sampler(mode="thread", hz=100, budget=1.0)
    assert sampler is not None and sampler.thread_obj is not None
    try:
        wait_until(lambda: sampler.ticks >= 3, timeout=5)
        assert sampler.thread_obj.ident is not None
        clock = time.pthread_getcpuclockid(sampler.thread_obj.ident)
        with sampler._busy:  # between two ticks
            cost0, wake0, cpu0 = sampler.cost_ns, sampler.wake_ns, time.clock_gettime_ns(clock)
            n0 = len(budgeted)
        time.sleep(1.0)
        with sampler._busy:
            cost, wake = sampler.cost_ns - cost0, sampler.wake_ns - wake0
            budget_cost = sum(budgeted[n0:])
        thread_cpu = time.clock_gettime_ns(clock) - cpu0
        stats = peeps.sampler_stats()
    finally:
        peeps.stop_sampler()
        release.set()
    assert stats is not None and stats["wake_ns"] >= wake > 0
    # Together they are the thread's whole CPU clock over the same second
    # (less what it spent after its last tick), the bodies alone less.
    assert cost < thread_cpu, (cost, wake, thread_cpu)
    assert 0.8 * thread_cpu <= cost + wake <= 1.05 * thread_cpu, (cost, wake, thread_cpu)
    assert budget_cost == cost + wake, (budget_cost, cost, wake)


def test_shutdown_joins_the_sampler_and_removes_the_hook() -> None:
    peeps.init("t-threads", sampler="thread", sampler_hz=50)
    sampler = _threads.current_sampler()
    assert sampler is not None and sampler.thread_obj is not None
    assert _registry.thread_waiter_hook is not None
    peeps.shutdown()
    assert not sampler.thread_obj.is_alive()
    assert _threads.current_sampler() is None
    assert _registry.thread_waiter_hook is None


def test_sampler_off_and_disabled_mode_start_nothing() -> None:
    assert peeps.start_sampler(mode="off") is None
    STATE.enabled = False
    try:
        assert peeps.start_sampler(mode="thread") is None
        assert _threads.current_thread_entity() is None or True
    finally:
        STATE.enabled = True
    assert not [t for t in threading.enumerate() if t.name == "peeps-sampler"]


def test_bad_sampler_settings_raise_and_bad_env_is_ignored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError):
        peeps.start_sampler(mode="nope")  # type: ignore[arg-type]
    monkeypatch.setenv("PEEPS_SAMPLER_HZ", "fast")
    monkeypatch.setenv("PEEPS_SAMPLER", "bogus")
    sampler = peeps.start_sampler()
    try:
        assert sampler is not None
        assert (sampler.mode, sampler.hz) == ("thread", _threads.DEFAULT_HZ)
    finally:
        peeps.stop_sampler()


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_sigprof_mode_sees_almost_nothing_while_the_main_thread_sleeps() -> None:
    """The documented limit: Python runs a SIGPROF handler only on the main
    thread between bytecodes.  With the main thread in time.sleep and another
    thread spinning, the kernel's ticks mostly coalesce unseen."""
    previous = signal.getsignal(signal.SIGPROF)
    with Spinner("t.sigprof_spinner") as spinner:
        time.sleep(0.05)
        counts = {}
        modes: tuple[Literal["sigprof"], Literal["thread"]] = ("sigprof", "thread")
        for mode in modes:
            sampler = peeps.start_sampler(mode=mode, hz=100, window_s=5)
            assert sampler is not None and sampler.mode == mode
            time.sleep(1.0)  # the main thread sits in a C call for the whole second
            peeps.stop_sampler()
            entity = _threads._BY_IDENT.get(spinner.thread.ident or 0)
            counts[mode] = sampler.ticks
            assert entity is not None
        # Contrast: a busy main thread does get the handler run.
        sampler = peeps.start_sampler(mode="sigprof", hz=100, window_s=5)
        assert sampler is not None
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            pass
        peeps.stop_sampler()
        busy_main_ticks = sampler.ticks
    print("samples in 1 s at 100 Hz:", counts, "busy main:", busy_main_ticks)
    assert counts["thread"] >= 10, counts
    assert counts["sigprof"] <= max(2, counts["thread"] * 0.1), counts
    assert busy_main_ticks >= 3, busy_main_ticks
    # The timer is cleared and the handler never left at SIG_DFL (a stray
    # SIGPROF would kill the process).
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGPROF) in (previous, signal.SIG_IGN)
    assert signal.getsignal(signal.SIGPROF) != signal.SIG_DFL


def test_a_failing_sampler_stops_itself_and_never_raises_into_the_host(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(self: _threads.Sampler) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(_threads.Sampler, "_sample_all", broken)
    _registry.REGISTRY._failed_parts.discard("thread sampler")  # logged once per process
    sampler = peeps.start_sampler(mode="thread", hz=100)
    assert sampler is not None and sampler.thread_obj is not None
    sampler.thread_obj.join(5)
    assert not sampler.thread_obj.is_alive() and not sampler.running
    assert _threads.COARSE_NOW[0] == 0
    assert "thread sampler failed" in caplog.text
    peeps.stop_sampler()
    # Thread locks keep working without it.
    lock = peeps.ThreadLock("t.after_failure")
    with lock:
        assert lock.locked()


def test_a_parked_thread_is_sampled_every_tick_without_new_samples_being_built() -> None:
    """The parked fast path writes no sample: the thread's one run of its
    sample lasts, and the window still counts every tick."""
    release = threading.Event()
    parked = threading.Thread(target=release.wait, name="t.parked")
    parked.start()
    sampler = _threads.Sampler(mode="thread", hz=100, window_s=1.0, budget=1.0)
    try:
        for _ in range(10):
            sampler.tick()
        assert parked.ident is not None
        entity = _threads.entity_for_ident(parked.ident, create=False)
        assert entity is not None
        assert len(entity.runs) == 1
        assert entity.last_seen_ns == _threads.TICK_TIMES[-1]
        stats = entity.analyse(time.monotonic_ns(), 10**9, None)
        assert stats["samples"] == 10
        assert stats["top_frames"][0]["share"] == 1.0
        assert "test_threads_sampler.py" not in stats["top_frames"][0]["frame"]
    finally:
        release.set()
        parked.join(5)


def test_a_parked_thread_past_its_reread_is_checked_by_its_cpu_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every PARKED_REREAD_NS a still, parked thread gets a real CPU reading: its
    CPU clock (one system call) while that has not moved, the full /proc
    schedstat read (three, and a path walk) once it has."""
    if not _threads._SCHEDSTAT:
        pytest.skip("no /proc schedstat here: every read is the CPU clock already")
    release = threading.Event()
    parked = threading.Thread(target=release.wait, name="t.parked-reread")
    parked.start()
    assert parked.native_id is not None
    reads: list[int] = []
    real_read = _threads.read_schedstat

    def counting_read(native_id: int) -> tuple[int, int] | None:
        if native_id == parked.native_id:
            reads.append(native_id)
        return real_read(native_id)

    monkeypatch.setattr(_threads, "read_schedstat", counting_read)
    # A CPU reading due at every tick, and a real one past due at every tick.
    monkeypatch.setattr(_threads, "CPU_INTERVAL_NS", 0)
    monkeypatch.setattr(_threads, "PARKED_REREAD_NS", 0)
    sampler = _threads.Sampler(mode="thread", hz=100, window_s=1.0, budget=1.0)
    try:
        for _ in range(3):  # first sight, then two equal readings: "still"
            sampler.tick()
        assert parked.ident is not None
        entity = _threads.entity_for_ident(parked.ident, create=False)
        assert entity is not None and entity.cpu_still and entity.last_cpu is not None
        assert entity.last_cpu[0] == _threads._read_cpu_ns(time.pthread_getcpuclockid(
            parked.ident))
        before, readings = len(reads), len(entity.cpu)
        for _ in range(5):
            sampler.tick()
        assert len(reads) == before  # the clock alone, five times
        assert len(entity.cpu) == readings + 5
        assert entity.cpu_real_read_mono_ns == entity.cpu[-1][0] == entity.last_seen_ns

        # Its clock moved: the full read again.
        monkeypatch.setattr(_threads, "_read_cpu_ns", lambda clock_id: -1)
        sampler.tick()
        assert len(reads) == before + 1
    finally:
        release.set()
        parked.join(5)


def test_a_running_event_loop_ticks_the_sampler_and_a_stall_hands_it_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a running loop the sampler ticks from the loop (its own thread sleeps
    on a kernel deadline the ticks re-arm, or wakes at LOOP_DRIVEN_WAKE_S where
    there is none), other threads still get their verdicts, the loop's thread is
    "running its loop", and when the loop stalls the sampler thread takes over at
    full rate and sees the stall."""
    # The sampler thread's wake-ups on a passed deadline: a loop tick late by
    # TAKEOVER_TICKS intervals, which a busy machine makes now and then.
    real_select = select.select
    deadline_wakes = [0]

    def counting_select(rlist: Any, *args: Any) -> Any:
        ready = real_select(rlist, *args)
        if threading.current_thread().name == "peeps-sampler" and rlist and rlist[0] in ready[0]:
            deadline_wakes[0] += 1
        return ready

    monkeypatch.setattr(select, "select", counting_select)
    release = threading.Event()
    blocker = threading.Thread(target=release.wait, name="t.loop-blocker", daemon=True)
    blocker.start()

    async def main() -> tuple[dict[str, int], dict[str, int], dict[str, object]]:
        started = peeps.start_sampler(mode="thread", hz=100, window_s=0.5)
        assert started is not None
        await asyncio.sleep(0.1)
        assert started.thread_obj is not None
        switches0 = voluntary_switches(started.thread_obj)
        await asyncio.sleep(0.9)
        healthy = {k: started.stats()[k] for k in ("loop_ticks", "thread_ticks", "quiet_ticks")}
        healthy["woke"] = voluntary_switches(started.thread_obj) - switches0
        healthy["deadline_wakes"] = deadline_wakes[0]
        graph = peeps.collect_graph()
        time.sleep(0.6)  # the loop stalls: nothing ticks it
        stalled = {k: started.stats()[k] for k in ("loop_ticks", "thread_ticks", "quiet_ticks")}
        loop_thread = thread_node(graph, threading.current_thread().name)
        assert loop_thread is not None
        return healthy, stalled, {"graph": graph, "loop_thread": loop_thread}

    try:
        healthy, stalled, seen = asyncio.run(main())
    finally:
        peeps.stop_sampler()
        release.set()
        blocker.join(5)
    # About 100 loop ticks in the healthy second; the thread woke ~10 times and ticked none.
    assert healthy["loop_ticks"] >= 50, healthy
    assert healthy["thread_ticks"] <= 3, healthy
    if _deadline.available():  # asleep on the deadline, not waking at 10 Hz
        # Polling at LOOP_DRIVEN_WAKE_S would be ~9 wake-ups with no tick and
        # no deadline passed.  A loop tick late past the deadline (this VM's
        # host takes CPU time) wakes the thread, maybe for a tick, and waiting
        # for the GIL then is a voluntary switch or two of its own.
        late = healthy["thread_ticks"] + healthy["deadline_wakes"]
        assert healthy["woke"] <= 3 + 3 * late, healthy
    # During the 0.6 s stall the loop ticked nothing and the thread took over:
    # real ticks, or quiet ones while nothing ran (the loop sleeps; ~57 at the
    # full rate, fewer when another test's leftover thread wakes now and then,
    # each wake-up ending a quiet sleep without its last few ticks).
    assert stalled["loop_ticks"] == healthy["loop_ticks"], (healthy, stalled)
    sampled = (stalled["thread_ticks"] + stalled["quiet_ticks"]
               - healthy["thread_ticks"] - healthy["quiet_ticks"])
    assert sampled >= 15, (healthy, stalled)
    graph = seen["graph"]
    assert isinstance(graph, dict)
    assert verdict_of(graph, "t.loop-blocker") == "blocked"
    loop_thread = seen["loop_thread"]
    assert isinstance(loop_thread, dict)
    attrs = loop_thread["attrs"]
    assert attrs["verdict"] in ("running", "idle"), attrs
    assert attrs["samples"] >= 25
    assert "_run_once" in attrs["top_frames"][0]["frame"]


def test_loop_ticks_repeat_the_loops_sample_and_a_new_run_derives_it_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop-driven tick records its own thread without walking its frames: the
    sample (scheduler step, program frame) lasts tick after tick, derived again
    once LOOP_SAMPLE_REFRESH_NS is up or when a loop starts running, so a loop
    run from another function gets that function as its region."""
    refresh_ns = _threads.LOOP_SAMPLE_REFRESH_NS
    me = threading.get_ident()
    walks: list[int] = []  # when a tick derived the loop's sample from the frames
    real_record = _threads.ThreadEntity.record

    def record(self: Any, now: int, frame: Any, cpu: Any) -> None:
        if self.ident == me and frame.f_code is _threads._LOOP_STEP_CODE:
            walks.append(now)
        real_record(self, now, frame, cpu)

    monkeypatch.setattr(_threads.ThreadEntity, "record", record)

    async def tick_a_while() -> None:
        await asyncio.sleep(0.4)  # idle and alone: ~25 ticks a second (MAX_QUIET_PACE)

    def run_from_first() -> None:
        asyncio.run(tick_a_while())

    def run_from_second() -> None:
        asyncio.run(tick_a_while())

    def loop_runs(since: int, until: int) -> list[tuple[Any, ...]]:
        entity = _threads._BY_IDENT[me]
        return [run for run in entity.window_runs(since)
                if run[0] < until and run[3][0] is _threads._LOOP_STEP_CODE]

    started = peeps.start_sampler(mode="thread", hz=100, window_s=2.0)
    assert started is not None
    try:
        t0 = time.monotonic_ns()
        run_from_first()
        t1 = time.monotonic_ns()
        run_from_second()
        t2 = time.monotonic_ns()
    finally:
        peeps.stop_sampler()
    first, second = loop_runs(t0, t1), loop_runs(t1, t2)
    assert refresh_ns >= 1_000_000_000  # both runs fit in one refresh interval
    ticks = [sum(run[2] for run in runs) for runs in (first, second)]
    assert ticks[0] >= 6 and ticks[1] >= 6, ticks
    # The frames were walked once per run of the loop, not every tick:
    # asyncio.run runs its loop three times (the main task, then shutting down
    # async generators and the default executor), plus maybe one sample by the
    # sampler thread before the loop ticked.
    for since, until in ((t0, t1), (t1, t2)):
        assert 1 <= len([t for t in walks if since <= t < until]) <= 4, walks
    for runs, runner in ((first, run_from_first), (second, run_from_second)):
        assert runs and all(run[3][2] is runner.__code__ for run in runs), [
            (run[3][1], run[3][2].co_name) for run in runs]


def test_peeps_sampler_loop_0_keeps_the_sampler_on_its_own_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEEPS_SAMPLER_LOOP", "0")

    async def main() -> dict[str, int]:
        started = peeps.start_sampler(mode="thread", hz=100, window_s=0.5)
        assert started is not None
        await asyncio.sleep(0.5)
        return {k: started.stats()[k] for k in ("loop_ticks", "thread_ticks", "quiet_ticks")}

    try:
        ticks = asyncio.run(main())
    finally:
        peeps.stop_sampler()
    assert ticks["loop_ticks"] == 0, ticks
    assert ticks["thread_ticks"] + ticks["quiet_ticks"] >= 20, ticks


def test_a_loop_without_a_python_scheduler_step_is_not_driven(
        sampler: _threads.Sampler) -> None:
    """uvloop & co. have no ``BaseEventLoop._run_once`` frame to record the loop's
    thread by, so they are left to the sampler thread."""

    class Foreign(asyncio.AbstractEventLoop):
        def call_soon(self, *args: object, **kwargs: object) -> asyncio.Handle:
            raise AssertionError("the sampler tried to tick from a foreign loop")

    sampler.drive_from(Foreign())  # type: ignore[abstract]  # only call_soon is ever reached
    assert sampler.loop_ticks == 0
    assert sampler._driver is None


def test_a_loop_alone_is_sampled_at_a_quarter_rate_idle_or_busy_and_another_thread_restores_it(
) -> None:
    """With only the loop's thread and peeps' own, a tick can only repeat the
    loop thread's sample, so the loop-driven ticks slow down to
    MAX_QUIET_PACE, whether the loop is idle or busy; any other thread brings
    back the full rate.  The budget is out of the way (its back-off has its
    own test)."""

    async def main() -> dict[str, tuple[int, int, int, float]]:
        started = peeps.start_sampler(mode="thread", hz=100, window_s=0.5, budget=1.0)
        assert started is not None
        # ticks, highest pace, pace at the end, ticks a second
        seen: dict[str, tuple[int, int, int, float]] = {}

        async def measure(label: str, seconds: float, busy: bool) -> None:
            await asyncio.sleep(0.2)  # settle into the state
            ticks0, t0 = started.loop_ticks, time.monotonic()
            paces = set()
            end = t0 + seconds
            while time.monotonic() < end:
                if busy:
                    spin = time.monotonic() + 0.002
                    while time.monotonic() < spin:
                        pass
                    await asyncio.sleep(0)
                else:
                    await asyncio.sleep(0.05)
                paces.add(started.pace)
            ticks = started.loop_ticks - ticks0
            seen[label] = (ticks, max(paces), started.pace, ticks / (time.monotonic() - t0))

        await measure("idle", 1.0, busy=False)
        await measure("busy", 1.0, busy=True)
        other = threading.Event()
        worker = threading.Thread(target=other.wait, name="t.other", daemon=True)
        worker.start()
        try:
            await measure("idle with another thread", 1.0, busy=False)
            await measure("busy with another thread", 1.0, busy=True)
        finally:
            other.set()
            worker.join(5)
        return seen

    try:
        seen = asyncio.run(main())
    finally:
        peeps.stop_sampler()
    for alone in ("idle", "busy"):  # ~25 ticks a second at the quiet pace
        ticks, highest, last, rate = seen[alone]
        assert highest == last == _threads.MAX_QUIET_PACE, seen
        assert 10 <= rate <= 50, seen
    for label in ("idle with another thread", "busy with another thread"):
        ticks, highest, last, rate = seen[label]
        assert highest == last == 1, seen  # never slowed down
        assert ticks >= 60, seen


def test_a_thread_that_starts_during_a_tick_is_not_forgotten(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick reads every thread's frame first and can lose the GIL midway; a
    thread that starts meanwhile (and makes its entity by waiting on a lock) is
    missing from those frames but alive.  It must keep its entity, or its waits
    and holds go to a node no snapshot describes (the cause of a flaky
    deadlock diagnosis that named one half of the cycle)."""
    ticker = _threads.Sampler(mode="thread", hz=100)
    ready = threading.Event()
    release = threading.Event()
    made: list[_threads.ThreadEntity | None] = []

    def newcomer() -> None:
        made.append(_threads.current_thread_entity())
        ready.set()
        release.wait()

    real = sys._current_frames
    worker = threading.Thread(target=newcomer, name="t.newcomer", daemon=True)

    def frames_read_before_it_started() -> dict[int, Any]:
        return {ident: f for ident, f in real().items() if ident != worker.ident}

    worker.start()
    try:
        assert ready.wait(5) and made and made[0] is not None
        monkeypatch.setattr(sys, "_current_frames", frames_read_before_it_started)
        ticker.tick()
        assert not made[0].exited
        assert _threads.current_thread_entity() is not None
    finally:
        release.set()
        worker.join(5)


def test_peeps_jitter_leaves_the_host_programs_seeded_random_sequence_alone() -> None:
    """The sampler jitters its ticks (on its thread and from an event loop),
    and the collector its reconnects, with generators of their own: a host
    that seeds ``random`` gets the same sequence whether or not they ran."""
    import random

    random.seed(1234)
    expected = [random.random() for _ in range(5)]
    sampler = peeps.start_sampler(mode="thread", hz=200)
    assert sampler is not None
    try:
        # Thread ticks between the seed and the draws.
        random.seed(1234)
        ticks = sampler.thread_ticks
        deadline = time.monotonic() + 10
        while sampler.thread_ticks < ticks + 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sampler.thread_ticks >= ticks + 5
        assert [random.random() for _ in range(5)] == expected

        # Ticks driven from a running loop.
        async def scenario() -> list[float]:
            random.seed(1234)
            ticks = sampler.loop_ticks
            while sampler.loop_ticks < ticks + 5 and time.monotonic() < deadline + 10:
                await asyncio.sleep(0.01)
            assert sampler.loop_ticks >= ticks + 5
            return [random.random() for _ in range(5)]

        assert asyncio.run(scenario()) == expected
    finally:
        peeps.stop_sampler()

    # The collector's reconnect jitter, likewise (nothing listens on the port).
    from peeps import _collector

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    random.seed(1234)
    collector = _collector.start_collector(f"127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 10
        while collector.state != "unreachable" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert collector.state == "unreachable"
        time.sleep(0.05)  # past the jittered wait's draw
        assert [random.random() for _ in range(5)] == expected
    finally:
        peeps.shutdown()
