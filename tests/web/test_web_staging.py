"""Large graph replies staged by SQLite store exactly the rows the Python path stores.

The fast path (``_staging``: arrays cut out of the frame, unpacked and checked by
SQLite, copied by the writer) is tested against the reference path
(``decode_body`` + ``validate_graph`` + ``store_reply``): in-process through the
real ``Store``, and through a real server, where the same graph arrives once in
the layout the fast path takes and once in one it leaves to Python.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from web_support import FakeProcess, WebServer

from peeps.types import HEADER, decode_body, encode_frame
from peeps.web._ingest import LARGE_FRAME_BYTES
from peeps.web._staging import STAGED_SCHEMA, StagedReply, stage_graph_reply, store_staged_reply
from peeps.web._store import Store, begin_snapshot, store_reply
from peeps.web._validate import validate_graph

PROC_KEY = "big-1"


def big_graph(proc_key: str = PROC_KEY, n: int = 1500) -> dict[str, Any]:
    """A realistic graph well above LARGE_FRAME_BYTES: tasks blocked on channels."""
    now = 1_700_000_000_000_000_000
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for i in range(n):
        nodes.append({"id": f"task:{proc_key}:{i}", "kind": "task", "label": f"handler-{i}",
                      "attrs": {"meta": {"ctx.location": "/srv/app/handlers.py:118"},
                                "state": "pending", "age_ns": 5_000_000_000 + i,
                                "stack": ["/srv/app/db.py:52 in query",
                                          "/usr/lib/python3.11/asyncio/queues.py:158 in get"]}})
        nodes.append({"id": f"channel:{proc_key}:{i}", "kind": "channel", "label": f"replies-{i}",
                      "attrs": {"capacity": 16, "depth": 0, "load": 0.25 + i / 7,
                                "closed": False, "owner": None}})
        edges.append({"src": f"task:{proc_key}:{i}", "dst": f"channel:{proc_key}:{i}",
                      "kind": "needs", "attrs": {"op": "recv", "waited_ns": 1_000_000}})
    events = [{"id": i, "ts_ns": now - i * 1000, "proc_key": proc_key,
               "entity_id": f"channel:{proc_key}:{i}", "name": "channel.send.blocked",
               "parent_entity_id": f"task:{proc_key}:{i}" if i % 2 else None,
               "attrs": {"depth": 16}} for i in range(n // 10)]
    return {"process_name": "big", "proc_key": proc_key, "pid": 1, "captured_at_ns": now,
            "nodes": nodes, "edges": edges, "events": events}


def tricky_graph() -> dict[str, Any]:
    """Valid entries at every edge of the checks."""
    graph = big_graph(n=800)
    graph["nodes"] += [
        {"id": "task:quote\"back\\slash\nnew\ttab", "kind": "task", "label": "é ü ✓ 😀"},
        {"id": "x" * 1024, "kind": "k" * 1024, "label": "L" * 5000, "attrs": {}},
        {"id": "task:bracket", "kind": "task", "label": "[worker] {0}", "attrs": {"a": [1, {}]}},
        {"id": "task:empty-label", "kind": "task", "label": ""},
        {"id": "task:escapes", "kind": "task", "label": "\x01\x1f\x7f\u00ff\u2028",
         "attrs": {"k\u00e9y": "\\ud800 is text, not an escape"}},
        {"id": "task:esc-label", "kind": "task", "label": "\\" + "é" * 5000},
        {"id": "task:numbers", "kind": "task", "label": "n",
         "attrs": {"big": 2**70, "neg": -3, "float": 1e-07, "exp": 6.02e23, "t": True,
                   "nested": {"deep": [[[]]], "s": "\"}]"}}},
    ]
    graph["events"] += [
        {"id": 2**63 - 1, "ts_ns": -(2**63 - 1), "entity_id": "e", "name": "n",
         "attrs": {"x": "y"}},
        {"id": -1, "ts_ns": 0, "entity_id": "e", "name": "missing attrs and parent"},
    ]
    return graph


def reply(graph: Any, snapshot_id: int = 1, **extra: Any) -> dict[str, Any]:
    return {"type": "graph_reply", "snapshot_id": snapshot_id, "process": "big", "pid": 1,
            "graph": graph, **extra}


def compact(message: dict[str, Any], **dumps: Any) -> bytes:
    """The body the peeps client sends (``encode_frame``'s encoding)."""
    if not dumps:
        return encode_frame(message)[HEADER.size:]
    return json.dumps(message, separators=(",", ":"), **dumps).encode()


# -- in-process: the real Store, both paths ---------------------------------------------------


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Callable[[str], Store]]:
    opened: list[Store] = []

    def make(name: str) -> Store:
        store = Store(tmp_path / f"{name}.sqlite")
        store.open()
        store.submit(lambda conn: begin_snapshot(
            conn, trigger="test", requested_at_ns=1, processes=[(PROC_KEY, "big", 1)])).result()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def stored_rows(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(store.path)
    try:
        return {
            "nodes": conn.execute("SELECT * FROM nodes ORDER BY rowid").fetchall(),
            "edges": conn.execute("SELECT * FROM edges ORDER BY rowid").fetchall(),
            "events": conn.execute("SELECT * FROM events ORDER BY rowid").fetchall(),
            "processes": conn.execute(
                "SELECT snapshot_id, proc_key, status, error, captured_at_ns, node_count, "
                "edge_count, event_count FROM snapshot_processes").fetchall(),
        }
    finally:
        conn.close()


def via_python(store: Store, body: bytes) -> None:
    graph = validate_graph(decode_body(body)["graph"])
    store.submit(lambda conn: store_reply(
        conn, snapshot_id=1, proc_key=PROC_KEY, responded_at_ns=1,
        captured_at_ns=graph.captured_at_ns, error=graph.error, nodes=graph.nodes,
        edges=graph.edges, events=graph.events)).result()


def via_staging(store: Store, staged: StagedReply) -> None:
    try:
        store.submit(lambda conn: store_staged_reply(
            conn, snapshot_id=1, proc_key=PROC_KEY, responded_at_ns=1, staged=staged),
            attach=(staged.uri, STAGED_SCHEMA)).result()
    finally:
        staged.close()


STAGED_CASES: dict[str, Callable[[], bytes]] = {
    "realistic": lambda: compact(reply(big_graph())),
    "edge cases": lambda: compact(reply(tricky_graph())),
    "no events key": lambda: compact(reply({k: v for k, v in big_graph().items()
                                            if k != "events"})),
    "arrays in another order": lambda: compact(reply(
        {"captured_at_ns": "not an int", "events": big_graph()["events"],
         "edges": big_graph()["edges"], "nodes": big_graph()["nodes"]})),
    "graph first, key after it": lambda: compact(
        {"graph": big_graph(), "type": "graph_reply", "snapshot_id": 1,
         "truncated": "cut ] here }"}),
}


@pytest.mark.parametrize("case", sorted(STAGED_CASES))
def test_staged_rows_equal_the_python_paths(stores: Callable[[str], Store], case: str) -> None:
    body = STAGED_CASES[case]()
    staged = stage_graph_reply(body)
    assert staged is not None, "this reply should take the fast path"
    assert staged.snapshot_id == 1
    reference, fast = stores("reference"), stores("fast")
    via_python(reference, body)
    via_staging(fast, staged)
    expected, got = stored_rows(reference), stored_rows(fast)
    assert expected["nodes"], "the case must store something"
    assert got == expected


def test_non_ascii_attrs_are_kept_as_sent(stores: Callable[[str], Store]) -> None:
    """A client that sends raw UTF-8: same values; attrs text unescaped (it is valid JSON)."""
    graph = tricky_graph()
    body = compact(reply(graph), ensure_ascii=False)
    staged = stage_graph_reply(body)
    assert staged is not None
    reference, fast = stores("reference"), stores("fast")
    via_python(reference, body)
    via_staging(fast, staged)
    expected, got = stored_rows(reference), stored_rows(fast)
    for table in ("nodes", "edges", "events"):
        assert [r[:-1] for r in got[table]] == [r[:-1] for r in expected[table]]
        assert [json.loads(r[-1]) for r in got[table]] == [json.loads(r[-1])
                                                            for r in expected[table]]
    assert got["processes"] == expected["processes"]


def with_node(extra: Any) -> Callable[[], bytes]:
    return lambda: compact(reply({**big_graph(), "nodes": [*big_graph()["nodes"], extra]}))


#: Replies the fast path must leave to Python (which skips, refuses or accepts them).
PYTHON_CASES: dict[str, Callable[[], bytes]] = {
    "node not an object": with_node("just a string"),
    "id not a string": with_node({"id": 7, "kind": "task"}),
    "id an object": with_node({"id": {"a": 1}, "kind": "task"}),
    "empty kind": with_node({"id": "x", "kind": ""}),
    "id too long": with_node({"id": "x" * 1025, "kind": "task"}),
    "label null": with_node({"id": "x", "kind": "task", "label": None}),
    "label a number": with_node({"id": "x", "kind": "task", "label": 5}),
    "attrs a list": with_node({"id": "x", "kind": "task", "attrs": [1]}),
    "attrs null": with_node({"id": "x", "kind": "task", "attrs": None}),
    "duplicate node id": with_node({"id": f"task:{PROC_KEY}:0", "kind": "task"}),
    "lone surrogate": with_node({"id": "task:\ud800", "kind": "task"}),
    "NUL in an id": with_node({"id": "a\u0000" + "b" * 2000, "kind": "task"}),
    "escaped key": lambda: compact(reply(big_graph())).replace(b'"label"', b'"l\\u0061bel"', 1),
    "NaN in attrs": with_node({"id": "x", "kind": "task", "attrs": {"v": float("nan")}}),
    "string id starting with a bracket": with_node({"id": "[x]", "kind": "task"}),
    "nested key named edges": with_node({"id": "x", "kind": "task", "attrs": {"edges": [1]}}),
    "bad edge": lambda: compact(reply({**big_graph(), "edges": [{"src": 1}]})),
    "event id a bool": lambda: compact(reply({**big_graph(), "events": [
        {"id": True, "ts_ns": 1, "entity_id": "e", "name": "n"}]})),
    "event id -0": lambda: compact(reply({**big_graph(), "events": [
        {"id": 0, "ts_ns": 1, "entity_id": "e", "name": "n"}]})).replace(b'"id":0,', b'"id":-0,'),
    "event ts 2**64": lambda: compact(reply({**big_graph(), "events": [
        {"id": 1, "ts_ns": 2**64, "entity_id": "e", "name": "n"}]})),
    "spaced layout": lambda: json.dumps(reply(big_graph())).encode(),
    "nodes not a list": lambda: compact(reply({**big_graph(), "nodes": {"a": 1}})),
    "graph not an object": lambda: compact(reply([big_graph()])),
    "repeated graph key": lambda: compact(reply(big_graph())).replace(
        b'"graph":{', b'"graph":{"nodes":[],"edges":[],"events":[]},"graph":{', 1),
    "not a graph reply": lambda: compact({"type": "hello", "padding": big_graph()}),
    "malformed JSON": lambda: compact(reply(big_graph()))[:-1],
    "not UTF-8": lambda: compact(reply(big_graph())).replace(b"handler-1", b"handler\xff", 1),
}


@pytest.mark.parametrize("case", sorted(PYTHON_CASES))
def test_doubtful_replies_are_left_to_python(case: str) -> None:
    assert stage_graph_reply(PYTHON_CASES[case]()) is None


# -- through a real server ---------------------------------------------------------------------


class EncodingProcess(FakeProcess):
    """A fake process that encodes its replies with ``json.dumps(**dumps)``."""

    def __init__(self, server: WebServer, proc_key: str, graph: Callable[[str], dict[str, Any]],
                 **dumps: Any) -> None:
        self.dumps = dumps
        super().__init__(server, proc_key, graph=graph)

    def send(self, message: dict[str, Any]) -> None:
        if message.get("type") != "graph_reply":
            super().send(message)
            return
        body = json.dumps(message, **self.dumps).encode()
        self.sock.sendall(HEADER.pack(len(body)) + body)


def assert_staged(body: bytes) -> None:
    """The server will take the fast path for this frame body."""
    assert len(body) > LARGE_FRAME_BYTES
    staged = stage_graph_reply(body)
    assert staged is not None
    staged.close()


def snapshot_rows(server: WebServer, snapshot_id: int, proc_key: str
                  ) -> dict[str, list[tuple[Any, ...]]]:
    where = "WHERE snapshot_id = ? AND proc_key = ?"
    params = (snapshot_id, proc_key)
    return {
        "nodes": server.db_rows(f"SELECT id, kind, label, attrs_json FROM nodes {where} "
                                "ORDER BY rowid", params),
        "edges": server.db_rows(f"SELECT src, dst, kind, attrs_json FROM edges {where} "
                                "ORDER BY rowid", params),
        "events": server.db_rows(f"SELECT id, ts_ns, entity_id, name, parent_entity_id, "
                                 f"attrs_json FROM events {where} ORDER BY rowid", params),
        "process": server.db_rows(f"SELECT status, error, captured_at_ns, node_count, edge_count, "
                                  f"event_count FROM snapshot_processes {where}", params),
    }


def expected_rows(graph: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    valid = validate_graph(json.loads(json.dumps(graph)))
    return {"nodes": list(valid.nodes), "edges": list(valid.edges),
            "events": [tuple(e) for e in valid.events],
            "process": [("responded", valid.error, valid.captured_at_ns, len(valid.nodes),
                         len(valid.edges), len(valid.events))]}


def test_a_real_server_stores_the_same_rows_on_both_paths(shared: WebServer) -> None:
    server = shared
    graph = tricky_graph()
    staged_body = compact(reply(graph))
    assert_staged(staged_body)  # the fast path's layout...
    assert stage_graph_reply(json.dumps(reply(graph)).encode()) is None  # ... and not
    fast = EncodingProcess(server, "fast-1", lambda _key: graph, separators=(",", ":"))
    slow = EncodingProcess(server, "slow-1", lambda _key: graph)
    try:
        fast.serve()
        slow.serve()
        server.wait_connected(2)
        for _ in range(2):  # the second time over a database that already holds rows
            snap = server.jump()
            assert (snap["responded"], snap["status"]) == (2, "complete"), snap
            sid = snap["snapshot_id"]
            got_fast = snapshot_rows(server, sid, "fast-1")
            assert got_fast == snapshot_rows(server, sid, "slow-1") == expected_rows(graph)
        graph_api = server.get(f"/api/snapshots/{sid}/graph")
        labels = {n["id"]: n["label"] for n in graph_api["nodes"] if n["proc_key"] == "fast-1"}
        assert labels["task:bracket"] == "[worker] {0}" and len(labels["x" * 1024]) == 4096
    finally:
        fast.close()
        slow.close()
    assert "Traceback" not in server.log()


def test_a_large_reply_with_bad_entries_is_checked_by_python(shared: WebServer,
                                                              fake: Callable[..., FakeProcess]
                                                              ) -> None:
    server = shared
    graph = big_graph("mixed-big")
    graph["nodes"] += [{"id": "task:mixed-big:0", "kind": "task"}, {"id": 7, "kind": "task"},
                       {"id": "task:\ud800", "kind": "task"}]
    assert len(compact(reply(graph))) > LARGE_FRAME_BYTES  # large, but Python checks it
    fake("mixed-big", graph=lambda _key: graph).serve()
    server.wait_connected(1)
    snap = server.jump()
    assert (snap["responded"], snap["status"]) == (1, "complete")
    got = snapshot_rows(server, snap["snapshot_id"], "mixed-big")
    assert got == expected_rows(graph)
    [(_status, error, *_rest)] = got["process"]
    assert error.startswith("skipped 3 invalid entries: duplicate node id")


def test_a_large_reply_nobody_waits_for_is_dropped(shared: WebServer,
                                                   fake: Callable[..., FakeProcess]) -> None:
    server = shared
    proc = fake("late-big")
    server.wait_connected(1)
    before = server.db_rows("SELECT count(*) FROM nodes")
    late = reply(big_graph("late-big"), snapshot_id=10**9)
    assert_staged(compact(late))
    proc.send(late)
    server.wait_db("SELECT count(*) FROM ingest_events WHERE kind = 'late_reply' "
                   "AND proc_key = 'late-big'", [(1,)])
    proc.serve()
    snap = server.jump()  # the connection still works
    assert snap["responded"] == 1
    assert server.db_rows("SELECT count(*) FROM nodes WHERE snapshot_id < ?",
                          (snap["snapshot_id"],)) == before
