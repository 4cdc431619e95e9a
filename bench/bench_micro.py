"""Hot-path microbenchmarks: each peeps primitive against the plain one (pyperf).

    python bench/bench_micro.py -o bench/results/micro.json [--fast | --debug-single-value]

Benchmark names are ``<operation>:<variant>``; the variant ``plain`` is the
standard-library baseline and every other variant of the same operation is
reported as a ratio to it by ``bench/run``.  Variants whose peeps part has not
landed in this tree are skipped (and shown as missing in the table).

Variants:
  plain      the standard primitive (asyncio.Task / Queue / Lock ..., threading.Lock)
  disabled   the peeps wrapper with peeps switched off (PEEPS_DISABLE semantics)
  peeps      the peeps wrapper, enabled
  auto       plain ``loop.create_task`` with the automatic tracking factory installed
  debug      plain primitive on a loop in asyncio debug mode (peer figure)
  aiomonitor plain ``create_task`` under aiomonitor's task factory (peer figure, if installed)

Timing covers ``loops`` operations; tasks are spawned in batches of BATCH so the
figure is per-task cost (create, first step, finish, done callbacks), not the
per-await loop round trip.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pyperf
from _common import peeps_feature

BATCH = 100
_KEEP: list[Any] = []


# -- variant set-up ----------------------------------------------------------------------


def _set_enabled(enabled: bool) -> None:
    from peeps._config import STATE

    STATE.enabled = enabled


def _new_loop(variant: str) -> asyncio.AbstractEventLoop:
    _set_enabled(variant not in ("plain", "disabled", "debug", "aiomonitor"))
    loop = asyncio.new_event_loop()
    if variant == "debug":
        loop.set_debug(True)
        loop.slow_callback_duration = 1e9  # the batch is one long step by design
    if variant == "auto":
        install = peeps_feature("peeps._autotrack:install_task_factory")
        install(loop)
    if variant == "aiomonitor":
        # aiomonitor's own Monitor._create_task (what hook_task_factory=True
        # installs), with its janus queues, without starting its UI threads.
        import janus  # type: ignore[import-not-found]
        from aiomonitor import Monitor  # type: ignore[import-not-found]

        mon = Monitor(loop, hook_task_factory=True)

        async def queues() -> None:
            mon._termination_info_queue = janus.Queue()
            mon._cancellation_chain_queue = janus.Queue()

        loop.run_until_complete(queues())
        loop.set_task_factory(mon._create_task)
        _KEEP.append(mon)
    return loop


def _run_async(variant: str, body: Callable[[Any, int], Any], loops: int) -> float:
    loop = _new_loop(variant)
    try:
        return loop.run_until_complete(body(loop, loops))
    finally:
        loop.close()
        _set_enabled(True)


# -- operations ---------------------------------------------------------------------------


async def _noop() -> None:
    return None


def task_spawn(variant: str) -> Callable[[int], float]:
    spawn_tracked = peeps_feature("tasks.spawn_tracked")

    async def body(loop: asyncio.AbstractEventLoop, loops: int) -> float:
        batches = max(1, loops // BATCH)
        if variant in ("peeps", "disabled"):
            def make(i: int) -> Any:
                return spawn_tracked("w", _noop())
        else:
            create = loop.create_task

            def make(i: int) -> Any:
                return create(_noop())
        t0 = time.perf_counter()
        for _ in range(batches):
            tasks = [make(i) for i in range(BATCH)]
            for t in tasks:
                await t
        return (time.perf_counter() - t0) * loops / (batches * BATCH)

    return lambda loops: _run_async(variant, body, loops)


def _make_queue(variant: str, maxsize: int) -> Any:
    if variant in ("plain", "debug"):
        return asyncio.Queue(maxsize)
    import peeps

    return peeps.channel("bench", capacity=maxsize)


def queue_put_get(variant: str) -> Callable[[int], float]:
    async def body(loop: asyncio.AbstractEventLoop, loops: int) -> float:
        q = _make_queue(variant, 1000)
        put, get = q.put, q.get
        t0 = time.perf_counter()
        for _ in range(loops):
            await put(1)
            await get()
        return time.perf_counter() - t0

    return lambda loops: _run_async(variant, body, loops)


def queue_contended(variant: str) -> Callable[[int], float]:
    """A producer and a consumer through a queue of capacity 1: every op blocks."""

    async def body(loop: asyncio.AbstractEventLoop, loops: int) -> float:
        q = _make_queue(variant, 1)

        async def producer() -> None:
            for i in range(loops):
                await q.put(i)

        async def consumer() -> None:
            for _ in range(loops):
                await q.get()

        t0 = time.perf_counter()
        await asyncio.gather(producer(), consumer())
        return time.perf_counter() - t0

    return lambda loops: _run_async(variant, body, loops)


def _make_sync(kind: str, variant: str) -> Any:
    if variant in ("plain", "debug"):
        return {"lock": asyncio.Lock, "semaphore": lambda: asyncio.Semaphore(1),
                "event": asyncio.Event}[kind]()
    cls = peeps_feature({"lock": "Lock", "semaphore": "Semaphore", "event": "Event"}[kind])
    if kind == "semaphore":
        try:
            return cls(1, name="bench")
        except TypeError:
            return cls(1)
    try:
        return cls(name="bench")
    except TypeError:
        return cls()


def lock_uncontended(kind: str) -> Callable[[str], Callable[[int], float]]:
    def factory(variant: str) -> Callable[[int], float]:
        async def body(loop: asyncio.AbstractEventLoop, loops: int) -> float:
            lock = _make_sync(kind, variant)
            t0 = time.perf_counter()
            for _ in range(loops):
                async with lock:
                    pass
            return time.perf_counter() - t0

        return lambda loops: _run_async(variant, body, loops)

    return factory


def lock_contended(kind: str) -> Callable[[str], Callable[[int], float]]:
    """4 tasks take turns: each holds the lock across a yield, so every acquire waits."""

    def factory(variant: str) -> Callable[[int], float]:
        async def body(loop: asyncio.AbstractEventLoop, loops: int) -> float:
            lock = _make_sync(kind, variant)
            per = max(1, loops // 4)

            async def worker() -> None:
                for _ in range(per):
                    async with lock:
                        await asyncio.sleep(0)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(4)))
            return (time.perf_counter() - t0) * loops / (per * 4)

        return lambda loops: _run_async(variant, body, loops)

    return factory


def event_set_wait(variant: str) -> Callable[[int], float]:
    async def body(loop: asyncio.AbstractEventLoop, loops: int) -> float:
        ev = _make_sync("event", variant)
        t0 = time.perf_counter()
        for _ in range(loops):
            ev.set()
            await ev.wait()
            ev.clear()
        return time.perf_counter() - t0

    return lambda loops: _run_async(variant, body, loops)


def event_pingpong(variant: str) -> Callable[[int], float]:
    """Two tasks wake each other through two events: every wait blocks."""

    async def body(loop: asyncio.AbstractEventLoop, loops: int) -> float:
        ping, pong = _make_sync("event", variant), _make_sync("event", variant)

        async def a() -> None:
            for _ in range(loops):
                ping.set()
                await pong.wait()
                pong.clear()

        async def b() -> None:
            for _ in range(loops):
                await ping.wait()
                ping.clear()
                pong.set()

        t0 = time.perf_counter()
        await asyncio.gather(a(), b())
        return time.perf_counter() - t0

    return lambda loops: _run_async(variant, body, loops)


def _thread_lock_class() -> Any:
    return peeps_feature("threading.Lock", "ThreadLock", "Mutex", "thread_lock",
                         "peeps._thread_locks:Lock", "peeps._thread_locks:TrackedLock")


def thread_lock(variant: str) -> Callable[[int], float]:
    def run(loops: int) -> float:
        _set_enabled(variant != "plain" and variant != "disabled")
        try:
            if variant == "plain":
                lock = threading.Lock()
            else:
                cls = _thread_lock_class()
                try:
                    lock = cls(name="bench")
                except TypeError:
                    lock = cls()
            acquire, release = lock.acquire, lock.release
            t0 = time.perf_counter()
            for _ in range(loops):
                acquire()
                release()
            return time.perf_counter() - t0
        finally:
            _set_enabled(True)

    return run


def thread_lock_with(variant: str) -> Callable[[int], float]:
    def run(loops: int) -> float:
        _set_enabled(variant != "plain" and variant != "disabled")
        try:
            if variant == "plain":
                lock = threading.Lock()
            else:
                cls = _thread_lock_class()
                try:
                    lock = cls(name="bench")
                except TypeError:
                    lock = cls()
            t0 = time.perf_counter()
            for _ in range(loops):
                with lock:
                    pass
            return time.perf_counter() - t0
        finally:
            _set_enabled(True)

    return run


# -- which variants exist -------------------------------------------------------------------


def _have_aiomonitor() -> bool:
    try:
        import aiomonitor.task  # noqa: F401
    except Exception:
        return False
    return True


def benchmarks() -> list[tuple[str, Callable[[int], float]]]:
    """Everything not already measured by bench_asyncio_micro.py (the asyncio
    owners' file: spawn, queue put/get, lock, semaphore, event set/wait) or
    bench_threads.py (thread locks); when those files are absent, their
    operations run here instead."""
    have_auto = peeps_feature("peeps._autotrack:install_task_factory") is not None
    have_lock = peeps_feature("Lock") is not None
    have_sem = peeps_feature("Semaphore") is not None
    have_event = peeps_feature("Event") is not None
    have_tlock = _thread_lock_class() is not None
    peer_file = os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                            "bench_asyncio_micro.py"))
    out: list[tuple[str, Callable[[int], float]]] = []

    def add(op: str, factory: Callable[[str], Callable[[int], float]], variants: list[str]) -> None:
        for v in variants:
            out.append((f"{op}:{v}", factory(v)))

    # Peer figures need their own side-by-side baseline, so task_spawn stays here.
    spawn = ["plain"] + (["auto"] if have_auto else []) + ["debug"]
    if not peer_file:
        spawn[1:1] = ["peeps", "disabled"]
    if _have_aiomonitor():
        spawn.append("aiomonitor")
    add("task_spawn", task_spawn, spawn)
    if not peer_file:
        add("queue_put_get", queue_put_get, ["plain", "peeps", "disabled"])
        for kind, have in (("lock", have_lock), ("semaphore", have_sem)):
            variants = ["plain", "peeps", "disabled"] if have else ["plain"]
            add(f"{kind}_uncontended", lock_uncontended(kind), variants)
        add("lock_contended", lock_contended("lock"), ["plain", "peeps"] if have_lock else ["plain"])
        add("event_set_wait", event_set_wait, ["plain", "peeps"] if have_event else ["plain"])
    add("queue_contended", queue_contended, ["plain", "peeps"])
    add("semaphore_contended", lock_contended("semaphore"),
        ["plain", "peeps"] if have_sem else ["plain"])
    add("event_pingpong", event_pingpong, ["plain", "peeps"] if have_event else ["plain"])
    threads_file = os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                               "bench_threads.py"))
    if not threads_file:  # the threads owners' file measures these when present
        add("thread_lock", thread_lock, ["plain", "peeps", "disabled"] if have_tlock
            else ["plain"])
        add("thread_lock_with", thread_lock_with, ["plain", "peeps"] if have_tlock else ["plain"])
    return out


def main() -> None:
    runner = pyperf.Runner(processes=6, values=3, warmups=1)
    runner.metadata["description"] = "peeps hot-path microbenchmarks (op:variant)"
    args = runner.parse_args()
    only = os.environ.get("PEEPS_BENCH_ONLY")
    for name, fn in benchmarks():
        if only and not any(part in name for part in only.split(",")):
            continue
        runner.bench_time_func(name, fn)
    del args


if __name__ == "__main__":
    main()
