"""Browser fixtures: Debian's Chromium driven by Playwright against the real
peeps-web (from ``tests/conftest.py``) and real example processes.

Playwright never downloads a browser here: it launches /usr/bin/chromium.
Every page records console errors and uncaught exceptions; a test fails if
the UI threw.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The suite imports in importlib mode with only tests/ on sys.path; the browser
# tests' helpers live beside them.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser_support import CHROMIUM_ARGS, Page, SyntheticProcess, chromium_path


# Module scope, not session: Playwright's sync API keeps an asyncio loop marked
# running in the main thread while it lives, and every later test that calls
# asyncio.run() would fail with "cannot be called from a running event loop".
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = chromium_path()
    if exe is None:
        pytest.skip("Debian chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def ui_page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    wrapped = Page(page)
    try:
        yield wrapped
    finally:
        context.close()
    assert not wrapped.errors, "the UI reported errors:\n" + "\n".join(wrapped.errors)


@pytest.fixture
def synthetic(peeps_server: Any) -> Iterator[type[SyntheticProcess]]:
    started: list[SyntheticProcess] = []

    class _Started(SyntheticProcess):
        def __init__(self, nodes: int, name: str = "synthetic", threads: int = 3,
                     shape: str = "groups") -> None:
            super().__init__(peeps_server.dashboard, nodes, name, threads, shape=shape)
            started.append(self)

    try:
        yield _Started
    finally:
        for proc in started:
            proc.stop()
