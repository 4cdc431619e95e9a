"""A healthy event loop serves the collector's connection itself
(``_collector._Link``): it reads the requests, works the snapshots and sends
the replies without blocking, while the collector thread sleeps; the
collector takes the connection back when the loop stops answering.

Each test runs the real collector against a real socket standing in for
``peeps-web``, and a real loop in its own thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import peeps
from peeps import _collector
from peeps.types import decode_body, encode_frame

from .test_loopside import _running_in_a_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="a loop serves the connection where there is timerfd")


class Dashboard:
    """The server's side of one collector connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.conn: socket.socket | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def accept(self, rcvbuf: int | None = None) -> None:
        conn, _ = self.listener.accept()
        if rcvbuf is not None:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        conn.settimeout(10)
        self.conn = conn
        assert self.read()[1]["type"] == "hello"

    def _exact(self, n: int) -> bytes:
        assert self.conn is not None
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            assert chunk, "the collector hung up"
            buf += chunk
        return buf

    def read(self) -> tuple[int, dict[str, Any]]:
        (length,) = struct.unpack(">I", self._exact(4))
        return 4 + length, decode_body(self._exact(length))

    def request(self, snapshot_id: int) -> None:
        assert self.conn is not None
        self.conn.sendall(encode_frame({"type": "snapshot_request", "snapshot_id": snapshot_id,
                                        "timeout_ms": 5000}))

    def ask(self, snapshot_id: int) -> dict[str, Any]:
        """A snapshot's graph."""
        self.request(snapshot_id)
        _, reply = self.read()
        assert reply["type"] == "graph_reply" and reply["snapshot_id"] == snapshot_id
        graph: dict[str, Any] = reply["graph"]
        return graph

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()


def report(graph: dict[str, Any]) -> Any:
    """The collector's report on the snapshot before this one (``None`` in
    the first)."""
    [node] = [n for n in graph["nodes"]  # (an earlier test's may be shown as exited)
              if n["kind"] == "thread" and n["label"] == "peeps-collector"
              and "collector" in n["attrs"]]
    return node["attrs"]["collector"]["last_snapshot"]


def until_the_loop_serves(dashboard: Dashboard, first: int) -> int:
    """Ask for snapshots until one was served by the loop (the collector hands
    the connection over after a snapshot the loop worked whole, which a busy
    machine can delay); the next snapshot id."""
    for snapshot_id in range(first, first + 20):
        last = report(dashboard.ask(snapshot_id))
        if last is not None and last["served_by"] == "loop":
            return snapshot_id + 1
    raise AssertionError("the loop never served the connection")


@pytest.fixture
def loop_thread() -> Iterator[asyncio.AbstractEventLoop]:
    with _running_in_a_thread(lambda loop: loop.run_forever()) as (loop, _):
        yield loop


@contextlib.contextmanager
def connected() -> Iterator[tuple[Dashboard, _collector.Collector]]:
    """A real collector connected to a :class:`Dashboard`."""
    peeps.init("loop-serves")
    dashboard = Dashboard()
    collector = _collector.Collector(dashboard.address)
    collector.start()
    try:
        dashboard.accept()
        yield dashboard, collector
    finally:
        collector.stop()
        dashboard.close()


@pytest.fixture
def served(loop_thread: asyncio.AbstractEventLoop) -> Iterator[tuple[Dashboard, Any]]:
    """A collector connected to a dashboard, with a loop running: the first
    snapshot is worked on the collector's thread, the next ones on the loop,
    which then serves the connection (``until_the_loop_serves``)."""
    with connected() as (dashboard, collector):
        dashboard.ask(1)
        # The first is worked on the collector's thread (its size unknown).
        assert report(dashboard.ask(2))["served_by"] == "collector"
        yield dashboard, collector


def _voluntary_switches(native_id: int) -> int:
    with open(f"/proc/self/task/{native_id}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_the_collector_thread_sleeps_while_the_loop_serves(
        served: tuple[Dashboard, Any]) -> None:
    dashboard, collector = served
    first = until_the_loop_serves(dashboard, 3)
    native_id = collector._thread.native_id
    before = _voluntary_switches(native_id)
    for snapshot_id in range(first, first + 7):
        if snapshot_id == first + 3:
            # Idle for over the collector's patience: the loop's heartbeats
            # keep its deadline from passing.
            time.sleep(2 * _collector.LOOP_SERVE_PATIENCE_S)
        last = report(dashboard.ask(snapshot_id))
        assert last["served_by"] == "loop"
        assert last["collector_cpu_ms"] == 0
        assert last["loop_slices"] >= 1
    # Seven snapshots and a second idle, and the collector thread never woke:
    # no GIL to take.
    assert _voluntary_switches(native_id) == before


def test_a_blocked_loop_gives_the_connection_back(
        served: tuple[Dashboard, Any], loop_thread: asyncio.AbstractEventLoop) -> None:
    dashboard, _ = served
    snapshot_id = until_the_loop_serves(dashboard, 3)
    loop_thread.call_soon_threadsafe(time.sleep, 2.0)  # the host blocks its loop
    time.sleep(0.05)
    started = time.monotonic()
    dashboard.ask(snapshot_id)
    # Answered by the collector once the loop missed its deadline, not after
    # the loop came back.
    assert time.monotonic() - started < 1.5
    time.sleep(2.0)  # the loop is back
    assert report(dashboard.ask(snapshot_id + 1))["served_by"] == "collector"
    # The loop works the snapshots again, and serves the connection again.
    until_the_loop_serves(dashboard, snapshot_id + 2)


def test_a_closed_loop_gives_the_connection_back() -> None:
    with connected() as (dashboard, collector):
        with _running_in_a_thread(lambda loop: loop.run_forever()) as (loop, thread):
            snapshot_id = until_the_loop_serves(dashboard, 1)
            assert collector._link is not None  # the loop serves it
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
        # Stopped and closed: the collector answers once the deadline passes.
        started = time.monotonic()
        assert report(dashboard.ask(snapshot_id))["served_by"] == "loop"
        assert time.monotonic() - started < 2.0
        assert report(dashboard.ask(snapshot_id + 1))["served_by"] == "collector"


def test_a_reply_the_socket_cannot_take_at_once(
        served: tuple[Dashboard, Any], loop_thread: asyncio.AbstractEventLoop,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop sends what the socket takes and the rest when it is writable."""
    dashboard, collector = served
    snapshot_id = until_the_loop_serves(dashboard, 3)
    # A fixed send buffer (no autotuning): with the dashboard not reading,
    # the socket holds a few hundred kB at most.
    collector._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    writers: list[int] = []
    real_add_writer = loop_thread.add_writer

    def add_writer(fd: int, callback: Any, *args: Any) -> None:
        writers.append(fd)
        real_add_writer(fd, callback, *args)

    monkeypatch.setattr(loop_thread, "add_writer", add_writer)
    locks = [peeps.Lock(name=f"lock-{i}", purpose="x" * 200) for i in range(1500)]
    dashboard.ask(snapshot_id)  # the size the loop sees next is ~1500 nodes
    dashboard.request(snapshot_id + 1)
    time.sleep(0.5)  # ~750 kB: more than the socket's buffers hold unread
    size, reply = dashboard.read()
    assert size > 400_000
    labels = {n["label"] for n in reply["graph"]["nodes"] if n["kind"] == "lock"}
    assert {f"lock-{i}" for i in range(1500)} <= labels
    assert writers, "the reply went out in one send"
    last = report(dashboard.ask(snapshot_id + 2))
    assert last["served_by"] == "loop" and last["bytes"] == size
    del locks


def test_the_server_hanging_up_while_the_loop_serves(
        served: tuple[Dashboard, Any]) -> None:
    dashboard, collector = served
    until_the_loop_serves(dashboard, 3)
    assert dashboard.conn is not None
    dashboard.conn.close()
    dashboard.conn = None
    dashboard.accept()  # it reconnects
    dashboard.ask(1)
    assert collector.state == "connected"


def test_stop_while_the_loop_serves(served: tuple[Dashboard, Any],
                                    loop_thread: asyncio.AbstractEventLoop) -> None:
    dashboard, collector = served
    until_the_loop_serves(dashboard, 3)
    link = collector._link
    assert link is not None and link.sock is not None
    loop_fd = link.sock.fileno()
    selector = loop_thread._selector  # type: ignore[attr-defined]
    assert loop_fd in selector.get_map()  # the loop watches its duplicate
    collector.stop()
    assert not collector.alive
    done = threading.Event()
    loop_thread.call_soon_threadsafe(done.set)
    assert done.wait(5)
    # The loop let go of its descriptor, on the loop: it watches it no more,
    # and the descriptor is closed.
    assert loop_fd not in selector.get_map()
    assert link.sock is None
    with pytest.raises(OSError):
        os.fstat(loop_fd)


def test_switched_off_the_collector_keeps_the_connection(
        loop_thread: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_collector, "LOOP_SERVES", False)
    with connected() as (dashboard, collector):
        for snapshot_id in range(1, 5):
            graph = dashboard.ask(snapshot_id)
        assert collector._link is None
        last = report(graph)
        # Worked on the loop, served by the collector's thread.
        assert last["served_by"] == "collector" and last["loop_slices"] >= 1
