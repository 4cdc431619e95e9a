"""A small idle instrumented service, many of which make a load test."""

import asyncio
import signal
import sys

import peeps


async def main() -> None:
    peeps.init(sys.argv[1] if len(sys.argv) > 1 else "idle")
    queue = peeps.channel("idle.queue", 2)
    await queue.put(0)
    await queue.put(1)
    blocked = peeps.tasks.spawn_tracked("idle.blocked_sender", queue.put(2))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    blocked.cancel()


if __name__ == "__main__":
    asyncio.run(main())
