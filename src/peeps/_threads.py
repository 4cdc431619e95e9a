"""Thread entities and the stack sampler.

Every Python thread can appear as a ``thread`` node.  A thread entity is
created lazily: by the sampler when it first sees the thread, by
``thread_waiter_hook`` when the thread waits on or holds an instrumented
resource, or by a thread lock naming its holder at snapshot time.

The sampler (``peeps-sampler`` daemon thread, or the SIGPROF handler in
``sigprof`` mode) reads ``sys._current_frames()`` at a jittered fixed rate and
each thread's CPU clock, and keeps a short sliding window per thread.  At
snapshot time the window becomes ``dominant_frames``, ``cpu_share`` and a
``verdict`` (``blocked``/``spinning``/``idle``/``running``/``unknown``).  See
docs/threads.md for the rules and their costs.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import contextvars
import functools
import logging
import os
import random
import select
import signal
import sys
import sysconfig
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Executor
from types import CodeType, FrameType
from typing import Any, Final, Literal, TypeVar

from . import _deadline, _loophooks, _registry
from ._config import STATE, env_flag
from ._lockdep import CHAINS, HeldChain, forget_thread
from ._registry import (
    _PKG_DIR,
    REGISTRY,
    Clock,
    Location,
    WaitSet,
    base_attrs,
    capture_location,
    new_id,
)
from .types import Edge, Node

log = logging.getLogger("peeps")
#: Jitter for tick intervals.  Its own generator: drawing from the ``random``
#: module's would move the host program's seeded sequence at every tick.
_JITTER = random.Random()

T = TypeVar("T")
_K = TypeVar("_K")

SamplerMode = Literal["thread", "sigprof", "off"]

ENV_SAMPLER: Final = "PEEPS_SAMPLER"
ENV_SAMPLER_HZ: Final = "PEEPS_SAMPLER_HZ"
ENV_SAMPLER_WINDOW_S: Final = "PEEPS_SAMPLER_WINDOW_S"
#: ``0``: the thread sampler never ticks from an event loop (see Sampler.drive_from).
ENV_SAMPLER_LOOP: Final = "PEEPS_SAMPLER_LOOP"

DEFAULT_HZ: Final = 50.0
DEFAULT_WINDOW_S: Final = 1.0
#: Sampler CPU budget as a share of one core; over it the rate is halved.
DEFAULT_BUDGET: Final = 0.02
MIN_HZ: Final = 2.0
#: While an event loop ticks the sampler (``Sampler.drive_from``), the sampler
#: thread stands by to take over at full rate (every thread, the loop's
#: included) if the loop stops ticking (a stall).  On Linux it sleeps on a
#: kernel deadline each loop tick re-arms (``_deadline``) and wakes only when
#: the ticks stop; elsewhere it wakes this often, to look and to poll the
#: watchdog.  Every wake-up of a Python thread while a busy loop keeps dropping
#: and retaking the GIL (each socket call, each ``epoll_wait``) costs that loop
#: a train of futile GIL hand-offs, up to a switch interval long; a tick inside
#: the loop costs none.
LOOP_DRIVEN_WAKE_S: Final = 0.1
#: The standby deadline, in loop-tick intervals: how long the loop may go
#: without ticking before the sampler thread takes over.
TAKEOVER_TICKS: Final = 3
#: A loop-driven sampler in a process whose only threads are the loop's and
#: peeps' own doubles its tick interval per such tick up to this factor, and
#: goes back to the full rate at the first tick that finds another thread.
#: Such a tick can only repeat the loop thread's sample (the tick records it as
#: running its loop, from the tick itself), so ticking faster adds nothing but
#: cost: in a busy aiohttp service a tick costs the loop ~100 µs with its
#: after-effects (bench_service.py --attribution, 1,000 Hz row), ~1 % of the
#: loop at 100 Hz.  An idle asyncio service also pays a quarter of the rate's
#: wake-ups.  What a slower tick gives up: the standby thread takes a stalled
#: loop over after TAKEOVER_TICKS of the slower ticks (120 ms at 100 Hz), and
#: ticks time thread-lock holds to 40 ms.
MAX_QUIET_PACE: Final = 4
MAX_HZ: Final = 250.0
STACK_LIMIT: Final = 32

#: The thread sampler's quiet sleep (``_speedups.quiet_sleep``, Linux): while no
#: other thread of the process runs, its ticks are quiet -- no GIL, no frame read:
#: nothing ran, so every thread's last sample stands -- and come at up to
#: QUIET_MAX_PACE times the interval, with a real tick at least every
#: QUIET_STRETCH_NS (for the budget and the verdict events).  Other
#: threads using more than QUIET_OTHERS_NS of CPU since the last real tick make
#: the next tick real.  ``PEEPS_SPEEDUPS=0`` (or no C extension) sleeps in Python.
QUIET_STRETCH_NS: Final = 5_000_000_000
QUIET_MAX_PACE: Final = 4
QUIET_OTHERS_NS: Final = 50_000
#: In a busy process (the first sleep of each quiet sleep finds other threads
#: ran) the sampler looks for quiet (three clock reads, ~40 µs with 100 threads
#: on a VM) only every 2nd, 4th ... up to this many ticks.
QUIET_LOOK_EVERY_MAX: Final = 16
_quiet_sleep: Callable[[int, int, int, int, int, Callable[[list[int]], object] | None],
                       tuple[list[int], bool]] | None = None
_quiet_pending: Callable[[], list[int]] | None = None
_quiet_count: Callable[[], int] | None = None
try:
    from . import _speedups
except ImportError:  # built without a C compiler
    pass
else:  # quiet_sleep is Linux only
    _quiet_sleep = getattr(_speedups, "quiet_sleep", None)
    _quiet_pending = getattr(_speedups, "quiet_pending", None)
    _quiet_count = getattr(_speedups, "quiet_count", None)
#: ``[monotonic ns of the last real tick]`` (not a quiet one), set when the tick
#: ends: the entities seen at it stand through the quiet ticks since
#: (``_quiet_since``).  ``QUIET_UNTIL_NS``: the last of those quiet ticks that
#: have been added to TICK_TIMES (0: none since the last real tick).
REAL_TICK_NS: list[int] = [0]
QUIET_UNTIL_NS: list[int] = [0]
#: ``[ns]``: the time quiet sleeps have proven that no thread ran, summed since
#: the process started (each from the real tick before it to its last quiet tick).
QUIET_PROVEN_NS: list[int] = [0]


def _quiet_ticks() -> tuple[list[int], int]:
    """The quiet ticks of a quiet sleep in progress (not in TICK_TIMES yet), and
    the last quiet tick since the last real tick, handed over or not (0: none):
    no thread has run from the last real tick until then."""
    pending = _quiet_pending() if _quiet_pending is not None else []
    return pending, pending[-1] if pending else QUIET_UNTIL_NS[0]


def quiet_now() -> int:
    """The last quiet tick since the last real tick (monotonic ns), or 0."""
    return _quiet_ticks()[1]


def _quiet_since(seen: int) -> tuple[list[int], int]:
    """For a thread last seen at ``seen``: ``_quiet_ticks()``'s pending ticks,
    and its last quiet tick if later -- the thread's last sample stands until
    then if it was seen at the last real tick.  ``([], 0)`` otherwise."""
    if not seen or seen < REAL_TICK_NS[0]:
        return [], 0
    pending, last = _quiet_ticks()
    return pending, (last if last > seen else 0)


def _add_quiet_ticks(times: list[int]) -> None:
    """``quiet_sleep``'s sink: its quiet ticks become samples (until this
    returns, ``quiet_pending`` still lists them)."""
    TICK_TIMES.extend(times)
    QUIET_UNTIL_NS[0] = times[-1]

#: Verdict thresholds (documented in docs/threads.md).
SAME_FRAME_SHARE: Final = 0.9
SAME_REGION_SHARE: Final = 0.8
LOW_CPU_SHARE: Final = 0.05
HIGH_CPU_SHARE: Final = 0.3
#: A verdict needs samples covering at least this share of the window.
MIN_COVERAGE: Final = 0.4
MIN_SAMPLES: Final = 5
#: Each thread's CPU clock is read at most this often (a system call per read).
CPU_INTERVAL_NS: Final = 100_000_000
#: A parked thread with no CPU since its last read is re-read this often.
PARKED_REREAD_NS: Final = 1_000_000_000
#: How often the sampler checks for threads that became blocked or spinning.
VERDICT_EVENT_INTERVAL_NS: Final = 1_000_000_000

_STDLIB_DIRS: Final = tuple(
    {os.path.normpath(p) + os.sep for p in (sysconfig.get_paths()["stdlib"],
                                            sysconfig.get_paths()["platstdlib"])}
)
_LINUX: Final = sys.platform.startswith("linux")

# -- frames ----------------------------------------------------------------------------


def format_frame(code: CodeType, lineno: int | None) -> str:
    return f"{code.co_filename}:{lineno} in {code.co_name}"


def _reading_time(reading: tuple[int, int, int | None]) -> int:
    return reading[0]


def _ranked(counts: dict[_K, int]) -> list[tuple[_K, int]]:
    """``Counter.most_common()``: by count, highest first, ties in insertion order."""
    return sorted(counts.items(), key=_count_of, reverse=True)


def _count_of(item: tuple[Any, int]) -> int:
    return item[1]


def is_stdlib(filename: str) -> bool:
    return filename.startswith(_STDLIB_DIRS) and "site-packages" not in filename


def stack_of(frame: FrameType | None, limit: int = STACK_LIMIT) -> list[str]:
    """``path:line in func`` strings, innermost last (the task ``stack`` format)."""
    out: list[str] = []
    while frame is not None and len(out) < limit:
        out.append(format_frame(frame.f_code, frame.f_lineno))
        frame = frame.f_back
    out.reverse()
    return out


def user_frame(frame: FrameType | None, limit: int = 64) -> str | None:
    """The innermost frame outside the standard library and peeps, formatted."""
    first: FrameType | None = frame
    while frame is not None and limit > 0:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PKG_DIR) and not is_stdlib(filename):
            return format_frame(frame.f_code, frame.f_lineno)
        frame = frame.f_back
        limit -= 1
    return format_frame(first.f_code, first.f_lineno) if first is not None else None


# Idle waits: (filename suffix, function) of the first frame outside the waiting
# primitives, reached by skipping threading.py/queue.py/selectors.py frames.
_WAIT_MODULES: Final = ("threading.py", "queue.py", "selectors.py")
_IDLE_CALLERS: Final = frozenset({
    ("thread.py", "_worker"),               # concurrent.futures pool worker
    ("base_events.py", "_run_once"),        # asyncio loop waiting in select
    ("socketserver.py", "serve_forever"),
    ("threading.py", "_shutdown"),          # interpreter exit joining threads
    ("threading.py", "_wait_for_tstate_lock"),  # Thread.join: the joined thread is the story
    ("pool.py", "worker"),                  # multiprocessing.pool worker
})


def _is_idle_wait(frame: FrameType | None) -> bool:
    while frame is not None:
        key = (os.path.basename(frame.f_code.co_filename), frame.f_code.co_name)
        if key in _IDLE_CALLERS:
            return True
        if not frame.f_code.co_filename.endswith(_WAIT_MODULES):
            return False
        frame = frame.f_back
    return False


# -- CPU clocks ------------------------------------------------------------------------


def cpu_clock_id(ident: int, native_id: int | None) -> int | None:
    """The CPU-time clock of a thread, or ``None`` where there is none.

    On Linux the clock id is built from the kernel thread id the way glibc's
    ``pthread_getcpuclockid`` does (``MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)``):
    reading it after the thread exited fails cleanly with ``EINVAL``, whereas
    calling ``pthread_getcpuclockid`` with an exited thread's handle is
    undefined behaviour -- a segfault, seen when the sampler met a thread that
    had left ``threading._active`` (so no ``native_id``) but not yet
    ``sys._current_frames()``.  So on Linux a thread without a kernel id gets no
    clock.  Elsewhere ``time.pthread_getcpuclockid`` is used.
    """
    if _LINUX:
        return ((~native_id) << 3) | 6 if native_id else None
    getter = getattr(time, "pthread_getcpuclockid", None)
    if getter is None:
        return None
    try:
        return int(getter(ident))
    except (OSError, OverflowError, ValueError):
        return None


def _schedstat_available() -> bool:
    try:
        return os.path.exists(f"/proc/self/task/{threading.get_native_id()}/schedstat")
    except Exception:
        return False


#: Linux: ``/proc/self/task/<tid>/schedstat`` gives a thread's CPU time *and* its
#: time waiting on a run queue, so a spinning thread on an overloaded machine
#: (little CPU, always runnable) is told from a blocked one (neither).
_SCHEDSTAT: Final = _LINUX and _schedstat_available()


def read_schedstat(native_id: int) -> tuple[int, int] | None:
    """(on-CPU ns, run-queue wait ns) of a thread of this process, or None."""
    try:
        fd = os.open(f"/proc/self/task/{native_id}/schedstat", os.O_RDONLY)
    except OSError:
        return None
    try:
        fields = os.read(fd, 128).split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None
    finally:
        os.close(fd)


def _read_cpu_ns(clock_id: int | None) -> int | None:
    if clock_id is None:
        return None
    try:
        return time.clock_gettime_ns(clock_id)
    except (OSError, OverflowError, ValueError):
        return None


# -- thread entities -------------------------------------------------------------------

#: Sample = (innermost code, line, program code, line).
Sample = tuple[CodeType, int, CodeType, int]

#: The time of every tick, of whichever sampler (one runs at a time).  A
#: thread's window is kept as runs: a sample and the tick it was first taken
#: at, the thread then sampled the same at every tick until its next run (or
#: its ``last_seen_ns``).  So a thread parked where it was writes nothing per
#: tick: with 100 threads the tick runs on cold caches after each sleep, and
#: every object not touched counts.
TICK_TIMES: collections.deque[int] = collections.deque(maxlen=2048)


class ThreadEntity:
    """What peeps knows about one thread: identity, sampled window, verdict."""

    __slots__ = (
        "__weakref__",
        "clock_id",
        "cpu",
        "cpu_proven_ns",
        "cpu_read_mono_ns",
        "cpu_real_read_mono_ns",
        "cpu_still",
        "created_mono_ns",
        "daemon",
        "exited",
        "first_sample_mono_ns",
        "id",
        "ident",
        "last_cpu",
        "last_frame_id",
        "last_lasti",
        "last_sample",
        "last_seen_ns",
        "location",
        "loop_sample_until",
        "name",
        "native_id",
        "region",
        "region_since",
        "runs",
        "target",
        "thread_ref",
        "top",
        "top_since",
        "verdict_event",
    )

    def __init__(self, ident: int, thread: threading.Thread | None, window_len: int) -> None:
        self.id = new_id("thread")
        self.ident = ident
        self.thread_ref: weakref.ref[threading.Thread] | None = (
            weakref.ref(thread) if thread is not None else None)
        self.name = thread.name if thread is not None else f"thread-{ident}"
        self.daemon = bool(thread.daemon) if thread is not None else None
        self.native_id: int | None = getattr(thread, "native_id", None)
        target = getattr(thread, "_target", None)
        self.target: str | None = (getattr(target, "__qualname__", None) or repr(target)
                                   if target is not None else None)
        self.location: Location | None = None
        self.created_mono_ns = time.monotonic_ns()
        self.clock_id = cpu_clock_id(ident, self.native_id)
        self.exited = False
        #: Sliding window: runs of one sample, (first tick's mono_ns, sample),
        #: the last of them lasting to ``last_seen_ns`` (see TICK_TIMES).  And
        #: (mono_ns, cpu_ns, run-queue wait ns or None).
        self.runs: collections.deque[tuple[int, Sample]] = collections.deque(maxlen=window_len)
        self.last_seen_ns = 0
        self.cpu: collections.deque[tuple[int, int, int | None]] = collections.deque(
            maxlen=window_len)
        self.top: tuple[CodeType, int] | None = None
        self.top_since = 0
        self.region: CodeType | None = None
        self.region_since = 0
        self.first_sample_mono_ns: int | None = None
        self.cpu_read_mono_ns = 0
        self.cpu_real_read_mono_ns = 0
        #: QUIET_PROVEN_NS at the last real CPU read.
        self.cpu_proven_ns = QUIET_PROVEN_NS[0]
        self.cpu_still = False
        self.last_cpu: tuple[int, int | None] | None = None
        self.last_frame_id = 0
        self.last_lasti = -1
        self.last_sample: Sample | None = None
        #: A loop-driven tick repeats the loop's last sample until then (mono ns).
        self.loop_sample_until = 0
        #: (verdict, since_mono_ns) last announced by a ``thread.verdict.*`` event.
        self.verdict_event: tuple[str, int] | None = None

    def thread(self) -> threading.Thread | None:
        return self.thread_ref() if self.thread_ref is not None else None

    def alive(self) -> bool:
        if self.exited:
            return False
        thread = self.thread()
        if thread is None:
            return self.thread_ref is None and self.ident in sys._current_frames()
        return thread.is_alive()

    # Called by the sampler only (one writer).
    def record(self, now: int, frame: FrameType, cpu: tuple[int, int | None] | None) -> None:
        last = self.last_sample
        if (last is not None and id(frame) == self.last_frame_id and frame.f_code is last[0]
                and frame.f_lasti == self.last_lasti):
            # Parked where it was at the last tick: same frame, same instruction.
            self.last_seen_ns = now
            if cpu is not None:
                self.cpu.append((now, *cpu))
            return
        code = frame.f_code
        skip = _SKIP_FILE.get(code.co_filename)
        if skip is None:
            skip = _classify_file(code.co_filename)
        user: FrameType = frame
        if skip:
            # In the standard library or peeps (a lock, a queue, a wrapper): the
            # region is the innermost frame of the program itself.
            walk: FrameType | None = frame.f_back
            while walk is not None:
                uskip = _SKIP_FILE.get(walk.f_code.co_filename)
                if uskip is None:
                    uskip = _classify_file(walk.f_code.co_filename)
                if not uskip:
                    user = walk
                    break
                walk = walk.f_back
        line = frame.f_lineno or 0
        key = (code, line)
        if key != self.top:
            self.top = key
            self.top_since = now
        user_code = user.f_code
        if user_code is not self.region:
            self.region = user_code
            self.region_since = now
        if self.first_sample_mono_ns is None:
            self.first_sample_mono_ns = now
        sample = (code, line, user_code, user.f_lineno or 0)
        if sample != last:  # (a new frame on the same line continues the run)
            self.runs.append((now, sample))
        self.last_seen_ns = now
        if cpu is not None:
            self.cpu.append((now, *cpu))
        self.last_sample = sample
        # The frame's id, not the frame: holding it would keep its locals alive.
        self.last_frame_id = id(frame)
        self.last_lasti = frame.f_lasti

    def settled_verdict(self, now: int, window_ns: int, frame: FrameType) -> str | None:
        """``blocked``/``spinning`` when the frame (region) has not changed for the
        whole window, else None: the sampler's cheap once-a-second check."""
        if self.name.startswith("peeps-") or (self.top is not None
                                              and self.top[0] is _LOOP_STEP_CODE):
            return None
        top_stable = now - self.top_since >= window_ns
        region_stable = now - self.region_since >= window_ns
        if not (top_stable or region_stable) or len(self.cpu) < 2:
            return None
        cutoff = now - window_ns
        first = last = self.cpu[-1]
        for reading in reversed(self.cpu):  # back to the last one at or before cutoff
            first = reading
            if reading[0] <= cutoff:
                break
        if last[0] <= first[0]:
            return None
        wall = last[0] - first[0]
        busy = last[1] - first[1]
        if first[2] is not None and last[2] is not None:
            busy += last[2] - first[2]
        share = busy / wall
        if top_stable and share <= LOW_CPU_SHARE:
            return None if _is_idle_wait(frame) else "blocked"
        if region_stable and share >= HIGH_CPU_SHARE:
            return "spinning"
        return None

    # -- snapshot side ------------------------------------------------------------
    def window_runs(self, cutoff: int, pending: list[int] | None = None,
                    quiet_until: int = 0) -> list[tuple[int, int, int, Sample]]:
        """The window's samples from ``cutoff`` on, oldest first, as runs:
        (first tick, last tick, ticks, sample).  A run's ticks are those in
        TICK_TIMES (and ``pending``) from its start to the next run's, or to
        ``last_seen_ns`` -- or ``quiet_until`` (``_quiet_since``)."""
        seen = self.last_seen_ns  # first: a run started after it is left out
        runs = [run for run in list(self.runs) if run[0] <= seen]
        ticks = sorted(TICK_TIMES)  # already in order, unless two samplers overlapped
        if pending:
            ticks.extend(pending)
        if quiet_until > seen:
            seen = quiet_until
        out: list[tuple[int, int, int, Sample]] = []
        for i, (start, sample) in enumerate(runs):
            end = bisect.bisect_left(ticks, runs[i + 1][0]) if i + 1 < len(runs) else (
                bisect.bisect_right(ticks, seen))
            first = bisect.bisect_left(ticks, max(start, cutoff))
            if end > first:
                out.append((ticks[first], ticks[end - 1], end - first, sample))
        return out

    def analyse(self, now_mono: int, window_ns: int,
                frame: FrameType | None) -> dict[str, Any]:
        """Window statistics and the verdict.  Pure over the recorded samples."""
        cutoff = now_mono - window_ns
        pending, quiet_until = _quiet_since(self.last_seen_ns)
        runs = self.window_runs(cutoff, pending, quiet_until)
        readings = list(self.cpu)  # a copy: the sampler appends meanwhile
        if quiet_until and readings and quiet_until > readings[-1][0]:
            # Nothing has run since the last real tick, and a thread seen there
            # had its CPU read at most a read interval (0.1 s) before it.
            readings.append((quiet_until, *readings[-1][1:]))
        first_in = bisect.bisect_left(readings, cutoff, key=_reading_time)
        if first_in and (first_in == len(readings) or readings[first_in][0] > cutoff):
            # From the last reading at or before the window's start: readings are
            # 0.1 s apart, or a quiet stretch's length (up to QUIET_STRETCH_NS).
            first_in -= 1
        out: dict[str, Any] = {"samples": sum(run[2] for run in runs)}
        cpu_share: float | None = None
        runnable_share: float | None = None
        if len(readings) - first_in >= 2 and readings[-1][0] > readings[first_in][0]:
            first, last = readings[first_in], readings[-1]
            wall = last[0] - first[0]
            on_cpu = last[1] - first[1]
            cpu_share = max(0.0, min(1.0, on_cpu / wall))
            first_wait, last_wait = first[2], last[2]
            if first_wait is not None and last_wait is not None:
                runnable_share = max(0.0, min(1.0, (on_cpu + last_wait - first_wait) / wall))
        out["cpu_share"] = round(cpu_share, 3) if cpu_share is not None else None
        out["runnable_share"] = (round(runnable_share, 3) if runnable_share is not None
                                 else None)
        # Wanting the CPU counts: a spinner on a loaded machine gets little of it.
        busy = runnable_share if runnable_share is not None else cpu_share
        # Plain dicts, not Counters: this runs for every thread in every snapshot.
        # Keyed by the code objects' ids, not the objects: a code object's hash
        # is not cached and hashes its constants (nested code objects too) on
        # every call, ~0.2 µs for a mid-sized function on 3.11 and ~1.5 µs on
        # 3.12+.  The runs hold the code objects while this runs, so the ids
        # stand for them.
        codes: dict[int, CodeType] = {}
        by_top: dict[tuple[int, int], int] = {}
        by_frame: dict[tuple[int, int], int] = {}
        by_region: dict[int, int] = {}
        n = 0
        for _, _, count, (code, line, user_code, user_line) in runs:
            top_id = id(code)
            user_id = id(user_code)
            codes[top_id] = code
            codes[user_id] = user_code
            key = (top_id, line)
            by_top[key] = by_top.get(key, 0) + count
            key = (user_id, user_line)
            by_frame[key] = by_frame.get(key, 0) + count
            by_region[user_id] = by_region.get(user_id, 0) + count
            n += count
        frames_ranked = _ranked(by_frame)
        tops_ranked = _ranked(by_top)
        out["dominant_frames"] = [
            {"frame": format_frame(codes[code_id], line), "share": round(count / n, 3)}
            for (code_id, line), count in frames_ranked[:5]
        ]
        out["dominant_frame"] = out["dominant_frames"][0]["frame"] if n else None
        out["top_frames"] = [
            {"frame": format_frame(codes[code_id], line), "share": round(count / n, 3)}
            for (code_id, line), count in tops_ranked[:3]
        ]
        top_share = tops_ranked[0][1] / n if n else 0.0
        region_share = max(by_region.values()) / n if n else 0.0
        covered = n >= MIN_SAMPLES and runs[-1][1] - runs[0][0] >= window_ns * MIN_COVERAGE
        name = self.name
        verdict = "unknown"
        verdict_ns: int | None = None
        if name.startswith("peeps-") or _is_idle_wait(frame):
            verdict = "idle"
        elif not covered or busy is None:
            verdict = "unknown"
        elif sum(count for (code_id, _), count in by_top.items()
                 if codes[code_id] is _LOOP_STEP_CODE) * 2 >= n:
            # Sampled mostly by ticks of its own event loop: the loop keeps coming back.
            verdict = "running" if busy > LOW_CPU_SHARE else "idle"
        elif top_share >= SAME_FRAME_SHARE and busy <= LOW_CPU_SHARE:
            verdict = "blocked"
            verdict_ns = now_mono - self.top_since
        elif region_share >= SAME_REGION_SHARE and busy >= HIGH_CPU_SHARE:
            verdict = "spinning"
            verdict_ns = now_mono - self.region_since
        else:
            verdict = "running"
        out["verdict"] = verdict
        out["verdict_ns"] = verdict_ns
        return out

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        thread = self.thread()
        if thread is not None:
            self.name = thread.name
        alive = self.alive()
        if not alive:
            _forget(self)  # shown once as exited, then forgotten
        attrs = base_attrs(self.created_mono_ns, self.location, None, now)
        frame = now.thread_frames().get(self.ident) if alive else None
        sampler = _SAMPLER
        window_ns = sampler.window_ns if sampler is not None else int(DEFAULT_WINDOW_S * 1e9)
        attrs.update(
            name=self.name,
            ident=self.ident,
            native_id=self.native_id,
            daemon=self.daemon,
            alive=alive,
            state="running" if alive else "exited",
            target=self.target,
            main=self.ident == threading.main_thread().ident,
            stack=stack_of(frame),
            frame=user_frame(frame),
        )
        try:
            attrs.update(self.analyse(now.mono_ns, window_ns, frame))
        finally:
            del frame
        attrs["sampled"] = sampler is not None and sampler.running
        if sampler is not None and thread is not None and thread is sampler.thread_obj:
            attrs["sampler"] = sampler.stats()
        report = THREAD_REPORTS.get(thread) if thread is not None else None
        if report is not None:
            try:
                attrs[report[0]] = report[1]()
            except Exception as exc:
                REGISTRY.part_failed(f"the {report[0]} report", exc)
        node: Node = {"id": self.id, "kind": "thread", "label": self.name, "attrs": attrs}
        return node, []


#: peeps' own threads that report on themselves: thread -> (attribute, stats
#: function); the thread's node carries ``{attribute: stats()}`` (the
#: collector's costs, say).
THREAD_REPORTS: dict[threading.Thread, tuple[str, Callable[[], dict[str, Any]]]] = {}

#: ident -> entity of the live thread with that ident.
_BY_IDENT: dict[int, ThreadEntity] = {}
#: filename -> whether it is the standard library or peeps (str hashes are cached).
_SKIP_FILE: dict[str, bool] = {}


def _classify_file(filename: str) -> bool:
    skip = filename.startswith(_PKG_DIR) or is_stdlib(filename) or filename.startswith("<frozen")
    if len(_SKIP_FILE) < 10_000:
        _SKIP_FILE[filename] = skip
    return skip
_ENTITY_LOCK = threading.Lock()
_LOCAL = threading.local()


def _active_thread(ident: int) -> threading.Thread | None:
    active: dict[int, threading.Thread] = getattr(threading, "_active", {})
    thread = active.get(ident)
    if thread is None:
        # Starting: Thread._bootstrap_inner sets the ident and wakes start()
        # before it enters threading._active, so a tick (or the new thread's
        # first call into peeps) can come in between.  Without this the entity
        # would have no Thread for good: no name, no report (the collector's).
        limbo: dict[Any, threading.Thread] = getattr(threading, "_limbo", {})
        for starting in list(limbo.values()):  # copied: threads start meanwhile
            if starting.ident == ident:
                return starting
    return thread


def _size_tick_times(window_len: int) -> None:
    """TICK_TIMES as long as the running sampler's windows (runs older than
    its oldest tick count from there)."""
    global TICK_TIMES
    if TICK_TIMES.maxlen != window_len:
        TICK_TIMES = collections.deque(TICK_TIMES, maxlen=window_len)


def _window_len() -> int:
    sampler = _SAMPLER
    if sampler is None:
        return 64
    return sampler.window_len


def entity_for_ident(ident: int, *, create: bool = True,
                     wait: bool = True) -> ThreadEntity | None:
    """The entity of the live thread ``ident`` (created on first sight).

    ``wait=False`` (the sampler) gives up instead of waiting for another thread
    that is creating an entity: a SIGPROF handler may interrupt that very thread.
    """
    thread = _active_thread(ident)
    entity = _BY_IDENT.get(ident)
    if entity is not None and _fits(entity, thread):
        if entity.id not in REGISTRY.tasks:
            REGISTRY.tasks[entity.id] = entity  # the registry was cleared
        return entity
    if not create:
        return None
    if not _ENTITY_LOCK.acquire(blocking=wait):
        return None
    try:
        entity = _BY_IDENT.get(ident)
        if entity is not None and _fits(entity, thread):
            return entity
        if entity is not None:  # the ident was reused by a new thread
            _forget(entity)
        entity = ThreadEntity(ident, thread, _window_len())
        _BY_IDENT[ident] = entity
        REGISTRY.tasks[entity.id] = entity
        return entity
    finally:
        _ENTITY_LOCK.release()


def _fits(entity: ThreadEntity, thread: threading.Thread | None) -> bool:
    """Whether ``entity`` is still the entity of its ident, whose Thread is
    now ``thread`` (``None``: none in ``threading._active`` or ``_limbo``)."""
    if entity.exited:
        return False
    own = entity.thread()
    # A Thread that has left threading._active is ending (its ident is not
    # reused until it has): it keeps its entity.  Were a nameless one made for
    # its last moments, a new thread reusing the ident before the sampler saw
    # the old one gone would inherit it -- a "thread-<ident>" without its name
    # or report (the collector's, in a CI run of test_loop_serves).
    return own is thread or (thread is None and own is not None)


def _forget(entity: ThreadEntity, *, ident_free: bool = False) -> None:
    """Drop ``entity`` (its thread ended, or its ident was reused).
    ``ident_free``: the caller saw no thread run under the ident."""
    if not entity.exited and entity.verdict_event is not None:
        verdict, since = entity.verdict_event
        entity.verdict_event = None
        REGISTRY.emit(entity.id, "thread.verdict.cleared",
                      {"previous": verdict, "lasted_ns": time.monotonic_ns() - since,
                       "exited": True, "thread": entity.name})
    entity.exited = True
    if _BY_IDENT.get(entity.ident) is entity:
        _BY_IDENT.pop(entity.ident, None)
        # Its held-lock chain goes too -- unless a thread runs under the ident
        # now (one that reused it, or this one if it is alive after all): that
        # thread keeps its chain in a threading.local, and dropped from CHAINS
        # its holds would be hidden from the sampler for good.
        if ident_free or entity.ident not in sys._current_frames():
            forget_thread(entity.ident)
    REGISTRY.tasks.pop(entity.id, None)


def current_thread_entity() -> ThreadEntity | None:
    """The calling thread's entity (cached per thread)."""
    try:
        entity: ThreadEntity = _LOCAL.entity
        if not entity.exited:
            return entity
    except AttributeError:
        pass
    if not STATE.enabled:
        return None
    try:
        found = entity_for_ident(threading.get_ident())
    except Exception as exc:
        REGISTRY.part_failed("thread entities", exc)
        return None
    if found is not None:
        _LOCAL.entity = found
    return found


def _thread_waiter_hook() -> ThreadEntity | None:
    return current_thread_entity()


def enable_threads() -> None:
    """Let threads be waiters and holders (``needs``/``holds`` from ``thread:`` nodes)."""
    _registry.thread_waiter_hook = _thread_waiter_hook


def disable_threads() -> None:
    if _registry.thread_waiter_hook is _thread_waiter_hook:
        _registry.thread_waiter_hook = None


# -- the sampler -----------------------------------------------------------------------


#: The code of the event loop's scheduler step: a loop-driven tick records its
#: own thread there ("running its loop"), which is never blocked or spinning.
#: Compared by identity: hashing a code object is not cached (see ``analyse``),
#: and the tick tests it at every tick.
_LOOP_STEP_CODE: Final = (
    asyncio.base_events.BaseEventLoop._run_once.__code__)  # type: ignore[attr-defined]


#: A loop-driven tick samples its own thread as "running its loop": the
#: scheduler step's line and the program frame that runs the loop.  Both stay
#: the same while the loop runs, so the tick repeats that sample and derives it
#: from the frames again only this often -- walking up from the tick makes a
#: frame object per level on 3.11+, about half a tick's cost on cold caches.
LOOP_SAMPLE_REFRESH_NS: Final = 1_000_000_000


def _record_running_loop(ident: int, now: int, cpu_ns: int) -> None:
    """A loop-driven tick's sample of its own thread: the loop's scheduler step
    and the thread's exact CPU clock (``cpu_ns``, read in that thread)."""
    entity = _BY_IDENT.get(ident)
    if entity is not None and not entity.exited:
        last = entity.last_sample
        if (last is not None and now < entity.loop_sample_until
                and last[0] is _LOOP_STEP_CODE):
            entity.cpu_read_mono_ns = entity.cpu_real_read_mono_ns = now
            entity.cpu_proven_ns = QUIET_PROVEN_NS[0]
            entity.last_seen_ns = now
            entity.cpu.append((now, cpu_ns, None))
            return
    frame: FrameType | None = sys._getframe(1)
    try:
        while frame is not None and frame.f_code is not _LOOP_STEP_CODE:
            frame = frame.f_back
        if frame is None:
            return  # not under the loop's scheduler step (drive_from takes only those loops)
        if entity is None or not _fits(entity, _active_thread(ident)):
            entity = entity_for_ident(ident, wait=False)
            if entity is None:
                return
        entity.cpu_read_mono_ns = entity.cpu_real_read_mono_ns = now
        entity.cpu_proven_ns = QUIET_PROVEN_NS[0]
        # Derive the sample afresh: this step's frame may sit at the address of
        # an earlier one, which record() would take for a thread still parked.
        entity.last_frame_id = 0
        entity.record(now, frame, (cpu_ns, None))
        entity.loop_sample_until = now + LOOP_SAMPLE_REFRESH_NS
    finally:
        del frame


class Sampler:
    """Samples every thread's innermost frame and CPU clock at ``hz``.

    ``mode="thread"`` runs a ``peeps-sampler`` daemon thread.  ``mode="sigprof"``
    samples from a ``SIGPROF`` handler driven by ``setitimer(ITIMER_PROF)``;
    Python runs that handler only on the main thread between bytecodes, so it
    sees little while the main thread blocks (docs/threads.md).
    """

    def __init__(self, *, mode: Literal["thread", "sigprof"] = "thread",
                 hz: float = DEFAULT_HZ, window_s: float = DEFAULT_WINDOW_S,
                 budget: float = DEFAULT_BUDGET) -> None:
        self.mode = mode
        self.hz = max(MIN_HZ, min(MAX_HZ, float(hz)))
        self.effective_hz = self.hz
        self.window_ns = int(max(0.1, min(10.0, window_s)) * 1e9)
        self.window_len = min(2048, int(self.hz * window_s * 1.25) + 8)
        self.budget = budget
        self.running = False
        self.ticks = 0
        self.skipped_ticks = 0
        self.backoffs = 0
        self.cost_ns = 0
        self.started_mono_ns = 0
        self.last_cost_share = 0.0
        self.thread_obj: threading.Thread | None = None
        self._stop = threading.Event()
        self._busy = threading.Lock()
        self._warned = False
        self._prev_handler: Any = None
        self._budget_window_start = 0
        self._budget_window_cost = 0
        self._next_verdict_ns = 0
        self._last_tick_ns = 0
        self._driver: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self.loop_tick_mono_ns = 0
        self.loop_ticks = 0
        self.thread_ticks = 0
        #: Thread mode on Linux: re-armed by each loop tick; the standby thread
        #: sleeps on it (with a pipe that ``stop()`` writes to wake it).
        self._deadline: _deadline.Deadline | None = None
        self._waker: _deadline.Waker | None = None
        #: Loop-driven ticks come every ``pace / effective_hz`` (MAX_QUIET_PACE).
        self.pace = 1
        #: The sampler thread's CPU between its own ticks (waking from each
        #: sleep, the loop around the ticks), and its clock when its last tick
        #: ended: the sampler's cost as much as the ticks' bodies are.
        self.wake_ns = 0
        self._own_tick_end_ns = 0
        #: The quiet sleep (QUIET_STRETCH_NS), and the process's count of quiet
        #: ticks when this sampler started (``quiet_ticks`` in stats()).
        self.quiet_sleep = (_quiet_sleep if mode == "thread" and env_flag("PEEPS_SPEEDUPS", True)
                            else None)
        self._quiet_base = _quiet_count() if _quiet_count is not None else 0
        self._quiet_skip = 0
        self._quiet_backoff = 1

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        self.started_mono_ns = time.monotonic_ns()
        self._budget_window_start = self.started_mono_ns
        if self.mode == "sigprof":
            self._prev_handler = signal.signal(signal.SIGPROF, self._on_signal)
            interval = 1.0 / self.hz
            signal.setitimer(signal.ITIMER_PROF, interval, interval)
            self.running = True
            return
        self._deadline = _deadline.create(TAKEOVER_TICKS / self.hz)
        if self._deadline is not None:
            self._waker = _deadline.create_waker()
            if self._waker is None:
                self._close_standby()
        self.thread_obj = threading.Thread(target=self._run, name="peeps-sampler", daemon=True)
        self.running = True
        self.thread_obj.start()

    def stop(self, timeout: float = 2.0) -> None:
        self.running = False
        self._stop.set()
        coarse_clock_stopped()
        if self.mode == "sigprof":
            try:
                signal.setitimer(signal.ITIMER_PROF, 0, 0)
                prev = self._prev_handler
                # A SIGPROF already in flight would kill the process under SIG_DFL.
                if prev in (None, signal.SIG_DFL):
                    prev = signal.SIG_IGN
                signal.signal(signal.SIGPROF, prev)
            except (ValueError, OSError) as exc:
                log.warning("peeps: could not clear the SIGPROF timer: %r", exc)
            return
        waker = self._waker
        if waker is not None:
            waker.wake()
        thread = self.thread_obj
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        if thread is None or not thread.is_alive():
            self._close_standby()
        coarse_clock_stopped()  # again: the last tick may have set it while stopping

    def _close_standby(self) -> None:
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.close()
        waker, self._waker = self._waker, None
        if waker is not None:
            waker.close()

    # -- sampling ------------------------------------------------------------------
    def _run(self) -> None:
        # time.sleep, not Event.wait: one GIL hand-off per tick instead of several,
        # which matters when a spinning thread holds the GIL (each hand-off can
        # cost a whole switch interval).  stop() wakes a standby thread through its
        # Waker; without one, stopping waits at most LOOP_DRIVEN_WAKE_S.
        from ._watchdog import poll_if_due as poll_watchdog
        from ._watchdog import watches_loops as watchdog_watches

        sleep = time.sleep
        uniform = _JITTER.uniform
        monotonic_ns = time.monotonic_ns
        stop = self._stop
        deadline_passed = False
        while not stop.is_set():
            interval = uniform(0.8, 1.2) / self.effective_hz
            left_s = TAKEOVER_TICKS * self.pace / self.effective_hz - (
                monotonic_ns() - self.loop_tick_mono_ns) / 1e9
            if left_s > 0:
                # An event loop ticks for us: stand by in case it stops (a stall).
                deadline, waker = self._deadline, self._waker
                if deadline is not None and waker is not None:
                    # No timeout, so no wake-up while the loop ticks (each tick
                    # re-arms the deadline) -- unless the deadline has just
                    # passed and is not armed again yet.
                    try:
                        ready, _, _ = select.select([deadline.fileno(), waker.fileno()], [], [],
                                                    left_s if deadline_passed else None)
                    except (OSError, ValueError):  # closed by stop()
                        return
                    deadline_passed = deadline.fileno() in ready
                    if deadline_passed:
                        deadline.drain()
                    continue
                # No kernel deadline: look again later, and poll the watchdog,
                # which needs a thread besides the loop's.
                sleep(LOOP_DRIVEN_WAKE_S)
                if not stop.is_set():
                    try:
                        poll_watchdog(monotonic_ns())
                    except Exception as exc:  # reported; the sampler carries on
                        REGISTRY.part_failed("event-loop watchdog poll", exc)
                continue
            quiet_sleep = self.quiet_sleep
            if interval > LOOP_DRIVEN_WAKE_S:
                stop.wait(interval)  # backed off: stay promptly stoppable
            elif (quiet_sleep is not None and not self._quiet_skip and self._last_tick_ns
                  and not watchdog_watches()):  # (a watched loop needs polls at full rate)
                waker = self._waker
                try:
                    quiet, _ = quiet_sleep(int(interval * 1e9), QUIET_MAX_PACE,
                                           QUIET_STRETCH_NS,
                                           waker.fileno() if waker is not None else -1,
                                           QUIET_OTHERS_NS, _add_quiet_ticks)
                except Exception as exc:  # reported; the sampler sleeps in Python from now on
                    REGISTRY.part_failed("thread sampler's quiet sleep", exc)
                    self.quiet_sleep = None
                    quiet = []
                if quiet:
                    self._quiet_backoff = 1
                    if not stop.is_set():
                        self._quiet(quiet)
                else:  # busy: look again after 1, 2, 4 ... QUIET_LOOK_EVERY_MAX ticks
                    self._quiet_skip = self._quiet_backoff
                    self._quiet_backoff = min(QUIET_LOOK_EVERY_MAX, self._quiet_backoff * 2)
            else:
                if self._quiet_skip:
                    self._quiet_skip -= 1
                sleep(interval)
            if stop.is_set():
                return
            try:
                self.tick()
                self.thread_ticks += 1
                if not COARSE_NOW[0]:
                    coarse_clock_started()
                now = COARSE_NOW[0] = monotonic_ns()
                poll_watchdog(now)
            except Exception as exc:  # never let the sampler die loudly
                REGISTRY.part_failed("thread sampler", exc)
                coarse_clock_stopped()
                self.running = False
                return

    def _quiet(self, times: list[int]) -> None:
        """After quiet ticks at ``times`` (monotonic ns; ``quiet_sleep`` has added
        them to TICK_TIMES, as samples, ``_add_quiet_ticks``): no other thread ran since the last real
        tick, so each would have repeated every thread's last sample.  The
        thread-lock holds seen at the last real tick are timed to the last of
        them, as those ticks would have."""
        if not self._busy.acquire(blocking=False):
            return  # a tick from elsewhere is running: it will see for itself
        try:
            last = times[-1]
            if self._last_tick_ns and last > self._last_tick_ns:
                QUIET_PROVEN_NS[0] += last - self._last_tick_ns
            account_holds = HOLD_ACCOUNTING
            if account_holds is not None and CHAINS:
                for chain in list(CHAINS.values()):
                    if chain.top is not None:
                        account_holds(chain, last, self._last_tick_ns)
            self._last_tick_ns = last
            if COARSE_NOW[0]:
                COARSE_NOW[0] = last
        finally:
            self._busy.release()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.running:  # a late signal, or stopped from a non-main thread
            return
        try:
            self.tick()
        except Exception as exc:
            REGISTRY.part_failed("SIGPROF sampler", exc)

    # -- ticks driven by an event loop --------------------------------------------
    def drive_from(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tick from ``loop`` (called in its thread while it runs), unless another
        running loop already does.  See LOOP_DRIVEN_WAKE_S for why."""
        if (self.mode != "thread" or not self.running
                or not isinstance(loop, asyncio.base_events.BaseEventLoop)):
            return  # uvloop & co. run no Python scheduler step to record the loop by
        entity = _BY_IDENT.get(threading.get_ident())
        if entity is not None:  # a new run of a loop: maybe from another function
            entity.loop_sample_until = 0
        current = self._driver
        driver = current() if current is not None else None
        if driver is loop or (driver is not None and driver.is_running()
                              and not driver.is_closed()):
            return
        self._driver = weakref.ref(loop)
        loop.call_soon(self._loop_tick, loop)

    def _loop_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        current = self._driver
        if not self.running or current is None or current() is not loop:
            return  # stopped, or another loop took over
        try:
            if not COARSE_NOW[0]:
                coarse_clock_started()
            self.loop_tick_mono_ns = COARSE_NOW[0] = time.monotonic_ns()
            alone = self.tick(threading.get_ident())
            self.loop_ticks += 1
            self.pace = min(MAX_QUIET_PACE, self.pace * 2) if alone else 1
            interval = self.pace / self.effective_hz
            loop.call_later(_JITTER.uniform(0.8, 1.2) * interval, self._loop_tick, loop)
            deadline = self._deadline
            if deadline is not None:
                deadline.seconds = TAKEOVER_TICKS * interval
                with contextlib.suppress(OSError):  # closed by a concurrent stop()
                    deadline.arm()
        except Exception as exc:
            self._driver = None  # the sampler thread carries on alone
            REGISTRY.part_failed("loop-driven thread sampling", exc)

    def tick(self, loop_ident: int | None = None) -> bool:
        """Take one sample of every thread.  ``loop_ident``: this tick runs on that
        thread's event loop, so that thread is recorded as running its loop.
        Returns whether that thread is the only one besides peeps' own."""
        cpu0 = time.thread_time_ns()
        if not self._busy.acquire(blocking=False):
            self.skipped_ticks += 1
            return False
        try:
            alone = self._sample_all(loop_ident, cpu0)
            cpu1 = time.thread_time_ns()
            cost = cpu1 - cpu0
            self.ticks += 1
            self.cost_ns += cost
            thread = self.thread_obj
            if loop_ident is None and thread is not None and thread.ident == threading.get_ident():
                # On the sampler's own thread: what it spent since its previous
                # tick ended (the sleep's wake-up, up to ~150 µs a tick on a VM)
                # counts against the budget too.
                end = self._own_tick_end_ns
                if end and cpu0 > end:
                    self.wake_ns += cpu0 - end
                    cost += cpu0 - end
                self._own_tick_end_ns = cpu1
            self._account(cost)
            return alone
        finally:
            self._busy.release()

    def _sample_all(self, loop_ident: int | None = None, loop_cpu_ns: int = 0) -> bool:
        now = time.monotonic_ns()
        frames = sys._current_frames()
        by_ident = _BY_IDENT
        active: dict[int, threading.Thread] = getattr(threading, "_active", {})
        tasks = REGISTRY.tasks
        cpu_interval = int(CPU_INTERVAL_NS * self.hz / self.effective_hz)
        schedstat = _SCHEDSTAT
        # The thread sampler times thread-lock holds (their fast path reads no
        # clock while COARSE_NOW is set); SIGPROF ticks are too irregular.
        account_holds = HOLD_ACCOUNTING if self.mode == "thread" else None
        chains = CHAINS
        quiet_proven = QUIET_PROVEN_NS[0]
        last_tick = self._last_tick_ns
        self._last_tick_ns = now
        TICK_TIMES.append(now)
        try:
            if account_holds is not None and chains:
                for chain in list(chains.values()):  # copied: threads add chains
                    if chain.top is not None:
                        account_holds(chain, now, last_tick)
            for ident, frame in frames.items():
                if ident == loop_ident:
                    _record_running_loop(ident, now, loop_cpu_ns)
                    continue
                entity = by_ident.get(ident)
                if entity is not None and now - entity.cpu_read_mono_ns < cpu_interval:
                    # Most threads at most ticks: no CPU read due.  A thread parked
                    # where it was (same frame object, code and instruction) only
                    # repeats its last sample — with 100 threads this loop runs on
                    # cold caches after each sleep, so every object not touched counts.
                    last = entity.last_sample
                    if (last is not None and id(frame) == entity.last_frame_id
                            and frame.f_lasti == entity.last_lasti
                            and frame.f_code is last[0] and not entity.exited):
                        entity.last_seen_ns = now
                        continue
                if entity is None or not _fits(entity, active.get(ident)):
                    entity = entity_for_ident(ident, wait=False)
                    if entity is None:
                        continue
                elif entity.id not in tasks:
                    tasks[entity.id] = entity
                # A CPU read is one to three system calls; frames are cheap.  So
                # each thread's CPU is read at most every cpu_interval, and a
                # thread parked on the same instruction whose last real reads
                # showed no CPU and no run-queue time is assumed unchanged for
                # up to PARKED_REREAD_NS (synthetic repeat of the last reading).
                # After that its CPU clock alone is read (one system call, no
                # /proc path): not moved, the thread has not run, and a thread
                # that does not run for a whole PARKED_REREAD_NS is not waiting
                # for a CPU either (the scheduler would have given it some), so
                # the reading stands.
                cpu: tuple[int, int | None] | None = None
                if now - entity.cpu_read_mono_ns >= cpu_interval:
                    entity.cpu_read_mono_ns = now
                    last_cpu = entity.last_cpu
                    if (last_cpu is not None and entity.cpu_still
                            and entity.last_sample is not None
                            and id(frame) == entity.last_frame_id
                            and frame.f_lasti == entity.last_lasti):
                        # (Quiet ticks prove that no thread ran for a while:
                        # that time does not count towards a re-read.)
                        if (now - entity.cpu_real_read_mono_ns
                                - (quiet_proven - entity.cpu_proven_ns) < PARKED_REREAD_NS):
                            cpu = last_cpu
                        elif _read_cpu_ns(entity.clock_id) == last_cpu[0]:
                            cpu = last_cpu
                            entity.cpu_real_read_mono_ns = now
                            entity.cpu_proven_ns = quiet_proven
                    if cpu is None:
                        native_id = entity.native_id
                        if schedstat and native_id:
                            cpu = read_schedstat(native_id)
                        if cpu is None:
                            cpu_ns = _read_cpu_ns(entity.clock_id)
                            cpu = (cpu_ns, None) if cpu_ns is not None else None
                        entity.cpu_still = cpu is not None and cpu == last_cpu
                        entity.cpu_real_read_mono_ns = now
                        entity.cpu_proven_ns = quiet_proven
                        entity.last_cpu = cpu
                entity.record(now, frame, cpu)
            if by_ident.keys() != frames.keys():  # no set built while none came or went
                for ident in by_ident.keys() - frames.keys():
                    gone = by_ident.get(ident)
                    # Not in this tick's frames, but maybe started since they were
                    # read (a tick can lose the GIL midway): a thread still in
                    # ``threading._active``, or an entity made during the tick, is
                    # alive -- forgetting it would give its waits and holds to a
                    # node that is no longer described.
                    if gone is not None and gone.created_mono_ns < now and ident not in active:
                        _forget(gone, ident_free=True)
            if now >= self._next_verdict_ns:
                self._next_verdict_ns = now + VERDICT_EVENT_INTERVAL_NS
                self._announce_verdicts(now, frames)
            if loop_ident is None:
                return False
            for ident in frames:  # stops at the first thread that is not ours
                if ident != loop_ident:
                    entity = by_ident.get(ident)
                    if entity is None or not entity.name.startswith("peeps-"):
                        return False
            return True
        finally:
            del frames
            # Last: a snapshot taken while this tick runs (another thread can
            # take the GIL) extends the threads it has not seen yet only as far
            # as the last quiet tick, the ones it has seen from now on.
            REAL_TICK_NS[0] = now
            QUIET_UNTIL_NS[0] = 0

    def _announce_verdicts(self, now: int, frames: dict[int, FrameType]) -> None:
        """Events when a thread becomes blocked or spinning, and when it stops:
        ``thread.verdict.blocked``/``spinning``/``cleared``."""
        for ident, frame in frames.items():
            entity = _BY_IDENT.get(ident)
            if entity is None:
                continue
            verdict = entity.settled_verdict(now, self.window_ns, frame)
            previous = entity.verdict_event
            if verdict is not None and (previous is None or previous[0] != verdict):
                since = entity.top_since if verdict == "blocked" else entity.region_since
                entity.verdict_event = (verdict, since)
                REGISTRY.emit(entity.id, f"thread.verdict.{verdict}",
                              {"frame": user_frame(frame), "verdict_ns": now - since,
                               "thread": entity.name})
            elif verdict is None and previous is not None:
                entity.verdict_event = None
                REGISTRY.emit(entity.id, "thread.verdict.cleared",
                              {"previous": previous[0], "lasted_ns": now - previous[1],
                               "frame": user_frame(frame), "thread": entity.name})

    def _account(self, cost_ns: int) -> None:
        """Back off when the sampler costs more than its budget of one core."""
        self._budget_window_cost += cost_ns
        now = time.monotonic_ns()
        elapsed = now - self._budget_window_start
        if elapsed < 1_000_000_000:
            return
        share = self._budget_window_cost / elapsed
        self.last_cost_share = share
        self._budget_window_start = now
        self._budget_window_cost = 0
        if self.mode != "thread":
            return
        if share > self.budget and self.effective_hz > MIN_HZ:
            self.effective_hz = max(MIN_HZ, self.effective_hz / 2)
            self.backoffs += 1
            if not self._warned:
                self._warned = True
                log.warning("peeps: the thread sampler used %.1f%% of a core (budget %.1f%%); "
                            "sampling at %.0f Hz instead of %.0f Hz", share * 100,
                            self.budget * 100, self.effective_hz, self.hz)
        elif share < self.budget / 4 and self.effective_hz < self.hz:
            self.effective_hz = min(self.hz, self.effective_hz * 2)

    def stats(self) -> dict[str, Any]:
        elapsed = max(1, time.monotonic_ns() - self.started_mono_ns)
        return {
            "mode": self.mode,
            "hz": self.hz,
            "effective_hz": self.effective_hz,
            "window_ns": self.window_ns,
            "ticks": self.ticks,
            "skipped_ticks": self.skipped_ticks,
            "loop_ticks": self.loop_ticks,
            "thread_ticks": self.thread_ticks,
            "backoffs": self.backoffs,
            "pace": self.pace,
            "cost_ns": self.cost_ns,
            "wake_ns": self.wake_ns,
            # (with those of a quiet sleep in progress)
            "quiet_ticks": (_quiet_count() - self._quiet_base
                            if _quiet_count is not None and self.quiet_sleep else 0),
            "cpu_share": round((self.cost_ns + self.wake_ns) / elapsed, 5),
            "recent_cpu_share": round(self.last_cost_share, 5),
            "budget": self.budget,
        }


_SAMPLER: Sampler | None = None
_SAMPLER_LOCK = threading.Lock()

#: ``[monotonic ns of the thread sampler's last tick]``, ``[0]`` when it is not
#: running.  While it is set the sampler times thread-lock holds
#: (``HOLD_ACCOUNTING``) and the locks' fast path reads no clock.
COARSE_NOW: list[int] = [0]
#: Set by ``_thread_locks``: called with True when sampler ticks start keeping
#: COARSE_NOW (they time thread-lock holds from then on), False when they stop.
ON_COARSE_CLOCK: Callable[[bool], None] | None = None


def coarse_clock_started() -> None:
    """The first tick of a thread sampler is about to set COARSE_NOW."""
    hook = ON_COARSE_CLOCK
    if hook is not None:
        hook(True)


def coarse_clock_stopped() -> None:
    """No sampler ticks any more: clear COARSE_NOW (thread locks time their own holds)."""
    COARSE_NOW[0] = 0
    hook = ON_COARSE_CLOCK
    if hook is not None:
        hook(False)
#: ``_thread_locks.account_holds`` (set when that module loads): called each tick
#: with a thread's chain of held locks, the tick's time and the previous tick's.
HOLD_ACCOUNTING: Callable[[HeldChain, int, int], None] | None = None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        log.warning("peeps: ignoring %s=%r (a positive number)", name, raw)
        return default
    return value


def start_sampler(*, mode: SamplerMode | None = None, hz: float | None = None,
                  window_s: float | None = None, budget: float = DEFAULT_BUDGET) -> Sampler | None:
    """Start sampling threads (replacing a running sampler).  Returns it, or ``None``
    when the mode is ``off`` or peeps is disabled.

    Defaults come from ``PEEPS_SAMPLER`` (``thread``, ``sigprof``, ``off``),
    ``PEEPS_SAMPLER_HZ`` and ``PEEPS_SAMPLER_WINDOW_S``.  ``sigprof`` needs the
    main thread; elsewhere it falls back to ``thread`` with a warning.
    """
    global _SAMPLER
    if not STATE.enabled:
        return None
    chosen = mode or os.environ.get(ENV_SAMPLER, "").strip().lower() or "thread"
    if chosen not in ("thread", "sigprof", "off"):
        if mode is not None:
            raise ValueError(f"sampler mode must be thread, sigprof or off, got {chosen!r}")
        log.warning("peeps: ignoring %s=%r (thread, sigprof or off)", ENV_SAMPLER, chosen)
        chosen = "thread"
    if hz is None:
        hz = _env_float(ENV_SAMPLER_HZ, DEFAULT_HZ)
    if window_s is None:
        window_s = _env_float(ENV_SAMPLER_WINDOW_S, DEFAULT_WINDOW_S)
    if hz <= 0 or window_s <= 0:
        raise ValueError("sampler hz and window must be positive")
    with _SAMPLER_LOCK:
        if _SAMPLER is not None:
            _SAMPLER.stop()
            _SAMPLER = None
            _loophooks.remove(_DRIVE_HOOK)
        if chosen == "off":
            return None
        if chosen == "sigprof" and (threading.current_thread() is not threading.main_thread()
                                    or not hasattr(signal, "setitimer")):
            log.warning("peeps: sigprof sampling needs the main thread and setitimer; "
                        "using the thread sampler")
            chosen = "thread"
        sampler = Sampler(mode=chosen, hz=hz, window_s=window_s,  # type: ignore[arg-type]
                          budget=budget)
        _SAMPLER = sampler
        _size_tick_times(sampler.window_len)
        sampler.start()
        if chosen == "thread" and os.environ.get(ENV_SAMPLER_LOOP, "").strip() != "0":
            _loophooks.on_loop_start(_DRIVE_HOOK, _drive_sampler)
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not None:
                sampler.drive_from(running)
    enable_threads()
    return sampler


_DRIVE_HOOK: Final = "loop-driven thread sampling"


def _drive_sampler(loop: asyncio.AbstractEventLoop) -> None:
    sampler = _SAMPLER
    if sampler is not None:
        sampler.drive_from(loop)


def stop_sampler() -> None:
    """Stop the sampler (joins the thread; clears the SIGPROF timer)."""
    global _SAMPLER
    with _SAMPLER_LOCK:
        sampler, _SAMPLER = _SAMPLER, None
        _loophooks.remove(_DRIVE_HOOK)
    if sampler is not None:
        sampler.stop()


def current_sampler() -> Sampler | None:
    return _SAMPLER


def sampler_stats() -> dict[str, Any] | None:
    """The running sampler's rate, tick count and measured own cost, or ``None``."""
    sampler = _SAMPLER
    return sampler.stats() if sampler is not None else None


def start_threads(*, sampler: SamplerMode | None = None, sampler_hz: float | None = None,
                  watchdog: bool | None = None, stall_threshold_ms: float | None = None) -> None:
    """What ``peeps.init`` switches on for threads: thread waiters/holders, the
    sampler, and (when asked) the event-loop watchdog.  Failures are logged once
    and that part is skipped; a bad explicit argument raises ``ValueError``."""
    from . import _watchdog

    if sampler is not None and sampler not in ("thread", "sigprof", "off"):
        raise ValueError(f"sampler must be 'thread', 'sigprof' or 'off', got {sampler!r}")
    if sampler_hz is not None and sampler_hz <= 0:
        raise ValueError(f"sampler_hz must be positive, got {sampler_hz!r}")
    enable_threads()
    try:
        start_sampler(mode=sampler, hz=sampler_hz)
    except Exception as exc:
        REGISTRY.part_failed("starting the thread sampler", exc)
    env_ms = _watchdog.threshold_from_env()
    threshold = stall_threshold_ms if stall_threshold_ms is not None else env_ms
    if watchdog is None:
        watchdog = threshold is not None and threshold > 0
    if watchdog:
        try:
            _watchdog.watch_future_loops(threshold or _watchdog.DEFAULT_THRESHOLD_MS)
        except Exception as exc:
            REGISTRY.part_failed("starting the event-loop watchdog", exc)


def stop_threads() -> None:
    """Stop the sampler and the watchdog (both joined) and the thread hook."""
    from . import _watchdog

    stop_sampler()
    _watchdog.unwatch_all()
    disable_threads()


# -- work handed to threads ------------------------------------------------------------


class ThreadCall:
    """One call run on a worker thread for an awaiting task (``thread_call`` node).

    ``task --needs[await]--> thread_call --needs[run]--> thread`` while it runs,
    so a wait-for cycle through a worker thread is visible.
    """

    __slots__ = ("__weakref__", "_peeps_id", "created_mono_ns", "finished_mono_ns", "fn_name",
                 "location", "started_mono_ns", "state", "waiters", "worker")

    def __init__(self, fn: Callable[..., Any], location: Location | None) -> None:
        self._peeps_id = new_id("thread_call")
        self.fn_name = getattr(fn, "__qualname__", None) or repr(fn)
        self.location = location
        self.created_mono_ns = time.monotonic_ns()
        self.started_mono_ns: int | None = None
        self.finished_mono_ns: int | None = None
        self.state = "queued"
        self.worker: ThreadEntity | None = None
        self.waiters = WaitSet()

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.worker = current_thread_entity()
        self.started_mono_ns = time.monotonic_ns()
        self.state = "running"
        try:
            return fn(*args, **kwargs)
        finally:
            self.finished_mono_ns = time.monotonic_ns()
            self.state = "done"
            self.worker = None

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, None, now)
        worker = self.worker
        attrs.update(
            function=self.fn_name,
            state=self.state,
            queued_ns=((self.started_mono_ns or now.mono_ns) - self.created_mono_ns),
            running_ns=(now.mono_ns - self.started_mono_ns
                        if self.started_mono_ns is not None and self.finished_mono_ns is None
                        else None),
            worker_thread_id=worker.id if worker is not None else None,
        )
        node: Node = {"id": self._peeps_id, "kind": "thread_call", "label": self.fn_name,
                      "attrs": attrs}
        edges = self.waiters.needs_edges(self._peeps_id, now)
        if worker is not None and self.started_mono_ns is not None:
            edges.append({"src": self._peeps_id, "dst": worker.id, "kind": "needs",
                          "attrs": {"op": "run",
                                    "since_ns": now.wall_of(self.started_mono_ns),
                                    "waited_ns": max(0, now.mono_ns - self.started_mono_ns)}})
        return node, edges


_CALLS: set[ThreadCall] = set()


async def run_in_executor(executor: Executor | None, fn: Callable[..., T], /,
                          *args: Any, **kwargs: Any) -> T:
    """``loop.run_in_executor`` that shows the call as a ``thread_call`` node the
    awaiting task ``needs``, linked to the worker thread running it.  Keyword
    arguments are passed to ``fn``; the caller's context variables are copied."""
    from ._tasks import current_task_entity

    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    if not STATE.enabled:
        return await loop.run_in_executor(
            executor, functools.partial(ctx.run, fn, *args, **kwargs))
    call = ThreadCall(fn, capture_location())
    waiter = current_task_entity()
    call.waiters.add(waiter, "await")
    _CALLS.add(call)
    REGISTRY.track(call)
    try:
        return await loop.run_in_executor(
            executor, functools.partial(ctx.run, call.run, fn, *args, **kwargs))
    finally:
        call.waiters.remove(waiter)
        _CALLS.discard(call)
        REGISTRY.untrack(call)


async def to_thread(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``asyncio.to_thread`` that shows up in the graph (see :func:`run_in_executor`)."""
    return await run_in_executor(None, fn, *args, **kwargs)


# -- fork safety -----------------------------------------------------------------------


def _after_fork_in_child() -> None:
    global _SAMPLER
    _BY_IDENT.clear()
    _CALLS.clear()
    with contextlib.suppress(AttributeError):
        del _LOCAL.entity
    # The sampler thread does not exist in the child (and fork does not inherit
    # interval timers); the child starts its own by calling init() again.  A
    # loop the parent's sampler ticked from must not tick it on in the child.
    if _SAMPLER is not None:
        _SAMPLER.running = False
    _SAMPLER = None
    coarse_clock_stopped()  # nobody ticks it any more: locks must read the clock


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
