"""Shared fixtures: a real peeps-web on free ports, real example processes, and
a check that every test leaves the library's global state clean."""

from __future__ import annotations

import asyncio
import gc
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import peeps
from peeps import _collector
from peeps._config import STATE
from support import ExampleProcess, PeepsServer

# A shell without job control starts background commands (``scripts/test &``)
# with SIGINT ignored, and an ignored signal stays ignored across exec: every
# example process the tests start would then ignore the Ctrl+C they send it
# and never stop.  Handling SIGINT here (as an interactive run does) gives the
# children the default disposition back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def peeps_server(tmp_path: Path) -> Iterator[PeepsServer]:
    server = PeepsServer(tmp_path / "peeps.sqlite").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def run_example(peeps_server: PeepsServer) -> Iterator[type[ExampleProcess]]:
    started: list[ExampleProcess] = []

    class _Started(ExampleProcess):
        def __init__(self, target: str, **kw: object) -> None:
            kw.setdefault("dashboard", peeps_server.dashboard)
            super().__init__(target, **kw)  # type: ignore[arg-type]
            started.append(self)

    try:
        yield _Started
    finally:
        for proc in started:
            proc.stop()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture(autouse=True)
def _library_state_is_clean(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test starts and ends with peeps enabled, no collector and no
    peeps thread left running."""
    assert STATE.enabled, "a previous test left peeps disabled"
    if "browser" not in request.fixturenames:  # Playwright's sync API runs a loop
        assert not _loop_running(), "an event loop is left running in the main thread"
    yield
    leftover = _collector.current_collector()
    peeps.shutdown()
    STATE.enabled = True
    gc.collect()
    assert leftover is None, "test left the collector running (call peeps.shutdown())"
    stray = [t.name for t in threading.enumerate()
             if t.name.startswith("peeps-") and t.is_alive()]
    assert not stray, f"test left peeps threads running: {stray}"
