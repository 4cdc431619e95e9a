"""Hello, snapshot, reply: what a process sends is stored and comes back out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from web_support import FakeProcess, WebServer

MakeFake = Callable[..., FakeProcess]


def test_startup_lines_are_machine_parsable(shared: WebServer) -> None:
    server = shared
    assert server.ingest[1] > 0 and server.http_base.startswith("http://127.0.0.1:")
    assert server.db_reported == str(server.db.resolve())
    health = server.get("/health")
    assert health["status"] == "ok" and health["connected_processes"] == 0


def test_snapshot_round_trip_stores_graph(shared: WebServer, fake: MakeFake) -> None:
    server = shared
    fake("svc-1").serve()
    [proc] = server.wait_connected(1)
    assert proc["proc_key"] == "svc-1" and proc["process_name"] == "fake" and proc["pid"] == 1

    snap = server.jump()
    assert (snap["requested"], snap["responded"], snap["timed_out"], snap["disconnected"]) == (
        1, 1, 0, 0)
    assert snap["status"] == "complete"
    sid = snap["snapshot_id"]

    rows = server.rows(sid, "SELECT id, kind, label, location, json_extract(attrs, '$.depth') AS depth "
                            "FROM nodes ORDER BY id")
    assert rows == [
        {"id": "channel:svc-1:2", "kind": "channel", "label": "demo.work_queue", "location": None,
         "depth": 16},
        {"id": "task:svc-1:1", "kind": "task", "label": "bounded_sender",
         "location": "examples/x.py:12", "depth": None},
    ]
    [edge] = server.rows(sid, "SELECT src, dst, kind, json_extract(attrs, '$.op') AS op FROM edges")
    assert edge == {"src": "task:svc-1:1", "dst": "channel:svc-1:2", "kind": "needs", "op": "send"}
    [event] = server.rows(sid, "SELECT proc_key, name, entity_id FROM events")
    assert event == {"proc_key": "svc-1", "name": "channel.send.blocked",
                     "entity_id": "task:svc-1:1"}
    [sp] = server.rows(sid, "SELECT proc_key, status, node_count, edge_count, event_count "
                            "FROM snapshot_processes")
    assert sp == {"proc_key": "svc-1", "status": "responded", "node_count": 2, "edge_count": 1,
                  "event_count": 1}

    graph = server.get(f"/api/snapshots/{sid}/graph")
    assert graph["snapshot"]["snapshot_id"] == sid
    assert {n["id"] for n in graph["nodes"]} == {"task:svc-1:1", "channel:svc-1:2"}
    assert graph["nodes"][0]["attrs"]["meta"]["ctx.location"] == "examples/x.py:12"
    assert graph["edges"][0]["proc_key"] == "svc-1"
    events = server.get(f"/api/snapshots/{sid}/events?entity_id=task:svc-1:1")["events"]
    assert [e["name"] for e in events] == ["channel.send.blocked"]
    assert server.get(f"/api/snapshots/{sid}/events?entity_id=nope")["events"] == []

    detail = server.get(f"/api/snapshots/{sid}")
    assert detail["snapshot"]["status"] == "complete"
    assert [p["status"] for p in detail["processes"]] == ["responded"]
    listed = server.get("/api/snapshots?limit=1")["snapshots"]
    assert [s["snapshot_id"] for s in listed] == [sid]

    suspects = server.get(f"/api/snapshots/{sid}/suspects")["suspects"]
    kinds = [s["kind"] for s in suspects]
    assert "full_channel" in kinds and "long_wait" in kinds
    long_wait = next(s for s in suspects if s["kind"] == "long_wait")
    assert "bounded_sender" in long_wait["title"] and "full 16/16" in long_wait["title"]
    assert "send" in long_wait["reason"] and "3.2s" in long_wait["reason"]


def test_outcomes_responded_timeout_disconnected(shared: WebServer) -> None:
    server = shared
    procs = [FakeProcess(server, "ok-1").serve(),
             FakeProcess(server, "silent-1", behaviour="silent").serve(),
             FakeProcess(server, "gone-1", behaviour="disconnect").serve()]
    try:
        server.wait_connected(3)
        started = time.monotonic()
        snap = server.jump()
        elapsed = time.monotonic() - started
        assert (snap["requested"], snap["responded"], snap["timed_out"], snap["disconnected"]) == (
            3, 1, 1, 1), snap
        assert snap["status"] == "partial"
        assert 0.6 < elapsed < 5
        statuses = {r["proc_key"]: r["status"] for r in server.rows(
            snap["snapshot_id"], "SELECT proc_key, status FROM snapshot_processes")}
        assert statuses == {"ok-1": "responded", "silent-1": "timeout", "gone-1": "disconnected"}
        errors = dict(server.db_rows("SELECT proc_key, error FROM snapshot_processes "
                                     "WHERE snapshot_id = ?", (snap["snapshot_id"],)))
        assert "700 ms" in errors["silent-1"]
        assert "disconnected" in errors["gone-1"]
        # The timed-out process is still connected; the disconnected one is gone.
        assert {p["proc_key"] for p in server.wait_connected(2)} == {"ok-1", "silent-1"}
    finally:
        for p in procs:
            p.close()


def test_all_answer_quickly_means_no_waiting_for_the_timeout(
        start_server: Callable[..., WebServer]) -> None:
    server = start_server("--snapshot-timeout-ms", "10000")
    procs = [FakeProcess(server, f"p-{i}").serve() for i in range(5)]
    try:
        server.wait_connected(5)
        started = time.monotonic()
        snap = server.jump()
        # Well under the 10 s timeout: the snapshot ends when the last one answers.
        assert time.monotonic() - started < 5
        assert snap["responded"] == 5 and snap["status"] == "complete"
    finally:
        for p in procs:
            p.close()


def test_concurrent_jump_now_joins_the_snapshot_in_flight(shared: WebServer) -> None:
    server = shared
    before = len(server.get("/api/snapshots?limit=1000")["snapshots"])
    silent = FakeProcess(server, "silent-1", behaviour="silent").serve()
    try:
        server.wait_connected(1)
        results: list[dict[str, Any]] = []
        threads = [threading.Thread(target=lambda: results.append(server.jump()))
                   for _ in range(3)]
        for t in threads:
            t.start()
        # While it is in flight, the progress endpoint shows who is pending.
        deadline = time.monotonic() + 5
        while True:
            progress = server.get("/api/snapshot-progress")
            if progress["in_flight"] is not None:
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert progress["in_flight"]["pending"] == ["silent-1"]
        assert progress["in_flight"]["requested"] == 1
        for t in threads:
            t.join(10)
        assert len({r["snapshot_id"] for r in results}) == 1
        assert len(server.get("/api/snapshots?limit=1000")["snapshots"]) == before + 1
        after = server.get("/api/snapshot-progress")
        assert after == {"in_flight": None, "last_snapshot_id": results[0]["snapshot_id"]}
    finally:
        silent.close()


def test_snapshot_with_no_processes_is_empty_and_complete(shared: WebServer) -> None:
    server = shared
    snap = server.jump()
    assert snap["requested"] == 0 and snap["status"] == "complete"
    assert server.rows(snap["snapshot_id"], "SELECT * FROM nodes") == []


def test_late_reply_is_ignored(shared: WebServer) -> None:
    server = shared
    [(late_before,)] = server.db_rows("SELECT count(*) FROM ingest_events WHERE kind = 'late_reply'")
    proc = FakeProcess(server, "late-1")
    try:
        server.wait_connected(1)
        snap = server.jump()
        assert snap["timed_out"] == 1
        request = proc.recv_frame()
        assert request is not None and request["type"] == "snapshot_request"
        proc.send({"type": "graph_reply", "snapshot_id": request["snapshot_id"], "process": "fake",
                   "pid": 1, "graph": {"nodes": [], "edges": [], "events": []}})
        server.wait_log("ignored a reply for snapshot")
        server.wait_db("SELECT count(*) FROM ingest_events WHERE kind = 'late_reply'",
                       [(late_before + 1,)])
        assert server.rows(snap["snapshot_id"], "SELECT status FROM snapshot_processes") == [
            {"status": "timeout"}]
        # The connection stays usable.
        assert server.wait_connected(1)
    finally:
        proc.close()


def test_periodic_snapshots(start_server: Callable[..., WebServer]) -> None:
    server = start_server("--snapshot-interval-s", "0.2", "--snapshot-timeout-ms", "500")
    proc = FakeProcess(server, "tick-1").serve()
    try:
        deadline = time.monotonic() + 10
        while len(server.get("/api/snapshots")["snapshots"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        snaps = server.get("/api/snapshots")["snapshots"]
        assert {s["trigger"] for s in snaps} == {"periodic"}
        assert all(s["responded"] == 1 for s in snaps if s["status"] != "in_progress")
    finally:
        proc.close()


def test_reconnect_with_same_proc_key_replaces_old_connection(shared: WebServer,
                                                              fake: MakeFake) -> None:
    server = shared
    old = fake("same-1")
    server.wait_connected(1)
    new = fake("same-1").serve()
    assert old.wait_closed_by_server() is None
    [proc] = server.wait_connected(1)
    assert proc["proc_key"] == "same-1"
    snap = server.jump()
    assert snap["responded"] == 1
    assert new.requests

