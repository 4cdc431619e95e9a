"""Test support: start the real ``peeps-web`` and real example processes.

Nothing here imitates our own server or protocol: fixtures run the real thing
on free ports and read the addresses it logs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

_INGEST_RE = re.compile(r"peeps-web: ingest listening on (\S+):(\d+)")
_HTTP_RE = re.compile(r"peeps-web: http listening on (http://\S+)")


class PeepsServer:
    """A ``python -m peeps.web`` child process on free ports."""

    def __init__(self, db_path: Path, *, extra_env: dict[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.db_path = db_path
        self.extra_env = extra_env or {}
        self.args = args or []
        self.proc: subprocess.Popen[str] | None = None
        self.ingest_host = ""
        self.ingest_port = 0
        self.http_base = ""
        self.output: list[str] = []
        self._ready = threading.Event()

    @property
    def dashboard(self) -> str:
        return f"{self.ingest_host}:{self.ingest_port}"

    def start(self, timeout: float = 20.0) -> PeepsServer:
        env = dict(os.environ)
        env.update({
            "PEEPS_LISTEN": "127.0.0.1:0",
            "PEEPS_HTTP": "127.0.0.1:0",
            "PEEPS_DB": str(self.db_path),
            "PEEPS_SNAPSHOT_INTERVAL_S": "0",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        self._ready.clear()
        self.ingest_port = 0
        self.http_base = ""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "peeps.web", *self.args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("peeps-web did not report its addresses:\n" + "".join(self.output))
        return self

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            self._read_lines(proc.stdout)

    def _read_lines(self, stream: Any) -> None:
        for line in stream:
            self.output.append(line)
            if m := _INGEST_RE.search(line):
                self.ingest_host, self.ingest_port = m.group(1), int(m.group(2))
            if m := _HTTP_RE.search(line):
                self.http_base = m.group(1).rstrip("/")
            if self.ingest_port and self.http_base:
                self._ready.set()

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is not None:
            stop_process(self.proc, kill=kill)

    # -- HTTP helpers ----------------------------------------------------
    def request(self, method: str, path: str, body: Any = None,
                *, expect_error: bool = False) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.http_base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"null")
            if not expect_error:
                raise AssertionError(f"{method} {path} -> {exc.code}: {payload}") from None
            return exc.code, payload

    def get(self, path: str) -> Any:
        return self.request("GET", path)[1]

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})[1]

    def jump(self) -> dict[str, Any]:
        result: dict[str, Any] = self.post("/api/jump-now")
        return result

    def sql(self, snapshot_id: int, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.post(
            "/api/sql", {"snapshot_id": snapshot_id, "sql": sql, "params": params or []})
        return result

    def rows(self, snapshot_id: int, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        result = self.sql(snapshot_id, sql, params)
        return [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]

    def connected(self) -> list[dict[str, Any]]:
        processes: list[dict[str, Any]] = self.get("/api/processes")["processes"]
        return processes

    def wait_connected(self, count: int = 1, timeout: float = 15.0,
                       name: str | None = None) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            procs = [p for p in self.connected()
                     if name is None or p["process_name"] == name]
            if len(procs) >= count:
                return procs
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} connected processes, have {procs}")
            time.sleep(0.05)


def stop_process(proc: subprocess.Popen[Any], *, kill: bool = False) -> None:
    """Terminate (or kill) a child and reap it; kill it if it ignores SIGTERM."""
    if proc.poll() is None:
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class ChildProcess:
    """A child process whose combined output is collected line by line."""

    def __init__(self, command: list[str], *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.output: list[str] = []
        self.proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.output.append(line)

    @property
    def text(self) -> str:
        return "".join(self.output)

    def wait_for_output(self, text: str, timeout: float = 15.0) -> str:
        """The first line containing ``text``; fails if the child exits first."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.output):
                if text in line:
                    return line
            if self.proc.poll() is not None or time.monotonic() > deadline:
                time.sleep(0.1)  # let the pump read the last lines
                raise AssertionError(f"never printed {text!r}:\n{self.text}")
            time.sleep(0.02)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        time.sleep(0.05)  # let the pump read the last lines
        return code

    def stop(self) -> None:
        stop_process(self.proc)


class ExampleProcess(ChildProcess):
    """A real example (``examples/<dir>``) or script run as a child process."""

    def __init__(self, target: Path | str, *, dashboard: str | None,
                 env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        path = Path(target)
        if not path.is_absolute():
            path = EXAMPLES / str(target).replace("-", "_")
        full_env = dict(os.environ, PYTHONUNBUFFERED="1")
        full_env.pop("PEEPS_DASHBOARD", None)
        if dashboard:
            full_env["PEEPS_DASHBOARD"] = dashboard
        full_env.update(env or {})
        super().__init__([sys.executable, str(path), *(args or [])], env=full_env)
