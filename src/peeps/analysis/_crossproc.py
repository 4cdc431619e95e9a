"""Joining one snapshot's per-process graphs into one: requests to their
responses across processes, shared-memory segments to their other attachments.

Pure and standard-library only: the server calls it on a stored snapshot, and
anything else holding several processes' graphs (CLI, tests) can too.

* A ``request`` node and a ``response`` node with the same ``attrs.span_id`` get
  an edge request -> response, kind ``needs``, ``attrs.cross_process`` true when
  they live in different processes.
* A side that is missing becomes a ghost node (``attrs.ghost`` true, the kind of
  the missing side, ``proc_key`` ``"unknown"``) so the chain is not dropped: an
  in-flight request whose responder did not answer the snapshot (stopped,
  crashed, not instrumented) points at a ghost ``response``; a response whose
  caller is absent is pointed at by a ghost ``request``.
* A request made while handling a response (``attrs.parent_span_id``) hangs
  under that response: when no ``needs`` path through the handler task already
  connects them, an inferred edge response -> request (``needs``, op
  ``nested``) is added.
* ``shm_segment`` nodes with the same ``attrs.name`` are linked (``touches``,
  attacher -> creator) and annotated with ``attrs.attached_in``, the processes
  seen attached.

Input nodes and edges are not modified; changed nodes are copied.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Final

GHOST_PROC_KEY: Final = "unknown"

_Dict = dict[str, Any]


def _attrs(item: Mapping[str, Any]) -> Mapping[str, Any]:
    attrs = item.get("attrs")
    return attrs if isinstance(attrs, Mapping) else {}


def _span(item: Mapping[str, Any]) -> str | None:
    span = _attrs(item).get("span_id")
    return span if isinstance(span, str) and span else None


def _ghost(kind: str, span_id: str, other: Mapping[str, Any], expected_peer: Any,
           reason: str) -> _Dict:
    other_attrs = _attrs(other)
    method = other_attrs.get("method")
    return {
        "proc_key": GHOST_PROC_KEY,
        "id": f"{kind}:ghost:{span_id}",
        "kind": kind,
        "label": f"? {method}" if method else f"? {kind}",
        "attrs": {
            "ghost": True,
            "reason": reason,
            "meta": {},
            "method": method,
            "span_id": span_id,
            "parent_span_id": other_attrs.get("parent_span_id"),
            "chain_id": other_attrs.get("chain_id"),
            "expected_peer": expected_peer,
            "state": "unknown",
        },
    }


def _join_edge(src: Mapping[str, Any], dst: Mapping[str, Any], span_id: str) -> _Dict:
    cross = src.get("proc_key") != dst.get("proc_key")
    attrs: _Dict = {"op": "rpc", "cross_process": cross, "span_id": span_id, "joined": True,
                    "dst_proc_key": dst.get("proc_key")}
    # The caller's view of the wait (the only clock both sides need not share).
    timed = src if not _attrs(src).get("ghost") else dst
    for key, attr in (("waited_ns", "elapsed_ns"), ("since_ns", "started_at_ns")):
        value = _attrs(timed).get(attr)
        if isinstance(value, int) and not isinstance(value, bool):
            attrs[key] = value
    return {"proc_key": src.get("proc_key"), "src": src["id"], "dst": dst["id"], "kind": "needs",
            "attrs": attrs}


def join_cross_process(
    nodes: Sequence[Mapping[str, Any]], edges: Sequence[Mapping[str, Any]]
) -> tuple[list[_Dict], list[_Dict]]:
    """Return ``(nodes, edges)`` of the snapshot with join edges, ghost nodes
    and shared-memory links added.  Idempotent: joining a joined graph adds nothing."""
    out_nodes: list[_Dict] = [dict(n) for n in nodes]
    out_edges: list[_Dict] = [dict(e) for e in edges]
    existing = {(e.get("src"), e.get("dst"), e.get("kind")) for e in out_edges}
    node_ids = {n.get("id") for n in out_nodes}

    def add_edge(edge: _Dict) -> None:
        key = (edge["src"], edge["dst"], edge["kind"])
        if key not in existing:
            existing.add(key)
            out_edges.append(edge)

    def add_node(node: _Dict) -> None:
        if node["id"] not in node_ids:
            node_ids.add(node["id"])
            out_nodes.append(node)

    requests: dict[str, list[_Dict]] = defaultdict(list)
    responses: dict[str, list[_Dict]] = defaultdict(list)
    for node in out_nodes:
        if _attrs(node).get("ghost"):
            continue
        span = _span(node)
        if span is None:
            continue
        if node.get("kind") == "request":
            requests[span].append(node)
        elif node.get("kind") == "response":
            responses[span].append(node)

    for span, reqs in requests.items():
        resps = responses.get(span)
        for req in reqs:
            if resps:
                for resp in resps:
                    add_edge(_join_edge(req, resp, span))
            else:
                ghost = _ghost("response", span, req, _attrs(req).get("target"),
                               "no process in this snapshot answered this request's span")
                add_node(ghost)
                add_edge(_join_edge(req, ghost, span))
    for span, resps in responses.items():
        if span in requests:
            continue
        for resp in resps:
            if not _attrs(resp).get("propagated"):
                continue  # the caller sent no peeps ids: this response starts its chain
            ghost = _ghost("request", span, resp, _attrs(resp).get("peer"),
                           "the caller of this response is not in this snapshot")
            add_node(ghost)
            add_edge(_join_edge(ghost, resp, span))

    _link_nested(out_nodes, out_edges, responses, add_edge)
    _link_shared_memory(out_nodes, add_edge)
    return out_nodes, out_edges


def _link_nested(nodes: list[_Dict], edges: list[_Dict], responses: Mapping[str, list[_Dict]],
                 add_edge: Any) -> None:
    needs: dict[Any, set[Any]] = defaultdict(set)
    for e in edges:
        if e.get("kind") == "needs":
            needs[e.get("src")].add(e.get("dst"))
    for node in nodes:
        if node.get("kind") != "request" or _attrs(node).get("ghost"):
            continue
        parent = _attrs(node).get("parent_span_id")
        if not isinstance(parent, str):
            continue
        for resp in responses.get(parent, ()):
            if resp.get("proc_key") != node.get("proc_key"):
                continue
            # Already response -> handler task -> request?  Then nothing to add.
            if any(node["id"] in needs.get(mid, ()) for mid in needs.get(resp["id"], ())):
                continue
            add_edge({"proc_key": resp.get("proc_key"), "src": resp["id"], "dst": node["id"],
                      "kind": "needs", "attrs": {"op": "nested", "inferred": True,
                                                 "span_id": parent, "cross_process": False}})


def _link_shared_memory(nodes: list[_Dict], add_edge: Any) -> None:
    by_name: dict[str, list[int]] = defaultdict(list)
    for i, node in enumerate(nodes):
        if node.get("kind") == "shm_segment":
            name = _attrs(node).get("name")
            if isinstance(name, str) and name:
                by_name[name].append(i)
    for name, indexes in by_name.items():
        group = [nodes[i] for i in indexes]
        attached_in = sorted({str(n.get("proc_key")) for n in group})
        creators = [n for n in group if _attrs(n).get("role") == "creator"]
        anchor = creators[0] if creators else min(group, key=lambda n: (str(n.get("proc_key")),
                                                                        str(n.get("id"))))
        creator_pid = _attrs(creators[0]).get("creator_pid") if creators else None
        for i in indexes:
            node = nodes[i]
            attrs = dict(_attrs(node))
            attrs["attached_in"] = attached_in
            if creator_pid is not None and attrs.get("creator_pid") is None:
                attrs["creator_pid"] = creator_pid
            nodes[i] = {**node, "attrs": attrs}
            if node is anchor:
                continue
            add_edge({"proc_key": node.get("proc_key"), "src": node["id"], "dst": anchor["id"],
                      "kind": "touches",
                      "attrs": {"shm_name": name,
                                "cross_process": node.get("proc_key") != anchor.get("proc_key")}})
