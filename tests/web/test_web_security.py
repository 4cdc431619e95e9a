"""Exposure controls: token on both ports, Host (DNS rebinding) and Origin checks."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from web_support import FakeProcess, WebServer

TOKEN = "correct-horse-battery-staple"


def raw_request(server: WebServer, method: str, path: str, headers: dict[str, str],
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """An HTTP request with full control of the headers (Host included)."""
    url = urlsplit(server.http_base)
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host="Host" in headers)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    server = WebServer(tmp_path_factory.mktemp("token"), env={"PEEPS_TOKEN": TOKEN},
                       args=["--snapshot-timeout-ms", "1000", "--allowed-hosts",
                             "peeps.internal"])
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_hello_without_the_token_is_refused(token_server: WebServer) -> None:
    for overrides in ({}, {"token": "wrong"}, {"token": TOKEN[:-1]}):
        proc = FakeProcess(token_server, "no-token", hello_overrides=overrides)
        try:
            error = proc.wait_closed_by_server()
            assert error is not None and "missing or wrong token" in error["message"]
        finally:
            proc.close()
    good = FakeProcess(token_server, "with-token", hello_overrides={"token": TOKEN}).serve()
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        deadline = time.monotonic() + 10
        while True:
            status, _h, body = raw_request(token_server, "GET", "/api/processes", auth)
            if b"with-token" in body:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, _h, body = raw_request(token_server, "POST", "/api/jump-now", auth, b"{}")
        assert status == 200 and b'"responded": 1' in body
    finally:
        good.close()


@pytest.mark.parametrize(("headers", "path", "status"), [
    ({}, "/api/snapshots", 401),
    ({"Authorization": "Bearer nope"}, "/api/snapshots", 401),
    ({"Authorization": f"Basic {TOKEN}"}, "/api/snapshots", 401),
    ({"Authorization": f"Bearer {TOKEN}"}, "/api/snapshots", 200),
    ({}, f"/api/snapshots?token={TOKEN}", 200),
    ({"Cookie": f"peeps_token={TOKEN}"}, "/api/snapshots", 200),
    ({"Cookie": "peeps_token=nope"}, "/api/snapshots", 401),
    ({}, "/", 401),
    ({}, "/health", 200),
])
def test_http_needs_the_token(token_server: WebServer, headers: dict[str, str], path: str,
                              status: int) -> None:
    got, _h, body = raw_request(token_server, "GET", path, headers)
    assert got == status, body
    if status == 401:
        assert b"missing or wrong token" in body


def test_opening_the_ui_with_the_token_sets_a_cookie(token_server: WebServer) -> None:
    status, headers, _ = raw_request(token_server, "GET", f"/?token={TOKEN}", {})
    assert status == 200
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"peeps_token={TOKEN}") and "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


@pytest.mark.parametrize(("host", "status"), [
    ("evil.example", 403),
    ("evil.example:9120", 403),
    ("127.0.0.1.nip.io", 403),
    ("localhost:1234", 200),
    ("127.0.0.1", 200),
    ("[::1]:80", 200),
    ("peeps.internal:8080", 200),
    ("PEEPS.INTERNAL", 200),
])
def test_host_header_is_checked(token_server: WebServer, host: str, status: int) -> None:
    got, _h, body = raw_request(token_server, "GET", "/api/snapshots",
                                {"Host": host, "Authorization": f"Bearer {TOKEN}"})
    assert got == status, body
    if status == 403:
        assert b"is not allowed" in body


@pytest.mark.parametrize(("origin", "status"), [
    ("http://evil.example", 403),
    ("null", 403),
    ("http://localhost:1", 403),
    (None, 200),
    ("SAME", 200),
])
def test_cross_origin_posts_are_refused(token_server: WebServer, origin: str | None,
                                        status: int) -> None:
    netloc = urlsplit(token_server.http_base).netloc
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    if origin is not None:
        headers["Origin"] = f"http://{netloc}" if origin == "SAME" else origin
    got, _h, body = raw_request(token_server, "POST", "/api/jump-now", headers, b"{}")
    assert got == status, body
    if status == 403:
        assert b"cross-origin request" in body


def test_host_check_applies_without_a_token(start_server: Callable[..., WebServer]) -> None:
    server = start_server()
    got, _h, _body = raw_request(server, "GET", "/api/snapshots", {"Host": "rebound.example"})
    assert got == 403
    got, _h, _b = raw_request(server, "POST", "/api/jump-now",
                              {"Origin": "http://rebound.example"}, b"{}")
    assert got == 403


def test_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    server = WebServer(tmp_path, env={"PEEPS_HTTP": "0.0.0.0:0"})
    with pytest.raises(RuntimeError, match="did not start"):
        server.start(timeout=5)
    assert server.stop() == 2
    assert "refusing to listen on non-loopback address(es) 0.0.0.0:0 without a token" in server.log()


def test_insecure_opt_out_is_loud(start_server: Callable[..., WebServer]) -> None:
    server = start_server("--insecure-no-token", env={"PEEPS_LISTEN": "0.0.0.0:0"})
    assert "INSECURE" in server.log()
    assert server.ingest[0] == "0.0.0.0"
