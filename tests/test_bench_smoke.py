"""The benchmark suite runs and produces well-formed output.

Only that: ``bench/run --quick`` (tiny sizes, one repeat) must finish, write a
JSON file and a markdown table with a row for every benchmark script present,
and report no failures.  No timing is asserted here — the numbers belong in
docs/performance.md, measured side by side, not in a pass/fail test on a noisy
machine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from peeps._config import env_flag

try:
    from peeps import _speedups
except ImportError:  # built without a C compiler
    _speedups = None  # type: ignore[assignment]

#: The benchmark harness runs on one interpreter (``bench/run``: the default
#: Python), so ``scripts/test`` runs these in the default Python's full suite
#: only, not in the other Pythons' core suites.
pytestmark = pytest.mark.bench

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


@pytest.mark.timeout(180)
def test_bench_run_quick_produces_a_table(tmp_path: Path) -> None:
    env = dict(os.environ, PEEPS_BENCH_PYTHON=sys.executable)
    env.pop("PEEPS_DISABLE", None)
    env.pop("PEEPS_DASHBOARD", None)
    proc = subprocess.run([str(BENCH / "run"), "--quick", "--results", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-4000:]

    payload = json.loads((tmp_path / "latest.json").read_text())
    assert payload["quick"] is True
    assert payload["machine"]["nproc"] and payload["machine"]["python"]
    rows = payload["rows"]
    failed = [r for r in rows if str(r.get("note", "")).startswith("failed")]
    assert not failed, failed
    for r in rows:
        assert isinstance(r["section"], str) and isinstance(r["name"], str), r
        if r["value"] is not None:
            assert isinstance(r["value"], int | float) and math.isfinite(r["value"]), r
            assert isinstance(r["unit"], str), r

    sections = {r["section"] for r in rows if r["value"] is not None}
    for wanted in ("1. realistic service", "1c. request path in a saturated loop",
                   "2. hot-path microbenchmarks", "3. snapshot cost",
                   "4. server"):
        assert any(s.startswith(wanted) for s in sections), (wanted, sections)
    names = {r["name"] for r in rows}
    # Every benchmark script in bench/ was run (not reported as missing).
    for script in BENCH.glob("bench_*.py"):
        assert script.name not in names or not any(
            r["name"] == script.name and r["value"] is None and "not landed" in r.get("note", "")
            for r in rows), script.name
    assert any(n.startswith("task_spawn: ") and n.endswith(" vs plain") for n in names), names
    # The service section says how its processes were placed; with two CPUs or
    # more the services had the last one to themselves (each one reports its own
    # affinity, the harness refuses a service that runs elsewhere).
    (placed,) = [r for r in rows if r["name"] == "plain: throughput"]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        assert placed["note"].startswith(f"pinned: services on CPU {cpus[-1]},"), placed
    else:
        assert placed["note"].startswith("not pinned"), placed
    # The loaded all-on service's own report of a snapshot's loop work, read back
    # from the real server: its snapshots after the first are worked on the loop.
    cost = [r for r in rows if r["name"].endswith("a snapshot's work on the event loop")]
    assert len(cost) == 1 and cost[0]["value"] > 0, cost
    live = [r for r in rows if r["name"].startswith("live sampler at 100 Hz")]
    assert all(r["value"] > 0 and "(n=2)" in r["spread"] for r in live), live
    # The whole thread's CPU, with the ticks' bodies (the sampler's own count) beside it;
    # where the quiet sleep is built, also with every tick real, and the ratio.
    judged = [r for r in live if "whole CPU" in r["name"]]
    assert len(judged) == 2 and all("ticks' bodies" in r["note"] for r in judged), live
    real = [r for r in live if "every tick real" in r["name"]]
    if hasattr(_speedups, "quiet_sleep") and env_flag("PEEPS_SPEEDUPS", True):
        assert len(real) == 2, live
    assert all("as it runs is" in r["note"] for r in real), live

    table = (tmp_path / "latest.md").read_text()
    assert "| measure | value | spread | target |" in table
    assert "### 1. realistic service" in table


def run_service_bench(flag: str, tmp_path: Path) -> dict[str, Any]:
    """``bench_service.py FLAG --quick``, with no dashboard or disable switch
    inherited; its JSON output."""
    out = tmp_path / "service.json"
    env = dict(os.environ)
    env.pop("PEEPS_DISABLE", None)
    env.pop("PEEPS_DASHBOARD", None)
    proc = subprocess.run([sys.executable, str(BENCH / "bench_service.py"), flag,
                           "--quick", "-o", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-4000:]
    payload: dict[str, Any] = json.loads(out.read_text())
    return payload


@pytest.mark.timeout(120)
def test_service_by_process_quick_measures_every_step(tmp_path: Path) -> None:
    """``bench_service.py --by-process`` (not part of ``bench/run``): every
    step runs as its own service process and gets finite ratios for CPU per
    request and p99, each step's services having served requests."""
    payload = run_service_bench("--by-process", tmp_path)
    rows = payload["rows"]
    steps = ["plain, a second process (the control)",
             "peeps wrappers (channel, Lock, Semaphore, spawn_tracked)",
             "+ automatic task tracking", "+ automatic task tracking, peeps.patch()",
             "+ automatic task tracking, thread sampler at 100 Hz",
             "+ automatic task tracking, loop-stall watchdog", "all-on, no dashboard"]
    assert [r["name"] for r in rows] == [
        f"{step}: {measure} vs plain" for step in steps
        for measure in ("CPU per request", "p99 latency")], rows
    for r in rows:
        assert math.isfinite(r["value"]) and 0.2 < r["value"] < 5, r
    (session,) = payload["meta"]["sessions"]
    assert set(session) == {"plain", *steps}
    assert all(step["requests"] > 0 for step in session.values()), session


@pytest.mark.timeout(120)
def test_service_attribution_quick_switches_every_step(tmp_path: Path) -> None:
    """``bench_service.py --attribution`` (not part of ``bench/run``): one
    toggle service goes through every step and each gets a finite ratio."""
    payload = run_service_bench("--attribution", tmp_path)
    rows = payload["rows"]
    assert [r["name"].split(":")[0] for r in rows] == [
        "plain primitives again (the control)",
        "peeps wrappers (channel, Lock, Semaphore, spawn_tracked)",
        "+ automatic task tracking", "+ thread sampler at 100 Hz",
        "+ loop-stall watchdog (all-on, no dashboard)",
        "+ tracking, sampler at 1,000 Hz (10× the ticks; no watchdog)"], rows
    for r in rows:
        assert math.isfinite(r["value"]) and 0.3 < r["value"] < 3, r
    (session,) = payload["meta"]["sessions"]
    assert all(step["requests"] > 0 for step in session.values()), session


@pytest.mark.timeout(120)
def test_service_per_snapshot_quick_asks_for_snapshots_only_in_its_b_slices(
        tmp_path: Path) -> None:
    """``bench_service.py --per-snapshot`` (not part of ``bench/run``): one
    connected all-on service, slices without and with snapshots; the slices
    with them got the asked-for rate of complete snapshots, each answered by
    the service, and the rows give finite ratios and a CPU per snapshot."""
    payload = run_service_bench("--per-snapshot", tmp_path)
    (session,) = payload["meta"]["sessions"]
    assert session["A"]["requests"] > 0 and session["B"]["requests"] > 0, session
    # Asked for 5 a second, each a round trip to the service: not far off.
    assert 2.5 <= session["snapshots_per_s"] <= 7.5, session
    names = [r["name"] for r in payload["rows"]]
    assert names == ["all-on, no snapshots: service CPU per request",
                     f"all-on, {session['snapshots_per_s']:.1f} snapshots a second: "
                     "service CPU per request vs none",
                     f"all-on, {session['snapshots_per_s']:.1f} snapshots a second: "
                     "throughput vs none",
                     "service CPU per snapshot"], names
    cpu, cpu_ratio, rps_ratio, per = (r["value"] for r in payload["rows"])
    assert 5 < cpu < 2000, cpu
    assert 0.3 < cpu_ratio < 3 and 0.3 < rps_ratio < 3, payload["rows"]
    assert math.isfinite(per), per


def test_service_bench_refuses_two_separate_runs_at_once() -> None:
    """``--per-snapshot``, ``--attribution`` and ``--by-process`` are each a run
    of their own: asked for together, a clear usage error, not one silently
    ignored."""
    proc = subprocess.run([sys.executable, str(BENCH / "bench_service.py"), "--per-snapshot",
                           "--attribution", "--quick"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "--attribution and --per-snapshot are separate runs" in proc.stderr, proc.stderr


def test_cache_flags_model_this_cpus_l1s_and_its_l2(tmp_path: Path) -> None:
    """``bench_instructions --simulate`` sizes callgrind's caches from sysfs: the
    L1s as I1/D1 and the L2 (not the L3) as its last level; a geometry callgrind
    cannot model (sets not a power of two) is left to callgrind."""
    def cache(index: int, level: int, kind: str, size: str, ways: int) -> None:
        d = tmp_path / f"index{index}"
        d.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size),
                            ("ways_of_associativity", ways), ("coherency_line_size", 64)):
            (d / name).write_text(f"{value}\n")

    cache(0, 1, "Data", "48K", 12)
    cache(1, 1, "Instruction", "32K", 8)
    cache(2, 2, "Unified", "1024K", 16)
    cache(3, 3, "Unified", "32768K", 16)
    sys.path.insert(0, str(BENCH))
    try:
        from bench_instructions import cache_flags
    finally:
        sys.path.remove(str(BENCH))
    assert cache_flags(tmp_path) == ["--I1=32768,8,64", "--D1=49152,12,64",
                                     "--LL=1048576,16,64"]
    (tmp_path / "index2" / "ways_of_associativity").write_text("12\n")  # 1365.33 sets
    assert cache_flags(tmp_path) == ["--I1=32768,8,64", "--D1=49152,12,64"]
    assert cache_flags(tmp_path / "missing") == []


def test_service_bench_counts_snapshots_past_the_retention_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The all-on throughput row's "N snapshots in T s" counts the snapshots
    taken, not the ones ``peeps-web`` still keeps: a long run passes the
    retention limit (500 by default), here 2."""
    monkeypatch.setenv("PEEPS_RETAIN_SNAPSHOTS", "2")
    sys.path.insert(0, str(BENCH))
    try:
        from bench_service import _WebServer
    finally:
        sys.path.remove(str(BENCH))
    web = _WebServer(tmp_path)
    try:
        ids = [web.jump() for _ in range(4)]
        kept = web.call("GET", "/api/snapshots?limit=1000")["snapshots"]
        assert len(kept) == 2, kept
        # The periodic snapshots (one a second) may add some.
        assert web.snapshots() >= 4 and web.snapshots() >= max(ids), ids
    finally:
        web.stop()


def test_median_ci_brackets_the_median_and_narrows_with_sessions() -> None:
    """The service rows' interval (``_common.median_ci``): it holds the sample
    median, is reproducible, narrows as sessions are added, and says nothing
    for a single value."""
    sys.path.insert(0, str(BENCH))
    try:
        from _common import median_ci
    finally:
        sys.path.remove(str(BENCH))
    few = [0.98, 1.01, 1.07, 1.03, 0.99, 1.05]
    lo, hi = median_ci(few)
    assert lo <= sorted(few)[2] <= sorted(few)[3] <= hi
    assert (lo, hi) == median_ci(few)
    assert min(few) <= lo < hi <= max(few)
    many_lo, many_hi = median_ci(few * 8)
    assert many_hi - many_lo < hi - lo
    assert all(math.isnan(x) for x in median_ci([1.0]))


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("variant", "threads"), [("plain", 1), ("plain_threads", 3)])
def test_service_control_variants_run_what_they_say(tmp_path: Path, variant: str,
                                                    threads: int) -> None:
    """``--controls``' parked-threads service runs two threads besides its loop's
    (it reports ``threading.active_count()`` in its port file and ``/health``);
    plain runs one.  They sleep on deadlines of 120 and 151 ms that the loop
    re-arms, so an idle service wakes neither (``parked_wakeups``)."""
    port_file = tmp_path / "port"
    env = dict(os.environ)
    env.pop("PEEPS_DISABLE", None)
    env.pop("PEEPS_DASHBOARD", None)
    proc = subprocess.Popen([sys.executable, str(BENCH / "bench_service.py"), "serve",
                             "--variant", variant, "--port-file", str(port_file)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text()):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.05)
        info = json.loads(port_file.read_text())
        assert info["threads"] == threads, info
        with urllib.request.urlopen(f"http://127.0.0.1:{info['port']}/work?n=10",
                                    timeout=10) as reply:
            assert json.loads(reply.read())["result"] == sum(i * i for i in range(10))
        health = []
        for _ in range(2):  # 0.5 s apart: past both deadlines, unless they are re-armed
            with urllib.request.urlopen(f"http://127.0.0.1:{info['port']}/health",
                                        timeout=10) as reply:
                health.append(json.loads(reply.read()))
            time.sleep(0.5)
        assert [h["threads"] for h in health] == [threads, threads], health
        assert health[1]["parked_wakeups"] == health[0]["parked_wakeups"], health
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reaps it and closes its stderr pipe


@pytest.mark.timeout(120)
def test_service_controls_quick_reports_each_control(tmp_path: Path) -> None:
    """``bench_service.py --controls --quick``: the two control services get
    finite, unjudged rows for CPU per request and throughput."""
    payload = run_service_bench("--controls", tmp_path)
    controls = [r for r in payload["rows"] if "a control (--controls)" in r.get("note", "")]
    assert [r["name"] for r in controls] == [
        f"{label}: {what} vs plain"
        for label in ("plain + 220 empty loop turns per request (a known cost)",
                      "plain + two threads asleep on deadlines the loop re-arms "
                      "(as peeps' are)")
        for what in ("service CPU per request", "throughput")], controls
    for r in controls:
        assert math.isfinite(r["value"]) and 0.2 < r["value"] < 5 and "ok" not in r, r


@pytest.mark.timeout(60)
def test_process_counters_count_another_processs_threads() -> None:
    """``_perf_events.ProcessCounters`` counts every thread of another process:
    a child burning CPU in a second thread shows up in ``task-clock`` as much
    as the kernel's own per-thread run times (``schedstat``) say it ran.  Every
    event is either counted or listed with the kernel's reason, and reading a
    process that has exited does not raise."""
    sys.path.insert(0, str(BENCH))
    try:
        from _perf_events import EVENT_NAMES, ProcessCounters
    finally:
        sys.path.remove(str(BENCH))
    child = subprocess.Popen([sys.executable, "-c", (
        "import threading, time\n"
        "def burn():\n"
        "    end = time.monotonic() + 3\n"
        "    while time.monotonic() < end: pass\n"
        "threading.Thread(target=burn).start()\n"
        "time.sleep(3)\n")])
    try:
        deadline = time.monotonic() + 10
        while len(list(Path(f"/proc/{child.pid}/task").iterdir())) < 2:
            assert time.monotonic() < deadline, "the child's thread did not start"
            time.sleep(0.01)

        def ran_ns() -> int:
            return sum(int((t / "schedstat").read_text().split()[0])
                       for t in Path(f"/proc/{child.pid}/task").iterdir())

        counters = ProcessCounters(child.pid)
        before, ran0 = counters.read(), ran_ns()
        time.sleep(0.5)
        after, ran1 = counters.read(), ran_ns()
        assert set(after) | set(counters.unavailable) == set(EVENT_NAMES)
        assert not set(after) & set(counters.unavailable)
        for name, why in counters.unavailable.items():
            assert why.split(":")[0].startswith("E"), (name, why)  # an errno name
        assert "task-clock" in after, counters.unavailable
        counted = after["task-clock"] - before["task-clock"]
        assert 0.5 < counted / (ran1 - ran0) < 2, (counted, ran1 - ran0)
        assert counters.coverage()["task-clock"] == pytest.approx(1.0)
        child.kill()
        child.wait(timeout=10)
        assert counters.read()["task-clock"] >= after["task-clock"]
        counters.close()
    finally:
        child.kill()
        child.wait(timeout=10)


@pytest.mark.timeout(120)
def test_service_counters_quick_reports_each_event(tmp_path: Path) -> None:
    """``bench_service.py --counters --quick``: per event counted, plain's
    count per request and each variant's ratio to it (section 1f); the
    kernel's task clock agrees with the CPU time the table measures; what
    this machine cannot count (no PMU in most VMs) is named, with why."""
    payload = run_service_bench("--counters", tmp_path)
    rows = payload["rows"]
    counter_rows = {r["name"]: r for r in rows if r["section"].startswith("1f.")}
    (cpu,) = [r for r in rows if r["name"] == "plain: service CPU per request"]
    task_clock = counter_rows["plain: task-clock per request"]
    assert 0.7 < task_clock["value"] / (cpu["value"] * 1e3) < 1.3, (task_clock, cpu)
    for label in ("plain, a second process", "peeps disabled", "peeps all-on",
                  "peeps all-on, no dashboard"):
        ratio = counter_rows[f"{label}: task-clock vs plain"]
        assert 0.2 < ratio["value"] < 5, ratio
        assert f"{label}: context-switches vs plain" in counter_rows or \
            f"{label}: context-switches per request" in counter_rows, sorted(counter_rows)
    raw = payload["meta"]["raw"]["variants"]["plain"]["sessions"][0]["counters"]
    if "cycles" in raw["unavailable"]:
        missing = counter_rows["events not counted on this machine"]
        assert missing["value"] is None and "cycles" in missing["note"], missing
        assert "(E" in missing["note"], missing  # the kernel's errno, named
    else:
        assert counter_rows["plain: cycles per request"]["value"] > 0
        assert counter_rows["plain: instructions per cycle"]["value"] > 0


@pytest.mark.timeout(60)
def test_process_counters_fall_back_to_user_space_where_the_kernel_is_forbidden(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``perf_event_paranoid`` refuses counting kernel-mode work (an
    unprivileged user, the default 2), every event is opened for user space
    only (``user_only``), still counts, and is not reported unavailable."""
    sys.path.insert(0, str(BENCH))
    try:
        import _perf_events
    finally:
        sys.path.remove(str(BENCH))
    real = _perf_events.open_event
    kernel_asked: list[bool] = []

    def paranoid(event: Any, tid: int, *, exclude_kernel: bool = False) -> int:
        kernel_asked.append(not exclude_kernel)
        if not exclude_kernel:
            raise PermissionError(13, "Permission denied")
        return real(event, tid, exclude_kernel=True)

    monkeypatch.setattr(_perf_events, "open_event", paranoid)
    counters = _perf_events.ProcessCounters(os.getpid())
    try:
        assert counters.user_only
        assert "task-clock" not in counters.unavailable, counters.unavailable
        before = counters.read()["task-clock"]
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        assert counters.read()["task-clock"] - before > 0
        assert kernel_asked[0] and not any(kernel_asked[1:]), kernel_asked
    finally:
        counters.close()
