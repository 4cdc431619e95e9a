"""asyncio hot paths: plain stdlib vs peeps enabled vs peeps disabled (pyperf).

    python bench/bench_asyncio_micro.py -o /tmp/asyncio_micro.json [--fast]
    python bench/bench_asyncio_micro.py --ratios /tmp/asyncio_micro.json

Benchmark names are ``<operation>:<variant>``.  Variants: ``plain`` (the stdlib
object), ``peeps`` (the peeps wrapper, enabled), ``disabled`` (the peeps wrapper
created with peeps off — the plain object), and for task spawn ``auto`` (plain
``create_task`` with the automatic tracking factory), ``auto_steps`` (plus step
statistics and cancel attribution) and ``spawn_tracked``.  Each value is the
time per operation; ``--ratios`` prints every variant against ``plain``.

Targets (docs/asyncio.md): spawn+finish and queue put/get <= 1.3x plain,
lock acquire/release <= 1.5x plain.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

BATCH = 100

#: CPU time of this thread, not wall time: the operations are CPU-bound, and on a
#: shared machine wall time mostly measures the neighbours.
_clock = time.thread_time


def _loop(variant: str) -> asyncio.AbstractEventLoop:
    from peeps import _autotrack
    from peeps._config import STATE

    _autotrack.uninstall_task_factory()
    STATE.enabled = variant != "disabled"
    loop = asyncio.new_event_loop()
    if variant in ("auto", "auto_steps"):
        _autotrack.install_task_factory(loop)
        if variant == "auto_steps":
            _autotrack._register_eagerly = True
            _autotrack.enable_step_stats()
    return loop


def _timed(variant: str, body: Callable[[int], Awaitable[float]]) -> Callable[[int], float]:
    def run(loops: int) -> float:
        loop = _loop(variant)
        try:
            return loop.run_until_complete(body(loops))
        finally:
            loop.close()
            from peeps import _autotrack
            from peeps._config import STATE

            _autotrack.uninstall_task_factory()
            STATE.enabled = True

    return run


# -- operations -------------------------------------------------------------------------


async def _noop() -> None:
    return None


def spawn(variant: str) -> Callable[[int], Awaitable[float]]:
    async def body(loops: int) -> float:
        import peeps

        loop = asyncio.get_running_loop()
        batches = max(1, loops // BATCH)
        start = _clock()
        for _ in range(batches):
            if variant in ("spawn_tracked", "disabled"):
                tasks = [peeps.tasks.spawn_tracked("t", _noop()) for _ in range(BATCH)]
            else:
                tasks = [loop.create_task(_noop()) for _ in range(BATCH)]
            for t in tasks:
                await t
        return (_clock() - start) * loops / (batches * BATCH)

    return body


def _make(kind: str, variant: str) -> Any:
    import peeps

    if variant == "plain":
        return {"queue": asyncio.Queue, "lock": asyncio.Lock, "semaphore": asyncio.Semaphore,
                "event": asyncio.Event}[kind]()
    return {"queue": lambda: peeps.channel("bench.queue"), "lock": lambda: peeps.Lock("bench"),
            "semaphore": lambda: peeps.Semaphore(1, name="bench"),
            "event": lambda: peeps.Event("bench")}[kind]()


def queue_put_get(variant: str) -> Callable[[int], Awaitable[float]]:
    async def body(loops: int) -> float:
        q = _make("queue", variant)
        start = _clock()
        for i in range(loops):
            await q.put(i)
            await q.get()
        return _clock() - start

    return body


def lock_uncontended(variant: str) -> Callable[[int], Awaitable[float]]:
    async def body(loops: int) -> float:
        lock = _make("lock", variant)
        start = _clock()
        for _ in range(loops):
            async with lock:
                pass
        return _clock() - start

    return body


def lock_contended(variant: str) -> Callable[[int], Awaitable[float]]:
    """Two tasks hand the lock back and forth: every acquire waits."""

    async def body(loops: int) -> float:
        lock = _make("lock", variant)
        per_task = max(1, loops // 2)

        async def worker() -> None:
            for _ in range(per_task):
                async with lock:
                    await asyncio.sleep(0)

        start = _clock()
        await asyncio.gather(worker(), worker())
        return (_clock() - start) * loops / (per_task * 2)

    return body


def semaphore(variant: str) -> Callable[[int], Awaitable[float]]:
    async def body(loops: int) -> float:
        sem = _make("semaphore", variant)
        start = _clock()
        for _ in range(loops):
            async with sem:
                pass
        return _clock() - start

    return body


def event_set_wait(variant: str) -> Callable[[int], Awaitable[float]]:
    """A waiter task parked on the event; set wakes it, it clears and re-waits."""

    async def body(loops: int) -> float:
        event = _make("event", variant)
        done = asyncio.Event()
        count = 0

        async def waiter() -> None:
            nonlocal count
            while count < loops:
                await event.wait()
                event.clear()
                count += 1
                done.set()

        w = asyncio.get_running_loop().create_task(waiter())
        await asyncio.sleep(0)
        start = _clock()
        for _ in range(loops):
            done.clear()
            event.set()
            await done.wait()
        elapsed = _clock() - start
        await w
        return elapsed

    return body


OPERATIONS: dict[str, tuple[Callable[[str], Callable[[int], Awaitable[float]]], list[str]]] = {
    "spawn_finish": (spawn, ["plain", "auto", "auto_steps", "spawn_tracked", "disabled"]),
    "queue_put_get": (queue_put_get, ["plain", "peeps", "disabled"]),
    "lock_uncontended": (lock_uncontended, ["plain", "peeps", "disabled"]),
    "lock_contended": (lock_contended, ["plain", "peeps", "disabled"]),
    "semaphore": (semaphore, ["plain", "peeps", "disabled"]),
    "event_set_wait": (event_set_wait, ["plain", "peeps", "disabled"]),
}


def print_ratios(path: str) -> None:
    with open(path) as fh:
        data = json.load(fh)
    means: dict[str, float] = {}
    for bench in data["benchmarks"]:
        name = bench["metadata"]["name"]
        values = [v for run in bench["runs"] for v in run.get("values", [])]
        if values:
            values.sort()
            means[name] = values[len(values) // 2]
    print(f"{'operation':18} {'variant':14} {'per op':>10} {'x plain':>8}")
    for op, (_, variants) in OPERATIONS.items():
        base = means.get(f"{op}:plain")
        for variant in variants:
            value = means.get(f"{op}:{variant}")
            if value is None:
                continue
            ratio = f"{value / base:.2f}" if base else "-"
            print(f"{op:18} {variant:14} {value * 1e9:8.0f}ns {ratio:>8}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--ratios":
        print_ratios(sys.argv[2])
        return
    import pyperf

    runner = pyperf.Runner()
    runner.metadata["description"] = __doc__.splitlines()[0] if __doc__ else ""
    for op, (factory, variants) in OPERATIONS.items():
        for variant in variants:
            runner.bench_time_func(f"{op}:{variant}", _timed(variant, factory(variant)))


if __name__ == "__main__":
    main()
