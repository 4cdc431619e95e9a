"""Suspect detectors: pure functions from one snapshot's graph to ranked findings.

Each detector returns ``Suspect`` records; ``find_suspects`` runs them all and
ranks by severity, then score (higher first).  The detectors only read the
attributes documented in ``docs/architecture.md``; thread verdicts and loop
stalls are keyed on attributes the library adds (``verdict``, ``loop.stall``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

from ._format import (
    channel_fill,
    describe_node,
    format_duration_ns,
    format_wait_chain,
    is_full_channel,
    node_location,
    node_name,
)
from ._graph import GraphIndex, NodeKey, WaitArc, attrs_of, int_attr

Severity = Literal["critical", "warning", "info"]
SEVERITY_RANK: Final[dict[str, int]] = {"critical": 0, "warning": 1, "info": 2}

#: Resources where several waiters mean contention (not the normal idle state).
CONTENDABLE_KINDS: Final = frozenset({
    "lock", "rwlock", "semaphore", "thread_lock", "condition", "once_cell", "connection",
})
ACTOR_KINDS: Final = frozenset({"task", "thread"})

_S: Final = 1_000_000_000


class Suspect(TypedDict):
    kind: str
    severity: Severity
    score: float
    title: str
    reason: str
    duration_ns: int | None
    node_ids: list[str]
    proc_key: str | None


@dataclass(frozen=True)
class Thresholds:
    """When a wait becomes a finding.  Durations in nanoseconds."""

    long_wait_ns: int = 1 * _S
    critical_wait_ns: int = 30 * _S
    stuck_step_ns: int = 1 * _S
    loop_stall_ns: int = 100_000_000


def _proc_key(keys: Iterable[NodeKey]) -> str | None:
    procs = {k[0] for k in keys}
    return procs.pop() if len(procs) == 1 else None


def _seconds(duration_ns: int | None) -> float:
    return 0.0 if duration_ns is None else min(duration_ns / _S, 10_000.0)


def _ids(keys: Iterable[NodeKey]) -> list[str]:
    return list(dict.fromkeys(k[1] for k in keys))


# -- deadlocks -----------------------------------------------------------------------


def _strongly_connected(index: GraphIndex) -> list[list[NodeKey]]:
    """Tarjan's algorithm, iterative (graphs can be deep)."""
    counter = 0
    number: dict[NodeKey, int] = {}
    low: dict[NodeKey, int] = {}
    stack: list[NodeKey] = []
    on_stack: set[NodeKey] = set()
    components: list[list[NodeKey]] = []
    for root in sorted(index.wait_out):
        if root in number:
            continue
        work: list[tuple[NodeKey, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                number[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            arcs = index.wait_out.get(node, [])
            if i < len(arcs):
                work.append((node, i + 1))
                nxt = arcs[i].dst
                if nxt not in number:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], number[nxt])
                continue
            if low[node] == number[node]:
                component: list[NodeKey] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return components


def _cycle_through(index: GraphIndex, start: NodeKey, members: set[NodeKey]) -> list[WaitArc]:
    """Shortest cycle from ``start`` back to itself inside one component."""
    previous: dict[NodeKey, WaitArc] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for arc in index.wait_out.get(node, ()):
            if arc.dst not in members:
                continue
            if arc.dst == start:
                path = [arc]
                while path[0].src != start:
                    path.insert(0, previous[path[0].src])
                return path
            if arc.dst not in previous:
                previous[arc.dst] = arc
                queue.append(arc.dst)
    return []


def find_deadlocks(index: GraphIndex) -> list[Suspect]:
    suspects: list[Suspect] = []
    for component in _strongly_connected(index):
        members = set(component)
        if len(component) == 1:
            only = component[0]
            if not any(a.dst == only for a in index.wait_out.get(only, ())):
                continue
        actors = sorted(k for k in component
                        if index.nodes.get(k, {}).get("kind") in ACTOR_KINDS)
        start = actors[0] if actors else min(component)
        cycle = _cycle_through(index, start, members)
        if not cycle:
            continue
        waits = [a.duration_ns for a in cycle if a.relation == "needs" and a.duration_ns is not None]
        duration = min(waits) if waits else None
        keys = [start] + [a.dst for a in cycle[:-1]]
        cycle_actors = [index.nodes[k] for k in keys if index.nodes[k].get("kind") in ACTOR_KINDS]
        names = " and ".join(node_name(n) for n in cycle_actors[:4]) or "entities"
        suspects.append(Suspect(
            kind="deadlock", severity="critical", score=1000.0 + _seconds(duration),
            title=f"deadlock: {names} wait on each other",
            reason="wait-for cycle: " + format_wait_chain(index, start, cycle),
            duration_ns=duration, node_ids=_ids(keys), proc_key=_proc_key(keys)))
    return suspects


# -- long waits ------------------------------------------------------------------------


def _target_phrase(index: GraphIndex, arcs: Sequence[WaitArc]) -> str:
    """What the waiter is really stuck on: the end of its chain, described."""
    first = index.nodes.get(arcs[0].dst)
    phrase = f"{first.get('kind')} {node_name(first)}" if first else "?"
    if first is not None and is_full_channel(first):
        phrase += f" (full {channel_fill(first)})"
    holders = [index.nodes.get(a.dst) for a in arcs[1:2] if a.relation == "held_by"]
    if holders and holders[0] is not None:
        phrase += f" held by {holders[0].get('kind')} {node_name(holders[0])}"
    return phrase


def find_long_waits(index: GraphIndex, thresholds: Thresholds,
                    in_cycle: set[NodeKey] | None = None) -> list[Suspect]:
    suspects: list[Suspect] = []
    skip = in_cycle or set()
    for waiter in sorted(index.wait_out):
        if waiter in skip or any(a.duration_ns is not None
                                 for a in index.needs_in.get(waiter, ())):
            # Cycles are reported whole, and a waiter that something else has been
            # waiting on (measurably) belongs to that origin's chain.  Structural
            # await edges (a gather awaiting its children) carry no duration and
            # must not hide the real waiters behind them.
            continue
        for arc in index.wait_out[waiter]:
            if arc.relation != "needs":
                continue
            waited = arc.duration_ns
            if waited is None or waited < thresholds.long_wait_ns:
                continue
            chain = [arc, *index.wait_chain(arc.dst)]
            if chain[-1].dst == waiter:
                continue
            node = index.nodes[waiter]
            op = attrs_of(arc.edge).get("op")
            op_text = f" to {op}" if isinstance(op, str) and op else ""
            severity: Severity = ("critical" if waited >= thresholds.critical_wait_ns
                                  else "warning")
            keys = [waiter] + [a.dst for a in chain]
            reason = (f"{node_name(node)} has waited {format_duration_ns(waited)}{op_text} on "
                      f"{_target_phrase(index, chain)}: "
                      + format_wait_chain(index, waiter, chain))
            if any(a.dst in skip for a in chain):
                reason += " (the chain ends in a deadlock)"
            suspects.append(Suspect(
                kind="long_wait", severity=severity,
                score=(300.0 if severity == "critical" else 100.0) + _seconds(waited),
                title=f"{describe_node(node)} waiting {format_duration_ns(waited)} on "
                      f"{_target_phrase(index, chain)}",
                reason=reason, duration_ns=waited, node_ids=_ids(keys),
                proc_key=_proc_key(keys)))
    return suspects


# -- channels and contention -----------------------------------------------------------------


def find_full_channels(index: GraphIndex) -> list[Suspect]:
    suspects: list[Suspect] = []
    for key, node in index.nodes.items():
        if node.get("kind") != "channel" or not is_full_channel(node):
            continue
        blocked = int_attr(node, "blocked_senders") or 0
        if blocked <= 0:
            continue
        senders = [a for a in index.needs_in.get(key, ())
                   if attrs_of(a.edge).get("op") in (None, "send")]
        longest = max((a.duration_ns or 0 for a in senders), default=0) or None
        names = ", ".join(f"{node_name(index.nodes[a.src])} ({format_duration_ns(a.duration_ns)})"
                          for a in senders[:5]) or "not shown in the graph"
        where = node_location(node)
        suspects.append(Suspect(
            kind="full_channel", severity="warning",
            score=200.0 + blocked + _seconds(longest),
            title=f"channel {node_name(node)} is full ({channel_fill(node)}) with "
                  f"{blocked} blocked sender{'s' if blocked != 1 else ''}",
            reason=f"senders block until a receiver takes an item; blocked: {names}"
                   + (f"; created at {where}" if where else ""),
            duration_ns=longest, node_ids=_ids([key, *(a.src for a in senders)]),
            proc_key=key[0]))
    return suspects


def find_contended(index: GraphIndex, thresholds: Thresholds) -> list[Suspect]:
    suspects: list[Suspect] = []
    for key, arcs in sorted(index.needs_in.items()):
        node = index.nodes.get(key)
        if node is None or node.get("kind") not in CONTENDABLE_KINDS or len(arcs) < 2:
            continue
        longest = max((a.duration_ns or 0 for a in arcs), default=0) or None
        severity: Severity = ("warning" if longest and longest >= thresholds.long_wait_ns
                              else "info")
        holders = [index.nodes[h] for h in index.holders(key)]
        held = (" held by " + ", ".join(describe_node(h) for h in holders[:3])) if holders else ""
        waiters = ", ".join(f"{node_name(index.nodes[a.src])} ({format_duration_ns(a.duration_ns)})"
                            for a in arcs[:6])
        suspects.append(Suspect(
            kind="contended", severity=severity, score=50.0 + len(arcs) + _seconds(longest),
            title=f"{describe_node(node)} contended: {len(arcs)} waiters{held}",
            reason=f"waiting: {waiters}", duration_ns=longest,
            node_ids=_ids([key, *(a.src for a in arcs), *index.holders(key)]),
            proc_key=_proc_key([key, *(a.src for a in arcs)])))
    return suspects


# -- thread verdicts and loop stalls (keyed on attributes the library adds) -------------------


def _first_int(attrs: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = attrs.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return None


def _where(attrs: Mapping[str, Any]) -> str | None:
    frame = attrs.get("dominant_frame") or attrs.get("frame")
    if isinstance(frame, str) and frame:
        return frame
    stack = attrs.get("stack")
    if isinstance(stack, list) and stack and isinstance(stack[-1], str):
        return stack[-1]
    return None


def find_thread_verdicts(index: GraphIndex, thresholds: Thresholds) -> list[Suspect]:
    suspects: list[Suspect] = []
    for key, node in index.nodes.items():
        kind = node.get("kind")
        if kind != "thread" and kind != "task":
            continue
        attrs = attrs_of(node)
        duration = _first_int(attrs, "verdict_ns", "stuck_ns", "step_ns", "duration_ns")
        where = _where(attrs)
        at = f" at {where}" if where else ""
        if kind == "thread" and attrs.get("verdict") in ("blocked", "spinning"):
            spinning = attrs.get("verdict") == "spinning"
            suspects.append(Suspect(
                kind="spinning" if spinning else "stuck_step", severity="warning",
                score=(160.0 if spinning else 150.0) + _seconds(duration),
                title=(f"thread {node_name(node)} is spinning (frame unchanged, full CPU){at}"
                       if spinning else
                       f"thread {node_name(node)} is blocked (frame unchanged, no CPU){at}"),
                reason=(f"sampled frame unchanged for {format_duration_ns(duration)}{at}"
                        if duration is not None else f"sampled frame unchanged{at}"),
                duration_ns=duration, node_ids=[key[1]], proc_key=key[0]))
        elif (kind == "task" and attrs.get("state") == "running" and duration is not None
              and duration >= thresholds.stuck_step_ns):
            suspects.append(Suspect(
                kind="stuck_step", severity="warning", score=150.0 + _seconds(duration),
                title=f"task {node_name(node)} has been running one step for "
                      f"{format_duration_ns(duration)}{at}",
                reason="a task step that does not yield blocks the whole event loop",
                duration_ns=duration, node_ids=[key[1]], proc_key=key[0]))
    return suspects


def find_loop_stalls(index: GraphIndex, events: Iterable[Mapping[str, Any]],
                     thresholds: Thresholds) -> list[Suspect]:
    suspects: list[Suspect] = []
    for event in events:
        name = event.get("name")
        if not isinstance(name, str) or not name.startswith("loop.stall"):
            continue
        attrs = attrs_of(event)
        duration = _first_int(attrs, "stall_ns", "duration_ns", "blocked_ns")
        if duration is not None and duration < thresholds.loop_stall_ns:
            continue
        culprit = attrs.get("task_id") or event.get("parent_entity_id")
        proc_key = str(event.get("proc_key", "")) or None
        culprit_node = index.nodes.get((proc_key or "", culprit)) if isinstance(culprit, str) else None
        where = _where(attrs)
        title = f"event loop stalled for {format_duration_ns(duration)}"
        if culprit_node is not None:
            title += f" in {describe_node(culprit_node)}"
        ids = [str(event.get("entity_id"))] + ([culprit] if isinstance(culprit, str) else [])
        suspects.append(Suspect(
            kind="loop_stall",
            severity="critical" if duration is not None and duration >= _S else "warning",
            score=250.0 + _seconds(duration), title=title,
            reason="the loop did not come back" + (f"; stack during the stall: {where}"
                                                    if where else ""),
            duration_ns=duration, node_ids=ids, proc_key=proc_key))
    for key, node in index.nodes.items():
        if node.get("kind") != "loop":
            continue
        stalled = int_attr(node, "stalled_ns")
        if stalled is None or stalled < thresholds.loop_stall_ns:
            continue
        where = _where(attrs_of(node))
        suspects.append(Suspect(
            kind="loop_stall", severity="critical" if stalled >= _S else "warning",
            score=260.0 + _seconds(stalled),
            title=f"event loop {node_name(node)} stalled right now for "
                  f"{format_duration_ns(stalled)}",
            reason="the loop has not come back" + (f"; running: {where}" if where else ""),
            duration_ns=stalled, node_ids=[key[1]], proc_key=key[0]))
    return suspects


# -- all together --------------------------------------------------------------------------


# -- lock order -------------------------------------------------------------------------------


def find_lock_order_inversions(index: GraphIndex) -> list[Suspect]:
    """Lock-order inversions the library's lockdep reported (``lockdep`` nodes):
    two code paths take the same locks in opposite orders.  A warning before
    anything deadlocks; when the locks are also in a wait-for cycle the deadlock
    suspect says so separately."""
    suspects: list[Suspect] = []
    for key, node in sorted(index.nodes.items()):
        if node.get("kind") != "lockdep":
            continue
        attrs = attrs_of(node)
        orders = attrs.get("orders")
        sites: list[str] = []
        locks: list[NodeKey] = []
        if isinstance(orders, list):
            for order in orders:
                if not isinstance(order, Mapping):
                    continue
                sites.append(f"{order.get('first')} then {order.get('then')} at "
                             f"{order.get('site') or '?'}")
                for field in ("first_lock_id", "then_lock_id"):
                    lock = index.resolve(key[0], order.get(field))
                    if lock is not None:
                        locks.append(lock)
        cycle = attrs.get("cycle")
        chain = " -> ".join(str(c) for c in cycle) if isinstance(cycle, list) else node_name(node)
        suspects.append(Suspect(
            kind="lock_order", severity="warning", score=150.0,
            title=f"lock order inversion: {chain}",
            reason=("these locks are taken in opposite orders, which can deadlock: "
                    + "; ".join(sites)) if sites else "locks taken in opposite orders",
            duration_ns=None, node_ids=_ids([key, *locks]), proc_key=key[0]))
    return suspects


def rank(suspects: Iterable[Suspect]) -> list[Suspect]:
    return sorted(suspects, key=lambda s: (SEVERITY_RANK.get(s["severity"], 9), -s["score"],
                                           s["title"]))


def find_suspects(nodes: Iterable[Mapping[str, Any]], edges: Iterable[Mapping[str, Any]],
                  events: Iterable[Mapping[str, Any]] = (), *,
                  thresholds: Thresholds | None = None) -> list[Suspect]:
    """Every detector over one snapshot, ranked (most urgent first)."""
    limits = thresholds or Thresholds()
    index = GraphIndex.build(nodes, edges)
    deadlocks = find_deadlocks(index)
    in_cycle: set[NodeKey] = set()
    for suspect in deadlocks:
        in_cycle.update(index.resolve(suspect["proc_key"] or "", i) or ("", i)
                        for i in suspect["node_ids"])
    return rank([
        *deadlocks,
        *find_long_waits(index, limits, in_cycle),
        *find_full_channels(index),
        *find_contended(index, limits),
        *find_thread_verdicts(index, limits),
        *find_loop_stalls(index, events, limits),
        *find_lock_order_inversions(index),
    ])
