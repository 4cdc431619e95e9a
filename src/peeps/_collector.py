"""The push client: a daemon thread that keeps a connection to ``peeps-web`` and
answers snapshot requests.  It never depends on the event loop, so a process
whose loop is blocked can still be diagnosed: a running loop that answers does
the snapshot's work in slices between its callbacks, and when it does not the
collector does it itself (``_loopside``).  Failures cost diagnostics, never the
service: every error is caught here, logged once per state change, and retried
with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import contextlib

# getaddrinfo imports this codec lazily; in a child forked while another thread
# held the import machinery that import can fail ("unknown encoding: idna").
import encodings.idna  # noqa: F401
import gc
import logging
import os
import random
import select
import socket
import threading
import time
from typing import Any

from . import __version__, _deadline, _loophooks, _loopside
from ._config import STATE, env_flag
from ._loopside import LoopCost, forget_loops, remember_loop, run_snapshot_steps
from ._providers import has_blocking_providers
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
#: ``PEEPS_LOOP_SERVES=0``: the collector thread keeps the connection even
#: when an event loop answers (see :class:`_Link`).
LOOP_SERVES: bool = env_flag("PEEPS_LOOP_SERVES", default=True)
#: While a loop serves the connection it re-arms the collector's deadline
#: this often; the collector takes the connection back when it has not been
#: re-armed for ``LOOP_SERVE_PATIENCE_S``.
HEARTBEAT_S = 0.1
LOOP_SERVE_PATIENCE_S = 0.5


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
        #: What the collector sleeps on while a loop serves the connection
        #: (made on first use; ``None`` where there is no timerfd).
        self._deadline: _deadline.Deadline | None = None
        self._waker: _deadline.Waker | None = None
        #: The loop serving the connection, if one is.
        self._link: _Link | None = None
        #: Why a loop could not serve the connection, if one could not: then
        #: the collector thread keeps it.
        self._loop_serving_failed: str | None = None
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
            "loop_serves": self._link is not None,
            **({"loop_serving_failed": self._loop_serving_failed}
               if self._loop_serving_failed else {}),
        }

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._waker is not None:
            self._waker.wake()
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
            for part in (self._deadline, self._waker):
                if part is not None:
                    part.close()

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
                    self._let_go_of_loop()
                    with contextlib.suppress(OSError):
                        # A loop serving it may hold a duplicate of the
                        # descriptor: shut the connection itself down.
                        sock.shutdown(socket.SHUT_RDWR)
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
            if self._link is not None:
                # A loop serves the connection: sleep until it stops answering
                # or hands the connection back, then go on here.
                self._watch_link()
                if self._stop.is_set():
                    break
                self._take_back(sock)
                continue
            message = reader.take() or reader.read(self._stop)
            if message is None:
                continue
            kind = message["type"]
            if kind == "snapshot_request":
                cost = self._answer(sock, message)
                self._link = self._hand_to_loop(sock, reader, cost)
            elif kind == "error":
                raise _Closed(f"server refused: {message.get('message')}")
            # Anything else is ignored: the protocol is read-only by design.

    def _answer(self, sock: socket.socket, request: dict[str, Any],
                received_ns: int | None = None) -> LoopCost:
        snapshot_id = request.get("snapshot_id")
        if not isinstance(snapshot_id, int):
            raise FrameError("snapshot_request without an integer snapshot_id")
        # Building and encoding the reply must not stall the host's event loop:
        # GC paused (_reply_encoder.py), and the work done in slices, on a
        # running event loop when one answers, else here (_loopside.py).
        started = received_ns if received_ns is not None else time.perf_counter_ns()
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
        self._answered(started, len(frame), cost.loop_ns, cost.slices,
                       time.thread_time_ns() - cpu_started)
        return cost

    def _answered(self, started_ns: int, size: int, loop_ns: int, slices: int,
                  cpu_ns: int) -> None:
        """Count a reply sent, and what it cost (``stats``)."""
        self.snapshots_answered += 1
        self._loop_ns_total += loop_ns
        self._cpu_ns_total += cpu_ns
        self.last_snapshot = {  # a new dict: a snapshot may be reading the last one
            "nodes": self._last_nodes,
            "bytes": size,
            "reply_ms": round((time.perf_counter_ns() - started_ns) / 1e6, 3),
            "loop_ms": round(loop_ns / 1e6, 3),
            "loop_slices": slices,
            "collector_cpu_ms": round(cpu_ns / 1e6, 3),
            "served_by": "loop" if self._link is not None else "collector",
        }

    # -- a loop serving the connection ---------------------------------------------

    def _hand_to_loop(self, sock: socket.socket, reader: _FrameReader,
                      cost: LoopCost) -> _Link | None:
        """After a snapshot the loop worked whole: let that loop serve the
        connection (``_Link``), if it may.  The collector thread then sleeps
        until the loop stops answering; no GIL changes hands per snapshot."""
        loop = cost.finished_by
        if (loop is None or not LOOP_SERVES or not _loopside.enabled or self._stop.is_set()
                or self._loop_serving_failed is not None
                or has_blocking_providers() or not _loopside.small_enough(self._last_nodes)):
            return None
        if self._deadline is None:
            self._deadline = _deadline.create(LOOP_SERVE_PATIENCE_S)
            self._waker = _deadline.create_waker()
        if self._deadline is None or self._waker is None:
            return None
        self._waker.drain()
        link = _Link(self, sock, reader, loop, self._deadline, self._waker)
        try:
            self._deadline.arm()  # the loop has that long to start serving
            loop.call_soon_threadsafe(link.start)
        except (OSError, RuntimeError):  # no timer; the loop closed since
            with contextlib.suppress(OSError):
                self._deadline.disarm()
            return None
        return link

    def _watch_link(self) -> None:
        """Sleep until the serving loop misses its deadline or hands the
        connection back, or ``stop``."""
        deadline, waker = self._deadline, self._waker
        assert deadline is not None and waker is not None
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([deadline.fileno(), waker.fileno()], [], [])
            except InterruptedError:
                continue
            if waker.fileno() in ready:
                waker.drain()
                return
            if deadline.fileno() in ready:
                deadline.drain()
                return

    def _take_back(self, sock: socket.socket) -> None:
        """Serve the connection here again, finishing what the loop left:
        a reply half sent, a snapshot half worked, requests not started."""
        link = self._link
        assert link is not None
        left = link.take_back()
        self._link = None
        if self._deadline is not None:
            with contextlib.suppress(OSError):
                self._deadline.disarm()
        if left.problem is not None:
            raise left.problem
        sock.settimeout(SEND_TIMEOUT_S)
        if left.out is not None:
            sock.sendall(left.out)
            self._answered(left.out_started_ns, left.out_size, left.out_loop_ns,
                           left.out_slices, 0)
        if left.job is not None:
            cpu_started = time.thread_time_ns()
            with gc_paused():
                frame = _loopside.take_over(left.job)
            sock.sendall(frame)
            self._answered(left.job_started_ns, len(frame), left.job.loop_ns, left.job.slices,
                           time.thread_time_ns() - cpu_started)
        for snapshot_id, received_ns in left.queue:
            self._answer(sock, {"snapshot_id": snapshot_id}, received_ns)

    def _let_go_of_loop(self) -> None:
        """The connection is over: a loop serving it lets go (on the loop), and
        stops working a snapshot nobody will send."""
        link, self._link = self._link, None
        if link is not None:
            job = link.take_back().job
            if job is not None:
                with job.lock:
                    job.owner = "thread"  # its slices stop

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


class _Left:
    """What a loop leaves when the collector takes its connection back."""

    __slots__ = ("job", "job_started_ns", "out", "out_loop_ns", "out_size", "out_slices",
                 "out_started_ns", "problem", "queue")

    def __init__(self) -> None:
        self.problem: BaseException | None = None
        self.out: memoryview | None = None  # a reply not wholly sent
        self.out_started_ns = self.out_size = self.out_loop_ns = self.out_slices = 0
        self.job: _loopside.LoopJob[bytearray] | None = None  # a snapshot not finished
        self.job_started_ns = 0
        self.queue: list[tuple[int, int]] = []  # requests not started


class _Link:
    """A connection served by an event loop: the loop reads the requests,
    works each snapshot in slices between its callbacks and sends the reply,
    never blocking (``MSG_DONTWAIT``), so the collector thread does not wake
    and no GIL changes hands per snapshot.

    The loop needs nothing and owes nothing: it re-arms the collector's
    deadline (a timerfd) every ``HEARTBEAT_S``; if it misses it by
    ``LOOP_SERVE_PATIENCE_S`` (blocked, stopped, closed) the collector wakes
    and takes the connection back (``take_back``) with whatever is half done.
    The loop hands it back itself (the waker) on anything out of the way: an
    error, the server hanging up, a snapshot too big or with a step that may
    block.  The loop reads and writes through its own duplicate of the socket's
    descriptor, which only it closes (on the loop): the collector never closes
    a descriptor the loop's selector may still hold.

    ``lock`` guards the fields; whoever holds it never waits on anything else."""

    def __init__(self, collector: Collector, sock: socket.socket, reader: _FrameReader,
                 loop: asyncio.AbstractEventLoop, deadline: _deadline.Deadline,
                 waker: _deadline.Waker) -> None:
        self.collector = collector
        self.main_sock = sock
        self.reader = reader
        self.loop = loop
        self.deadline = deadline
        self.waker = waker
        self.lock = threading.Lock()
        self.serving = True  # False once the collector has it back (or asked for it)
        #: A forked child's copy of the loop must leave the parent's
        #: connection alone (it would read the parent's requests).
        self.pid = os.getpid()
        self.sock: socket.socket | None = None  # the loop's, on a duplicate descriptor
        self.writing = False
        self.left = _Left()
        #: Whether this link switched automatic GC off for the job it works
        #: (as ``gc_paused`` does on the collector's thread): the job's
        #: objects are alive until it is done, and collections during it would
        #: walk and promote them.
        self.gc_paused = False

    # -- on the loop ---------------------------------------------------------------

    def start(self) -> None:
        with self.lock:
            if not self.serving or self.pid != os.getpid():
                return
            try:
                self.sock = socket.socket(fileno=os.dup(self.main_sock.fileno()))
                self.loop.add_reader(self.sock.fileno(), self.readable)
                self.deadline.arm()
                self.loop.call_later(HEARTBEAT_S, self.heartbeat)
            except Exception as exc:  # out of descriptors, say: the collector goes on,
                # serving the connection itself from now on
                self.collector._loop_serving_failed = repr(exc)
                self._hand_back(None)
                return
        self.parse()

    def heartbeat(self) -> None:
        if self.pid != os.getpid():
            return
        with self.lock:
            if not self.serving:
                self._detach()
                return
            try:
                self.deadline.arm()
                self.loop.call_later(HEARTBEAT_S, self.heartbeat)
            except Exception as exc:
                self.collector._loop_serving_failed = repr(exc)
                self._hand_back(None)

    def readable(self) -> None:
        if self.pid != os.getpid():
            return
        with self.lock:
            if not self.serving or self.sock is None:
                self._detach()
                return
            try:
                chunk = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._hand_back(exc)
                return
            if not chunk:
                self._hand_back(_Closed("server closed the connection"))
                return
            self.reader.buffer += chunk
        self.parse()

    def parse(self) -> None:
        with self.lock:
            while self.serving:
                try:
                    message = self.reader.take()
                except FrameError as exc:
                    self._hand_back(exc)
                    return
                if message is None:
                    break
                kind = message["type"]
                if kind == "snapshot_request":
                    snapshot_id = message.get("snapshot_id")
                    if not isinstance(snapshot_id, int):
                        self._hand_back(FrameError("snapshot_request without an integer "
                                                   "snapshot_id"))
                        return
                    self.left.queue.append((snapshot_id, time.perf_counter_ns()))
                elif kind == "error":
                    self._hand_back(_Closed(f"server refused: {message.get('message')}"))
                    return
        self._next()

    def _next(self) -> None:
        """Start the next snapshot, if none is being worked or sent."""
        with self.lock:
            left = self.left
            if (not self.serving or left.job is not None or left.out is not None
                    or not left.queue):
                return
            if (not _loopside.small_enough(self.collector._last_nodes)
                    or has_blocking_providers()):
                self._hand_back(None)  # the collector's thread works this one
                return
            snapshot_id, left.job_started_ns = left.queue.pop(0)
            job = _loopside.LoopJob(self.collector._reply_steps(snapshot_id), self.loop,
                                    self._worked)
            left.job = job
            if gc.isenabled():
                gc.disable()
                self.gc_paused = True
            self.loop.call_soon(job.slice)

    def _worked(self, job: _loopside.LoopJob[bytearray]) -> None:
        with self.lock:
            self._resume_gc()
            left = self.left
            if not self.serving or left.job is not job:
                return  # the collector has it: it finishes the job
            if not job.done or job.error is not None:
                # A step that may block, or an error: the collector finishes
                # the job, or raises its error and reconnects.
                self._hand_back(None)
                return
            left.job = None
            frame: bytearray = job.result  # type: ignore[assignment]
            left.out = memoryview(frame)
            left.out_started_ns = left.job_started_ns
            left.out_size = len(frame)
            left.out_loop_ns = job.loop_ns
            left.out_slices = job.slices
        self.send()

    def send(self) -> None:
        if self.pid != os.getpid():
            return
        with self.lock:
            left = self.left
            if not self.serving or left.out is None or self.sock is None:
                return
            try:
                sent = self.sock.send(left.out, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._hand_back(exc)
                return
            left.out = left.out[sent:]
            if len(left.out):
                if not self.writing:  # the rest when the socket takes more
                    self.loop.add_writer(self.sock.fileno(), self.send)
                    self.writing = True
                return
            if self.writing:
                self.loop.remove_writer(self.sock.fileno())
                self.writing = False
            left.out = None
            done = (left.out_started_ns, left.out_size, left.out_loop_ns, left.out_slices)
        self.collector._answered(*done, 0)
        self._next()

    def _resume_gc(self) -> None:
        """Automatic GC on again, if this link switched it off (lock held)."""
        if self.gc_paused:
            self.gc_paused = False
            if not gc.isenabled():
                gc.enable()

    def _hand_back(self, problem: BaseException | None) -> None:
        """Give the connection back to the collector (lock held, on the loop)."""
        self.left.problem = problem
        self.serving = False
        self._detach()
        self.waker.wake()

    def _detach(self) -> None:
        """Stop watching the socket and close the loop's descriptor (lock held,
        on the loop)."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        with contextlib.suppress(Exception):  # a closed loop's selector is gone
            self.loop.remove_reader(sock.fileno())
        with contextlib.suppress(Exception):
            self.loop.remove_writer(sock.fileno())
        self.writing = False
        sock.close()

    def detach_soon(self) -> None:
        with self.lock:
            self._detach()

    # -- on the collector's thread ---------------------------------------------------

    def take_back(self) -> _Left:
        """Stop the loop serving (it lets go of the socket when it next runs)
        and return what it left."""
        with self.lock:
            self.serving = False
            self._resume_gc()  # a job left half done is finished under gc_paused
            left, self.left = self.left, _Left()
            attached = self.sock is not None
            if attached and self.loop.is_closed():
                self._detach()  # its selector is gone: nothing holds the descriptor
                attached = False
        if attached:
            with contextlib.suppress(Exception):  # closed since: its selector went with it
                self.loop.call_soon_threadsafe(self.detach_soon)
        return left


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

    def take(self) -> dict[str, Any] | None:
        """A whole frame already read into the buffer, if there is one (the
        loop that served the connection may have read ahead)."""
        if len(self.buffer) < HEADER.size:
            return None
        length = decode_length(bytes(self.buffer[: HEADER.size]),
                               max_frame_bytes=self.max_frame_bytes)
        if len(self.buffer) < HEADER.size + length:
            return None
        body = bytes(self.buffer[HEADER.size : HEADER.size + length])
        del self.buffer[: HEADER.size + length]
        return decode_body(body)

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
