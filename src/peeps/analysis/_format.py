"""Plain-text rendering of nodes and wait chains, shared by the server, CLI and pytest plugin.

    task bounded_sender (examples/x.py:12) --needs[send, 3.2s]--> channel demo.work_queue 16/16
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ._graph import GraphIndex, NodeKey, WaitArc, attrs_of, int_attr

#: Kinds whose creation site is worth printing in a chain (the actors).
ACTOR_KINDS = frozenset({"task", "thread"})


def format_duration_ns(duration_ns: int | float | None) -> str:
    """``1_500_000_000`` -> ``1.5s``; units from ns to hours, two significant-ish digits."""
    if duration_ns is None:
        return "?"
    ns = float(duration_ns)
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < 1_000:
        return f"{sign}{ns:.0f}ns"
    if ns < 1_000_000:
        return f"{sign}{ns / 1e3:.3g}µs"
    if ns < 1_000_000_000:
        return f"{sign}{ns / 1e6:.3g}ms"
    seconds = ns / 1e9
    if seconds < 60:
        return f"{sign}{seconds:.3g}s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{sign}{minutes}m{rest:02d}s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{sign}{hours}h{rest // 60:02d}m"


def node_location(node: Mapping[str, Any]) -> str | None:
    """The creation site (``path:line``) from ``attrs.meta``, if known."""
    meta = attrs_of(node).get("meta")
    if not isinstance(meta, Mapping):
        return None
    location = meta.get("ctx.location")
    if location is None:
        ctx = meta.get("ctx")
        if isinstance(ctx, Mapping):
            location = ctx.get("location")
    return location if isinstance(location, str) and location else None


def channel_fill(node: Mapping[str, Any]) -> str | None:
    """``16/16`` for a bounded channel, ``3/∞`` for an unbounded one."""
    if node.get("kind") != "channel":
        return None
    depth = int_attr(node, "depth")
    if depth is None:
        return None
    capacity = int_attr(node, "capacity")
    return f"{depth}/{capacity}" if capacity is not None else f"{depth}/∞"


def is_full_channel(node: Mapping[str, Any]) -> bool:
    capacity = int_attr(node, "capacity")
    depth = int_attr(node, "depth")
    return (node.get("kind") == "channel" and capacity is not None and depth is not None
            and depth >= capacity)


def node_name(node: Mapping[str, Any]) -> str:
    label = node.get("label")
    return label if isinstance(label, str) and label else str(node.get("id", "?"))


def describe_node(node: Mapping[str, Any] | None, *, location: bool = False) -> str:
    """``task bounded_sender (examples/x.py:12)``, ``channel demo.work_queue 16/16``."""
    if node is None:
        return "<missing node>"
    text = f"{node.get('kind', '?')} {node_name(node)}"
    fill = channel_fill(node)
    if fill is not None:
        text += f" {fill}"
    if location:
        where = node_location(node)
        if where:
            text += f" ({where})"
    return text


def format_arc(arc: WaitArc) -> str:
    """``--needs[send, 3.2s]-->`` or ``--held by[1.2s]-->``."""
    details: list[str] = []
    if arc.relation == "needs":
        op = attrs_of(arc.edge).get("op")
        if isinstance(op, str) and op:
            details.append(op)
        name = "needs"
    else:
        name = "held by"
    duration = arc.duration_ns
    if duration is not None:
        details.append(format_duration_ns(duration))
    inner = f"[{', '.join(details)}]" if details else ""
    return f"--{name}{inner}-->"


def format_wait_chain(index: GraphIndex, start: NodeKey, arcs: Sequence[WaitArc]) -> str:
    """Render ``start`` followed by each arc and the node it reaches."""
    parts = [describe_node(index.nodes.get(start), location=True)]
    for arc in arcs:
        node = index.nodes.get(arc.dst)
        actor = node is not None and node.get("kind") in ACTOR_KINDS
        parts.append(format_arc(arc))
        parts.append(describe_node(node, location=actor))
    return " ".join(parts)


def format_chain(nodes: Iterable[Mapping[str, Any]], edges: Iterable[Mapping[str, Any]],
                 start_id: str, *, proc_key: str | None = None) -> str:
    """The wait chain from node ``start_id`` as one line (convenience for CLI/plugin)."""
    index = GraphIndex.build(nodes, edges)
    start = index.resolve(proc_key or "", start_id)
    if start is None:
        raise KeyError(f"no node {start_id!r} in the graph")
    return format_wait_chain(index, start, index.wait_chain(start))
