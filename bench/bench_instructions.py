"""The realistic service's instructions per request, counted by callgrind.

    python bench/bench_instructions.py -o bench/results/instructions.json [--quick] [--simulate]

Timing on a shared 2-core VM does not resolve steps of a few percent (the
service benchmark's control row shows how far apart two processes of one build
land).  ``valgrind --tool=callgrind`` counts the instructions a process
executes, whatever else the machine is doing, so the per-request work of each
variant can be compared to a fraction of a percent.

Each variant is the real aiohttp service of ``bench_service.py`` (``serve``),
run under callgrind with the same glibc thresholds and hash seed for all;
a client outside valgrind sends warm-up requests, then ``--reps`` times: zero
the counters (``callgrind_control -z``), send ``--requests`` requests at the
service benchmark's concurrency, dump the counters (``callgrind_control -d``).
A rep's instructions (the dump's ``summary``: what ran between the zero and the
dump) over its requests is one figure; the table gives the median and the
min–max of the reps, which here agree to ~0.1 %.  The variants run side by
side (the counts do not depend on CPU contention), each over one set of
keep-alive connections.

What instruction counts do not show: cache misses and branch mispredictions
(the VM exposes no hardware counters; ``--simulate`` adds callgrind's models of
both at ~2.5× the run time: L1 instruction and data misses, L2 misses and
mispredicts per request, the caches sized as this CPU's from sysfs, with
callgrind's second level modelled as the L2), and anything paced by the wall
clock.
Under valgrind a request takes ~50× longer, so a thread ticking at 100 Hz would
be counted ~50× per request: the sampler, the watchdog and snapshots are left
out here, and measured by time in their own rows (sections 1, 3 and 5).

Variants:

* ``plain``: no peeps;
* ``disabled``: the peeps wrappers with ``PEEPS_DISABLE=1`` (the noise-free form
  of the "disabled: indistinguishable from plain" target);
* ``wrappers``: peeps enabled with the wrappers only (channel, Lock, Semaphore,
  ``spawn_tracked``), no automatic tracking, sampler or watchdog;
* ``tracking``: + automatic task tracking and ``peeps.patch()``: all-on's
  per-request work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import median, row, spread_text, write_result
from bench_service import service_env

SECTION = "1d. service instructions per request (callgrind)"
SERVICE = Path(__file__).with_name("bench_service.py")
#: label -> (bench_service ``serve`` variant, PEEPS_BENCH_COMPONENTS, extra env, row text).
VARIANTS: dict[str, tuple[str, str | None, dict[str, str], str]] = {
    "plain": ("plain", None, {}, "plain asyncio"),
    "disabled": ("disabled", None, {"PEEPS_DISABLE": "1"}, "peeps disabled"),
    "wrappers": ("unconnected", "none", {},
                 "peeps wrappers (channel, Lock, Semaphore, spawn_tracked)"),
    "tracking": ("unconnected", "auto,patch", {},
                 "+ automatic task tracking and peeps.patch() (all-on's per-request work)"),
}
#: Extra callgrind flags for ``--simulate``: its cache and branch-predictor models
#: (the caches' geometry: :func:`cache_flags`).
SIM_FLAGS = ["--cache-sim=yes", "--branch-sim=yes"]
#: callgrind's cache model (flag) -> this CPU's cache (level, sysfs type).  callgrind
#: models two levels and by default takes the last level (L3) as its second, which
#: on a VM can come out as nonsense (512 MB on the AMD VM of docs/performance.md)
#: and in any case holds a service's whole working set: modelling L2 instead says
#: how much of the per-request work leaves the core's own caches.
CACHES = {"--I1": (1, "Instruction"), "--D1": (1, "Data"), "--LL": (2, "Unified")}
#: Seconds to let the service go idle before zeroing or dumping its counters.
QUIET_S = 0.5
#: The disabled target (≥ 99 % of plain's throughput) as instructions.
DISABLED_MAX = 1 / 0.99


async def _drive(svc: _Counted, args: argparse.Namespace) -> None:
    """Warm-up requests, then ``args.reps`` counted batches, all over the same
    ``args.concurrency`` keep-alive connections (so no connection is opened or
    closed inside a counted batch)."""
    request = (f"GET /work?n=300 HTTP/1.1\r\nHost: 127.0.0.1:{svc.port}\r\n"
               "Connection: keep-alive\r\n\r\n").encode()
    conns = [await asyncio.open_connection("127.0.0.1", svc.port)
             for _ in range(args.concurrency)]
    left = 0

    async def conn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{svc.label}: the service answered {head[:40]!r}")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if m:
                await reader.readexactly(int(m.group(1)))

    async def batch(requests: int) -> None:
        nonlocal left
        left = requests
        await asyncio.gather(*(conn(r, w) for r, w in conns))

    try:
        await batch(args.warmup)
        # Started with instrumentation off (--instr-atstart=no: the interpreter's
        # start-up, the imports and the warm-up run at valgrind's minimum
        # slowdown, ~4x rather than ~50x); counted from here on.
        svc.control("-i", "on")
        await batch(min(args.warmup, args.concurrency * 4))  # re-translated code warms up
        for _ in range(args.reps):
            await asyncio.sleep(QUIET_S)  # the service finishes what it was doing
            svc.control("-z")
            await batch(args.requests)
            await asyncio.sleep(QUIET_S)
            svc.control("-d")
    finally:
        for _, writer in conns:
            writer.close()


class _Counted:
    """One service process under callgrind."""

    def __init__(self, label: str, tmp: Path, seed: int, sim_flags: list[str]) -> None:
        variant, components, extra, _ = VARIANTS[label]
        self.label = label
        self.dir = tmp / label
        self.dir.mkdir()
        env = service_env(seed, components)  # the service benchmark's, thresholds and all
        env.update(extra)
        self.port_file = self.dir / "port"
        self.log = (self.dir / "valgrind.log").open("w")
        self.proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={self.dir}/callgrind.out.%p",
             *sim_flags,
             sys.executable, str(SERVICE), "serve", "--variant", variant,
             "--port-file", str(self.port_file)],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.port = 0

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.port_file.exists() or not self.port_file.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.dir / "valgrind.log").read_text()[-2000:]
                raise RuntimeError(f"{self.label}: the service did not start under "
                                   f"callgrind:\n{tail}")
            time.sleep(0.1)
        self.port = int(json.loads(self.port_file.read_text())["port"])

    def control(self, *flags: str) -> None:
        subprocess.run(["callgrind_control", *flags, str(self.proc.pid)], check=True,
                       capture_output=True, timeout=60)

    def dumped(self, count: int, timeout: float = 60) -> list[dict[str, int]]:
        """The event counts (``Ir`` = instructions, and with ``--simulate`` the
        cache-miss and branch-mispredict events) of the first ``count`` counter
        dumps, in order.

        ``summary`` is what ran between the zero and the dump; ``totals`` can
        also hold cost carried by calls still open at the zero."""
        deadline = time.monotonic() + timeout
        while True:
            dumps = []
            for part in range(1, count + 1):
                path = self.dir / f"callgrind.out.{self.proc.pid}.{part}"
                text = path.read_text() if path.exists() else ""
                events = re.search(r"^events:\s*(.+)$", text, re.M)
                summary = re.search(r"^summary:\s*(.+)$", text, re.M)
                if not (events and summary):
                    break
                dumps.append(dict(zip(events.group(1).split(),
                                      map(int, summary.group(1).split()), strict=True)))
            if len(dumps) == count:
                return dumps
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: callgrind wrote {len(dumps)} of "
                                   f"{count} dumps")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def _count(label: str, tmp: Path, args: argparse.Namespace) -> list[dict[str, float]]:
    """Per rep: each event's count per request."""
    svc = _Counted(label, tmp, seed=1, sim_flags=args.sim_flags)
    try:
        svc.wait_ready(timeout=180)
        asyncio.run(_drive(svc, args))
        dumps = svc.dumped(args.reps)
    finally:
        svc.stop()
    return [{event: n / args.requests for event, n in dump.items()} for dump in dumps]


#: ``--simulate``: callgrind's model events, folded (name, events summed).
SIMULATED = [
    ("L1 instruction-cache misses", ("I1mr",)),
    ("L1 data-cache misses", ("D1mr", "D1mw")),
    ("L2 misses", ("ILmr", "DLmr", "DLmw")),
    ("branch mispredicts (conditional + indirect)", ("Bcm", "Bim")),
]


def cache_flags(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> list[str]:
    """callgrind's ``--I1``/``--D1``/``--LL`` for this CPU's L1 caches and its L2,
    read from sysfs; a cache that cannot be read, or whose geometry callgrind
    cannot model (the set count must be a power of two), is left to callgrind's
    own detection."""
    found: dict[tuple[int, str], str] = {}
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size_text = (index / "size").read_text().strip()
            size = int(size_text.rstrip("KM")) * (1024 if size_text.endswith("K") else
                                                  1024 * 1024 if size_text.endswith("M") else 1)
            ways = int((index / "ways_of_associativity").read_text())
            line = int((index / "coherency_line_size").read_text())
        except (OSError, ValueError):
            continue
        sets = size // max(1, ways * line)
        if ways > 0 and line > 0 and sets > 0 and sets & (sets - 1) == 0 \
                and sets * ways * line == size:
            found[(level, kind)] = f"{size},{ways},{line}"
    return [f"{flag}={found[key]}" for flag, key in CACHES.items() if key in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", help="write the result rows here (JSON)")
    parser.add_argument("--quick", action="store_true", help="tiny counts (smoke test)")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per rep (default 1000)")
    parser.add_argument("--reps", type=int, default=None, help="reps per variant (default 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="unmeasured requests first (default 1000)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--simulate", action="store_true",
                        help="also run callgrind's cache and branch-predictor models (this "
                             "CPU's L1 and L2 geometry) and report L1 instruction and data "
                             "misses, L2 misses and mispredicts per request (~2.5x slower)")
    parser.add_argument("--keep", metavar="DIR",
                        help="keep callgrind's dumps here (DIR/<variant>/callgrind.out.PID.N, "
                             "one per rep) for callgrind_annotate")
    args = parser.parse_args()
    args.requests = args.requests or (20 if args.quick else 1000)
    args.reps = args.reps or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (10 if args.quick else 1000)
    args.sim_flags = SIM_FLAGS + cache_flags() if args.simulate else []
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        sys.exit("bench_instructions: needs valgrind (callgrind and callgrind_control); "
                 "install it with: apt-get install valgrind")

    from concurrent.futures import ThreadPoolExecutor

    print(f"instructions: {len(VARIANTS)} variants under callgrind side by side, "
          f"{args.reps} × {args.requests} requests each (~1-2 min)", file=sys.stderr)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="peeps-bench-instr-") as tmpdir:
        tmp = Path(tmpdir)
        with ThreadPoolExecutor(len(VARIANTS)) as pool:
            futures = {label: pool.submit(_count, label, tmp, args) for label in VARIANTS}
            per_request = {label: f.result() for label, f in futures.items()}
        if args.keep:
            kept = Path(args.keep)
            for label in VARIANTS:
                (kept / label).mkdir(parents=True, exist_ok=True)
                for dump in (tmp / label).glob("callgrind.out.*.*"):
                    shutil.copy2(dump, kept / label / dump.name)
            print(f"callgrind's dumps kept in {kept}/<variant>/ "
                  "(read one with: callgrind_annotate FILE)", file=sys.stderr)
    elapsed = time.monotonic() - t0
    for label, dumps in per_request.items():
        print(f"instructions {label}: " + ", ".join(f"{d['Ir'] / 1e3:.1f} k" for d in dumps)
              + " per request", file=sys.stderr)

    def folded(label: str, events: tuple[str, ...]) -> list[float]:
        return [sum(d[e] for e in events) for d in per_request[label]]

    plain = folded("plain", ("Ir",))
    base = median(plain)
    rows = [row(SECTION, f"{VARIANTS['plain'][3]}: instructions per request", base / 1e3,
                "k instr", spread=spread_text([v / 1e3 for v in plain], "{:.1f}"),
                note=f"concurrency {args.concurrency}, {args.reps} × {args.requests} requests; "
                     "the spread is the reps'; separate runs and checkouts move a ratio by "
                     "about ±1 point (docs/performance.md, method 1d)")]
    for label in list(VARIANTS)[1:]:
        each = folded(label, ("Ir",))
        ratio = median(each) / base
        judged = label == "disabled"
        rows.append(row(
            SECTION, f"{VARIANTS[label][3]}: instructions per request vs plain", ratio, "×",
            spread=spread_text([v / base for v in each], "{:.3f}"), baseline="plain",
            target=f"≤ {DISABLED_MAX:.3f}" if judged else None,
            ok=ratio <= DISABLED_MAX if judged else None,
            note=f"{median(each) / 1e3:.1f} k instr/req, {(median(each) - base) / 1e3:+.1f} k"
                 + ("; the disabled target (≥ 0.99 of plain) without timing noise" if judged
                    else "")))
    if args.simulate:
        for what, events in SIMULATED:
            sim_base = median(folded("plain", events))
            rows.append(row(SECTION, f"{VARIANTS['plain'][3]}: simulated {what} per request",
                            sim_base, "", note="callgrind's model, not this CPU's counters; "
                            + (" ".join(args.sim_flags[len(SIM_FLAGS):])
                               or "callgrind's own cache geometry")))
            for label in list(VARIANTS)[1:]:
                each = folded(label, events)
                rows.append(row(SECTION, f"{VARIANTS[label][3]}: simulated {what} vs plain",
                                median(each) / sim_base, "×",
                                spread=spread_text([v / sim_base for v in each], "{:.3f}"),
                                baseline="plain", note=f"{median(each):.0f} per request"))
    if args.output:
        write_result(args.output, "instructions", rows, quick=args.quick,
                     meta={"per_request": per_request, "requests": args.requests,
                           "reps": args.reps, "warmup": args.warmup,
                           "concurrency": args.concurrency, "simulate": args.simulate,
                           "callgrind_flags": args.sim_flags,
                           "elapsed_s": elapsed})
    else:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
