"""Helpers for the browser tests: the Chromium launch arguments, a page wrapper
that records UI errors, and the synthetic wire-protocol process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from support import stop_process

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("PEEPS_UI_SHOTS", "/tmp/ui-shots"))


def chromium_path() -> str | None:
    for candidate in (os.environ.get("PEEPS_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


class Page:
    """A Playwright page plus the errors it reported."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        # A 4xx answer the UI shows on purpose (an SQL error) is logged by
        # Chromium as a failed resource; that is not a UI error.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.errors.append(f"console: {msg.text}")

    def shot(self, name: str) -> None:
        """Keep a screenshot for people reviewing the UI (not compared)."""
        try:
            SHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(SHOTS / f"{name}.png"))
        except OSError:
            pass


class SyntheticProcess:
    """``synthetic_process.py``: a wire-protocol client with a large graph."""

    def __init__(self, dashboard: str, nodes: int, name: str = "synthetic", threads: int = 3,
                 mute: bool = False, shape: str = "groups") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "synthetic_process.py"), "--dashboard", dashboard,
             "--nodes", str(nodes), "--name", name, "--threads", str(threads),
             "--shape", shape, *(["--mute"] if mute else [])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if "connected" not in line:
            self.stop()
            raise AssertionError(f"synthetic process did not connect: {line!r}")

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout:
            self.proc.stdout.close()


def wait_until(predicate: Any, timeout: float = 15.0, message: str = "condition",
               state: Any = None) -> None:
    """Poll ``predicate``; on timeout say what was awaited and, if given, ``state()``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            seen = f" (saw: {state()!r})" if state is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}{seen}")
        time.sleep(0.05)
