"""Diagnostic providers in-process: namespacing, edges to library nodes, and
each failure mode (raised, timeout, invalid) reported without costing the rest."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import peeps
from peeps._config import STATE
from peeps._tasks import current_task_entity


@pytest.fixture
def provider_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        peeps.unregister_provider(name)


def kinds(graph: Any, kind: str) -> list[Any]:
    return [n for n in graph["nodes"] if n["kind"] == kind]


def errors_by_provider(graph: Any) -> dict[str, Any]:
    return {n["attrs"]["provider"]: n for n in kinds(graph, "provider_error")}


def test_provider_nodes_are_namespaced_and_edges_may_reach_library_nodes(
        provider_names: list[str]) -> None:
    async def scenario() -> Any:
        me = current_task_entity()
        assert me is not None

        def pool() -> dict[str, Any]:
            return {
                "nodes": [
                    {"id": "pool", "kind": "db_pool", "label": "db pool",
                     "attrs": {"size": 4, "in_use": 4}},
                    {"id": "conn-1", "kind": "db_conn", "attrs": {"meta": {"sql": "SELECT 1"}}},
                ],
                "edges": [
                    {"src": "pool", "dst": "conn-1", "kind": "holds"},
                    {"src": me.id, "dst": "pool", "kind": "needs", "attrs": {"op": "checkout"}},
                    {"src": "pool", "dst": "nowhere:1:2", "kind": "needs"},
                ],
            }

        peeps.register_provider("app.db", pool)
        provider_names.append("app.db")
        return me.id, peeps.collect_graph()

    me_id, graph = asyncio.run(scenario())
    pid = STATE.pid
    [pool] = kinds(graph, "db_pool")
    [conn] = kinds(graph, "db_conn")
    assert pool["id"] == f"db_pool:{pid}:app.db/pool"
    assert conn["id"] == f"db_conn:{pid}:app.db/conn-1"
    assert conn["label"] == "conn-1"
    assert pool["attrs"]["provider"] == "app.db" and pool["attrs"]["in_use"] == 4
    assert conn["attrs"]["meta"] == {"sql": "SELECT 1"}
    assert {"created_at_ns", "age_ns", "meta"} <= set(pool["attrs"])
    edges = {(e["src"], e["dst"], e["kind"]) for e in graph["edges"]}
    assert (pool["id"], conn["id"], "holds") in edges
    assert (me_id, pool["id"], "needs") in edges
    # An edge to a node that does not exist is dropped like any other dangling edge.
    assert not any(e["dst"] == "nowhere:1:2" for e in graph["edges"])
    assert not kinds(graph, "provider_error")


def test_a_raising_provider_is_reported_and_the_rest_survives(provider_names: list[str]) -> None:
    def broken() -> Any:
        raise KeyError("no such table")

    peeps.register_provider("broken", broken)
    peeps.register_provider("fine", lambda: {"nodes": [{"id": "x", "kind": "thing"}]})
    provider_names += ["broken", "fine"]
    queue = peeps.channel("still.here", 1)

    graph = peeps.collect_graph()
    error = errors_by_provider(graph)["broken"]
    assert error["id"] == f"provider_error:{STATE.pid}:broken"
    assert error["attrs"]["error_kind"] == "raised"
    assert error["attrs"]["exception_type"] == "KeyError"
    assert "no such table" in error["attrs"]["error"]
    assert [n["label"] for n in kinds(graph, "thing")] == ["x"]
    assert [n["label"] for n in kinds(graph, "channel")] == ["still.here"]
    assert any(e["name"] == "provider.collect.raised" for e in graph["events"])
    del queue


@pytest.mark.parametrize(("result", "message"), [
    (None, "expected a dict"),
    ({"nodes": "nope"}, "'nodes' must be a list"),
    ({"nodes": [1]}, "nodes[0] is a int"),
    ({"nodes": [{"kind": "x"}]}, "nodes[0].id"),
    ({"nodes": [{"id": "a", "kind": "x"}, {"id": "a", "kind": "x"}]}, "duplicated"),
    ({"nodes": [{"id": "a", "kind": "x", "attrs": {"v": {1, 2}}}]}, "not JSON-serializable"),
    ({"nodes": [{"id": "a", "kind": "x", "attrs": {"v": math.nan}}]}, "not JSON-serializable"),
    ({"nodes": [], "edges": [{"src": "a", "kind": "needs"}]}, "edges[0].src"),
    ({"nodes": [{"id": str(i), "kind": "x"} for i in range(5001)]}, "too big"),
])
def test_garbage_is_reported_as_invalid(provider_names: list[str], result: Any,
                                        message: str) -> None:
    peeps.register_provider("garbage", lambda: result)
    provider_names.append("garbage")
    graph = peeps.collect_graph()
    error = errors_by_provider(graph)["garbage"]
    assert error["attrs"]["error_kind"] == "invalid"
    assert message in error["attrs"]["error"]
    assert not kinds(graph, "x")


def test_a_hung_provider_times_out_and_is_skipped_while_still_hung(
        provider_names: list[str]) -> None:
    release = threading.Event()
    calls = []

    def hangs() -> Any:
        calls.append(1)
        release.wait(30)
        return {"nodes": [{"id": "late", "kind": "late"}]}

    peeps.register_provider("hangs", hangs, timeout_s=1.0)
    peeps.register_provider("quick", lambda: {"nodes": [{"id": "q", "kind": "quick"}]})
    provider_names += ["hangs", "quick"]
    try:
        started = time.monotonic()
        first = peeps.collect_graph()
        assert time.monotonic() - started < 5.0
        error = errors_by_provider(first)["hangs"]
        assert error["attrs"]["error_kind"] == "timeout"
        assert error["attrs"]["skipped"] is False
        assert kinds(first, "quick")

        started = time.monotonic()
        second = peeps.collect_graph()
        # Not waited for again: waiting would take the whole 1 s timeout (the
        # margin is for a busy CI machine, not for a wait).
        assert time.monotonic() - started < 0.5
        error = errors_by_provider(second)["hangs"]
        assert error["attrs"]["error_kind"] == "timeout"
        assert error["attrs"]["skipped"] is True
        assert error["attrs"]["hung_ns"] >= 1_000_000_000
        assert calls == [1]
        assert kinds(second, "quick")
    finally:
        release.set()
    for thread in threading.enumerate():
        if thread.name == "peeps-provider:hangs":
            thread.join(5)

    third = peeps.collect_graph()  # returned: called again, healthy
    assert calls == [1, 1]
    assert "hangs" not in errors_by_provider(third)
    [late] = kinds(third, "late")
    assert late["attrs"]["provider"] == "hangs"


def test_register_validates_and_unregister_removes(provider_names: list[str]) -> None:
    with pytest.raises(ValueError, match="provider name"):
        peeps.register_provider("bad name!", dict)
    with pytest.raises(TypeError):
        peeps.register_provider("ok", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout_s"):
        peeps.register_provider("ok", dict, timeout_s=0)
    peeps.register_provider("temp", lambda: {"nodes": [{"id": "t", "kind": "temp"}]})
    assert "temp" in peeps.providers()
    assert kinds(peeps.collect_graph(), "temp")
    assert peeps.unregister_provider("temp") is True
    assert peeps.unregister_provider("temp") is False
    assert not kinds(peeps.collect_graph(), "temp")


def test_builtin_providers_are_listed() -> None:
    assert {"connections", "shared_memory"} <= set(peeps.providers())


def test_provider_attrs_are_redacted(provider_names: list[str]) -> None:
    peeps.register_provider("secrets", lambda: {
        "nodes": [{"id": "s", "kind": "svc", "attrs": {"password": "hunter2", "port": 5}}]})
    provider_names.append("secrets")
    [svc] = kinds(peeps.collect_graph(), "svc")
    assert svc["attrs"]["password"] != "hunter2"
    assert svc["attrs"]["port"] == 5
