"""Defensive checks of what a process sends, before anything reaches the store.

A process is someone else's code: every field is checked for type, bad entries
are skipped and counted (never crash, never store half-typed rows), and the
reason is kept so the operator can see why a node is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from peeps.types import PROTOCOL_VERSION

MAX_ID_CHARS: Final = 1024
MAX_LABEL_CHARS: Final = 4096
MAX_PROC_KEY_CHARS: Final = 256
#: Keep at most this many distinct skip reasons per reply (the count is exact).
MAX_REASONS: Final = 5


class ProtocolError(ValueError):
    """The peer broke the protocol; its connection is closed."""


@dataclass(frozen=True)
class HelloInfo:
    proc_key: str
    process_name: str
    pid: int
    peeps_version: str
    token: str | None


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _short_str(value: object, limit: int) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= limit and _utf8(value)


def _utf8(value: str) -> bool:
    # JSON escapes can produce lone surrogates, which SQLite cannot store as text.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_hello(message: dict[str, Any]) -> HelloInfo:
    if message.get("type") != "hello":
        raise ProtocolError(f"first frame must be hello, got {str(message.get('type'))[:64]!r}")
    version = message.get("protocol_version")
    if version != PROTOCOL_VERSION or not _is_int(version):
        raise ProtocolError(
            f"unsupported protocol_version {version!r:.64}; this server speaks {PROTOCOL_VERSION}")
    proc_key = message.get("proc_key")
    if not _short_str(proc_key, MAX_PROC_KEY_CHARS):
        raise ProtocolError("hello.proc_key must be a non-empty string of at most "
                            f"{MAX_PROC_KEY_CHARS} characters")
    process_name = message.get("process_name")
    if not _short_str(process_name, MAX_LABEL_CHARS):
        raise ProtocolError("hello.process_name must be a non-empty string")
    pid = message.get("pid")
    if not _is_int(pid) or not 0 <= pid < 2**63:
        raise ProtocolError("hello.pid must be a non-negative integer")
    peeps_version = message.get("peeps_version", "")
    if not isinstance(peeps_version, str):
        raise ProtocolError("hello.peeps_version must be a string")
    token = message.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError("hello.token must be a string")
    assert isinstance(proc_key, str) and isinstance(process_name, str) and isinstance(pid, int)
    return HelloInfo(proc_key, process_name, pid, peeps_version[:128], token)


NodeRow = tuple[str, str, str, str]
EdgeRow = tuple[str, str, str, str]
EventRow = tuple[int, int, str, str, str | None, str]


@dataclass
class ValidatedGraph:
    captured_at_ns: int | None
    nodes: list[NodeRow] = field(default_factory=list)
    edges: list[EdgeRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    skipped: int = 0
    reasons: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < MAX_REASONS and reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def error(self) -> str | None:
        if not self.skipped:
            return None
        return f"skipped {self.skipped} invalid entries: " + "; ".join(self.reasons)


def _attrs_json(entry: dict[str, Any]) -> str | None:
    attrs = entry.get("attrs", {})
    if not isinstance(attrs, dict):
        return None
    # The frame was parsed from JSON, so this cannot fail on types; it re-serializes
    # compactly so the store holds canonical JSON text.
    return json.dumps(attrs, separators=(",", ":"))


def validate_graph(graph: object) -> ValidatedGraph:
    """Check a graph_reply's ``graph``; raise ProtocolError if it is not a graph at all."""
    if not isinstance(graph, dict):
        raise ProtocolError("graph_reply.graph must be an object")
    captured = graph.get("captured_at_ns")
    ok_captured = _is_int(captured) and 0 <= captured < 2**63
    result = ValidatedGraph(captured_at_ns=captured if ok_captured else None)
    lists: dict[str, list[Any]] = {}
    for key in ("nodes", "edges", "events"):
        value = graph.get(key, [])
        if not isinstance(value, list):
            raise ProtocolError(f"graph_reply.graph.{key} must be a list")
        lists[key] = value

    seen: set[str] = set()
    for node in lists["nodes"]:
        if not isinstance(node, dict):
            result.skip("node is not an object")
            continue
        node_id, kind, label = node.get("id"), node.get("kind"), node.get("label", "")
        if not _short_str(node_id, MAX_ID_CHARS):
            result.skip("node.id must be a non-empty string")
            continue
        if not _short_str(kind, MAX_ID_CHARS):
            result.skip(f"node {node_id[:80]!r}: kind must be a non-empty string")
            continue
        if not isinstance(label, str) or not _utf8(label):
            result.skip(f"node {node_id[:80]!r}: label must be a string")
            continue
        attrs = _attrs_json(node)
        if attrs is None:
            result.skip(f"node {node_id[:80]!r}: attrs must be an object")
            continue
        if node_id in seen:
            result.skip(f"duplicate node id {node_id[:80]!r}")
            continue
        seen.add(node_id)
        result.nodes.append((node_id, kind, label[:MAX_LABEL_CHARS], attrs))

    for edge in lists["edges"]:
        if not isinstance(edge, dict):
            result.skip("edge is not an object")
            continue
        src, dst, kind = edge.get("src"), edge.get("dst"), edge.get("kind")
        if not (_short_str(src, MAX_ID_CHARS) and _short_str(dst, MAX_ID_CHARS)
                and _short_str(kind, MAX_ID_CHARS)):
            result.skip("edge.src, edge.dst and edge.kind must be non-empty strings")
            continue
        attrs = _attrs_json(edge)
        if attrs is None:
            result.skip("edge.attrs must be an object")
            continue
        assert isinstance(src, str) and isinstance(dst, str) and isinstance(kind, str)
        result.edges.append((src, dst, kind, attrs))

    for event in lists["events"]:
        if not isinstance(event, dict):
            result.skip("event is not an object")
            continue
        event_id, ts_ns = event.get("id"), event.get("ts_ns")
        entity_id, name = event.get("entity_id"), event.get("name")
        parent = event.get("parent_entity_id")
        if not (_is_int(event_id) and _is_int(ts_ns) and abs(event_id) < 2**63
                and abs(ts_ns) < 2**63):
            result.skip("event.id and event.ts_ns must be 64-bit integers")
            continue
        if not (_short_str(entity_id, MAX_ID_CHARS) and _short_str(name, MAX_ID_CHARS)):
            result.skip("event.entity_id and event.name must be non-empty strings")
            continue
        if parent is not None and not _short_str(parent, MAX_ID_CHARS):
            result.skip("event.parent_entity_id must be a string or null")
            continue
        attrs = _attrs_json(event)
        if attrs is None:
            result.skip("event.attrs must be an object")
            continue
        assert isinstance(entity_id, str) and isinstance(name, str)
        result.events.append((event_id, ts_ns, entity_id, name, parent, attrs))
    return result
