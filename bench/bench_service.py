"""A realistic service under load: plain asyncio vs peeps disabled vs peeps all-on.

    python bench/bench_service.py -o bench/results/service.json [--quick] [--cycles N] [--slice S]
    python bench/bench_service.py --attribution   # CPU per request as components are added
    python bench/bench_service.py --by-process    # the same, each step its own process
    python bench/bench_service.py --no-pin        # services share every CPU with the rest
    python bench/bench_service.py --counters      # + cycles, cache misses, ... per request
    python bench/bench_service.py --per-snapshot  # what one snapshot costs the loaded service

The service (``serve``) is an aiohttp app whose handler spawns a tracked task
per request; that task takes a permit from a semaphore, sends a job through a
bounded queue to a pool of worker tasks and awaits the reply; a worker does a
little CPU work, updates shared counters under a lock and answers.

The load generator (``load``) is a separate process: raw-socket HTTP/1.1
keep-alive connections at fixed concurrency, measuring every request's latency.
In a session one service process per variant is up, and the load moves from
one to the next every half second, in an order rotated each cycle, so what else
the machine is doing (which drifts over tens of seconds on a shared VM and used
to swing whole rounds by ±30 %) lands on all variants alike.  Each slice
records its requests, latencies and the service's CPU time.  Six sessions of
fresh processes, session ``i`` with ``PYTHONHASHSEED=i`` for every variant (a
process's speed depends on its hash seed: see ``_measure``); the table gives
the median of the per-session ratios and, as spread, their min–max.  On two
CPUs or more the services run pinned to the last CPU and the load generator
and ``peeps-web`` to the others (see ``_pin``; ``--no-pin`` to share).  Variants:

* ``plain``: no peeps imported; asyncio primitives;
* ``plain_again``: a second plain process with the same seed, the control:
  its ratio to ``plain`` is how far apart two processes of one build land in
  this run, so steps smaller than that are not resolved;
* ``disabled``: the peeps wrappers with ``PEEPS_DISABLE=1``;
* ``enabled``: the wrappers with everything that exists in this tree switched
  on (automatic task tracking, patched primitives, thread sampler at 100 Hz,
  loop-stall watchdog) and connected to a real ``peeps-web`` snapshotting every
  second.  What was not available is listed in the table's note;
* ``unconnected``: the same, with no dashboard (no collector, no snapshots):
  the instrumentation's own cost.  Reported, not judged: the issue's all-on
  service is the connected one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import WebServer, median, median_ci, quantile, row, spread_text, write_result

SECTION = "1. realistic service"
#: The CPUs the services run on (unless ``--no-pin``); everything else (the
#: load generator, ``peeps-web``, this harness) gets the rest.  Empty: no pinning.
SERVICE_CPUS: set[int] = set()
WORKERS = 8
QUEUE_CAPACITY = 64
PERMITS = 48


# -- the service ------------------------------------------------------------------------


def _init_everything() -> list[str]:
    """``peeps.init`` with every feature asked for by ``PEEPS_BENCH_COMPONENTS``
    (default: all) through its public arguments, else through the probes below."""
    import inspect

    import peeps

    wanted = os.environ.get("PEEPS_BENCH_COMPONENTS", "auto,patch,sampler,watchdog").split(",")
    params = inspect.signature(peeps.init).parameters
    if not {"auto", "sampler", "sampler_hz", "watchdog"} <= params.keys():
        peeps.init("bench-service")
        return _enable_everything()
    peeps.init("bench-service", auto="auto" in wanted,
               sampler="thread" if "sampler" in wanted else "off", sampler_hz=100,
               watchdog="watchdog" in wanted)
    missing = []
    if "patch" in wanted:
        if hasattr(peeps, "patch"):
            peeps.patch()
        else:
            missing.append("peeps.patch()")
    return missing


def _enable_everything() -> list[str]:
    """Switch on every peeps feature present in this tree; return what is missing."""
    import peeps

    missing: list[str] = []
    # The attribution run switches components on one at a time.
    wanted = os.environ.get("PEEPS_BENCH_COMPONENTS", "auto,patch,sampler,watchdog").split(",")
    keys = {"automatic task tracking": "auto", "peeps.patch()": "patch",
            "thread sampler at 100 Hz": "sampler", "loop-stall watchdog": "watchdog"}

    def attempt(what: str, *calls: Any) -> None:
        if keys[what] not in wanted:
            return
        for call in calls:
            try:
                if call():
                    return
            except Exception as exc:
                print(f"bench service: {what}: {exc!r}", file=sys.stderr)
        missing.append(what)

    def auto() -> bool:
        from peeps import _autotrack  # type: ignore[attr-defined]

        _autotrack.enable_auto()
        return True

    attempt("automatic task tracking", auto)

    def patch() -> bool:
        fn = getattr(peeps, "patch", None)
        if fn is None:
            return False
        fn()
        return True

    attempt("peeps.patch()", patch)

    def sampler() -> bool:
        for name in ("start_sampler", "sample_threads", "start_thread_sampler"):
            fn = getattr(peeps, name, None)
            if fn is not None:
                try:
                    fn(hz=100)
                except TypeError:
                    fn(interval_s=0.01)
                return True
        try:
            from peeps import _threads  # type: ignore[attr-defined]
        except ImportError:
            return False
        fn = getattr(_threads, "start_sampler", None)
        if fn is None:
            return False
        fn(hz=100)
        return True

    attempt("thread sampler at 100 Hz", sampler)

    def watchdog() -> bool:
        for name in ("start_watchdog", "watch_loop", "watchdog"):
            fn = getattr(peeps, name, None)
            if callable(fn):
                fn()
                return True
        try:
            from peeps import _watchdog  # type: ignore[attr-defined]
        except ImportError:
            return False
        for name in ("start_watchdog", "start", "watch_loop"):
            fn = getattr(_watchdog, name, None)
            if callable(fn):
                fn()
                return True
        return False

    attempt("loop-stall watchdog", watchdog)
    return missing


class _Prims:
    def __init__(self, variant: str) -> None:
        self.variant = variant
        if variant in ("plain", *CONTROLS):
            self.queue = asyncio.Queue(QUEUE_CAPACITY)
            self.lock = asyncio.Lock()
            self.sem = asyncio.Semaphore(PERMITS)
            loop = asyncio.get_running_loop()
            self.spawn = lambda name, coro: loop.create_task(coro, name=name)
        else:
            import peeps

            self.queue = peeps.channel("jobs", capacity=QUEUE_CAPACITY)
            lock_cls = getattr(peeps, "Lock", asyncio.Lock)
            sem_cls = getattr(peeps, "Semaphore", asyncio.Semaphore)
            try:
                self.lock = lock_cls(name="stats")
            except TypeError:
                self.lock = lock_cls()
            try:
                self.sem = sem_cls(PERMITS, name="permits")
            except TypeError:
                self.sem = sem_cls(PERMITS)
            self.spawn = peeps.tasks.spawn_tracked


class _ComponentSwitch:
    """Switches peeps' components on and off in a running ``toggle`` service:
    automatic tracking (the loop's task factory), the thread sampler at
    100 Hz and the loop-stall watchdog.  What is on is always read back from
    peeps and the loop (:meth:`state`), never remembered."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.factory = loop.get_task_factory()

    def set(self, wanted: set[str]) -> None:
        import peeps
        from peeps import _watchdog  # unwatch_all: stop the watch and its thread

        on = self.state()
        for part in ("auto", "sampler", "watchdog"):
            if (part in wanted) == (part in on) and not (
                    part == "sampler" and ("sampler1000" in wanted) != ("sampler1000" in on)):
                continue
            if part == "auto":
                self.loop.set_task_factory(self.factory if part in wanted else None)
            elif part == "sampler":
                peeps.stop_sampler()
                if "sampler1000" in wanted:
                    # Ten times the ticks, to resolve what one costs: above the
                    # sampler's own cap (250 Hz), set on the running sampler, and
                    # without the budget's back-off.
                    sampler = peeps.start_sampler(mode="thread", hz=250, budget=1.0)
                    if sampler is not None:
                        sampler.hz = sampler.effective_hz = 1000.0
                elif part in wanted:
                    peeps.start_sampler(mode="thread", hz=100)
            elif part in wanted:
                peeps.watch_loop(self.loop)
            else:
                _watchdog.unwatch_all()

    def state(self) -> set[str]:
        """What is on, as read back from peeps and the loop (not as asked)."""
        import peeps
        from peeps import _watchdog

        on = set()
        if self.loop.get_task_factory() is not None:
            on.add("auto")
        stats = peeps.sampler_stats()
        if stats is not None:
            on.add("sampler")
            if stats["hz"] == 1000:
                on.add("sampler1000")
        if any(not w.stopped for w in _watchdog.watched_loops()):
            on.add("watchdog")
        return on


#: ``plain_threads``: (re-arm period, deadline) in seconds of peeps' two parked
#: threads as all-on runs them here: the sampler's standby (the loop ticks it at
#: the quiet pace, 4 × 10 ms, and each tick pushes the takeover deadline three
#: ticks ahead) and the watchdog (a heartbeat every 50 ms, deadline interval +
#: threshold + 1 ms).
PARKED_DEADLINES = ((0.04, 0.12), (0.05, 0.151))


def _park_threads_on_deadlines(loop: asyncio.AbstractEventLoop) -> None:
    """Two threads asleep in ``select()`` on Linux ``timerfd`` deadlines that the
    loop re-arms before they pass, as peeps' sampler and watchdog threads sleep
    (``peeps._deadline``), written again here so the control imports no peeps.
    Elsewhere (no ``timerfd``) the threads park on a pipe that never gets data."""
    settime: Any = None
    create: Any = None
    if hasattr(os, "timerfd_create"):  # 3.13+
        create = lambda clock, flags: os.timerfd_create(clock, flags=flags)  # noqa: E731
        settime = lambda fd, seconds: os.timerfd_settime(fd, initial=seconds)  # noqa: E731
    elif sys.platform.startswith("linux"):
        import ctypes

        class Timespec(ctypes.Structure):
            _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

        class Itimerspec(ctypes.Structure):
            _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]

        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int,
                                         ctypes.POINTER(Itimerspec), ctypes.c_void_p]
        create = lambda clock, flags: libc.timerfd_create(clock, flags)  # noqa: E731
        specs: dict[float, Any] = {}

        def settime(fd: int, seconds: float) -> None:
            spec = specs.setdefault(seconds, Itimerspec(
                Timespec(0, 0), Timespec(int(seconds), int(seconds % 1 * 1e9))))
            if libc.timerfd_settime(fd, 0, spec, None) != 0:
                raise OSError(ctypes.get_errno(), "timerfd_settime")
    for i, (period, seconds) in enumerate(PARKED_DEADLINES):
        fd = create(1, os.O_CLOEXEC | os.O_NONBLOCK) if settime is not None else -1
        if fd < 0:  # no timerfd: park on a pipe
            fd, _ = os.pipe()
        else:
            _rearm_every(loop, period, functools.partial(settime, fd, seconds))
        threading.Thread(target=_sleep_on, args=(fd,), daemon=True, name=f"parked-{i}").start()


def _rearm_every(loop: asyncio.AbstractEventLoop, period: float, rearm: Any) -> None:
    """Call ``rearm()`` now and then every ``period`` seconds on ``loop``."""
    rearm()
    loop.call_later(period, _rearm_every, loop, period, rearm)


#: How often ``plain_threads``' parked threads woke (a deadline passed before the
#: loop re-armed it: a stall, or the start-up before the loop first ran).
PARKED_WAKEUPS = [0]


def _sleep_on(fd: int) -> None:
    """Sleep in ``select()`` on ``fd``; when a deadline passes, count it,
    consume it and sleep again (as peeps' threads do after a look)."""
    import select

    while True:
        select.select([fd], [], [])
        PARKED_WAKEUPS[0] += 1
        with contextlib.suppress(BlockingIOError):
            os.read(fd, 8)


async def _serve(variant: str, port_file: str) -> None:
    from aiohttp import web

    missing: list[str] = []
    spin = SPIN_TURNS if variant == "plain_spin" else 0
    if variant == "plain_threads":
        _park_threads_on_deadlines(asyncio.get_running_loop())
    if variant not in ("plain", *CONTROLS):
        import peeps

        if variant in ("enabled", "unconnected", "toggle"):
            missing = _init_everything()
        else:
            peeps.init("bench-service")
    stats = {"done": 0, "work": 0}

    def start_workers(prims: _Prims) -> list[asyncio.Task[None]]:
        async def worker() -> None:
            while True:
                payload, reply = await prims.queue.get()
                acc = 0
                for i in range(payload):
                    acc += i * i
                await asyncio.sleep(0)
                async with prims.lock:
                    stats["done"] += 1
                    stats["work"] += acc & 0xFF
                if not reply.done():
                    reply.set_result(acc)

        return [prims.spawn(f"worker-{i}", worker()) for i in range(WORKERS)]

    # ``toggle`` (``--attribution``) holds both sets of primitives, each with its
    # workers, and switches between them (and peeps' components) on request.
    all_prims = ({"plain": _Prims("plain"), "peeps": _Prims("enabled")} if variant == "toggle"
                 else {variant: _Prims(variant)})
    current = [next(iter(all_prims.values()))]
    workers = [w for prims in all_prims.values() for w in start_workers(prims)]

    async def process(n: int) -> int:
        prims = current[0]
        async with prims.sem:
            reply = asyncio.get_running_loop().create_future()
            await prims.queue.put((n, reply))
            return await reply

    async def handle(request: web.Request) -> web.Response:
        n = int(request.query.get("n", "300"))
        if spin:  # plain_spin only: the other variants build no range per request
            for _ in range(spin):
                pass
        result = await current[0].spawn("request", process(n))
        return web.json_response({"result": result})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"missing": missing, "done": stats["done"],
                                  "threads": threading.active_count(),
                                  "parked_wakeups": PARKED_WAKEUPS[0]})

    app = web.Application()
    app.router.add_get("/work", handle)
    app.router.add_get("/health", health)
    if variant == "toggle":
        switch = _ComponentSwitch(asyncio.get_running_loop())

        async def components(request: web.Request) -> web.Response:
            on = set(filter(None, request.query.get("on", "").split(",")))
            current[0] = all_prims["peeps" if "wrappers" in on else "plain"]
            switch.set(on)
            state = switch.state() | ({"wrappers"} if current[0] is all_prims["peeps"] else set())
            return web.json_response({"on": sorted(state)})

        app.router.add_get("/components", components)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    Path(port_file).write_text(json.dumps({"port": port, "missing": missing,
                                           "cpus": sorted(os.sched_getaffinity(0)),
                                           "threads": threading.active_count()}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for w in workers:
        w.cancel()
    await runner.cleanup()


# -- the load generator -------------------------------------------------------------------


def _schedstat_works() -> bool:
    try:
        return int(Path("/proc/self/schedstat").read_text().split()[0]) > 0
    except (OSError, ValueError, IndexError):
        return False


_SCHEDSTAT = _schedstat_works()


def _cpu_s(pid: int) -> float:
    """CPU time of a process (all its threads), in seconds: the scheduler's
    exact run time per thread (``/proc/<pid>/task/*/schedstat``, ns) where
    the kernel has it, else utime + stime (clock ticks: 10 ms here, ±2 % of a
    half-second slice).  A thread that exits meanwhile is left out."""
    if _SCHEDSTAT:
        total = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return total / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _summary(lat: list[float], requests: int, elapsed: float, cpu: float) -> dict[str, float]:
    lat.sort()
    return {"requests": requests, "rps": requests / elapsed if elapsed else 0.0,
            "cpu_us_per_req": cpu / max(1, requests) * 1e6,
            "p50_ms": quantile(lat, 0.5) * 1e3, "p99_ms": quantile(lat, 0.99) * 1e3}


async def _load(targets: list[dict[str, Any]], concurrency: int, slice_s: float, cycles: int,
                warmup: float, counters: bool = False) -> dict[str, Any]:
    """Drive every service in turn, ``slice_s`` seconds each, ``cycles`` times.

    All services stay up for the whole run and the load moves between them
    every ``slice_s``, in an order rotated each cycle, so a slow drift in what
    else the machine is doing lands on every variant alike.  Per slice: every
    request's latency, the requests done, the slice's length (including the
    drain of requests in flight at its end) and the service's CPU time; with
    ``counters``, also the service's ``perf_event_open`` counts (cycles,
    cache misses, ...: ``_perf_events``), read around the slice as the CPU
    time is."""
    conns: dict[str, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
    requests: dict[str, bytes] = {}
    for t in targets:
        conns[t["label"]] = [await asyncio.open_connection("127.0.0.1", t["port"])
                             for _ in range(concurrency)]
        requests[t["label"]] = (f"GET /work?n=300 HTTP/1.1\r\nHost: 127.0.0.1:{t['port']}\r\n"
                                "Connection: keep-alive\r\n\r\n").encode()
    errors = 0

    async def one_slice(label: str, seconds: float) -> tuple[list[float], int]:
        nonlocal errors
        request = requests[label]
        end = time.perf_counter() + seconds
        latencies: list[float] = []

        async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if m:
                    await reader.readexactly(int(m.group(1)))
                if head.startswith(b"HTTP/1.1 200"):
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(conn(r, w) for r, w in conns[label]))
        return latencies, len(latencies)

    for t in targets:  # warm-up, not measured
        await one_slice(t["label"], warmup)
    accs: dict[str, dict[str, Any]] = {
        t["label"]: {"lat": [], "requests": 0, "elapsed": 0.0, "cpu": 0.0, "events": {}}
        for t in targets}
    pcs: dict[str, Any] = {}
    if counters:
        from _perf_events import ProcessCounters
        pcs = {t["label"]: ProcessCounters(t["pid"]) for t in targets}
    for cycle in range(cycles):
        k = cycle % len(targets)
        for t in targets[k:] + targets[:k]:
            pc = pcs.get(t["label"])
            ev0 = pc.read() if pc else {}
            cpu0 = _cpu_s(t["pid"])
            t0 = time.perf_counter()
            lat, n = await one_slice(t["label"], slice_s)
            acc = accs[t["label"]]
            acc["elapsed"] += time.perf_counter() - t0
            acc["cpu"] += _cpu_s(t["pid"]) - cpu0
            acc["requests"] += n
            acc["lat"].extend(lat)
            if pc:
                for name, value in pc.read().items():
                    acc["events"][name] = acc["events"].get(name, 0.0) + value - ev0.get(name, 0.0)
    for pool in conns.values():
        for _, writer in pool:
            writer.close()
    out: dict[str, Any] = {"errors": errors, "variants": {}}
    for label, a in accs.items():
        out["variants"][label] = _summary(a["lat"], a["requests"], a["elapsed"], a["cpu"])
        pc = pcs.get(label)
        if pc:
            out["variants"][label]["counters"] = {
                "per_req": {name: value / max(1, a["requests"])
                            for name, value in a["events"].items()},
                "unavailable": pc.unavailable, "user_only": pc.user_only,
                "coverage": pc.coverage()}
            pc.close()
    return out


# -- orchestration --------------------------------------------------------------------------


class _WebServer(WebServer):
    """A real ``python -m peeps.web`` snapshotting every second."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp / "bench-service.sqlite", PEEPS_SNAPSHOT_INTERVAL_S="1")

    def snapshots(self) -> int:
        """Snapshots taken so far: the newest one's id, as ids count up from 1
        in a fresh database (the list itself stops at the retention limit,
        500 by default, which a long run passes)."""
        newest = self.call("GET", "/api/snapshots?limit=1", timeout=10)["snapshots"]
        return int(newest[0]["snapshot_id"]) if newest else 0


#: ``--attribution``: the steps, each a set of components switched on in one
#: ``toggle`` service process (label, components).  The second is the first
#: again: the control, how far apart two measurements of the same thing land.
ATTRIBUTION = [
    ("plain primitives, no component", ""),
    ("plain primitives again (the control)", ""),
    ("peeps wrappers (channel, Lock, Semaphore, spawn_tracked)", "wrappers"),
    ("+ automatic task tracking", "wrappers,auto"),
    ("+ thread sampler at 100 Hz", "wrappers,auto,sampler"),
    ("+ loop-stall watchdog (all-on, no dashboard)", "wrappers,auto,sampler,watchdog"),
    # Not a step of all-on: the sampler's ticks ten times as often, so that
    # what one tick costs the loop (its after-effects included) is resolved.
    ("+ tracking, sampler at 1,000 Hz (10× the ticks; no watchdog)",
     "wrappers,auto,sampler,sampler1000"),
]


#: ``--by-process``: all-on's components added one at a time, each step its own
#: service process in the main table's harness (label, variant, components).
#: Ratios are against the first; the second is it again (the control).
BY_PROCESS = [
    ("plain", "plain", None),
    ("plain, a second process (the control)", "plain", None),
    ("peeps wrappers (channel, Lock, Semaphore, spawn_tracked)", "enabled", "none"),
    ("+ automatic task tracking", "enabled", "auto"),
    ("+ automatic task tracking, peeps.patch()", "enabled", "auto,patch"),
    ("+ automatic task tracking, thread sampler at 100 Hz", "enabled", "auto,sampler"),
    ("+ automatic task tracking, loop-stall watchdog", "enabled", "auto,watchdog"),
    ("all-on, no dashboard", "enabled", None),
]


def service_env(seed: int, components: str | None = None) -> dict[str, str]:
    """The environment of a ``serve`` process: this one's, without peeps
    settings, with hash seed ``seed``, fixed glibc thresholds and, if given,
    ``PEEPS_BENCH_COMPONENTS``.

    Why the thresholds: glibc serves a ``malloc`` over its mmap threshold
    (128 KiB at start) with a fresh ``mmap`` and raises the threshold only once
    such a block is freed; below it, freeing returns the heap's top to the OS
    past the trim threshold.  asyncio (3.11) reads every socket with
    ``recv(256 KiB)`` and shrinks the result, so until the process happens to
    free one big block, *every read* maps, faults in and unmaps 260 KiB: 1-2
    page faults and ~25 µs per request here.  Whether an import had already
    freed a big block decided whether a variant paid it (plain did; peeps'
    import happened not to), which is what made peeps look *cheaper* than
    plain.  A long-running service has long since raised its threshold; fixing
    both thresholds for every variant measures that state and takes the
    lottery out."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONHASHSEED=str(seed))
    for key in ("PEEPS_DASHBOARD", "PEEPS_DISABLE", "PEEPS_BENCH_COMPONENTS"):
        env.pop(key, None)
    env["GLIBC_TUNABLES"] = ":".join(filter(None, [
        os.environ.get("GLIBC_TUNABLES"),
        "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=16777216"]))
    if components is not None:
        env["PEEPS_BENCH_COMPONENTS"] = components
    return env


def _pin(enabled: bool) -> str:
    """Pin this harness (and so the load generator and ``peeps-web``, which
    inherit it) to all CPUs but the last; the services pin themselves to the
    last one (``serve --cpus``).  Returns what was done, for the table.

    Why: on a small machine the load generator and the dashboard's ingest
    otherwise share the service's CPUs, and the scheduler's placement of them
    (migrations, preemption) lands on the variants unevenly -- it was most of
    the all-on service's throughput and p99 gap on 2 vCPUs.  In production the
    dashboard and the clients are elsewhere; pinning is the nearest a
    one-machine benchmark gets to that."""
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled:
        return "not pinned (--no-pin): services, load generator and peeps-web share every CPU"
    if len(cpus) < 2:
        return f"not pinned: one CPU ({cpus}) for services, load generator and peeps-web"
    SERVICE_CPUS.clear()
    SERVICE_CPUS.add(cpus[-1])
    os.sched_setaffinity(0, set(cpus[:-1]))
    return (f"pinned: services on CPU {cpus[-1]}, the load generator and peeps-web on "
            f"CPU {','.join(map(str, cpus[:-1]))}")


class _Service:
    """One service process of one variant, up for the whole run."""

    def __init__(self, label: str, variant: str, dashboard: str, tmp: Path,
                 components: str | None = None, connect: bool = True, seed: int = 0) -> None:
        env = service_env(seed, components)
        if variant == "disabled":
            env["PEEPS_DISABLE"] = "1"
        if variant == "enabled" and connect:
            env["PEEPS_DASHBOARD"] = dashboard
        self.label = label
        self.port_file = tmp / f"port-{label.replace(' ', '_').replace('/', '_')}"
        cpus = ["--cpus", ",".join(map(str, sorted(SERVICE_CPUS)))] if SERVICE_CPUS else []
        self.proc = subprocess.Popen([sys.executable, __file__, "serve", "--variant", variant,
                                      "--port-file", str(self.port_file), *cpus], env=env,
                                     stderr=subprocess.PIPE, text=True)
        self.info: dict[str, Any] = {}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while not self.port_file.exists() or not self.port_file.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""
                raise RuntimeError(f"service {self.label} did not start: {err}")
            time.sleep(0.05)
        self.info = json.loads(self.port_file.read_text())
        if SERVICE_CPUS and self.info.get("cpus") != sorted(SERVICE_CPUS):
            raise RuntimeError(f"service {self.label} runs on CPUs {self.info.get('cpus')}, "
                               f"not {sorted(SERVICE_CPUS)}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.port_file.unlink(missing_ok=True)


def _run_load(targets: list[dict[str, Any]], args: argparse.Namespace, cycles: int,
              timeout: float, counters: bool = False) -> dict[str, Any]:
    """Run the load generator (``load``, a process of its own) over ``targets``
    for ``cycles`` slices each, with ``args``' concurrency, slice and warm-up;
    its result (``_load``'s)."""
    load = subprocess.run([sys.executable, __file__, "load", "--targets", json.dumps(targets),
                           "--concurrency", str(args.concurrency), "--slice", str(args.slice),
                           "--cycles", str(cycles), "--warmup", str(args.warmup)]
                          + (["--counters"] if counters else []),
                          capture_output=True, text=True, timeout=timeout)
    if load.returncode != 0:
        raise RuntimeError(f"load generator failed: {load.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(load.stdout.strip().splitlines()[-1])
    return result


def _measure(configs: list[tuple[str, str, str | None, bool]], web: _WebServer, tmp: Path,
             args: argparse.Namespace) -> dict[str, Any]:
    """``args.sessions`` sessions, each one service per ``(label, variant,
    components, connect)`` driven by one rotating load generator; return the
    per-variant results, pooled and per session.

    Why sessions of fresh processes: one Python process's speed depends on its
    string-hash seed (dict layouts, the type attribute cache), and on this
    machine two processes of the *same* code differed by up to 25 % in CPU per
    request, stable for their whole life.  So session ``i`` runs every variant
    with ``PYTHONHASHSEED=i`` (reproducible, the same seeds for every variant),
    its ratios are against its own plain process, and the table gives the
    median over sessions."""
    sessions: list[dict[str, Any]] = []
    missing: dict[str, list[str]] = {}
    per_session = len(configs) * (args.cycles * args.slice + args.warmup)
    print(f"service: {args.sessions} sessions × {len(configs)} variants, {args.cycles} slices "
          f"of {args.slice:g} s each per variant (~{args.sessions * (per_session + 4):.0f} s)",
          file=sys.stderr)
    for seed in range(1, args.sessions + 1):
        services = [_Service(label, variant, web.dashboard, tmp, components, connect, seed)
                    for label, variant, components, connect in configs]
        try:
            for svc in services:
                svc.wait_ready()
            targets = [{"label": svc.label, "port": svc.info["port"], "pid": svc.proc.pid}
                       for svc in services]
            result = _run_load(targets, args, args.cycles, per_session * 3 + 120, args.counters)
            for svc in services:
                missing[svc.label] = svc.info.get("missing", [])
                if svc.proc.poll() is not None:
                    raise RuntimeError(f"service {svc.label} died during the run")
        finally:
            for svc in services:
                svc.stop()
        sessions.append(result["variants"])
        print(f"service session {seed}/{args.sessions}: " + ", ".join(
            f"{label} {v['cpu_us_per_req']:.0f} µs/req p99 {v['p99_ms']:.2f} ms"
            for label, v in result["variants"].items()), file=sys.stderr)
    variants: dict[str, Any] = {}
    for label, *_ in configs:
        each = [session[label] for session in sessions]
        requests = sum(e["requests"] for e in each)
        variants[label] = {
            "requests": requests,
            "rps": median([e["rps"] for e in each]),
            "cpu_us_per_req": sum(e["cpu_us_per_req"] * e["requests"] for e in each)
            / max(1, requests),
            "p50_ms": median([e["p50_ms"] for e in each]),
            "p99_ms": median([e["p99_ms"] for e in each]),
            "missing": missing[label],
            "sessions": each,
        }
    return {"variants": variants}


#: SQL for the collector's report on the snapshot before (see ``_snapshot_cost``).
_COLLECTOR_REPORT = ("SELECT attrs ->> '$.collector.last_snapshot' FROM nodes "
                     "WHERE kind = 'thread' AND label = 'peeps-collector' AND proc_key = ?")


def _snapshot_cost(web: _WebServer, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """What a snapshot of the loaded all-on service costs its event loop.

    One connected all-on service under the same load, alone, for
    ``args.cost_s`` seconds while ``peeps-web`` asks for a snapshot every
    second.  Each reply's ``peeps-collector`` thread node reports the one
    before it (``collector.last_snapshot``: the slices worked on the loop and
    their time, the collector thread's CPU, request-to-reply time, size),
    read back through ``/api/sql``.  This is the work behind the snapshots'
    share of p99: while a slice runs, every request in flight waits."""
    svc = _Service("snapshot-cost", "enabled", web.dashboard, tmp, seed=1)
    try:
        svc.wait_ready()
        before = web.call("GET", "/api/snapshots?limit=1")["snapshots"]
        first = before[0]["snapshot_id"] if before else 0
        targets = [{"label": "enabled", "port": svc.info["port"], "pid": svc.proc.pid}]
        cycles = max(1, round(args.cost_s / args.slice))
        _run_load(targets, args, cycles, args.cost_s * 3 + 120)
        after = web.call("GET", "/api/snapshots?limit=1")["snapshots"]
        last = after[0]["snapshot_id"] if after else 0
    finally:
        svc.stop()
    proc_key = f"bench-service-{svc.proc.pid}"
    reports: list[dict[str, Any]] = []
    # The first two after the load began may report a snapshot from before it.
    for snapshot_id in range(first + 3, last + 1):
        res = web.call("POST", "/api/sql", {"snapshot_id": snapshot_id, "sql": _COLLECTOR_REPORT,
                                            "params": [proc_key]})
        for (text,) in res["rows"]:
            if text:
                reports.append(json.loads(text))
    return {"reports": reports, "proc_key": proc_key}


def _ci_text(each: list[float], fmt: str = "{:.3f}") -> str:
    """The 95 % bootstrap interval of the median over sessions, for a row's note:
    what the run resolves (a budget inside it is neither met nor missed)."""
    if len(each) < 2:
        return f"{len(each)} session: no interval"
    lo, hi = median_ci(each)
    return (f"95 % CI of the median {fmt.format(lo)}–{fmt.format(hi)} "
            f"over {len(each)} sessions")


def _ratios(res: dict[str, Any], base: dict[str, Any], key: str) -> tuple[float, list[float]]:
    """The median over sessions of each session's ratio to its own plain
    process (same hash seed, same minutes), and those ratios (the spread)."""
    each = [b[key] / p[key] for b, p in zip(res["sessions"], base["sessions"], strict=True)
            if p[key] and b["requests"] and p["requests"]]
    return median(each), each


#: ``--counters``' rows (the same service runs as section 1's).
COUNTER_SECTION = "1f. service counters per request (--counters)"


def _counter_rows(variants: dict[str, Any], labels: tuple[str, ...]) -> list[dict[str, Any]]:
    """``--counters``: per event, plain's count per request (median over
    sessions) and every other variant's ratio to it, session by session as
    CPU per request is; with cycles and instructions, instructions per cycle.
    Events the kernel would not count get one row saying why."""
    from _perf_events import EVENTS

    def per_req(session: dict[str, Any], name: str) -> float | None:
        value = session.get("counters", {}).get("per_req", {}).get(name)
        return value if session.get("requests") else None

    def ipc(session: dict[str, Any]) -> float | None:
        cycles, instructions = per_req(session, "cycles"), per_req(session, "instructions")
        return instructions / cycles if cycles and instructions is not None else None

    plain_sessions = variants["plain"]["sessions"]
    info = next((s["counters"] for s in plain_sessions if "counters" in s), None)
    if info is None:
        return []
    scope = ("user space only (perf_event_paranoid forbids counting the kernel)"
             if info["user_only"] else "user and kernel mode")
    measures: list[tuple[str, str, Any, str]] = [
        (e.name, "ns" if e.name == "task-clock" else "", functools.partial(per_req, name=e.name),
         e.what) for e in EVENTS if e.name not in info["unavailable"]]
    if not {"cycles", "instructions"} & info["unavailable"].keys():
        measures.append(("instructions per cycle", "", ipc, "IPC: instructions / cycles"))
    rows: list[dict[str, Any]] = []
    for name, unit, get, what in measures:
        base = [get(s) for s in plain_sessions]
        counted = [b for b in base if b is not None]
        coverage = min((s["counters"]["coverage"].get(name, 1.0) for s in plain_sessions
                        if "counters" in s), default=1.0)
        rows.append(row(COUNTER_SECTION, f"plain: {name} per request"
                        if name != "instructions per cycle" else f"plain: {name}",
                        median(counted), unit, spread=spread_text(counted, "{:.4g}"),
                        note=f"{what}; {scope}"
                        + (f"; on the PMU {coverage:.0%} of the time, scaled as perf stat "
                           "scales" if coverage < 0.999 else "")))
        if not any(counted) and not any(get(s) for label in labels[1:]
                                        for s in variants[label]["sessions"]):
            rows[-1]["note"] += "; none in any variant"
            continue
        for label in labels[1:]:
            values = [get(s) for s in variants[label]["sessions"]]
            mine = [v for v in values if v is not None]
            if not any(counted):  # none in plain: a ratio means nothing, give the count
                rows.append(row(COUNTER_SECTION, f"{LABELS[label]}: {name} per request",
                                median(mine), unit, spread=spread_text(mine, "{:.4g}"),
                                note="plain had none"))
                continue
            each = [v / b for v, b in zip(values, base, strict=True)
                    if v is not None and b]
            rows.append(row(COUNTER_SECTION, f"{LABELS[label]}: {name} vs plain",
                            median(each) if each else None, "×",
                            spread=spread_text(each, "{:.3f}"), baseline="plain",
                            note=f"{median(mine):.4g}{' ' + unit if unit else ''} per request"
                                 f"{'' if name != 'instructions per cycle' else ' (IPC)'}; "
                                 f"{_ci_text(each)}"))
    if info["unavailable"]:
        by_reason: dict[str, list[str]] = {}
        for name, why in info["unavailable"].items():
            by_reason.setdefault(why, []).append(name)
        rows.append(row(COUNTER_SECTION, "events not counted on this machine", None, "",
                        note="; ".join(f"{', '.join(names)} ({why})"
                                       for why, names in by_reason.items())))
    return rows


#: What a service process can run (``serve --variant``).
SERVED = ("plain", "disabled", "enabled", "unconnected", "toggle", "plain_spin",
          "plain_threads")
#: The table's variants: ``plain_again`` is a second plain process (same hash
#: seed), the control that shows what differences this run can resolve.
VARIANTS = ("plain", "plain_again", "disabled", "enabled", "unconnected")
#: ``--controls``: plain services that differ from plain by a known amount
#: (not peeps), to check what the harness reports for that.
CONTROLS = ("plain_spin", "plain_threads")
#: ``plain_spin``'s extra work per request: empty loop turns in the handler
#: (~4.8 µs on an idle CPU of the AMD VM, 2026-12-02).
SPIN_TURNS = 220
#: Row labels; ``unconnected`` is all-on with no dashboard: the instrumentation's
#: own cost.
LABELS = {"plain_again": "plain, a second process", "disabled": "peeps disabled",
          "plain_spin": f"plain + {SPIN_TURNS} empty loop turns per request (a known cost)",
          "plain_threads": "plain + two threads asleep on deadlines the loop re-arms "
                           "(as peeps' are)",
          "enabled": "peeps all-on", "unconnected": "peeps all-on, no dashboard"}


def _attribution(args: argparse.Namespace) -> None:
    """CPU per request as components are switched on, inside one process.

    Separate processes of one build land up to ±3 % apart here (the control
    row of the main table), more than most single components cost.  So each
    session starts one ``toggle`` service (hash seed ``i``, the glibc
    thresholds of the main table) holding the plain and the peeps primitives
    and all components, and moves it through the steps of ``ATTRIBUTION``
    between load slices, in an order rotated each cycle: one process, one
    memory layout, every step.  Per step and session: the CPU per request over
    its slices; the table gives the median over sessions of the ratio to the
    first step, with the min-max as spread.  Left out: ``peeps.patch()`` (it
    would swap the plain primitives too; the service creates its own) and the
    dashboard (the main table's connected vs unconnected rows).  The first
    step runs with peeps imported, so ``import peeps`` is not in these ratios
    (the disabled row of the main table is)."""
    import urllib.request

    sessions: list[dict[str, dict[str, float]]] = []
    steps = [label for label, _ in ATTRIBUTION]
    per_session = len(steps) * args.cycles * (args.slice + args.warmup + 0.6)
    print(f"service attribution: {args.sessions} sessions × {len(steps)} steps, {args.cycles} "
          f"slices of {args.slice:g} s each (~{args.sessions * (per_session + 3):.0f} s)",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="peeps-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for seed in range(1, args.sessions + 1):
            svc = _Service("toggle", "toggle", "", tmp, "auto,sampler,watchdog", False, seed)
            acc = {label: {"requests": 0, "cpu": 0.0} for label in steps}
            try:
                svc.wait_ready()
                target = {"label": "toggle", "port": svc.info["port"], "pid": svc.proc.pid}
                for cycle in range(args.cycles):
                    k = cycle % len(ATTRIBUTION)
                    for label, on in ATTRIBUTION[k:] + ATTRIBUTION[:k]:
                        with urllib.request.urlopen(
                                f"http://127.0.0.1:{target['port']}/components?on={on}",
                                timeout=30) as reply:
                            state = json.loads(reply.read())["on"]
                        if state != sorted(filter(None, on.split(","))):
                            raise RuntimeError(f"asked for {on!r}, the service has {state}")
                        v = _run_load([target], args, 1, 120)["variants"]["toggle"]
                        acc[label]["requests"] += v["requests"]
                        acc[label]["cpu"] += v["cpu_us_per_req"] * v["requests"]
                if svc.proc.poll() is not None:
                    raise RuntimeError("the toggle service died during the run")
            finally:
                svc.stop()
            session = {label: {"requests": a["requests"],
                               "cpu_us_per_req": a["cpu"] / max(1, a["requests"])}
                       for label, a in acc.items()}
            sessions.append(session)
            print(f"service attribution session {seed}/{args.sessions}: " + ", ".join(
                f"{v['cpu_us_per_req']:.1f}" for v in session.values()) + " µs/req",
                file=sys.stderr)
    base = steps[0]
    rows = []
    for label in steps[1:]:
        each = [s[label]["cpu_us_per_req"] / s[base]["cpu_us_per_req"] for s in sessions
                if s[base]["requests"] and s[label]["requests"]]
        rows.append(row("1b. service overhead by component, in one process",
                        f"{label}: CPU per request vs plain primitives", median(each), "×",
                        spread=spread_text(each, "{:.3f}"), baseline=base,
                        note=f"{median([s[label]['cpu_us_per_req'] for s in sessions]):.1f} "
                             f"µs/req; {_ci_text(each)}"))
    if args.output:
        write_result(args.output, "service_attribution", rows, quick=args.quick,
                     meta={"sessions": sessions, "pinning": args.pinning})
    else:
        print(json.dumps(rows, indent=1))


def _by_process(args: argparse.Namespace) -> None:
    """CPU per request and p99 as all-on's components are added, each step its
    own process: the main table's sessions of fresh processes (hash seed
    ``i``, the glibc thresholds), so what a component costs a whole process
    (its layout, its threads) is in, at the price of the processes' spread
    (the control row); ``--attribution`` is the in-process counterpart."""
    import types

    configs = [(label, variant, components, False) for label, variant, components in BY_PROCESS]
    with tempfile.TemporaryDirectory(prefix="peeps-bench-") as tmpdir:
        result = _measure(configs, types.SimpleNamespace(dashboard=""), Path(tmpdir), args)
    variants = result["variants"]
    base = BY_PROCESS[0][0]
    rows = []
    for label, *_ in BY_PROCESS[1:]:
        pairs = list(zip(variants[label]["sessions"], variants[base]["sessions"], strict=True))
        for measure, key in (("CPU per request", "cpu_us_per_req"), ("p99 latency", "p99_ms")):
            each = [s[key] / b[key] for s, b in pairs if b[key]]
            rows.append(row("1e. service overhead by component, one process per step",
                            f"{label}: {measure} vs plain", median(each), "×",
                            spread=spread_text(each, "{:.3f}"), baseline=base,
                            note=f"{median([s[key] for s, _ in pairs]):.3g} "
                                 + ("µs/req" if key == "cpu_us_per_req" else "ms")
                                 + f"; {_ci_text(each)}"))
    if args.output:
        write_result(args.output, "service_by_process", rows, quick=args.quick,
                     meta={"sessions": [{label: v["sessions"][i] for label, v in variants.items()}
                                        for i in range(args.sessions)],
                           "pinning": args.pinning})
    else:
        print(json.dumps(rows, indent=1))


#: ``--per-snapshot``'s section.
PER_SNAPSHOT_SECTION = "1g. what a snapshot costs the loaded service, in one process (--per-snapshot)"


class _Jumper:
    """Asks ``peeps-web`` for a snapshot (``POST /api/jump-now``, which answers
    once the snapshot is stored) ``rate`` times a second on a thread, until
    ``stop``; counts the snapshots and the seconds it was asking."""

    def __init__(self, web: WebServer, rate: float) -> None:
        self.web, self.rate = web, rate
        self.jumps = 0
        self.incomplete = 0
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="bench-jumper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        due = time.perf_counter()
        while not self._stop.is_set():
            try:
                reply = self.web.call("POST", "/api/jump-now", {}, timeout=30)
            except Exception as exc:  # reported by stop()
                self.error = exc
                return
            self.jumps += 1
            if not reply.get("requested") or reply.get("responded") != reply.get("requested"):
                self.incomplete += 1
            due += 1 / self.rate
            self._stop.wait(max(0.0, due - time.perf_counter()))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self.seconds = time.perf_counter() - self._t0
        if self.error is not None:
            raise RuntimeError(f"asking peeps-web for a snapshot failed: {self.error!r}")


def _per_snapshot(args: argparse.Namespace) -> None:
    """What one snapshot costs the loaded all-on service, measured inside one
    process.

    The main table's connected and unconnected all-on services are two
    processes, so their difference carries the ±3 % that separates any two
    processes here, more than a snapshot a second costs.  So each session
    starts one connected all-on service (hash seed ``i``, the main table's
    glibc thresholds) and a ``peeps-web`` that takes no snapshot of its own,
    and alternates load slices without snapshots (A) and with a snapshot asked
    for ``--snapshot-rate`` times a second (B), ABBA.  Per session: CPU per
    request in each, and the extra CPU a second in B divided by the snapshots
    a second: the service's whole CPU per snapshot (its loop work, the
    collector thread, the socket, and what the snapshot's after-effects cost
    the requests), to set beside the collector's own report of its loop work
    (section 1).  Also the service's busy share of the slice: ``peeps-web``
    ingests on the load generator's CPU, so with many snapshots a second the
    generator falls behind and the service idles, which lowers throughput
    more than CPU per request."""
    rate = args.snapshot_rate
    sessions: list[dict[str, Any]] = []
    n_slices = 4 * args.cycles
    per_session = n_slices * (args.slice + args.warmup + 0.6)
    print(f"service per snapshot: {args.sessions} sessions × {n_slices} slices of "
          f"{args.slice:g} s, ABBA without / with {rate:g} snapshots a second "
          f"(~{args.sessions * (per_session + 4):.0f} s)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="peeps-bench-") as tmpdir:
        tmp = Path(tmpdir)
        web = WebServer(tmp / "per-snapshot.sqlite")  # no snapshot but those asked for
        try:
            for seed in range(1, args.sessions + 1):
                svc = _Service("per-snapshot", "enabled", web.dashboard, tmp, seed=seed)
                acc = {k: {"requests": 0, "cpu_us": 0.0, "seconds": 0.0} for k in ("A", "B")}
                jumps, jump_s, incomplete = 0, 0.0, 0  # B's snapshots, over its jumpers' time
                try:
                    svc.wait_ready()
                    web.jump()  # the first snapshot adopts every task: not a steady one
                    target = {"label": "svc", "port": svc.info["port"], "pid": svc.proc.pid}
                    for i in range(n_slices):
                        kind = "ABBA"[i % 4]
                        jumper = _Jumper(web, rate) if kind == "B" else None
                        try:
                            v = _run_load([target], args, 1, 120)["variants"]["svc"]
                        finally:
                            if jumper:
                                jumper.stop()
                        a = acc[kind]
                        a["requests"] += v["requests"]
                        a["cpu_us"] += v["cpu_us_per_req"] * v["requests"]
                        a["seconds"] += v["requests"] / v["rps"] if v["rps"] else 0.0
                        if jumper:
                            jumps += jumper.jumps
                            jump_s += jumper.seconds
                            incomplete += jumper.incomplete
                    if svc.proc.poll() is not None:
                        raise RuntimeError("the service died during the run")
                finally:
                    svc.stop()
                session: dict[str, Any] = {}
                for k, a in acc.items():
                    session[k] = {"requests": a["requests"],
                                  "cpu_us_per_req": a["cpu_us"] / max(1, a["requests"]),
                                  "rps": a["requests"] / a["seconds"] if a["seconds"] else 0.0,
                                  "busy": a["cpu_us"] * 1e-6 / a["seconds"] if a["seconds"]
                                  else 0.0}
                if incomplete:  # no use going on: the service is not being snapshotted
                    raise RuntimeError(f"session {seed}: {incomplete} of {jumps} snapshots "
                                       "did not get the service's reply (is it connected?)")
                session["snapshots_per_s"] = jumps / jump_s if jump_s else 0.0
                extra_cpu_s_per_s = ((session["B"]["cpu_us_per_req"]
                                      - session["A"]["cpu_us_per_req"]) * 1e-6
                                     * session["B"]["rps"])
                session["cpu_ms_per_snapshot"] = (
                    extra_cpu_s_per_s / session["snapshots_per_s"] * 1e3
                    if session["snapshots_per_s"] else float("nan"))
                sessions.append(session)
                print(f"service per snapshot session {seed}/{args.sessions}: "
                      f"{session['A']['cpu_us_per_req']:.1f} → "
                      f"{session['B']['cpu_us_per_req']:.1f} µs/req at "
                      f"{session['snapshots_per_s']:.2f} snapshots/s: "
                      f"{session['cpu_ms_per_snapshot']:.2f} ms of CPU each", file=sys.stderr)
        finally:
            web.stop()
    rates = [s["snapshots_per_s"] for s in sessions]
    rows = []
    a_cpu = [s["A"]["cpu_us_per_req"] for s in sessions]
    rows.append(row(PER_SNAPSHOT_SECTION, "all-on, no snapshots: service CPU per request",
                    median(a_cpu), "µs", spread=spread_text(a_cpu, "{:.1f}"),
                    note=f"busy {median([s['A']['busy'] for s in sessions]):.1%} of the "
                         f"slices; {args.pinning}"))
    for key, what in (("cpu_us_per_req", "service CPU per request"), ("rps", "throughput")):
        each = [s["B"][key] / s["A"][key] for s in sessions if s["A"][key]]
        rows.append(row(PER_SNAPSHOT_SECTION,
                        f"all-on, {median(rates):.1f} snapshots a second: {what} vs none",
                        median(each), "×", spread=spread_text(each, "{:.3f}"),
                        baseline="all-on, no snapshots",
                        note=_ci_text(each) + (
                            f"; busy {median([s['B']['busy'] for s in sessions]):.1%} of the "
                            "slices (peeps-web ingests on the load generator's CPU)"
                            if key == "rps" else "")))
    per = [s["cpu_ms_per_snapshot"] for s in sessions]
    rows.append(row(PER_SNAPSHOT_SECTION, "service CPU per snapshot", median(per), "ms",
                    spread=spread_text(per, "{:.2f}"),
                    note=f"{_ci_text(per, '{:.2f}')}; at one snapshot a second, "
                         f"{median(per) / 10:.2f} % of a core; the whole process (loop, "
                         "collector thread, socket, after-effects), against the collector's "
                         "own report of its loop work in section 1"))
    if args.output:
        write_result(args.output, "service_per_snapshot", rows, quick=args.quick,
                     meta={"sessions": sessions, "snapshot_rate": rate,
                           "pinning": args.pinning})
    else:
        print(json.dumps(rows, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--variant", choices=SERVED, required=True)
    p_serve.add_argument("--port-file", required=True)
    p_serve.add_argument("--cpus", default="",
                         help="comma-separated CPUs to pin this process to, before anything starts")
    p_load = sub.add_parser("load")
    p_load.add_argument("--targets", required=True, help="JSON: [{label, port, pid}, ...]")
    for p in (p_load, parser):
        p.add_argument("--concurrency", type=int, default=32)
        p.add_argument("--slice", type=float, default=None,
                       help="seconds of load on one variant before moving on (default 0.5)")
        p.add_argument("--cycles", type=int, default=None,
                       help="slices per variant in a session (default 8)")
        p.add_argument("--warmup", type=float, default=None,
                       help="unmeasured seconds per variant first (default 1)")
        p.add_argument("--counters", action="store_true",
                       help="also count each service's cycles, instructions, cache and TLB "
                            "misses, context switches and page faults per request "
                            "(perf_event_open); events this machine cannot count are listed "
                            "with the kernel's reason")
    parser.add_argument("--sessions", type=int, default=None,
                        help="sessions of fresh processes, hash seeds 1..N (default 6)")
    parser.add_argument("-o", "--output")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cost-s", type=float, default=None,
                        help="seconds of load on the all-on service alone, for what a "
                             "snapshot costs its loop (default 12)")
    parser.add_argument("--attribution", action="store_true",
                        help="instead: CPU per request as components are switched on")
    parser.add_argument("--by-process", action="store_true",
                        help="instead: CPU per request and p99 as components are added, "
                             "each step its own process")
    parser.add_argument("--per-snapshot", action="store_true",
                        help="instead: what one snapshot costs the loaded all-on service, "
                             "slices with and without snapshots alternated in one process")
    parser.add_argument("--snapshot-rate", type=float, default=5.0,
                        help="--per-snapshot: snapshots asked for per second in the slices "
                             "with snapshots (default 5)")
    parser.add_argument("--controls", action="store_true",
                        help="also run plain services with a known extra cost (empty loop "
                             "turns per request; two parked threads), reported, not judged")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin: by default the services run on the last CPU and the "
                             "load generator and dashboard on the rest")
    args = parser.parse_args()
    attribution, per_snapshot = args.attribution, args.per_snapshot
    args.slice = args.slice or (0.2 if args.quick else 1.5 if attribution
                                else 1.0 if per_snapshot else 0.5)
    # --per-snapshot: cycles of ABBA, four slices each.
    args.cycles = args.cycles or (2 if args.quick else 4 if attribution
                                  else 6 if per_snapshot else 8)
    # --attribution, --per-snapshot: the unmeasured load before each slice
    # (each slice is a fresh load generator).
    args.warmup = args.warmup if args.warmup is not None else (
        0.2 if args.quick or attribution or per_snapshot else 1.0)
    args.sessions = args.sessions or (1 if args.quick else 5 if attribution
                                      else 10 if per_snapshot else 6)
    args.cost_s = args.cost_s or (3.0 if args.quick else 12.0)

    if args.cmd == "serve":
        if args.cpus:
            # First thing, before any thread exists: every thread started later
            # (peeps' collector, sampler, watchdog) inherits it.
            os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
        asyncio.run(_serve(args.variant, args.port_file))
        return
    if args.cmd == "load":
        print(json.dumps(asyncio.run(_load(json.loads(args.targets), args.concurrency, args.slice,
                                           args.cycles, args.warmup, args.counters))))
        return
    modes = [flag for flag, on in (("--attribution", args.attribution),
                                   ("--by-process", args.by_process),
                                   ("--per-snapshot", args.per_snapshot)) if on]
    if len(modes) > 1:
        parser.error(f"{' and '.join(modes)} are separate runs: choose one")
    if args.counters and modes:
        parser.error("--counters counts the main run's services (with or without --controls), "
                     f"not {modes[0]}'s")
    if not 0 < args.snapshot_rate <= 50:
        parser.error("--snapshot-rate must be above 0 and at most 50 a second")
    pinning = args.pinning = _pin(args.pin)
    print(f"service: {pinning}", file=sys.stderr)
    if args.attribution:
        _attribution(args)
        return
    if args.by_process:
        _by_process(args)
        return
    if args.per_snapshot:
        _per_snapshot(args)
        return
    labels = VARIANTS + (CONTROLS if args.controls else ())
    configs = [(v, "plain" if v == "plain_again" else v, None, v != "unconnected")
               for v in labels]
    with tempfile.TemporaryDirectory(prefix="peeps-bench-") as tmpdir:
        tmp = Path(tmpdir)
        web = _WebServer(tmp)
        try:
            t0 = time.monotonic()
            result = _measure(configs, web, tmp, args)
            elapsed = time.monotonic() - t0
            snapshots = web.snapshots()
            print(f"service: the all-on service alone for {args.cost_s:g} s, for what a "
                  "snapshot costs its loop", file=sys.stderr)
            cost = _snapshot_cost(web, tmp, args)
        finally:
            web.stop()
    variants = result["variants"]
    for label in labels:
        v = variants[label]
        print(f"service {label}: {v['rps']:.0f} req/s p50 {v['p50_ms']:.2f} ms "
              f"p99 {v['p99_ms']:.2f} ms cpu {v['cpu_us_per_req']:.0f} us/req", file=sys.stderr)

    rows = []
    plain = variants["plain"]
    missing = variants["enabled"]["missing"]

    def spread(label: str, key: str, fmt: str) -> str:
        return spread_text([b[key] for b in variants[label]["sessions"] if b["requests"]], fmt)

    rows.append(row(SECTION, "plain: throughput", plain["rps"], "req/s",
                    spread=spread("plain", "rps", "{:.0f}"), note=pinning))
    rows.append(row(SECTION, "plain: service CPU per request", plain["cpu_us_per_req"], "µs",
                    spread=spread("plain", "cpu_us_per_req", "{:.0f}")))
    rows.append(row(SECTION, "plain: p50 / p99 latency", plain["p50_ms"], "ms",
                    spread=spread("plain", "p50_ms", "{:.2f}"),
                    note=f"p99 {plain['p99_ms']:.2f} ms ({spread('plain', 'p99_ms', '{:.2f}')})"))
    control = variants["plain_again"]
    for key, what in (("cpu_us_per_req", "service CPU per request"), ("p99_ms", "p99 latency")):
        ratio, each = _ratios(control, plain, key)
        rows.append(row(SECTION, f"{LABELS['plain_again']}: {what} vs plain", ratio, "×",
                        spread=spread_text(each, "{:.3f}"), baseline="plain",
                        note="the same plain service twice (same seeds): how far apart two "
                             "processes of one build land in this run, the noise floor of "
                             f"the ratios below; {_ci_text(each)}"))
    for variant in VARIANTS[2:]:
        v = variants[variant]
        label = LABELS[variant]
        thr_target = 0.99 if variant == "disabled" else 0.97
        # The all-on service is connected; the unconnected row is context.
        judged = variant != "unconnected"
        rps, rps_each = _ratios(v, plain, "rps")
        rows.append(row(SECTION, f"{label}: throughput vs plain", rps, "×",
                        spread=spread_text(rps_each, "{:.3f}"), baseline="plain",
                        target=f"≥ {thr_target}" if judged else None,
                        ok=rps >= thr_target if judged else None,
                        note=f"{v['rps']:.0f} req/s; {_ci_text(rps_each)}"
                        + (f"; missing: {', '.join(missing)}" if variant == "enabled" and missing
                           else "")
                        + (f"; {snapshots} snapshots in {elapsed:.0f} s" if variant == "enabled"
                           else "")))
        cpu, cpu_each = _ratios(v, plain, "cpu_us_per_req")
        rows.append(row(SECTION, f"{label}: service CPU per request vs plain", cpu,
                        "×", spread=spread_text(cpu_each, "{:.3f}"), baseline="plain",
                        target=f"≤ {1 / thr_target:.3f}" if judged else None,
                        ok=cpu <= 1 / thr_target if judged else None,
                        note=f"{v['cpu_us_per_req']:.0f} µs/req; {_ci_text(cpu_each)}"
                        + ("; noise-robust form of the throughput target" if judged
                           else "; the instrumentation alone, no snapshots")))
        p99, p99_each = _ratios(v, plain, "p99_ms")
        p50, _ = _ratios(v, plain, "p50_ms")
        rows.append(row(SECTION, f"{label}: p99 latency vs plain", p99, "×",
                        spread=spread_text(p99_each, "{:.3f}"), baseline="plain",
                        target="≤ 1.10" if variant == "enabled" else None,
                        ok=(p99 <= 1.10) if variant == "enabled" else None,
                        note=f"p99 {v['p99_ms']:.2f} ms, p50 {v['p50_ms']:.2f} ms "
                             f"(p50 ratio {p50:.3f}); {_ci_text(p99_each)}"))
    for control in labels[len(VARIANTS):]:
        v = variants[control]
        for key, what, unit_note in (("cpu_us_per_req", "service CPU per request",
                                      f"{v['cpu_us_per_req']:.0f} µs/req"),
                                     ("rps", "throughput", f"{v['rps']:.0f} req/s")):
            ratio, each = _ratios(v, plain, key)
            rows.append(row(SECTION, f"{LABELS[control]}: {what} vs plain", ratio, "×",
                            spread=spread_text(each, "{:.3f}"), baseline="plain",
                            note=f"{unit_note}; {_ci_text(each)}; a control (--controls), "
                                 "not peeps: what the harness reports for a known difference"))
    if args.counters:
        rows.extend(_counter_rows(variants, labels))
    reports = cost["reports"]
    if not reports:
        raise RuntimeError("no collector reports from the all-on service (is it connected?)")

    def reported(key: str) -> list[float]:
        return [float(r[key]) for r in reports]

    loop_ms = reported("loop_ms")
    rows.append(row(
        SECTION, f"{LABELS['enabled']}, loaded: a snapshot's work on the event loop",
        median(loop_ms), "ms",
        spread=f"p10 {quantile(loop_ms, 0.1):.2f}, p90 {quantile(loop_ms, 0.9):.2f} "
               f"(n={len(loop_ms)})",
        note=f"in {median(reported('loop_slices')):.0f} slices (median); reply "
             f"{median(reported('reply_ms')):.1f} ms after the request; the collector thread's CPU "
             f"{median(reported('collector_cpu_ms')):.2f} ms; {median(reported('nodes')):.0f} nodes, "
             f"{median(reported('bytes')) / 1e3:.0f} kB; the collector's own report (its thread "
             "node), the service alone under the same load, one snapshot a second"))
    if args.output:
        write_result(args.output, "service", rows, quick=args.quick,
                     meta={"raw": result, "snapshot_cost": cost, "cycles": args.cycles,
                           "slice_s": args.slice,
                           "concurrency": args.concurrency, "missing": missing,
                           "pinning": pinning,
                           "snapshots_taken": snapshots, "elapsed_s": elapsed})
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
