"""rpc-stuck-request: an HTTP call between two processes hangs on a semaphore the server can never get.

This process (``rpc-stuck-client``) starts a second one (``rpc-stuck-server``,
this same file with ``--server``): an aiohttp app with peeps' middleware on a
free port.  The server's ``inventory_janitor`` task took the only permit of
``inventory.permits`` and never gives it back.  The client's ``checkout`` task
calls ``GET /reserve/42`` with peeps' client trace config; the handler waits for
the permit forever.  One snapshot of both processes shows:

    checkout --needs--> request GET /reserve/42 --needs (cross-process)-->
    response GET /reserve/{item} --needs--> handler task --needs[acquire]-->
    inventory.permits <--holds-- inventory_janitor

Stop the server (``kill -STOP`` the pid it prints) and the next snapshot shows a
ghost response where the server's side was.

Run:  PEEPS_DASHBOARD=127.0.0.1:9119 python examples/rpc_stuck_request
or:   scripts/run-example rpc-stuck-request
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading

import aiohttp
from aiohttp import web

import peeps
from peeps.integrations.aiohttp import client_trace_config, middleware

# -- the server process ------------------------------------------------------------


async def inventory_janitor(permits: peeps.Semaphore, held: asyncio.Event) -> None:
    await permits.acquire()
    held.set()
    # The bug: the janitor parks while holding the permit and never releases it.
    await peeps.peep(asyncio.Event().wait(), "janitor.waits_for_a_signal_nobody_sends")


async def serve() -> None:
    peeps.init("rpc-stuck-server")
    permits = peeps.Semaphore(1, name="inventory.permits")
    held = asyncio.Event()
    janitor = peeps.tasks.spawn_tracked("inventory_janitor", inventory_janitor(permits, held))
    await held.wait()

    async def reserve(request: web.Request) -> web.Response:
        await permits.acquire()  # never granted: the janitor holds the only permit
        try:
            return web.json_response({"reserved": request.match_info["item"]})
        finally:
            permits.release()

    app = web.Application(middlewares=[middleware])
    app.router.add_get("/reserve/{item}", reserve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"rpc-stuck-request server: pid {os.getpid()} listening on 127.0.0.1:{port}",
          flush=True)
    try:
        await janitor
    finally:
        await runner.cleanup()


def _exit_when_parent_goes() -> None:
    # The client holds our stdin open; EOF means it is gone, so are we.
    sys.stdin.read()
    os._exit(0)


# -- the client process ------------------------------------------------------------


def start_server_process() -> tuple[subprocess.Popen[str], int]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--server"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for line in child.stdout:
        print(line, end="", flush=True)
        if "listening on" in line:
            port = int(line.rsplit(":", 1)[1])
            break
    else:
        raise SystemExit(f"rpc-stuck-request: the server exited ({child.wait()})")
    stdout = child.stdout
    threading.Thread(target=lambda: [print(line, end="", flush=True) for line in stdout],
                     daemon=True).start()
    return child, port


async def checkout(base: str) -> None:
    timeout = aiohttp.ClientTimeout(total=None)  # wait as long as it takes: that is the bug
    async with aiohttp.ClientSession(trace_configs=[client_trace_config()],
                                     timeout=timeout) as session:
        print("rpc-stuck-request client: GET /reserve/42", flush=True)
        async with session.get(f"{base}/reserve/42") as response:
            print(f"rpc-stuck-request client: {response.status} {await response.text()}")


async def main() -> None:
    peeps.init("rpc-stuck-client")
    child, port = start_server_process()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, child)
    try:
        await peeps.tasks.spawn_tracked("checkout", checkout(f"http://127.0.0.1:{port}"))
    finally:
        _stop(child)


def _stop(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
    os._exit(0)


if __name__ == "__main__":
    try:
        if "--server" in sys.argv[1:]:
            threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
            asyncio.run(serve())
        else:
            asyncio.run(main())
    except KeyboardInterrupt:
        pass
