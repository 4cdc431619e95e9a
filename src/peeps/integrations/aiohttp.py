"""aiohttp integration: requests and connections appear in the graph with no
other change to the service.

Client: ``aiohttp.ClientSession(trace_configs=[client_trace_config()])``.  Each
request becomes a ``request`` node the calling task ``needs``, its headers carry
the ``peeps.*`` span ids, and each session's pool to one origin is a
``connection`` node (bytes, in-flight requests, last activity).

Server: ``web.Application(middlewares=[middleware])``.  Each incoming request
becomes a ``response`` node continuing the caller's span, which ``needs`` the
handler task; each accepted connection is a ``connection`` node.

This is the only module of peeps that imports aiohttp.
"""

from __future__ import annotations

import sys
import types
import weakref
from typing import Any

import aiohttp
from aiohttp import web

from .. import _rpc
from .._config import STATE
from .._connections import Connection
from .._registry import Location, guard

__all__ = ["client_trace_config", "middleware"]

#: Top-level packages whose frames are plumbing between the user's call and ours.
_PLUMBING = frozenset({"peeps", "aiohttp", "aiosignal", "asyncio", "contextlib", "yarl",
                       "multidict", "async_timeout"})


def _caller_location() -> Location | None:
    """The first frame outside peeps, aiohttp and their plumbing: the code that
    made the request.  A bounded walk, like ``capture_location``."""
    frame: types.FrameType | None = sys._getframe(1)
    for _ in range(40):
        if frame is None:
            return None
        module = str(frame.f_globals.get("__name__", ""))
        if module.partition(".")[0] not in _PLUMBING:
            return (frame.f_code.co_filename, frame.f_lineno)
        frame = frame.f_back
    return None


# -- client ----------------------------------------------------------------------

#: session -> origin -> the connection node for that session's pool to that origin.
_POOLS: weakref.WeakKeyDictionary[aiohttp.ClientSession, dict[str, Connection]] = (
    weakref.WeakKeyDictionary())


def _pool(session: aiohttp.ClientSession, origin: str) -> Connection:
    pools = _POOLS.get(session)
    if pools is None:
        pools = _POOLS[session] = {}
    conn = pools.get(origin)
    if conn is None:
        conn = pools[origin] = Connection(role="client", transport_kind="aiohttp",
                                          peer=origin, label=f"http pool → {origin}")
        conn.extra["pooled"] = True
        session_ref = weakref.ref(session)

        def session_closed() -> bool:
            owner = session_ref()
            return owner is None or owner.closed

        conn.is_closed = session_closed
    return conn


async def _on_request_start(session: aiohttp.ClientSession, ctx: types.SimpleNamespace,
                            params: aiohttp.TraceRequestStartParams) -> None:
    if not STATE.enabled:
        return

    def start() -> None:
        url = params.url
        origin = str(url.origin())
        req = _rpc.Request(f"{params.method} {url.path or '/'}", params.headers,
                           target=origin, meta=None, location=_caller_location())
        conn = _pool(session, origin)
        req.connection_id = conn.id
        req.start()
        conn.request_started()
        ctx.peeps_request = req
        ctx.peeps_connection = conn

    guard("aiohttp client request start", start)


def _finish(ctx: types.SimpleNamespace, status: Any, exc: BaseException | None,
            response: aiohttp.ClientResponse | None = None) -> None:
    req: _rpc.Request | None = getattr(ctx, "peeps_request", None)
    conn: Connection | None = getattr(ctx, "peeps_connection", None)
    if req is None:
        return
    ctx.peeps_request = None
    if conn is not None:
        conn.request_finished()
        connection = response.connection if response is not None else None
        transport = connection.transport if connection is not None else None
        if transport is not None:
            conn.local = _addr(transport.get_extra_info("sockname")) or conn.local
            conn.extra["peer_address"] = _addr(transport.get_extra_info("peername"))
    req.set_status(status)
    req.finish(exc)


def _addr(value: Any) -> str | None:
    if isinstance(value, tuple) and len(value) >= 2:
        return f"{value[0]}:{value[1]}"
    return str(value) if value else None


async def _on_request_end(session: aiohttp.ClientSession, ctx: types.SimpleNamespace,
                          params: aiohttp.TraceRequestEndParams) -> None:
    guard("aiohttp client request end",
          lambda: _finish(ctx, params.response.status, None, params.response))


async def _on_request_exception(session: aiohttp.ClientSession, ctx: types.SimpleNamespace,
                                params: aiohttp.TraceRequestExceptionParams) -> None:
    guard("aiohttp client request failure", lambda: _finish(ctx, None, params.exception))


async def _on_chunk_sent(session: aiohttp.ClientSession, ctx: types.SimpleNamespace,
                         params: aiohttp.TraceRequestChunkSentParams) -> None:
    conn: Connection | None = getattr(ctx, "peeps_connection", None)
    if conn is not None:
        conn.sent(len(params.chunk))


async def _on_chunk_received(session: aiohttp.ClientSession, ctx: types.SimpleNamespace,
                             params: aiohttp.TraceResponseChunkReceivedParams) -> None:
    conn: Connection | None = getattr(ctx, "peeps_connection", None)
    if conn is not None:
        conn.received(len(params.chunk))


async def _on_connection_created(session: aiohttp.ClientSession, ctx: types.SimpleNamespace,
                                 params: aiohttp.TraceConnectionCreateEndParams) -> None:
    conn: Connection | None = getattr(ctx, "peeps_connection", None)
    if conn is not None:
        conn.extra["connections_opened"] = conn.extra.get("connections_opened", 0) + 1


def client_trace_config() -> aiohttp.TraceConfig:
    """A ``TraceConfig`` that makes every request of a ``ClientSession`` a
    ``request`` node (with ``peeps.*`` span headers sent along) and each pool to
    an origin a ``connection`` node.

    ::

        session = aiohttp.ClientSession(trace_configs=[peeps.integrations.aiohttp.client_trace_config()])
    """
    config = aiohttp.TraceConfig()
    config.on_request_start.append(_on_request_start)
    config.on_request_end.append(_on_request_end)
    config.on_request_exception.append(_on_request_exception)
    config.on_request_chunk_sent.append(_on_chunk_sent)
    config.on_response_chunk_received.append(_on_chunk_received)
    config.on_connection_create_end.append(_on_connection_created)
    return config


# -- server ----------------------------------------------------------------------

#: transport -> the connection node of one accepted connection.
_ACCEPTED: weakref.WeakKeyDictionary[Any, Connection] = weakref.WeakKeyDictionary()


def _accepted(request: web.Request) -> Connection | None:
    transport = request.transport
    if transport is None:
        return None
    try:
        conn = _ACCEPTED.get(transport)
        if conn is None:
            conn = _ACCEPTED[transport] = Connection(role="server", transport_kind="aiohttp",
                                                     transport=transport)
    except TypeError:  # a transport that cannot be weakly referenced
        return None
    return conn


def _handler_location(request: web.Request) -> Location | None:
    fn: Any = getattr(request.match_info, "handler", None)
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    return (code.co_filename, code.co_firstlineno)


def _method_label(request: web.Request) -> str:
    resource = getattr(request.match_info.route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    return f"{request.method} {canonical or request.path}"


@web.middleware
async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Server middleware: each request is a ``response`` node continuing the
    caller's span; the handler task's work is attributed to it.

    ::

        app = web.Application(middlewares=[peeps.integrations.aiohttp.middleware])
    """
    if not STATE.enabled:
        result: web.StreamResponse = await handler(request)
        return result
    resp: _rpc.Response | None = None
    conn: Connection | None = None

    def begin() -> None:
        nonlocal resp, conn
        conn = _accepted(request)
        resp = _rpc.Response(request.headers, method=_method_label(request),
                             peer=request.remote, meta={"path": request.path},
                             location=_handler_location(request))
        if conn is not None:
            resp.connection_id = conn.id
            conn.request_started()
            conn.received(request.content_length or 0)
        resp.start()

    guard("aiohttp server request start", begin)
    if resp is None:
        result = await handler(request)
        return result
    outcome: BaseException | None = None
    status: Any = None
    sent_bytes = 0
    try:
        result = await handler(request)
        status = result.status
        # Known before the body is written for ``web.Response``; streamed bodies count 0.
        sent_bytes = getattr(result, "content_length", None) or 0
        return result
    except web.HTTPException as exc:
        status = exc.status
        if exc.status >= 500:
            outcome = exc
        raise
    except BaseException as exc:
        outcome = exc
        raise
    finally:
        def end() -> None:
            assert resp is not None
            resp.set_status(status)
            resp.finish(outcome)
            if conn is not None:
                conn.request_finished()
                conn.sent(sent_bytes)

        guard("aiohttp server request end", end)
