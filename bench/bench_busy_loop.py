"""The service's request path in a saturated event loop, without HTTP.

    python bench/bench_busy_loop.py -o bench/results/busy_loop.json [--quick] [--rounds N]

Each "request" is what the realistic service's handler does (a task spawned
per request; it takes a semaphore permit, sends a job through a bounded queue
to 8 workers and awaits the reply; a worker updates counters under a lock),
driven by 32 client tasks in one process, so the loop never waits for I/O.

This is where background threads hurt most.  A Python thread that wakes up
needs the GIL; a busy loop drops and retakes it at every ``epoll_wait``, and
each drop wakes the waiting thread, which loses the race and sleeps again --
its timer to demand the GIL restarts with every wake-up.  The row "plain + an
idle thread waking at 40 Hz" shows what that alone costs.

The last two variants add a dashboard (a small process of its own) asking
for a snapshot every 50 ms -- twenty times the real dashboard's rate, so that
their cost shows in a few seconds -- answered on the collector thread or, as
by default, on the loop itself (``PEEPS_SNAPSHOT_ON_LOOP``,
``src/peeps/_loopside.py``), with passes four times as long, in every
other round.  Their rows
also give how long a reply took, how many were answered per CPU-second in
the measured passes, and from that the CPU each cost over all-on's.

Each round runs every variant in a fresh process (in rotated order) and takes
process CPU time per request (all threads), the median of the last two of three
passes.  A process's speed depends on its memory layout (see "the allocator
lottery" in docs/performance.md), so a single process of one variant can be 40 %
off; the table gives the ratio of each variant's median over the rounds to
plain's, and as spread the min–max of the variant's per-process figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import median, row, spread_text, write_result

SECTION = "1c. request path in a saturated loop"
VARIANTS: dict[str, str] = {
    "plain": "plain asyncio",
    "idle_thread": "plain + an idle thread waking at 40 Hz",
    "wrappers": "peeps wrappers (channel, Lock, Semaphore, spawn_tracked)",
    "tracking": "+ automatic task tracking and peeps.patch()",
    "all_on": "+ sampler at 100 Hz and watchdog (all-on, no dashboard)",
    "snap_thread": "all-on + a snapshot every 50 ms, worked on the collector thread",
    "snap_loop": "all-on + a snapshot every 50 ms, worked and served by the loop (the default)",
}
#: Seconds between two snapshot requests in the ``snap_*`` variants.
SNAPSHOT_EVERY_S = 0.05
#: The ``snap_*`` variants serve this many times ``--requests`` per pass.
SNAPSHOT_PASS_FACTOR = 4


def _dashboard(port_file: str) -> None:
    """Just enough of peeps-web: accept one collector, ask for a snapshot every
    ``SNAPSHOT_EVERY_S`` (or as soon as the last is answered, if later) until
    it hangs up, then print when each was asked and how long it took."""
    import socket
    import struct

    from peeps.types import encode_frame

    listener = socket.create_server(("127.0.0.1", 0))
    with open(port_file + ".tmp", "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    conn, _ = listener.accept()

    def read_frame() -> bytes:
        def exact(n: int) -> bytes:
            buf = b""
            while len(buf) < n:
                chunk = conn.recv(n - len(buf))
                if not chunk:
                    raise ConnectionError
                buf += chunk
            return buf

        (length,) = struct.unpack(">I", exact(4))
        return exact(length)

    replies: list[tuple[float, float]] = []  # (asked at, monotonic s; reply ms)
    try:
        read_frame()  # hello
        for snapshot_id in range(1, 1_000_000):
            t0 = time.monotonic()
            conn.sendall(encode_frame({"type": "snapshot_request", "snapshot_id": snapshot_id,
                                       "timeout_ms": 10_000}))
            read_frame()
            replies.append((t0, (time.monotonic() - t0) * 1e3))
            time.sleep(max(0.0, SNAPSHOT_EVERY_S - (time.monotonic() - t0)))
    except (ConnectionError, OSError):
        pass
    print(json.dumps(replies))


def _child(variant: str, requests: int) -> None:
    if variant == "idle_thread":
        def idle() -> None:
            tick = threading.Event()
            while not tick.wait(1 / 40):
                pass

        threading.Thread(target=idle, daemon=True).start()
    peeps: Any = None
    dashboard: subprocess.Popen[str] | None = None
    address = None
    if variant.startswith("snap_"):
        os.environ["PEEPS_SNAPSHOT_ON_LOOP"] = "1" if variant == "snap_loop" else "0"
        port_file = f"{os.environ.get('TMPDIR', '/tmp')}/peeps-busy-loop-{os.getpid()}.port"
        dashboard = subprocess.Popen([sys.executable, __file__, "--dashboard", port_file],
                                     stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            if dashboard.poll() is not None or time.monotonic() > deadline:
                sys.exit("bench_busy_loop: the dashboard did not start")
            time.sleep(0.01)
        with open(port_file) as f:
            address = f"127.0.0.1:{f.read()}"
        os.unlink(port_file)
    if variant in ("wrappers", "tracking", "all_on", "snap_thread", "snap_loop"):
        import peeps

        on = variant != "wrappers" and variant != "tracking"
        peeps.init("bench-busy-loop", auto=variant != "wrappers",
                   sampler="thread" if on else "off", sampler_hz=100, watchdog=on,
                   dashboard=address)
        if variant != "wrappers":
            peeps.patch()

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        if peeps is None:
            queue: Any = asyncio.Queue(64)
            lock: Any = asyncio.Lock()
            sem: Any = asyncio.Semaphore(48)

            def spawn(name: str, coro: Any) -> Any:
                return loop.create_task(coro, name=name)
        else:
            queue = peeps.channel("jobs", capacity=64)
            lock = peeps.Lock(name="stats")
            sem = peeps.Semaphore(48, name="permits")
            spawn = peeps.tasks.spawn_tracked
        stats = {"done": 0}

        async def worker() -> None:
            while True:
                payload, reply = await queue.get()
                acc = 0
                for i in range(payload):
                    acc += i * i
                await asyncio.sleep(0)
                async with lock:
                    stats["done"] += 1
                if not reply.done():
                    reply.set_result(acc)

        workers = [spawn(f"worker-{i}", worker()) for i in range(8)]

        async def process(n: int) -> int:
            async with sem:
                reply = loop.create_future()
                await queue.put((n, reply))
                result: int = await reply
                return result

        async def client(k: int) -> None:
            for _ in range(k):
                await spawn("request", process(30))

        per_request = []
        for i in range(3):
            if i == 1:  # the measured passes
                window[:] = [time.monotonic(), time.process_time()]
            t0 = time.process_time()
            await asyncio.gather(*[client(requests // 32) for _ in range(32)])
            per_request.append((time.process_time() - t0) / (requests // 32 * 32) * 1e6)
        window[:] = [window[0], time.monotonic(), time.process_time() - window[1]]
        for w in workers:
            w.cancel()
        return per_request[1:]

    window: list[float] = []
    result: dict[str, Any] = {"cpu_us": asyncio.run(main())}
    if dashboard is not None:
        peeps.shutdown()  # hangs up: the dashboard prints its replies' times
        out, _ = dashboard.communicate(timeout=60)
        start, end, cpu_s = window
        inside = [ms for asked, ms in json.loads(out.strip().splitlines()[-1])
                  if start <= asked and asked + ms / 1e3 <= end]
        result.update(reply_ms=inside, snapshots_per_cpu_s=len(inside) / cpu_s)
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", help="write the result rows here (JSON)")
    parser.add_argument("--quick", action="store_true", help="one small round (smoke test)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--dashboard", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dashboard:
        _dashboard(args.dashboard)
        return
    if args.child:
        _child(args.child, args.requests)
        return
    rounds, requests = (1, 2_000) if args.quick else (args.rounds, args.requests)
    names = list(VARIANTS)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    replies: dict[str, list[float]] = {name: [] for name in names}
    rates: dict[str, list[float]] = {name: [] for name in names}
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("PEEPS_DASHBOARD", None)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        this: dict[str, float] = {}
        for name in order:
            snapshots = name.startswith("snap_")
            if snapshots and r % 2 and rounds > 1:
                continue  # every other round: their passes are longer
            # Longer passes where snapshots are asked for: a reply on the
            # collector thread can take most of a second.
            n = requests * SNAPSHOT_PASS_FACTOR if snapshots else requests
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, "--requests", str(n)],
                capture_output=True, text=True, env=env, timeout=300, check=False)
            if out.returncode != 0:
                sys.exit(f"bench_busy_loop: variant {name} failed:\n{out.stderr}")
            result = json.loads(out.stdout.strip().splitlines()[-1])
            this[name] = median(result["cpu_us"])
            replies[name] += result.get("reply_ms", [])
            if "snapshots_per_cpu_s" in result:
                rates[name].append(result["snapshots_per_cpu_s"])
        for name in this:
            cpu[name].append(this[name])
        print(f"busy loop round {r + 1}/{rounds}: "
              + ", ".join(f"{n} {this[n]:.1f} µs" for n in names if n in this),
              file=sys.stderr, flush=True)
    rows = [row(SECTION, f"{VARIANTS['plain']}: CPU per request", median(cpu["plain"]), "µs",
                spread=spread_text(cpu["plain"], "{:.1f}"))]
    base = median(cpu["plain"])
    for name in names[1:]:
        rows.append(row(SECTION, f"{VARIANTS[name]}: CPU per request vs plain",
                        median(cpu[name]) / base, "×", baseline="plain",
                        note=f"{median(cpu[name]):.1f} µs/req ({spread_text(cpu[name], '{:.1f}')})"))
    for name in ("snap_thread", "snap_loop"):
        if not replies[name]:
            continue
        # The snapshots' share of the process's CPU over all-on's, spread over
        # the snapshots answered per CPU-second: CPU per snapshot.
        share = 1 - median(cpu["all_on"]) / median(cpu[name])
        per_snapshot_ms = share / median(rates[name]) * 1e3 if median(rates[name]) else 0.0
        ordered = sorted(replies[name])
        rows.append(row(SECTION, f"{VARIANTS[name]}: time to answer a snapshot request",
                        median(ordered), "ms",
                        spread=f"p90 {ordered[int(0.9 * (len(ordered) - 1))]:.0f}, "
                               f"max {ordered[-1]:.0f} (n={len(ordered)})",
                        note=f"{median(rates[name]):.1f} snapshots answered per CPU-second; "
                             f"~{per_snapshot_ms:.0f} ms of CPU each over all-on's"))
    if args.output:
        write_result(args.output, "busy_loop", rows, quick=args.quick,
                     meta={"rounds": rounds, "requests": requests, "cpu_us": cpu})
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
