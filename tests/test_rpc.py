"""RPC request/response nodes in-process: span propagation, needs edges,
nested requests, events, threads, disabled mode; and the cross-process join."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import peeps
from peeps._config import STATE
from peeps.analysis._crossproc import GHOST_PROC_KEY, join_cross_process


def by_kind(graph: Any, kind: str) -> list[Any]:
    return [n for n in graph["nodes"] if n["kind"] == kind]


def edge_set(graph: Any) -> set[tuple[str, str, str]]:
    return {(e["src"], e["dst"], e["kind"]) for e in graph["edges"]}


def events_named(graph: Any, name: str, span_id: str | None = None) -> list[Any]:
    """Events of one name (the ring buffer outlives tests: narrow by span)."""
    return [e for e in graph["events"] if e["name"] == name
            and (span_id is None or e["attrs"].get("span_id") == span_id)]


def test_request_fills_headers_and_the_waiting_task_needs_it() -> None:
    async def scenario() -> Any:
        answered = asyncio.Event()
        headers: dict[str, str] = {"accept": "json"}

        async def client() -> None:
            async with peeps.rpc.request("GET /users", headers, target="http://users:80",
                                         tenant="acme") as req:
                assert req.headers is headers
                await answered.wait()
                req.set_status(200)

        task = peeps.tasks.spawn_tracked("client", client())
        await asyncio.sleep(0.01)
        graph = peeps.collect_graph()
        answered.set()
        await task
        return headers, graph, peeps.collect_graph()

    headers, during, after = asyncio.run(scenario())
    [req] = by_kind(during, "request")
    assert req["label"] == "GET /users http://users:80"
    attrs = req["attrs"]
    assert attrs["method"] == "GET /users" and attrs["target"] == "http://users:80"
    assert attrs["state"] == "in_flight"
    assert attrs["elapsed_ns"] > 0 and attrs["started_at_ns"] > 0
    assert attrs["meta"]["tenant"] == "acme"
    assert headers["peeps.span_id"] == attrs["span_id"] and len(attrs["span_id"]) == 16
    assert headers["peeps.chain_id"] == attrs["span_id"]  # a root request starts its chain
    assert "peeps.parent_span_id" not in headers and attrs["parent_span_id"] is None
    assert headers["accept"] == "json"
    client = next(n for n in during["nodes"] if n["label"] == "client")
    [needs] = [e for e in during["edges"] if e["dst"] == req["id"]]
    assert (needs["src"], needs["kind"], needs["attrs"]["op"]) == (client["id"], "needs", "response")

    assert not by_kind(after, "request")  # answered: gone
    [sent] = events_named(after, "rpc.request.sent", attrs["span_id"])
    [done] = events_named(after, "rpc.request.completed", attrs["span_id"])
    assert sent["parent_entity_id"] == client["id"]
    assert done["attrs"]["status"] == 200 and done["attrs"]["total_ns"] > 0
    assert done["attrs"]["span_id"] == attrs["span_id"]


def test_response_continues_the_span_and_nested_requests_keep_their_parent() -> None:
    async def scenario() -> Any:
        release = asyncio.Event()
        incoming = {"Peeps.Span_Id": "aaaaaaaaaaaaaaaa", "peeps.chain_id": "cccccccccccccccc",
                    "peeps.parent_span_id": "pppppppppppppppp"}
        nested_headers: dict[str, str] = {}

        async def handler() -> None:
            resp = peeps.rpc.response(incoming, method="POST /orders", peer="10.0.0.1:5555")
            await asyncio.sleep(0.02)  # queued before the handler starts
            async with resp:
                assert peeps.rpc.current_span() == ("aaaaaaaaaaaaaaaa", "cccccccccccccccc")
                async with peeps.rpc.request("GET /stock", nested_headers, target="stock"):
                    await release.wait()
            assert peeps.rpc.current_span() is None

        task = peeps.tasks.spawn_tracked("handler", handler())
        await asyncio.sleep(0.05)
        graph = peeps.collect_graph()
        release.set()
        await task
        return nested_headers, graph, peeps.collect_graph()

    nested_headers, during, after = asyncio.run(scenario())
    [resp] = by_kind(during, "response")
    [nested] = by_kind(during, "request")
    handler = next(n for n in during["nodes"] if n["label"] == "handler")
    ra = resp["attrs"]
    assert (ra["span_id"], ra["chain_id"], ra["parent_span_id"]) == (
        "aaaaaaaaaaaaaaaa", "cccccccccccccccc", "pppppppppppppppp")
    assert ra["propagated"] is True and ra["peer"] == "10.0.0.1:5555"
    assert ra["state"] == "handling"
    assert ra["queue_wait_ns"] >= 15_000_000
    na = nested["attrs"]
    assert na["parent_span_id"] == "aaaaaaaaaaaaaaaa" and na["chain_id"] == "cccccccccccccccc"
    assert nested_headers["peeps.parent_span_id"] == "aaaaaaaaaaaaaaaa"
    assert nested_headers["peeps.chain_id"] == "cccccccccccccccc"
    assert nested_headers["peeps.span_id"] == na["span_id"] != "aaaaaaaaaaaaaaaa"
    edges = edge_set(during)
    assert (resp["id"], handler["id"], "needs") in edges
    assert (handler["id"], nested["id"], "needs") in edges

    [started] = events_named(after, "rpc.response.started", "aaaaaaaaaaaaaaaa")
    assert started["attrs"]["queue_wait_ns"] >= 15_000_000
    [completed] = events_named(after, "rpc.response.completed", "aaaaaaaaaaaaaaaa")
    a = completed["attrs"]
    assert a["outcome"] == "completed"
    assert a["total_ns"] == a["queue_wait_ns"] + a["handler_ns"]
    assert a["handler_ns"] > 0
    assert not by_kind(after, "response")


def test_a_failed_request_and_a_failed_handler_emit_failures() -> None:
    async def scenario() -> Any:
        with pytest.raises(ConnectionError):
            async with peeps.rpc.request("GET /x") as req:
                raise ConnectionError("refused")
        with pytest.raises(KeyError):
            async with peeps.rpc.response({}, method="GET /y") as resp:
                assert resp.propagated is False
                raise KeyError("y")
        return req.span_id, resp.span_id, peeps.collect_graph()

    req_span, resp_span, graph = asyncio.run(scenario())
    [failed] = events_named(graph, "rpc.request.failed", req_span)
    assert failed["attrs"]["exception_type"] == "ConnectionError"
    assert failed["attrs"]["outcome"] == "failed"
    [resp_failed] = events_named(graph, "rpc.response.failed", resp_span)
    assert resp_failed["attrs"]["exception_type"] == "KeyError"
    [done] = events_named(graph, "rpc.response.completed", resp_span)
    assert done["attrs"]["outcome"] == "failed"


def test_request_from_a_plain_thread_works_as_a_sync_context_manager() -> None:
    inside = threading.Event()
    release = threading.Event()
    headers: dict[str, str] = {}

    def worker() -> None:
        with peeps.rpc.request("GET /sync", headers):
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert inside.wait(5)
        [req] = by_kind(peeps.collect_graph(), "request")
        assert req["attrs"]["state"] == "in_flight"
        assert headers["peeps.span_id"] == req["attrs"]["span_id"]
    finally:
        release.set()
        thread.join(5)
    assert not by_kind(peeps.collect_graph(), "request")


def test_hostile_headers_are_bounded() -> None:
    resp = peeps.rpc.response({"peeps.span_id": "x" * 10_000, "peeps.chain_id": b"abc"},
                              method="GET /")
    assert resp.propagated is False and len(resp.span_id) == 16
    assert resp.chain_id == "abc"
    resp.finish()


def test_disabled_rpc_is_inert() -> None:
    STATE.enabled = False
    try:
        headers: dict[str, str] = {}

        async def scenario() -> None:
            async with peeps.rpc.request("GET /", headers) as req:
                assert req.headers is headers
            async with peeps.rpc.response({"peeps.span_id": "a" * 16}, method="GET /"):
                pass

        asyncio.run(scenario())
        assert headers == {}
    finally:
        STATE.enabled = True
    assert not by_kind(peeps.collect_graph(), "request")


# -- the cross-process join (pure) ------------------------------------------------


def _node(proc: str, nid: str, kind: str, **attrs: Any) -> dict[str, Any]:
    return {"proc_key": proc, "id": nid, "kind": kind, "label": nid, "attrs": attrs}


def _edge(proc: str, src: str, dst: str, kind: str = "needs") -> dict[str, Any]:
    return {"proc_key": proc, "src": src, "dst": dst, "kind": kind, "attrs": {}}


def test_join_links_request_to_response_across_processes() -> None:
    nodes = [
        _node("client-1", "task:1:1", "task"),
        _node("client-1", "request:1:2", "request", span_id="s1", chain_id="s1",
              method="GET /", target="http://srv", elapsed_ns=5_000, started_at_ns=10),
        _node("server-2", "response:2:1", "response", span_id="s1", chain_id="s1",
              propagated=True),
        _node("server-2", "task:2:2", "task"),
    ]
    edges = [_edge("client-1", "task:1:1", "request:1:2"),
             _edge("server-2", "response:2:1", "task:2:2")]
    out_nodes, out_edges = join_cross_process(nodes, edges)
    assert len(out_nodes) == 4
    [join] = [e for e in out_edges if e["attrs"].get("joined")]
    assert (join["src"], join["dst"], join["kind"]) == ("request:1:2", "response:2:1", "needs")
    assert join["attrs"]["cross_process"] is True and join["proc_key"] == "client-1"
    assert join["attrs"]["dst_proc_key"] == "server-2"
    assert (join["attrs"]["waited_ns"], join["attrs"]["since_ns"]) == (5_000, 10)
    # Idempotent, and the input is untouched.
    again_nodes, again_edges = join_cross_process(out_nodes, out_edges)
    assert len(again_nodes) == 4 and len(again_edges) == 3
    assert len(edges) == 2


def test_join_adds_ghosts_for_missing_sides() -> None:
    nodes = [
        _node("client-1", "request:1:2", "request", span_id="lonely", chain_id="c",
              method="GET /a", target="http://srv:1"),
        _node("server-2", "response:2:1", "response", span_id="orphan", chain_id="c2",
              parent_span_id="p", method="GET /b", propagated=True, peer="1.2.3.4:5"),
        _node("server-2", "response:2:9", "response", span_id="root", propagated=False),
    ]
    out_nodes, out_edges = join_cross_process(nodes, [])
    ghosts = {n["id"]: n for n in out_nodes if n["attrs"].get("ghost")}
    assert set(ghosts) == {"response:ghost:lonely", "request:ghost:orphan"}
    gr = ghosts["response:ghost:lonely"]
    assert gr["kind"] == "response" and gr["proc_key"] == GHOST_PROC_KEY
    assert gr["attrs"]["expected_peer"] == "http://srv:1" and gr["attrs"]["method"] == "GET /a"
    gq = ghosts["request:ghost:orphan"]
    assert gq["kind"] == "request" and gq["attrs"]["expected_peer"] == "1.2.3.4:5"
    assert gq["attrs"]["parent_span_id"] == "p" and gq["attrs"]["chain_id"] == "c2"
    pairs = {(e["src"], e["dst"]) for e in out_edges}
    assert pairs == {("request:1:2", "response:ghost:lonely"),
                     ("request:ghost:orphan", "response:2:1")}


def test_join_hangs_a_nested_request_under_its_parent_response_when_not_already_linked() -> None:
    nodes = [
        _node("srv-1", "response:1:1", "response", span_id="P", chain_id="C", propagated=False),
        _node("srv-1", "task:1:2", "task"),
        _node("srv-1", "task:1:3", "task"),
        _node("srv-1", "request:1:4", "request", span_id="A", parent_span_id="P", chain_id="C"),
        _node("srv-1", "request:1:5", "request", span_id="B", parent_span_id="P", chain_id="C"),
        _node("db-2", "response:2:1", "response", span_id="A", parent_span_id="P",
              chain_id="C", propagated=True),
        _node("db-2", "response:2:2", "response", span_id="B", parent_span_id="P",
              chain_id="C", propagated=True),
    ]
    edges = [_edge("srv-1", "response:1:1", "task:1:2"),
             _edge("srv-1", "task:1:2", "request:1:4"),  # the handler itself waits on A
             _edge("srv-1", "task:1:3", "request:1:5")]  # a helper task waits on B
    _, out_edges = join_cross_process(nodes, edges)
    inferred = [(e["src"], e["dst"]) for e in out_edges if e["attrs"].get("op") == "nested"]
    assert inferred == [("response:1:1", "request:1:5")]


def test_join_links_shared_memory_segments_by_name() -> None:
    nodes = [
        _node("a-1", "shm_segment:1:1", "shm_segment", name="seg", role="creator",
              creator_pid=1),
        _node("b-2", "shm_segment:2:1", "shm_segment", name="seg", role="attached",
              creator_pid=None),
        _node("c-3", "shm_segment:3:1", "shm_segment", name="seg", role="attached"),
        _node("c-3", "shm_segment:3:2", "shm_segment", name="other", role="attached"),
    ]
    out_nodes, out_edges = join_cross_process(nodes, [])
    seg = {n["id"]: n["attrs"] for n in out_nodes}
    assert seg["shm_segment:2:1"]["attached_in"] == ["a-1", "b-2", "c-3"]
    assert seg["shm_segment:2:1"]["creator_pid"] == 1
    assert seg["shm_segment:3:2"]["attached_in"] == ["c-3"]
    assert nodes[1]["attrs"]["creator_pid"] is None  # input untouched
    assert {(e["src"], e["dst"], e["kind"]) for e in out_edges} == {
        ("shm_segment:2:1", "shm_segment:1:1", "touches"),
        ("shm_segment:3:1", "shm_segment:1:1", "touches"),
    }


def test_public_namespaces_reexport_and_the_core_never_imports_aiohttp() -> None:
    import subprocess
    import sys

    from peeps import _rpc, _shm, rpc, shared_memory

    for name in rpc.__all__:
        assert getattr(rpc, name) is getattr(_rpc, name)
    for name in shared_memory.__all__:
        assert getattr(shared_memory, name) is getattr(_shm, name)
    for name in ("register_provider", "unregister_provider", "providers", "current_node_id",
                 "open_connection", "start_server", "open_unix_connection",
                 "start_unix_server", "shm", "rpc", "shared_memory"):
        assert name in peeps.__all__ and hasattr(peeps, name)
    code = ("import sys, peeps, peeps.rpc, peeps.shared_memory, peeps.analysis; "
            "assert 'aiohttp' not in sys.modules, 'peeps imported aiohttp'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _rpc_graphs() -> Any:
    from hypothesis import strategies as st

    spans = st.sampled_from(["s1", "s2", "s3", "s4"])
    procs = st.sampled_from(["a-1", "b-2", "c-3"])
    node = st.tuples(st.sampled_from(["request", "response", "task"]), procs, spans,
                     st.booleans(), st.one_of(st.none(), spans))
    return st.lists(node, max_size=12)


def test_join_properties_hold_for_any_mix_of_requests_and_responses() -> None:
    import copy

    from hypothesis import given, settings

    @settings(max_examples=200, deadline=None)
    @given(_rpc_graphs())
    def check(raw: list[tuple[str, str, str, bool, str | None]]) -> None:
        nodes = [_node(proc, f"{kind}:{i}", kind, span_id=span, propagated=prop,
                       parent_span_id=parent)
                 for i, (kind, proc, span, prop, parent) in enumerate(raw)]
        before = copy.deepcopy(nodes)
        out_nodes, out_edges = join_cross_process(nodes, [])
        assert nodes == before  # input untouched
        by_id = {n["id"]: n for n in out_nodes}
        assert len(by_id) == len(out_nodes)  # ids stay unique
        for e in out_edges:  # every edge lands on real or ghost nodes
            assert e["src"] in by_id and e["dst"] in by_id
        responses = {n["attrs"]["span_id"] for n in nodes if n["kind"] == "response"}
        requests = {n["attrs"]["span_id"] for n in nodes if n["kind"] == "request"}
        for n in nodes:
            joined = [e for e in out_edges if e["attrs"].get("joined")
                      and n["id"] in (e["src"], e["dst"])]
            span = n["attrs"]["span_id"]
            if n["kind"] == "request":
                assert joined and all(by_id[e["dst"]]["attrs"]["span_id"] == span
                                      for e in joined)
                assert any(by_id[e["dst"]]["attrs"].get("ghost") for e in joined) == (
                    span not in responses)
            elif n["kind"] == "response":
                expect_ghost = span not in requests and n["attrs"]["propagated"]
                assert any(by_id[e["src"]]["attrs"].get("ghost") for e in joined) == expect_ghost
        again = join_cross_process(out_nodes, out_edges)
        assert (len(again[0]), len(again[1])) == (len(out_nodes), len(out_edges))

    check()
