"""The ``peeps`` terminal CLI against the real ``peeps-web`` and a real stuck example."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from entrypoints.entry_support import child_env, peeps_cli
from support import ExampleProcess, PeepsServer

EXAMPLE = "examples/channel_full_stall/__main__.py"


@pytest.fixture
def stalled(peeps_server: PeepsServer, run_example: type[ExampleProcess]) -> PeepsServer:
    example = run_example("channel-full-stall")
    example.wait_for_output("bounded_sender: sent 15")
    peeps_server.wait_connected(name="channel-full-stall")
    time.sleep(0.2)  # the 17th send is now blocked
    return peeps_server


def test_every_command_reads_a_live_server(stalled: PeepsServer) -> None:
    http = stalled.http_base

    jump = peeps_cli("jump", http=http)
    assert jump.returncode == 0, jump.stderr
    assert jump.stdout.startswith("snapshot 1: 1/1 processes answered")

    suspects = peeps_cli("suspects", http=http)
    assert suspects.returncode == 0, suspects.stderr
    assert "channel demo.work_queue is full (16/16) with 1 blocked sender" in suspects.stdout
    assert "bounded_sender" in suspects.stdout
    assert f"channel demo.work_queue 16/16 at {stalled_path()}:35" in suspects.stdout
    assert f"task bounded_sender at {stalled_path()}:36" in suspects.stdout

    ps = peeps_cli("ps", http=http)
    assert ps.returncode == 0, ps.stderr
    assert "channel-full-stall" in ps.stdout
    [sender] = [line for line in ps.stdout.splitlines() if " bounded_sender " in line]
    assert "--needs[send" in sender and "channel demo.work_queue 16/16" in sender
    assert f"{stalled_path()}:36" in sender
    assert any(" stalled_receiver " in line and "sleep stalled_receiver.forgot_to_recv" in line
               for line in ps.stdout.splitlines())

    tree = peeps_cli("tree", "--stack", http=http)
    assert tree.returncode == 0, tree.stderr
    assert f"task bounded_sender ({stalled_path()}:36) [pending]" in tree.stdout
    assert "--needs[send" in tree.stdout
    assert f"at {stalled_path()}:23 in bounded_sender" in tree.stdout

    sql = peeps_cli("sql", "SELECT label, json_extract(attrs, '$.depth') AS depth FROM nodes "
                           "WHERE kind = ? ORDER BY label", "--param", "channel", http=http)
    assert sql.returncode == 0, sql.stderr
    lines = sql.stdout.splitlines()
    assert lines[0].split() == ["LABEL", "DEPTH"]
    assert lines[1].split() == ["demo.work_queue", "16"]
    assert "(1 row, snapshot 1)" in lines[-1]


def stalled_path() -> str:
    from support import ROOT

    return str(ROOT / EXAMPLE)


def test_json_output_parses(stalled: PeepsServer) -> None:
    http = stalled.http_base
    jump = json.loads(peeps_cli("jump", "--json", http=http).stdout)
    assert jump["responded"] == 1
    suspects = json.loads(peeps_cli("suspects", "--json", http=http).stdout)
    assert suspects["snapshot_id"] == jump["snapshot_id"]
    [full] = [s for s in suspects["suspects"] if s["kind"] == "full_channel"]
    assert any(w.endswith("__main__.py:36") for w in full["where"])
    ps = json.loads(peeps_cli("ps", "--json", http=http).stdout)
    assert {t["label"] for t in ps["tasks"]} >= {"bounded_sender", "stalled_receiver"}
    assert ps["processes"][0]["connected"] is True
    tree = json.loads(peeps_cli("tree", "--json", http=http).stdout)
    [sender] = [a for a in tree["actors"] if a["label"] == "bounded_sender"]
    assert "channel demo.work_queue" in sender["chain"]
    sql = json.loads(peeps_cli("sql", "--json", "SELECT count(*) AS n FROM nodes WHERE "
                               "kind = 'task'", http=http).stdout)
    assert sql["columns"] == ["n"] and sql["rows"][0][0] >= 2


def test_snapshot_option_and_jump_flag(stalled: PeepsServer) -> None:
    http = stalled.http_base
    first = json.loads(peeps_cli("suspects", "--jump", "--json", http=http).stdout)
    second = json.loads(peeps_cli("suspects", "--jump", "--json", http=http).stdout)
    assert second["snapshot_id"] == first["snapshot_id"] + 1
    again = json.loads(peeps_cli("suspects", "--json", "--snapshot",
                                 str(first["snapshot_id"]), http=http).stdout)
    assert again["snapshot_id"] == first["snapshot_id"]
    missing = peeps_cli("ps", "--snapshot", "999", http=http)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "peeps: peeps-web answered 404: snapshot 999 does not exist"
    failing = peeps_cli("suspects", "--fail-on", "warning", http=http)
    assert failing.returncode == 1 and "demo.work_queue" in failing.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("command", [["ps"], ["tree"], ["suspects"], ["jump"], ["sql", "SELECT 1"]])
def test_no_server_is_one_clean_line_and_exit_2(command: list[str]) -> None:
    port = _free_port()
    result = peeps_cli(*command, env={"PEEPS_HTTP": f"127.0.0.1:{port}"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"peeps: no peeps-web at http://127.0.0.1:{port} (connection refused). "
        "Start it with `peeps-web`")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_no_snapshot_yet(peeps_server: PeepsServer) -> None:
    result = peeps_cli("suspects", http=peeps_server.http_base)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(
        f"peeps: no snapshots yet on {peeps_server.http_base}. Take one with `peeps jump`")
    empty = peeps_cli("jump", http=peeps_server.http_base)
    assert empty.returncode == 0
    assert "no process is connected" in empty.stdout


def test_rich_tables_and_plain_fallback_without_rich(stalled: PeepsServer) -> None:
    http = stalled.http_base
    peeps_cli("jump", http=http)
    rich = peeps_cli("ps", "--rich", http=http, env={"COLUMNS": "250"})
    assert rich.returncode == 0, rich.stderr
    assert "bounded_sender" in rich.stdout
    if importlib.util.find_spec("rich") is not None:
        assert "┃" in rich.stdout
    # The same command where rich cannot be imported: plain text, same content.
    code = ("import sys; sys.modules['rich'] = None; from peeps.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    plain = subprocess.run([sys.executable, "-c", code, "ps", "--rich", "--http", http],
                           env=child_env(), capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0, plain.stderr
    assert "┃" not in plain.stdout and "bounded_sender" in plain.stdout


def test_python_dash_m_peeps_reaches_the_cli(stalled: PeepsServer) -> None:
    result = subprocess.run([sys.executable, "-m", "peeps", "jump", "--http", stalled.http_base],
                            env=child_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("snapshot 1: 1/1 processes answered")


def test_ps_all_shows_a_finished_tasks_lifetime(
        peeps_server: PeepsServer, run_example: type[ExampleProcess], tmp_path: Path) -> None:
    """A finished task's age stopped when it finished; ``ps --all`` says so
    ("lived ..."), and a live task's age is just its age."""
    from support import ROOT

    go = tmp_path / "go"
    example = run_example(str(ROOT / "tests/programs/finishing.py"), args=[str(go)])
    example.wait_for_output("started")
    peeps_server.wait_connected(name="finishing")
    peeps_server.jump()  # sees short_job while it runs
    go.touch()
    example.wait_for_output("finished")
    ps = peeps_cli("ps", "--all", "--jump", http=peeps_server.http_base)
    assert ps.returncode == 0, ps.stderr
    [job] = [line for line in ps.stdout.splitlines() if " short_job " in line]
    [keeper] = [line for line in ps.stdout.splitlines() if " keeper " in line]
    assert " done " in job and re.search(r" lived \d", job), job
    assert "lived" not in keeper, keeper
    hidden = peeps_cli("ps", http=peeps_server.http_base)
    assert " short_job " not in hidden.stdout and " keeper " in hidden.stdout
