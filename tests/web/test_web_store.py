"""The store: retention, crash recovery, the database left consistent."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from web_support import FakeProcess, WebServer


def jump_quietly(server: WebServer, results: list[Any]) -> None:
    """POST /api/jump-now from a thread, tolerating the server going away."""
    try:
        results.append(server.request("POST", "/api/jump-now", {}))
    except OSError as exc:  # http.client errors on a killed server
        results.append(exc)


def test_retention_keeps_the_newest_snapshots(start_server: Callable[..., WebServer]) -> None:
    server = start_server("--retain-snapshots", "3", "--retain-ingest-events", "5")
    proc = FakeProcess(server, "keep-1").serve()
    try:
        server.wait_connected(1)
        ids = [server.jump()["snapshot_id"] for _ in range(6)]
        listed = [s["snapshot_id"] for s in server.get("/api/snapshots")["snapshots"]]
        assert listed == ids[:-4:-1]
        for table in ("nodes", "edges", "events", "snapshot_processes"):
            kept = {sid for (sid,) in server.db_rows(f"SELECT DISTINCT snapshot_id FROM {table}")}
            assert kept == set(ids[-3:]), table
        status, body = server.request("GET", f"/api/snapshots/{ids[0]}")
        assert status == 404 and "does not exist" in body["error"]["message"]
        status, body = server.sql(ids[0], "SELECT 1")
        assert status == 404
        # Snapshot ids are never reused after deletion.
        assert ids == sorted(set(ids))
    finally:
        proc.close()
    server.wait_connected(0)
    server.jump()
    [(count,)] = server.db_rows("SELECT count(*) FROM ingest_events")
    assert count <= 5


def test_crash_mid_snapshot_is_recovered_as_incomplete(
        start_server: Callable[..., WebServer], tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite"
    server = start_server("--snapshot-timeout-ms", "30000", db=db)
    answering = FakeProcess(server, "fast-1").serve()
    silent = FakeProcess(server, "silent-1", behaviour="silent").serve()
    results: list[Any] = []
    try:
        server.wait_connected(2)
        jumper = threading.Thread(target=jump_quietly, args=(server, results), daemon=True)
        jumper.start()
        deadline = time.monotonic() + 10
        while True:
            progress = server.get("/api/snapshot-progress")["in_flight"]
            if progress is not None and progress["responded"] == 1:
                break
            assert time.monotonic() < deadline, progress
            time.sleep(0.02)
        sid = progress["snapshot_id"]
        # The fast reply is being written; give the writer a moment, then kill -9.
        server.wait_db(f"SELECT status FROM snapshot_processes WHERE snapshot_id = {sid} "
                       "ORDER BY proc_key", [("responded",), ("pending",)])
        assert server.stop(kill=True) == -9
        jumper.join(10)
    finally:
        answering.close()
        silent.close()

    restarted = start_server(db=db)
    assert any("recovered 1 interrupted snapshot" in line for line in restarted.stdout)
    detail = restarted.get(f"/api/snapshots/{sid}")
    assert detail["snapshot"]["status"] == "incomplete"
    statuses = {p["proc_key"]: p["status"] for p in detail["processes"]}
    assert statuses == {"fast-1": "responded", "silent-1": "incomplete"}
    # What was stored before the crash is still queryable.
    assert restarted.rows(sid, "SELECT count(*) AS n FROM nodes") == [{"n": 2}]
    restarted.stop()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_clean_shutdown_on_sigterm(server: WebServer) -> None:
    server.jump()
    assert server.stop() == 0
    assert server.stdout[-1] == "peeps-web: stopped"
    assert "Traceback" not in server.log()
    conn = sqlite3.connect(server.db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT status FROM snapshots").fetchall() == [("complete",)]
    finally:
        conn.close()


def test_sigterm_during_a_snapshot(start_server: Callable[..., WebServer]) -> None:
    server = start_server("--snapshot-timeout-ms", "30000")
    silent = FakeProcess(server, "silent-1", behaviour="silent").serve()
    try:
        server.wait_connected(1)
        threading.Thread(target=jump_quietly, args=(server, []), daemon=True).start()
        deadline = time.monotonic() + 10
        while server.get("/api/snapshot-progress")["in_flight"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 8
    finally:
        silent.close()
    assert "Traceback" not in server.log()


def test_bad_configuration_is_reported(tmp_path: Path) -> None:
    server = WebServer(tmp_path, args=["--snapshot-timeout-ms", "zero"])
    with pytest.raises(RuntimeError, match="did not start"):
        server.start(timeout=5)
    assert server.stop() == 2
    assert "configuration error: --snapshot-timeout-ms" in server.log()
