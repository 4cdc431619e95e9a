"""The HTTP surface: JSON errors everywhere, the UI page, validation of paths and queries."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from web_support import WebServer

from peeps.web import _http


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    server = WebServer(tmp_path_factory.mktemp("http")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    ("GET", "/nope", 404, "no such route: GET /nope"),
    ("GET", "/api/snapshots/abc", 400, "snapshot id must be an integer"),
    ("GET", "/api/snapshots/0", 404, "snapshot 0 does not exist"),
    ("GET", "/api/snapshots/99999999999999999999999", 404, "does not exist"),
    ("GET", "/api/snapshots/42", 404, "snapshot 42 does not exist"),
    ("GET", "/api/snapshots/42/graph", 404, "snapshot 42 does not exist"),
    ("GET", "/api/snapshots/42/events", 404, "snapshot 42 does not exist"),
    ("GET", "/api/snapshots/42/suspects", 404, "snapshot 42 does not exist"),
    ("GET", "/api/snapshots?limit=x", 400, "limit must be an integer"),
    ("GET", "/api/jump-now", 405, "method GET not allowed on /api/jump-now"),
    ("DELETE", "/api/sql", 405, "not allowed"),
    ("GET", "/assets/../../_http.py", 404, "no such"),
    ("GET", "/assets/%2e%2e/%2e%2e/_http.py", 404, "no such"),
])
def test_errors_are_json(http_server: WebServer, method: str, path: str, status: int,
                         message: str) -> None:
    got, body = http_server.request(method, path)
    assert got == status, body
    assert body == {"error": {"status": status, "message": body["error"]["message"]}}
    assert message in body["error"]["message"]


def test_oversized_sql_body_is_refused(http_server: WebServer) -> None:
    got, body = http_server.request("POST", "/api/sql", raw=b"{" + b" " * 400_000 + b"}")
    assert got == 413 and body["error"]["status"] == 413


def test_index_serves_the_ui_or_says_how_to_build_it(http_server: WebServer) -> None:
    with urllib.request.urlopen(http_server.http_base + "/", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        page = resp.read().decode()
    if (_http.STATIC_DIR / "index.html").is_file():
        assert page == (_http.STATIC_DIR / "index.html").read_text()
    else:
        assert "scripts/build-ui" in page


def test_processes_and_health(server: WebServer) -> None:
    assert server.get("/api/processes") == {"processes": []}
    health = server.get("/health")
    assert set(health) == {"status", "version", "connected_processes"}
    assert server.get("/api/snapshot-progress") == {"in_flight": None, "last_snapshot_id": None}
    assert server.get("/api/snapshots") == {"snapshots": []}


def test_missing_ui_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    monkeypatch.setattr(_http, "STATIC_DIR", tmp_path)

    async def fetch() -> web.StreamResponse:
        return await _http.index(make_mocked_request("GET", "/"))

    response = asyncio.run(fetch())
    assert isinstance(response, web.Response) and response.status == 200
    assert response.content_type == "text/html"
    assert response.text is not None and "scripts/build-ui" in response.text
