"""Server: snapshot ingest end to end against SQLite's own insert speed, and
``/api/sql`` latency on a database holding many snapshots.

    python bench/bench_server.py -o bench/results/server.json [--quick]

* ingest: a real ``peeps-web`` (``python -m peeps.web``) and, in a separate
  process, P raw wire-protocol clients (default 20) that say hello and answer
  every ``snapshot_request`` with a prebuilt ``graph_reply`` of N nodes
  (default 10,000; as many edges; 1,000 events).  Timed: ``POST /api/jump-now``
  until its response, which the server sends after every reply is committed;
  each timed snapshot is then checked to hold every row.
* bare: the same rows (the store's row tuples, attrs already JSON text) inserted
  with ``executemany`` into a fresh database with the server's schema and
  pragmas, one transaction per process as the store does.  The ratio of the two
  is how close ingest gets to SQLite's own limit.
* ``/api/sql``: the server's database is filled to S snapshots (default 100)
  by copying the ingested rows in SQL, then queries run through the HTTP API.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import WebServer, median, row, spread_text, write_result

SECTION = "4. server"


# -- the synthetic graph --------------------------------------------------------------------


def build_graph(proc_key: str, pid: int, n_nodes: int, n_events: int) -> dict[str, Any]:
    """A graph shaped like a real one: half tasks blocked on half channels."""
    now = time.time_ns()
    half = n_nodes // 2
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for i in range(half):
        nodes.append({"id": f"task:{pid}:{2 * i}", "kind": "task", "label": f"handler-{i}",
                      "attrs": {"meta": {"ctx.location": "/srv/app/handlers.py:118",
                                         "request_id": f"r-{i:08d}"},
                                "created_at_ns": now - 5_000_000_000, "age_ns": 5_000_000_000,
                                "state": "pending", "name": f"handler-{i}",
                                "coro": "handle_request", "tracked": True,
                                "stack": ["/srv/app/handlers.py:131 in handle_request",
                                          "/srv/app/db.py:52 in query",
                                          "/usr/lib/python3.11/asyncio/queues.py:158 in get"]}})
        nodes.append({"id": f"channel:{pid}:{2 * i + 1}", "kind": "channel",
                      "label": f"replies-{i}",
                      "attrs": {"meta": {"ctx.location": "/srv/app/db.py:40"},
                                "created_at_ns": now - 9_000_000_000, "age_ns": 9_000_000_000,
                                "capacity": 16, "depth": 0, "sent": 1200 + i, "received": 1200 + i,
                                "blocked_senders": 0, "blocked_receivers": 1, "closed": False}})
        edges.append({"src": f"task:{pid}:{2 * i}", "dst": f"channel:{pid}:{2 * i + 1}",
                      "kind": "needs", "attrs": {"op": "recv", "since_ns": now - 1_000_000,
                                                 "waited_ns": 1_000_000}})
        edges.append({"src": f"task:{pid}:{2 * (i // 2)}", "dst": f"task:{pid}:{2 * i}",
                      "kind": "spawned", "attrs": {}})
    events = [{"id": i, "ts_ns": now - i * 1000, "proc_key": proc_key,
               "entity_id": f"channel:{pid}:{2 * (i % half) + 1}", "name": "channel.send.blocked",
               "parent_entity_id": f"task:{pid}:{2 * (i % half)}", "attrs": {"depth": 16}}
              for i in range(n_events)]
    return {"process_name": "bench-proc", "proc_key": proc_key, "pid": pid,
            "captured_at_ns": now, "nodes": nodes, "edges": edges, "events": events}


def store_rows(graph: dict[str, Any]) -> tuple[list[tuple[Any, ...]], ...]:
    """The row tuples the store inserts (what ``_validate`` produces)."""

    def dump(attrs: Any) -> str:
        return json.dumps(attrs, separators=(",", ":"))

    nodes = [(n["id"], n["kind"], n["label"], dump(n["attrs"])) for n in graph["nodes"]]
    edges = [(e["src"], e["dst"], e["kind"], dump(e["attrs"])) for e in graph["edges"]]
    events = [(e["id"], e["ts_ns"], e["entity_id"], e["name"], e["parent_entity_id"],
               dump(e["attrs"])) for e in graph["events"]]
    return nodes, edges, events


# -- raw wire-protocol clients (a separate process) ------------------------------------------


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def _client(addr: tuple[str, int], index: int, n_nodes: int, n_events: int,
            ready: threading.Barrier) -> None:
    pid = 500000 + index
    proc_key = f"bench-proc-{index}-{pid}"
    graph = json.dumps(build_graph(proc_key, pid, n_nodes, n_events),
                       separators=(",", ":")).encode()
    head = b'{"type":"graph_reply","snapshot_id":'
    tail = (f',"process":"bench-proc-{index}","pid":{pid},"graph":').encode() + graph + b"}"
    sock = socket.create_connection(addr)
    hello = {"type": "hello", "protocol_version": 1, "process_name": f"bench-proc-{index}",
             "pid": pid, "proc_key": proc_key, "peeps_version": "bench"}
    sock.sendall(_frame(json.dumps(hello).encode()))
    ready.wait()
    buf = b""
    while True:
        while len(buf) < 4:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        (length,) = struct.unpack(">I", buf[:4])
        while len(buf) < 4 + length:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        message = json.loads(buf[4:4 + length])
        buf = buf[4 + length:]
        if message.get("type") == "snapshot_request":
            body = head + str(message["snapshot_id"]).encode() + tail
            sock.sendall(_frame(body))


def clients_main(addr: str, procs: int, n_nodes: int, n_events: int) -> None:
    host, _, port = addr.rpartition(":")
    barrier = threading.Barrier(procs + 1)
    threads = [threading.Thread(target=_client, args=((host, int(port)), i, n_nodes, n_events,
                                                      barrier), daemon=True)
               for i in range(procs)]
    for t in threads:
        t.start()
    barrier.wait()
    print("clients ready", flush=True)
    sys.stdin.read()  # run until the parent closes our stdin


# -- orchestration ------------------------------------------------------------------------------


class _WebServer(WebServer):
    def __init__(self, db: Path) -> None:
        super().__init__(db, PEEPS_SNAPSHOT_TIMEOUT_MS="120000", PEEPS_LOG_LEVEL="WARNING")

    def connected(self) -> int:
        return len(self.call("GET", "/api/processes")["processes"])


def bare_insert(db: Path, rows_per_proc: list[tuple[str, tuple[list[Any], ...]]],
                snapshot_id: int) -> float:
    from peeps.web._store import SCHEMA

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    t0 = time.perf_counter()
    for proc_key, (nodes, edges, events) in rows_per_proc:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO nodes (snapshot_id, proc_key, id, kind, label, attrs_json) "
                         "VALUES (?,?,?,?,?,?)", [(snapshot_id, proc_key, *n) for n in nodes])
        conn.executemany("INSERT INTO edges (snapshot_id, proc_key, src, dst, kind, attrs_json) "
                         "VALUES (?,?,?,?,?,?)", [(snapshot_id, proc_key, *e) for e in edges])
        conn.executemany("INSERT INTO events (snapshot_id, proc_key, id, ts_ns, entity_id, name, "
                         "parent_entity_id, attrs_json) VALUES (?,?,?,?,?,?,?,?)",
                         [(snapshot_id, proc_key, *e) for e in events])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def check_ingested(db: Path, snapshot_ids: list[int], nodes: int, edges: int, events: int) -> None:
    """Every timed snapshot holds every row: the timing is of complete ingests."""
    conn = sqlite3.connect(db)
    try:
        for sid in snapshot_ids:
            got = tuple(conn.execute(f"SELECT count(*) FROM {table} WHERE snapshot_id = ?",
                                     (sid,)).fetchone()[0]
                        for table in ("nodes", "edges", "events"))
            if got != (nodes, edges, events):
                raise RuntimeError(f"snapshot {sid} stored {got} rows, expected "
                                   f"{(nodes, edges, events)}")
    finally:
        conn.close()


#: Disk left free while filling the database.
FILL_MARGIN_BYTES = 2 << 30


def fill_snapshots(db: Path, target: int) -> int:
    """Copy the newest snapshot's rows until the database holds ``target``
    snapshots, or as many as fit in the disk's free space (less a margin)."""
    conn = sqlite3.connect(db, isolation_level=None)
    (have,) = conn.execute("SELECT count(*) FROM snapshots").fetchone()
    (src,) = conn.execute("SELECT max(snapshot_id) FROM snapshots").fetchone()
    per_snapshot = db.stat().st_size / max(1, have)
    room = int((shutil.disk_usage(db.parent).free - FILL_MARGIN_BYTES) // per_snapshot)
    if have + room < target:
        print(f"bench_server: room for {max(have, have + room)} of the {target} snapshots "
              f"asked for in {db.parent} ({per_snapshot / 1e6:.0f} MB each); filling to that",
              file=sys.stderr)
        target = max(have, have + room)
    print(f"bench_server: filling the database to {target} snapshots "
          f"(~{per_snapshot * target / 1e9:.0f} GB)", file=sys.stderr, flush=True)
    for _ in range(target - have):
        conn.execute("BEGIN")
        cur = conn.execute("INSERT INTO snapshots (requested_at_ns, captured_at_ns, "
                           "completed_at_ns, status, trigger, requested, responded) "
                           "SELECT requested_at_ns, captured_at_ns, completed_at_ns, status, "
                           "'bench-copy', requested, responded FROM snapshots WHERE snapshot_id=?",
                           (src,))
        sid = cur.lastrowid
        conn.execute("INSERT INTO snapshot_processes SELECT ?, proc_key, process_name, pid, status, "
                     "error, responded_at_ns, captured_at_ns, node_count, edge_count, event_count "
                     "FROM snapshot_processes WHERE snapshot_id=?", (sid, src))
        for table, cols in (("nodes", "proc_key, id, kind, label, attrs_json"),
                            ("edges", "proc_key, src, dst, kind, attrs_json"),
                            ("events", "proc_key, id, ts_ns, entity_id, name, parent_entity_id, "
                                       "attrs_json")):
            conn.execute(f"INSERT INTO {table} (snapshot_id, {cols}) SELECT ?, {cols} "
                         f"FROM {table} WHERE snapshot_id=?", (sid, src))
        conn.execute("COMMIT")
    (have,) = conn.execute("SELECT count(*) FROM snapshots").fetchone()
    conn.close()
    return int(have)


SQL_QUERIES = {
    "count by kind": "SELECT kind, count(*) FROM nodes GROUP BY kind",
    "point lookup by id": "SELECT id, label, attrs FROM nodes WHERE id = 'task:500003:42'",
    "blocked-on-channel join (README)": (
        "SELECT t.label AS task, json_extract(e.attrs, '$.waited_ns') AS waited_ns, "
        "c.label AS channel FROM edges e JOIN nodes t ON t.id = e.src AND t.proc_key = e.proc_key "
        "JOIN nodes c ON c.id = e.dst AND c.proc_key = e.proc_key "
        "WHERE e.kind = 'needs' AND c.kind = 'channel' LIMIT 100"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd")
    p_cl = sub.add_parser("clients")
    p_cl.add_argument("--addr", required=True)
    p_cl.add_argument("--procs", type=int, required=True)
    p_cl.add_argument("--nodes", type=int, required=True)
    p_cl.add_argument("--events", type=int, required=True)
    parser.add_argument("-o", "--output")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--procs", type=int, default=None)
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--snapshots", type=int, default=None,
                        help="fill the database to this many snapshots for /api/sql")
    args = parser.parse_args()
    if args.cmd == "clients":
        clients_main(args.addr, args.procs, args.nodes, args.events)
        return

    procs = args.procs or (2 if args.quick else 20)
    n_nodes = args.nodes or (1000 if args.quick else 10000)
    n_events = n_nodes // 10
    reps = args.reps or (2 if args.quick else 3)
    # 100 snapshots of 20 x 10k nodes, as the budget asks: ~12 GB, written in
    # ~2 minutes here (disk-bound: SQLite's journal settings made no difference).
    fill_to = args.snapshots or (5 if args.quick else 100)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="peeps-bench-server-") as tmpdir:
        tmp = Path(tmpdir)
        db = tmp / "server.sqlite"
        web = _WebServer(db)
        clients = subprocess.Popen([sys.executable, __file__, "clients", "--addr", web.dashboard,
                                    "--procs", str(procs), "--nodes", str(n_nodes),
                                    "--events", str(n_events)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert clients.stdout is not None
            clients.stdout.readline()
            deadline = time.monotonic() + 60
            while web.connected() < procs:
                if time.monotonic() > deadline:
                    raise RuntimeError("clients did not connect")
                time.sleep(0.1)
            e2e = []
            snapshot_ids = []
            for _ in range(reps):
                t0 = time.perf_counter()
                result = web.call("POST", "/api/jump-now")
                e2e.append(time.perf_counter() - t0)
                if result.get("responded") != procs:
                    raise RuntimeError(f"snapshot incomplete: {result}")
                snapshot_ids.append(result["snapshot_id"])
            print(f"server ingest {procs}x{n_nodes}: {[round(x, 2) for x in e2e]} s",
                  file=sys.stderr)
        finally:
            if clients.stdin:
                clients.stdin.close()
            clients.terminate()
            clients.wait(10)
            web.stop()
        check_ingested(db, snapshot_ids, procs * n_nodes, procs * n_nodes, procs * n_events)

        # The same rows, straight into SQLite.
        per_proc = []
        for i in range(procs):
            pid = 500000 + i
            key = f"bench-proc-{i}-{pid}"
            per_proc.append((key, store_rows(build_graph(key, pid, n_nodes, n_events))))
        bare_db = tmp / "bare.sqlite"
        bare = [bare_insert(bare_db, per_proc, sid + 1) for sid in range(reps)]
        total_rows = procs * sum(len(x) for x in per_proc[0][1])
        print(f"server bare executemany: {[round(x, 2) for x in bare]} s", file=sys.stderr)
        ratio = median(e2e) / median(bare)
        rows.append(row(SECTION, f"ingest {procs} processes × {n_nodes // 1000}k nodes, "
                        "jump-now → committed", median(e2e) * 1e3, "ms",
                        spread=spread_text([x * 1e3 for x in e2e], "{:.0f}"),
                        note=f"{total_rows / median(e2e) / 1e3:.0f}k rows/s"))
        rows.append(row(SECTION, "bare executemany of the same rows", median(bare) * 1e3, "ms",
                        spread=spread_text([x * 1e3 for x in bare], "{:.0f}"),
                        note=f"{total_rows} rows, {total_rows / median(bare) / 1e3:.0f}k rows/s"))
        rows.append(row(SECTION, "ingest vs bare executemany", ratio, "×", baseline="bare",
                        target="≤ 1.5", ok=ratio <= 1.5))

        # /api/sql on a database holding many snapshots.
        t0 = time.perf_counter()
        have = fill_snapshots(db, fill_to)
        fill_s = time.perf_counter() - t0
        size_mb = db.stat().st_size / 1e6
        web = _WebServer(db)
        try:
            snaps = web.call("GET", "/api/snapshots?limit=1000")["snapshots"]
            ids = [s["snapshot_id"] for s in snaps]
            for label, sql in SQL_QUERIES.items():
                times = []
                for i in range(10):
                    sid = ids[i % len(ids)] if i % 2 else ids[-1 - (i % len(ids))]
                    t0 = time.perf_counter()
                    res = web.call("POST", "/api/sql", {"snapshot_id": sid, "sql": sql})
                    times.append(time.perf_counter() - t0)
                    assert "rows" in res, res
                rows.append(row(SECTION, f"/api/sql {label}, DB of {have} snapshots",
                                median(times) * 1e3, "ms",
                                spread=spread_text([x * 1e3 for x in times], "{:.1f}"),
                                note=f"{size_mb:.0f} MB database; filled in {fill_s:.0f} s"))
        finally:
            web.stop()
    if args.output:
        write_result(args.output, "server", rows, quick=args.quick,
                     meta={"e2e_s": e2e, "bare_s": bare, "procs": procs, "nodes": n_nodes,
                           "events": n_events, "snapshots": have})
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
