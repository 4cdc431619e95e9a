"""The thread sampler's quiet sleep: while no other thread runs, ticks are taken
without waking Python (``_speedups.quiet_sleep``), and still count as samples."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time
from collections.abc import Iterator

import pytest

import peeps
from library._threads_support import thread_node, wait_until
from peeps import _threads

speedups = pytest.importorskip("peeps._speedups")
if not hasattr(speedups, "quiet_sleep"):
    pytest.skip("the quiet sleep is Linux only", allow_module_level=True)

MS = 1_000_000
_FIXTURES = itertools.count()


@pytest.fixture
def parked() -> Iterator[list[threading.Thread]]:
    """Five threads blocked on a lock nobody releases until the test ends."""
    lock = threading.Lock()
    lock.acquire()

    def park() -> None:
        with lock:  # each passes the lock on as it leaves
            pass

    # Names of their own: a thread node of an earlier test's may linger.
    threads = [threading.Thread(target=park, name=f"t.parked-{next(_FIXTURES)}-{i}",
                                daemon=True) for i in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    try:
        yield threads
    finally:
        lock.release()
        for t in threads:
            t.join(5)


def test_quiet_sleep_cuts_a_quiet_stretch_into_ticks(parked: list[threading.Thread]) -> None:
    sunk: list[list[int]] = []
    count0 = speedups.quiet_count()
    t0 = time.monotonic_ns()
    ticks, woken = speedups.quiet_sleep(10 * MS, 4, 300 * MS, -1, 50_000, sunk.append)
    elapsed = time.monotonic_ns() - t0
    assert not woken
    assert sunk == [ticks]  # handed over before returning ...
    assert speedups.quiet_pending() == []  # ... and no longer in progress
    assert speedups.quiet_count() - count0 == len(ticks)
    # The whole stretch, at the full rate: one tick per 10 ms, sleeping 10, 20,
    # 40, 40 ... ms at a time.
    assert 300 * MS <= elapsed < 2000 * MS, elapsed
    assert 25 <= len(ticks) <= elapsed // (9 * MS), (len(ticks), elapsed)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert all(0 < gap < 25 * MS for gap in gaps), gaps
    assert t0 < ticks[0] and ticks[-1] <= t0 + elapsed


def test_quiet_sleep_ends_when_another_thread_runs() -> None:
    def busy() -> None:
        time.sleep(0.1)
        data = b"x" * (1 << 20)
        deadline = time.thread_time() + 0.05
        while time.thread_time() < deadline:
            hashlib.sha256(data).digest()

    worker = threading.Thread(target=busy, daemon=True)
    t0 = time.monotonic_ns()
    worker.start()
    ticks, woken = speedups.quiet_sleep(10 * MS, 4, 5000 * MS, -1, 50_000, None)
    elapsed = time.monotonic_ns() - t0
    worker.join(5)
    assert not woken
    # Noticed at the first look after the worker started burning CPU (at
    # ~100 ms; looks are at most 40 ms apart), far from the 5 s stretch.
    assert elapsed < 1500 * MS, elapsed
    assert all(t < t0 + 100 * MS + 45 * MS for t in ticks[:-1]), (
        [(t - t0) // MS for t in ticks])


def test_quiet_sleep_returns_at_once_when_woken() -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        t0 = time.monotonic()
        assert speedups.quiet_sleep(10 * MS, 4, 5000 * MS, r, 50_000, None) == ([], True)
        assert time.monotonic() - t0 < 0.5
    finally:
        os.close(r)
        os.close(w)


def test_quiet_pending_shows_a_stretch_in_progress(parked: list[threading.Thread]) -> None:
    seen: list[list[int]] = []

    def peek() -> None:
        time.sleep(0.12)  # after looks at ~10, 30, 70 and 110 ms
        seen.append(speedups.quiet_pending())

    for _ in range(5):  # a thread left running by another test ends a stretch early
        seen.clear()
        peeker = threading.Thread(target=peek)
        t0 = time.monotonic_ns()
        peeker.start()
        ticks, _ = speedups.quiet_sleep(10 * MS, 4, 5000 * MS, -1, 50_000, None)
        peeker.join(5)
        if seen and seen[0]:
            break
    assert seen and seen[0], seen
    # What a snapshot would have seen then: the start of what was handed over.
    assert seen[0] == ticks[:len(seen[0])]
    assert all(t0 < t <= t0 + 150 * MS for t in seen[0])


@pytest.fixture
def quiet_sampler() -> Iterator[_threads.Sampler]:
    started = peeps.start_sampler(mode="thread", hz=100, window_s=1.0, budget=1.0)
    assert started is not None and started.quiet_sleep is not None
    try:
        yield started
    finally:
        peeps.stop_sampler()


def test_a_quiet_process_is_sampled_at_full_rate_without_real_ticks(
        parked: list[threading.Thread], quiet_sampler: _threads.Sampler) -> None:
    wait_until(lambda: quiet_sampler.ticks >= 2)
    stats0 = quiet_sampler.stats()
    time.sleep(1.5)  # nothing runs but the sampler
    graph = peeps.collect_graph()
    stats = quiet_sampler.stats()
    quiet = stats["quiet_ticks"] - stats0["quiet_ticks"]
    real = stats["thread_ticks"] - stats0["thread_ticks"]
    # ~150 ticks' worth at 100 Hz, nearly all of them quiet: a real tick at
    # least once a second, and when something runs (this thread, now and then).
    assert quiet >= 100, (quiet, real)
    assert real <= 8, (quiet, real)
    # The parked threads' samples go on through the quiet ticks, those of the
    # quiet sleep in progress included, and their verdicts stand.
    node = thread_node(graph, parked[0].name)
    assert node is not None
    attrs = node["attrs"]
    assert attrs["verdict"] == "blocked", {k: attrs[k] for k in ("samples", "cpu_share")}
    # Each time another thread runs, the ticks of the sleep that saw it (up to
    # three) are not taken: ~100 ticks in the window, fewer in a busier process.
    assert attrs["samples"] >= 40, attrs
    assert attrs["cpu_share"] == 0.0, attrs


def test_a_busy_process_gets_real_ticks(quiet_sampler: _threads.Sampler) -> None:
    stop = threading.Event()

    def busy() -> None:  # CPU without the GIL (hashlib releases it for big data)
        data = b"x" * (1 << 20)
        while not stop.is_set():
            hashlib.sha256(data).digest()

    worker = threading.Thread(target=busy, name="t.hasher", daemon=True)
    wait_until(lambda: quiet_sampler.ticks >= 2)
    worker.start()
    try:
        time.sleep(0.2)
        stats0 = quiet_sampler.stats()
        time.sleep(1.0)
        stats = quiet_sampler.stats()
    finally:
        stop.set()
        worker.join(5)
    quiet = stats["quiet_ticks"] - stats0["quiet_ticks"]
    real = stats["thread_ticks"] - stats0["thread_ticks"]
    # A quiet tick means the hasher got no CPU for a whole interval, which only
    # happens when the machine is loaded (other suites, other tenants).
    assert quiet <= real // 10, (quiet, real)
    assert real >= 50, (quiet, real)


def test_pending_quiet_ticks_carry_a_parked_threads_samples_and_cpu(
        parked: list[threading.Thread], monkeypatch: pytest.MonkeyPatch) -> None:
    """What a snapshot taken during a quiet sleep makes of a parked thread: its
    last real sample and CPU reading stand at every quiet tick so far."""
    sampler = _threads.Sampler(mode="thread", hz=100, window_s=1.0)
    sampler.tick()
    entity = _threads._BY_IDENT[parked[0].ident or 0]
    real = _threads.REAL_TICK_NS[0]
    assert entity.last_seen_ns == real and len(entity.cpu) == 1
    entity.top_since = entity.region_since = real - 2_000 * MS  # parked for long
    pending = [real + i * 10 * MS for i in range(1, 91)]
    monkeypatch.setattr(_threads, "_quiet_pending", lambda: pending)
    stats = entity.analyse(pending[-1], 1_000 * MS, None)
    assert stats["samples"] == 91, stats  # the real tick and 90 quiet ones
    assert stats["cpu_share"] == 0.0, stats
    assert stats["verdict"] == "blocked", stats
    # The same once the sleep has handed its ticks over, before the real tick
    # that follows (another thread can take the GIL in between).
    saved = list(_threads.TICK_TIMES)
    monkeypatch.setattr(_threads, "_quiet_pending", list)
    _threads._add_quiet_ticks(pending)
    try:
        stats = entity.analyse(pending[-1], 1_000 * MS, None)
    finally:
        _threads.TICK_TIMES.clear()
        _threads.TICK_TIMES.extend(saved)
        _threads.QUIET_UNTIL_NS[0] = 0
    assert (stats["samples"], stats["cpu_share"], stats["verdict"]) == (91, 0.0, "blocked"), stats
    # A thread not seen at the last real tick (gone, say) is not carried on.
    entity.last_seen_ns = real - 1
    assert entity.analyse(pending[-1], 1_000 * MS, None)["samples"] <= 1


def test_a_forked_child_has_none_of_its_parents_quiet_ticks(
        parked: list[threading.Thread]) -> None:
    result: list[tuple[list[int], bool]] = []

    def sleep_once() -> None:
        result.append(speedups.quiet_sleep(10 * MS, 4, 5000 * MS, -1, 50_000, None))

    for _ in range(5):  # a thread left running by another test ends a sleep early
        result.clear()
        sleeper = threading.Thread(target=sleep_once)
        sleeper.start()
        time.sleep(0.15)  # (polling would end the sleep: this thread would run)
        before = speedups.quiet_pending()
        if before:
            break
        sleeper.join(10)
    assert before, "no quiet sleep in progress to fork under"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its copy of the sleeping thread's state is gone
        try:
            os.write(w, repr(speedups.quiet_pending()).encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r) as child:
            seen = child.read()
    finally:
        os.waitpid(pid, 0)
    sleeper.join(10)  # the fork ran: the sleep ends at its next look
    assert seen == "[]", seen
    assert result and result[0][0][:len(before)] == before, (result, before)


def test_a_hold_no_tick_has_seen_starts_after_the_last_quiet_tick(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot during a quiet sleep dates a thread-lock hold that no tick has
    seen yet from the sleep's last quiet tick: nothing ran (so nothing was
    acquired) before it; the coarse clock alone would date it up to the
    stretch's length too early."""
    lock = peeps.ThreadLock(name="t.quiet-hold")
    now = time.monotonic_ns()
    coarse, until = _threads.COARSE_NOW[0], _threads.QUIET_UNTIL_NS[0]
    _threads.COARSE_NOW[0] = now - 3_000 * MS  # the last real tick
    _threads.QUIET_UNTIL_NS[0] = 0
    try:
        monkeypatch.setattr(_threads, "_quiet_pending",
                            lambda: [now - 2_000 * MS, now - 10 * MS])
        with lock:
            assert lock._since_now() == now - 10 * MS  # type: ignore[attr-defined]
        monkeypatch.setattr(_threads, "_quiet_pending", list)  # no quiet sleep in progress
        with lock:
            assert lock._since_now() == now - 3_000 * MS  # type: ignore[attr-defined]
        # Handed over, and no real tick since: dated from the last of them.
        _threads.QUIET_UNTIL_NS[0] = now - 20 * MS
        with lock:
            assert lock._since_now() == now - 20 * MS  # type: ignore[attr-defined]
    finally:
        _threads.COARSE_NOW[0], _threads.QUIET_UNTIL_NS[0] = coarse, until


def test_a_failing_quiet_sleep_leaves_the_sampler_ticking_in_python(
        parked: list[threading.Thread], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> tuple[list[int], bool]:
        raise MemoryError("no room for the ticks")

    monkeypatch.setattr(_threads, "_quiet_sleep", broken)
    sampler = peeps.start_sampler(mode="thread", hz=100, window_s=1.0, budget=1.0)
    assert sampler is not None and sampler.quiet_sleep is broken
    try:
        wait_until(lambda: sampler.quiet_sleep is None and sampler.thread_ticks >= 20)
        assert sampler.thread_obj is not None and sampler.thread_obj.is_alive()
    finally:
        peeps.stop_sampler()
    assert "quiet sleep failed" in caplog.text
