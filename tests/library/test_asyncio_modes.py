"""Disabled mode (plain stdlib objects, no registry work), ``patch()``/``unpatch()``,
and the three asyncio example scenarios reaching their stall."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

import peeps
from peeps._config import STATE
from peeps._registry import REGISTRY
from peeps._tasks import entity_for_task

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def disabled() -> Iterator[None]:
    STATE.enabled = False
    try:
        yield
    finally:
        STATE.enabled = True


@pytest.fixture(autouse=True)
def _unpatched() -> Iterator[None]:
    yield
    peeps.unpatch()
    assert asyncio.Lock.__module__ == "asyncio.locks"


def registry_size() -> tuple[int, int]:
    return len(REGISTRY._resources), len(REGISTRY.tasks)


def test_disabled_wrappers_are_plain_and_register_nothing(disabled: None) -> None:
    async def scenario() -> None:
        before = registry_size()
        made: dict[str, Any] = {
            "Lock": peeps.Lock("x"),
            "Semaphore": peeps.Semaphore(2, name="x"),
            "BoundedSemaphore": peeps.BoundedSemaphore(2, name="x"),
            "Event": peeps.Event("x"),
            "Condition": peeps.Condition(name="x"),
        }
        for name, obj in made.items():
            assert type(obj) is getattr(asyncio, name), name  # the stdlib class itself
        notify = peeps.Notify("x")
        rw = peeps.RWLock("x")
        cell: Any = peeps.OnceCell("x")
        assert type(notify).__name__ == "PlainNotify"
        assert type(rw).__name__ == "PlainRWLock"
        assert type(cell).__name__ == "PlainOnceCell"
        ch: Any = peeps.channel("x", 2)
        assert type(ch).__name__ == "PlainChannel"
        tx, rx = peeps.oneshot("x")
        w = peeps.watch(0, name="x")
        ticker = peeps.interval(0.01)
        tm = peeps.timeout(1)
        # They still work.
        async with made["Lock"], made["Semaphore"], rw.read(), tm:
            await ch.send(1)
            assert await ch.recv() == 1
            tx.send("v")
            assert await rx == "v"
            w.send(1)
            assert await cell.get_or_init(lambda: asyncio.sleep(0, "init")) == "init"
            notify.notify_one()
            await notify.notified()
            assert await ticker.tick() == 0
            await peeps.sleep(0)
            t = peeps.tasks.spawn_tracked("plain", asyncio.sleep(0))
            await t
            assert entity_for_task(t) is None
        assert registry_size() == before
        assert not [n for n in peeps.collect_graph()["nodes"] if n["label"] == "x"]

    asyncio.run(scenario())


def test_disabled_mode_leaves_auto_off(disabled: None) -> None:
    peeps.init(auto=True)
    from peeps import _autotrack

    assert not _autotrack.loop_hooks_installed()


def test_patch_replaces_asyncio_names_and_unpatch_restores() -> None:
    from asyncio import Lock as EarlyLock  # bound before patching: stays the original

    originals = {n: getattr(asyncio, n) for n in
                 ("Lock", "Queue", "Semaphore", "BoundedSemaphore", "Event", "Condition")}
    peeps.patch()
    peeps.patch()  # idempotent

    async def scenario() -> None:
        lock = asyncio.Lock()
        assert isinstance(lock, peeps.Lock)
        queue: asyncio.Queue[int] = asyncio.Queue(3)
        assert isinstance(queue, peeps.Channel) and queue.maxsize == 3
        sem = asyncio.BoundedSemaphore(2)
        assert isinstance(sem, peeps.BoundedSemaphore)
        cond = asyncio.Condition()
        event = asyncio.Event()
        assert isinstance(cond, peeps.Condition) and isinstance(event, peeps.Event)
        assert not isinstance(EarlyLock(), peeps.Lock)
        # ... and host code's isinstance checks against the asyncio names
        # still accept stdlib objects, as before patching.
        assert isinstance(EarlyLock(), asyncio.Lock) and issubclass(EarlyLock, asyncio.Lock)
        assert isinstance(lock, asyncio.Lock) and isinstance(queue, asyncio.Queue)

        class Derived(asyncio.Lock):  # deriving from a patched name: instrumented
            pass

        derived = Derived()
        assert isinstance(derived, peeps.Lock) and isinstance(derived, asyncio.Lock)
        assert not isinstance(EarlyLock(), Derived)
        kinds = {n["kind"] for n in peeps.collect_graph()["nodes"]
                 if n["id"] in {lock._peeps_id, queue._peeps_id,  # type: ignore[attr-defined]
                                sem._peeps_id, event._peeps_id}}  # type: ignore[attr-defined]
        assert kinds == {"lock", "channel", "semaphore", "event"}
        async with lock:
            await queue.put(1)
            assert await queue.get() == 1

    asyncio.run(scenario())
    peeps.unpatch()
    for name, original in originals.items():
        assert getattr(asyncio, name) is original


def test_patched_names_with_peeps_disabled_give_stdlib_objects(disabled: None) -> None:
    peeps.patch()
    assert type(asyncio.Lock()) is peeps._sync._StdLock
    assert type(asyncio.Queue()) is peeps._channel._StdQueue
    # Host code's own checks hold: what the names make is an instance of them.
    for name in ("Lock", "Queue", "Semaphore", "BoundedSemaphore", "Event", "Condition"):
        made = getattr(asyncio, name)()
        assert isinstance(made, getattr(asyncio, name)), name


# -- examples -------------------------------------------------------------------------


def load_example(name: str) -> Any:
    path = ROOT / "examples" / name / "__main__.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_until_stalled(name: str, settle_s: float = 0.3) -> Any:
    module = load_example(name)
    process_name = STATE.process_name

    async def scenario() -> Any:
        main = asyncio.create_task(module.main())
        await asyncio.sleep(settle_s)
        graph = peeps.collect_graph()
        main.cancel()
        with suppress(asyncio.CancelledError):
            await main
        return graph

    try:
        return asyncio.run(scenario())
    finally:
        STATE.process_name = process_name


def by_label(graph: Any, label: str) -> dict[str, Any]:
    found = [n for n in graph["nodes"] if n["label"] == label]
    assert len(found) == 1, f"{label}: {found}"
    return found[0]  # type: ignore[no-any-return]


def has_edge(graph: Any, src: str, kind: str, dst: str, **attrs: Any) -> bool:
    return any(e["src"] == src and e["kind"] == kind and e["dst"] == dst
               and all(e["attrs"].get(k) == v for k, v in attrs.items())
               for e in graph["edges"])


def test_semaphore_starvation_example_graph(capsys: pytest.CaptureFixture[str]) -> None:
    g = run_until_stalled("semaphore_starvation")
    gate = by_label(g, "demo.api_gate")
    holder, waiter = by_label(g, "permit_holder"), by_label(g, "permit_waiter")
    assert gate["kind"] == "semaphore" and gate["attrs"]["permits_available"] == 0
    assert has_edge(g, holder["id"], "holds", gate["id"])
    assert has_edge(g, waiter["id"], "needs", gate["id"], op="acquire")
    assert has_edge(g, holder["id"], "needs", by_label(g, "demo.never_set")["id"], op="wait")


def test_oneshot_sender_lost_example_graph(capsys: pytest.CaptureFixture[str]) -> None:
    g = run_until_stalled("oneshot_sender_lost")
    reply = by_label(g, "demo.reply(req-42)")
    requester, router = by_label(g, "requester"), by_label(g, "router")
    assert reply["kind"] == "oneshot"
    assert reply["attrs"]["sender_alive"] is True
    assert reply["attrs"]["sender_held_by"] is None
    assert reply["attrs"]["resolvable"] is False
    assert reply["attrs"]["meta"]["request_id"] == "req-42"
    assert has_edge(g, requester["id"], "needs", reply["id"], op="recv")
    assert has_edge(g, router["id"], "needs", by_label(g, "demo.responses")["id"], op="recv")
    assert "no pending request 'req-42'" in capsys.readouterr().out


def test_queue_join_hang_example_graph(capsys: pytest.CaptureFixture[str]) -> None:
    g = run_until_stalled("queue_join_hang")
    jobs = by_label(g, "demo.jobs")
    producer, consumer = by_label(g, "producer"), by_label(g, "consumer")
    assert jobs["attrs"]["depth"] == 0 and jobs["attrs"]["unfinished_tasks"] == 5
    assert has_edge(g, producer["id"], "needs", jobs["id"], op="join", unfinished_tasks=5)
    assert has_edge(g, consumer["id"], "needs", jobs["id"], op="recv")


@pytest.mark.parametrize("name,stall_line", [
    ("semaphore_starvation", "permit_waiter: waiting for a permit"),
    ("oneshot_sender_lost", "router: no pending request"),
    ("queue_join_hang", "consumer: handled job 4"),
])
def test_example_runs_as_a_script_and_stays_stalled(name: str, stall_line: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PEEPS_DASHBOARD"}
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, str(ROOT / "examples" / name)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30  # generous: a loaded CI box starts Python slowly
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if stall_line in line:
                break
        time.sleep(0.5)  # stalled: it must still be running
        assert proc.poll() is None, (seen, proc.communicate())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{name} did not stop within 10 s of SIGINT: {''.join(seen)}{out}{err}")
    assert stall_line in "".join(seen) + out, (seen, out, err)
    assert proc.returncode == 0, err
    doc_line = (ROOT / "examples" / name / "__main__.py").read_text().split('"""')[1]
    assert doc_line.strip().splitlines()[0].startswith(name.replace("_", "-") + ":")
