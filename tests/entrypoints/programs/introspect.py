"""Prints which parts of peeps are on inside the program, from the program's side."""

import asyncio
import threading


async def main() -> None:
    loop = asyncio.get_running_loop()
    factory = loop.get_task_factory()
    # peeps installs a plain function that carries its PeepsTaskFactory state.
    factory = getattr(factory, "peeps_factory", factory)
    print(f"task_factory={type(factory).__name__ if factory else None}", flush=True)
    print(f"asyncio.Lock={asyncio.Lock.__module__}", flush=True)
    names = sorted(t.name for t in threading.enumerate() if t.name.startswith("peeps-"))
    print(f"threads={','.join(names)}", flush=True)


asyncio.run(main())
