"""Load: 200 connected processes, a snapshot every second, for minutes.
Every snapshot is complete or explicitly partial; retention keeps the database flat."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import ROOT, PeepsServer

PROCESSES = int(os.environ.get("PEEPS_LOAD_PROCESSES", "200"))
DURATION_S = float(os.environ.get("PEEPS_LOAD_SECONDS", "150"))


def _db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_200_processes_snapshot_every_second(tmp_path: Path) -> None:
    db = tmp_path / "load.sqlite"
    server = PeepsServer(db, extra_env={"PEEPS_SNAPSHOT_INTERVAL_S": "1",
                                        "PEEPS_SNAPSHOT_TIMEOUT_MS": "3000",
                                        "PEEPS_RETAIN_SNAPSHOTS": "20"}).start()
    env = dict(os.environ, PEEPS_DASHBOARD=server.dashboard, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(PROCESSES):
            procs.append(subprocess.Popen(
                [sys.executable, str(ROOT / "tests/programs/idle_service.py"), f"load-{i:03d}"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        server.wait_connected(count=PROCESSES, timeout=120)
        first_id = server.get("/api/snapshot-progress")["last_snapshot_id"] or 0

        sizes = []
        started = time.monotonic()
        while time.monotonic() - started < DURATION_S:
            time.sleep(DURATION_S / 6)
            sizes.append(_db_bytes(db))
        snapshots = [s for s in server.get("/api/snapshots?limit=1000")["snapshots"]
                     if s["snapshot_id"] > first_id and s["status"] != "in_progress"]
        last_id = max(s["snapshot_id"] for s in snapshots)
        taken = last_id - first_id
        # A snapshot per second was attempted (allowing for slow ones under load).
        assert taken >= DURATION_S * 0.5, taken
        for snap in snapshots:
            assert snap["status"] in ("complete", "partial"), snap
            accounted = snap["responded"] + snap["timed_out"] + snap["disconnected"] + snap.get("errored", 0)
            assert accounted == snap["requested"], snap
        complete = [s for s in snapshots if s["status"] == "complete"]
        print(f"load: {PROCESSES} processes, {taken} snapshots in {DURATION_S:.0f}s, "
              f"{len(complete)}/{len(snapshots)} retained ones complete, db sizes {sizes}")
        assert len(snapshots) <= 20  # retention
        assert all(s["requested"] == PROCESSES for s in complete)
        # Retention keeps the database flat: the last size is not above the
        # size after the first sixth of the run by more than half.
        assert sizes[-1] <= sizes[1] * 1.5, sizes
        # The newest snapshot holds every process's graph.
        rows = server.rows(last_id, "SELECT count(DISTINCT proc_key) AS n FROM nodes "
                                    "WHERE label = 'idle.queue'")
        newest = next(s for s in snapshots if s["snapshot_id"] == last_id)
        assert rows == [{"n": newest["responded"]}]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
