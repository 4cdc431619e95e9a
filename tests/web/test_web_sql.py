"""The SQL sandbox: read-only, one statement, one snapshot, bounded in time and size.

Every hostile query must be refused or cut off with a clear message, and leave
the database file byte-for-byte unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web_support import FakeProcess, WebServer, sample_graph


def other_graph(proc_key: str) -> dict[str, Any]:
    graph = sample_graph(proc_key)
    graph["nodes"][0]["label"] = "second_snapshot_task"
    return graph


@pytest.fixture(scope="module")
def sql_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebServer, int, int]]:
    """One server holding two snapshots with different contents."""
    server = WebServer(tmp_path_factory.mktemp("sql"),
                       args=["--sql-timeout-ms", "500", "--sql-max-rows", "1000",
                             "--sql-max-bytes", "2000000", "--snapshot-timeout-ms", "2000"])
    server.start()
    try:
        first = FakeProcess(server, "sql-1").serve()
        server.wait_connected(1)
        sid1 = server.jump()["snapshot_id"]
        first.graph = other_graph
        sid2 = server.jump()["snapshot_id"]
        first.close()
        server.wait_connected(0)
        # Let the writer go idle so the file is stable for digests.
        time.sleep(0.2)
        yield server, sid1, sid2
    finally:
        server.stop()


REFUSED: list[tuple[str, int, str]] = [
    # writes and DDL
    ("INSERT INTO nodes (id) VALUES ('x')", 403, "only SELECT statements are allowed"),
    ("INSERT INTO main.nodes VALUES (1, 'p', 'i', 'k', 'l', '{}')", 403, "insert"),
    ("REPLACE INTO main.snapshots (snapshot_id, requested_at_ns, status, trigger) "
     "VALUES (99, 0, 'x', 'y')", 403, "only SELECT"),
    ("UPDATE nodes SET label = 'x'", 403, "only SELECT"),
    ("UPDATE main.nodes SET label = 'x'", 403, "update"),
    ("DELETE FROM nodes", 403, "only SELECT"),
    ("DELETE FROM main.events", 403, "delete"),
    ("DROP TABLE main.nodes", 403, "only SELECT"),
    ("DROP VIEW nodes", 403, "only SELECT"),
    ("CREATE TABLE x (a)", 403, "only SELECT"),
    ("CREATE TEMP TABLE x (a)", 403, "only SELECT"),
    ("CREATE TEMP VIEW leak AS SELECT * FROM main.nodes", 403, "only SELECT"),
    ("CREATE INDEX i ON nodes (id)", 403, "only SELECT"),
    ("CREATE TRIGGER t AFTER INSERT ON main.nodes BEGIN SELECT 1; END", 403, "only SELECT"),
    ("ALTER TABLE main.nodes ADD COLUMN z", 403, "only SELECT"),
    # other databases
    ("ATTACH DATABASE '/tmp/peeps-evil.sqlite' AS evil", 403, "attach"),
    ("ATTACH ':memory:' AS m", 403, "attach"),
    ("DETACH DATABASE temp", 403, "detach"),
    ("VACUUM INTO '/tmp/peeps-copy.sqlite'", 403, "only SELECT"),
    # pragmas, reads and writes
    ("PRAGMA journal_mode = DELETE", 403, "pragma"),
    ("PRAGMA writable_schema = 1", 403, "pragma"),
    ("PRAGMA query_only = 0", 403, "pragma"),
    ("PRAGMA table_info(nodes)", 403, "pragma"),
    ("PRAGMA database_list", 403, "pragma"),
    ("SELECT * FROM pragma_table_info('nodes')", 403, "only SELECT"),
    ("SELECT * FROM pragma_database_list", 403, "only SELECT"),
    # transactions and maintenance
    ("BEGIN", 403, "transaction"),
    ("COMMIT", 403, "transaction"),
    ("SAVEPOINT a", 403, "savepoint"),
    ("VACUUM", 403, "only SELECT"),
    ("REINDEX", 403, "reindex"),
    ("ANALYZE", 403, "analyze"),
    # extensions and file access
    ("SELECT load_extension('/tmp/evil.so')", 403, "load_extension"),
    ("SELECT load_extension('libc.so.6', 'system')", 403, "load_extension"),
    ("SELECT writefile('/tmp/peeps-x', 'a')", 400, "no such function"),
    ("SELECT readfile('/etc/passwd')", 400, "no such function"),
    # several statements, comment tricks
    ("SELECT 1; DROP TABLE main.nodes", 400, "only one statement"),
    ("SELECT 1; SELECT 2", 400, "only one statement"),
    ("SELECT * FROM nodes /* ; */; DELETE FROM main.nodes", 400, "only one statement"),
    ("SELECT 1 -- harmless\n; DELETE FROM main.nodes", 400, "only one statement"),
    ("/* SELECT */ DELETE FROM main.nodes", 403, "delete"),
    ("-- SELECT\nDROP TABLE main.edges", 403, "only SELECT"),
    # around the views
    ("SELECT * FROM main.nodes", 403, "reading main.nodes directly"),
    ("SELECT count(*) FROM main.edges", 403, "reading main.edges directly"),
    ("SELECT * FROM main.snapshots", 403, "reading main.snapshots directly"),
    ("SELECT * FROM ingest_events", 403, "reading main.ingest_events directly"),
    ("SELECT * FROM sqlite_master", 403, "sqlite_master"),
    ("SELECT * FROM sqlite_schema", 403, "directly"),
    ("SELECT * FROM sqlite_temp_master", 403, "directly"),
    ("WITH nodes AS (SELECT * FROM main.nodes) SELECT * FROM nodes", 403, "directly"),
    ("WITH snapshot AS (SELECT * FROM main.snapshots) SELECT * FROM snapshot", 403, "directly"),
    ("SELECT * FROM (SELECT * FROM main.nodes)", 403, "directly"),
    ("SELECT (SELECT count(*) FROM main.nodes)", 403, "directly"),
    ("SELECT * FROM nodes WHERE id IN (SELECT id FROM main.nodes)", 403, "directly"),
    ("SELECT * FROM nodes WHERE snapshot_id = 1", 400, "no such column"),
    ("SELECT * FROM json_each((SELECT group_concat(attrs_json) FROM main.nodes))", 403,
     "reading main.nodes directly"),
    ("SELECT * FROM pragma_function_list", 403, "only SELECT"),
    ("SELECT * FROM dbstat", 403, "only SELECT"),
    ("SELECT * FROM sqlite_dbpage", 400, "no such table"),
    # not SQL at all
    ("", 400, "sql is empty"),
    ("   ", 400, "sql is empty"),
    ("SELEKT 1", 400, "syntax error"),
]


@pytest.mark.parametrize(("sql", "status", "message"), REFUSED,
                         ids=[f"{i:02d}-{c[0][:40]}" for i, c in enumerate(REFUSED)])
def test_hostile_query_is_refused(sql_server: tuple[WebServer, int, int], sql: str, status: int,
                                  message: str) -> None:
    server, sid, _ = sql_server
    before = server.db_digest()
    got_status, body = server.sql(sid, sql)
    assert got_status == status, body
    assert set(body) == {"error"} and body["error"]["status"] == status
    assert message.lower() in body["error"]["message"].lower(), body
    assert server.db_digest() == before
    # The views are still intact afterwards (each query has its own connection).
    assert server.rows(sid, "SELECT count(*) AS n FROM nodes") == [{"n": 2}]


CUT_OFF: list[tuple[str, int, str]] = [
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
     408, "500 ms time limit"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
     "SELECT count(*) FROM c AS a, c AS b", 408, "time limit"),
    ("SELECT randomblob(2000000000)", 413, "byte limit"),
    ("SELECT zeroblob(2000000000)", 413, "byte limit"),
    ("SELECT replace(hex(zeroblob(900000)), '0', 'aaaaaaaaaa')", 413, "byte limit"),
]


@pytest.mark.parametrize(("sql", "status", "message"), CUT_OFF,
                         ids=[f"{i:02d}-{c[0][:40]}" for i, c in enumerate(CUT_OFF)])
def test_bombs_are_cut_off(sql_server: tuple[WebServer, int, int], sql: str, status: int,
                           message: str) -> None:
    server, sid, _ = sql_server
    before = server.db_digest()
    started = time.monotonic()
    got_status, body = server.sql(sid, sql)
    assert time.monotonic() - started < 5
    assert got_status == status, body
    assert message in body["error"]["message"]
    assert server.db_digest() == before


def test_huge_result_is_truncated_by_rows(sql_server: tuple[WebServer, int, int]) -> None:
    server, sid, _ = sql_server
    status, body = server.sql(sid, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                   "FROM c LIMIT 100000) SELECT x FROM c")
    assert status == 200
    assert body["truncated"] is True and body["row_count"] == 1000 == len(body["rows"])
    assert body["rows"][:3] == [[1], [2], [3]]


def test_huge_result_is_truncated_by_bytes(sql_server: tuple[WebServer, int, int]) -> None:
    server, sid, _ = sql_server
    status, body = server.sql(sid, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                                   "FROM c LIMIT 50) SELECT x, hex(zeroblob(100000)) FROM c")
    assert status == 200 and body["truncated"] is True
    assert 5 <= body["row_count"] < 50


def test_queries_see_only_their_snapshot(sql_server: tuple[WebServer, int, int]) -> None:
    server, sid1, sid2 = sql_server
    labels1 = {r["label"] for r in server.rows(sid1, "SELECT label FROM nodes")}
    labels2 = {r["label"] for r in server.rows(sid2, "SELECT label FROM temp.nodes")}
    assert labels1 == {"bounded_sender", "demo.work_queue"}
    assert labels2 == {"second_snapshot_task", "demo.work_queue"}
    assert server.rows(sid1, "SELECT snapshot_id FROM snapshot") == [{"snapshot_id": sid1}]
    assert server.rows(sid2, "SELECT count(*) AS n FROM snapshot_processes") == [{"n": 1}]


def test_useful_queries(sql_server: tuple[WebServer, int, int]) -> None:
    server, sid, _ = sql_server
    blocked = server.rows(sid, """
        SELECT t.label AS task, c.label AS channel, json_extract(e.attrs, '$.op') AS op
        FROM edges e JOIN nodes t ON t.id = e.src JOIN nodes c ON c.id = e.dst
        WHERE e.kind = 'needs' AND c.kind = 'channel'
          AND json_extract(c.attrs, '$.depth') >= json_extract(c.attrs, '$.capacity')""")
    assert blocked == [{"task": "bounded_sender", "channel": "demo.work_queue", "op": "send"}]
    recursive = server.rows(sid, """
        WITH RECURSIVE chain(id, depth) AS (
            SELECT id, 0 FROM nodes WHERE label = 'bounded_sender'
            UNION SELECT e.dst, chain.depth + 1 FROM chain JOIN edges e ON e.src = chain.id
                  WHERE e.kind = 'needs')
        SELECT id, depth FROM chain ORDER BY depth""")
    assert [r["depth"] for r in recursive] == [0, 1]
    # Table-valued JSON functions work on the views' attrs.
    keys = server.rows(sid, """
        SELECT DISTINCT j.key FROM nodes n, json_each(n.attrs) j
        WHERE n.kind = 'channel' ORDER BY j.key""")
    assert [r["key"] for r in keys] == ["blocked_receivers", "blocked_senders", "capacity",
                                        "closed", "depth", "received", "sent"]


def test_params_positional_and_named(sql_server: tuple[WebServer, int, int]) -> None:
    server, sid, _ = sql_server
    assert server.rows(sid, "SELECT ? AS a, ? AS b", [1, "x"]) == [{"a": 1, "b": "x"}]
    status, body = server.request("POST", "/api/sql", {"snapshot_id": sid,
                                                       "sql": "SELECT :k AS k",
                                                       "params": {"k": 2.5}})
    assert status == 200 and body["rows"] == [[2.5]]
    status, body = server.request("POST", "/api/sql", {"snapshot_id": sid, "sql": "SELECT ?",
                                                       "params": [[1]]})
    assert status == 400 and "params" in body["error"]["message"]
    status, body = server.sql(sid, "SELECT ?", [])
    assert status == 400 and "incorrect number of bindings" in body["error"]["message"].lower()


def test_blobs_come_back_as_base64(sql_server: tuple[WebServer, int, int]) -> None:
    server, sid, _ = sql_server
    assert server.rows(sid, "SELECT x'00ff' AS b") == [{"b": {"$blob_base64": "AP8="}}]


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"snapshot_id": 999999, "sql": "SELECT 1"}, 404, "snapshot 999999 does not exist"),
    ({"snapshot_id": -1, "sql": "SELECT 1"}, 404, "does not exist"),
    ({"snapshot_id": "1", "sql": "SELECT 1"}, 400, "snapshot_id must be an integer"),
    ({"snapshot_id": True, "sql": "SELECT 1"}, 400, "snapshot_id must be an integer"),
    ({"snapshot_id": 1}, 400, "sql must be a string"),
    ([1, 2], 400, "must be a JSON object"),
])
def test_bad_requests(sql_server: tuple[WebServer, int, int], body: Any, status: int,
                      message: str) -> None:
    server, _, _ = sql_server
    got, payload = server.request("POST", "/api/sql", body)
    assert got == status and message in payload["error"]["message"]


def test_body_that_is_not_json(sql_server: tuple[WebServer, int, int]) -> None:
    server, _, _ = sql_server
    got, payload = server.request("POST", "/api/sql", raw=b"{not json")
    assert got == 400 and payload["error"]["message"] == "request body must be JSON"


SQL_WORDS = ["SELECT", "*", "FROM", "nodes", "edges", "main.nodes", "temp.nodes", "sqlite_master",
             "WHERE", "1", "=", "(", ")", ",", ";", "--", "/*", "*/", "UNION", "ALL", "WITH",
             "RECURSIVE", "x", "AS", "INSERT", "INTO", "VALUES", "DELETE", "UPDATE", "SET",
             "DROP", "TABLE", "CREATE", "VIEW", "ATTACH", "'file.db'", "PRAGMA", "journal_mode",
             "load_extension('x')", "randomblob(100)", "json_each(attrs)", "snapshot",
             "count(*)", "id", "attrs", "ORDER", "BY", "LIMIT", "10", "'", "\"", "BEGIN",
             "COMMIT", "VACUUM", "JOIN", "ON", "src", "dst", "snapshot_id", "rowid", "?"]


@settings(max_examples=int(os.environ.get("PEEPS_FUZZ_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(SQL_WORDS), min_size=1, max_size=14))
def test_random_statements_never_break_the_sandbox(sql_server: tuple[WebServer, int, int],
                                                   words: list[str]) -> None:
    server, sid, _ = sql_server
    status, body = server.sql(sid, " ".join(words))
    assert status in (200, 400, 403, 408, 413), body
    if status != 200:
        assert set(body) == {"error"}


def test_fuzzing_left_the_database_unchanged(sql_server: tuple[WebServer, int, int]) -> None:
    server, sid, _ = sql_server
    assert server.rows(sid, "SELECT count(*) AS n FROM nodes") == [{"n": 2}]
    assert server.db_rows("SELECT count(*) FROM main.nodes") == [(4,)]
    assert server.db_rows("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") == [
        ("edges",), ("events",), ("ingest_events",), ("nodes",), ("snapshot_processes",),
        ("snapshots",), ("sqlite_sequence",)]
