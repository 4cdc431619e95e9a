"""Assemble this process's graph from the registry.  Runs on the collector
thread (or any thread): it never needs the event loop."""

from __future__ import annotations

from typing import Any

from . import _redact
from ._config import STATE
from ._providers import collect_providers
from ._registry import REGISTRY, Clock
from ._reply_encoder import hand_off
from ._tasks import adopt_lazy_tracked, batched_watches
from .types import Edge, Event, GraphSnapshot, Node


def _describe_all(objs: list[Any], now: Clock, nodes: list[Node], edges: list[Edge],
                  slices: bool = False) -> None:
    for i, obj in enumerate(objs):
        if slices and not i % 8:
            hand_off()  # let the event loop (and every other thread) run, now and then
        try:
            # (node, edges) or (node, edges, extra_nodes): a task blocked on a
            # gather/wait future describes that future node too.
            described = obj._peeps_describe(now)
        except Exception as exc:  # one broken entity must not cost the snapshot
            REGISTRY.part_failed(f"describing {type(obj).__name__}", exc)
            continue
        nodes.append(described[0])
        edges.extend(described[1])
        if len(described) > 2:
            nodes.extend(described[2])


def collect_graph(*, slices: bool = False) -> GraphSnapshot:
    """This process's graph, now.

    ``slices=True`` (what the collector thread uses) hands the GIL away after
    about a millisecond of work (``_reply_encoder.hand_off``), so a busy event
    loop waits at most about that long for it instead of up to the
    interpreter's 5 ms switch interval, time after time through a large
    snapshot.  The graph is then assembled over a little
    more wall time; it was never an atomic picture anyway (other threads run
    at every switch interval)."""
    now = Clock()
    nodes: list[Node] = []
    edges: list[Edge] = []
    try:
        # Tasks adopted while describing (a snapshot is where lazily tracked tasks
        # get their entities) have their done callbacks sent to each loop at once.
        with batched_watches():
            try:  # lazily spawned tracked tasks get their entities first: resources
                adopt_lazy_tracked()  # (a oneshot's holders) look tasks up by entity
            except Exception as exc:
                REGISTRY.part_failed("adopting tracked tasks", exc)
            _describe_all(REGISTRY.live_resources(), now, nodes, edges, slices)
            _describe_all(list(REGISTRY.tasks.copy().values()), now, nodes, edges, slices)

        # Finished tasks stay visible for a while ("what just died"), bounded by age.
        finished = list(REGISTRY.finished)
        cutoff = now.mono_ns - STATE.finished_task_max_age_ns
        while REGISTRY.finished and (REGISTRY.finished[0].finished_mono_ns or 0) < cutoff:
            try:
                REGISTRY.finished.popleft()
            except IndexError:
                break
        _describe_all([t for t in finished if (t.finished_mono_ns or 0) >= cutoff], now, nodes,
                      edges, slices)
        try:  # diagnostic providers: each bounded by its own deadline (see _providers.py)
            collect_providers(now, nodes, edges)
        except Exception as exc:
            REGISTRY.part_failed("diagnostic providers", exc)
    finally:  # the frames of every thread, read once for the thread nodes
        now.drop_frames()

    redactor = _redact.REDACTOR
    for i, node in enumerate(nodes):
        if slices and not i % 32:  # scrubbing is ~4x cheaper than describing
            hand_off()
        node["attrs"] = redactor.scrub(node["attrs"])
    for i, edge in enumerate(edges):
        if slices and not i % 32:
            hand_off()
        if edge["attrs"]:
            edge["attrs"] = redactor.scrub(edge["attrs"])

    node_ids = {n["id"] for n in nodes}
    edges = [e for e in edges if e["src"] in node_ids and e["dst"] in node_ids]
    proc_key = STATE.proc_key
    events: list[Event] = [
        {
            "id": event_id,
            "ts_ns": ts_ns,
            "proc_key": proc_key,
            "entity_id": entity_id,
            "name": name,
            "parent_entity_id": parent,
            "attrs": redactor.scrub(attrs) if attrs else attrs,
        }
        for (event_id, ts_ns, entity_id, name, parent, attrs) in list(REGISTRY.events)
    ]
    return {
        "process_name": STATE.process_name,
        "proc_key": proc_key,
        "pid": STATE.pid,
        "captured_at_ns": now.wall_ns,
        "nodes": nodes,
        "edges": edges,
        "events": events,
    }
