"""A service whose event loop is blocked by a synchronous call."""

import asyncio
import time

import peeps


async def victim(queue: "peeps.Channel[int]") -> None:
    await queue.put(1)
    await queue.put(2)  # blocks: capacity 1


async def main() -> None:
    peeps.init("blocked-loop")
    queue: peeps.Channel[int] = peeps.channel("blocked.queue", 1)  # type: ignore[assignment]
    peeps.tasks.spawn_tracked("blocked.victim", victim(queue))
    await asyncio.sleep(0.05)
    print("blocking the loop", flush=True)
    time.sleep(60)  # the bug under diagnosis: nothing on this loop runs any more


if __name__ == "__main__":
    asyncio.run(main())
