"""queue-join-hang: a consumer forgets task_done(), so the producer's join() never returns.

``producer`` puts 5 jobs on ``demo.jobs`` and calls ``join()``.  ``consumer``
takes every job but never calls ``task_done()`` (the bug).  The graph shows:
producer --needs[join, unfinished_tasks=5]--> demo.jobs (depth 0), and
consumer --needs[recv]--> demo.jobs waiting for more work.

Run:  PEEPS_DASHBOARD=127.0.0.1:9119 python examples/queue_join_hang
or:   scripts/run-example queue-join-hang
"""

from __future__ import annotations

import asyncio
import contextlib

import peeps

JOBS = 5


async def producer(jobs: asyncio.Queue[int]) -> None:
    for job in range(JOBS):
        await jobs.put(job)
    print(f"producer: queued {JOBS} jobs, waiting for them to finish", flush=True)
    await jobs.join()  # never returns: nobody calls task_done()
    print("producer: all jobs done (never printed)", flush=True)


async def consumer(jobs: asyncio.Queue[int]) -> None:
    while True:
        job = await jobs.get()
        print(f"consumer: handled job {job}", flush=True)
        # The bug: jobs.task_done() is missing here.


async def main() -> None:
    peeps.init("queue-join-hang")
    jobs: asyncio.Queue[int] = peeps.channel("demo.jobs")
    produce = peeps.tasks.spawn_tracked("producer", producer(jobs))
    consume = peeps.tasks.spawn_tracked("consumer", consumer(jobs))
    print("queue-join-hang: running (Ctrl+C to stop)", flush=True)
    await asyncio.gather(produce, consume)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
