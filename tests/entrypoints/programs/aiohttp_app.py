"""A tiny aiohttp service with no peeps in it: ``/slow`` waits on an event that
``/release`` sets.  Prints its port once listening."""

import asyncio
import sys

from aiohttp import web

released = asyncio.Event()


async def slow_handler(request: web.Request) -> web.Response:
    await released.wait()
    return web.Response(text="slow done")


async def release_handler(request: web.Request) -> web.Response:
    released.set()
    return web.Response(text="released")


async def main() -> None:
    app = web.Application()
    app.router.add_get("/slow", slow_handler)
    app.router.add_get("/release", release_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"aiohttp-app: listening on {port} argv={sys.argv}", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
