"""The ``connections`` built-in provider over instrumented asyncio streams."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import tempfile
from typing import Any

import peeps
from peeps._config import STATE


def connections(graph: Any) -> dict[str, Any]:
    return {n["attrs"]["role"]: n for n in graph["nodes"] if n["kind"] == "connection"}


def test_stream_connection_counts_bytes_and_shows_blocked_reader() -> None:
    async def scenario() -> Any:
        got_hello = asyncio.Event()
        server_done = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            line = await reader.readline()
            assert line == b"hello\n"
            got_hello.set()
            writer.write(b"0123456789")
            await writer.drain()
            await server_done.wait()
            writer.close()
            await writer.wait_closed()

        server = await peeps.start_server(serve, "127.0.0.1", 0, peeps_meta={"svc": "echo"})
        port = server.sockets[0].getsockname()[1]
        reader, writer = await peeps.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        await writer.drain()
        await got_hello.wait()
        assert await reader.readexactly(10) == b"0123456789"
        blocked = peeps.tasks.spawn_tracked("blocked_reader", reader.readexactly(5))
        await asyncio.sleep(0.02)
        graph = await asyncio.to_thread(peeps.collect_graph)
        server_done.set()
        with contextlib.suppress(asyncio.IncompleteReadError):
            await blocked
        after = await asyncio.to_thread(peeps.collect_graph)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return port, graph, after

    port, graph, after = asyncio.run(scenario())
    conns = connections(graph)
    client, server = conns["client"], conns["server"]
    assert client["attrs"]["peer"] == f"127.0.0.1:{port}"
    assert server["attrs"]["local"] == f"127.0.0.1:{port}"
    assert client["attrs"]["local"] == server["attrs"]["peer"]
    assert (client["attrs"]["bytes_out"], client["attrs"]["bytes_in"]) == (6, 10)
    assert (server["attrs"]["bytes_in"], server["attrs"]["bytes_out"]) == (6, 10)
    assert client["attrs"]["state"] == server["attrs"]["state"] == "open"
    assert client["attrs"]["transport"] == "tcp" and client["attrs"]["provider"] == "connections"
    assert server["attrs"]["meta"]["svc"] == "echo"
    assert client["attrs"]["meta"]["ctx.location"].split(":")[0].endswith(
        "test_providers_connections.py")
    assert client["attrs"]["idle_ns"] >= 0 and client["attrs"]["last_activity_at_ns"] > 0
    blocked = next(n for n in graph["nodes"] if n["label"] == "blocked_reader")
    [edge] = [e for e in graph["edges"] if e["dst"] == client["id"]]
    assert (edge["src"], edge["kind"], edge["attrs"]["op"]) == (blocked["id"], "needs", "recv")
    # The server closed its side: the client saw EOF.
    assert connections(after)["client"]["attrs"]["state"] in ("eof", "closing")
    opened = [e for e in after["events"] if e["name"] == "net.connection.opened"
              and e["entity_id"] in (client["id"], server["id"])]
    assert len(opened) == 2
    closed = [e for e in after["events"] if e["name"] == "net.connection.closed"
              and e["entity_id"] == server["id"]]
    assert closed and closed[0]["attrs"]["bytes_out"] == 10


def test_unix_stream_connection_is_tracked_and_dropped_when_collected() -> None:
    async def scenario() -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "s.sock")

            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.write(await reader.read(3))
                await writer.drain()
                writer.close()

            server = await peeps.start_unix_server(serve, path)
            reader, writer = await peeps.open_unix_connection(path)
            writer.write(b"abc")
            assert await reader.read(3) == b"abc"
            graph = peeps.collect_graph()
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()
            del reader, writer
            return graph

    graph = asyncio.run(scenario())
    conns = [n for n in graph["nodes"] if n["kind"] == "connection"]
    assert {c["attrs"]["transport"] for c in conns} == {"unix"}
    assert any(c["attrs"]["role"] == "client" and c["attrs"]["bytes_in"] == 3 for c in conns)
    gc.collect()
    assert not [n for n in peeps.collect_graph()["nodes"] if n["kind"] == "connection"]


def test_disabled_streams_are_plain() -> None:
    async def scenario() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await peeps.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await peeps.open_connection("127.0.0.1", port)
        assert type(writer) is asyncio.StreamWriter
        assert type(reader) is asyncio.StreamReader
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

    STATE.enabled = False
    try:
        asyncio.run(scenario())
    finally:
        STATE.enabled = True
