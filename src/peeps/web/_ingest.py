"""The ingest port: instrumented processes connect here and answer snapshot requests.

Each connection is read by its own task.  Anything wrong with one connection
(a bad frame, a wrong version, a slow drip, a reply that is not a graph) closes
that connection alone, with a logged reason and an ``ingest_events`` row.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from peeps.types import HEADER, FrameError, decode_body, decode_length, encode_frame

from ._config import ServerConfig
from ._staging import StagedReply, stage_graph_reply
from ._store import Store
from ._validate import HelloInfo, ProtocolError, validate_hello

if TYPE_CHECKING:
    from ._snapshots import SnapshotCoordinator

log = logging.getLogger("peeps.web.ingest")

#: Bodies larger than this are parsed off the event loop (graph replies by SQLite).
LARGE_FRAME_BYTES: Final = 256 * 1024
#: TCP keepalive: first probe after 60 s of silence, then every 10 s, drop after 6 misses.
KEEPALIVE_IDLE_S: Final = 60
KEEPALIVE_INTERVAL_S: Final = 10
KEEPALIVE_COUNT: Final = 6
#: A peer that lets this much of our output pile up unread is dropped.
MAX_UNREAD_OUTPUT_BYTES: Final = 1024 * 1024


class _CleanClose(Exception):
    """The peer closed the connection between frames."""


@dataclass(eq=False)
class ProcessConnection:
    """One TCP connection from an instrumented process."""

    conn_id: int
    peer: str
    writer: asyncio.StreamWriter
    connected_at_ns: int
    hello: HelloInfo | None = None
    closing: bool = False
    close_reason: str | None = None
    #: Snapshot ids requested from this connection and not yet answered.
    pending: set[int] = field(default_factory=set)

    @property
    def proc_key(self) -> str | None:
        return None if self.hello is None else self.hello.proc_key

    def describe(self) -> dict[str, Any]:
        assert self.hello is not None
        return {"proc_key": self.hello.proc_key, "process_name": self.hello.process_name,
                "pid": self.hello.pid, "peer": self.peer, "connected_at_ns": self.connected_at_ns,
                "peeps_version": self.hello.peeps_version}

    def send(self, message: dict[str, Any]) -> bool:
        """Queue a frame; False (and the connection closed) if the peer is not reading."""
        if self.closing or self.writer.is_closing():
            return False
        transport = self.writer.transport
        if transport.get_write_buffer_size() > MAX_UNREAD_OUTPUT_BYTES:
            self.abort("peer is not reading our frames")
            return False
        self.writer.write(encode_frame(message))
        return True

    def abort(self, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.close_reason = reason
        self.writer.transport.abort()


class IngestServer:
    """Accepts process connections and routes their replies to the coordinator."""

    def __init__(self, config: ServerConfig, store: Store) -> None:
        self.config = config
        self.store = store
        self.coordinator: SnapshotCoordinator | None = None
        self._connections: dict[int, ProcessConnection] = {}
        self._by_proc_key: dict[str, ProcessConnection] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        # Large frames are parsed here.  SQLite stages graph replies without the GIL,
        # so these threads and the writer run at once: one core is left for the writer
        # (more stagers than cores only contend for SQLite's allocator).
        self._parsers = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="peeps-web-parse")
        self.bound: tuple[str, int] | None = None
        #: Called with the connection after a process says hello (tests, metrics).
        self.on_process_change: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> tuple[str, int]:
        host, port = self.config.listen_addr
        # A fleet reconnecting at once (after a server restart) should not overflow
        # the accept queue and wait out SYN retransmits.
        backlog = max(128, min(self.config.max_connections, 4096))
        self._server = await asyncio.start_server(self._accept, host, port, backlog=backlog)
        sockname = self._server.sockets[0].getsockname()
        self.bound = (str(sockname[0]), int(sockname[1]))
        return self.bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections.values()):
            conn.abort("server shutting down")
        # Aborted transports end every reader; cancel only what is still stuck.
        if self._tasks:
            _done, stuck = await asyncio.wait(list(self._tasks), timeout=2)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck, timeout=2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        self._parsers.shutdown(wait=False, cancel_futures=True)

    # -- registry ----------------------------------------------------------------

    def processes(self) -> list[ProcessConnection]:
        """Connections that completed the handshake and are still open."""
        return [c for c in self._by_proc_key.values() if not c.closing]

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # -- per connection -----------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # This task is ours and ends here; on 3.11 a cancelled connection task
            # makes asyncio's stream callback log a spurious traceback.
            pass
        finally:
            self._tasks.discard(task)

    def _record(self, kind: str, conn: ProcessConnection, detail: str | None) -> None:
        self.store.record_ingest_event(kind, proc_key=conn.proc_key, peer=conn.peer, detail=detail)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        conn = ProcessConnection(next(self._ids), peer, writer, time.time_ns())
        _enable_keepalive(writer)
        if len(self._connections) >= self.config.max_connections:
            self._refuse(conn, f"too many connections (max {self.config.max_connections})")
            await self._close_writer(writer)
            return
        self._connections[conn.conn_id] = conn
        reason = "closed by peer"
        kind = "disconnect"
        try:
            await self._handshake(reader, conn)
            while True:
                await self._dispatch(conn, await self._read_message(reader))
        except _CleanClose:
            pass
        except asyncio.IncompleteReadError:
            kind, reason = "frame_error", "connection closed in the middle of a frame"
        except TimeoutError as exc:  # before OSError, its base class
            kind, reason = "refused", str(exc) or "timed out"
            self._refuse(conn, reason, record=False)
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {exc}"
        except (FrameError, ProtocolError) as exc:
            kind, reason = ("frame_error" if isinstance(exc, FrameError) else "refused"), str(exc)
            self._refuse(conn, reason, record=False)
        except asyncio.CancelledError:
            reason = conn.close_reason or "server shutting down"
            raise
        except Exception as exc:
            # A bug of ours must still cost only this connection.
            log.exception("ingest %s: internal error", conn.peer)
            kind, reason = "internal_error", f"internal error: {type(exc).__name__}: {exc}"
            self._refuse(conn, reason, record=False)
        finally:
            if conn.close_reason and kind == "disconnect":
                reason = conn.close_reason
            self._drop(conn, kind, reason)
            await self._close_writer(writer)

    def _refuse(self, conn: ProcessConnection, reason: str, *, record: bool = True) -> None:
        """Tell the peer why, best effort, before the connection is closed."""
        log.warning("ingest %s (%s): refusing: %s", conn.peer, conn.proc_key or "no hello", reason)
        if record:
            self._record("refused", conn, reason)
        with contextlib.suppress(Exception):
            if not conn.writer.is_closing():
                conn.writer.write(encode_frame({"type": "error", "message": reason}))

    async def _close_writer(self, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 1)

    def _drop(self, conn: ProcessConnection, kind: str, reason: str) -> None:
        conn.closing = True
        self._connections.pop(conn.conn_id, None)
        if conn.proc_key is not None and self._by_proc_key.get(conn.proc_key) is conn:
            del self._by_proc_key[conn.proc_key]
        if kind == "disconnect":
            log.info("ingest %s (%s): disconnected: %s", conn.peer, conn.proc_key, reason)
        else:
            log.warning("ingest %s (%s): closed: %s", conn.peer, conn.proc_key, reason)
        self._record(kind, conn, reason)
        if self.coordinator is not None and conn.hello is not None:
            self.coordinator.on_disconnect(conn, reason if kind != "disconnect" else None)
        if conn.hello is not None and self.on_process_change is not None:
            self.on_process_change()

    async def _handshake(self, reader: asyncio.StreamReader, conn: ProcessConnection) -> None:
        timeout = self.config.handshake_timeout_s
        try:
            body = await asyncio.wait_for(self._read_body(reader, first=True), timeout)
        except TimeoutError:
            raise TimeoutError(f"no hello within {timeout:g}s of connecting") from None
        if len(body) > LARGE_FRAME_BYTES:
            message = await asyncio.to_thread(decode_body, body)
        else:
            message = decode_body(body)
        hello = validate_hello(message)
        expected = self.config.token
        if expected is not None and not hmac.compare_digest(
            (hello.token or "").encode("utf-8", "replace"), expected.encode("utf-8")
        ):
            raise ProtocolError("hello carries a missing or wrong token")
        conn.hello = hello
        previous = self._by_proc_key.get(hello.proc_key)
        if previous is not None:
            # A process that reconnects before we noticed its old socket died.
            previous.abort(f"replaced by a new connection from {conn.peer}")
        self._by_proc_key[hello.proc_key] = conn
        log.info("ingest %s: process %s (%s pid %d, peeps %s) connected", conn.peer,
                 hello.proc_key, hello.process_name, hello.pid, hello.peeps_version or "?")
        self._record("connect", conn, f"{hello.process_name} pid {hello.pid}")
        if self.on_process_change is not None:
            self.on_process_change()

    async def _read_body(self, reader: asyncio.StreamReader, *, first: bool) -> bytes:
        try:
            header = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _CleanClose() from None
            raise
        length = decode_length(header, max_frame_bytes=self.config.max_frame_bytes)
        if first:
            body = await reader.readexactly(length)  # the handshake deadline covers it
        else:
            try:
                body = await asyncio.wait_for(reader.readexactly(length),
                                              self.config.frame_timeout_s)
            except TimeoutError:
                raise TimeoutError(f"frame body of {length} bytes not received within "
                                   f"{self.config.frame_timeout_s:g}s") from None
        return body

    async def _read_message(self, reader: asyncio.StreamReader) -> dict[str, Any] | StagedReply:
        body = await self._read_body(reader, first=False)
        if len(body) <= LARGE_FRAME_BYTES:
            return decode_body(body)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._parsers, _decode_large, body)

    async def _dispatch(self, conn: ProcessConnection,
                        message: dict[str, Any] | StagedReply) -> None:
        if isinstance(message, StagedReply):
            if self.coordinator is None:
                message.close()
                return
            await self.coordinator.on_reply(conn, message)
            return
        kind = message["type"]
        if kind == "graph_reply":
            if self.coordinator is None:
                return
            await self.coordinator.on_reply(conn, message)
        elif kind == "hello":
            raise ProtocolError("hello sent twice")
        else:
            # Forward compatibility: newer clients may send frames we do not know.
            self._record("unknown_frame", conn, f"ignored frame type {kind[:64]!r}")


def _decode_large(body: bytes) -> dict[str, Any] | StagedReply:
    """A large frame: a well-formed graph reply staged by SQLite, anything else decoded."""
    return stage_graph_reply(body) or decode_body(body)


def _enable_keepalive(writer: asyncio.StreamWriter) -> None:
    """A connected process may stay silent for hours; keepalives find dead peers."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
