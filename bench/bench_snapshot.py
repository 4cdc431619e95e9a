"""Snapshot cost against size: collect, serialize, the event-loop stall a snapshot
causes, and memory per tracked entity.

    python bench/bench_snapshot.py -o bench/results/snapshot.json [--quick]

For each size N (1k, 10k, 100k; ``--quick``: 1k) a fresh child process creates
N live tasks, each blocked receiving on its own channel (so N tasks + N
channels + N ``needs`` edges), and measures:

* ``first collect``: the first ``peeps.collect_graph()``, which adopts the N
  lazily spawned tasks (once per task);
* ``collect``: ``peeps.collect_graph()`` wall time after that, on the collector
  thread's code path but called directly (median of reps);
* ``encode``: ``encode_frame`` of the graph_reply;
* ``loop stall``: the largest lateness of a 1 ms periodic timer on the event
  loop while the *real* collector thread answers a snapshot request from a
  minimal in-process dashboard socket (collect + encode + send), against the
  same probe's largest lateness over an idle window of the same length;
* ``memory``: tracemalloc bytes for the tracked set minus the same set built
  from plain asyncio tasks and queues, per entity (task or channel), after the
  first snapshot has described the set (its lazily spawned tasks then have
  their entities); in a process of its own, since tracemalloc slows what it
  traces; at sizes up to 10k (it is flat in size).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import median, row, spread_text, write_result

SECTION = "3. snapshot cost"
MAX_FRAME = 512 * 1024 * 1024


# -- the child: one size ------------------------------------------------------------------


class _MiniDashboard:
    """Just enough of peeps-web's ingest side to drive the real collector thread."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.connected = threading.Event()
        threading.Thread(target=self._accept, daemon=True, name="bench-dashboard").start()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        self.conn = conn
        self._read_frame()  # hello
        self.connected.set()

    def _recv_exact(self, n: int) -> bytearray:
        # Into one buffer of the right size: growing it, or copying it into a
        # ``bytes`` at the end (a 100 MB memcpy holding the GIL), would put the
        # harness's own stall into the figure.
        assert self.conn is not None
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.conn.recv_into(view[got:], min(1 << 20, n - got))
            if not k:
                raise ConnectionError("collector closed")
            got += k
        view.release()
        return buf

    def _read_frame(self) -> bytearray:
        (length,) = __import__("struct").unpack(">I", self._recv_exact(4))
        return self._recv_exact(length)

    def snapshot(self, snapshot_id: int) -> tuple[float, float, int]:
        """Ask, wait for the whole reply; (start, end) perf_counter and reply bytes."""
        from peeps.types import encode_frame

        assert self.conn is not None
        t0 = time.perf_counter()
        self.conn.sendall(encode_frame({"type": "snapshot_request", "snapshot_id": snapshot_id,
                                        "timeout_ms": 60000}))
        body = self._read_frame()
        return t0, time.perf_counter(), len(body)


async def _probe(samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """Sleep 1 ms at a time; record (woke_at, lateness_s) for every wake-up."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        samples.append((now, now - t - 0.001))


def _max_lateness(samples: list[tuple[float, float]], start: float, end: float) -> float:
    # A wake-up late because of the window lands at most one lateness after it ends.
    worst = 0.0
    for woke, late in samples:
        if woke >= start and woke - late - 0.001 <= end:
            worst = max(worst, late)
    return worst


async def _child_main(n: int, reps: int) -> dict[str, Any]:
    import peeps
    from peeps._reply_encoder import encode_reply_frame, gc_paused
    from peeps._snapshot import collect_graph

    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"n": n}

    async def wait_tracked(ch: Any) -> None:
        await ch.recv()

    t_create = time.perf_counter()
    chans = [peeps.channel(f"ch{i}", capacity=1) for i in range(n)]
    tracked = [peeps.tasks.spawn_tracked(f"t{i}", wait_tracked(ch)) for i, ch in enumerate(chans)]
    await asyncio.sleep(0)
    t_create = time.perf_counter() - t_create
    gc.collect()

    # The first snapshot adopts every lazily spawned task (makes its entity,
    # registers its done callback): timed on its own, and not one of the reps,
    # which time the snapshot a dashboard takes every second after that.  With
    # 2 reps at 100k, the median was the mean of this one and a steady one,
    # which inflated the cost per entity there by ~1.4x.
    with gc_paused():
        t0 = time.perf_counter()
        graph = collect_graph(slices=True)
        out["first_collect_s"] = time.perf_counter() - t0
    del graph
    await asyncio.sleep(0)  # the batched done callbacks run

    # Collect and encode, timed directly, the way the collector does it: garbage
    # collection paused (else the containers the graph allocates trigger full
    # collections of the whole heap, which grow with it) and in slices.
    collect_s, encode_s, sizes = [], [], []
    for i in range(reps):
        with gc_paused():
            t0 = time.perf_counter()
            graph = collect_graph(slices=True)
            t1 = time.perf_counter()
            frame = encode_reply_frame({"type": "graph_reply", "snapshot_id": i,
                                        "process": "bench", "pid": os.getpid(),
                                        "graph": graph}, max_frame_bytes=MAX_FRAME)
            t2 = time.perf_counter()
        collect_s.append(t1 - t0)
        encode_s.append(t2 - t1)
        sizes.append(len(frame))
        del graph, frame
    out.update(collect_s=collect_s, encode_s=encode_s, frame_bytes=sizes[-1],
               nodes=2 * n)

    # Loop stall while the real collector thread answers a snapshot request.
    dash = _MiniDashboard()
    peeps.init("bench-snapshot", dashboard=f"127.0.0.1:{dash.port}")
    while not dash.connected.is_set():
        await asyncio.sleep(0.01)
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    probe = loop.create_task(_probe(samples, stop))
    await asyncio.sleep(0.2)
    stalls, idle, reply_s = [], [], []
    for i in range(reps):
        start, end, _ = await loop.run_in_executor(None, dash.snapshot, 100 + i)
        await asyncio.sleep(0.05)
        stalls.append(_max_lateness(samples, start, end))
        reply_s.append(end - start)
        # An idle window of the same length, for the baseline lateness.
        idle_start = time.perf_counter()
        await asyncio.sleep(max(0.05, end - start))
        idle.append(_max_lateness(samples, idle_start, time.perf_counter()))
    stop.set()
    await probe
    peeps.shutdown()
    out.update(stall_s=stalls, idle_stall_s=idle, reply_s=reply_s, create_s=t_create)
    for t in tracked:
        t.cancel()
    await asyncio.gather(*tracked, return_exceptions=True)
    return out


async def _memory_main(n: int) -> dict[str, Any]:
    """Memory per tracked entity, in a process of its own (tracemalloc slows
    everything it traces): bytes of the tracked set over the same set built
    from plain asyncio tasks and queues, once right after creation and once
    after the first snapshot has described it -- that snapshot makes the
    lazily spawned tasks' entities, so the second is what a service carries."""
    import peeps
    from peeps._snapshot import collect_graph

    loop = asyncio.get_running_loop()

    async def wait_plain(q: asyncio.Queue[Any]) -> None:
        await q.get()

    async def wait_tracked(ch: Any) -> None:
        await ch.recv()

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    qs: list[asyncio.Queue[Any]] = [asyncio.Queue(1) for _ in range(n)]
    plain_tasks = [loop.create_task(wait_plain(q)) for q in qs]
    await asyncio.sleep(0)
    plain_bytes = tracemalloc.get_traced_memory()[0] - base
    # The plain set stays alive until the tracked set is measured: freeing it first
    # would let the tracked set reuse its blocks and under-count.
    base = tracemalloc.get_traced_memory()[0]
    chans = [peeps.channel(f"ch{i}", capacity=1) for i in range(n)]
    tracked = [peeps.tasks.spawn_tracked(f"t{i}", wait_tracked(ch)) for i, ch in enumerate(chans)]
    await asyncio.sleep(0)
    created_bytes = tracemalloc.get_traced_memory()[0] - base
    graph = collect_graph()
    del graph
    await asyncio.sleep(0)  # the adopted tasks' done callbacks are added
    gc.collect()
    described_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    for t in plain_tasks + tracked:
        t.cancel()
    await asyncio.gather(*plain_tasks, *tracked, return_exceptions=True)
    return {"n": n, "plain_bytes_per_pair": plain_bytes / n,
            "created_bytes_per_entity": (created_bytes - plain_bytes) / (2 * n),
            "bytes_per_entity": (described_bytes - plain_bytes) / (2 * n)}


# -- the parent: sizes, rows --------------------------------------------------------------


#: Memory per entity is measured up to this size: it is flat in size (1,312 /
#: 1,327 / 1,308 B at 1k / 10k / 100k on 2026-11-30), and at 100k the traced
#: build and snapshot take ~25 s of the suite's time budget.
MEMORY_MAX_N = 10_000


def _run_size(n: int, reps: int) -> dict[str, Any]:
    # 100k tasks + 100k channels is a ~100 MB reply: above the default 64 MiB cap,
    # where the collector would send a truncated graph.  Measure the whole one.
    env = dict(os.environ, PEEPS_MAX_FRAME_BYTES=str(MAX_FRAME))
    out: dict[str, Any] = {}
    modes = ["--child"] + (["--memory-child"] if n <= MEMORY_MAX_N else [])
    for mode in modes:
        proc = subprocess.run([sys.executable, __file__, mode, str(n), "--reps", str(reps)],
                              capture_output=True, text=True, timeout=600, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"snapshot {mode[2:]} for n={n} failed:\n{proc.stderr[-3000:]}")
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="comma-separated task counts")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:
        print(json.dumps(asyncio.run(_child_main(args.child, args.reps or 3))))
        return
    if args.memory_child is not None:
        print(json.dumps(asyncio.run(_memory_main(args.memory_child))))
        return

    sizes = [int(s) for s in (args.sizes or ("1000" if args.quick else "1000,10000,100000"))
             .split(",")]
    results = []
    for n in sizes:
        reps = args.reps or (2 if args.quick else (5 if n <= 10000 else 2))
        res = _run_size(n, reps)
        results.append(res)
        print(f"snapshot n={n}: collect {median(res['collect_s']) * 1e3:.1f} ms "
              f"(first, adopting: {res['first_collect_s'] * 1e3:.1f} ms), "
              f"encode {median(res['encode_s']) * 1e3:.1f} ms, "
              f"stall median {median(res['stall_s']) * 1e3:.1f} max {max(res['stall_s']) * 1e3:.1f} ms "
              f"(idle {median(res['idle_stall_s']) * 1e3:.1f} / {max(res['idle_stall_s']) * 1e3:.1f}), "
              f"{res.get('bytes_per_entity', float('nan')):.0f} B/entity", file=sys.stderr)

    rows = []
    per_entity = {}
    for res in results:
        n = res["n"]
        label = f"{n // 1000}k tasks + {n // 1000}k channels"
        c, e = res["collect_s"], res["encode_s"]
        per_entity[n] = (median(c) + median(e)) / (2 * n)
        rows.append(row(SECTION, f"collect_graph (sliced, GC paused), {label}", median(c) * 1e3, "ms",
                        spread=spread_text([x * 1e3 for x in c]),
                        note=f"{median(c) / (2 * n) * 1e6:.2f} µs/entity"))
        if "first_collect_s" in res:
            first = res["first_collect_s"]
            rows.append(row(SECTION, f"first collect_graph, adopting the {n // 1000}k lazily "
                            f"spawned tasks, {label}", first * 1e3, "ms",
                            note=f"{first / (2 * n) * 1e6:.2f} µs/entity; once, when a snapshot "
                                 "first sees a task (not in the reps above)"))
        rows.append(row(SECTION, f"encode_reply_frame, {label}", median(e) * 1e3, "ms",
                        spread=spread_text([x * 1e3 for x in e]),
                        note=f"{res['frame_bytes'] / 1e6:.1f} MB frame"))
        # Median over snapshots of each snapshot's worst lateness (the machine's own
        # scheduling noise shows in the idle window's figure next to it).
        stall_ms = median(res["stall_s"]) * 1e3
        excess = [(a - b) * 1e3 for a, b in zip(res["stall_s"], res["idle_stall_s"], strict=True)]
        target = "≤ 20 ms" if n == 10000 else None
        rows.append(row(SECTION, f"largest loop stall during snapshot, {label}", stall_ms, "ms",
                        spread=spread_text([x * 1e3 for x in res["stall_s"]]),
                        baseline=f"idle window: {median(res['idle_stall_s']) * 1e3:.1f} ms "
                                 f"(max {max(res['idle_stall_s']) * 1e3:.1f})",
                        target=target, ok=(stall_ms <= 20) if target else None,
                        note=f"whole reply {median(res['reply_s']) * 1e3:.0f} ms; over the idle "
                             f"window, paired: +{median(excess):.1f} ms"))
        if "bytes_per_entity" not in res:
            continue
        rows.append(row(SECTION, f"memory per tracked entity, {label}", res["bytes_per_entity"],
                        "B", note=f"over plain asyncio, after the first snapshot described them "
                        f"({res['created_bytes_per_entity']:.0f} B before); plain task+queue = "
                        f"{res['plain_bytes_per_pair']:.0f} B"))
    if len(per_entity) >= 2:
        small, large = min(per_entity), max(per_entity)
        growth = per_entity[large] / per_entity[small]
        rows.append(row(SECTION, f"cost per entity, {large // 1000}k vs {small // 1000}k",
                        growth, "×", target="≈ 1 (linear)", ok=growth <= 1.5,
                        note="collect+encode per entity, ratio of sizes"))
    if args.output:
        write_result(args.output, "snapshot", rows, quick=args.quick,
                     meta={"raw": results})
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
