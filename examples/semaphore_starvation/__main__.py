"""semaphore-starvation: one task holds the only permit forever; another waits for it.

``demo.api_gate`` is a semaphore with one permit.  ``permit_holder`` takes it
and then waits on something that never happens (the bug: it should release
before waiting).  ``permit_waiter`` blocks in ``acquire``.  The graph shows:
permit_holder --holds--> demo.api_gate <--needs[acquire]-- permit_waiter, and
permit_holder --needs--> demo.never_set (an event nobody sets).

Run:  PEEPS_DASHBOARD=127.0.0.1:9119 python examples/semaphore_starvation
or:   scripts/run-example semaphore-starvation
"""

from __future__ import annotations

import asyncio
import contextlib

import peeps


async def permit_holder(gate: asyncio.Semaphore, never_set: asyncio.Event) -> None:
    async with gate:
        print("permit_holder: took the only permit", flush=True)
        # The bug: waiting for a slow dependency while still holding the permit.
        await never_set.wait()


async def permit_waiter(gate: asyncio.Semaphore) -> None:
    await asyncio.sleep(0.05)  # arrive second
    print("permit_waiter: waiting for a permit", flush=True)
    async with gate:
        print("permit_waiter: got a permit (never printed)", flush=True)


async def main() -> None:
    peeps.init("semaphore-starvation")
    gate = peeps.Semaphore(1, name="demo.api_gate")
    never_set = peeps.Event(name="demo.never_set")
    holder = peeps.tasks.spawn_tracked("permit_holder", permit_holder(gate, never_set))
    waiter = peeps.tasks.spawn_tracked("permit_waiter", permit_waiter(gate))
    print("semaphore-starvation: running (Ctrl+C to stop)", flush=True)
    await asyncio.gather(holder, waiter)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
