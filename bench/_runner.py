"""``bench/run``: run every benchmark, fold the results into one table.

Each benchmark is a separate script run in its own process; it writes one JSON
file into ``bench/results/`` (``--quick`` runs write into ``bench/results/quick/``):

* pyperf JSON (``bench_micro.py`` and peers' pyperf scripts): benchmark names
  ``<operation>:<variant>`` (``/`` also accepted); the ``plain`` variant is the
  baseline, every other variant of the operation becomes a ratio row;
* the rows format of ``bench/_common.py`` (everything else).

Then ``latest.md`` (the table) and ``latest.json`` (all rows + machine) are written.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import RESULTS, ROOT, machine, row, write_result

BENCH = ROOT / "bench"

#: (name, script, section, owner note).  Peers' scripts are run when present.
SUITE: list[tuple[str, str, str]] = [
    ("micro", "bench_micro.py", "2. hot-path microbenchmarks"),
    ("asyncio_micro", "bench_asyncio_micro.py", "2. hot-path microbenchmarks (asyncio primitives)"),
    ("threads", "bench_threads.py", "5. threads and sampler"),
    ("snapshot", "bench_snapshot.py", "3. snapshot cost"),
    ("server", "bench_server.py", "4. server"),
    ("service", "bench_service.py", "1. realistic service"),
    ("busy_loop", "bench_busy_loop.py", "1c. request path in a saturated loop"),
    ("instructions", "bench_instructions.py", "1d. service instructions per request (callgrind)"),
    ("ui", "bench_ui.py", "6. UI"),
]

#: Micro targets: operation -> (max ratio to plain, or None) / ns added per op.
RATIO_TARGETS = {
    "task_spawn": 1.3, "spawn_finish": 1.3, "queue_put_get": 1.3,
    "lock_uncontended": 1.5, "lock_contended": 1.5, "semaphore": 1.5,
    "semaphore_uncontended": 1.5, "semaphore_contended": 1.5,
}
NS_TARGETS = {"thread_lock": 250.0, "thread_lock_with": 250.0}
#: Variants that are figures about other tools, reported for context only.
PEER_VARIANTS = {"debug", "aiomonitor"}
#: Opt-in extras: reported, not judged against the default budget.
OPT_IN_VARIANTS = {"auto_steps"}
BASELINE_NAMES = ("plain", "asyncio", "stdlib", "threading", "baseline", "raw")


def _pyperf_args(quick: bool) -> list[str]:
    # Full: 4 worker processes x 3 values of >= 50 ms each per benchmark (pyperf's
    # default of 20 processes would not fit the suite's time budget on 2 cores).
    if quick:
        # One value of one loop per benchmark, all in this one process: a smoke run.
        return ["--worker", "--loops", "1", "--values", "1", "--warmups", "0", "--quiet"]
    return ["--processes", "4", "--values", "3", "--warmups", "1", "--min-time", "0.05",
            "--quiet"]


def _command(name: str, script: Path, out: Path, quick: bool) -> list[str]:
    source = script.read_text(errors="replace")
    cmd = [sys.executable, str(script)]
    if "pyperf" in source and "Runner(" in source:
        return [*cmd, *_pyperf_args(quick), "-o", str(out)]
    if "--output" in source or '"-o"' in source:
        cmd += ["-o", str(out)]
    if quick and "--quick" in source:
        cmd.append("--quick")
    return cmd


def _split(name: str) -> tuple[str, str]:
    for sep in (":", "/", "[", " "):
        if sep in name:
            op, _, variant = name.partition(sep)
            return op.strip(), variant.strip("] ")
    return name, ""


def _fmt_time(seconds: float) -> tuple[float, str]:
    if seconds < 1e-6:
        return seconds * 1e9, "ns"
    if seconds < 1e-3:
        return seconds * 1e6, "µs"
    return seconds * 1e3, "ms"


def pyperf_rows(path: Path, section: str) -> list[dict[str, Any]]:
    import pyperf

    suite = pyperf.BenchmarkSuite.load(str(path))
    by_op: dict[str, dict[str, Any]] = {}
    for bench in suite.get_benchmarks():
        op, variant = _split(bench.get_name())
        by_op.setdefault(op, {})[variant] = bench
    rows = []
    for op, variants in by_op.items():
        base_name = next((b for b in BASELINE_NAMES if b in variants), None)
        base = variants.get(base_name) if base_name else None
        for variant, bench in variants.items():
            values = bench.get_values()
            med = bench.median()
            rsd = (bench.stdev() / bench.mean()) if len(values) > 1 and bench.mean() else 0.0
            value, unit = _fmt_time(med)
            if base is None and SAMPLER_TICK.match(op):
                continue
            if base is None or variant == base_name:
                rows.append(row(section, f"{op}: {variant or 'value'}", value, unit,
                                spread=f"±{rsd * 100:.0f}%" if rsd else None))
                continue
            bvals = base.get_values()
            brsd = (base.stdev() / base.mean()) if len(bvals) > 1 and base.mean() else 0.0
            ratio = med / base.median()
            added_ns = (med - base.median()) * 1e9
            spread = ratio * math.sqrt(rsd ** 2 + brsd ** 2)
            target = ok = None
            if variant not in PEER_VARIANTS | OPT_IN_VARIANTS and variant != "disabled":
                if op in RATIO_TARGETS:
                    target, ok = f"≤ {RATIO_TARGETS[op]}×", ratio <= RATIO_TARGETS[op]
                if op in NS_TARGETS:
                    target = f"≤ {NS_TARGETS[op]:.0f} ns added"
                    ok = added_ns <= NS_TARGETS[op]
            note = f"{value:.3g} {unit} vs {_fmt_time(base.median())[0]:.3g} " \
                   f"{_fmt_time(base.median())[1]}; {added_ns:+.0f} ns/op"
            if variant in PEER_VARIANTS:
                note += " (peer figure, for context)"
            if variant in OPT_IN_VARIANTS:
                note += " (opt-in extra)"
            rows.append(row(section, f"{op}: {variant} vs {base_name}", ratio, "×",
                            spread=f"±{spread:.2f}" if spread else None, baseline=base_name,
                            target=target, ok=ok, note=note))
    return rows


SAMPLER_TICK = re.compile(r"sampler_tick_(\d+)_threads")
SAMPLER_HZ = 100
SAMPLER_MAX_SHARE = 0.02


def sampler_rows(path: Path, section: str) -> list[dict[str, Any]]:
    """Per-tick sampler cost (pyperf) as the CPU share of one core at 100 Hz."""
    import pyperf

    rows = []
    for bench in pyperf.BenchmarkSuite.load(str(path)).get_benchmarks():
        m = SAMPLER_TICK.match(_split(bench.get_name())[0])
        if not m:
            continue
        n = int(m.group(1))
        share = bench.median() * SAMPLER_HZ
        judged = n >= 100
        rows.append(row(section, f"sampler CPU at {SAMPLER_HZ} Hz, {n} parked threads "
                        "(tick cost × rate)", share * 100, "% of a core",
                        target=f"≤ {SAMPLER_MAX_SHARE * 100:.0f}%" if judged else None,
                        ok=(share <= SAMPLER_MAX_SHARE) if judged else None,
                        note=f"{bench.median() * 1e6:.0f} µs per tick"))
    return rows


LIVE_SAMPLER = re.compile(r"sampler at (\d+) Hz, (\d+) threads(, every tick real)?: "
                          r"([\d.]+)% of a core"
                          r"(?: \[([\d.]+)–([\d.]+) over (\d+) windows[^\]]*\])?(.*)")


def live_sampler_rows(script: Path, env: dict[str, str], section: str,
                      quick: bool = False) -> list[dict[str, Any]]:
    """``bench_threads.py --sampler-cpu``: the real sampler thread's whole CPU
    share (ticks and wake-ups), as it runs and with every tick a real one."""
    proc = subprocess.run([sys.executable, str(script), "--sampler-cpu",
                           *(["--quick"] if quick else [])], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    rows = []
    as_run: dict[int, float] = {}
    for line in proc.stdout.splitlines():
        m = LIVE_SAMPLER.search(line)
        if m:
            hz, threads, pct = int(m.group(1)), int(m.group(2)), float(m.group(4))
            spread = f"{m.group(5)}–{m.group(6)} (n={m.group(7)})" if m.group(5) else None
            note = m.group(8).strip(" ()")
            if m.group(3):  # every tick real: what the quiet ticks save
                if threads in as_run and pct > 0:
                    note += f"; the sampler as it runs is {as_run[threads] / pct:.2f}× this"
                rows.append(row(section, f"live sampler at {hz} Hz, {threads} threads, every "
                                "tick real (no quiet ticks)", pct, "% of a core",
                                spread=spread, note=note))
                continue
            as_run[threads] = pct
            judged = threads >= 100
            rows.append(row(section, f"live sampler at {hz} Hz, {threads} threads "
                            "(the sampler thread's whole CPU)", pct, "% of a core",
                            target="≤ 2%" if judged else None, ok=(pct <= 2) if judged else None,
                            spread=spread, note=note))
    if not rows:
        raise RuntimeError(f"--sampler-cpu printed nothing usable: {proc.stdout[-500:]}"
                           f"{proc.stderr[-500:]}")
    return rows


def load_rows(path: Path, section: str) -> list[dict[str, Any]]:
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "rows" in data:
        return [dict(r, section=r.get("section", section)) for r in data["rows"]]
    if isinstance(data, dict) and "benchmarks" in data:
        return pyperf_rows(path, section) + sampler_rows(path, section)
    raise ValueError(f"{path.name}: neither pyperf JSON nor a rows file")


def _fmt_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def render_markdown(rows: list[dict[str, Any]], info: dict[str, Any], *, quick: bool,
                    durations: dict[str, float]) -> str:
    lines = [
        "# peeps overhead — latest run" + (" (QUICK: sizes and repeats cut, not for judging)"
                                           if quick else ""),
        "",
        f"{info.get('measured_at') or time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · "
        f"commit {info['commit']} · "
        f"{info['nproc']} CPUs, {info['cpu']} · Python {info['python']} · `bench/run"
        + (" --quick" if quick else "") + "` · 1-min load average "
        f"{info['loadavg_1m']['start']} at start, {info['loadavg_1m']['end']} at end "
        "(other work shared the machine)",
        "",
        "Ratios are measured side by side in one run; *spread* is min–max over repeats "
        "(services, snapshots) or ± the combined relative standard deviation (pyperf). "
        "✅ meets the target, ❌ misses it, blank = not judged.",
        "",
    ]
    section = None
    for r in sorted(rows, key=lambda r: r["section"]):
        if r["section"] != section:
            section = r["section"]
            lines += ["", f"### {section}", "",
                      "| measure | value | spread | target | | note |", "|---|---|---|---|---|---|"]
        ok = {True: "✅", False: "❌"}.get(r.get("ok"), "")
        value = f"{_fmt_value(r.get('value'))} {r.get('unit', '')}".strip()
        note = r.get("note", "")
        baseline = str(r.get("baseline", ""))
        if baseline and r.get("unit") != "×" and baseline not in note:
            note = f"{note}; {baseline}".strip("; ")
        lines.append(f"| {r['name']} | {value} | {r.get('spread', '')} | {r.get('target', '')} "
                     f"| {ok} | {note} |".replace("\n", " "))
    lines += ["", "Benchmark wall times: " + ", ".join(f"{k} {v:.0f} s"
                                                      for k, v in durations.items()), ""]
    return "\n".join(lines)


def _loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


DOCS = ROOT / "docs" / "performance.md"
BEGIN, END = "<!-- bench/run table: begin -->", "<!-- bench/run table: end -->"


def update_docs(md: str) -> None:
    """Replace the table between the markers in docs/performance.md."""
    text = DOCS.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"bench/run: {DOCS} has no {BEGIN} ... {END} markers")
    body = "\n".join(md.splitlines()[1:]).replace("\n### ", "\n#### ").strip()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOCS.write_text(f"{head}{BEGIN}\n\n{body}\n\n{END}{tail}")
    print(f"bench/run: updated {DOCS}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description="run the peeps benchmark suite")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--results", default=None, help="directory for the JSON + markdown")
    parser.add_argument("--update-docs", action="store_true",
                        help="also paste the table into docs/performance.md (between its markers)")
    parser.add_argument("--rerender", action="store_true",
                        help="rebuild latest.md/json from the result files already there")
    args = parser.parse_args()
    out_dir = Path(args.results) if args.results else (RESULTS / "quick" if args.quick
                                                       else RESULTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))

    rows: list[dict[str, Any]] = []
    durations: dict[str, float] = {}
    failures = 0
    load_before = _loadavg()
    for name, script_name, section in SUITE:
        if only and name not in only:
            continue
        script = BENCH / script_name
        if not script.exists():
            rows.append(row(section, f"{script_name}", None, "", note="not landed in this tree"))
            continue
        out = out_dir / f"{name}.json"
        # The live sampler rows come from a second run of the threads script;
        # they are kept beside its pyperf file so --rerender finds them too.
        live = out_dir / f"{name}_live.json"
        if args.rerender:
            if out.exists():
                rows.extend(load_rows(out, section))
            if live.exists():
                rows.extend(load_rows(live, section))
            continue
        out.unlink(missing_ok=True)
        live.unlink(missing_ok=True)
        cmd = _command(name, script, out, args.quick)
        print(f"bench/run: {name}: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=900,
                                  stdout=subprocess.PIPE, stderr=None, text=True)
            durations[name] = time.monotonic() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"exit code {proc.returncode}")
            if not out.exists():
                raise RuntimeError("wrote no result file")
            rows.extend(load_rows(out, section))
            if name == "threads":
                live_rows = live_sampler_rows(script, env, section, args.quick)
                write_result(live, "threads_live", live_rows, quick=args.quick)
                rows.extend(live_rows)
        except Exception as exc:
            failures += 1
            durations.setdefault(name, time.monotonic() - t0)
            print(f"bench/run: {name} FAILED: {exc}", file=sys.stderr, flush=True)
            rows.append(row(section, f"{script_name}", None, "", ok=False,
                            note=f"failed: {str(exc)[:200]}"))
    info = machine()
    info["loadavg_1m"] = {"start": load_before, "end": _loadavg()}
    info["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.rerender and (out_dir / "latest.json").exists():
        # The run's own time, not the re-render's.
        previous = json.loads((out_dir / "latest.json").read_text())
        info, durations = previous["machine"], previous.get("durations_s", {})
    payload = {"quick": args.quick, "machine": info, "rows": rows, "durations_s": durations,
               "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out_dir / "latest.json").write_text(json.dumps(payload, indent=1, default=repr) + "\n")
    md = render_markdown(rows, info, quick=args.quick, durations=durations)
    (out_dir / "latest.md").write_text(md)
    print(md)
    print(f"bench/run: wrote {out_dir / 'latest.md'} and latest.json", file=sys.stderr)
    if args.update_docs:
        update_docs(md)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
