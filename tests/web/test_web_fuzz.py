"""Property-based fuzzing of the live ingest port with structured frames.

Whatever a process sends, the server stays up, answers HTTP, never logs a
traceback, and accounts for every asked process in the snapshot.  Cases the
fuzzer found are kept as explicit ``@example``s.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from web_support import FakeProcess, WebServer, hello

from peeps.types import HEADER, PROTOCOL_VERSION, encode_frame

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=12)

ids = st.text(min_size=0, max_size=12) | st.sampled_from(["task:1", "lock:1", "task:2"])


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually the well-typed value, sometimes anything at all."""
    return st.one_of(strategy, strategy, strategy, json_values)


nodes = st.fixed_dictionaries(
    {"id": maybe(ids), "kind": maybe(st.sampled_from(["task", "lock", "channel", "thread"])),
     "label": maybe(st.text(max_size=10))},
    optional={"attrs": maybe(st.dictionaries(st.text(max_size=8), json_values, max_size=4))})
edges = st.fixed_dictionaries(
    {"src": maybe(ids), "dst": maybe(ids),
     "kind": maybe(st.sampled_from(["needs", "holds", "spawned"]))},
    optional={"attrs": maybe(st.fixed_dictionaries({}, optional={
        "waited_ns": maybe(st.integers(0, 10**12)), "op": maybe(st.text(max_size=5))}))})
events = st.fixed_dictionaries(
    {"id": maybe(st.integers(-(2**64), 2**64)), "ts_ns": maybe(st.integers(0, 2**64)),
     "entity_id": maybe(ids), "name": maybe(st.text(max_size=12))},
    optional={"parent_entity_id": maybe(st.none() | ids),
              "attrs": maybe(st.dictionaries(st.text(max_size=4), json_values, max_size=3))})
graphs = st.one_of(
    st.fixed_dictionaries({}, optional={
        "nodes": maybe(st.lists(maybe(nodes), max_size=8)),
        "edges": maybe(st.lists(maybe(edges), max_size=8)),
        "events": maybe(st.lists(maybe(events), max_size=5)),
        "captured_at_ns": maybe(st.integers(-(2**70), 2**70))}),
    json_values)

#: More examples for a long fuzz session: PEEPS_FUZZ_EXAMPLES=2000 pytest tests/web/test_web_fuzz.py
COMMON = settings(max_examples=int(os.environ.get("PEEPS_FUZZ_EXAMPLES", "40")), deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow])


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with WebServer(tmp_path_factory.mktemp("fuzz"),
                   args=["--snapshot-timeout-ms", "3000", "--handshake-timeout-s", "2",
                         "--max-frame-bytes", "100000", "--frame-timeout-s", "1"]).serving() as server:
        yield server


def healthy(server: WebServer) -> None:
    assert server.proc is not None and server.proc.poll() is None
    assert server.get("/health")["status"] == "ok"


@COMMON
@given(graph=graphs)
@example(graph={"nodes": [{"id": "\ud800", "kind": "task", "label": "x"}]})
@example(graph={"captured_at_ns": 2**70, "events": [{"id": 2**64, "ts_ns": 1, "entity_id": "e",
                                                      "name": "n"}]})
@example(graph={"nodes": [{"id": "a", "kind": "task", "label": "x", "attrs": {"\ud800": 1}}]})
@example(graph={"nodes": None})
@example(graph=[])
def test_any_graph_reply_is_accounted_for(fuzz_server: WebServer, graph: Any) -> None:
    server = fuzz_server
    server.wait_connected(0)
    proc = FakeProcess(server, "fuzz-1", graph=lambda _key: graph).serve()
    try:
        server.wait_connected(1)
        snap = server.jump()
        assert snap["requested"] == 1
        assert snap["responded"] + snap["errored"] == 1, snap
        rows = server.db_rows("SELECT status, node_count, edge_count, event_count "
                              "FROM snapshot_processes WHERE snapshot_id = ?",
                              (snap["snapshot_id"],))
        [(status, node_count, edge_count, event_count)] = rows
        if status == "responded":
            assert isinstance(graph, dict)
            sql_nodes = server.rows(snap["snapshot_id"], "SELECT count(*) AS n FROM nodes")
            assert sql_nodes == [{"n": node_count}]
            assert node_count <= len(graph.get("nodes", []))
            assert edge_count <= len(graph.get("edges", []))
            assert event_count <= len(graph.get("events", []))
            # Everything stored can be served back, including suspects.
            server.get(f"/api/snapshots/{snap['snapshot_id']}/graph")
            server.get(f"/api/snapshots/{snap['snapshot_id']}/suspects")
        healthy(server)
    finally:
        proc.close()


hellos = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "hello", "graph_reply", "nope"])},
    optional={"protocol_version": maybe(st.just(PROTOCOL_VERSION)),
              "process_name": maybe(st.text(max_size=10)),
              "pid": maybe(st.integers(-5, 2**64)),
              "proc_key": maybe(st.text(max_size=300)),
              "peeps_version": maybe(st.text(max_size=5)),
              "token": maybe(st.text(max_size=5))})


@COMMON
@given(message=hellos)
@example(message={"type": "hello", "protocol_version": PROTOCOL_VERSION, "process_name": "x",
                  "pid": 1, "proc_key": "x" * 257})
def test_any_hello_is_accepted_or_refused_cleanly(fuzz_server: WebServer,
                                                  message: dict[str, Any]) -> None:
    server = fuzz_server
    server.wait_connected(0)
    proc = FakeProcess(server, "unused", send_hello=False)
    try:
        proc.send(message)
        proc.serve()
        procs = []
        for _ in range(20):
            procs = server.get("/api/processes")["processes"]
            if procs or proc.closed.is_set():
                break
            proc.closed.wait(0.05)
        if procs:
            assert procs[0]["proc_key"] == message["proc_key"]
            assert server.jump()["responded"] == 1
        healthy(server)
    finally:
        proc.close()


@COMMON
@given(chunks=st.lists(st.binary(max_size=64), min_size=1, max_size=4))
@example(chunks=[HEADER.pack(5) + b"\xc3\x28\xa0\xa1\x00"])
@example(chunks=[HEADER.pack(2) + b"{}"])
def test_any_bytes_after_hello_leave_others_working(fuzz_server: WebServer,
                                                    chunks: list[bytes]) -> None:
    server = fuzz_server
    server.wait_connected(0)
    good = FakeProcess(server, "good-1").serve()
    try:
        with socket.create_connection(server.ingest, timeout=5) as sock:
            sock.sendall(encode_frame(hello("bytes-1")))
            for chunk in chunks:
                try:
                    sock.sendall(chunk)
                except OSError:
                    break
        server.wait_connected(1)
        snap = server.jump()
        assert snap["responded"] == 1 and snap["requested"] == 1
        healthy(server)
    finally:
        good.close()
