"""The ``peeps`` subcommands: each reads the public HTTP API and prints a view.

Views reuse ``peeps.analysis`` (wait chains, node descriptions, suspects) so the
terminal says exactly what the server and the UI say.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peeps.analysis import (
    GraphIndex,
    NodeKey,
    describe_node,
    format_arc,
    format_duration_ns,
    format_wait_chain,
    node_location,
)

from ._client import EXIT_PROBLEM, PeepsClient
from ._render import SEVERITY_STYLE, Output, TreeItem

ACTOR_KINDS = ("task", "thread")
FINISHED_STATES = frozenset({"done", "cancelled", "failed", "collected"})


def _shown(node: Mapping[str, Any], show_all: bool) -> bool:
    """Finished tasks and peeps' own threads (``peeps-*``) only with ``--all``."""
    if show_all:
        return True
    if node.get("kind") == "thread" and str(node.get("label", "")).startswith("peeps-"):
        return False
    return _state(node) not in FINISHED_STATES


@dataclass
class Context:
    client: PeepsClient
    out: Output
    json: bool
    snapshot_id: int | None
    jump: bool

    def snapshot(self) -> int:
        """The snapshot to read: a fresh one with ``--jump``, ``--snapshot ID``, else the newest."""
        if self.jump:
            return int(self.client.jump()["snapshot_id"])
        return self.client.resolve_snapshot(self.snapshot_id)

    def emit_json(self, value: Any) -> None:
        json.dump(value, sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")


def _attrs(item: Mapping[str, Any]) -> Mapping[str, Any]:
    attrs = item.get("attrs")
    return attrs if isinstance(attrs, Mapping) else {}


def _age(node: Mapping[str, Any]) -> str:
    attrs = _attrs(node)
    age = attrs.get("age_ns")
    if not isinstance(age, int | float):
        return ""
    # A finished task's age stopped when it finished: it is how long it lived.
    if node.get("kind") == "task" and attrs.get("finished_at_ns") is not None:
        return f"lived {format_duration_ns(age)}"
    return format_duration_ns(age)


def _ago(at_ns: object) -> str:
    if not isinstance(at_ns, int):
        return "?"
    return format_duration_ns(max(0, time.time_ns() - at_ns)) + " ago"


def _snapshot_line(record: Mapping[str, Any]) -> str:
    parts = [f"snapshot {record.get('snapshot_id')}", str(record.get("status", "?")),
             f"{record.get('responded', 0)}/{record.get('requested', 0)} processes answered",
             f"taken {_ago(record.get('captured_at_ns') or record.get('requested_at_ns'))}"]
    return " · ".join(parts)


def _state(node: Mapping[str, Any]) -> str:
    attrs = _attrs(node)
    if node.get("kind") == "thread":
        verdict = attrs.get("verdict")
        state = attrs.get("state")
        return str(verdict or state or "")
    return str(attrs.get("state") or "")


def _waiting_on(index: GraphIndex, key: NodeKey) -> str:
    arcs = index.wait_out.get(key)
    if not arcs:
        return ""
    arc = max(arcs, key=lambda a: a.duration_ns or 0)
    return f"{format_arc(arc)} {describe_node(index.nodes.get(arc.dst))}"


def _chain_tail(index: GraphIndex, key: NodeKey) -> str:
    """The wait chain from ``key`` without the starting node itself."""
    arcs = index.wait_chain(key)
    if not arcs:
        return ""
    full = format_wait_chain(index, key, arcs)
    head = describe_node(index.nodes.get(key), location=True)
    return full[len(head):].strip() if full.startswith(head) else full


def _sort_key(node: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(node.get("proc_key", "")), str(node.get("kind", "")), str(node.get("label", "")))


# -- ps --------------------------------------------------------------------------------


def cmd_ps(ctx: Context, *, show_all: bool) -> int:
    snapshot_id = ctx.snapshot()
    graph = ctx.client.graph(snapshot_id)
    connected = {p["proc_key"] for p in ctx.client.processes()}
    index = GraphIndex.build(graph["nodes"], graph["edges"])
    actors = sorted((n for n in graph["nodes"] if n.get("kind") in ACTOR_KINDS), key=_sort_key)
    actors = [n for n in actors if _shown(n, show_all)]
    counts: dict[tuple[str, str], int] = {}
    for node in actors:
        key = (str(node.get("proc_key")), str(node.get("kind")))
        counts[key] = counts.get(key, 0) + 1

    if ctx.json:
        ctx.emit_json({
            "snapshot": graph["snapshot"],
            "processes": [dict(p, connected=p["proc_key"] in connected)
                          for p in graph["processes"]],
            "tasks": [{
                "proc_key": n.get("proc_key"), "id": n.get("id"), "kind": n.get("kind"),
                "label": n.get("label"), "state": _state(n), "age_ns": _attrs(n).get("age_ns"),
                "waiting_on": _waiting_on(index, (str(n.get("proc_key", "")), str(n["id"]))),
                "location": node_location(n),
            } for n in actors],
        })
        return 0

    out = ctx.out
    out.line(_snapshot_line(graph["snapshot"]), style="dim")
    out.table(
        ["process", "proc_key", "pid", "status", "connected", "nodes", "tasks", "threads"],
        [[p.get("process_name"), p.get("proc_key"), p.get("pid"), p.get("status"),
          "yes" if p["proc_key"] in connected else "no", p.get("node_count"),
          counts.get((p["proc_key"], "task"), 0), counts.get((p["proc_key"], "thread"), 0)]
         for p in graph["processes"]],
        title="processes")
    out.line()
    if not actors:
        out.line("no tasks or threads in this snapshot"
                 + ("" if show_all else " (finished tasks and peeps' own threads are hidden; "
                                         "--all shows them)"))
        return 0
    out.table(
        ["process", "kind", "name", "state", "age", "waiting on", "created at"],
        [[n.get("proc_key"), n.get("kind"), n.get("label"), _state(n), _age(n),
          _waiting_on(index, (str(n.get("proc_key", "")), str(n["id"]))), node_location(n)]
         for n in actors],
        title="tasks and threads")
    return 0


# -- tree ------------------------------------------------------------------------------


def cmd_tree(ctx: Context, *, show_stack: bool, show_all: bool) -> int:
    snapshot_id = ctx.snapshot()
    graph = ctx.client.graph(snapshot_id)
    nodes: list[Mapping[str, Any]] = graph["nodes"]
    index = GraphIndex.build(nodes, graph["edges"])

    def key_of(node: Mapping[str, Any]) -> NodeKey:
        return (str(node.get("proc_key", "")), str(node["id"]))

    actors = {key_of(n): n for n in nodes
              if n.get("kind") in ACTOR_KINDS and _shown(n, show_all)}
    children: dict[NodeKey, list[NodeKey]] = {}
    has_parent: set[NodeKey] = set()
    for edge in graph["edges"]:
        if edge.get("kind") != "spawned":
            continue
        proc_key = str(edge.get("proc_key", ""))
        src, dst = index.resolve(proc_key, edge.get("src")), index.resolve(proc_key, edge.get("dst"))
        if src in actors and dst in actors:
            children.setdefault(src, []).append(dst)
            has_parent.add(dst)

    if ctx.json:
        ctx.emit_json({"snapshot_id": snapshot_id, "actors": [{
            "proc_key": key[0], "id": key[1], "kind": node.get("kind"),
            "label": node.get("label"), "state": _state(node), "location": node_location(node),
            "spawned_by": next((p[1] for p, cs in children.items() if key in cs), None),
            "chain": _chain_tail(index, key) or None,
            "stack": _attrs(node).get("stack") or [],
        } for key, node in sorted(actors.items())]})
        return 0

    out = ctx.out
    out.line(_snapshot_line(graph["snapshot"]), style="dim")
    names = {p["proc_key"]: p.get("process_name") for p in graph["processes"]}
    by_proc: dict[str, list[NodeKey]] = {}
    for key in sorted(actors, key=lambda k: _sort_key(actors[k])):
        if key not in has_parent:
            by_proc.setdefault(key[0], []).append(key)
    if not actors:
        out.line("no tasks or threads in this snapshot")
        return 0

    def add(parent: TreeItem, key: NodeKey, depth: int) -> None:
        node = actors[key]
        state = _state(node)
        label = describe_node(node, location=True) + (f" [{state}]" if state else "")
        item = parent.add(label, style="bold" if index.wait_out.get(key) else None)
        tail = _chain_tail(index, key)
        if tail:
            item.add(tail, style="yellow")
        if show_stack:
            for frame in _attrs(node).get("stack") or []:
                item.add(f"at {frame}", style="dim")
        if depth < 32:
            for child in sorted(children.get(key, []), key=lambda k: _sort_key(actors[k])):
                add(item, child, depth + 1)

    for proc_key, roots in sorted(by_proc.items()):
        root = TreeItem(f"{names.get(proc_key) or proc_key} ({proc_key})", style="bold")
        for key in roots:
            add(root, key, 0)
        out.tree(root)
    return 0


# -- suspects ----------------------------------------------------------------------------

_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def cmd_suspects(ctx: Context, *, fail_on: str | None) -> int:
    snapshot_id = ctx.snapshot()
    suspects = ctx.client.suspects(snapshot_id)
    graph = ctx.client.graph(snapshot_id)
    index = GraphIndex.build(graph["nodes"], graph["edges"])
    failing = fail_on is not None and any(
        _SEVERITY_ORDER.get(s.get("severity", "info"), 9) <= _SEVERITY_ORDER[fail_on]
        for s in suspects)

    def where(suspect: Mapping[str, Any]) -> list[str]:
        lines = []
        for node_id in suspect.get("node_ids") or []:
            key = index.resolve(str(suspect.get("proc_key") or ""), node_id)
            node = index.nodes.get(key) if key is not None else None
            if node is not None and node_location(node):
                lines.append(f"{describe_node(node)} at {node_location(node)}")
        return lines

    if ctx.json:
        ctx.emit_json({"snapshot_id": snapshot_id,
                       "suspects": [dict(s, where=where(s)) for s in suspects]})
        return EXIT_PROBLEM if failing else 0

    out = ctx.out
    out.line(_snapshot_line(graph["snapshot"]), style="dim")
    if not suspects:
        out.line("no suspects: nothing is waiting long, no cycles, no full channels")
        return 0
    for i, suspect in enumerate(suspects, 1):
        severity = str(suspect.get("severity", "info"))
        duration = suspect.get("duration_ns")
        extra = [str(suspect.get("proc_key") or "")] if suspect.get("proc_key") else []
        if isinstance(duration, int):
            extra.append(format_duration_ns(duration))
        out.line()
        out.line(f"{i}. {severity.upper():8} {suspect.get('title')}"
                 + (f"  ({', '.join(extra)})" if extra else ""),
                 style=SEVERITY_STYLE.get(severity))
        out.line(f"   why:   {suspect.get('reason')}")
        for line in where(suspect):
            out.line(f"   where: {line}", style="dim")
    return EXIT_PROBLEM if failing else 0


# -- sql ---------------------------------------------------------------------------------


def _param(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def cmd_sql(ctx: Context, *, query: str, params: Sequence[str]) -> int:
    snapshot_id = ctx.snapshot()
    result = ctx.client.sql(snapshot_id, query, [_param(p) for p in params])
    if ctx.json:
        ctx.emit_json(dict(result, snapshot_id=snapshot_id))
        return 0
    columns = list(result.get("columns") or [])
    rows = list(result.get("rows") or [])
    if columns:
        ctx.out.table(columns, rows)
    count = result.get("row_count", len(rows))
    note = " (truncated: the server's row or byte cap was reached)" if result.get("truncated") else ""
    ctx.out.line(f"({count} row{'s' if count != 1 else ''}, snapshot {snapshot_id}){note}",
                 style="dim")
    return 0


# -- jump --------------------------------------------------------------------------------


def cmd_jump(ctx: Context) -> int:
    result = ctx.client.jump()
    if ctx.json:
        ctx.emit_json(result)
        return 0
    requested = result.get("requested", 0)
    ctx.out.line(
        f"snapshot {result.get('snapshot_id')}: {result.get('responded', 0)}/{requested} "
        f"processes answered, {result.get('timed_out', 0)} timed out, "
        f"{result.get('disconnected', 0)} disconnected")
    if not requested:
        ctx.out.line("no process is connected: start one with PEEPS_DASHBOARD=HOST:PORT "
                     "or `python -m peeps run`", style="yellow")
    else:
        ctx.out.line("next: `peeps suspects`, `peeps ps`, `peeps tree`", style="dim")
    return 0

