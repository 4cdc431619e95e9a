"""The HTTP API and the UI's static files (aiohttp).

Every error is JSON ``{error: {status, message}}``; no HTML tracebacks.  The
routes are described in ``docs/architecture.md`` and ``openapi.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from peeps.analysis import find_suspects

from . import _store
from ._config import ServerConfig
from ._graph import link_cross_process
from ._ingest import IngestServer
from ._snapshots import SnapshotCoordinator
from ._sql_sandbox import SqlError, SqlLimits, run_query
from ._store import Store

log = logging.getLogger("peeps.web.http")

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
MAX_SQL_BODY_BYTES: Final = 256 * 1024

MISSING_UI_PAGE: Final = """<!doctype html>
<html><head><meta charset="utf-8"><title>peeps-web: UI not built</title></head>
<body>
<h1>peeps-web is running, but the UI has not been built</h1>
<p>The file <code>src/peeps/web/static/index.html</code> is missing.
Build it from the TypeScript source with:</p>
<pre>scripts/build-ui</pre>
<p>The HTTP API works without it: try <a href="/health">/health</a>,
<a href="/api/processes">/api/processes</a> and <a href="/api/snapshots">/api/snapshots</a>.</p>
</body></html>
"""


@dataclass
class Services:
    config: ServerConfig
    store: Store
    ingest: IngestServer
    coordinator: SnapshotCoordinator
    sql_slots: asyncio.Semaphore
    version: str


SERVICES: Final = web.AppKey("services", Services)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message}}, status=status,
                             headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and exc.content_type == "text/plain" else exc.reason
        if exc.status == 404 and message == "404: Not Found":
            message = f"no such route: {request.method} {request.path}"
        elif exc.status == 405:
            message = f"method {request.method} not allowed on {request.path}"
        # Keep headers the status requires (Allow on 405).
        kept = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_error(exc.status, message or exc.reason, kept)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, f"internal error: {type(exc).__name__}: {exc}")


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _snapshot_id(request: web.Request) -> int:
    raw = request.match_info["snapshot_id"]
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"snapshot id must be an integer, got {raw[:40]!r}") from None
    if not 0 < value < 2**63:
        raise web.HTTPNotFound(text=f"snapshot {value} does not exist")
    return value


def _int_query(request: web.Request, name: str, default: int, *, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer, got {raw[:40]!r}") from None
    return max(lo, min(hi, value))


async def _require_snapshot(services: Services, snapshot_id: int) -> dict[str, Any]:
    record = await services.store.read(lambda c: _store.get_snapshot(c, snapshot_id))
    if record is None:
        raise web.HTTPNotFound(text=f"snapshot {snapshot_id} does not exist")
    return record


# -- routes -------------------------------------------------------------------------


async def health(request: web.Request) -> web.Response:
    s = _services(request)
    return web.json_response({"status": "ok", "version": s.version,
                              "connected_processes": len(s.ingest.processes())})


async def processes(request: web.Request) -> web.Response:
    s = _services(request)
    procs = sorted((c.describe() for c in s.ingest.processes()), key=lambda p: p["proc_key"])
    return web.json_response({"processes": procs})


async def jump_now(request: web.Request) -> web.Response:
    s = _services(request)
    result = await s.coordinator.take_snapshot("jump_now")
    return web.json_response(dict(result))


async def snapshot_progress(request: web.Request) -> web.Response:
    s = _services(request)
    progress = s.coordinator.progress()
    if progress["last_snapshot_id"] is None:
        progress["last_snapshot_id"] = await s.store.read(_store.last_snapshot_id)
    return web.json_response(progress)


async def list_snapshots(request: web.Request) -> web.Response:
    s = _services(request)
    limit = _int_query(request, "limit", 50, lo=1, hi=1000)
    snapshots = await s.store.read(lambda c: _store.list_snapshots(c, limit))
    return web.json_response({"snapshots": snapshots})


async def get_snapshot(request: web.Request) -> web.Response:
    s = _services(request)
    snapshot_id = _snapshot_id(request)

    def read(conn: Any) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        return _store.get_snapshot(conn, snapshot_id), _store.get_processes(conn, snapshot_id)

    record, procs = await s.store.read(read)
    if record is None:
        raise web.HTTPNotFound(text=f"snapshot {snapshot_id} does not exist")
    return web.json_response({"snapshot": record, "processes": procs})


async def _load_graph(s: Services, snapshot_id: int) -> dict[str, Any]:
    # Everything heavy (reading, joining) runs in the worker thread, off the loop.
    def read(conn: Any) -> dict[str, Any] | None:
        record = _store.get_snapshot(conn, snapshot_id)
        if record is None:
            return None
        nodes, edges = _store.get_graph(conn, snapshot_id)
        return link_cross_process({"snapshot": record,
                                   "processes": _store.get_processes(conn, snapshot_id),
                                   "nodes": nodes, "edges": edges})

    graph = await s.store.read(read)
    if graph is None:
        raise web.HTTPNotFound(text=f"snapshot {snapshot_id} does not exist")
    return graph


async def json_off_loop(payload: Any) -> web.Response:
    """Serialize a large answer in a worker thread so ingest is not held up."""
    text = await asyncio.to_thread(json.dumps, payload)
    return web.Response(text=text, content_type="application/json")


async def get_graph(request: web.Request) -> web.Response:
    graph = await _load_graph(_services(request), _snapshot_id(request))
    return await json_off_loop(graph)


async def get_events(request: web.Request) -> web.Response:
    s = _services(request)
    snapshot_id = _snapshot_id(request)
    entity_id = request.query.get("entity_id") or None
    proc_key = request.query.get("proc_key") or None
    limit = _int_query(request, "limit", 10000, lo=1, hi=100000)
    await _require_snapshot(s, snapshot_id)
    events = await s.store.read(lambda c: _store.get_events(
        c, snapshot_id, entity_id=entity_id, proc_key=proc_key, limit=limit))
    return await json_off_loop({"events": events})


async def get_suspects(request: web.Request) -> web.Response:
    s = _services(request)
    snapshot_id = _snapshot_id(request)
    graph = await _load_graph(s, snapshot_id)
    events = await s.store.read(lambda c: _store.get_all_events(c, snapshot_id))
    suspects = await asyncio.to_thread(find_suspects, graph["nodes"], graph["edges"], events)
    return await json_off_loop({"suspects": suspects})


async def sql(request: web.Request) -> web.Response:
    s = _services(request)
    if request.content_length is not None and request.content_length > MAX_SQL_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_SQL_BODY_BYTES, request.content_length,
                                            text="request body too large")
    try:
        body = json.loads(await request.text())
    except ValueError:
        raise web.HTTPBadRequest(text="request body must be JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="request body must be a JSON object")
    snapshot_id, query = body.get("snapshot_id"), body.get("sql")
    if not isinstance(snapshot_id, int) or isinstance(snapshot_id, bool):
        raise web.HTTPBadRequest(text="snapshot_id must be an integer")
    if not 0 < snapshot_id < 2**63:
        raise web.HTTPNotFound(text=f"snapshot {snapshot_id} does not exist")
    if not isinstance(query, str):
        raise web.HTTPBadRequest(text="sql must be a string")
    limits = SqlLimits(timeout_ms=s.config.sql_timeout_ms, max_rows=s.config.sql_max_rows,
                       max_bytes=s.config.sql_max_bytes)
    async with s.sql_slots:
        try:
            result = await asyncio.to_thread(run_query, s.store, snapshot_id, query,
                                             body.get("params"), limits)
        except SqlError as exc:
            return json_error(exc.status, exc.message)
    return await json_off_loop(result)


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return web.Response(text=MISSING_UI_PAGE, content_type="text/html", status=200)
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


async def asset(request: web.Request) -> web.StreamResponse:
    assets = (STATIC_DIR / "assets").resolve()
    relative = request.match_info["path"]
    target = (assets / relative).resolve()
    if not target.is_relative_to(assets) or not target.is_file():
        raise web.HTTPNotFound(text=f"no such asset: {relative[:200]}")
    return web.FileResponse(target)


async def openapi(request: web.Request) -> web.Response:
    try:
        text = resources.files("peeps.web").joinpath("openapi.json").read_text("utf-8")
    except FileNotFoundError:
        raise web.HTTPNotFound(text="openapi.json is not installed") from None
    return web.Response(text=text, content_type="application/json")


def build_app(services: Services,
              extra_middlewares: tuple[Any, ...] = ()) -> web.Application:
    app = web.Application(middlewares=[error_middleware, *extra_middlewares],
                          client_max_size=MAX_SQL_BODY_BYTES)
    app[SERVICES] = services
    app.router.add_get("/health", health)
    app.router.add_get("/api/processes", processes)
    app.router.add_post("/api/jump-now", jump_now)
    app.router.add_get("/api/snapshot-progress", snapshot_progress)
    app.router.add_get("/api/snapshots", list_snapshots)
    app.router.add_get("/api/snapshots/{snapshot_id}", get_snapshot)
    app.router.add_get("/api/snapshots/{snapshot_id}/graph", get_graph)
    app.router.add_get("/api/snapshots/{snapshot_id}/events", get_events)
    app.router.add_get("/api/snapshots/{snapshot_id}/suspects", get_suspects)
    app.router.add_post("/api/sql", sql)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/", index)
    app.router.add_get("/assets/{path:.+}", asset)
    return app
