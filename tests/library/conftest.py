"""Fixtures shared by the library tests."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

import peeps
from peeps import _thread_locks, _threads


@pytest.fixture(params=["clocked", "clocked-c", "ticking", "ticking-c"])
def lock_fast_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """``ThreadLock``'s four fast paths: the clocked one (no sampler) and the
    one a ticking sampler switches to, each in Python and in C
    (``peeps._speedups``, which must not be skipped where it can be built);
    ``ThreadRLock``'s one, in Python or in C with them."""
    mode = str(request.param)
    in_c = mode.endswith("-c")
    if in_c and _thread_locks._speedups is None:
        if os.environ.get("PEEPS_TEST_REQUIRE_SPEEDUPS"):
            pytest.fail("peeps._speedups was not built, and PEEPS_TEST_REQUIRE_SPEEDUPS is set")
        pytest.skip("peeps._speedups was not built (no C compiler at install)")
    wanted = _thread_locks.use_speedups
    _thread_locks.use_speedups = in_c
    try:
        _thread_locks._time_holds_by_ticks(bool(_threads.COARSE_NOW[0]))
        rlock_methods = _thread_locks._C_RLOCK if in_c else _thread_locks._PY_RLOCK
        for name, method in rlock_methods.items():
            assert getattr(peeps.ThreadRLock, name) is method, (name, mode)
        if mode.startswith("clocked"):
            _thread_locks._time_holds_by_ticks(False)
            acquire = peeps.ThreadLock.acquire
            if in_c:
                assert type(acquire).__name__ == "method_descriptor", acquire
                assert acquire is _thread_locks._C_CLOCKED["acquire"]
            else:
                assert acquire is _thread_locks._clocked_acquire, acquire
            yield mode
            return
        sampler = peeps.start_sampler(mode="thread", hz=100)
        assert sampler is not None
        try:
            deadline = time.monotonic() + 10
            while not _threads.COARSE_NOW[0] and time.monotonic() < deadline:
                time.sleep(0.005)
            acquire = peeps.ThreadLock.acquire
            if in_c:
                assert type(acquire).__name__ == "method_descriptor", acquire
                assert acquire is _thread_locks._C_TICK_TIMED["acquire"]
            else:
                assert acquire is _thread_locks._PY_TICK_TIMED["acquire"], acquire
            yield mode
        finally:
            peeps.stop_sampler()
    finally:
        _thread_locks.use_speedups = wanted
        _thread_locks._time_holds_by_ticks(bool(_threads.COARSE_NOW[0]))
