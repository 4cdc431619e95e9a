"""Shared helpers for the benchmark scripts: statistics, the result-row format,
and feature probes for parts of peeps that may not exist yet.

Every non-pyperf benchmark writes one JSON file::

    {"benchmark": "service", "quick": false, "rows": [Row, ...], "meta": {...}}

where a Row is a dict with ``section``, ``name``, ``value``, ``unit`` and
optionally ``spread`` (same unit, half the inter-quartile range or min..max
text), ``baseline`` (what the ratio is against), ``ratio``, ``target`` (text),
``ok`` (True/False/None = not judged) and ``note``.  ``bench/run`` folds these and
pyperf JSON files into one markdown table.
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (q in 0..1) of a non-empty list."""
    if not values:
        return float("nan")
    data = sorted(values)
    pos = (len(data) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def median_ci(values: list[float], level: float = 0.95, reps: int = 4000,
              seed: int = 0) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval for the median of ``values``
    (resampled ``reps`` times with a fixed seed, so the table is reproducible
    from its inputs).  With a handful of values it is coarse, and that is the
    point: it says how far the run resolves the median."""
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(reps))
    tail = (1 - level) / 2
    return quantile(meds, tail), quantile(meds, 1 - tail)


def spread_text(values: list[float], fmt: str = "{:.3g}") -> str:
    """``min–max`` of repeated measurements (what the table shows as spread)."""
    if not values:
        return ""
    if len(values) == 1:
        return "n=1"
    return f"{fmt.format(min(values))}–{fmt.format(max(values))} (n={len(values)})"


def row(section: str, name: str, value: float | None, unit: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"section": section, "name": name, "value": value, "unit": unit}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def write_result(path: str | os.PathLike[str], benchmark: str, rows: list[dict[str, Any]],
                 *, quick: bool, meta: dict[str, Any] | None = None) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": benchmark, "quick": quick, "rows": rows, "meta": meta or {}}
    Path(path).write_text(json.dumps(payload, indent=1, default=repr) + "\n")


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:
        commit = ""
    return {"nproc": os.cpu_count(), "cpu": cpu or platform.processor(),
            "python": sys.version.split()[0], "implementation": platform.python_implementation(),
            "platform": platform.platform(), "commit": commit}


# -- feature probes: which parts of peeps exist in this tree --------------------------


def peeps_feature(*names: str) -> Any:
    """The first attribute path that exists (``"Lock"``, ``"tasks.spawn_tracked"``), else None."""
    import importlib

    import peeps

    for name in names:
        obj: Any = peeps
        module_path, _, attr = name.rpartition(":")
        if module_path:
            try:
                obj = importlib.import_module(module_path)
            except ImportError:
                continue
            name = attr
        for part in name.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    return None


class WebServer:
    """A real ``python -m peeps.web`` on free ports; ``env`` overrides its settings."""

    def __init__(self, db: Path, **env: str) -> None:
        full_env = dict(os.environ, PEEPS_LISTEN="127.0.0.1:0", PEEPS_HTTP="127.0.0.1:0",
                        PEEPS_DB=str(db), PEEPS_SNAPSHOT_INTERVAL_S="0", PYTHONUNBUFFERED="1")
        full_env.update(env)
        self.proc = subprocess.Popen([sys.executable, "-m", "peeps.web"], env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.dashboard = ""
        self.http = ""
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                if m := re.search(r"peeps-web: ingest listening on (\S+)", line):
                    self.dashboard = m.group(1)
                if m := re.search(r"peeps-web: http listening on (\S+)", line):
                    self.http = m.group(1).rstrip("/")
                if self.dashboard and self.http:
                    ready.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        if not ready.wait(30):
            self.stop()
            raise RuntimeError("peeps-web did not start")

    def call(self, method: str, path: str, body: Any = None, timeout: float = 300) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())

    def jump(self) -> int:
        return int(self.call("POST", "/api/jump-now", {})["snapshot_id"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        # The pump reads to the end of the output, then its pipe can close.
        self._pump.join(10)
        if self.proc.stdout is not None and not self._pump.is_alive():
            self.proc.stdout.close()
