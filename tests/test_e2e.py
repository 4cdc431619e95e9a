"""End to end: real example processes, the real server, the SQL API."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from support import EXAMPLES, ExampleProcess, PeepsServer

EXAMPLE = EXAMPLES / "channel_full_stall" / "__main__.py"


def line_of(path: Path, text: str) -> int:
    """The line number of the one line of ``path`` containing ``text``."""
    [number] = [i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return number


def test_channel_full_stall_is_queryable_by_sql(peeps_server: PeepsServer, run_example: type[ExampleProcess]) -> None:
    example = run_example("channel-full-stall")
    example.wait_for_output("bounded_sender: sent 15")
    peeps_server.wait_connected(name="channel-full-stall")
    time.sleep(0.2)  # the 17th send is now blocked

    snap = peeps_server.jump()
    assert snap["requested"] == 1 and snap["responded"] == 1 and snap["timed_out"] == 0
    sid = snap["snapshot_id"]

    [channel] = peeps_server.rows(sid, """
        SELECT id, json_extract(attrs, '$.depth') AS depth,
               json_extract(attrs, '$.capacity') AS capacity, location
        FROM nodes WHERE kind = 'channel' AND label = 'demo.work_queue'""")
    assert (channel["depth"], channel["capacity"]) == (16, 16)
    channel_line = line_of(EXAMPLE, 'peeps.channel("demo.work_queue"')
    assert channel["location"].endswith(f"channel_full_stall/__main__.py:{channel_line}")

    [blocked] = peeps_server.rows(sid, """
        SELECT t.label AS task, t.location AS location,
               json_extract(e.attrs, '$.op') AS op,
               json_extract(e.attrs, '$.waited_ns') AS waited_ns
        FROM edges e JOIN nodes t ON t.id = e.src
        WHERE e.kind = 'needs' AND e.dst = ?""", [channel["id"]])
    assert blocked["task"] == "bounded_sender"
    assert blocked["op"] == "send"
    assert blocked["waited_ns"] > 100_000_000
    sender_line = line_of(EXAMPLE, 'spawn_tracked("bounded_sender"')
    assert blocked["location"].endswith(f"channel_full_stall/__main__.py:{sender_line}")

    [sleeping] = peeps_server.rows(sid, """
        SELECT s.kind, json_extract(s.attrs, '$.remaining_ns') AS remaining_ns
        FROM edges e JOIN nodes t ON t.id = e.src JOIN nodes s ON s.id = e.dst
        WHERE e.kind = 'needs' AND t.label = 'stalled_receiver'""")
    assert sleeping["kind"] == "sleep" and sleeping["remaining_ns"] > 3_000 * 10**9

    spawned = peeps_server.rows(sid, """
        SELECT p.label AS parent, c.label AS child FROM edges e
        JOIN nodes p ON p.id = e.src JOIN nodes c ON c.id = e.dst
        WHERE e.kind = 'spawned' ORDER BY child""")
    assert [r["child"] for r in spawned] == ["bounded_sender", "stalled_receiver"]
    assert {r["parent"] for r in spawned} == {"main"}  # the asyncio.run task, named by its coroutine

    [proc] = peeps_server.rows(sid, "SELECT process_name, status FROM snapshot_processes")
    assert proc == {"process_name": "channel-full-stall", "status": "responded"}
    events = peeps_server.rows(sid, "SELECT name FROM events WHERE name = 'channel.send.blocked'")
    assert events


def test_a_blocked_event_loop_still_answers(peeps_server: PeepsServer, run_example: type[ExampleProcess]) -> None:
    from support import ROOT
    proc = run_example(ROOT / "tests/programs/blocked_loop.py")
    proc.wait_for_output("blocking the loop")
    peeps_server.wait_connected(name="blocked-loop")
    time.sleep(0.3)
    snap = peeps_server.jump()
    assert snap["responded"] == 1, snap
    rows = peeps_server.rows(snap["snapshot_id"], """
        SELECT t.label FROM edges e JOIN nodes t ON t.id = e.src JOIN nodes c ON c.id = e.dst
        WHERE e.kind = 'needs' AND c.label = 'blocked.queue'""")
    assert rows == [{"label": "blocked.victim"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ticks(proc: ExampleProcess) -> int:
    return sum(1 for line in proc.output if line.startswith("tick "))


def _still_ticking(proc: ExampleProcess, seconds: float = 0.5) -> None:
    before = _ticks(proc)
    time.sleep(seconds)
    assert proc.proc.poll() is None, "".join(proc.output)
    assert _ticks(proc) > before + 5, "the service stopped making progress"


def test_dashboard_absent_killed_and_restarted(tmp_path: object) -> None:
    from pathlib import Path

    from support import ROOT
    port = _free_port()
    db = Path(str(tmp_path)) / "restart.sqlite"
    ticker = ExampleProcess(ROOT / "tests/programs/ticker.py", dashboard=f"127.0.0.1:{port}")
    server = PeepsServer(db, extra_env={"PEEPS_LISTEN": f"127.0.0.1:{port}"})
    try:
        ticker.wait_for_output("tick 3")
        _still_ticking(ticker)  # dashboard absent: the service carries on

        server.start()
        server.wait_connected(name="ticker")
        assert server.jump()["responded"] == 1

        server.stop(kill=True)  # dashboard dies mid-run
        _still_ticking(ticker)

        server.start()  # ... and comes back on the same port
        server.wait_connected(name="ticker", timeout=20)
        assert server.jump()["responded"] == 1
        _still_ticking(ticker)
        text = "".join(ticker.output)
        assert "Traceback" not in text
        # Logged once per state change, not once per reconnect attempt.
        assert text.count("unreachable") <= 3, text
    finally:
        ticker.stop()
        server.stop()


def test_a_dashboard_sending_garbage_costs_the_service_nothing() -> None:
    from support import ROOT
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    ticker = ExampleProcess(ROOT / "tests/programs/ticker.py", dashboard=f"127.0.0.1:{port}")
    garbage = [
        b"\xff\xff\xff\xff",                    # declared length far above the cap
        b"\x00\x00\x00\x05{not}",               # not JSON
        b"\x00\x00\x00\x02[]",                  # JSON but not an object
        b"\x00\x00\x00\x00",                    # empty frame
        b"\x00\x00\x00\x20" + b'{"type":"snapshot_request"}'.ljust(32),  # no snapshot_id
    ]
    accepted = 0
    try:
        ticker.wait_for_output("tick 1")
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline and accepted < len(garbage):
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                conn.recv(65536)  # the hello
                conn.sendall(garbage[accepted])
                accepted += 1
                time.sleep(0.05)
        assert accepted == len(garbage), "the service stopped reconnecting"
        _still_ticking(ticker)
        assert "Traceback" not in "".join(ticker.output)
    finally:
        ticker.stop()
        listener.close()


def test_a_rename_by_init_reaches_the_dashboard(peeps_server: PeepsServer) -> None:
    """``python -m peeps run --name a`` then the program's own ``peeps.init("b")``:
    the dashboard must show the name the program chose."""
    import subprocess
    import sys
    code = ("import peeps, time; peeps.init('first-name'); time.sleep(0.5); "
            "peeps.init('second-name'); print('renamed', flush=True); time.sleep(30)")
    import os
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PEEPS_DASHBOARD=peeps_server.dashboard))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "renamed"
        peeps_server.wait_connected(name="second-name")
        deadline = time.monotonic() + 10
        while any(p["process_name"] == "first-name" for p in peeps_server.connected()):
            assert time.monotonic() < deadline, "the old connection stayed"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
