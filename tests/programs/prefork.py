"""A gunicorn-style pre-fork server: the parent connects, then forks workers."""

import asyncio
import os
import signal
import sys
import time

import peeps


async def serve(worker: int) -> None:
    queue = peeps.channel(f"worker.{worker}.queue", 1)
    await queue.put(0)
    print(f"worker {worker} pid {os.getpid()} ready", flush=True)
    await queue.put(1)  # blocks forever: something per-worker to see


def _stop(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    peeps.init("prefork")
    parent_queue = peeps.channel("parent.queue", 8)
    children = []
    for worker in range(2):
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(serve(worker))
            finally:
                os._exit(0)
        children.append(pid)
    print(f"parent pid {os.getpid()} forked {children}", flush=True)
    try:
        while True:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        for pid in children:
            os.kill(pid, 9)
        del parent_queue
        sys.exit(0)


if __name__ == "__main__":
    main()
