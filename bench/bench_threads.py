"""Threads: the thread-lock fast path and the sampler's cost (pyperf).

    python bench/bench_threads.py -o bench/results/threads.json [--fast | --debug-single-value]
    python bench/bench_threads.py --sampler-cpu     # the sampler thread's whole CPU, measured live
                                                    # (--quick: two short windows)

Benchmark names are ``<operation>:<variant>`` (``plain`` is the baseline):

  thread_lock        acquire() + release() of an uncontended lock
  thread_lock_with   ``with lock: pass``
  thread_rlock       acquire() + release() of an uncontended RLock
      plain           threading.Lock / RLock
      peeps           peeps.ThreadLock / ThreadRLock as configured by default: lock-order
                      validation on, the thread sampler running (its ticks time
                      the holds, so the fast path reads no clock)
      peeps_nolockdep same with PEEPS_LOCKDEP=0
      peeps_nosampler lock-order validation on, no sampler (two clock reads per pair)
      disabled        peeps.ThreadLock with peeps switched off (it *is* threading.Lock)
  sampler_tick_N_threads:peeps   one sampler tick with N extra threads parked in
                                 Event.wait (per-tick CPU; x Hz = share of a core)

Timing uses the benchmark thread's CPU time (``time.thread_time``), not wall
time: on a shared machine wall time includes the slices other processes got,
which swamped these sub-microsecond figures in our runs.

``--sampler-cpu`` runs the real sampler thread at 100 Hz with 10 and 100 parked
threads and prints its CPU share: the sampler thread's whole CPU clock over wall
time (its ticks and the wake-ups between them), the median of five 1.5 s windows,
and their range; the note gives the ticks' bodies alone (what the sampler
counts for its budget).  The same sampler runs as it does by default (quiet
ticks while no other thread runs) and, in alternate windows, with every tick
a real one.
"""

from __future__ import annotations

import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pyperf

import peeps
from peeps import _lockdep, _threads
from peeps._config import STATE

_clock = time.thread_time


def _setup(variant: str) -> None:
    STATE.enabled = variant != "disabled"
    _lockdep.ENABLED = variant != "peeps_nolockdep"
    if variant in ("peeps", "peeps_nolockdep") and _threads.current_sampler() is None:
        peeps.start_sampler(mode="thread", hz=50)
    if variant not in ("peeps", "peeps_nolockdep"):
        peeps.stop_sampler()


def _lock_pair(variant: str, rlock: bool = False) -> Callable[[int], float]:
    def run(loops: int) -> float:
        _setup(variant)
        try:
            lock: Any
            if variant == "plain":
                lock = threading.RLock() if rlock else threading.Lock()
            else:
                lock = peeps.ThreadRLock("bench") if rlock else peeps.ThreadLock("bench")
            acquire, release = lock.acquire, lock.release
            t0 = _clock()
            for _ in range(loops):
                acquire()
                release()
            return _clock() - t0
        finally:
            STATE.enabled = True
            _lockdep.ENABLED = True

    return run


def _lock_with(variant: str) -> Callable[[int], float]:
    def run(loops: int) -> float:
        _setup(variant)
        try:
            lock: Any = threading.Lock() if variant == "plain" else peeps.ThreadLock("bench")
            t0 = _clock()
            for _ in range(loops):
                with lock:
                    pass
            return _clock() - t0
        finally:
            STATE.enabled = True
            _lockdep.ENABLED = True

    return run


class _Parked:
    """N threads parked in Event.wait, the common state of a pool."""

    def __init__(self, n: int) -> None:
        self.release = threading.Event()
        self.threads = [threading.Thread(target=self.release.wait, daemon=True,
                                         name=f"parked-{i}") for i in range(n)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.release.set()
        for t in self.threads:
            t.join()


def _sampler_tick(n_threads: int) -> Callable[[int], float]:
    def run(loops: int) -> float:
        parked = _Parked(n_threads)
        # budget=1: ticks back to back would otherwise trip the back-off warning.
        sampler = _threads.Sampler(mode="thread", hz=100, window_s=1.0, budget=1.0)
        try:
            tick = sampler.tick
            tick()  # first sight creates the entities: not the steady state
            t0 = _clock()
            for _ in range(loops):
                tick()
            return _clock() - t0
        finally:
            parked.stop()

    return run


def sampler_cpu(windows: int = 5, window_s: float = 1.5) -> None:
    """Print the live sampler thread's whole CPU share at 100 Hz with 10 and 100
    threads, as it runs (quiet ticks while nothing else runs, ``_speedups.quiet_sleep``)
    and with every tick a real one, in alternate windows of one sampler: the
    median of ``windows`` windows each, and their range (a single window moves
    by a fifth or more here: see docs/performance.md)."""
    for n in (10, 100):
        parked = _Parked(n)
        sampler = peeps.start_sampler(mode="thread", hz=100, window_s=1.0, budget=1.0)
        assert sampler is not None
        quiet_sleep = sampler.quiet_sleep
        time.sleep(0.5)  # past first sight of every thread
        assert sampler.thread_obj is not None and sampler.thread_obj.ident is not None
        # The whole thread's CPU clock: the ticks' bodies (what the sampler
        # counts for its budget) and its sleeps' wake-ups between them.
        clock = time.pthread_getcpuclockid(sampler.thread_obj.ident)
        variants = {"": quiet_sleep, ", every tick real": None} if quiet_sleep else {"": None}
        seen: dict[str, dict[str, list[float]]] = {
            v: {"share": [], "body": [], "per_tick": [], "body_per_tick": [], "ticks": [],
                "quiet": []} for v in variants}
        for _ in range(windows):
            for variant, sleep_fn in variants.items():
                sampler.quiet_sleep = sleep_fn
                time.sleep(0.1)  # a quiet sleep in progress ends at its next look
                stats0 = sampler.stats()
                cost0, ticks0, t0 = sampler.cost_ns, sampler.ticks, time.monotonic_ns()
                cpu0 = time.clock_gettime_ns(clock)
                time.sleep(window_s)
                cpu = time.clock_gettime_ns(clock) - cpu0
                cost, ticks = sampler.cost_ns - cost0, sampler.ticks - ticks0
                quiet = sampler.stats()["quiet_ticks"] - stats0["quiet_ticks"]
                elapsed = time.monotonic_ns() - t0
                got = seen[variant]
                got["share"].append(cpu / elapsed * 100)
                got["body"].append(cost / elapsed * 100)
                got["per_tick"].append(cpu / max(1, ticks) / 1000)
                got["body_per_tick"].append(cost / max(1, ticks) / 1000)
                got["ticks"].append(ticks / elapsed * 1e9)
                got["quiet"].append(quiet / elapsed * 1e9)
        sampler.quiet_sleep = quiet_sleep
        peeps.stop_sampler()
        parked.stop()
        med = statistics.median
        for variant, got in seen.items():
            shares = got["share"]
            quiet_note = (f"; {med(got['quiet']):.0f} quiet ticks/s"
                          if quiet_sleep and not variant else "")
            print(f"sampler at 100 Hz, {n + 2} threads{variant}: {med(shares):.2f}% of a core "
                  f"[{min(shares):.2f}–{max(shares):.2f} over {windows} windows of "
                  f"{window_s:g} s] ({med(got['per_tick']):.0f} µs per real tick in all, "
                  f"of which the ticks' bodies {med(got['body_per_tick']):.0f} µs, "
                  f"{med(got['body']):.2f}% of a core; {med(got['ticks']):.0f} real "
                  f"ticks/s{quiet_note})")


def main() -> None:
    if "--sampler-cpu" in sys.argv:
        if "--quick" in sys.argv:  # the smoke test's: that it runs, not a number
            sampler_cpu(windows=2, window_s=0.2)
        else:
            sampler_cpu()
        return
    runner = pyperf.Runner()
    runner.metadata["description"] = __doc__.splitlines()[0] if __doc__ else ""
    for variant in ("plain", "peeps", "peeps_nolockdep", "peeps_nosampler", "disabled"):
        runner.bench_time_func(f"thread_lock:{variant}", _lock_pair(variant))
    for variant in ("plain", "peeps", "peeps_nolockdep", "peeps_nosampler"):
        runner.bench_time_func(f"thread_lock_with:{variant}", _lock_with(variant))
    for variant in ("plain", "peeps"):
        runner.bench_time_func(f"thread_rlock:{variant}", _lock_pair(variant, rlock=True))
    for n in (10, 100):
        runner.bench_time_func(f"sampler_tick_{n}_threads:peeps", _sampler_tick(n))


if __name__ == "__main__":
    os.environ.setdefault("PEEPS_SAMPLER", "off")
    main()
