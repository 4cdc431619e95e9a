"""Network connections: instrumented asyncio streams (``peeps.open_connection``,
``peeps.start_server`` and their unix-socket twins) and the ``connections``
built-in provider that describes every live connection.

A connection node shows peer, local address, state, bytes in/out, age, last
activity and in-flight requests; a task blocked reading from it (or waiting for
the write buffer to drain) ``needs`` it.  The aiohttp integration
(``peeps.integrations.aiohttp``) reports its connections here too.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, SupportsIndex

from ._config import STATE
from ._providers import _register
from ._registry import (
    REGISTRY,
    Clock,
    Location,
    WaitSet,
    base_attrs,
    capture_location,
    guard,
    new_id,
)
from ._tasks import current_task_entity
from .types import Edge, Node

_LIMIT = 2**16  # asyncio.streams' default line/buffer limit


def _addr(value: Any) -> str | None:
    """A socket address as ``host:port`` (``[v6]:port``), a unix path, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, tuple) and len(value) >= 2:
        host, port = value[0], value[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)


class Connection:
    """One network connection (or, for a pooled HTTP client, one pool to one
    origin), as the ``connections`` provider shows it.

    Counters are updated in place by the wrappers; nothing here does I/O.
    """

    __slots__ = (
        "__weakref__",
        "_peeps_id",
        "bytes_in",
        "bytes_out",
        "closed",
        "created_mono_ns",
        "eof",
        "extra",
        "in_flight",
        "is_closed",
        "label",
        "last_activity_mono_ns",
        "local",
        "location",
        "meta",
        "peer",
        "requests",
        "role",
        "transport_kind",
        "transport_ref",
        "waiters",
    )

    def __init__(self, *, role: str, transport_kind: str, peer: str | None = None,
                 local: str | None = None, label: str | None = None,
                 location: Location | None = None, meta: dict[str, Any] | None = None,
                 transport: asyncio.BaseTransport | None = None) -> None:
        self._peeps_id = new_id("connection")
        self.role = role
        self.transport_kind = transport_kind
        self.peer = peer
        self.local = local
        self.label = label
        self.location = location
        self.meta = meta
        self.created_mono_ns = time.monotonic_ns()
        self.last_activity_mono_ns = self.created_mono_ns
        self.bytes_in = 0
        self.bytes_out = 0
        self.in_flight = 0
        self.requests = 0
        self.closed = False
        #: For connections peeps does not close itself (an HTTP client pool):
        #: asked at snapshot time whether the owner has closed it.
        self.is_closed: Callable[[], bool] | None = None
        self.eof = False
        self.extra: dict[str, Any] = {}
        self.waiters = WaitSet()
        self.transport_ref: Callable[[], asyncio.BaseTransport | None] = lambda: None
        if transport is not None:
            self.attach_transport(transport)
        _remember(self)
        REGISTRY.emit(self._peeps_id, "net.connection.opened",
                      {"role": role, "transport": transport_kind, "peer": self.peer,
                       "local": self.local})

    def mark_closed(self) -> None:
        if not self.closed:
            self.closed = True
            REGISTRY.emit(self._peeps_id, "net.connection.closed",
                          {"bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                           "requests": self.requests})

    @property
    def id(self) -> str:
        return self._peeps_id

    def attach_transport(self, transport: asyncio.BaseTransport) -> None:
        self.peer = _addr(transport.get_extra_info("peername")) or self.peer
        self.local = _addr(transport.get_extra_info("sockname")) or self.local
        try:
            self.transport_ref = weakref.ref(transport)
        except TypeError:  # a transport without weakref support (some C loops)
            self.transport_ref = lambda: None

    def received(self, n: int) -> None:
        self.bytes_in += n
        self.last_activity_mono_ns = time.monotonic_ns()

    def sent(self, n: int) -> None:
        self.bytes_out += n
        self.last_activity_mono_ns = time.monotonic_ns()

    def request_started(self) -> None:
        self.in_flight += 1
        self.requests += 1
        self.last_activity_mono_ns = time.monotonic_ns()

    def request_finished(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)
        self.last_activity_mono_ns = time.monotonic_ns()

    def state(self) -> str:
        if self.closed or (self.is_closed is not None and self.is_closed()):
            return "closed"
        transport = self.transport_ref()
        if transport is not None and transport.is_closing():
            return "closing"
        if self.eof:
            return "eof"
        return "open"

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, self.meta, now)
        attrs.update(
            role=self.role,
            transport=self.transport_kind,
            peer=self.peer,
            local=self.local,
            state=self.state(),
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            last_activity_at_ns=now.wall_of(self.last_activity_mono_ns),
            idle_ns=max(0, now.mono_ns - self.last_activity_mono_ns),
            in_flight=self.in_flight,
            requests=self.requests,
        )
        attrs.update(self.extra)
        label = self.label or (f"{self.local} → {self.peer}" if self.role == "client"
                               else f"{self.peer} → {self.local}")
        node: Node = {"id": self._peeps_id, "kind": "connection", "label": label, "attrs": attrs}
        return node, self.waiters.needs_edges(self._peeps_id, now)


#: Every live connection, weakly: the streams/integration objects own them.  A
#: plain dict of refs so the collector thread can copy it atomically.
_CONNECTIONS: dict[str, weakref.ref[Connection]] = {}


def _remember(conn: Connection) -> None:
    key = conn._peeps_id

    def _gone(_: object, key: str = key) -> None:
        _CONNECTIONS.pop(key, None)

    _CONNECTIONS[key] = weakref.ref(conn, _gone)


def live_connections() -> list[Connection]:
    return [c for c in (r() for r in list(_CONNECTIONS.copy().values())) if c is not None]


def _describe_connections(now: Clock) -> dict[str, Any]:
    nodes: list[Node] = []
    edges: list[Edge] = []
    for conn in live_connections():
        node, conn_edges = conn._peeps_describe(now)
        nodes.append(node)
        edges.extend(conn_edges)
    return {"nodes": nodes, "edges": edges}


_register("connections", _describe_connections, timeout_s=1.0, builtin=True)


# -- streams ---------------------------------------------------------------------


class TrackedStreamReader(asyncio.StreamReader):
    """A ``StreamReader`` that counts bytes in and shows who waits for data."""

    _peeps_conn: Connection | None = None

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        super().feed_data(data)
        conn = self._peeps_conn
        if conn is not None:
            conn.received(len(data))  # type: ignore[arg-type]

    def feed_eof(self) -> None:
        super().feed_eof()
        if self._peeps_conn is not None:
            self._peeps_conn.eof = True

    async def _wait_for_data(self, func_name: str) -> None:
        # The one place every read blocks (read, readline, readexactly, readuntil).
        conn = self._peeps_conn
        waiter = current_task_entity() if conn is not None else None
        if conn is not None:
            conn.waiters.add(waiter, "recv")
        try:
            await super()._wait_for_data(func_name)  # type: ignore[misc]
        finally:
            if conn is not None:
                conn.waiters.remove(waiter)


class TrackedStreamWriter(asyncio.StreamWriter):
    """A ``StreamWriter`` that counts bytes out and shows who waits on drain."""

    _peeps_conn: Connection | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        super().write(data)
        if self._peeps_conn is not None:
            self._peeps_conn.sent(len(data))

    def writelines(self, data: Any) -> None:
        data = list(data)
        super().writelines(data)
        if self._peeps_conn is not None:
            self._peeps_conn.sent(sum(len(d) for d in data))

    def close(self) -> None:
        super().close()
        if self._peeps_conn is not None:
            self._peeps_conn.mark_closed()

    async def drain(self) -> None:
        conn = self._peeps_conn
        if conn is None:
            return await super().drain()
        waiter = current_task_entity()
        conn.waiters.add(waiter, "drain")
        try:
            await super().drain()
        finally:
            conn.waiters.remove(waiter)


def _track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, role: str,
           kind: str, location: Location | None, meta: dict[str, Any] | None) -> None:
    def attach() -> None:
        conn = Connection(role=role, transport_kind=kind, location=location, meta=meta,
                          transport=writer.transport)
        if isinstance(reader, TrackedStreamReader):
            reader._peeps_conn = conn
        if not isinstance(writer, TrackedStreamWriter):
            # The server protocol builds its own writer; retype that one object
            # rather than making a second writer over the same transport.
            writer.__class__ = TrackedStreamWriter
        writer._peeps_conn = conn  # type: ignore[attr-defined]

    guard("connection tracking", attach)


async def _open(connect: Callable[..., Awaitable[tuple[asyncio.BaseTransport, Any]]],
                args: tuple[Any, ...], kind: str, limit: int, meta: dict[str, Any] | None,
                location: Location | None, kwds: dict[str, Any]
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    loop = asyncio.get_running_loop()
    reader = TrackedStreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await connect(lambda: protocol, *args, **kwds)
    writer = TrackedStreamWriter(transport, protocol, reader, loop)  # type: ignore[arg-type]
    _track(reader, writer, role="client", kind=kind, location=location, meta=meta)
    return reader, writer


async def open_connection(host: str | None = None, port: int | str | None = None, *,
                          limit: int = _LIMIT, peeps_meta: dict[str, Any] | None = None,
                          **kwds: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` whose connection appears in the graph.

    Same arguments and result; ``peeps_meta`` becomes node metadata.  With peeps
    disabled this is ``asyncio.open_connection``.
    """
    if not STATE.enabled:
        return await asyncio.open_connection(host, port, limit=limit, **kwds)
    loop = asyncio.get_running_loop()
    return await _open(loop.create_connection, (host, port), "tcp", limit, peeps_meta,
                       capture_location(), kwds)


async def open_unix_connection(path: str | None = None, *, limit: int = _LIMIT,
                               peeps_meta: dict[str, Any] | None = None, **kwds: Any
                               ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_unix_connection`` whose connection appears in the graph."""
    if not STATE.enabled:
        return await asyncio.open_unix_connection(path, limit=limit, **kwds)
    loop = asyncio.get_running_loop()
    return await _open(loop.create_unix_connection, (path,), "unix", limit, peeps_meta,
                       capture_location(), kwds)


ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]


def _server_factory(client_connected_cb: ClientConnected, kind: str, limit: int,
                    meta: dict[str, Any] | None, location: Location | None
                    ) -> Callable[[], asyncio.StreamReaderProtocol]:
    loop = asyncio.get_running_loop()

    def on_connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Any:
        _track(reader, writer, role="server", kind=kind, location=location, meta=meta)
        return client_connected_cb(reader, writer)

    def factory() -> asyncio.StreamReaderProtocol:
        reader = TrackedStreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, on_connected, loop=loop)

    return factory


async def start_server(client_connected_cb: ClientConnected, host: Any = None,
                       port: int | str | None = None, *, limit: int = _LIMIT,
                       peeps_meta: dict[str, Any] | None = None,
                       **kwds: Any) -> asyncio.Server:
    """``asyncio.start_server`` whose accepted connections appear in the graph.

    Same arguments and result; ``peeps_meta`` becomes metadata of every
    accepted connection's node.  With peeps disabled this is
    ``asyncio.start_server``.
    """
    if not STATE.enabled:
        return await asyncio.start_server(client_connected_cb, host, port, limit=limit, **kwds)
    loop = asyncio.get_running_loop()
    factory = _server_factory(client_connected_cb, "tcp", limit, peeps_meta, capture_location())
    return await loop.create_server(factory, host, port, **kwds)  # type: ignore[arg-type]


async def start_unix_server(client_connected_cb: ClientConnected, path: str | None = None, *,
                            limit: int = _LIMIT, peeps_meta: dict[str, Any] | None = None,
                            **kwds: Any) -> asyncio.Server:
    """``asyncio.start_unix_server`` whose accepted connections appear in the graph."""
    if not STATE.enabled:
        return await asyncio.start_unix_server(client_connected_cb, path, limit=limit, **kwds)
    loop = asyncio.get_running_loop()
    factory = _server_factory(client_connected_cb, "unix", limit, peeps_meta, capture_location())
    return await loop.create_unix_server(factory, path, **kwds)


def _forget_all() -> None:
    """Tests: drop every connection entity."""
    _CONNECTIONS.clear()

