"""Fixtures for the server tests: real ``peeps-web`` processes on free ports."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The suite imports in importlib mode with only tests/ on sys.path; the server
# tests' helpers live beside them.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_support import FakeProcess, WebServer

StartServer = Callable[..., WebServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start ``peeps-web`` with extra flags; every server is stopped afterwards."""
    servers: list[WebServer] = []

    def start(*args: str, env: dict[str, str] | None = None, db: Path | None = None,
              workdir: Path | None = None) -> WebServer:
        server = WebServer(workdir or tmp_path, args=list(args), env=env, db=db)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: StartServer) -> WebServer:
    """A fresh server for tests that need an empty database or stop it."""
    return start_server("--snapshot-timeout-ms", "1000")


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    """One server per test module (starting one costs about a second)."""
    with WebServer(tmp_path_factory.mktemp("shared"),
                   args=["--snapshot-timeout-ms", "700"]).serving() as server:
        yield server


@pytest.fixture
def shared(module_server: WebServer) -> WebServer:
    """The module's server, with no process connected and no snapshot in flight."""
    module_server.wait_connected(0)
    return module_server


@pytest.fixture
def fake(shared: WebServer) -> Iterator[Callable[..., FakeProcess]]:
    """Make fake processes connected to ``shared``; all are closed afterwards."""
    made: list[FakeProcess] = []

    def make(proc_key: str = "fake-1", **kw: Any) -> FakeProcess:
        proc = FakeProcess(shared, proc_key, **kw)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.close()
