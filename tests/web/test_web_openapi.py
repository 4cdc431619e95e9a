"""The OpenAPI description matches the live server (schemathesis drives every route)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from web_support import FakeProcess, WebServer

import peeps.web

OPENAPI = Path(peeps.web.__file__).resolve().parent / "openapi.json"
schema = schemathesis.openapi.from_path(str(OPENAPI))


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """A server holding one snapshot, so some generated ids hit real data."""
    server = WebServer(tmp_path_factory.mktemp("openapi"),
                       args=["--snapshot-timeout-ms", "1000", "--sql-timeout-ms", "300"])
    server.start()
    proc = FakeProcess(server, "api-1").serve()
    try:
        server.wait_connected(1)
        server.jump()
        yield server
    finally:
        proc.close()
        server.stop()
    assert "Traceback" not in server.log(), server.log()


def test_served_description_is_the_file(api_server: WebServer) -> None:
    assert api_server.get("/api/openapi.json") == json.loads(OPENAPI.read_text())


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms(api_server: WebServer, case: schemathesis.Case) -> None:
    excluded = []
    if case.path == "/api/sql":
        # Any string is schema-valid SQL text; most are not valid SQL, and 400 is right.
        excluded.append(positive_data_acceptance)
    case.call_and_validate(base_url=api_server.http_base, excluded_checks=excluded)
