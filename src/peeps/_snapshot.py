"""Assemble this process's graph from the registry.  Runs on any thread, in
steps (:func:`collect_steps`): on the collector thread, or on a running event
loop between its callbacks (``_loopside``); it never needs the event loop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import _redact
from ._config import STATE
from ._providers import collect_providers, has_blocking_providers
from ._registry import REGISTRY, Clock
from ._reply_encoder import OFF_LOOP, Encoded, Steps, hand_off, run_steps
from ._tasks import adopt_lazy_tracked, batched_watches
from .types import Edge, Event, GraphSnapshot, Node

#: Nodes or edges per step of the passes over whole lists.
_PASS = 2048


def _describe_all(objs: list[Any], now: Clock, nodes: list[Node],
                  edges: list[Edge]) -> Iterator[None]:
    """Describe ``objs`` into ``nodes`` and ``edges``, yielding every 8 (a point
    where whoever runs the steps may let the event loop run)."""
    for i, obj in enumerate(objs):
        if not i % 8:
            yield None
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


def _describe_live(now: Clock, nodes: list[Node], edges: list[Edge]) -> Steps[None]:
    try:  # lazily spawned tracked tasks get their entities first: resources
        yield from adopt_lazy_tracked()  # (a oneshot's holders) look tasks up by entity
    except Exception as exc:
        REGISTRY.part_failed("adopting tracked tasks", exc)
    yield from _describe_all(REGISTRY.live_resources(), now, nodes, edges)
    yield from _describe_all(list(REGISTRY.tasks.copy().values()), now, nodes, edges)


def collect_graph(*, slices: bool = False) -> GraphSnapshot:
    """This process's graph, now.

    ``slices=True`` hands the GIL away after about a millisecond of work
    (``_reply_encoder.hand_off``), so a busy event loop in another thread
    waits at most about that long for it instead of up to the interpreter's
    5 ms switch interval, time after time through a large snapshot.  The
    graph is then assembled over a little more wall time; it was never an
    atomic picture anyway (other threads run at every switch interval).
    The collector thread runs :func:`collect_steps` instead, on the event
    loop when it can (``_loopside``).

    Treat the graph as read-only: a finished task's node is the same object
    in every graph that shows it (it no longer changes, see ``_reply_encoder.Encoded``)."""
    return run_steps(collect_steps(), hand_off if slices else None)


def collect_steps() -> Steps[GraphSnapshot]:
    """:func:`collect_graph` as steps: a generator that yields every few
    entities (where the caller may let others run) and returns the graph.
    It yields :data:`OFF_LOOP` before a part that may block (providers
    registered by the host wait for their own threads)."""
    now = Clock()
    nodes: list[Node] = []
    edges: list[Edge] = []
    try:
        # Tasks adopted while describing (a snapshot is where lazily tracked tasks
        # get their entities) have their done callbacks sent to each loop at once.
        yield from batched_watches(_describe_live(now, nodes, edges))

        # Finished tasks stay visible for a while ("what just died"), bounded by age.
        finished = list(REGISTRY.finished)
        cutoff = now.mono_ns - STATE.finished_task_max_age_ns
        while REGISTRY.finished and (REGISTRY.finished[0].finished_mono_ns or 0) < cutoff:
            try:
                REGISTRY.finished.popleft()
            except IndexError:
                break
        yield from _describe_all([t for t in finished if (t.finished_mono_ns or 0) >= cutoff],
                                 now, nodes, edges)
        if has_blocking_providers():
            yield OFF_LOOP  # they wait for their own threads: not on an event loop
        try:  # diagnostic providers: each bounded by its own deadline (see _providers.py)
            collect_providers(now, nodes, edges)
        except Exception as exc:
            REGISTRY.part_failed("diagnostic providers", exc)
    finally:  # the frames of every thread, read once for the thread nodes
        now.drop_frames()

    redactor = _redact.REDACTOR
    for i, node in enumerate(nodes):
        if not i % 32:  # scrubbing is ~4x cheaper than describing
            yield None
        if type(node) is not Encoded:  # that one was scrubbed before it was encoded
            node["attrs"] = redactor.scrub(node["attrs"])
    for i, edge in enumerate(edges):
        if not i % 32:
            yield None
        if edge["attrs"] and type(edge) is not Encoded:
            edge["attrs"] = redactor.scrub(edge["attrs"])

    # Edges whose ends are not in the graph are dropped (a pass over each list,
    # in steps: at 100k entities each is tens of milliseconds).
    node_ids: set[str] = set()
    for start in range(0, len(nodes), _PASS):
        yield None
        node_ids.update([n["id"] for n in nodes[start:start + _PASS]])
    kept: list[Edge] = []
    for start in range(0, len(edges), _PASS):
        yield None
        kept += [e for e in edges[start:start + _PASS]
                 if e["src"] in node_ids and e["dst"] in node_ids]
    edges = kept
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
