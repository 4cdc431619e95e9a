"""The SQLite store: schema, the single writer thread, read helpers, retention.

Every write runs on one dedicated thread (never on the event loop) inside one
transaction per job, so a process reply lands atomically.  Reads open their own
read-only connections (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, TypeVar

log = logging.getLogger("peeps.web.store")

T = TypeVar("T")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS snapshots (
    snapshot_id INTEGER PRIMARY KEY AUTOINCREMENT,
    requested_at_ns INTEGER NOT NULL,
    captured_at_ns INTEGER,
    completed_at_ns INTEGER,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    requested INTEGER NOT NULL DEFAULT 0,
    responded INTEGER NOT NULL DEFAULT 0,
    timed_out INTEGER NOT NULL DEFAULT 0,
    disconnected INTEGER NOT NULL DEFAULT 0,
    errored INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS snapshot_processes (
    snapshot_id INTEGER NOT NULL,
    proc_key TEXT NOT NULL,
    process_name TEXT NOT NULL,
    pid INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    responded_at_ns INTEGER,
    captured_at_ns INTEGER,
    node_count INTEGER NOT NULL DEFAULT 0,
    edge_count INTEGER NOT NULL DEFAULT 0,
    event_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (snapshot_id, proc_key)
);
CREATE TABLE IF NOT EXISTS nodes (
    snapshot_id INTEGER NOT NULL,
    proc_key TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    attrs_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS nodes_by_id ON nodes (snapshot_id, id);
CREATE TABLE IF NOT EXISTS edges (
    snapshot_id INTEGER NOT NULL,
    proc_key TEXT NOT NULL,
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    kind TEXT NOT NULL,
    attrs_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS edges_by_src ON edges (snapshot_id, src);
CREATE INDEX IF NOT EXISTS edges_by_dst ON edges (snapshot_id, dst);
CREATE TABLE IF NOT EXISTS events (
    snapshot_id INTEGER NOT NULL,
    proc_key TEXT NOT NULL,
    id INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    entity_id TEXT NOT NULL,
    name TEXT NOT NULL,
    parent_entity_id TEXT,
    attrs_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_snapshot ON events (snapshot_id, entity_id);
CREATE TABLE IF NOT EXISTS ingest_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL,
    proc_key TEXT,
    peer TEXT,
    kind TEXT NOT NULL,
    detail TEXT
);
"""

#: Tables holding per-snapshot rows (retention deletes from all of them).
SNAPSHOT_TABLES: Final = ("nodes", "edges", "events", "snapshot_processes", "snapshots")

SNAPSHOT_COLUMNS: Final = ("snapshot_id", "requested_at_ns", "captured_at_ns", "completed_at_ns",
                           "status", "trigger", "requested", "responded", "timed_out",
                           "disconnected", "errored")
PROCESS_COLUMNS: Final = ("proc_key", "process_name", "pid", "status", "error", "responded_at_ns",
                          "captured_at_ns", "node_count", "edge_count", "event_count")


class StoreClosed(RuntimeError):
    pass


_STOP: Final = object()


class Store:
    """Owns the database file and the writer thread."""

    def __init__(self, path: str | Path, *, retain_ingest_events: int = 10000) -> None:
        self.path = Path(path).resolve()
        self.retain_ingest_events = retain_ingest_events
        self._ingest_events_since_trim = 0
        self._jobs: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.recovered_snapshots = 0

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> None:
        """Create the schema, recover interrupted snapshots, start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._writer_main, args=(ready,),
                                        name="peeps-web-writer", daemon=True)
        self._thread.start()
        ready.result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._jobs.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _writer_main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            # A URI connection, so that ATTACH understands the staged replies' memdb URIs.
            conn = sqlite3.connect(self.path.as_uri(), uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(SCHEMA)
            self.recovered_snapshots = _recover(conn)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            while True:
                job = self._jobs.get()
                if job is _STOP:
                    break
                fn, future, attach = job
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    result = self._run_job(conn, fn, attach)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
        finally:
            with contextlib.suppress(sqlite3.Error):  # best effort on shutdown
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()

    @staticmethod
    def _run_job(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T],
                 attach: tuple[str, str] | None) -> T:
        if attach is not None:  # ATTACH is refused inside a transaction
            conn.execute("ATTACH DATABASE ? AS " + attach[1], (attach[0],))
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result
        finally:
            if attach is not None:
                try:
                    conn.execute("DETACH DATABASE " + attach[1])
                except sqlite3.Error:
                    log.exception("could not detach %s", attach[1])

    # -- running work ------------------------------------------------------------

    def submit(self, fn: Callable[[sqlite3.Connection], T], *,
               attach: tuple[str, str] | None = None) -> concurrent.futures.Future[T]:
        if self._closed:
            raise StoreClosed("store is closed")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((fn, future, attach))
        return future

    async def write(self, fn: Callable[[sqlite3.Connection], T], *,
                    attach: tuple[str, str] | None = None) -> T:
        """Run ``fn(conn)`` in one transaction on the writer thread.

        ``attach=(uri, schema)`` attaches that database for the job's duration
        (a staged reply, see ``_staging``).
        """
        return await asyncio.wrap_future(self.submit(fn, attach=attach))

    def connect_readonly(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a fresh read-only connection in a worker thread."""

        def run() -> T:
            conn = self.connect_readonly()
            try:
                return fn(conn)
            finally:
                conn.close()

        return await asyncio.to_thread(run)

    # -- write jobs (run on the writer thread) --------------------------------------

    def record_ingest_event(self, kind: str, *, proc_key: str | None, peer: str | None,
                            detail: str | None) -> None:
        """Fire-and-forget: an ingest event must never hold up ingest."""
        ts_ns = time.time_ns()

        # Connection churn must not grow the table without bound between snapshots.
        self._ingest_events_since_trim += 1
        trim = self._ingest_events_since_trim >= max(100, self.retain_ingest_events // 10)
        if trim:
            self._ingest_events_since_trim = 0
        keep = self.retain_ingest_events

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO ingest_events (ts_ns, proc_key, peer, kind, detail) VALUES (?,?,?,?,?)",
                (ts_ns, proc_key, peer, kind, detail[:2000] if detail else detail),
            )
            if trim:
                trim_ingest_events(conn, keep)

        if not self._closed:
            self.submit(job)


def _recover(conn: sqlite3.Connection) -> int:
    """Mark snapshots a crash left ``in_progress`` as ``incomplete``."""
    conn.execute("BEGIN IMMEDIATE")
    cur = conn.execute("UPDATE snapshots SET status = 'incomplete' WHERE status = 'in_progress'")
    count = cur.rowcount
    conn.execute("UPDATE snapshot_processes SET status = 'incomplete', "
                 "error = coalesce(error, 'server stopped before this process answered') "
                 "WHERE status = 'pending'")
    conn.execute("COMMIT")
    if count:
        log.warning("marked %d interrupted snapshot(s) incomplete", count)
    return count


# -- write jobs ----------------------------------------------------------------------


def begin_snapshot(conn: sqlite3.Connection, *, trigger: str, requested_at_ns: int,
                   processes: Iterable[tuple[str, str, int]]) -> int:
    procs = list(processes)
    cur = conn.execute(
        "INSERT INTO snapshots (requested_at_ns, captured_at_ns, status, trigger, requested) "
        "VALUES (?, ?, 'in_progress', ?, ?)",
        (requested_at_ns, requested_at_ns, trigger, len(procs)),
    )
    snapshot_id = cur.lastrowid
    assert snapshot_id is not None
    conn.executemany(
        "INSERT INTO snapshot_processes (snapshot_id, proc_key, process_name, pid, status) "
        "VALUES (?, ?, ?, ?, 'pending')",
        [(snapshot_id, proc_key, name, pid) for proc_key, name, pid in procs],
    )
    return int(snapshot_id)


def store_reply(conn: sqlite3.Connection, *, snapshot_id: int, proc_key: str,
                responded_at_ns: int, captured_at_ns: int | None, error: str | None,
                nodes: list[tuple[str, str, str, str]], edges: list[tuple[str, str, str, str]],
                events: list[tuple[int, int, str, str, str | None, str]]) -> None:
    conn.executemany(
        "INSERT INTO nodes (snapshot_id, proc_key, id, kind, label, attrs_json) VALUES (?,?,?,?,?,?)",
        [(snapshot_id, proc_key, *n) for n in nodes],
    )
    conn.executemany(
        "INSERT INTO edges (snapshot_id, proc_key, src, dst, kind, attrs_json) VALUES (?,?,?,?,?,?)",
        [(snapshot_id, proc_key, *e) for e in edges],
    )
    conn.executemany(
        "INSERT INTO events (snapshot_id, proc_key, id, ts_ns, entity_id, name, parent_entity_id, "
        "attrs_json) VALUES (?,?,?,?,?,?,?,?)",
        [(snapshot_id, proc_key, *ev) for ev in events],
    )
    conn.execute(
        "UPDATE snapshot_processes SET status = 'responded', error = ?, responded_at_ns = ?, "
        "captured_at_ns = ?, node_count = ?, edge_count = ?, event_count = ? "
        "WHERE snapshot_id = ? AND proc_key = ?",
        (error, responded_at_ns, captured_at_ns, len(nodes), len(edges), len(events),
         snapshot_id, proc_key),
    )


def finish_snapshot(conn: sqlite3.Connection, *, snapshot_id: int, completed_at_ns: int,
                    outcomes: dict[str, tuple[str, str | None]], retain: int,
                    retain_ingest_events: int) -> dict[str, Any]:
    """Record non-responded outcomes, the final status, then apply retention."""
    conn.executemany(
        "UPDATE snapshot_processes SET status = ?, error = ? "
        "WHERE snapshot_id = ? AND proc_key = ? AND status = 'pending'",
        [(status, error, snapshot_id, proc_key) for proc_key, (status, error) in outcomes.items()
         if status != "responded"],
    )
    counts = dict.fromkeys(("responded", "timeout", "disconnected", "error"), 0)
    for (status,) in conn.execute(
        "SELECT status FROM snapshot_processes WHERE snapshot_id = ?", (snapshot_id,)
    ):
        counts[status] = counts.get(status, 0) + 1
    requested = sum(counts.values())
    status = "complete" if counts["responded"] == requested else "partial"
    conn.execute(
        "UPDATE snapshots SET completed_at_ns = ?, status = ?, responded = ?, timed_out = ?, "
        "disconnected = ?, errored = ? WHERE snapshot_id = ?",
        (completed_at_ns, status, counts["responded"], counts["timeout"], counts["disconnected"],
         counts["error"], snapshot_id),
    )
    apply_retention(conn, retain=retain, retain_ingest_events=retain_ingest_events)
    return {"status": status, "requested": requested, **counts}


def apply_retention(conn: sqlite3.Connection, *, retain: int, retain_ingest_events: int) -> int:
    row = conn.execute(
        "SELECT snapshot_id FROM snapshots ORDER BY snapshot_id DESC LIMIT 1 OFFSET ?", (retain - 1,)
    ).fetchone()
    deleted = 0
    if row is not None:
        oldest_kept = int(row[0])
        for table in SNAPSHOT_TABLES:
            cur = conn.execute(f"DELETE FROM {table} WHERE snapshot_id < ?", (oldest_kept,))
            if table == "snapshots":
                deleted = cur.rowcount
    trim_ingest_events(conn, retain_ingest_events)
    return deleted


def trim_ingest_events(conn: sqlite3.Connection, keep: int) -> None:
    row = conn.execute(
        "SELECT id FROM ingest_events ORDER BY id DESC LIMIT 1 OFFSET ?", (keep - 1,)
    ).fetchone()
    if row is not None:
        conn.execute("DELETE FROM ingest_events WHERE id < ?", (int(row[0]),))


# -- read helpers (run on read-only connections) ----------------------------------------


def snapshot_record(row: sqlite3.Row) -> dict[str, Any]:
    return {name: row[name] for name in SNAPSHOT_COLUMNS}


def list_snapshots(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT {', '.join(SNAPSHOT_COLUMNS)} FROM snapshots ORDER BY snapshot_id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [snapshot_record(r) for r in rows]


def get_snapshot(conn: sqlite3.Connection, snapshot_id: int) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {', '.join(SNAPSHOT_COLUMNS)} FROM snapshots WHERE snapshot_id = ?", (snapshot_id,)
    ).fetchone()
    return None if row is None else snapshot_record(row)


def get_processes(conn: sqlite3.Connection, snapshot_id: int) -> list[dict[str, Any]]:
    rows = conn.execute(
        f"SELECT {', '.join(PROCESS_COLUMNS)} FROM snapshot_processes WHERE snapshot_id = ? "
        "ORDER BY proc_key",
        (snapshot_id,),
    ).fetchall()
    return [{name: r[name] for name in PROCESS_COLUMNS} for r in rows]


def get_graph(conn: sqlite3.Connection, snapshot_id: int
              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = [
        {"proc_key": r["proc_key"], "id": r["id"], "kind": r["kind"], "label": r["label"],
         "attrs": json.loads(r["attrs_json"])}
        for r in conn.execute(
            "SELECT proc_key, id, kind, label, attrs_json FROM nodes WHERE snapshot_id = ? "
            "ORDER BY rowid", (snapshot_id,))
    ]
    edges = [
        {"proc_key": r["proc_key"], "src": r["src"], "dst": r["dst"], "kind": r["kind"],
         "attrs": json.loads(r["attrs_json"])}
        for r in conn.execute(
            "SELECT proc_key, src, dst, kind, attrs_json FROM edges WHERE snapshot_id = ? "
            "ORDER BY rowid", (snapshot_id,))
    ]
    return nodes, edges


def get_events(conn: sqlite3.Connection, snapshot_id: int, *, entity_id: str | None,
               proc_key: str | None, limit: int) -> list[dict[str, Any]]:
    sql = ("SELECT proc_key, id, ts_ns, entity_id, name, parent_entity_id, attrs_json FROM events "
           "WHERE snapshot_id = ?")
    params: list[Any] = [snapshot_id]
    if entity_id is not None:
        sql += " AND (entity_id = ? OR parent_entity_id = ?)"
        params += [entity_id, entity_id]
    if proc_key is not None:
        sql += " AND proc_key = ?"
        params.append(proc_key)
    sql += " ORDER BY ts_ns, id LIMIT ?"
    params.append(limit)
    return [
        {"proc_key": r["proc_key"], "id": r["id"], "ts_ns": r["ts_ns"], "entity_id": r["entity_id"],
         "name": r["name"], "parent_entity_id": r["parent_entity_id"],
         "attrs": json.loads(r["attrs_json"])}
        for r in conn.execute(sql, params)
    ]


def get_all_events(conn: sqlite3.Connection, snapshot_id: int) -> list[dict[str, Any]]:
    return get_events(conn, snapshot_id, entity_id=None, proc_key=None, limit=-1)


def last_snapshot_id(conn: sqlite3.Connection) -> int | None:
    row = conn.execute("SELECT max(snapshot_id) FROM snapshots").fetchone()
    return None if row is None or row[0] is None else int(row[0])
