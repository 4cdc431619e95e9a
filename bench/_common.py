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
import statistics
import subprocess
import sys
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
