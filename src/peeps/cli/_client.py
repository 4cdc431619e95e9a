"""A small client for ``peeps-web``'s public HTTP API (standard library only).

Every failure becomes a :class:`CliError` carrying the one-line message the
user sees and the exit code, so commands never print a traceback for a server
that is absent, slow or refusing a request.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from typing import Any, Final

ENV_HTTP: Final = "PEEPS_HTTP"
DEFAULT_HTTP: Final = "127.0.0.1:9120"

#: Exit codes: 1 = the command ran and reports a problem; 2 = it could not get
#: an answer (no server, no snapshot, bad request).
EXIT_PROBLEM: Final = 1
EXIT_UNAVAILABLE: Final = 2


class CliError(Exception):
    """A failure to report as ``peeps: <message>`` with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def base_url(address: str | None) -> str:
    """``127.0.0.1:9120`` / ``http://host:9120/`` -> ``http://host:9120``."""
    value = (address or os.environ.get(ENV_HTTP) or DEFAULT_HTTP).strip()
    if not value.startswith(("http://", "https://")):
        value = "http://" + value
    return value.rstrip("/")


def _reason(exc: BaseException) -> str:
    inner: object = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(inner, ConnectionRefusedError):
        return "connection refused"
    if isinstance(inner, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(inner, socket.gaierror):
        return f"cannot resolve host ({inner.strerror or inner})"
    if isinstance(inner, OSError) and inner.strerror:
        return inner.strerror.lower()
    return str(inner) or type(inner).__name__


class PeepsClient:
    """Talks to one ``peeps-web``.  Methods return the decoded JSON answers."""

    def __init__(self, address: str | None = None, *, timeout_s: float = 30.0) -> None:
        self.base = base_url(address)
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            raise CliError(self._http_error_message(exc)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise CliError(
                f"no peeps-web at {self.base} ({_reason(exc)}). Start it with `peeps-web`, "
                f"or point at it with --http HOST:PORT or {ENV_HTTP}=HOST:PORT") from None
        try:
            return json.loads(payload or b"null")
        except ValueError:
            raise CliError(f"{self.base}{path} did not answer JSON; is it peeps-web?") from None

    def _http_error_message(self, exc: urllib.error.HTTPError) -> str:
        message = exc.reason
        try:
            payload = json.loads(exc.read() or b"null")
            if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
                message = str(payload["error"].get("message") or message)
        except (ValueError, OSError):
            pass
        return f"peeps-web answered {exc.code}: {message}"

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    # -- the API -----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/health")
        return result

    def processes(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get("/api/processes")["processes"]
        return result

    def jump(self) -> dict[str, Any]:
        result: dict[str, Any] = self.post("/api/jump-now")
        return result

    def snapshots(self, limit: int = 1) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get(f"/api/snapshots?limit={limit}")["snapshots"]
        return result

    def resolve_snapshot(self, snapshot_id: int | None) -> int:
        """``snapshot_id`` itself, or the newest snapshot's id."""
        if snapshot_id is not None:
            return snapshot_id
        newest = self.snapshots(limit=1)
        if not newest:
            raise CliError(f"no snapshots yet on {self.base}. Take one with `peeps jump` "
                           "(or pass --jump), or wait for the periodic snapshot")
        return int(newest[0]["snapshot_id"])

    def snapshot(self, snapshot_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/api/snapshots/{snapshot_id}")
        return result

    def graph(self, snapshot_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.get(f"/api/snapshots/{snapshot_id}/graph")
        return result

    def suspects(self, snapshot_id: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.get(
            f"/api/snapshots/{snapshot_id}/suspects")["suspects"]
        return result

    def sql(self, snapshot_id: int, sql: str, params: list[Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.post(
            "/api/sql", {"snapshot_id": snapshot_id, "sql": sql, "params": params or []})
        return result
