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
}


def _child(variant: str, requests: int) -> None:
    if variant == "idle_thread":
        def idle() -> None:
            tick = threading.Event()
            while not tick.wait(1 / 40):
                pass

        threading.Thread(target=idle, daemon=True).start()
    peeps: Any = None
    if variant in ("wrappers", "tracking", "all_on"):
        import peeps

        on = variant == "all_on"
        peeps.init("bench-busy-loop", auto=variant != "wrappers",
                   sampler="thread" if on else "off", sampler_hz=100, watchdog=on)
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
        for _ in range(3):
            t0 = time.process_time()
            await asyncio.gather(*[client(requests // 32) for _ in range(32)])
            per_request.append((time.process_time() - t0) / (requests // 32 * 32) * 1e6)
        for w in workers:
            w.cancel()
        return per_request[1:]

    print(json.dumps(asyncio.run(main())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", help="write the result rows here (JSON)")
    parser.add_argument("--quick", action="store_true", help="one small round (smoke test)")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.requests)
        return
    rounds, requests = (1, 2_000) if args.quick else (args.rounds, args.requests)
    names = list(VARIANTS)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("PEEPS_DASHBOARD", None)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        this: dict[str, float] = {}
        for name in order:
            out = subprocess.run(
                [sys.executable, __file__, "--child", name, "--requests", str(requests)],
                capture_output=True, text=True, env=env, timeout=300, check=False)
            if out.returncode != 0:
                sys.exit(f"bench_busy_loop: variant {name} failed:\n{out.stderr}")
            this[name] = median(json.loads(out.stdout.strip().splitlines()[-1]))
        for name in names:
            cpu[name].append(this[name])
        print(f"busy loop round {r + 1}/{rounds}: "
              + ", ".join(f"{n} {this[n]:.1f} µs" for n in names), file=sys.stderr, flush=True)
    rows = [row(SECTION, f"{VARIANTS['plain']}: CPU per request", median(cpu["plain"]), "µs",
                spread=spread_text(cpu["plain"], "{:.1f}"))]
    base = median(cpu["plain"])
    for name in names[1:]:
        rows.append(row(SECTION, f"{VARIANTS[name]}: CPU per request vs plain",
                        median(cpu[name]) / base, "×", baseline="plain",
                        note=f"{median(cpu[name]):.1f} µs/req ({spread_text(cpu[name], '{:.1f}')})"))
    if args.output:
        write_result(args.output, "busy_loop", rows, quick=args.quick,
                     meta={"rounds": rounds, "requests": requests, "cpu_us": cpu})
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
