"""Subprocess and file-operation nodes under real waits."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from pathlib import Path
from typing import Any

import peeps
import peeps.io
from graph_support import edges, settle
from peeps._config import STATE
from peeps._registry import REGISTRY
from peeps._tasks import entity_for_task


def task_id(task: Any) -> str:
    entity = entity_for_task(task)
    assert entity is not None
    return entity.id


def test_subprocess_node_while_waited_and_after_exit() -> None:
    async def scenario() -> None:
        proc = await peeps.io.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdin.read(); print('bye')",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, label="child")
        assert isinstance(proc, peeps.io.TrackedProcess)
        waiter = peeps.tasks.spawn_tracked("waiter", proc.wait())
        await settle()
        g = peeps.collect_graph()
        (n,) = [x for x in g["nodes"] if x["id"] == proc._peeps_id]
        assert n["kind"] == "subprocess" and n["label"] == "child"
        assert n["attrs"]["pid"] == proc.pid and n["attrs"]["running"] is True
        assert n["attrs"]["command"].startswith(sys.executable)
        (needs,) = edges(g, "needs", dst=proc._peeps_id)
        assert needs["src"] == task_id(waiter) and needs["attrs"]["op"] == "wait"
        out, _ = await proc.communicate(b"")
        assert out.strip() == b"bye"
        assert await waiter == 0
        g = peeps.collect_graph()
        (n,) = [x for x in g["nodes"] if x["id"] == proc._peeps_id]
        assert n["attrs"]["returncode"] == 0 and n["attrs"]["running"] is False
        assert not edges(g, "needs", dst=proc._peeps_id)
        proc_id = proc._peeps_id
        del proc, n
        gc.collect()
        assert proc_id not in {x["id"] for x in peeps.collect_graph()["nodes"]}

    asyncio.run(scenario())


def test_file_ops_are_nodes_while_they_run(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "data.txt"
        assert await peeps.io.write_file(path, "hello") == 5
        assert await peeps.io.read_file(path) == "hello"
        assert await peeps.io.read_file(path, binary=True) == b"hello"
        release = threading.Event()

        def blocked() -> str:
            release.wait(10)
            return "done"

        t = peeps.tasks.spawn_tracked("caller", peeps.io.to_thread(blocked, label="slow call"))
        await settle()
        g = peeps.collect_graph()
        (n,) = [x for x in g["nodes"] if x["label"] == "slow call"]
        assert n["kind"] == "file_op" and n["attrs"]["op"] == "call"
        assert edges(g, "needs", src=task_id(t), dst=n["id"])
        release.set()
        assert await t == "done"
        assert n["id"] not in {x["id"] for x in peeps.collect_graph()["nodes"]}

    asyncio.run(scenario())


def test_io_disabled_registers_nothing(tmp_path: Path) -> None:
    STATE.enabled = False
    try:
        async def scenario() -> None:
            before = len(REGISTRY._resources)
            proc = await peeps.io.create_subprocess_exec(sys.executable, "-c", "pass")
            assert isinstance(proc, asyncio.subprocess.Process)
            await proc.wait()
            await peeps.io.write_file(tmp_path / "x", b"x")
            assert len(REGISTRY._resources) == before

        asyncio.run(scenario())
    finally:
        STATE.enabled = True
