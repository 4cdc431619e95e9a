"""The service side of reliability: whatever the dashboard does, the service is
not hurt; forks are handled; secrets do not leave the process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import peeps
from peeps import _redact
from support import ROOT, ExampleProcess, PeepsServer

TICKER = ROOT / "tests/programs/ticker.py"


def _ticks(proc: ExampleProcess) -> int:
    return sum(1 for line in proc.output if line.startswith("tick "))


def _assert_progress(proc: ExampleProcess, seconds: float = 0.5) -> None:
    before = _ticks(proc)
    time.sleep(seconds)
    assert proc.proc.poll() is None, "".join(proc.output)
    assert _ticks(proc) > before + 5, "the service stopped making progress"


def _frame(message: dict[str, object]) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack(">I", len(body)) + body


def _read_frame(conn: socket.socket) -> dict[str, object]:
    header = b""
    while len(header) < 4:
        chunk = conn.recv(4 - len(header))
        assert chunk, "peer closed"
        header += chunk
    (length,) = struct.unpack(">I", header)
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        assert chunk, "peer closed"
        body += chunk
    result: dict[str, object] = json.loads(body)
    return result


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(10)
        yield sock


def test_redaction_of_secrets_in_meta_headers_and_events() -> None:
    async def scenario() -> object:
        gate = asyncio.Event()

        async def call() -> None:
            await peeps.peep(gate.wait(), "t.upstream", Authorization="Bearer s3cr3t",
                             user="alice", headers={"Cookie": "sid=1", "Accept": "json"})

        task = peeps.tasks.spawn_tracked("t.caller", call(), db_password="hunter2")
        await asyncio.sleep(0.01)
        graph = peeps.collect_graph()
        gate.set()
        await task
        return graph

    graph = asyncio.run(scenario())
    text = json.dumps(graph)
    for secret in ("s3cr3t", "hunter2", "sid=1"):
        assert secret not in text
    nodes = {n["label"]: n for n in graph["nodes"]}  # type: ignore[index]
    meta = nodes["t.upstream"]["attrs"]["meta"]
    assert meta["Authorization"] == "[redacted]"
    assert meta["user"] == "alice"
    assert meta["headers"] == {"Cookie": "[redacted]", "Accept": "json"}
    assert nodes["t.caller"]["attrs"]["meta"]["db_password"] == "[redacted]"


def test_redaction_patterns_are_configurable() -> None:
    try:
        peeps.init("t-redact", redact=[r"^tenant$"])
        channel = peeps.channel("t.redact", 1, tenant="acme", token="kept-now")
        meta = next(n for n in peeps.collect_graph()["nodes"]
                    if n["label"] == "t.redact")["attrs"]["meta"]
        assert meta["tenant"] == "[redacted]"
        assert meta["token"] == "kept-now"
        del channel
    finally:
        _redact.set_patterns(_redact.DEFAULT_PATTERNS)


def test_the_protocol_is_read_only(listener: socket.socket, tmp_path: Path) -> None:
    """A dashboard can only ask for snapshots: anything else is ignored."""
    marker = tmp_path / "pwned"
    ticker = ExampleProcess(TICKER, dashboard=f"127.0.0.1:{listener.getsockname()[1]}")
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            hello = _read_frame(conn)
            assert hello["type"] == "hello" and hello["process_name"] == "ticker"
            for hostile in (
                {"type": "exec", "code": f"open({str(marker)!r}, 'w').close()"},
                {"type": "cancel_task", "task": "*"},
                {"type": "signal", "signal": 9},
                {"type": "set_config", "enabled": False},
            ):
                conn.sendall(_frame(hostile))
            conn.sendall(_frame({"type": "snapshot_request", "snapshot_id": 7, "timeout_ms": 1000}))
            reply = _read_frame(conn)
            assert reply["type"] == "graph_reply" and reply["snapshot_id"] == 7
            _assert_progress(ticker)
        assert not marker.exists()
    finally:
        ticker.stop()


def test_a_slow_reader_dashboard_does_not_slow_the_service(listener: socket.socket) -> None:
    ticker = ExampleProcess(TICKER, dashboard=f"127.0.0.1:{listener.getsockname()[1]}",
                            env={"PEEPS_MAX_FRAME_BYTES": str(64 * 1024 * 1024)})
    try:
        conn, _ = listener.accept()
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            _read_frame(conn)
            # Ask repeatedly and never read the replies: the sender's buffers fill.
            for snapshot_id in range(50):
                conn.sendall(_frame({"type": "snapshot_request", "snapshot_id": snapshot_id,
                                     "timeout_ms": 100}))
            _assert_progress(ticker, 1.0)
            assert "Traceback" not in "".join(ticker.output)
    finally:
        ticker.stop()


def test_a_black_holed_dashboard_does_not_block_the_service() -> None:
    # A listener whose backlog is full and that never accepts: connects hang.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    ticker = ExampleProcess(TICKER, dashboard=f"127.0.0.1:{port}")
    try:
        ticker.wait_for_output("tick 3")
        _assert_progress(ticker, 1.0)
    finally:
        ticker.stop()
        for filler in fillers:
            filler.close()
        hole.close()


def test_each_forked_worker_is_its_own_process(peeps_server: PeepsServer) -> None:
    prefork = ExampleProcess(ROOT / "tests/programs/prefork.py", dashboard=peeps_server.dashboard)
    try:
        prefork.wait_for_output("worker 1 pid")
        prefork.wait_for_output("worker 0 pid")
        procs = peeps_server.wait_connected(count=3, name="prefork")
        assert len({p["pid"] for p in procs}) == 3
        snap = peeps_server.jump()
        assert snap["responded"] == 3, snap
        rows = peeps_server.rows(snap["snapshot_id"], """
            SELECT p.pid, n.label FROM nodes n JOIN snapshot_processes p USING (proc_key)
            WHERE n.kind = 'channel' ORDER BY n.label""")
        by_label = {r["label"]: r["pid"] for r in rows}
        assert set(by_label) >= {"parent.queue", "worker.0.queue", "worker.1.queue"}
        # Each worker reports its own queue under its own pid, not the parent's.
        assert by_label["worker.0.queue"] != by_label["worker.1.queue"]
        parent_pid = prefork.proc.pid
        assert by_label["worker.0.queue"] != parent_pid
        blocked = peeps_server.rows(snap["snapshot_id"], """
            SELECT count(*) AS n FROM edges e JOIN nodes c ON c.id = e.dst
            WHERE e.kind = 'needs' AND c.label LIKE 'worker.%.queue'""")
        assert blocked == [{"n": 2}]
    finally:
        prefork.stop()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_soak_memory_returns_to_baseline() -> None:
    """1M short-lived tasks and 100k primitives: peeps' memory comes back."""
    script = r'''
import asyncio, gc, json, tracemalloc
import peeps
from peeps._registry import REGISTRY

async def noop():
    return None

async def churn(tasks, primitives):
    for _ in range(tasks // 1000):
        await asyncio.gather(*(peeps.tasks.spawn_tracked("soak", noop()) for _ in range(1000)))
    for _ in range(primitives // 1000):
        chans = [peeps.channel("soak.chan", 4) for _ in range(1000)]
        for c in chans:
            c.put_nowait(1)
        del chans

def peeps_bytes(snapshot):
    return sum(s.size for s in snapshot.filter_traces(
        [tracemalloc.Filter(True, "*/peeps/*")]).statistics("filename"))

tracemalloc.start()
asyncio.run(churn(20_000, 10_000))   # warm up caches and retention buffers
gc.collect()
base = peeps_bytes(tracemalloc.take_snapshot())
asyncio.run(churn(TASKS, PRIMS))
gc.collect()
after = peeps_bytes(tracemalloc.take_snapshot())
print(json.dumps({"baseline_bytes": base, "after_bytes": after,
                  "live_tasks": len(REGISTRY.tasks), "finished": len(REGISTRY.finished),
                  "resources": len(REGISTRY.live_resources()),
                  "graph_nodes": len(peeps.collect_graph()["nodes"])}))
'''.replace("TASKS", "1_000_000").replace("PRIMS", "100_000")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=580, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    print("soak:", figures)
    assert figures["live_tasks"] == 0
    assert figures["resources"] == 0
    assert figures["graph_nodes"] <= 256
    assert figures["finished"] <= 256
    # Within 64 KiB of the warmed-up baseline after 1.1M entities came and went.
    assert figures["after_bytes"] - figures["baseline_bytes"] < 64 * 1024, figures
