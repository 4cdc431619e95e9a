"""Helpers for the server tests: the real ``peeps-web`` child process on free ports,
and a real TCP client speaking the wire protocol in place of an instrumented process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from peeps.types import HEADER, PROTOCOL_VERSION, encode_frame
from support import stop_process

_INGEST_RE = re.compile(r"^peeps-web: ingest listening on (\S+):(\d+)$")
_HTTP_RE = re.compile(r"^peeps-web: http listening on (http://\S+)$")
_DB_RE = re.compile(r"^peeps-web: database (.+)$")


class WebServer:
    """``python -m peeps.web`` on free ports; stdout parsed, stderr to a log file."""

    def __init__(self, workdir: Path, *, args: list[str] | None = None,
                 env: dict[str, str] | None = None, db: Path | None = None) -> None:
        self.workdir = workdir
        self.db = db or workdir / "peeps.sqlite"
        self.args = args or []
        self.env = env or {}
        self.proc: subprocess.Popen[str] | None = None
        self.stdout: list[str] = []
        self.log_path = workdir / f"server-{id(self)}.log"
        self.ingest: tuple[str, int] = ("", 0)
        self.http_base = ""
        self.db_reported = ""
        self._ready = threading.Event()
        self._log_file: Any = None

    def start(self, timeout: float = 20.0) -> WebServer:
        env = dict(os.environ)
        for key in list(env):
            if key.startswith("PEEPS_"):
                del env[key]
        env.update({"PEEPS_LISTEN": "127.0.0.1:0", "PEEPS_HTTP": "127.0.0.1:0",
                    "PEEPS_DB": str(self.db), "PEEPS_SNAPSHOT_INTERVAL_S": "0",
                    "PYTHONUNBUFFERED": "1"})
        env.update(self.env)
        self._ready.clear()
        self.stdout = []
        self._log_file = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "peeps.web", *self.args], env=env,
                                     stdout=subprocess.PIPE, stderr=self._log_file, text=True)
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.02):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        if not self._ready.is_set():
            self.stop(kill=True)
            raise RuntimeError(f"peeps-web did not start:\n{''.join(self.stdout)}\n{self.log()}")
        return self

    @contextmanager
    def serving(self) -> Iterator[WebServer]:
        """Started for the block and stopped after it, which must leave no
        traceback in the server's log (for module-scoped fixtures)."""
        self.start()
        try:
            yield self
        finally:
            self.stop()
        assert "Traceback" not in self.log(), self.log()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                self.stdout.append(line)
                if m := _INGEST_RE.match(line):
                    self.ingest = (m.group(1), int(m.group(2)))
                elif m := _HTTP_RE.match(line):
                    self.http_base = m.group(1)
                elif m := _DB_RE.match(line):
                    self.db_reported = m.group(1)
                elif line == "peeps-web: ready":
                    self._ready.set()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, *, kill: bool = False) -> int | None:
        if self.proc is None:
            return None
        stop_process(self.proc, kill=kill)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    # -- HTTP ---------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, raw: bytes | None = None
                ) -> tuple[int, Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        req = urllib.request.Request(self.http_base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                payload = resp.read()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            with exc:
                payload = exc.read()
                status = exc.code
                ctype = exc.headers.get("Content-Type", "")
        if ctype.startswith("application/json"):
            return status, json.loads(payload)
        return status, payload.decode("utf-8", "replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def post(self, path: str, body: Any = None) -> Any:
        status, payload = self.request("POST", path, body if body is not None else {})
        assert status == 200, (path, status, payload)
        return payload

    def jump(self) -> dict[str, Any]:
        result: dict[str, Any] = self.post("/api/jump-now")
        return result

    def sql(self, snapshot_id: int, sql: str, params: Any = None) -> tuple[int, Any]:
        return self.request("POST", "/api/sql",
                            {"snapshot_id": snapshot_id, "sql": sql, "params": params or []})

    def rows(self, snapshot_id: int, sql: str, params: Any = None) -> list[dict[str, Any]]:
        status, result = self.sql(snapshot_id, sql, params)
        assert status == 200, result
        return [dict(zip(result["columns"], row, strict=True)) for row in result["rows"]]

    def wait_connected(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            procs: list[dict[str, Any]] = self.get("/api/processes")["processes"]
            if len(procs) == count:
                return procs
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} connected processes, have {procs}")
            time.sleep(0.02)

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise AssertionError(f"server never logged {text!r}:\n{log}")
            time.sleep(0.02)

    # -- the database, read directly ---------------------------------------------------

    def db_rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def wait_db(self, sql: str, expected: list[tuple[Any, ...]], timeout: float = 10.0) -> None:
        """Poll a query on the database until it returns ``expected``."""
        deadline = time.monotonic() + timeout
        while (rows := self.db_rows(sql)) != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{sql} -> {rows}, expected {expected}")
            time.sleep(0.02)

    def db_digest(self) -> str:
        """sha256 of the database file and its WAL (the -shm index is scratch space)."""
        digest = hashlib.sha256()
        for suffix in ("", "-wal"):
            path = Path(f"{self.db}{suffix}")
            digest.update(path.read_bytes() if path.exists() else b"<absent>")
        return digest.hexdigest()


# -- a process, played by a test -------------------------------------------------------------


def hello(proc_key: str = "fake-1", **overrides: Any) -> dict[str, Any]:
    message = {"type": "hello", "protocol_version": PROTOCOL_VERSION, "process_name": "fake",
               "pid": 1, "proc_key": proc_key, "peeps_version": "test"}
    message.update(overrides)
    return message


def sample_graph(proc_key: str) -> dict[str, Any]:
    """A small process graph: a sender blocked on a full channel."""
    now = time.time_ns()
    loc = {"meta": {"ctx.location": "examples/x.py:12"}}
    return {
        "process_name": "fake", "proc_key": proc_key, "pid": 1, "captured_at_ns": now,
        "nodes": [
            {"id": f"task:{proc_key}:1", "kind": "task", "label": "bounded_sender",
             "attrs": {**loc, "state": "pending"}},
            {"id": f"channel:{proc_key}:2", "kind": "channel", "label": "demo.work_queue",
             "attrs": {"capacity": 16, "depth": 16, "blocked_senders": 1, "sent": 16,
                       "received": 0, "blocked_receivers": 0, "closed": False}},
        ],
        "edges": [
            {"src": f"task:{proc_key}:1", "dst": f"channel:{proc_key}:2", "kind": "needs",
             "attrs": {"op": "send", "since_ns": now - 3_200_000_000, "waited_ns": 3_200_000_000}},
        ],
        "events": [
            {"id": 1, "ts_ns": now - 3_200_000_000, "proc_key": proc_key,
             "entity_id": f"task:{proc_key}:1", "name": "channel.send.blocked",
             "parent_entity_id": None, "attrs": {"channel": "demo.work_queue"}},
        ],
    }


class FakeProcess:
    """A real TCP client of the ingest port; ``behaviour`` decides how to answer."""

    def __init__(self, server: WebServer, proc_key: str = "fake-1", *,
                 behaviour: str = "answer",
                 graph: Callable[[str], dict[str, Any]] = sample_graph,
                 send_hello: bool = True, hello_overrides: dict[str, Any] | None = None) -> None:
        self.proc_key = proc_key
        self.behaviour = behaviour
        self.graph = graph
        self.sock = socket.create_connection(server.ingest, timeout=10)
        self.requests: list[dict[str, Any]] = []
        self.closed = threading.Event()
        self._thread: threading.Thread | None = None
        if send_hello:
            self.send(hello(proc_key, **(hello_overrides or {})))

    def send(self, message: dict[str, Any]) -> None:
        self.sock.sendall(encode_frame(message))

    def recv_frame(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """One frame, or None if the server closed the connection."""
        self.sock.settimeout(timeout)
        header = _recv_exactly(self.sock, HEADER.size)
        if header is None:
            return None
        (length,) = HEADER.unpack(header)
        body = _recv_exactly(self.sock, length)
        if body is None:
            return None
        message: dict[str, Any] = json.loads(body)
        return message

    def serve(self) -> FakeProcess:
        """Answer snapshot requests on a thread according to ``behaviour``."""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        try:
            while True:
                request = self.recv_frame(timeout=60)
                if request is None:
                    break
                self.requests.append(request)
                if request.get("type") != "snapshot_request":
                    continue
                if self.behaviour == "answer":
                    self.send({"type": "graph_reply", "snapshot_id": request["snapshot_id"],
                               "process": "fake", "pid": 1, "graph": self.graph(self.proc_key)})
                elif self.behaviour == "disconnect":
                    break
                # "silent": read and never answer
        except OSError:
            pass
        finally:
            self.closed.set()
            if self.behaviour == "disconnect":
                self.close()

    def wait_closed_by_server(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """Read until the server closes; return its error frame, if it sent one."""
        error = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                frame = self.recv_frame(timeout=max(0.01, deadline - time.monotonic()))
            except (ConnectionResetError, BrokenPipeError):
                return error
            if frame is None:
                return error
            if frame.get("type") == "error":
                error = frame
        raise AssertionError("server did not close the connection")

    def close(self) -> None:
        # shutdown() first: close() alone does not end a recv() blocked on another thread.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


@contextmanager
def fake_processes(*procs: FakeProcess) -> Iterator[tuple[FakeProcess, ...]]:
    try:
        yield procs
    finally:
        for p in procs:
            p.close()
