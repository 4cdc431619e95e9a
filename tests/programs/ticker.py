"""A small instrumented service: ticks every 20 ms and prints each tick, so a
test can see it keep running whatever happens to the dashboard."""

import asyncio
import sys

import peeps


async def main() -> None:
    peeps.init("ticker")
    queue = peeps.channel("ticker.queue", 4)
    tick = 0
    while True:
        await queue.put(tick)
        await queue.get()
        await peeps.sleep(0.02, label="ticker.pause")
        tick += 1
        print(f"tick {tick}", flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
