"""``python -m peeps run``: unchanged programs, run with peeps on, seen by the real server."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from entrypoints.entry_support import PROGRAMS, PeepsRun, peeps_cli
from support import PeepsServer


def _suspects(server: PeepsServer, snapshot_id: int) -> list[dict[str, Any]]:
    suspects: list[dict[str, Any]] = server.get(f"/api/snapshots/{snapshot_id}/suspects")[
        "suspects"]
    return suspects


def _deadlock_after(server: PeepsServer, name: str, timeout: float = 10.0) -> dict[str, Any]:
    """Jump until the server reports a deadlock in process ``name``."""
    server.wait_connected(name=name)
    deadline = time.monotonic() + timeout
    while True:
        snap = server.jump()
        found = [s for s in _suspects(server, snap["snapshot_id"]) if s["kind"] == "deadlock"]
        if found:
            return dict(found[0], snapshot_id=snap["snapshot_id"])
        if time.monotonic() > deadline:
            raise AssertionError("no deadlock suspect; last: "
                                 f"{_suspects(server, snap['snapshot_id'])}")
        time.sleep(0.2)


def test_asyncio_deadlock_shows_its_cycle(peeps_server: PeepsServer) -> None:
    run = PeepsRun("--dashboard", peeps_server.dashboard, str(PROGRAMS / "asyncio_deadlock.py"))
    try:
        run.wait_for_output("asyncio-deadlock: stuck")
        deadlock = _deadlock_after(peeps_server, "asyncio_deadlock")
        assert deadlock["severity"] == "critical"
        assert "debit" in deadlock["title"] and "credit" in deadlock["title"]
        assert "asyncio_deadlock.py:" in deadlock["reason"]
        # Both locks are in the cycle, named after where they were created.
        rows = peeps_server.rows(deadlock["snapshot_id"], """
            SELECT DISTINCT r.kind, r.location FROM edges e JOIN nodes r ON r.id = e.dst
            WHERE e.kind = 'needs' AND r.kind LIKE '%lock%'""")
        assert len(rows) == 2, rows
        assert all(r["location"].endswith(("asyncio_deadlock.py:18", "asyncio_deadlock.py:19"))
                   for r in rows), rows
        # The terminal says the same.
        cli = peeps_cli("suspects", "--snapshot", str(deadlock["snapshot_id"]),
                        http=peeps_server.http_base)
        assert cli.returncode == 0, cli.stderr
        first = cli.stdout.split("\n\n")[1]
        assert "1. CRITICAL deadlock: " in first
        for text in ("task debit (", "task credit (", "--needs[acquire", "--held by",
                     "asyncio_deadlock.py:18", "asyncio_deadlock.py:19"):
            assert text in first, first
    finally:
        run.stop()


def test_thread_deadlock_shows_its_cycle(peeps_server: PeepsServer) -> None:
    run = PeepsRun("--dashboard", peeps_server.dashboard, str(PROGRAMS / "thread_deadlock.py"))
    try:
        run.wait_for_output("thread-deadlock: stuck")
        deadlock = _deadlock_after(peeps_server, "thread_deadlock")
        assert "debit" in deadlock["title"] and "credit" in deadlock["title"]
        for text in ("thread debit", "thread credit", "accounts_lock", "ledger_lock",
                     "--needs[acquire"):
            assert text in deadlock["reason"], deadlock["reason"]
    finally:
        run.stop()


def test_aiohttp_service_tasks_are_tracked(peeps_server: PeepsServer) -> None:
    run = PeepsRun("--dashboard", peeps_server.dashboard, "--name", "shop",
                   str(PROGRAMS / "aiohttp_app.py"), "0")
    try:
        line = run.wait_for_output("aiohttp-app: listening on ")
        port = int(line.split("listening on ")[1].split()[0])
        assert f"argv=['{PROGRAMS / 'aiohttp_app.py'}', '0']" in line
        answers: list[str] = []

        def slow_request() -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/slow", timeout=30) as resp:
                answers.append(resp.read().decode())

        client = threading.Thread(target=slow_request)
        client.start()
        [proc] = peeps_server.wait_connected(name="shop")
        assert proc["proc_key"].startswith("shop-")
        deadline = time.monotonic() + 10
        while True:
            snap = peeps_server.jump()
            rows = peeps_server.rows(snap["snapshot_id"], """
                SELECT label, json_extract(attrs, '$.state') AS state,
                       json_extract(attrs, '$.stack') AS stack
                FROM nodes WHERE kind = 'task'""")
            handler = [r for r in rows if "slow_handler" in (r["stack"] or "")]
            if handler or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert handler, rows
        assert handler[0]["state"] == "pending"
        assert any("main" in json.dumps(r) for r in rows)  # asyncio.run's main task, too
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/release", timeout=10) as resp:
            assert resp.read() == b"released"
        client.join(timeout=10)
        assert answers == ["slow done"]
    finally:
        run.stop()


def test_main_semantics_argv_and_exit_code(tmp_path: Path) -> None:
    script = PROGRAMS / "show_main.py"
    run = PeepsRun(str(script), "7", "--name", "x", cwd=tmp_path)
    assert run.wait() == 7
    assert "name=__main__" in run.text
    assert f"argv=['{script}', '7', '--name', 'x']" in run.text
    assert f"path0={PROGRAMS}" in run.text
    assert "peeps: running " in run.text and "as 'show_main', not connected" in run.text


def test_module_target(tmp_path: Path) -> None:
    package = tmp_path / "svc"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import sys\nprint(f'name={__name__} argv={sys.argv[1:]} pkg={__package__}', flush=True)\n")
    run = PeepsRun("-q", "-m", "svc", "a", "-m", "b", cwd=tmp_path)
    assert run.wait() == 0, run.text
    assert run.text.strip() == "name=__main__ argv=['a', '-m', 'b'] pkg=svc"


def test_uncaught_exception_reads_like_python(tmp_path: Path) -> None:
    run = PeepsRun("-q", str(PROGRAMS / "show_main.py"), "raise", cwd=tmp_path)
    assert run.wait() == 1
    assert "ValueError: boom from the program" in run.text
    traceback = run.text[run.text.index("Traceback"):]
    assert "_run.py" not in traceback and "runpy" not in traceback
    assert "show_main.py" in traceback


def test_usage_errors(tmp_path: Path) -> None:
    missing = PeepsRun("no_such_script.py", cwd=tmp_path)
    assert missing.wait() == 2
    assert "can't open file 'no_such_script.py'" in missing.text
    nothing = PeepsRun(cwd=tmp_path)
    assert nothing.wait() == 2
    assert "give a script or -m module to run" in nothing.text


def test_every_part_is_on_by_default_and_each_flag_turns_one_off(tmp_path: Path) -> None:
    program = str(PROGRAMS / "introspect.py")
    default = PeepsRun("-q", program, cwd=tmp_path)
    off = PeepsRun("-q", "--no-auto", "--no-patch", "--no-threads", "--no-watchdog", program,
                   cwd=tmp_path)
    assert default.wait() == 0 and off.wait() == 0, default.text + off.text
    assert default.text.splitlines() == [
        "task_factory=PeepsTaskFactory",
        "asyncio.Lock=peeps._sync",
        "threads=peeps-sampler,peeps-watchdog",
    ]
    assert off.text.splitlines() == [
        "task_factory=None",
        "asyncio.Lock=asyncio.locks",
        "threads=",
    ]
