"""Run one user SELECT against one snapshot, safely.

Enforcement is SQLite's, not string matching:

* a read-only connection (``mode=ro``) per query;
* TEMP views named like the main tables (``nodes``, ``edges``, ...) scoped to the
  snapshot; the temp schema is searched first, so unqualified names hit the views;
* an authorizer, installed *after* the views exist, allowing only SELECT, READ of
  main tables *through our views*, harmless functions and recursive CTEs;
* a progress-handler deadline, a length limit against blob bombs, and row/byte
  caps on the result (``truncated``).
"""

from __future__ import annotations

import base64
import secrets
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ._store import Store

#: Public view name -> (main table it reads, definition); ``{sid}`` is the snapshot id.
VIEWS: Final[dict[str, tuple[str, str]]] = {
    "nodes": ("nodes", (
        "SELECT proc_key, id, kind, label, attrs_json AS attrs, "
        "coalesce(json_extract(attrs_json, '$.meta.\"ctx.location\"'), "
        "json_extract(attrs_json, '$.meta.ctx.location')) AS location "
        "FROM main.nodes WHERE snapshot_id = {sid}"
    )),
    "edges": ("edges", (
        "SELECT proc_key, src, dst, kind, attrs_json AS attrs "
        "FROM main.edges WHERE snapshot_id = {sid}"
    )),
    "events": ("events", (
        "SELECT proc_key, id, ts_ns, entity_id, name, parent_entity_id, attrs_json AS attrs "
        "FROM main.events WHERE snapshot_id = {sid}"
    )),
    "snapshot_processes": ("snapshot_processes", (
        "SELECT proc_key, process_name, pid, status, error, responded_at_ns, captured_at_ns, "
        "node_count, edge_count, event_count FROM main.snapshot_processes WHERE snapshot_id = {sid}"
    )),
    "snapshot": ("snapshots", (
        "SELECT snapshot_id, requested_at_ns, captured_at_ns, completed_at_ns, status, trigger, "
        "requested, responded, timed_out, disconnected, errored "
        "FROM main.snapshots WHERE snapshot_id = {sid}"
    )),
}

#: Table-valued functions (eponymous virtual tables) a query may use.
_TABLE_FUNCTIONS: Final = frozenset({"json_each", "json_tree"})

#: Functions that reach outside the database or change its behaviour.
DENIED_FUNCTIONS: Final = frozenset({
    "load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "fts5",
    "sqlite_dbpage", "zipfile", "sqlar_compress", "sqlar_uncompress",
})



class SqlError(Exception):
    """A query the sandbox refuses or that failed; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class SqlLimits:
    timeout_ms: int = 2000
    max_rows: int = 5000
    max_bytes: int = 8 * 1024 * 1024


class _Authorizer:
    """Allow SELECT, harmless functions, recursion, and reads through our views only.

    SQLite reports the innermost view (or CTE!) performing a read, so a user CTE
    named ``nodes`` would look like our view.  Each query therefore reads the main
    tables through *inner* views with a random per-query name the user cannot
    know; the public views select from those.
    """

    def __init__(self, inner_views: dict[str, str]) -> None:
        #: secret inner view name -> the main table it may read
        self.inner_views = inner_views
        self.temp_views = frozenset(VIEWS) | frozenset(inner_views)
        self.denied: list[str] = []

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db_name: str | None,
                 source: str | None) -> int:
        if action == sqlite3.SQLITE_SELECT or action == sqlite3.SQLITE_RECURSIVE:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            # arg1 = table, db_name = its schema (None for CTEs and subqueries, whose own
            # reads are checked separately), source = innermost view or CTE doing the read.
            if db_name is None:
                return sqlite3.SQLITE_OK
            if db_name == "main" and source is not None and self.inner_views.get(source) == arg1:
                return sqlite3.SQLITE_OK
            if db_name == "temp" and arg1 in self.temp_views:
                return sqlite3.SQLITE_OK
            if db_name == "main" and arg1 in _TABLE_FUNCTIONS:
                return sqlite3.SQLITE_OK  # their arguments are authorized on their own
            if db_name == "main" and arg1 == "snapshots" and arg2 == "":
                # A query touching only the rowid (snapshot_id) of our ``snapshot`` view
                # is reported as a column-less read without its view.  It reveals no
                # column, and every snapshot record is public via /api/snapshots anyway.
                return sqlite3.SQLITE_OK
            self.denied.append(f"reading {db_name}.{arg1} directly "
                               "(query the views: nodes, edges, events, snapshot_processes, "
                               "snapshot)")
            return sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_FUNCTION:
            name = (arg2 or "").lower()
            if name in DENIED_FUNCTIONS:
                self.denied.append(f"function {name}()")
                return sqlite3.SQLITE_DENY
            return sqlite3.SQLITE_OK
        what = _ACTION_NAMES.get(action, f"action {action}")
        target = arg1 if action != sqlite3.SQLITE_PRAGMA or arg2 is None else f"{arg1}={arg2}"
        self.denied.append(f"{what} {target}" if target else what)
        return sqlite3.SQLITE_DENY


_ACTIONS: Final = (
    "CREATE_INDEX", "CREATE_TABLE", "CREATE_TEMP_INDEX", "CREATE_TEMP_TABLE",
    "CREATE_TEMP_TRIGGER", "CREATE_TEMP_VIEW", "CREATE_TRIGGER", "CREATE_VIEW", "DELETE",
    "DROP_INDEX", "DROP_TABLE", "DROP_TEMP_INDEX", "DROP_TEMP_TABLE", "DROP_TEMP_TRIGGER",
    "DROP_TEMP_VIEW", "DROP_TRIGGER", "DROP_VIEW", "INSERT", "PRAGMA", "READ", "SELECT",
    "TRANSACTION", "UPDATE", "ATTACH", "DETACH", "ALTER_TABLE", "REINDEX", "ANALYZE",
    "CREATE_VTABLE", "DROP_VTABLE", "FUNCTION", "SAVEPOINT", "RECURSIVE",
)
# Authorizer action codes share values with result codes in the sqlite3 module, so
# the names are listed rather than discovered.
_ACTION_NAMES: Final[dict[int, str]] = {
    getattr(sqlite3, f"SQLITE_{name}"): name.lower().replace("_", " ")
    for name in _ACTIONS if hasattr(sqlite3, f"SQLITE_{name}")
}
#: SQLite's own refusals of writes that reach views (before the authorizer says no).
_WRITE_REFUSALS: Final = ("cannot modify", "may not be indexed", "cannot create", "readonly",
                          "read-only")


def _check_params(params: object) -> Sequence[Any] | Mapping[str, Any]:
    if params is None:
        return ()
    scalars = (str, int, float, type(None))
    if isinstance(params, list):
        if all(isinstance(p, scalars) for p in params):
            return params
    elif isinstance(params, dict) and all(
        isinstance(k, str) and isinstance(v, scalars) for k, v in params.items()
    ):
        return params
    raise SqlError(400, "params must be a list or an object of strings, numbers or nulls")


def _value_size(value: object) -> int:
    if isinstance(value, str | bytes):
        return len(value) + 2
    return 8


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return {"$blob_base64": base64.b64encode(value).decode("ascii")}
    return value


def run_query(store: Store, snapshot_id: int, sql: str, params: object,
              limits: SqlLimits) -> dict[str, Any]:
    """Run ``sql`` scoped to ``snapshot_id``; blocking (call it from a worker thread)."""
    checked_params = _check_params(params)
    if not sql.strip():
        raise SqlError(400, "sql is empty")
    conn = store.connect_readonly()
    conn.row_factory = None
    try:
        if conn.execute("SELECT 1 FROM main.snapshots WHERE snapshot_id = ?",
                        (snapshot_id,)).fetchone() is None:
            raise SqlError(404, f"snapshot {snapshot_id} does not exist")
        secret = secrets.token_hex(16)
        inner_views: dict[str, str] = {}
        for name, (table, body) in VIEWS.items():
            inner = f"scope_{secret}_{name}"
            inner_views[inner] = table
            conn.execute(f"CREATE TEMP VIEW {inner} AS {body.format(sid=int(snapshot_id))}")
            conn.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM temp.{inner}")
        # Table-valued JSON functions are eponymous virtual tables whose first use
        # registers them (an authorizer-visible schema update); register them now.
        conn.execute("SELECT 1 FROM json_each('[]'), json_tree('[]')").fetchall()
        authorizer = _Authorizer(inner_views)
        conn.set_authorizer(authorizer)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, limits.max_bytes)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 100_000)
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        deadline = time.monotonic() + limits.timeout_ms / 1000
        timed_out = False

        def progress() -> int:
            nonlocal timed_out
            if time.monotonic() > deadline:
                timed_out = True
                return 1
            return 0

        conn.set_progress_handler(progress, 1000)
        try:
            cursor = conn.execute(sql, checked_params)
            columns = [d[0] for d in cursor.description or ()]
            if cursor.description is None:
                raise SqlError(400, "only SELECT statements are allowed: the statement returns no rows")
            rows: list[list[object]] = []
            size = 0
            truncated = False
            while True:
                batch = cursor.fetchmany(256)
                if not batch:
                    break
                for row in batch:
                    row_size = sum(_value_size(v) for v in row)
                    if len(rows) >= limits.max_rows or size + row_size > limits.max_bytes:
                        truncated = True
                        break
                    size += row_size
                    rows.append([_jsonable(v) for v in row])
                if truncated:
                    break
        except sqlite3.ProgrammingError as exc:
            if "one statement" in str(exc):
                raise SqlError(400, "only one statement is allowed per query") from None
            raise SqlError(400, f"invalid query: {exc}") from None
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            if timed_out:
                raise SqlError(408, f"query exceeded the {limits.timeout_ms} ms time limit") from None
            if authorizer.denied or "not authorized" in message:
                what = ", ".join(dict.fromkeys(authorizer.denied)) or message
                raise SqlError(403, f"only SELECT statements are allowed: not permitted: {what}"
                               ) from None
            if any(word in message for word in _WRITE_REFUSALS):
                raise SqlError(403, f"only SELECT statements are allowed: {message}") from None
            if "too big" in message:
                raise SqlError(413, f"a value exceeds the {limits.max_bytes} byte limit: {message}"
                               ) from None
            raise SqlError(400, f"SQL error: {message}") from None
        return {"columns": columns, "rows": rows, "row_count": len(rows), "truncated": truncated}
    finally:
        conn.close()
