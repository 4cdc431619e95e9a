"""A task that finishes while another stays: ``short_job`` runs until the
file named by argv[1] exists, then ends; ``keeper`` sleeps on.  A test takes a
snapshot while short_job runs (a snapshot is when lazily tracked tasks get
their entities), creates the file, waits for "finished", and snapshots again
to see a finished task."""

import asyncio
import os
import sys

import peeps


async def short_job(go: str) -> None:
    while not os.path.exists(go):
        await asyncio.sleep(0.02)


async def main() -> None:
    peeps.init("finishing")
    job = peeps.tasks.spawn_tracked("short_job", short_job(sys.argv[1]))
    keeper = peeps.tasks.spawn_tracked("keeper", asyncio.sleep(3600))
    print("started", flush=True)
    await job
    print("finished", flush=True)
    await keeper


asyncio.run(main())
