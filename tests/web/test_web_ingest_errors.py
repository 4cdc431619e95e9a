"""A bad connection closes alone, with a reason; every other process keeps working."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from web_support import FakeProcess, WebServer, hello, sample_graph

from peeps.types import HEADER, PROTOCOL_VERSION, encode_frame


def frame_bytes(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


HELLO = encode_frame(hello("bad-1"))

#: name -> (bytes sent, expected words in the logged reason)
BAD_STREAMS: dict[str, tuple[bytes, str]] = {
    "zero_length": (b"\x00\x00\x00\x00", "empty frame"),
    "huge_declared_length": (HEADER.pack(2**31), "exceeds the cap"),
    "invalid_json": (frame_bytes(b"{nope"), "not UTF-8 JSON"),
    "not_utf8": (frame_bytes(b"\xff\xfe{}"), "not UTF-8 JSON"),
    "non_object": (frame_bytes(b"[1, 2, 3]"), "JSON object with a string 'type'"),
    "no_type": (frame_bytes(b'{"a": 1}'), "JSON object with a string 'type'"),
    "wrong_protocol_version": (encode_frame(hello("bad-1", protocol_version=PROTOCOL_VERSION + 98)),
                               "unsupported protocol_version"),
    "version_as_string": (encode_frame(hello("bad-1", protocol_version=str(PROTOCOL_VERSION))),
                          "unsupported protocol_version"),
    "version_as_bool": (encode_frame(hello("bad-1", protocol_version=True)),
                        "unsupported protocol_version"),
    "first_frame_not_hello": (encode_frame({"type": "graph_reply", "snapshot_id": 1}),
                              "first frame must be hello"),
    "proc_key_not_string": (encode_frame(hello(proc_key=12)), "proc_key"),  # type: ignore[arg-type]
    "negative_pid": (encode_frame(hello("bad-1", pid=-5)), "pid"),
    "huge_pid": (encode_frame(hello("bad-1", pid=2**70)), "pid"),
    "partial_header_then_close": (b"\x00\x00", "middle of a frame"),
    "partial_body_then_close": (HEADER.pack(100) + b'{"type"', "middle of a frame"),
    "hello_then_invalid_json": (HELLO + frame_bytes(b"{{{"), "not UTF-8 JSON"),
    "hello_then_huge_length": (HELLO + HEADER.pack(2**30), "exceeds the cap"),
    "hello_twice": (HELLO + HELLO, "hello sent twice"),
    "hello_then_partial_frame": (HELLO + HEADER.pack(50) + b"{", "middle of a frame"),
}


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    server = WebServer(tmp_path_factory.mktemp("guarded"),
                       args=["--snapshot-timeout-ms", "2000", "--handshake-timeout-s", "1",
                             "--max-frame-bytes", "65536", "--frame-timeout-s", "1"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def guarded(guarded_server: WebServer) -> Iterator[tuple[WebServer, FakeProcess]]:
    """The shared server with one well-behaved process connected."""
    server = guarded_server
    server.wait_connected(0)
    good = FakeProcess(server, "good-1").serve()
    try:
        server.wait_connected(1)
        yield server, good
    finally:
        good.close()


def refusals(server: WebServer, reason: str) -> int:
    [(count,)] = server.db_rows(
        "SELECT count(*) FROM ingest_events WHERE kind IN ('frame_error', 'refused') "
        "AND instr(detail, ?) > 0", (reason,))
    return int(count)


def assert_good_still_works(server: WebServer) -> None:
    snap = server.jump()
    assert (snap["requested"], snap["responded"], snap["status"]) == (1, 1, "complete"), snap
    assert [p["proc_key"] for p in server.get("/api/processes")["processes"]] == ["good-1"]


@pytest.mark.parametrize("case", sorted(BAD_STREAMS))
def test_bad_stream_closes_only_its_connection(guarded: tuple[WebServer, FakeProcess],
                                               case: str) -> None:
    server, good = guarded
    payload, reason = BAD_STREAMS[case]
    before = refusals(server, reason)
    with socket.create_connection(server.ingest, timeout=5) as sock:
        sock.sendall(payload)
        if case.endswith("then_close") or case.endswith("partial_frame"):
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    deadline = time.monotonic() + 10
    while refusals(server, reason) != before + 1:
        assert time.monotonic() < deadline, f"no ingest_events row for {reason!r}"
        time.sleep(0.02)
    assert reason in server.log() and "Traceback" not in server.log()
    if "middle of a frame" not in reason:
        # The server says why before it closes.
        (length,) = HEADER.unpack(received[:4])
        error = json.loads(received[4:4 + length])
        assert error["type"] == "error" and reason in error["message"]
    assert_good_still_works(server)
    assert good.requests


def test_no_hello_within_the_handshake_timeout(guarded: tuple[WebServer, FakeProcess]) -> None:
    server, _good = guarded
    with socket.create_connection(server.ingest, timeout=5) as silent, \
            socket.create_connection(server.ingest, timeout=5) as drip:
        started = time.monotonic()
        # The drip sends a valid hello one byte at a time, too slowly.
        for byte in HELLO[:3]:
            drip.sendall(bytes([byte]))
            time.sleep(0.25)
        for sock in (silent, drip):
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            assert b"no hello within 1s" in data
        assert time.monotonic() - started < 4
    assert_good_still_works(server)


def test_reply_with_a_graph_that_is_not_an_object(guarded: tuple[WebServer, FakeProcess]) -> None:
    server, _good = guarded
    bad = FakeProcess(server, "bad-graph-1", graph=lambda _k: "not a graph").serve()  # type: ignore[arg-type,return-value]
    try:
        server.wait_connected(2)
        snap = server.jump()
        assert (snap["requested"], snap["responded"], snap["errored"]) == (2, 1, 1), snap
        statuses = dict(server.db_rows(
            "SELECT proc_key, status FROM snapshot_processes WHERE snapshot_id = ?",
            (snap["snapshot_id"],)))
        assert statuses == {"good-1": "responded", "bad-graph-1": "error"}
        [(error,)] = server.db_rows("SELECT error FROM snapshot_processes WHERE status = 'error' "
                                    "AND snapshot_id = ?", (snap["snapshot_id"],))
        assert "graph_reply.graph must be an object" in error
        bad.closed.wait(5)
        assert_good_still_works(server)
    finally:
        bad.close()


def mixed_graph(proc_key: str) -> dict[str, Any]:
    graph = sample_graph(proc_key)
    graph["nodes"] += [
        "just a string",
        {"id": 7, "kind": "task", "label": "x", "attrs": {}},
        {"id": "task:dup", "kind": "task", "label": "first", "attrs": {}},
        {"id": "task:dup", "kind": "task", "label": "second", "attrs": {}},
        {"id": "task:noattrs", "kind": "task", "label": "ok without attrs"},
        {"id": "task:badattrs", "kind": "task", "label": "x", "attrs": [1]},
        {"id": "task:\ud800", "kind": "task", "label": "lone surrogate", "attrs": {}},
        {"id": "task:badlabel", "kind": "task", "label": None, "attrs": {}},
    ]
    graph["edges"] += [{"src": 1, "dst": "x", "kind": "needs", "attrs": {}}, None]
    graph["events"] += [{"id": "one", "ts_ns": 1, "entity_id": "x", "name": "n", "attrs": {}},
                        {"id": 2, "ts_ns": 2**64, "entity_id": "x", "name": "n", "attrs": {}},
                        {"id": 3, "ts_ns": 3, "entity_id": "x", "name": "ok", "attrs": {},
                         "parent_entity_id": None}]
    return graph


def test_bad_entries_are_skipped_and_recorded(guarded_server: WebServer) -> None:
    server = guarded_server
    server.wait_connected(0)
    [(invalid_before,)] = server.db_rows(
        "SELECT count(*) FROM ingest_events WHERE kind = 'invalid_entries'")
    proc = FakeProcess(server, "mixed-1", graph=mixed_graph).serve()
    try:
        server.wait_connected(1)
        snap = server.jump()
        assert snap["responded"] == 1 and snap["status"] == "complete"
        sid = snap["snapshot_id"]
        ids = [r["id"] for r in server.rows(sid, "SELECT id FROM nodes ORDER BY id")]
        assert ids == ["channel:mixed-1:2", "task:dup", "task:mixed-1:1", "task:noattrs"]
        assert len(server.rows(sid, "SELECT * FROM edges")) == 1
        assert [r["name"] for r in server.rows(sid, "SELECT name FROM events ORDER BY id")] == [
            "channel.send.blocked", "ok"]
        [row] = server.rows(sid, "SELECT status, error FROM snapshot_processes")
        assert row["status"] == "responded"
        assert row["error"].startswith("skipped 10 invalid entries")
        server.wait_db("SELECT count(*) FROM ingest_events WHERE kind = 'invalid_entries'",
                       [(invalid_before + 1,)])
    finally:
        proc.close()


def test_max_connections(start_server: Callable[..., WebServer]) -> None:
    server = start_server("--max-connections", "3")
    procs = [FakeProcess(server, f"p-{i}").serve() for i in range(3)]
    try:
        server.wait_connected(3)
        extra = FakeProcess(server, "p-extra")
        error = extra.wait_closed_by_server()
        assert error is not None and "too many connections (max 3)" in error["message"]
        extra.close()
        assert server.jump()["responded"] == 3
        procs[0].close()
        server.wait_connected(2)
        replacement = FakeProcess(server, "p-new").serve()
        procs.append(replacement)
        server.wait_connected(3)
    finally:
        for p in procs:
            p.close()


def test_unknown_frame_types_are_ignored(guarded_server: WebServer) -> None:
    server = guarded_server
    server.wait_connected(0)
    proc = FakeProcess(server, "future-1")
    try:
        proc.send({"type": "something_new", "payload": 1})
        proc.serve()
        server.wait_connected(1)
        assert server.jump()["responded"] == 1
        server.wait_db("SELECT count(*) FROM ingest_events WHERE kind = 'unknown_frame'", [(1,)])
    finally:
        proc.close()
