"""An index over one snapshot's nodes and edges, and the wait-for graph.

Nodes are keyed by ``(proc_key, id)``.  The wait-for graph has an arc
``waiter -> resource`` for each ``needs`` edge and ``resource -> holder`` for each
``holds`` edge (a held resource "waits" for its holder to release it), so a
deadlock is a cycle and a wait chain is a path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NodeKey = tuple[str, str]


def node_key(node: Mapping[str, Any]) -> NodeKey:
    return (str(node.get("proc_key", "")), str(node["id"]))


def attrs_of(item: Mapping[str, Any]) -> Mapping[str, Any]:
    attrs = item.get("attrs")
    return attrs if isinstance(attrs, Mapping) else {}


def int_attr(item: Mapping[str, Any], name: str) -> int | None:
    value = attrs_of(item).get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


@dataclass(frozen=True)
class WaitArc:
    """One step of the wait-for graph; ``edge`` is the edge it came from."""

    src: NodeKey
    dst: NodeKey
    #: ``needs`` (src waits for dst) or ``held_by`` (src is held by dst).
    relation: str
    edge: Mapping[str, Any]

    @property
    def duration_ns(self) -> int | None:
        if self.relation == "needs":
            return int_attr(self.edge, "waited_ns")
        return int_attr(self.edge, "held_ns")


@dataclass
class GraphIndex:
    nodes: dict[NodeKey, Mapping[str, Any]] = field(default_factory=dict)
    #: Node id -> keys having that id (ids are unique per host, usually one key).
    by_id: dict[str, list[NodeKey]] = field(default_factory=dict)
    wait_out: dict[NodeKey, list[WaitArc]] = field(default_factory=dict)
    needs_in: dict[NodeKey, list[WaitArc]] = field(default_factory=dict)
    holds_in: dict[NodeKey, list[WaitArc]] = field(default_factory=dict)

    @classmethod
    def build(cls, nodes: Iterable[Mapping[str, Any]],
              edges: Iterable[Mapping[str, Any]]) -> GraphIndex:
        index = cls()
        for node in nodes:
            if not isinstance(node.get("id"), str):
                continue
            key = node_key(node)
            index.nodes[key] = node
            index.by_id.setdefault(key[1], []).append(key)
        for edge in edges:
            kind = edge.get("kind")
            if kind not in ("needs", "holds"):
                continue
            proc_key = str(edge.get("proc_key", ""))
            src = index.resolve(proc_key, edge.get("src"))
            dst = index.resolve(proc_key, edge.get("dst"))
            if src is None or dst is None:
                continue
            if kind == "needs":
                arc = WaitArc(src, dst, "needs", edge)
                index.wait_out.setdefault(src, []).append(arc)
                index.needs_in.setdefault(dst, []).append(arc)
            else:
                # holder --holds--> resource becomes resource --held_by--> holder.
                arc = WaitArc(dst, src, "held_by", edge)
                index.wait_out.setdefault(dst, []).append(arc)
                index.holds_in.setdefault(dst, []).append(arc)
        return index

    def resolve(self, proc_key: str, node_id: object) -> NodeKey | None:
        """Find a node by id, preferring the edge's own process."""
        if not isinstance(node_id, str):
            return None
        if (proc_key, node_id) in self.nodes:
            return (proc_key, node_id)
        keys = self.by_id.get(node_id)
        return keys[0] if keys else None

    def holders(self, resource: NodeKey) -> list[NodeKey]:
        return [arc.dst for arc in self.holds_in.get(resource, ())]

    def wait_chain(self, start: NodeKey, *, max_steps: int = 64) -> list[WaitArc]:
        """Follow the wait-for graph from ``start`` until it ends or loops.

        Where a node waits on several things, the longest-waited arc is followed.
        """
        chain: list[WaitArc] = []
        seen = {start}
        current = start
        while len(chain) < max_steps:
            arcs = self.wait_out.get(current)
            if not arcs:
                break
            arc = max(arcs, key=lambda a: (a.duration_ns or 0))
            chain.append(arc)
            if arc.dst in seen:
                break
            seen.add(arc.dst)
            current = arc.dst
        return chain
