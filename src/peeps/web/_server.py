"""Wiring: one asyncio loop runs the ingest server, the HTTP app and the snapshot timer.

On start it prints machine-parsable lines (scripts and tests read them)::

    peeps-web: database /abs/path/peeps-web.sqlite
    peeps-web: ingest listening on 127.0.0.1:9119
    peeps-web: http listening on http://127.0.0.1:9120
    peeps-web: ready
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from importlib import metadata

from aiohttp import web

from ._config import ConfigError, ServerConfig, is_loopback, load_config
from ._http import Services, build_app
from ._ingest import IngestServer
from ._security import security_middleware
from ._snapshots import SnapshotCoordinator
from ._store import Store

log = logging.getLogger("peeps.web")


def _version() -> str:
    try:
        return metadata.version("peeps")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def check_exposure(config: ServerConfig) -> None:
    """Refuse to listen beyond loopback without a token unless told it is fine."""
    exposed = [addr for addr in (config.listen, config.http)
               if not is_loopback(_host(addr))]
    if not exposed:
        return
    if config.token:
        return
    if config.insecure_no_token:
        log.warning("!!! INSECURE: listening on %s without a token (--insecure-no-token); "
                    "anyone who can reach these ports can read every connected process's "
                    "graph !!!", ", ".join(exposed))
        return
    raise ConfigError(
        f"refusing to listen on non-loopback address(es) {', '.join(exposed)} without a token: "
        "set PEEPS_TOKEN (or --token), or pass --insecure-no-token if you really mean it")


def _host(addr: str) -> str:
    host = addr.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host


class PeepsWebServer:
    """The whole server, startable and stoppable inside a running loop."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = Store(config.db, retain_ingest_events=config.retain_ingest_events)
        self.ingest = IngestServer(config, self.store)
        self.coordinator = SnapshotCoordinator(config, self.store, self.ingest)
        self._runner: web.AppRunner | None = None
        self.http_bound: tuple[str, int] | None = None
        self.ingest_bound: tuple[str, int] | None = None

    async def start(self) -> None:
        check_exposure(self.config)
        await asyncio.to_thread(self.store.open)
        self.ingest_bound = await self.ingest.start()
        services = Services(self.config, self.store, self.ingest, self.coordinator,
                            asyncio.Semaphore(self.config.sql_max_concurrent), _version())
        app = build_app(services, (security_middleware(self.config),))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                     shutdown_timeout=3.0)
        await self._runner.setup()
        host, port = self.config.http_addr
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sockname = self._runner.addresses[0]
        self.http_bound = (str(sockname[0]), int(sockname[1]))
        self.coordinator.start_periodic()

    async def stop(self) -> None:
        await self.coordinator.stop()
        await self.ingest.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await asyncio.to_thread(self.store.close)


def _fmt(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(config: ServerConfig) -> None:
    """Run until SIGINT/SIGTERM."""
    server = PeepsWebServer(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await server.start()
    assert server.ingest_bound is not None and server.http_bound is not None
    _announce(f"database {server.store.path}")
    if server.store.recovered_snapshots:
        _announce(f"recovered {server.store.recovered_snapshots} interrupted snapshot(s) "
                  "as incomplete")
    _announce(f"ingest listening on {_fmt(server.ingest_bound)}")
    _announce(f"http listening on http://{_fmt(server.http_bound)}")
    log.info("snapshots every %s, timeout %d ms, keeping %d",
             f"{config.snapshot_interval_s:g}s" if config.snapshot_interval_s else "never (off)",
             config.snapshot_timeout_ms, config.retain_snapshots)
    _announce("ready")
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await server.stop()
        _announce("stopped")


def _announce(line: str) -> None:
    print(f"peeps-web: {line}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"peeps-web: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"peeps-web: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"peeps-web: cannot start: {exc}", file=sys.stderr)
        return 1
    return 0
