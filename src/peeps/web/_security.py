"""HTTP exposure controls: bearer token, Host check (DNS rebinding), Origin check.

* With ``PEEPS_TOKEN`` set, every route but ``/health`` needs the token, as
  ``Authorization: Bearer <token>``, ``?token=<token>`` or the ``peeps_token``
  cookie (set when the UI is opened with ``?token=``).
* The ``Host`` header must name this server (loopback names, the bound address,
  or ``PEEPS_ALLOWED_HOSTS``), so a rebinding DNS name cannot reach the API from a
  browser.  A server bound to a wildcard address with no allowed hosts listed
  accepts any Host (the token protects it).
* A POST carrying an ``Origin`` must come from this same host.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from ._config import ServerConfig

TOKEN_COOKIE: Final = "peeps_token"
LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})
OPEN_PATHS: Final = frozenset({"/health"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _split_host(value: str) -> str:
    """``host[:port]`` or ``[v6][:port]`` -> lower-case host."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:].partition("]")[0]
    if value.count(":") == 1:
        return value.partition(":")[0]
    return value


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"status": status, "message": message}}, status=status)


def security_middleware(config: ServerConfig) -> Any:
    bind_host = config.http_addr[0].lower()
    allowed = set(LOOPBACK_NAMES) | {bind_host} | {_split_host(h) for h in config.allowed_hosts}
    any_host = bind_host in WILDCARD_HOSTS and not config.allowed_hosts
    token = config.token

    def token_ok(request: web.Request) -> bool:
        assert token is not None
        candidates = []
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            candidates.append(auth[7:].strip())
        candidates.append(request.query.get("token", ""))
        candidates.append(request.cookies.get(TOKEN_COOKIE, ""))
        expected = token.encode("utf-8")
        return any(c and hmac.compare_digest(c.encode("utf-8", "replace"), expected)
                   for c in candidates)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = _split_host(request.headers.get("Host", ""))
        if not any_host and host not in allowed:
            return _error(403, f"Host {host[:100]!r} is not allowed (set PEEPS_ALLOWED_HOSTS "
                               "to serve under another name)")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin is not None:
                origin_host = urlsplit(origin).netloc.lower()
                if origin_host != request.headers.get("Host", "").strip().lower():
                    return _error(403, f"cross-origin request from {origin[:100]!r} refused")
        if token is not None and request.path not in OPEN_PATHS:
            if not token_ok(request):
                return _error(401, "missing or wrong token: send 'Authorization: Bearer <token>' "
                                   "or open the UI with ?token=<token>")
            response = await handler(request)
            if request.query.get("token") and request.path == "/":
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
            return response
        return await handler(request)

    return middleware
