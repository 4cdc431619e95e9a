"""Many idle or slow connections do not hurt the processes that behave."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from web_support import FakeProcess, WebServer, hello

from peeps.types import HEADER, encode_frame


def test_a_thousand_idle_connections_do_not_slow_a_snapshot(
        start_server: Callable[..., WebServer]) -> None:
    server = start_server("--handshake-timeout-s", "60", "--max-connections", "2000",
                          "--snapshot-timeout-ms", "5000")
    idle: list[socket.socket] = []
    good = FakeProcess(server, "good-1").serve()
    try:
        for _ in range(1000):
            idle.append(socket.create_connection(server.ingest, timeout=10))
        server.wait_connected(1)
        started = time.monotonic()
        snap = server.jump()
        elapsed = time.monotonic() - started
        assert snap["requested"] == 1 and snap["responded"] == 1
        # Far below the 5 s snapshot timeout (generous for loaded CI machines).
        assert elapsed < 2.5, elapsed
        started = time.monotonic()
        server.get("/health")
        assert time.monotonic() - started < 1.5
    finally:
        for sock in idle:
            sock.close()
        good.close()
    assert "Traceback" not in server.log()


def test_slow_frame_bodies_time_out_without_blocking_others(
        start_server: Callable[..., WebServer]) -> None:
    server = start_server("--frame-timeout-s", "0.5", "--snapshot-timeout-ms", "3000")
    slow: list[socket.socket] = []
    good = FakeProcess(server, "good-1").serve()
    try:
        for i in range(50):
            sock = socket.create_connection(server.ingest, timeout=10)
            # A proper hello, then a frame header promising a body that never comes.
            sock.sendall(encode_frame(hello(f"slow-{i}")) + HEADER.pack(1000) + b"{")
            slow.append(sock)
        server.wait_connected(51)
        snap = server.jump()
        # The slow ones were asked too; their reader is stuck in a frame, then dropped.
        assert snap["responded"] == 1
        server.wait_connected(1)
        for sock in slow:
            sock.settimeout(5)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            assert b"not received within 0.5s" in data
    finally:
        for sock in slow:
            sock.close()
        good.close()


def test_connection_churn_does_not_grow_ingest_events_without_bound(
        start_server: Callable[..., WebServer]) -> None:
    server = start_server("--retain-ingest-events", "10")
    for _ in range(250):
        with socket.create_connection(server.ingest, timeout=5):
            pass
    deadline = time.monotonic() + 10
    while True:
        [(total,)] = server.db_rows("SELECT count(*) FROM ingest_events")
        [(newest,)] = server.db_rows("SELECT max(id) FROM ingest_events")
        if newest is not None and newest >= 250:
            break
        assert time.monotonic() < deadline, (total, newest)
        time.sleep(0.05)
    # Trimmed every 100 events down to the newest 10.
    assert total <= 110, total
