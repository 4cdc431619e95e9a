"""Fixtures shared by the library tests."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

import peeps
from peeps import _thread_locks, _threads


@pytest.fixture(params=["clocked", "ticking", "ticking-c"])
def lock_fast_path(request: pytest.FixtureRequest,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``ThreadLock``'s three fast paths: the clocked one (no sampler), the
    Python one a ticking sampler switches to, and its C version
    (``peeps._speedups``), which must not be skipped where it can be built."""
    mode = str(request.param)
    if mode == "ticking-c" and _thread_locks._speedups is None:
        if os.environ.get("PEEPS_TEST_REQUIRE_SPEEDUPS"):
            pytest.fail("peeps._speedups was not built, and PEEPS_TEST_REQUIRE_SPEEDUPS is set")
        pytest.skip("peeps._speedups was not built (no C compiler at install)")
    monkeypatch.setattr(_thread_locks, "use_speedups", mode == "ticking-c")
    if mode == "clocked":
        assert peeps.ThreadLock.acquire is _thread_locks._clocked_acquire
        yield mode
        return
    sampler = peeps.start_sampler(mode="thread", hz=100)
    assert sampler is not None
    try:
        deadline = time.monotonic() + 10
        while not _threads.COARSE_NOW[0] and time.monotonic() < deadline:
            time.sleep(0.005)
        acquire = peeps.ThreadLock.acquire
        if mode == "ticking-c":
            assert type(acquire).__name__ == "method_descriptor", acquire
        else:
            assert acquire is _thread_locks._PY_TICK_TIMED["acquire"], acquire
        yield mode
    finally:
        peeps.stop_sampler()
