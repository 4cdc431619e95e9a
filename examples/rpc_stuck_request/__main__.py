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
    ready_fd = int(os.environ.pop(READY_FD_ENV))
    os.write(ready_fd, f"{port}\n".encode())
    os.close(ready_fd)
    try:
        await janitor
    finally:
        await runner.cleanup()


def _die_with_parent(parent_pid: int) -> None:
    # Linux: the kernel sends SIGTERM when the client dies, however it dies.
    # No watcher thread or task, so the example's graph shows only the scenario.
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the client died before prctl took effect
        os._exit(0)


# -- the client process ------------------------------------------------------------

READY_FD_ENV = "RPC_STUCK_REQUEST_READY_FD"


def start_server_process() -> tuple[subprocess.Popen[bytes], int]:
    """Start the server process (sharing our stdout) and read the port it bound."""
    ready_r, ready_w = os.pipe()
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{READY_FD_ENV: str(ready_w)})
    child = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--server", str(os.getpid())],
        env=env, pass_fds=(ready_w,))
    os.close(ready_w)
    with os.fdopen(ready_r) as ready:
        line = ready.readline()
    if not line.strip():
        raise SystemExit(f"rpc-stuck-request: the server exited ({child.wait()})")
    return child, int(line)


async def checkout(base: str) -> None:
    timeout = aiohttp.ClientTimeout(total=None)  # wait as long as it takes: that is the bug
    async with aiohttp.ClientSession(trace_configs=[client_trace_config()],
                                     timeout=timeout) as session:
        print("rpc-stuck-request client: GET /reserve/42", flush=True)
        async with session.get(f"{base}/reserve/42") as response:
            print(f"rpc-stuck-request client: {response.status} {await response.text()}")


async def main(child: subprocess.Popen[bytes], port: int) -> None:
    peeps.init("rpc-stuck-client")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _stop, child)
    try:
        await peeps.tasks.spawn_tracked("checkout", checkout(f"http://127.0.0.1:{port}"))
    finally:
        _stop(child)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            child.kill()
    os._exit(0)


if __name__ == "__main__":
    try:
        if sys.argv[1:2] == ["--server"]:
            _die_with_parent(int(sys.argv[2]))
            asyncio.run(serve())
        else:
            # Before the event loop starts: the client blocks only here, for the port.
            server_process, server_port = start_server_process()
            asyncio.run(main(server_process, server_port))
    except KeyboardInterrupt:
        pass
