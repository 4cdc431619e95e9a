"""The push client: a daemon thread that keeps a connection to ``peeps-web`` and
answers snapshot requests.  It never depends on the event loop, so a process
whose loop is blocked can still be diagnosed: a running loop that answers does
the snapshot's work in slices between its callbacks, and when it does not the
collector does it itself (``_loopside``).  Failures cost diagnostics, never the
service: every error is caught here, logged once per state change, and retried
with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio.events
import contextlib

# getaddrinfo imports this codec lazily; in a child forked while another thread
# held the import machinery that import can fail ("unknown encoding: idna").
import encodings.idna  # noqa: F401
import logging
import os
import random
import socket
import threading
import time
from typing import Any

from . import __version__, _loophooks
from ._config import STATE
from ._loopside import LoopCost, forget_loops, remember_loop, run_snapshot_steps
from ._registry import REGISTRY
from ._reply_encoder import Steps, encode_reply_steps, gc_paused, release_steps
from ._snapshot import collect_steps
from ._threads import THREAD_REPORTS, entity_for_ident
from .types import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER,
    PROTOCOL_VERSION,
    FrameError,
    decode_body,
    decode_length,
    encode_frame,
)

log = logging.getLogger("peeps")

CONNECT_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 30.0
#: Frames from the server are tiny requests; anything bigger is hostile.
MAX_INBOUND_FRAME_BYTES = 1024 * 1024
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 30.0
#: Reconnect jitter from a generator of our own: the ``random`` module's is
#: the host program's (seeded sequences must not move because peeps runs).
_JITTER = random.Random()


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) to a tuple, with a clear error."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"dashboard address must be host:port, got {address!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Closed(Exception):
    pass


class Collector:
    """Owns the connection thread.  ``start`` once; ``stop`` joins it."""

    def __init__(self, address: tuple[str, int], *, token: str | None = None,
                 max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.address = address
        self.token = token
        self.max_frame_bytes = max_frame_bytes
        self.state = "idle"
        self.snapshots_answered = 0
        #: What the last snapshot cost, and the totals (``stats()``).
        self.last_snapshot: dict[str, Any] | None = None
        self._loop_ns_total = 0
        self._cpu_ns_total = 0
        self._started_mono_ns = time.monotonic_ns()
        #: The last snapshot's size, which decides where the next one is worked
        #: (``_loopside``); the first, of a size not known yet, on this thread.
        self._last_nodes: int | None = None
        #: The identity announced in the hello; a rename needs a new connection.
        self.proc_key = STATE.proc_key
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="peeps-collector", daemon=True)

    def start(self) -> None:
        self._started_mono_ns = time.monotonic_ns()
        THREAD_REPORTS[self._thread] = ("collector", self.stats)
        self._thread.start()

    def stats(self) -> dict[str, Any]:
        """The connection and what answering snapshots costs this process:
        shown on the ``peeps-collector`` thread's node (``collector``).

        ``last_snapshot``: its size, the time from request to reply sent,
        the event loop's share (``loop_ms`` in ``loop_slices`` slices: the
        time its callbacks waited) and this thread's CPU (``collector_cpu_ms``,
        which includes the GIL hand-offs of work done here).  ``cpu_share``:
        both, over the time since the collector started, as a share of a core.
        The figures are the previous snapshot's: the one being taken is not
        done yet."""
        host, port = self.address
        spent = self._loop_ns_total + self._cpu_ns_total
        elapsed = max(1, time.monotonic_ns() - self._started_mono_ns)
        return {
            "state": self.state,
            "dashboard": f"{host}:{port}",
            "snapshots_answered": self.snapshots_answered,
            "last_snapshot": self.last_snapshot,
            "loop_ms_total": round(self._loop_ns_total / 1e6, 3),
            "collector_cpu_ms_total": round(self._cpu_ns_total / 1e6, 3),
            "cpu_share": round(spent / elapsed, 5),
        }

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _set_state(self, state: str, detail: object = None) -> None:
        if state == self.state:
            return
        self.state = state
        host, port = self.address
        if state == "connected":
            log.info("peeps: connected to dashboard %s:%d as %s", host, port, STATE.proc_key)
        elif state in ("unreachable", "disconnected"):
            log.warning("peeps: dashboard %s:%d %s (%s); retrying in the background",
                        host, port, state, detail)

    def _run(self) -> None:
        try:
            self._connect_and_serve()
        finally:
            THREAD_REPORTS.pop(self._thread, None)

    def _connect_and_serve(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while not self._stop.is_set():
            try:
                sock = socket.create_connection(self.address, timeout=CONNECT_TIMEOUT_S)
            except Exception as exc:  # OSError mostly; anything else must not end the thread
                self._set_state("unreachable", exc)
            else:
                self._sock = sock
                answered_before = self.snapshots_answered
                try:
                    self._serve(sock)
                except _Closed as exc:
                    self._set_state("disconnected", exc)
                except (OSError, FrameError) as exc:
                    self._set_state("disconnected", exc)
                except Exception as exc:  # a bug in peeps must not end diagnostics for good
                    self._set_state("disconnected", f"internal error: {exc!r}")
                finally:
                    self._sock = None
                    with contextlib.suppress(OSError):
                        sock.close()
                # A link that answered snapshots was healthy: retry promptly.  One that
                # never did (refused, garbage) keeps backing off.
                if self.snapshots_answered > answered_before:
                    backoff = BACKOFF_INITIAL_S
            # Full jitter keeps a fleet of restarted services from reconnecting in step.
            self._stop.wait(_JITTER.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _serve(self, sock: socket.socket) -> None:
        hello: dict[str, Any] = {
            "type": "hello",
            "protocol_version": PROTOCOL_VERSION,
            "process_name": STATE.process_name,
            "pid": STATE.pid,
            "proc_key": STATE.proc_key,
            "peeps_version": __version__,
        }
        if self.token:
            hello["token"] = self.token
        sock.settimeout(SEND_TIMEOUT_S)
        sock.sendall(encode_frame(hello))
        self._set_state("connected")
        reader = _FrameReader(sock, MAX_INBOUND_FRAME_BYTES)
        while not self._stop.is_set():
            message = reader.read(self._stop)
            if message is None:
                continue
            kind = message["type"]
            if kind == "snapshot_request":
                self._answer(sock, message)
            elif kind == "error":
                raise _Closed(f"server refused: {message.get('message')}")
            # Anything else is ignored: the protocol is read-only by design.

    def _answer(self, sock: socket.socket, request: dict[str, Any]) -> None:
        snapshot_id = request.get("snapshot_id")
        if not isinstance(snapshot_id, int):
            raise FrameError("snapshot_request without an integer snapshot_id")
        # Building and encoding the reply must not stall the host's event loop:
        # GC paused (_reply_encoder.py), and the work done in slices, on a
        # running event loop when one answers, else here (_loopside.py).
        started = time.perf_counter_ns()
        cpu_started = time.thread_time_ns()
        # This thread is in the graph, sampler or not: its node reports what
        # the snapshots cost (``stats``).
        try:
            entity_for_ident(threading.get_ident())
        except Exception as exc:
            REGISTRY.part_failed("the collector's thread entity", exc)
        cost = LoopCost()
        with gc_paused():
            frame = run_snapshot_steps(self._reply_steps(snapshot_id),
                                       nodes_hint=self._last_nodes, cost=cost)
        sock.sendall(frame)
        self.snapshots_answered += 1
        cpu_ns = time.thread_time_ns() - cpu_started
        self._loop_ns_total += cost.loop_ns
        self._cpu_ns_total += cpu_ns
        self.last_snapshot = {  # a new dict: a snapshot may be reading the last one
            "nodes": self._last_nodes,
            "bytes": len(frame),
            "reply_ms": round((time.perf_counter_ns() - started) / 1e6, 3),
            "loop_ms": round(cost.loop_ns / 1e6, 3),
            "loop_slices": cost.slices,
            "collector_cpu_ms": round(cpu_ns / 1e6, 3),
        }

    def _reply_steps(self, snapshot_id: int) -> Steps[bytearray]:
        graph = yield from collect_steps()
        self._last_nodes = len(graph["nodes"])
        reply = {"type": "graph_reply", "snapshot_id": snapshot_id,
                 "process": STATE.process_name, "pid": STATE.pid, "graph": graph}
        try:
            frame = yield from encode_reply_steps(reply, max_frame_bytes=self.max_frame_bytes)
        except FrameError as exc:
            # Too big to send whole: send what fits and say so, rather than nothing.
            graph["events"] = []
            graph["nodes"] = graph["nodes"][: max(1, len(graph["nodes"]) // 4)]
            kept = {n["id"] for n in graph["nodes"]}
            graph["edges"] = [e for e in graph["edges"]
                              if e["src"] in kept and e["dst"] in kept]
            reply["truncated"] = str(exc)
            frame = yield from encode_reply_steps(reply, max_frame_bytes=self.max_frame_bytes)
        yield from release_steps(graph)  # type: ignore[arg-type]  # a TypedDict is a dict
        return frame


class _FrameReader:
    """Reads length-prefixed frames; ``stop`` is honoured when the socket is shut down."""

    def __init__(self, sock: socket.socket, max_frame_bytes: int) -> None:
        self.sock = sock
        self.max_frame_bytes = max_frame_bytes
        self.buffer = bytearray()

    def _fill(self, size: int, stop: threading.Event) -> bool:
        # No timeout: ``Collector.stop`` shuts the socket down, which ends the
        # wait.  Waking to poll would cost more than it looks: the thread then
        # needs the GIL, and a busy event loop that drops and retakes it at
        # every ``epoll_wait`` keeps it waiting (and waking) for up to tens of
        # milliseconds each time (``_loopside``).
        self.sock.settimeout(None)
        while len(self.buffer) < size:
            if stop.is_set():
                return False
            try:
                chunk = self.sock.recv(max(4096, size - len(self.buffer)))
            except OSError:
                if stop.is_set():  # shut down by ``Collector.stop``
                    return False
                raise
            if not chunk:
                if stop.is_set():
                    return False
                raise _Closed("server closed the connection")
            self.buffer += chunk
        return True

    def read(self, stop: threading.Event) -> dict[str, Any] | None:
        if not self._fill(HEADER.size, stop):
            return None
        length = decode_length(bytes(self.buffer[: HEADER.size]),
                               max_frame_bytes=self.max_frame_bytes)
        if not self._fill(HEADER.size + length, stop):
            return None
        body = bytes(self.buffer[HEADER.size : HEADER.size + length])
        del self.buffer[: HEADER.size + length]
        self.sock.settimeout(SEND_TIMEOUT_S)
        return decode_body(body)


_COLLECTOR: Collector | None = None
_LOCK = threading.Lock()


def start_collector(address: str, *, token: str | None = None,
                    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Collector:
    """Start (or restart at a new address) the process's single collector."""
    global _COLLECTOR
    parsed = parse_address(address)
    _offer_loops()
    with _LOCK:
        if _COLLECTOR is not None:
            if (_COLLECTOR.address == parsed and _COLLECTOR.alive
                    and _COLLECTOR.proc_key == STATE.proc_key):
                return _COLLECTOR
            _COLLECTOR.stop()
        _COLLECTOR = Collector(parsed, token=token, max_frame_bytes=max_frame_bytes)
        _COLLECTOR.start()
        return _COLLECTOR


_LOOP_HOOK = "offering an event loop for snapshot work"


def _offer_loops() -> None:
    """Let snapshot work run on event loops: the one running here, if any,
    and every loop that starts from now on (``_loopside``)."""
    loop = asyncio.events._get_running_loop()
    if loop is not None:
        remember_loop(loop)
    _loophooks.on_loop_start(_LOOP_HOOK, remember_loop)


def stop_collector() -> None:
    global _COLLECTOR
    with _LOCK:
        if _COLLECTOR is not None:
            _COLLECTOR.stop()
            _COLLECTOR = None
    _loophooks.remove(_LOOP_HOOK)
    forget_loops()


def current_collector() -> Collector | None:
    return _COLLECTOR


def _after_fork_in_child() -> None:
    # The parent's thread does not exist here and its socket belongs to the parent.
    global _COLLECTOR, _LOCK
    old = _COLLECTOR
    _COLLECTOR = None
    _LOCK = threading.Lock()
    STATE.pid = os.getpid()
    forget_loops()
    # The parent's tasks belong to its event loop, which does not run here.
    REGISTRY.tasks.clear()
    REGISTRY.finished.clear()
    REGISTRY.events.clear()
    if old is not None:
        # Close our copy of the parent's socket; shutdown() would cut the parent's link.
        if old._sock is not None:
            with contextlib.suppress(OSError):
                old._sock.close()
        try:
            start_collector(f"{old.address[0]}:{old.address[1]}", token=old.token,
                            max_frame_bytes=old.max_frame_bytes)
        except Exception as exc:
            log.warning("peeps: could not restart the collector after fork: %r", exc)


os.register_at_fork(after_in_child=_after_fork_in_child)
