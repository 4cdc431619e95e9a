"""Large graph replies: unpacked and checked by SQLite, not by Python.

A reply of 10,000 nodes costs Python ~40 ms to decode and as much again to check
and re-encode, all of it holding the GIL, and then the writer thread binds every
row from Python objects.  Here the three long arrays (``nodes``, ``edges``,
``events``) stay text: a worker thread cuts them out of the frame, Python decodes
only the small rest (the header: type, snapshot id, capture time), and SQLite's
JSON functions unpack and check the arrays, the GIL released, into a private
in-memory database.  The writer thread then attaches that database and copies the
rows with ``INSERT ... SELECT`` (:func:`store_staged_reply`), less work than binding
them.  docs/architecture.md ("Ingest of large replies") has the measurements.

Only a reply that is entirely well-formed is staged.  Any doubt (the arrays are
not where they were looked for, SQLite rejects their JSON, an entry fails a check,
a node id repeats, the text holds escapes SQLite and Python decode differently)
returns ``None`` and the caller takes the Python path (``decode_body`` +
``validate_graph``), which reports exactly what is wrong.  Both paths store the
same rows (``tests/web/test_web_staging.py``); one known difference: inside an
entry, a repeated key (RFC 8259 leaves its meaning open) keeps its first value
here and its last in Python.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any, Final

from ._validate import MAX_ID_CHARS, MAX_LABEL_CHARS

#: The schema name the writer attaches a staged reply under.
STAGED_SCHEMA: Final = "staged"

#: Escapes left to Python's checks: ``\u0000`` (SQLite's ``length`` stops at NUL), a
#: lone UTF-16 surrogate (it decodes to text that is not UTF-8), and escaped printable
#: ASCII, which no encoder writes and which would hide a key from SQLite's lookup
#: (``"l\u0061bel"`` is ``label`` to Python, not to ``->``).
_RISKY_ESCAPE: Final = re.compile(r"\\u(?:[dD][89a-fA-F]|0000|00[2-6]|007[0-9a-eA-E])")
#: Harmless escapes, consumed left to right so that ``\\`` is one escape: a
#: surrogate pair, any other ``\u`` that is not risky, any one-character escape.
_HARMLESS_ESCAPE: Final = re.compile(
    r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
    r"|u(?![dD][89a-fA-F]|0000|00[2-6]|007[0-9a-eA-E])|[^u])")
#: How many of the last ``]`` are tried as the end of the last array.
_LAST_END_TRIES: Final = 4

#: ``->``/``->>`` arrived in SQLite 3.38; older builds always take the Python path.
STAGING_AVAILABLE: Final = sqlite3.sqlite_version_info >= (3, 38, 0)

_names = itertools.count(1)

#: The arrays cut out of the frame and left to SQLite.
_SECTIONS: Final = ("nodes", "edges", "events")

_STAGING_SCHEMA: Final = """
PRAGMA journal_mode = OFF;
PRAGMA synchronous = OFF;
CREATE TABLE nodes (is_object INTEGER, id, kind, label, attrs_json);
CREATE TABLE edges (is_object INTEGER, src, dst, kind, attrs_json);
CREATE TABLE events (is_object INTEGER, id, ts_ns, entity_id, name, parent_entity_id, attrs_json);
"""

# SQLite 3.40 parses a JSON argument again on every call.  So each array is walked
# once, each entry's text materialized, and each field read from it with one call:
# ``->>`` (its SQL value: text for a string, but also for an object or array, which
# then starts with '{' or '[') or ``->`` (its JSON text: a string starts with '"').
# The checks then run on plain columns (_CHECK).

_ENTRIES: Final = ("WITH entry AS MATERIALIZED "
                   "(SELECT type = 'object' AS is_object, value FROM json_each(?))")


_STAGE_NODES: Final = f"""
{_ENTRIES}
INSERT INTO nodes (is_object, id, kind, label, attrs_json)
SELECT is_object, value ->> '$.id', value ->> '$.kind', value -> '$.label', value -> '$.attrs'
FROM entry
"""

_STAGE_EDGES: Final = f"""
{_ENTRIES}
INSERT INTO edges (is_object, src, dst, kind, attrs_json)
SELECT is_object, value ->> '$.src', value ->> '$.dst', value ->> '$.kind', value -> '$.attrs'
FROM entry
"""

_STAGE_EVENTS: Final = f"""
{_ENTRIES}
INSERT INTO events (is_object, id, ts_ns, entity_id, name, parent_entity_id, attrs_json)
SELECT is_object, value -> '$.id', value -> '$.ts_ns', value ->> '$.entity_id',
       value ->> '$.name', value ->> '$.parent_entity_id', value -> '$.attrs'
FROM entry
"""


def _is_id(col: str) -> str:
    """A string of 1..MAX_ID_CHARS (one starting with '{' or '[' is left to Python)."""
    # `> ''`: text and not empty (numbers sort before text); the GLOB: first character.
    return f"({col} > '' AND {col} GLOB '[^[{{]*' AND length({col}) <= {MAX_ID_CHARS})"


def _is_attrs(col: str) -> str:
    return f"({col} IS NULL OR {col} GLOB '{{*')"


def _is_int64(col: str) -> str:
    # Canonical JSON integer text that survives the round trip, -2**63 excluded (as in Python).
    return f"(CAST(CAST({col} AS INTEGER) AS TEXT) = {col} AND {col} <> '-9223372036854775808')"


def _rejected(table: str, checks: list[str]) -> str:
    return f"(SELECT count(*) FROM {table} WHERE (is_object AND {' AND '.join(checks)}) IS NOT 1)"


_NODE_CHECKS: Final = [_is_id("id"), _is_id("kind"),
                       "(label IS NULL OR label GLOB '\"*')", _is_attrs("attrs_json")]
_EDGE_CHECKS: Final = [_is_id("src"), _is_id("dst"), _is_id("kind"), _is_attrs("attrs_json")]
_EVENT_CHECKS: Final = [_is_int64("id"), _is_int64("ts_ns"), _is_id("entity_id"), _is_id("name"),
                        f"(parent_entity_id IS NULL OR {_is_id('parent_entity_id')})",
                        _is_attrs("attrs_json")]

#: Entries failing a check, repeated node ids, and the entry counts.
_CHECK: Final = f"""
SELECT {_rejected('nodes', _NODE_CHECKS)} + {_rejected('edges', _EDGE_CHECKS)}
         + {_rejected('events', _EVENT_CHECKS)},
       (SELECT count(*) - count(DISTINCT id) FROM nodes),
       (SELECT count(*) FROM nodes), (SELECT count(*) FROM edges), (SELECT count(*) FROM events)
"""

#: A label is kept as JSON text while staged (so a label like "[a]" is no special case).
_LABEL: Final = (f"CASE WHEN label IS NULL THEN '' WHEN instr(label, '\\') "
                 f"THEN substr(label ->> '$', 1, {MAX_LABEL_CHARS}) "
                 f"ELSE substr(label, 2, min(length(label) - 2, {MAX_LABEL_CHARS})) END")


@dataclass(eq=False)
class StagedReply:
    """A ``graph_reply`` whose graph is checked and waiting in an in-memory database.

    The database lives as long as ``_conn`` is open: call :meth:`close` once the
    writer has copied it (or the reply is dropped).
    """

    #: As sent (any JSON value; the coordinator decides whether it is awaited).
    snapshot_id: object
    captured_at_ns: int | None
    node_count: int
    edge_count: int
    event_count: int
    #: ``file:`` URI of the staged database, for ``ATTACH``.
    uri: str
    _conn: sqlite3.Connection

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()


def split_sections(text: str) -> tuple[dict[str, Any], dict[str, str]] | None:
    """Cut the graph's arrays out of a reply's text: (the rest, decoded; the arrays' text).

    The arrays are looked for where an encoder puts them (``"nodes":[``, each array
    ending where the next begins, the last at one of the final ``]``) and each
    replaced by a string holding a fresh random nonce.  The cut is right exactly when
    that rest decodes with those strings at ``graph.nodes``/``.edges``/``.events``
    (only the placeholders hold the nonce) and each array is one JSON value on its
    own, which SQLite checks when it reads it.  None when the rest does not fit.
    """
    found = sorted((at, key) for key in _SECTIONS if (at := text.find(f'"{key}":[')) >= 0)
    if not found:
        return None
    nonce = secrets.token_hex(8)
    placeholders = {key: f"peeps-array-{nonce}-{key}" for _at, key in found}
    sections: dict[str, str] = {}
    rest: list[str] = []
    done = 0
    for (at, key), (next_at, _next_key) in itertools.pairwise(found):
        start, end = at + len(key) + 3, next_at - 1
        if start < done or end <= start or text[end - 1:end + 1] != "],":
            return None
        sections[key] = text[start:end]
        rest += [text[done:start], f'"{placeholders[key]}"']
        done = end
    at, key = found[-1]
    start = at + len(key) + 3
    end = len(text) + 1
    for _try in range(_LAST_END_TRIES):
        end = text.rfind("]", start, end - 1) + 1  # the next "]" to the left
        if end <= start:
            return None
        message = _decoded_rest([*rest, text[done:start], f'"{placeholders[key]}"', text[end:]])
        if message is not None and _placed(message, placeholders):
            sections[key] = text[start:end]
            return message, sections
    return None


def _decoded_rest(pieces: list[str]) -> dict[str, Any] | None:
    try:
        message = json.loads("".join(pieces))
    except (ValueError, RecursionError):
        return None
    return message if isinstance(message, dict) else None


def _placed(message: dict[str, Any], placeholders: dict[str, str]) -> bool:
    """The placeholders sit at graph.<key>, and no other array key is in the graph."""
    graph = message.get("graph")
    if message.get("type") != "graph_reply" or not isinstance(graph, dict):
        return False
    return all(graph.get(key) == placeholders[key] if key in placeholders else key not in graph
               for key in _SECTIONS)


def _risky(section: str) -> bool:
    # One-character ``in`` is a memchr: most replies hold no backslash at all.
    if "\\" not in section or not _RISKY_ESCAPE.search(section):
        return False
    return "\\" in _HARMLESS_ESCAPE.sub("", section)


def stage_graph_reply(body: bytes) -> StagedReply | None:
    """Stage a well-formed ``graph_reply`` frame body; None means "use the Python path".

    Runs on a worker thread; SQLite releases the GIL while it unpacks and checks.
    """
    if not STAGING_AVAILABLE:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    split = split_sections(text)
    if split is None:
        return None
    message, sections = split
    if any(_risky(section) for section in sections.values()):
        return None
    graph = message["graph"]
    captured = graph.get("captured_at_ns")
    captured_at_ns = (captured if isinstance(captured, int) and not isinstance(captured, bool)
                      and 0 <= captured < 2**63 else None)
    uri = f"file:/peeps-staged-{os.getpid()}-{next(_names)}?vfs=memdb"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error:
        return None
    try:
        counts = _stage(conn, sections)
    except sqlite3.Error:
        counts = None  # malformed JSON (or anything else SQLite refuses): Python decides
    if counts is None:
        conn.close()
        return None
    nodes, edges, events = counts
    return StagedReply(snapshot_id=message.get("snapshot_id"), captured_at_ns=captured_at_ns,
                       node_count=nodes, edge_count=edges, event_count=events, uri=uri,
                       _conn=conn)


def _stage(conn: sqlite3.Connection, sections: dict[str, str]) -> tuple[int, int, int] | None:
    """Unpack the arrays into the staging tables; their sizes, or None if an entry is bad."""
    conn.executescript(_STAGING_SCHEMA)
    conn.execute("BEGIN")
    for key, statement in zip(_SECTIONS, (_STAGE_NODES, _STAGE_EDGES, _STAGE_EVENTS),
                              strict=True):
        if key in sections:
            conn.execute(statement, (sections[key],))
    conn.execute("COMMIT")
    rejected, repeated_ids, nodes, edges, events = conn.execute(_CHECK).fetchone()
    if rejected or repeated_ids:
        return None
    return int(nodes), int(edges), int(events)


def store_staged_reply(conn: sqlite3.Connection, *, snapshot_id: int, proc_key: str,
                       responded_at_ns: int, staged: StagedReply) -> None:
    """Copy a staged reply (attached as ``STAGED_SCHEMA``) into the store; writer thread."""
    conn.execute(
        "INSERT INTO main.nodes (snapshot_id, proc_key, id, kind, label, attrs_json) "
        f"SELECT ?, ?, id, kind, {_LABEL}, coalesce(attrs_json, '{{}}') "
        f"FROM {STAGED_SCHEMA}.nodes ORDER BY rowid",
        (snapshot_id, proc_key))
    conn.execute(
        "INSERT INTO main.edges (snapshot_id, proc_key, src, dst, kind, attrs_json) "
        f"SELECT ?, ?, src, dst, kind, coalesce(attrs_json, '{{}}') "
        f"FROM {STAGED_SCHEMA}.edges ORDER BY rowid",
        (snapshot_id, proc_key))
    conn.execute(
        "INSERT INTO main.events (snapshot_id, proc_key, id, ts_ns, entity_id, name, "
        "parent_entity_id, attrs_json) SELECT ?, ?, CAST(id AS INTEGER), CAST(ts_ns AS INTEGER), "
        f"entity_id, name, parent_entity_id, coalesce(attrs_json, '{{}}') "
        f"FROM {STAGED_SCHEMA}.events ORDER BY rowid",
        (snapshot_id, proc_key))
    conn.execute(
        "UPDATE main.snapshot_processes SET status = 'responded', error = NULL, "
        "responded_at_ns = ?, captured_at_ns = ?, node_count = ?, edge_count = ?, "
        "event_count = ? WHERE snapshot_id = ? AND proc_key = ?",
        (responded_at_ns, staged.captured_at_ns, staged.node_count, staged.edge_count,
         staged.event_count, snapshot_id, proc_key))
