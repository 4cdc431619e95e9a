"""``pytest --peeps``: run pytest in a child process on generated test files, as a
user would (the plugin comes from the ``pytest11`` entry point)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from entrypoints.entry_support import run_pytest

ASYNC_DEADLOCK = '''
import asyncio
import peeps
import pytest


async def transfer(first, second, both_hold_one):
    async with first:
        await both_hold_one.wait()
        async with second:
            pass


@pytest.mark.asyncio
async def test_transfers_deadlock():
    accounts = peeps.Lock(name="accounts_lock")
    ledger = peeps.Lock(name="ledger_lock")
    both = asyncio.Barrier(2)
    await asyncio.gather(
        peeps.tasks.spawn_tracked("debit", transfer(accounts, ledger, both)),
        peeps.tasks.spawn_tracked("credit", transfer(ledger, accounts, both)),
    )


def test_fine():
    pass
'''

CHANNEL_STALL = '''
import asyncio
import peeps
import pytest


@pytest.mark.asyncio
async def test_queue_never_drains():
    queue = peeps.channel("results", 2)
    for item in range(3):
        await queue.send(item)


@pytest.mark.asyncio
async def test_quick():
    await asyncio.sleep(0)
'''

THREAD_DEADLOCK = '''
import threading

import peeps


def test_threads_deadlock():
    accounts = peeps.ThreadLock("accounts_lock")
    ledger = peeps.ThreadLock("ledger_lock")
    both = threading.Barrier(2)

    def transfer(first, second):
        with first:
            both.wait()
            with second:
                pass

    debit = threading.Thread(target=transfer, args=(accounts, ledger), name="debit")
    credit = threading.Thread(target=transfer, args=(ledger, accounts), name="credit")
    debit.start()
    credit.start()
    debit.join()
'''

INERT_CHECK = '''
import _thread
import asyncio
import signal
import threading


def test_nothing_installed():
    assert not [t.name for t in threading.enumerate() if t.name.startswith("peeps")]
    assert asyncio.Lock.__module__ == "asyncio.locks"
    assert asyncio.Queue.__module__ == "asyncio.queues"
    assert threading.Lock in (_thread.allocate_lock, getattr(_thread, "lock", None))
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    from peeps import _collector
    assert _collector.current_collector() is None


def test_new_loops_have_no_factory():
    loop = asyncio.new_event_loop()
    try:
        assert loop.get_task_factory() is None
    finally:
        loop.close()
'''


def _hung_section(output: str) -> str:
    start = output.index("peeps: test hung")
    return output[start:output.index("FAILURES", start)]


def test_async_deadlock_fails_naming_the_cycle(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, ASYNC_DEADLOCK, "--peeps", "--peeps-timeout=0.5")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed, 1 passed" in out
    # Printed while the test was still hanging, before pytest's failure report.
    early = _hung_section(out)
    for text in ("deadlock: ", "debit", "credit", "lock accounts_lock", "lock ledger_lock",
                 "test_generated.py:"):
        assert text in early, early
    # And attached to the failure, with the summary line naming the deadlock.
    assert "peeps: hang diagnosis" in out[out.index("FAILURES"):]
    assert re.search(r"FAILED test_generated.py::test_transfers_deadlock - peeps: hung past its "
                     r"0.5s timeout: deadlock: (debit and credit|credit and debit)", out), out


def test_channel_stall_names_channel_and_sender_with_location(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, CHANNEL_STALL, "--peeps", "--peeps-timeout=0.5")
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed, 1 passed" in out
    section = out[out.index("peeps: hang diagnosis"):]
    assert "channel results is full (2/2) with 1 blocked sender" in section
    assert re.search(r"channel results 2/2 at \S+test_generated.py:9", section), section
    # (The task's label is checked loosely: on 3.13 automatic tracking names it None.)
    assert re.search(r"task \S+ \(\S+\) --needs\[send, [^]]+\]--> "
                     r"channel results 2/2", section), section


def test_thread_deadlock_is_interrupted_and_named(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, THREAD_DEADLOCK, "--peeps", "--peeps-timeout=0.5", timeout=60)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "1 failed" in out
    assert re.search(r"FAILED test_generated.py::test_threads_deadlock - \S*PeepsHangError: hung "
                     r"past its 0.5s timeout: deadlock: (debit and credit|credit and debit)",
                     out), out  # the whole run, so that a failure shows what was diagnosed
    early = _hung_section(out)
    for text in ("thread debit", "thread credit", "accounts_lock", "ledger_lock",
                 "--needs[acquire", "--held by"):
        assert text in early, early
    assert "MainThread" in early and "test_generated.py:22 in test_threads_deadlock" in early
    assert re.search(r"debit: .*at \S+test_generated.py:15 in transfer", early), early
    assert re.search(r"credit: .*at \S+test_generated.py:15 in transfer", early), early
    # The deadlocked non-daemon threads do not keep pytest from exiting.
    # (An interrupted join() marks its thread stopped, so only credit may be listed.)
    assert re.search(r"thread\(s\) of hung tests never finished \((debit, )?credit\)",
                     result.stderr), result.stderr


def _in_parallel(tmp_path: Path, *runs: tuple[str, list[str]]) -> list[str]:
    """Several pytest runs at once (each in its own directory); their stdout."""
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = []
        for i, (source, args) in enumerate(runs):
            directory = tmp_path / f"run{i}"
            directory.mkdir()
            futures.append(pool.submit(run_pytest, directory, source, *args))
        return [f.result().stdout for f in futures]


def test_where_the_timeout_comes_from(tmp_path: Path) -> None:
    marked = CHANNEL_STALL.replace("@pytest.mark.asyncio\nasync def test_queue_never_drains",
                                   "@pytest.mark.asyncio\n@pytest.mark.peeps_timeout(0.5)\n"
                                   "async def test_queue_never_drains")
    alongside, default_from_timeout, marker, ini = _in_parallel(
        tmp_path,
        # pytest-timeout's own limit is longer: peeps fires first and diagnoses.
        (CHANNEL_STALL, ["--peeps", "--peeps-timeout=0.5", "--timeout=30"]),
        # Without a peeps timeout, peeps fires 20% (at least 1 s) before pytest-timeout:
        # here 3 s before, so the diagnosis has time to finish on a loaded machine.
        (CHANNEL_STALL, ["--peeps", "--timeout=15"]),
        (marked, ["--peeps", "--peeps-timeout=30"]),
        (CHANNEL_STALL, ["--peeps", "-o", "peeps_timeout=0.7"]),
    )
    assert "past its 0.5s peeps timeout" in alongside and "Timeout +" not in alongside
    assert "channel results is full" in alongside
    assert "past its 12s peeps timeout" in default_from_timeout
    assert "channel results is full" in default_from_timeout
    assert "past its 0.5s peeps timeout" in marker
    assert "past its 0.7s peeps timeout" in ini
    for out in (alongside, default_from_timeout, marker, ini):
        assert "1 failed, 1 passed" in out, out


def test_without_the_flag_the_plugin_does_nothing(tmp_path: Path) -> None:
    result, help_text = _in_parallel(tmp_path, (INERT_CHECK, ["-p", "no:asyncio"]),
                                     (INERT_CHECK, ["--help"]))
    assert "2 passed" in result, result
    assert "--peeps-timeout=SECONDS" in help_text
