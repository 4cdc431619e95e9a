"""Every asyncio primitive through the real server: a real wait on each shows
its needs/holds edge in a snapshot, and the edges are gone once the waits end."""

from __future__ import annotations

import signal
import time
from typing import Any

from support import ROOT, ExampleProcess, PeepsServer

#: (waiter or holder, edge kind, primitive, op or None)
EXPECTED = [
    ("p.lock.holder", "holds", "p.lock", None),
    ("p.lock.waiter", "needs", "p.lock", "acquire"),
    ("p.rw.writer", "holds", "p.rwlock", None),
    ("p.rw.reader", "needs", "p.rwlock", "read"),
    ("p.sem.holder", "holds", "p.sem", None),
    ("p.sem.waiter", "needs", "p.sem", "acquire"),
    ("p.bsem.holder", "holds", "p.bsem", None),
    ("p.bsem.waiter", "needs", "p.bsem", "acquire"),
    ("p.cell.init", "holds", "p.cell", None),
    ("p.cell.waiter", "needs", "p.cell", "init"),
    ("p.lock.holder", "needs", "p.release", "wait"),
    ("p.notify.waiter", "needs", "p.notify", "notified"),
    ("p.cond.waiter", "needs", "p.cond", "wait"),
    ("p.sender", "needs", "p.bounded", "send"),
    ("p.receiver", "needs", "p.unbounded", "recv"),
    ("p.oneshot.waiter", "needs", "p.oneshot", "recv"),
    ("p.watch.waiter", "needs", "p.watch", "changed"),
    ("p.proc.waiter", "needs", "p.subprocess", None),
    ("p.peep.waiter", "needs", "p.peep", "await"),
    ("p.sleeper", "needs", "p.sleep", "sleep"),
    ("p.interval.task", "needs", "p.interval", "tick"),
    ("p.timeout.task", "touches", "p.timeout", None),
]


def _edges(server: PeepsServer, sid: int) -> list[dict[str, Any]]:
    return server.rows(sid, """
        SELECT s.label AS src, e.kind, d.label AS dst, d.kind AS dst_kind,
               json_extract(e.attrs, '$.op') AS op
        FROM edges e JOIN nodes s ON s.id = e.src AND s.proc_key = e.proc_key
                     JOIN nodes d ON d.id = e.dst AND d.proc_key = e.proc_key
        WHERE d.label LIKE 'p.%'""")


def _missing(edges: list[dict[str, Any]]) -> list[tuple[str, str, str, str | None]]:
    return [want for want in EXPECTED
            if not any(e["src"] == want[0] and e["kind"] == want[1] and e["dst"] == want[2]
                       and (want[3] is None or e["op"] == want[3]) for e in edges)]


def test_every_primitive_wait_is_an_edge_and_vanishes_after(peeps_server: PeepsServer) -> None:
    program = ExampleProcess(ROOT / "tests/programs/all_primitives.py",
                             dashboard=peeps_server.dashboard)
    try:
        program.wait_for_output("ready")
        peeps_server.wait_connected(name="all-primitives")
        deadline = time.monotonic() + 15
        while True:
            sid = peeps_server.jump()["snapshot_id"]
            edges = _edges(peeps_server, sid)
            missing = _missing(edges)
            if not missing:
                break
            assert time.monotonic() < deadline, (missing, edges)
            time.sleep(0.2)
        # Counting attributes agree with the edges.
        [sem] = peeps_server.rows(sid, "SELECT json_extract(attrs, '$.permits_available') AS free, "
                                       "json_extract(attrs, '$.waiters') AS waiters "
                                       "FROM nodes WHERE label = 'p.sem'")
        assert sem == {"free": 0, "waiters": 1}
        [bounded] = peeps_server.rows(sid, "SELECT json_extract(attrs, '$.depth') AS depth "
                                           "FROM nodes WHERE label = 'p.bounded'")
        assert bounded == {"depth": 1}

        program.proc.send_signal(signal.SIGUSR1)
        program.wait_for_output("released")
        sid = peeps_server.jump()["snapshot_id"]
        # Only the condition's structural link to its own lock outlives the waits.
        left = [e for e in _edges(peeps_server, sid) if e["kind"] in ("needs", "holds", "touches")
                and (e["src"], e["dst"]) != ("p.cond", "p.cond.lock")]
        assert not left, left
    finally:
        program.stop()
