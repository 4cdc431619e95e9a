"""channel-full-stall: a bounded queue fills up because its receiver never drains.

``bounded_sender`` sends 16 items into ``demo.work_queue`` (capacity 16), then
blocks on the 17th.  ``stalled_receiver`` is asleep and never receives.  The
graph shows: bounded_sender --needs[send]--> demo.work_queue (16/16), and
stalled_receiver --needs[sleep]--> its sleep.

Run:  scripts/run-example channel-full-stall  (or PEEPS_DASHBOARD=... python examples/channel_full_stall)
"""

from __future__ import annotations

import asyncio
import contextlib

import peeps

CAPACITY = 16


async def bounded_sender(queue: peeps.Channel[int]) -> None:
    for item in range(CAPACITY + 1):
        await queue.send(item)  # the 17th send blocks: nobody drains the queue
        print(f"bounded_sender: sent {item}", flush=True)


async def stalled_receiver(queue: peeps.Channel[int]) -> None:
    # The bug: the receiver waits on something unrelated instead of draining.
    await peeps.sleep(3600, label="stalled_receiver.forgot_to_recv")
    await queue.recv()


async def main() -> None:
    peeps.init("channel-full-stall")
    queue: peeps.Channel[int] = peeps.channel("demo.work_queue", CAPACITY)  # type: ignore[assignment]
    sender = peeps.tasks.spawn_tracked("bounded_sender", bounded_sender(queue))
    receiver = peeps.tasks.spawn_tracked("stalled_receiver", stalled_receiver(queue))
    print("channel-full-stall: running (Ctrl+C to stop)", flush=True)
    await asyncio.gather(sender, receiver)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
