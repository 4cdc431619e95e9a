"""loop-blocked: a coroutine calls time.sleep() in a loop and stalls the event loop.

``blocking_poller`` is an async task that "polls" with ``time.sleep(1)`` instead
of ``await asyncio.sleep(1)``, so nothing else on the loop runs: ``heartbeat``
(which should tick every 100 ms) starves.  Between polls it yields for 50 ms, so
each stall ends and is recorded (the first by ~1.2 s after start).  The watchdog (threshold 100 ms)
sees the loop stop coming back, reads the loop thread's stack while it is
stuck, and a snapshot taken during the stall shows the ``loop`` node with
``stalled_ns`` and a ``needs[step]`` edge to ``blocking_poller``; each stall
ends with a ``loop.stall`` event naming the task and the ``time.sleep`` line.

Run:  PEEPS_DASHBOARD=127.0.0.1:9119 python examples/loop_blocked
or:   scripts/run-example loop-blocked
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import peeps

BLOCK_S = 1.0
YIELD_S = 0.05


async def blocking_poller() -> None:
    await asyncio.sleep(0.2)  # let the watchdog see a healthy loop first
    while True:
        time.sleep(BLOCK_S)  # the bug: a blocking call inside a coroutine
        await asyncio.sleep(YIELD_S)


async def heartbeat() -> None:
    beats = 0
    while True:
        await asyncio.sleep(0.1)
        beats += 1
        print(f"heartbeat: {beats}", flush=True)


async def main() -> None:
    peeps.init("loop-blocked", watchdog=True, stall_threshold_ms=100)
    poller = peeps.tasks.spawn_tracked("blocking_poller", blocking_poller())
    ticker = peeps.tasks.spawn_tracked("heartbeat", heartbeat())
    print("loop-blocked: running (Ctrl+C to stop)", flush=True)
    try:
        await asyncio.gather(poller, ticker)
    finally:
        peeps.shutdown()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
