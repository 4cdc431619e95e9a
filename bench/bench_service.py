"""A realistic service under load: plain asyncio vs peeps disabled vs peeps all-on.

    python bench/bench_service.py -o bench/results/service.json [--quick] [--reps N] [--duration S]

The service (``serve``) is an aiohttp app whose handler spawns a tracked task
per request; that task takes a permit from a semaphore, sends a job through a
bounded queue to a pool of worker tasks and awaits the reply; a worker does a
little CPU work, updates shared counters under a lock and answers.

The load generator (``load``) is a separate process: raw-socket HTTP/1.1
keep-alive connections at fixed concurrency for a fixed duration, each
measuring every request's latency.

Variants, interleaved (each round runs every variant once, in an order rotated
from round to round) so machine noise hits all alike; ratios are computed per
round and their median reported:

* ``plain``: no peeps imported; asyncio primitives;
* ``disabled``: the peeps wrappers with ``PEEPS_DISABLE=1``;
* ``enabled``: the wrappers with everything that exists in this tree switched
  on (automatic task tracking, patched primitives, thread sampler at 100 Hz,
  loop-stall watchdog) and connected to a real ``peeps-web`` snapshotting every
  second.  What was not available is listed in the table's note;
* ``unconnected``: the same, with no dashboard (no collector, no snapshots):
  the instrumentation's own cost.  Reported, not judged: the issue's all-on
  service is connected, and connecting measured *faster* per request than not
  (docs/performance.md, "The dashboard effect").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import WebServer, median, quantile, row, spread_text, write_result

SECTION = "1. realistic service"
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
        if variant == "plain":
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


async def _serve(variant: str, port_file: str) -> None:
    from aiohttp import web

    missing: list[str] = []
    if variant != "plain":
        import peeps

        if variant in ("enabled", "unconnected"):
            missing = _init_everything()
        else:
            peeps.init("bench-service")
    prims = _Prims(variant)
    stats = {"done": 0, "work": 0}

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

    workers = [prims.spawn(f"worker-{i}", worker()) for i in range(WORKERS)]

    async def process(n: int) -> int:
        async with prims.sem:
            reply = asyncio.get_running_loop().create_future()
            await prims.queue.put((n, reply))
            return await reply

    async def handle(request: web.Request) -> web.Response:
        n = int(request.query.get("n", "300"))
        result = await prims.spawn("request", process(n))
        return web.json_response({"result": result})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"missing": missing, "done": stats["done"]})

    app = web.Application()
    app.router.add_get("/work", handle)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    Path(port_file).write_text(json.dumps({"port": port, "missing": missing}))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for w in workers:
        w.cancel()
    await runner.cleanup()


# -- the load generator -------------------------------------------------------------------


async def _load(port: int, concurrency: int, duration: float, warmup: float) -> dict[str, Any]:
    request = (f"GET /work?n=300 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               "Connection: keep-alive\r\n\r\n").encode()
    latencies: list[float] = []
    errors = 0
    total = 0
    t_start = time.perf_counter()
    measure_from = t_start + warmup
    end = measure_from + duration

    async def conn() -> None:
        nonlocal errors, total
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if m:
                    await reader.readexactly(int(m.group(1)))
                t1 = time.perf_counter()
                total += 1
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                elif t0 >= measure_from:
                    latencies.append(t1 - t0)
        finally:
            writer.close()

    await asyncio.gather(*(conn() for _ in range(concurrency)))
    latencies.sort()
    return {"requests": len(latencies), "total_requests": total, "rps": len(latencies) / duration, "errors": errors,
            "p50_ms": quantile(latencies, 0.5) * 1e3, "p99_ms": quantile(latencies, 0.99) * 1e3}


# -- orchestration --------------------------------------------------------------------------


class _WebServer(WebServer):
    """A real ``python -m peeps.web`` snapshotting every second."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp / "bench-service.sqlite", PEEPS_SNAPSHOT_INTERVAL_S="1")

    def snapshots(self) -> int:
        return len(self.call("GET", "/api/snapshots?limit=1000", timeout=10)["snapshots"])


#: ``--attribution``: all-on built up one component at a time (label, components, dashboard).
ATTRIBUTION = [
    ("wrappers only (channel, Lock, Semaphore, spawn_tracked)", "none", False),
    ("+ automatic task tracking", "auto", False),
    ("+ peeps.patch()", "auto,patch", False),
    ("+ sampler 100 Hz and watchdog", "auto,patch,sampler,watchdog", False),
    ("+ peeps-web snapshot every second (all-on)", "auto,patch,sampler,watchdog", True),
]


def _run_variant(variant: str, dashboard: str, tmp: Path, concurrency: int, duration: float,
                 warmup: float, components: str | None = None,
                 connect: bool = True) -> dict[str, Any]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("PEEPS_DASHBOARD", None)
    env.pop("PEEPS_DISABLE", None)
    env.pop("PEEPS_BENCH_COMPONENTS", None)
    if variant == "disabled":
        env["PEEPS_DISABLE"] = "1"
    if variant == "enabled" and connect:
        env["PEEPS_DASHBOARD"] = dashboard
    if components is not None:
        env["PEEPS_BENCH_COMPONENTS"] = components
    port_file = tmp / f"port-{variant}-{time.monotonic_ns()}"
    server = subprocess.Popen([sys.executable, __file__, "serve", "--variant", variant,
                               "--port-file", str(port_file)], env=env,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"service {variant} did not start: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.05)
        info = json.loads(port_file.read_text())
        cpu0 = _cpu_s(server.pid)
        load = subprocess.run([sys.executable, __file__, "load", "--port", str(info["port"]),
                               "--concurrency", str(concurrency), "--duration", str(duration),
                               "--warmup", str(warmup)],
                              capture_output=True, text=True, timeout=duration + warmup + 60)
        if load.returncode != 0:
            raise RuntimeError(f"load generator failed: {load.stderr[-2000:]}")
        result = json.loads(load.stdout.strip().splitlines()[-1])
        # The service's own CPU per request: robust to other load on the machine.
        result["cpu_us_per_req"] = (_cpu_s(server.pid) - cpu0) / max(1, result["total_requests"]) * 1e6
        result["missing"] = info["missing"]
        return result
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        port_file.unlink(missing_ok=True)


VARIANTS = ("plain", "disabled", "enabled", "unconnected")
#: Row labels; ``unconnected`` is all-on with no dashboard: the instrumentation's
#: own cost, shown because connecting measured *faster* per request (docs).
LABELS = {"disabled": "peeps disabled", "enabled": "peeps all-on",
          "unconnected": "peeps all-on, no dashboard"}


def _attribution(args: argparse.Namespace, reps: int, duration: float, warmup: float) -> None:
    cpu: dict[str, list[float]] = {label: [] for label, _, _ in ATTRIBUTION}
    plain: list[float] = []
    with tempfile.TemporaryDirectory(prefix="peeps-bench-") as tmpdir:
        tmp = Path(tmpdir)
        web = _WebServer(tmp)
        try:
            for rep in range(reps):
                base = _run_variant("plain", web.dashboard, tmp, args.concurrency, duration, warmup)
                plain.append(base["cpu_us_per_req"])
                for label, components, connect in ATTRIBUTION:
                    res = _run_variant("enabled", web.dashboard, tmp, args.concurrency, duration,
                                       warmup, components=components, connect=connect)
                    cpu[label].append(res["cpu_us_per_req"] / base["cpu_us_per_req"])
                    print(f"attribution round {rep + 1}: {label}: "
                          f"{cpu[label][-1]:.3f}x plain CPU/request", file=sys.stderr)
        finally:
            web.stop()
    rows = [row("1b. service overhead by component", f"{label}: CPU per request vs plain",
                median(ratios), "×", spread=spread_text(ratios, "{:.3f}"), baseline="plain",
                note=f"plain {median(plain):.0f} µs/req")
            for label, ratios in cpu.items()]
    if args.output:
        write_result(args.output, "service_attribution", rows, quick=args.quick,
                     meta={"plain_cpu_us": plain, "ratios": cpu})
    else:
        print(json.dumps(rows, indent=1))


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--variant", choices=VARIANTS, required=True)
    p_serve.add_argument("--port-file", required=True)
    p_load = sub.add_parser("load")
    p_load.add_argument("--port", type=int, required=True)
    p_load.add_argument("--concurrency", type=int, default=32)
    p_load.add_argument("--duration", type=float, default=5.0)
    p_load.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("-o", "--output")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--attribution", action="store_true",
                        help="instead: CPU per request as components are switched on")
    args = parser.parse_args()

    if args.cmd == "serve":
        asyncio.run(_serve(args.variant, args.port_file))
        return
    if args.cmd == "load":
        print(json.dumps(asyncio.run(_load(args.port, args.concurrency, args.duration,
                                           args.warmup))))
        return

    reps = args.reps or (1 if args.quick else 4)
    duration = args.duration or (1.0 if args.quick else 6.0)
    warmup = 0.3 if args.quick else 1.0
    if args.attribution:
        _attribution(args, reps, duration, warmup)
        return
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="peeps-bench-") as tmpdir:
        tmp = Path(tmpdir)
        web = _WebServer(tmp)
        try:
            for rep in range(reps):
                # Rotated each round, so no variant always runs first or last.
                order = VARIANTS[rep % len(VARIANTS):] + VARIANTS[:rep % len(VARIANTS)]
                for variant in order:
                    res = _run_variant(variant, web.dashboard, tmp, args.concurrency,
                                       duration, warmup)
                    results[variant].append(res)
                    print(f"service round {rep + 1}/{reps} {variant}: {res['rps']:.0f} req/s "
                          f"p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms "
                          f"cpu {res['cpu_us_per_req']:.0f} us/req",
                          file=sys.stderr)
            snapshots = web.snapshots()
        finally:
            web.stop()

    rows = []
    plain = results["plain"]
    missing = results["enabled"][0]["missing"] if results["enabled"] else []
    for variant in VARIANTS:
        rs = results[variant]
        rps = [r["rps"] for r in rs]
        p50 = [r["p50_ms"] for r in rs]
        p99 = [r["p99_ms"] for r in rs]
        cpu = [r["cpu_us_per_req"] for r in rs]
        if variant == "plain":
            rows.append(row(SECTION, "plain: throughput", median(rps), "req/s",
                            spread=spread_text(rps, "{:.0f}")))
            rows.append(row(SECTION, "plain: service CPU per request", median(cpu), "µs",
                            spread=spread_text(cpu, "{:.0f}")))
            rows.append(row(SECTION, "plain: p50 / p99 latency", median(p50), "ms",
                            spread=spread_text(p50, "{:.2f}"),
                            note=f"p99 {median(p99):.2f} ms ({spread_text(p99, '{:.2f}')})"))
            continue
        rps_ratio = [r["rps"] / p["rps"] for r, p in zip(rs, plain, strict=True)]
        p99_ratio = [r["p99_ms"] / p["p99_ms"] for r, p in zip(rs, plain, strict=True)]
        p50_ratio = [r["p50_ms"] / p["p50_ms"] for r, p in zip(rs, plain, strict=True)]
        label = LABELS[variant]
        thr_target = 0.99 if variant == "disabled" else 0.97
        # The all-on service is connected; the unconnected row is context.
        judged = variant != "unconnected"
        rows.append(row(SECTION, f"{label}: throughput vs plain", median(rps_ratio), "×",
                        spread=spread_text(rps_ratio, "{:.3f}"), baseline="plain",
                        target=f"≥ {thr_target}" if judged else None,
                        ok=median(rps_ratio) >= thr_target if judged else None,
                        note=f"{median(rps):.0f} req/s"
                        + (f"; missing: {', '.join(missing)}" if variant == "enabled" and missing
                           else "")
                        + (f"; {snapshots} snapshots taken" if variant == "enabled" else "")))
        cpu_ratio = [r["cpu_us_per_req"] / p["cpu_us_per_req"] for r, p in zip(rs, plain, strict=True)]
        rows.append(row(SECTION, f"{label}: service CPU per request vs plain", median(cpu_ratio),
                        "×", spread=spread_text(cpu_ratio, "{:.3f}"), baseline="plain",
                        target=f"≤ {1 / thr_target:.3f}" if judged else None,
                        ok=median(cpu_ratio) <= 1 / thr_target if judged else None,
                        note=f"{median(cpu):.0f} µs/req"
                        + ("; noise-robust form of the throughput target" if judged
                           else "; the instrumentation alone, no snapshots")))
        rows.append(row(SECTION, f"{label}: p99 latency vs plain", median(p99_ratio), "×",
                        spread=spread_text(p99_ratio, "{:.3f}"), baseline="plain",
                        target="≤ 1.10" if variant == "enabled" else None,
                        ok=(median(p99_ratio) <= 1.10) if variant == "enabled" else None,
                        note=f"p99 {median(p99):.2f} ms, p50 {median(p50):.2f} ms "
                             f"(p50 ratio {median(p50_ratio):.3f})"))
    if args.output:
        write_result(args.output, "service", rows, quick=args.quick,
                     meta={"raw": results, "reps": reps, "duration_s": duration,
                           "concurrency": args.concurrency, "missing": missing,
                           "snapshots_taken": snapshots})
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
