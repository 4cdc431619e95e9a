"""Requests, providers and shared memory across real processes, through the real
``peeps-web`` (SQL API and graph endpoint)."""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import ExampleProcess, PeepsServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PeepsServer]:
    # A short snapshot timeout: the ghost tests stop a process on purpose.
    srv = PeepsServer(tmp_path / "peeps.sqlite",
                      extra_env={"PEEPS_SNAPSHOT_TIMEOUT_MS": "2000"}).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def processes() -> Iterator[list[ExampleProcess]]:
    started: list[ExampleProcess] = []
    yield started
    for proc in started:
        if proc.proc.poll() is None:
            os.kill(proc.proc.pid, signal.SIGCONT)
        proc.stop()


def graph_of(server: PeepsServer, snapshot_id: int) -> dict[str, Any]:
    graph: dict[str, Any] = server.get(f"/api/snapshots/{snapshot_id}/graph")
    return graph


class Graph:
    """Lookup helpers over the graph endpoint's answer."""

    def __init__(self, graph: dict[str, Any]) -> None:
        self.nodes = graph["nodes"]
        self.edges = graph["edges"]
        self.by_id = {n["id"]: n for n in self.nodes}

    def one(self, **match: Any) -> dict[str, Any]:
        found = [n for n in self.nodes if all(n.get(k) == v for k, v in match.items())]
        assert len(found) == 1, (match, found)
        return found[0]

    def out(self, src: str, kind: str, to_kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.edges if e["src"] == src and e["kind"] == kind
                and (to_kind is None or self.by_id[e["dst"]]["kind"] == to_kind)]

    def into(self, dst: str, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.edges if e["dst"] == dst and e["kind"] == kind]


def start_rpc_example(server: PeepsServer, processes: list[ExampleProcess]) -> tuple[
        ExampleProcess, int]:
    example = ExampleProcess("rpc-stuck-request", dashboard=server.dashboard)
    processes.append(example)
    example.wait_for_output("rpc-stuck-request client: GET /reserve/42", timeout=30)
    [line] = [x for x in example.output if "server: pid" in x]
    server_pid = int(re.search(r"pid (\d+)", line).group(1))  # type: ignore[union-attr]
    server.wait_connected(name="rpc-stuck-client")
    server.wait_connected(name="rpc-stuck-server")
    return example, server_pid


def stop_process(pid: int) -> None:
    """SIGSTOP ``pid`` and wait until the kernel reports it stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in "Tt":
        assert time.monotonic() < deadline, f"process {pid} did not stop"
        time.sleep(0.01)


def wait_for_stuck_handler(server: PeepsServer) -> dict[str, Any]:
    """Snapshots until the handler is seen waiting (the HTTP call takes a moment)."""
    deadline = time.monotonic() + 15
    while True:
        snap = server.jump()
        rows = server.rows(snap["snapshot_id"],
                           "SELECT id FROM nodes WHERE kind = 'response'")
        if rows and snap["responded"] == 2:
            return snap
        assert time.monotonic() < deadline, f"no response node: {snap}"
        time.sleep(0.2)


def test_rpc_stuck_request_chain_spans_both_processes(
        server: PeepsServer, processes: list[ExampleProcess]) -> None:
    start_rpc_example(server, processes)
    snap = wait_for_stuck_handler(server)
    sid = snap["snapshot_id"]

    # SQL: the two sides share a span id and live in different processes.
    [pair] = server.rows(sid, """
        SELECT q.proc_key AS client, s.proc_key AS server,
               json_extract(q.attrs, '$.method') AS method, s.label AS route,
               json_extract(q.attrs, '$.state') AS state,
               json_extract(s.attrs, '$.propagated') AS propagated,
               json_extract(q.attrs, '$.elapsed_ns') AS elapsed_ns
        FROM nodes q JOIN nodes s
          ON json_extract(q.attrs, '$.span_id') = json_extract(s.attrs, '$.span_id')
        WHERE q.kind = 'request' AND s.kind = 'response'""")
    assert pair["client"].startswith("rpc-stuck-client-")
    assert pair["server"].startswith("rpc-stuck-server-")
    assert (pair["method"], pair["route"]) == ("GET /reserve/42", "GET /reserve/{item}")
    assert pair["state"] == "in_flight" and pair["propagated"] == 1
    assert pair["elapsed_ns"] > 0

    # The graph endpoint: client task -> request -> response -> handler -> semaphore -> holder.
    g = Graph(graph_of(server, sid))
    checkout = g.one(kind="task", label="checkout")
    # (The task may also show the future it awaits inside aiohttp.)
    [to_request] = g.out(checkout["id"], "needs", "request")
    request = g.by_id[to_request["dst"]]
    assert request["kind"] == "request"
    [join] = [e for e in g.out(request["id"], "needs") if e["attrs"].get("joined")]
    response = g.by_id[join["dst"]]
    assert response["kind"] == "response" and response["proc_key"] != request["proc_key"]
    assert join["attrs"]["cross_process"] is True and not response["attrs"].get("ghost")
    [to_handler] = g.out(response["id"], "needs")
    handler = g.by_id[to_handler["dst"]]
    assert handler["kind"] == "task" and any("in reserve" in f for f in handler["attrs"]["stack"])
    [to_permits] = [e for e in g.out(handler["id"], "needs")
                    if g.by_id[e["dst"]]["label"] == "inventory.permits"]
    permits = g.by_id[to_permits["dst"]]
    assert (permits["kind"], to_permits["attrs"]["op"]) == ("semaphore", "acquire")
    [held] = g.into(permits["id"], "holds")
    assert g.by_id[held["src"]]["label"] == "inventory_janitor"

    # Both sides' connections are in the graph.
    roles = {n["attrs"]["role"] for n in g.nodes if n["kind"] == "connection"}
    assert roles == {"client", "server"}


def test_a_stopped_server_leaves_a_ghost_response(
        server: PeepsServer, processes: list[ExampleProcess]) -> None:
    _, server_pid = start_rpc_example(server, processes)
    wait_for_stuck_handler(server)
    stop_process(server_pid)
    try:
        snap = server.jump()
    finally:
        os.kill(server_pid, signal.SIGCONT)
    assert (snap["responded"], snap["timed_out"]) == (1, 1), snap
    g = Graph(graph_of(server, snap["snapshot_id"]))
    request = g.one(kind="request")
    [join] = g.out(request["id"], "needs")
    ghost = g.by_id[join["dst"]]
    assert ghost["kind"] == "response" and ghost["attrs"]["ghost"] is True
    assert ghost["proc_key"] == "unknown"
    assert ghost["attrs"]["span_id"] == request["attrs"]["span_id"]
    assert ghost["attrs"]["expected_peer"] == request["attrs"]["target"]
    assert not [n for n in g.nodes if n["kind"] == "response" and not n["attrs"].get("ghost")]


def test_a_stopped_client_leaves_a_ghost_request(
        server: PeepsServer, processes: list[ExampleProcess]) -> None:
    example, _ = start_rpc_example(server, processes)
    wait_for_stuck_handler(server)
    stop_process(example.proc.pid)
    try:
        snap = server.jump()
    finally:
        os.kill(example.proc.pid, signal.SIGCONT)
    assert (snap["responded"], snap["timed_out"]) == (1, 1), snap
    g = Graph(graph_of(server, snap["snapshot_id"]))
    response = g.one(kind="response")
    [join] = g.into(response["id"], "needs")
    ghost = g.by_id[join["src"]]
    assert ghost["kind"] == "request" and ghost["attrs"]["ghost"] is True
    assert ghost["attrs"]["span_id"] == response["attrs"]["span_id"]
    assert ghost["attrs"]["expected_peer"] == "127.0.0.1"


PROVIDERS_PROGRAM = textwrap.dedent("""
    import asyncio, threading
    import peeps

    def raises():
        raise RuntimeError("inventory db is down")

    def hangs():
        threading.Event().wait()

    def garbage():
        return {"nodes": [{"id": "x", "kind": "thing", "attrs": {"tags": {"a", "b"}}}]}

    def good():
        return {"nodes": [{"id": "pool", "kind": "db_pool", "attrs": {"in_use": 3}}]}

    async def main():
        peeps.init("providers-demo")
        peeps.register_provider("raises", raises)
        peeps.register_provider("hangs", hangs, timeout_s=0.3)
        peeps.register_provider("garbage", garbage)
        peeps.register_provider("good", good)
        queue = peeps.channel("demo.queue", 1)
        print("providers ready", flush=True)
        await queue.get()

    asyncio.run(main())
""")


def test_provider_failures_each_show_in_a_snapshot(
        server: PeepsServer, processes: list[ExampleProcess], tmp_path: Path) -> None:
    program = tmp_path / "providers_demo.py"
    program.write_text(PROVIDERS_PROGRAM)
    proc = ExampleProcess(program, dashboard=server.dashboard)
    processes.append(proc)
    proc.wait_for_output("providers ready")
    server.wait_connected(name="providers-demo")

    query = """
        SELECT json_extract(attrs, '$.provider') AS provider,
               json_extract(attrs, '$.error_kind') AS error_kind,
               json_extract(attrs, '$.error') AS error,
               json_extract(attrs, '$.skipped') AS skipped
        FROM nodes WHERE kind = 'provider_error' ORDER BY provider"""
    first = server.jump()
    assert first["responded"] == 1
    errors = {r["provider"]: r for r in server.rows(first["snapshot_id"], query)}
    assert set(errors) == {"raises", "hangs", "garbage"}
    assert errors["raises"]["error_kind"] == "raised"
    assert "inventory db is down" in errors["raises"]["error"]
    assert (errors["hangs"]["error_kind"], errors["hangs"]["skipped"]) == ("timeout", 0)
    assert errors["garbage"]["error_kind"] == "invalid"
    assert "not JSON-serializable" in errors["garbage"]["error"]
    # The rest of the snapshot is intact: the good provider, the channel, the tasks.
    kinds = {r["kind"] for r in server.rows(first["snapshot_id"],
                                            "SELECT DISTINCT kind FROM nodes")}
    assert {"db_pool", "channel", "task", "provider_error"} <= kinds
    assert "thing" not in kinds

    started = time.monotonic()
    second = server.jump()
    assert time.monotonic() - started < 2.0
    errors = {r["provider"]: r for r in server.rows(second["snapshot_id"], query)}
    assert (errors["hangs"]["error_kind"], errors["hangs"]["skipped"]) == ("timeout", 1)


SHM_PROGRAM = textwrap.dedent("""
    import asyncio, sys
    import peeps

    async def main():
        role = sys.argv[1]
        peeps.init(f"shm-{role}")
        if role == "creator":
            seg = peeps.shm(create=True, size=4096, purpose="frames")
            print(f"segment {seg.name}", flush=True)
        else:
            seg = peeps.shm(sys.argv[2], track=False)
            print("attached", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            seg.close()
            if role == "creator":
                seg.unlink()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
""")


def test_a_shared_memory_segment_is_seen_from_two_processes(
        server: PeepsServer, processes: list[ExampleProcess], tmp_path: Path) -> None:
    program = tmp_path / "shm_demo.py"
    program.write_text(SHM_PROGRAM)
    creator = ExampleProcess(program, dashboard=server.dashboard, args=["creator"])
    processes.append(creator)
    creator.wait_for_output("segment ")
    [line] = [x for x in creator.output if x.startswith("segment ")]
    name = line.split()[1]
    attacher = ExampleProcess(program, dashboard=server.dashboard, args=["attacher", name])
    processes.append(attacher)
    attacher.wait_for_output("attached")
    server.wait_connected(count=2)
    while len([p for p in server.connected() if p["process_name"].startswith("shm-")]) < 2:
        time.sleep(0.05)

    snap = server.jump()
    assert snap["responded"] == 2
    rows = server.rows(snap["snapshot_id"], """
        SELECT proc_key, json_extract(attrs, '$.role') AS role,
               json_extract(attrs, '$.creator_pid') AS creator_pid,
               json_extract(attrs, '$.pid') AS pid
        FROM nodes WHERE kind = 'shm_segment' AND label = ? ORDER BY role""", [name])
    assert [r["role"] for r in rows] == ["attached", "creator"]
    assert rows[0]["proc_key"].startswith("shm-attacher-")
    assert rows[1]["creator_pid"] == creator.proc.pid == rows[1]["pid"]
    assert rows[0]["pid"] == attacher.proc.pid

    g = Graph(graph_of(server, snap["snapshot_id"]))
    segs = [n for n in g.nodes if n["kind"] == "shm_segment" and n["label"] == name]
    procs = sorted(r["proc_key"] for r in rows)
    assert all(n["attrs"]["attached_in"] == procs for n in segs)
    attached = next(n for n in segs if n["attrs"]["role"] == "attached")
    assert attached["attrs"]["creator_pid"] == creator.proc.pid  # filled in by the join
    [link] = g.out(attached["id"], "touches")
    assert link["attrs"]["cross_process"] is True and link["attrs"]["shm_name"] == name
    assert json.dumps(g.by_id[link["dst"]]["attrs"]["meta"]).count("frames") == 1


def test_the_suspects_follow_the_wait_chain_into_the_other_process(
        server: PeepsServer, processes: list[ExampleProcess]) -> None:
    start_rpc_example(server, processes)
    wait_for_stuck_handler(server)
    time.sleep(1.2)  # past the analysis' long-wait threshold (1 s)
    snap = server.jump()
    g = Graph(graph_of(server, snap["snapshot_id"]))
    request = g.one(kind="request")
    semaphore = g.one(kind="semaphore", label="inventory.permits")
    suspects = server.get(f"/api/snapshots/{snap['snapshot_id']}/suspects")["suspects"]
    spanning = [s for s in suspects if request["id"] in s["node_ids"]]
    assert spanning, suspects
    chain = spanning[0]["node_ids"]
    # client task -> request -> (other process) response -> handler -> semaphore -> holder
    assert chain.index(request["id"]) < chain.index(semaphore["id"])
    assert g.by_id[chain[chain.index(semaphore["id"]) + 1]]["label"] == "inventory_janitor"
    assert spanning[0]["proc_key"] is None  # more than one process
