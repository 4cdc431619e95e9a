"""The aiohttp integration in one process: a real server with the middleware, a
real client with the trace config, a handler stuck until released."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession, web

import peeps
from peeps.analysis._crossproc import join_cross_process
from peeps.integrations.aiohttp import client_trace_config, middleware


def by_kind(graph: Any, kind: str) -> list[Any]:
    return [n for n in graph["nodes"] if n["kind"] == kind]


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def test_client_request_joins_server_response_through_real_http() -> None:
    async def scenario() -> Any:
        release = asyncio.Event()
        entered = asyncio.Event()
        seen_headers: dict[str, str] = {}

        async def stuck(request: web.Request) -> web.Response:
            seen_headers.update({k.lower(): v for k, v in request.headers.items()})
            entered.set()
            await release.wait()
            return web.Response(text="ok")

        app = web.Application(middlewares=[middleware])
        app.router.add_get("/stuck/{item}", stuck)
        runner, base = await _serve(app)
        try:
            async with ClientSession(trace_configs=[client_trace_config()]) as session:
                async def call() -> str:
                    async with session.get(f"{base}/stuck/7", headers={"X-App": "1"}) as r:
                        return await r.text()

                caller = peeps.tasks.spawn_tracked("caller", call())
                await asyncio.wait_for(entered.wait(), 5)
                graph = await asyncio.to_thread(peeps.collect_graph)
                release.set()
                assert await caller == "ok"
                after = await asyncio.to_thread(peeps.collect_graph)
        finally:
            await runner.cleanup()
        return seen_headers, graph, after

    headers, graph, after = asyncio.run(scenario())
    [req] = by_kind(graph, "request")
    [resp] = by_kind(graph, "response")
    assert req["label"].startswith("GET /stuck/7 http://127.0.0.1:")
    assert req["attrs"]["meta"]["ctx.location"].split(":")[0].endswith("test_rpc_aiohttp.py")
    assert resp["label"] == "GET /stuck/{item}"
    assert resp["attrs"]["meta"]["path"] == "/stuck/7"
    assert resp["attrs"]["meta"]["ctx.location"].split(":")[0].endswith("test_rpc_aiohttp.py")
    assert headers["peeps.span_id"] == req["attrs"]["span_id"] == resp["attrs"]["span_id"]
    assert headers["x-app"] == "1"
    assert resp["attrs"]["propagated"] is True and resp["attrs"]["peer"] == "127.0.0.1"

    ids = {n["id"]: n for n in graph["nodes"]}
    edges = {(e["src"], e["dst"], e["kind"]) for e in graph["edges"]}
    caller = next(n for n in graph["nodes"] if n["label"] == "caller")
    assert (caller["id"], req["id"], "needs") in edges
    [handler_edge] = [e for e in graph["edges"] if e["src"] == resp["id"] and e["kind"] == "needs"]
    handler_task = ids[handler_edge["dst"]]
    assert handler_task["kind"] == "task"
    assert any("in stuck" in frame for frame in handler_task["attrs"]["stack"])

    conns = {n["attrs"]["role"]: n for n in by_kind(graph, "connection")}
    client_conn, server_conn = conns["client"], conns["server"]
    assert (req["id"], client_conn["id"], "touches") in edges
    assert (resp["id"], server_conn["id"], "touches") in edges
    assert client_conn["attrs"]["in_flight"] == 1 and client_conn["attrs"]["pooled"] is True
    assert server_conn["attrs"]["in_flight"] == 1
    assert server_conn["attrs"]["peer"].startswith("127.0.0.1:")
    assert server_conn["attrs"]["local"] == req["attrs"]["target"].removeprefix("http://")
    assert server_conn["attrs"]["state"] == "open"

    # The join (the server does this across processes) links the two sides.
    for n in graph["nodes"]:
        n["proc_key"] = "p"
    _, joined = join_cross_process(graph["nodes"], graph["edges"])
    assert any(e["src"] == req["id"] and e["dst"] == resp["id"] and e["attrs"].get("joined")
               for e in joined)

    assert not by_kind(after, "request") and not by_kind(after, "response")
    done = [e for e in after["events"] if e["name"] == "rpc.request.completed"
            and e["attrs"]["span_id"] == req["attrs"]["span_id"]]
    assert done and done[0]["attrs"]["status"] == 200
    served = [e for e in after["events"] if e["name"] == "rpc.response.completed"
              and e["attrs"]["span_id"] == req["attrs"]["span_id"]]
    assert served and served[0]["attrs"]["status"] == 200
    assert {"queue_wait_ns", "handler_ns", "total_ns"} <= set(served[0]["attrs"])


def test_client_failure_and_http_errors_are_recorded() -> None:
    async def scenario() -> Any:
        async def missing(request: web.Request) -> web.Response:
            raise web.HTTPNotFound()

        app = web.Application(middlewares=[middleware])
        app.router.add_get("/missing", missing)
        runner, base = await _serve(app)
        try:
            async with ClientSession(trace_configs=[client_trace_config()]) as session:
                async with session.get(f"{base}/missing") as r:
                    assert r.status == 404
                try:
                    async with session.get("http://127.0.0.1:1/refused"):
                        pass
                except OSError:
                    pass
        finally:
            await runner.cleanup()
        return await asyncio.to_thread(peeps.collect_graph)

    graph = asyncio.run(scenario())
    pools = [n for n in graph["nodes"] if n["kind"] == "connection" and n["attrs"].get("pooled")]
    assert pools and all(p["attrs"]["state"] == "closed" for p in pools)  # session closed
    failed = [e for e in graph["events"] if e["name"] == "rpc.request.failed"
              and e["attrs"]["target"] == "http://127.0.0.1:1"]
    assert failed and failed[-1]["attrs"]["outcome"] == "failed"
    served = [e for e in graph["events"] if e["name"] == "rpc.response.completed"
              and e["attrs"]["method"] == "GET /missing"]
    assert served and served[-1]["attrs"]["status"] == 404
    assert served[-1]["attrs"]["outcome"] == "completed"
