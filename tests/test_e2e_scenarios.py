"""Every scenario in examples/, end to end: the real example process, the real
server, a snapshot over HTTP, the diagnosis read back through the SQL API and the
suspects endpoint — what a user would see."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from support import ExampleProcess, PeepsServer

Check = Callable[[PeepsServer, int, list[dict[str, Any]]], None]


def snapshot_until(server: PeepsServer, check: Check, timeout: float = 20.0) -> None:
    """Take snapshots until ``check`` passes (the scenario reached its stall and
    the waits are long enough to be suspects), or fail with the last error.

    A snapshot reads a live process while its threads run, so one can catch a
    scenario half-way (a thread's wait already recorded, the lock-order report
    it made just before not yet): the checks' ``[one] = rows`` unpacking is an
    assertion too, and retried like one."""
    deadline = time.monotonic() + timeout
    while True:
        snap = server.jump()
        sid = snap["snapshot_id"]
        suspects = server.get(f"/api/snapshots/{sid}/suspects")["suspects"]
        try:
            check(server, sid, suspects)
            return
        except (AssertionError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def needs_edges(server: PeepsServer, sid: int) -> list[dict[str, Any]]:
    return server.rows(sid, """
        SELECT s.label AS src, s.kind AS src_kind, d.label AS dst, d.kind AS dst_kind,
               json_extract(e.attrs, '$.op') AS op, e.kind AS kind, s.location AS src_location
        FROM edges e JOIN nodes s ON s.id = e.src AND s.proc_key = e.proc_key
                     JOIN nodes d ON d.id = e.dst AND d.proc_key = e.proc_key
        WHERE e.kind IN ('needs', 'holds')""")


def has_edge(edges: list[dict[str, Any]], src: str, kind: str, dst: str, op: str | None = None) -> bool:
    return any(e["src"] == src and e["kind"] == kind and e["dst"] == dst
               and (op is None or e["op"] == op) for e in edges)


def check_semaphore_starvation(server: PeepsServer, sid: int, suspects: list[dict[str, Any]]) -> None:
    edges = needs_edges(server, sid)
    assert has_edge(edges, "permit_waiter", "needs", "demo.api_gate", "acquire")
    assert has_edge(edges, "permit_holder", "holds", "demo.api_gate")
    [gate] = server.rows(sid, "SELECT json_extract(attrs, '$.permits_available') AS free, "
                              "json_extract(attrs, '$.permits_total') AS total "
                              "FROM nodes WHERE label = 'demo.api_gate'")
    assert gate == {"free": 0, "total": 1}
    assert any("permit_waiter" in s["title"] and "held by task permit_holder" in s["title"]
               for s in suspects), suspects


def check_oneshot_sender_lost(server: PeepsServer, sid: int, suspects: list[dict[str, Any]]) -> None:
    edges = needs_edges(server, sid)
    assert has_edge(edges, "requester", "needs", "demo.reply(req-42)", "recv")
    [oneshot] = server.rows(sid, """
        SELECT kind, json_extract(attrs, '$.resolvable') AS resolvable,
               json_extract(attrs, '$.sender_held_by') AS held_by
        FROM nodes WHERE label = 'demo.reply(req-42)'""")
    assert oneshot == {"kind": "oneshot", "resolvable": 0, "held_by": None}
    assert any("requester" in s["title"] and "demo.reply(req-42)" in s["title"]
               for s in suspects), suspects


def check_queue_join_hang(server: PeepsServer, sid: int, suspects: list[dict[str, Any]]) -> None:
    edges = needs_edges(server, sid)
    assert has_edge(edges, "producer", "needs", "demo.jobs", "join")
    assert has_edge(edges, "consumer", "needs", "demo.jobs", "recv")
    [jobs] = server.rows(sid, "SELECT json_extract(attrs, '$.unfinished_tasks') AS unfinished, "
                              "json_extract(attrs, '$.depth') AS depth "
                              "FROM nodes WHERE label = 'demo.jobs'")
    assert jobs == {"unfinished": 5, "depth": 0}
    assert any("producer" in s["title"] and "demo.jobs" in s["title"] for s in suspects), suspects


def check_lock_order_inversion(server: PeepsServer, sid: int, suspects: list[dict[str, Any]]) -> None:
    edges = needs_edges(server, sid)
    assert has_edge(edges, "worker_left_first", "holds", "demo.shared.left")
    assert has_edge(edges, "worker_left_first", "needs", "demo.shared.right", "acquire")
    assert has_edge(edges, "worker_right_first", "holds", "demo.shared.right")
    assert has_edge(edges, "worker_right_first", "needs", "demo.shared.left", "acquire")
    [deadlock] = [s for s in suspects if s["kind"] == "deadlock"]
    assert deadlock["severity"] == "critical"
    for name in ("worker_left_first", "worker_right_first", "demo.shared.left", "demo.shared.right"):
        assert name in deadlock["reason"]
    [inversion] = [s for s in suspects if s["kind"] == "lock_order"]
    assert "demo.shared.left" in inversion["title"] and "demo.shared.right" in inversion["title"]
    [report] = server.rows(sid, "SELECT attrs FROM nodes WHERE kind = 'lockdep'")
    assert "demo.shared.left" in report["attrs"] and "demo.shared.right" in report["attrs"]
    assert report["attrs"].count("mutex_lock_order_inversion/__main__.py:") >= 2  # both sites


def check_loop_blocked(server: PeepsServer, sid: int, suspects: list[dict[str, Any]]) -> None:
    stalls = server.rows(sid, """
        SELECT json_extract(attrs, '$.duration_ns') AS duration_ns, attrs FROM events
        WHERE name = 'loop.stall'""")
    assert stalls, "no loop.stall event yet"
    assert all(s["duration_ns"] >= 100_000_000 for s in stalls)
    assert any("blocking_poller" in s["attrs"] and "loop_blocked/__main__.py:" in s["attrs"]
               for s in stalls)
    assert any(s["kind"] == "loop_stall" and "blocking_poller" in s["title"] for s in suspects)


def check_thread_spin(server: PeepsServer, sid: int, suspects: list[dict[str, Any]]) -> None:
    verdicts = {r["label"]: r for r in server.rows(sid, """
        SELECT label, json_extract(attrs, '$.verdict') AS verdict,
               json_extract(attrs, '$.dominant_frame') AS frame
        FROM nodes WHERE kind = 'thread'""")}
    assert "spin_worker" in verdicts and "idle_worker" in verdicts, verdicts
    assert verdicts["spin_worker"]["verdict"] == "spinning"
    assert "thread_spin/__main__.py:" in verdicts["spin_worker"]["frame"]
    assert verdicts["idle_worker"]["verdict"] in ("blocked", "idle")
    assert any(s["kind"] == "spinning" and "spin_worker" in s["title"] for s in suspects)


def check_custom_provider(server: PeepsServer, sid: int, suspects: list[dict[str, Any]]) -> None:
    edges = needs_edges(server, sid)
    pools = [e["dst"] for e in edges if e["src"] == "report_c" and e["kind"] == "needs"
             and e["dst_kind"] == "license_pool"]
    assert pools, edges
    assert has_edge(edges, "report_a", "holds", pools[0])
    assert has_edge(edges, "report_b", "holds", pools[0])


SCENARIOS: dict[str, Check] = {
    "semaphore-starvation": check_semaphore_starvation,
    "oneshot-sender-lost": check_oneshot_sender_lost,
    "queue-join-hang": check_queue_join_hang,
    "mutex-lock-order-inversion": check_lock_order_inversion,
    "loop-blocked": check_loop_blocked,
    "thread-spin": check_thread_spin,
    "custom-provider": check_custom_provider,
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_diagnosis(scenario: str, peeps_server: PeepsServer,
                            run_example: type[ExampleProcess]) -> None:
    example = run_example(scenario)
    peeps_server.wait_connected()
    try:
        snapshot_until(peeps_server, SCENARIOS[scenario])
    except (AssertionError, ValueError):
        print("".join(example.output))
        raise


def test_every_example_has_a_scenario_test() -> None:
    from support import EXAMPLES
    names = {p.name.replace("_", "-") for p in EXAMPLES.iterdir() if (p / "__main__.py").exists()}
    # channel-full-stall and rpc-stuck-request have dedicated end-to-end tests.
    assert names - {"channel-full-stall", "rpc-stuck-request"} == set(SCENARIOS)
