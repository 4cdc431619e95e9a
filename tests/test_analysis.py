"""Suspect detectors over hand-built graphs (they are pure functions of a graph)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from peeps.analysis import (
    GraphIndex,
    Thresholds,
    describe_node,
    find_deadlocks,
    find_suspects,
    format_chain,
    format_duration_ns,
)

S = 1_000_000_000


def node(node_id: str, kind: str, label: str, proc_key: str = "p-1", **attrs: Any) -> dict[str, Any]:
    return {"proc_key": proc_key, "id": node_id, "kind": kind, "label": label, "attrs": attrs}


def edge(src: str, dst: str, kind: str, proc_key: str = "p-1", **attrs: Any) -> dict[str, Any]:
    return {"proc_key": proc_key, "src": src, "dst": dst, "kind": kind, "attrs": attrs}


def needs(src: str, dst: str, op: str, waited_s: float, proc_key: str = "p-1") -> dict[str, Any]:
    return edge(src, dst, "needs", proc_key, op=op, waited_ns=int(waited_s * S))


def holds(src: str, dst: str, held_s: float = 1.0, proc_key: str = "p-1") -> dict[str, Any]:
    return edge(src, dst, "holds", proc_key, held_ns=int(held_s * S))


LOC = {"meta": {"ctx.location": "examples/x.py:12"}}


def test_format_duration() -> None:
    assert [format_duration_ns(v) for v in (0, 999, 1500, 2_500_000, 3_200_000_000, 125 * S,
                                             3 * 3600 * S + 120 * S, None)] == [
        "0ns", "999ns", "1.5µs", "2.5ms", "3.2s", "2m05s", "3h02m", "?"]


def test_full_channel_chain_text_and_suspects() -> None:
    nodes = [node("task:1", "task", "bounded_sender", **LOC),
             node("channel:2", "channel", "demo.work_queue", capacity=16, depth=16,
                  blocked_senders=1)]
    edges = [needs("task:1", "channel:2", "send", 3.2)]
    assert format_chain(nodes, edges, "task:1") == (
        "task bounded_sender (examples/x.py:12) --needs[send, 3.2s]--> channel demo.work_queue 16/16")
    suspects = find_suspects(nodes, edges)
    assert [s["kind"] for s in suspects] == ["full_channel", "long_wait"]
    full, wait = suspects
    assert full["title"] == "channel demo.work_queue is full (16/16) with 1 blocked sender"
    assert "bounded_sender (3.2s)" in full["reason"]
    assert full["node_ids"] == ["channel:2", "task:1"] and full["proc_key"] == "p-1"
    assert wait["severity"] == "warning"
    assert wait["title"] == ("task bounded_sender waiting 3.2s on channel demo.work_queue "
                             "(full 16/16)")
    assert wait["reason"].startswith(
        "bounded_sender has waited 3.2s to send on channel demo.work_queue (full 16/16): task ")
    assert wait["duration_ns"] == int(3.2 * S)


def test_short_waits_are_not_suspects() -> None:
    nodes = [node("task:1", "task", "a"), node("channel:2", "channel", "q", capacity=None,
                                                     depth=0, blocked_senders=0)]
    assert find_suspects(nodes, [needs("task:1", "channel:2", "recv", 0.5)]) == []
    assert describe_node(nodes[1]) == "channel q 0/∞"


def test_lock_order_deadlock_between_two_tasks() -> None:
    nodes = [node("task:a", "task", "alpha", **LOC), node("task:b", "task", "beta"),
             node("lock:1", "lock", "accounts"), node("lock:2", "lock", "ledger")]
    edges = [holds("task:a", "lock:1"), needs("task:a", "lock:2", "acquire", 5),
             holds("task:b", "lock:2"), needs("task:b", "lock:1", "acquire", 4)]
    suspects = find_suspects(nodes, edges)
    assert suspects[0]["kind"] == "deadlock" and suspects[0]["severity"] == "critical"
    deadlock = suspects[0]
    assert deadlock["node_ids"] == ["task:a", "lock:2", "task:b", "lock:1"]
    assert deadlock["title"] == "deadlock: alpha and beta wait on each other"
    assert deadlock["reason"] == (
        "wait-for cycle: task alpha (examples/x.py:12) --needs[acquire, 5s]--> lock ledger "
        "--held by[1s]--> task beta --needs[acquire, 4s]--> lock accounts --held by[1s]--> "
        "task alpha (examples/x.py:12)")
    assert deadlock["duration_ns"] == 4 * S
    # Waiters inside the cycle are not also reported as separate long waits.
    assert not [s for s in suspects if s["kind"] == "long_wait"]


def test_three_party_cycle_across_threads_and_tasks_in_two_processes() -> None:
    nodes = [node("thread:1", "thread", "worker", "p-1"), node("tl:1", "thread_lock", "cache", "p-1"),
             node("task:2", "task", "handler", "p-1"), node("sem:3", "semaphore", "pool", "p-1"),
             node("task:9", "task", "remote", "p-2"), node("lock:9", "lock", "rl", "p-2")]
    edges = [needs("thread:1", "tl:1", "acquire", 2), holds("task:2", "tl:1"),
             needs("task:2", "sem:3", "acquire", 2), holds("thread:1", "sem:3"),
             needs("task:9", "lock:9", "acquire", 9, "p-2"), holds("task:9", "lock:9", 1, "p-2")]
    deadlocks = find_deadlocks(GraphIndex.build(nodes, edges))
    assert len(deadlocks) == 2
    by_proc = {d["proc_key"]: d for d in deadlocks}
    assert by_proc["p-1"]["node_ids"] == ["task:2", "sem:3", "thread:1", "tl:1"]
    # A task waiting on a lock it holds itself is a one-party deadlock.
    assert by_proc["p-2"]["node_ids"] == ["task:9", "lock:9"]


def test_waiter_outside_a_cycle_gets_a_long_wait_that_says_so() -> None:
    nodes = [node("task:a", "task", "a"), node("task:b", "task", "b"),
             node("lock:1", "lock", "l1"), node("lock:2", "lock", "l2"),
             node("task:c", "task", "bystander")]
    edges = [holds("task:a", "lock:1"), needs("task:a", "lock:2", "acquire", 5),
             holds("task:b", "lock:2"), needs("task:b", "lock:1", "acquire", 5),
             needs("task:c", "lock:1", "acquire", 40)]
    suspects = find_suspects(nodes, edges)
    kinds = [s["kind"] for s in suspects]
    assert kinds[0] == "deadlock"
    [wait] = [s for s in suspects if s["kind"] == "long_wait"]
    assert wait["severity"] == "critical"  # 40 s is over the 30 s critical threshold
    assert wait["title"] == "task bystander waiting 40s on lock l1 held by task a"
    assert wait["reason"].endswith("(the chain ends in a deadlock)")
    contended = [s for s in suspects if s["kind"] == "contended"]
    assert [c["title"] for c in contended] == ["lock l1 contended: 2 waiters held by task a"]


def test_long_wait_follows_the_chain_to_its_end() -> None:
    nodes = [node("task:w", "task", "web"), node("lock:db", "lock", "db"),
             node("task:f", "task", "flusher"), node("peep:1", "peep", "fsync"),
             node("file_op:1", "file_op", "fsync /data")]
    edges = [needs("task:w", "lock:db", "acquire", 12), holds("task:f", "lock:db", 12),
             needs("task:f", "peep:1", "await", 11), needs("peep:1", "file_op:1", "await", 11)]
    suspects = find_suspects(nodes, edges)
    waits = {s["node_ids"][0]: s for s in suspects if s["kind"] == "long_wait"}
    # The peep is an intermediate waiter: it belongs to the flusher's chain.
    assert set(waits) == {"task:w", "task:f"}
    assert waits["task:w"]["node_ids"] == ["task:w", "lock:db", "task:f", "peep:1", "file_op:1"]
    assert waits["task:w"]["reason"].endswith(
        "task web --needs[acquire, 12s]--> lock db --held by[12s]--> task flusher "
        "--needs[await, 11s]--> peep fsync --needs[await, 11s]--> file_op fsync /data")
    assert suspects[0]["node_ids"][0] == "task:w"  # the longest wait ranks first


def test_contention_is_info_until_waits_are_long() -> None:
    nodes = [node("lock:1", "lock", "l"), *[node(f"task:{i}", "task", f"t{i}") for i in range(3)]]
    edges = [needs(f"task:{i}", "lock:1", "acquire", 0.1) for i in range(3)]
    [contended] = find_suspects(nodes, edges)
    assert contended["kind"] == "contended" and contended["severity"] == "info"
    assert contended["title"] == "lock l contended: 3 waiters"
    # Channels with many idle receivers are normal, not contention.
    nodes = [node("channel:1", "channel", "jobs", capacity=4, depth=0, blocked_senders=0),
             *[node(f"task:{i}", "task", f"w{i}") for i in range(3)]]
    assert find_suspects(nodes, [needs(f"task:{i}", "channel:1", "recv", 0.2)
                                 for i in range(3)]) == []


def test_thread_verdicts_and_loop_stalls() -> None:
    nodes = [node("thread:1", "thread", "sampler", verdict="blocked", stuck_ns=5 * S,
                  dominant_frame="app.py:10 in wait"),
             node("thread:2", "thread", "busy", verdict="spinning", stuck_ns=2 * S),
             node("thread:3", "thread", "fine", verdict="running"),
             node("task:1", "task", "hog", state="running", step_ns=3 * S),
             node("loop:1", "loop", "main", stalled_ns=2 * S)]
    events = [{"proc_key": "p-1", "id": 1, "ts_ns": 1, "entity_id": "loop:1",
               "name": "loop.stall", "parent_entity_id": None,
               "attrs": {"stall_ns": 1500 * 1_000_000, "task_id": "task:1",
                         "stack": ["app.py:3 in main", "app.py:20 in hog"]}},
              {"proc_key": "p-1", "id": 2, "ts_ns": 2, "entity_id": "loop:1",
               "name": "loop.stall", "parent_entity_id": None, "attrs": {"stall_ns": 10}}]
    suspects = find_suspects(nodes, [], events)
    summary = [(s["kind"], s["severity"]) for s in suspects]
    assert summary == [("loop_stall", "critical"), ("loop_stall", "critical"),
                       ("spinning", "warning"), ("stuck_step", "warning"),
                       ("stuck_step", "warning")]
    stall = next(s for s in suspects if s["title"].startswith("event loop stalled for"))
    assert stall["title"] == "event loop stalled for 1.5s in task hog"
    assert "app.py:20 in hog" in stall["reason"]
    blocked = next(s for s in suspects if s["node_ids"] == ["thread:1"])
    assert blocked["title"] == ("thread sampler is blocked (frame unchanged, no CPU) at "
                                "app.py:10 in wait")


def test_thresholds_are_configurable() -> None:
    nodes = [node("task:1", "task", "a"), node("sleep:1", "sleep", "nap")]
    edges = [needs("task:1", "sleep:1", "await", 0.2)]
    assert find_suspects(nodes, edges) == []
    [wait] = find_suspects(nodes, edges, thresholds=Thresholds(long_wait_ns=100_000_000))
    assert wait["kind"] == "long_wait"


def test_hostile_inputs_do_not_crash() -> None:
    nodes: list[dict[str, Any]] = [
        {"id": "task:1", "kind": "task", "label": None, "attrs": None},
        {"id": 5, "kind": "task"},
        {"proc_key": "p", "id": "channel:1", "kind": "channel", "label": "c",
         "attrs": {"capacity": "16", "depth": True, "blocked_senders": 3}},
        {"proc_key": "p", "id": "thread:1", "kind": "thread", "label": "t",
         "attrs": {"verdict": "blocked", "stack": [1, 2], "stuck_ns": "x"}},
    ]
    edges: list[dict[str, Any]] = [
        {"src": "task:1", "dst": "missing", "kind": "needs", "attrs": {"waited_ns": "x"}},
        {"src": None, "dst": "task:1", "kind": "holds"},
        {"src": "task:1", "dst": "task:1", "kind": "spawned", "attrs": {}},
    ]
    suspects = find_suspects(nodes, edges, [{"name": "loop.stall", "attrs": []}])
    assert {s["kind"] for s in suspects} <= {"stuck_step", "loop_stall"}


def test_long_cycles_and_big_graphs_are_fine() -> None:
    # A 2000-party ring: recursion-free algorithms only.
    n = 2000
    nodes = [node(f"task:{i}", "task", f"t{i}") for i in range(n)]
    nodes += [node(f"lock:{i}", "lock", f"l{i}") for i in range(n)]
    edges = [holds(f"task:{i}", f"lock:{i}") for i in range(n)]
    edges += [needs(f"task:{i}", f"lock:{(i + 1) % n}", "acquire", 2) for i in range(n)]
    [deadlock] = find_deadlocks(GraphIndex.build(nodes, edges))
    assert len(deadlock["node_ids"]) == 2 * n


def test_random_graphs_never_crash_and_rank_stably() -> None:
    rng = random.Random(7)
    kinds = ["task", "thread", "lock", "channel", "semaphore", "peep"]
    for _ in range(200):
        count = rng.randint(1, 12)
        nodes = [node(f"n:{i}", rng.choice(kinds), f"n{i}", capacity=rng.choice([None, 1, 2]),
                      depth=rng.randint(0, 3), blocked_senders=rng.randint(0, 2))
                 for i in range(count)]
        edges = [edge(f"n:{rng.randrange(count)}", f"n:{rng.randrange(count)}",
                      rng.choice(["needs", "holds", "touches"]),
                      waited_ns=rng.randint(0, 60 * S), held_ns=rng.randint(0, 60 * S))
                 for _ in range(rng.randint(0, 20))]
        suspects = find_suspects(nodes, edges)
        severities = [s["severity"] for s in suspects]
        order = {"critical": 0, "warning": 1, "info": 2}
        assert severities == sorted(severities, key=order.__getitem__)
        for s in suspects:
            assert s["node_ids"] and all(isinstance(i, str) for i in s["node_ids"])


def test_format_chain_unknown_node() -> None:
    with pytest.raises(KeyError):
        format_chain([], [], "task:nope")


def test_structural_await_edges_do_not_hide_real_waiters() -> None:
    """A gather awaiting its children (a needs edge with no measured wait) must not
    make the children count as intermediate links: their own waits are suspects."""
    nodes = [node("task:main", "task", "main"),
             node("group:g", "group", "gather(2)"),
             node("task:h", "task", "permit_holder", **LOC),
             node("task:w", "task", "permit_waiter", **LOC),
             node("sem:1", "semaphore", "demo.api_gate", permits_total=1, permits_available=0),
             node("event:1", "event", "demo.never_set")]
    edges = [edge("task:main", "group:g", "needs", op="await"),
             edge("group:g", "task:h", "needs", op="await"),
             edge("group:g", "task:w", "needs", op="await"),
             holds("task:h", "sem:1", 2.0),
             needs("task:h", "event:1", "wait", 2.0),
             needs("task:w", "sem:1", "acquire", 2.0)]
    titles = [s["title"] for s in find_suspects(nodes, edges) if s["kind"] == "long_wait"]
    assert "task permit_waiter waiting 2s on semaphore demo.api_gate held by task permit_holder" in titles
    assert any(t.startswith("task permit_holder waiting") for t in titles)


def test_lock_order_inversion_is_a_suspect_before_any_deadlock() -> None:
    nodes = [node("thread_lock:1", "thread_lock", "demo.shared.left"),
             node("thread_lock:2", "thread_lock", "demo.shared.right"),
             node("lockdep:3", "lockdep", "lock order inversion",
                  cycle=["demo.shared.left", "demo.shared.right", "demo.shared.left"],
                  orders=[{"first": "demo.shared.left", "then": "demo.shared.right",
                           "site": "app.py:10", "first_lock_id": "thread_lock:1",
                           "then_lock_id": "thread_lock:2"},
                          {"first": "demo.shared.right", "then": "demo.shared.left",
                           "site": "app.py:20", "first_lock_id": "thread_lock:2",
                           "then_lock_id": "thread_lock:1"}])]
    [suspect] = find_suspects(nodes, [])
    assert suspect["kind"] == "lock_order" and suspect["severity"] == "warning"
    assert suspect["title"] == ("lock order inversion: demo.shared.left -> "
                                "demo.shared.right -> demo.shared.left")
    assert "app.py:10" in suspect["reason"] and "app.py:20" in suspect["reason"]
    assert suspect["node_ids"] == ["lockdep:3", "thread_lock:1", "thread_lock:2"]
