"""pytest plugin: ``pytest --peeps`` explains a hanging test before it is killed.

Registered through the ``pytest11`` entry point, so installing peeps makes the
options available; nothing else happens without ``--peeps`` (no thread, no
patching, no signal handler — peeps is not even initialised).

With ``--peeps`` each test gets a deadline (``--peeps-timeout``, ini
``peeps_timeout``, marker ``@pytest.mark.peeps_timeout(s)``).  When a test
passes it, a watcher thread takes this process's graph (``collect_graph`` works
from any thread), runs the shared suspect analysis, prints the diagnosis to the
terminal at once, then stops the test: asyncio tasks on the loop the test runs
are cancelled with ``call_soon_threadsafe``; a test blocked elsewhere (a thread
lock, ``join``) is interrupted by a signal whose handler raises
:class:`PeepsHangError`; if neither works, the stacks are dumped and the process
exits.  The diagnosis is attached to the failure as a report section.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import signal
import sys
import threading
import time
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, Final

import pytest

if TYPE_CHECKING:
    from _pytest.reports import TestReport

SECTION: Final = "peeps: hang diagnosis"
DEFAULT_TIMEOUT_S: Final = 60.0
#: How long a stop attempt may take before the next, harsher one.
GRACE_S: Final = 2.0
#: Signal used to interrupt a main thread blocked in a lock or join.  Its handler
#: is installed only under ``--peeps`` and chains to any previous handler.
INTERRUPT_SIGNAL: Final = getattr(signal, "SIGUSR2", None)
WATCH_THREAD_NAME: Final = "peeps-hang-watch"


class PeepsHangError(Exception):
    """Raised into a test that ran past its peeps timeout; the message is the diagnosis."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("peeps", "peeps: explain hanging tests")
    group.addoption("--peeps", action="store_true", default=False,
                    help="diagnose tests that hang: print what they wait on (suspects, "
                         "wait chains with path:line, thread verdicts), then fail them")
    group.addoption("--peeps-timeout", type=float, default=None, metavar="SECONDS",
                    help="a test running longer than this is diagnosed and failed "
                         "(default: ini peeps_timeout, else a little before pytest-timeout's "
                         f"timeout, else {DEFAULT_TIMEOUT_S:g}s; 0 = off)")
    group.addoption("--peeps-no-patch", action="store_true", default=False,
                    help="do not swap asyncio primitives (Lock, Queue, ...) for peeps' "
                         "instrumented ones (only explicit peeps primitives are then visible)")
    parser.addini("peeps_timeout", "seconds before a test is diagnosed and failed "
                                   "under --peeps", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "peeps_timeout(seconds): this test's hang deadline under --peeps")
    if config.getoption("peeps"):
        config.pluginmanager.register(HangWatch(config), "peeps-hang-watch")


# -- the watcher ---------------------------------------------------------------------------


@dataclass
class _Running:
    """The test being watched."""

    item: pytest.Item
    timeout_s: float
    started_mono: float
    done: threading.Event = field(default_factory=threading.Event)
    diagnosis: str | None = None
    headline: str = "test hung"
    attached: bool = False
    #: Set by the watcher just before it signals the main thread.
    interrupt_pending: bool = False


class HangWatch:
    """The ``--peeps`` half of the plugin: one instance per session."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.current: _Running | None = None
        self.fired: list[_Running] = []
        self.exitstatus: int = 0
        self._previous_handler: Any = None
        self._handler_installed = False
        self._patched = False

    # -- session set-up and tear-down ------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        from peeps._run import RunOptions, start_peeps

        options = RunOptions(dashboard=None, name=None, auto=True,
                             patch=not self.config.getoption("peeps_no_patch"), threads=True,
                             watchdog=True, stall_threshold_ms=None, sampler_hz=None, quiet=True)
        self._patched = start_peeps(options, os.environ.get("PEEPS_PROCESS_NAME") or "pytest")
        if INTERRUPT_SIGNAL is not None and threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(INTERRUPT_SIGNAL, self._on_interrupt)
            self._handler_installed = True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.exitstatus = int(exitstatus)

    @pytest.hookimpl(trylast=True)
    def pytest_unconfigure(self, config: pytest.Config) -> None:
        from peeps._run import stop_peeps

        if INTERRUPT_SIGNAL is not None and self._handler_installed:
            signal.signal(INTERRUPT_SIGNAL, self._previous_handler or signal.SIG_DFL)
            self._handler_installed = False
        stop_peeps(patched=self._patched, auto=True)
        stuck = [t for t in threading.enumerate()
                 if t is not threading.main_thread() and t.is_alive() and not t.daemon]
        if self.fired and stuck:
            self._exit_past(stuck)

    def _exit_past(self, stuck: list[threading.Thread]) -> None:
        """Deadlocked non-daemon threads would keep the interpreter from exiting."""
        names = ", ".join(t.name for t in stuck)
        try:
            sys.stdout.flush()
            print(f"peeps: {len(stuck)} thread(s) of hung tests never finished ({names}); "
                  f"exiting without waiting for them", file=sys.stderr, flush=True)
        except Exception:
            pass
        os._exit(self.exitstatus or 1)

    def _at_thread_shutdown(self) -> None:
        # Runs at interpreter exit before non-daemon threads are joined, even when
        # pytest stopped without reaching pytest_unconfigure (say, a broken pipe).
        stuck = [t for t in threading.enumerate()
                 if t is not threading.main_thread() and t.is_alive() and not t.daemon]
        if stuck:
            self._exit_past(stuck)

    def _on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        running = self.current
        if running is not None and running.interrupt_pending:
            running.interrupt_pending = False
            raise PeepsHangError(f"{running.headline}\n(peeps' diagnosis is in the "
                                 f"'{SECTION}' section below)")
        previous = self._previous_handler
        if callable(previous):
            previous(signum, frame)

    # -- per test ----------------------------------------------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item,
                                nextitem: pytest.Item | None) -> Generator[None, None, None]:
        timeout_s = self.timeout_for(item)
        if timeout_s <= 0:
            yield
            return
        running = _Running(item, timeout_s, time.monotonic())
        self.current = running
        watcher = threading.Thread(target=self._watch, args=(running,),
                                   name=WATCH_THREAD_NAME, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            running.done.set()
            self.current = None
            watcher.join(timeout=GRACE_S * 3)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        running = self.current
        if running is None or running.item is not item or running.diagnosis is None:
            return
        if running.attached:
            return
        running.attached = True
        report: TestReport = outcome.get_result()
        report.sections.append((SECTION, running.diagnosis))
        if not report.failed:
            # It hung past the deadline, whatever happened after the interruption.
            report.outcome = "failed"
            report.longrepr = running.diagnosis
            return
        crash = getattr(report.longrepr, "reprcrash", None)
        if crash is not None and not _raised_hang_error(call):
            # The short summary shows the first line: make it the finding, not
            # "CancelledError".
            crash.message = f"peeps: {running.headline}"

    def timeout_for(self, item: pytest.Item) -> float:
        marker = item.get_closest_marker("peeps_timeout")
        if marker is not None and marker.args:
            return float(marker.args[0])
        option = self.config.getoption("peeps_timeout")
        if option is not None:
            return float(option)
        ini = self.config.getini("peeps_timeout")
        if ini not in (None, ""):
            return float(ini)
        other = _pytest_timeout_seconds(item)
        if other:
            # Fire early enough to diagnose and stop the test before pytest-timeout
            # kills it: 20% (at least 1 s) ahead, never before half its limit.
            return max(other - max(1.0, other * 0.2), other * 0.5)
        return DEFAULT_TIMEOUT_S

    def _watch(self, running: _Running) -> None:
        if running.done.wait(running.timeout_s):
            return
        elapsed = time.monotonic() - running.started_mono
        headline = f"hung past its {running.timeout_s:g}s timeout"
        try:
            headline, diagnosis = diagnose(running.item.nodeid, elapsed, running.timeout_s)
        except Exception as exc:  # the diagnosis must never cost the interruption
            diagnosis = f"{running.item.nodeid} hung; peeps' diagnosis failed: {exc!r}"
        if running.done.is_set():  # it finished while we looked: nothing to report
            return
        running.headline, running.diagnosis = headline, diagnosis
        if not self.fired:
            register = getattr(threading, "_register_atexit", None)
            if register is not None:
                with contextlib.suppress(RuntimeError):  # already shutting down
                    register(self._at_thread_shutdown)
        self.fired.append(running)
        self._print(diagnosis)
        self._stop(running)

    def _print(self, text: str) -> None:
        writer = self.config.get_terminal_writer()
        capman = self.config.pluginmanager.getplugin("capturemanager")
        try:
            if capman is not None:
                with capman.global_and_fixture_disabled():
                    writer.line()
                    writer.sep("!", "peeps: test hung", red=True)
                    writer.line(text)
                    writer.flush()
            else:
                writer.line(text)
                writer.flush()
        except Exception:
            os.write(2, (text + "\n").encode(errors="replace"))

    def _stop(self, running: _Running) -> None:
        message = f"peeps: test ran past its {running.timeout_s:g}s peeps timeout"
        cancelled = False
        for loop in _running_loops():
            try:
                loop.call_soon_threadsafe(_cancel_all, loop, message)
                cancelled = True
            except RuntimeError:  # closed meanwhile
                continue
        if cancelled and running.done.wait(GRACE_S):
            return
        if running.done.is_set():
            return
        if INTERRUPT_SIGNAL is not None and self._handler_installed:
            running.interrupt_pending = True
            signal.pthread_kill(threading.main_thread().ident or 0, INTERRUPT_SIGNAL)
            if running.done.wait(GRACE_S * 2):
                return
        self._print("peeps: the test could not be interrupted; dumping every thread's "
                    "stack and exiting")
        faulthandler.dump_traceback(file=2, all_threads=True)
        os._exit(1)


def _raised_hang_error(call: pytest.CallInfo[None]) -> bool:
    excinfo = call.excinfo
    return excinfo is not None and isinstance(excinfo.value, PeepsHangError)


def _pytest_timeout_seconds(item: pytest.Item) -> float | None:
    """pytest-timeout's deadline for ``item``, when that plugin is in use."""
    if not item.config.pluginmanager.hasplugin("timeout"):
        return None
    marker = item.get_closest_marker("timeout")
    value: Any = None
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    if value is None:
        value = item.config.getoption("timeout", None)
    if value is None:
        try:
            value = item.config.getini("timeout")
        except ValueError:
            value = None
    try:
        seconds = float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


# -- stopping an asyncio test -----------------------------------------------------------------


def _running_loops() -> list[asyncio.AbstractEventLoop]:
    """Event loops running right now: the ones of tracked tasks, and any loop
    whose ``run_forever`` is on the main thread's stack."""
    from peeps._registry import REGISTRY

    loops: dict[int, asyncio.AbstractEventLoop] = {}
    for entity in list(REGISTRY.tasks.copy().values()):
        task = entity.task_ref() if hasattr(entity, "task_ref") else None
        if task is None:
            continue
        try:
            loop = task.get_loop()
        except Exception:
            continue
        if loop.is_running():
            loops[id(loop)] = loop
    if loops:
        return list(loops.values())
    # No tracked task says where the loop is: look for run_forever on the main
    # thread's stack (reading a foreign frame's locals, so only as a fallback).
    main_ident = threading.main_thread().ident
    frame = sys._current_frames().get(main_ident or 0)
    while frame is not None:
        if frame.f_code.co_name in ("run_forever", "_run_once"):
            owner = frame.f_locals.get("self")
            if isinstance(owner, asyncio.AbstractEventLoop) and owner.is_running():
                loops[id(owner)] = owner
        frame = frame.f_back
    return list(loops.values())


def _cancel_all(loop: asyncio.AbstractEventLoop, message: str) -> None:
    for task in asyncio.all_tasks(loop):
        task.cancel(msg=message)


# -- the diagnosis ------------------------------------------------------------------------


def diagnose(nodeid: str, elapsed_s: float, timeout_s: float) -> tuple[str, str]:
    """What this process is waiting on: a one-line headline (the top suspect)
    and the full text: suspects (with their wait chains and creation sites),
    every wait chain, and each thread's state."""
    from peeps import collect_graph
    from peeps.analysis import (
        GraphIndex,
        describe_node,
        find_suspects,
        format_duration_ns,
        format_wait_chain,
        node_location,
    )

    graph = collect_graph()
    nodes: list[Mapping[str, Any]] = list(graph["nodes"])
    edges: list[Mapping[str, Any]] = list(graph["edges"])
    suspects = find_suspects(nodes, edges, graph["events"])
    index = GraphIndex.build(nodes, edges)
    past = f"hung past its {timeout_s:g}s timeout"
    if suspects:
        top = suspects[0]
        headline = f"{past}: {top['title']}\n{top['reason']}"
    else:
        headline = f"{past}; no instrumented wait found (see the thread stacks)"
    lines = [f"{nodeid} has run {elapsed_s:.1f}s, past its {timeout_s:g}s peeps timeout."]

    if suspects:
        lines.append("")
        lines.append("suspects (most urgent first):")
        for i, suspect in enumerate(suspects[:10], 1):
            lines.append(f"  {i}. {suspect['severity'].upper()} {suspect['title']}")
            lines.append(f"     {suspect['reason']}")
            for node_id in suspect["node_ids"]:
                key = index.resolve("", node_id)
                node = index.nodes.get(key) if key else None
                if node is not None and node_location(node):
                    lines.append(f"     - {describe_node(node)} at {node_location(node)}")
    else:
        lines.append("")
        lines.append("no suspects in the graph (nothing instrumented is waiting on anything).")

    chains = []
    for key in sorted(index.wait_out):
        node = index.nodes[key]
        if node.get("kind") not in ("task", "thread") or key in index.needs_in:
            continue
        arcs = index.wait_chain(key)
        if arcs:
            chains.append(f"  {format_wait_chain(index, key, arcs)}")
    if chains:
        lines.append("")
        lines.append("needs chains:")
        lines.extend(chains)

    lines.append("")
    lines.append("threads:")
    lines.extend(f"  {line}" for line in _thread_lines(nodes, format_duration_ns))
    return headline, "\n".join(lines)


def _thread_lines(nodes: Iterable[Mapping[str, Any]], fmt: Any) -> list[str]:
    """One line per live thread: its sampler verdict when known, and where it is now."""
    verdicts: dict[str, Mapping[str, Any]] = {}
    for node in nodes:
        attrs = node.get("attrs")
        if node.get("kind") == "thread" and isinstance(attrs, Mapping):
            verdicts[str(attrs.get("name") or node.get("label"))] = attrs
    frames = sys._current_frames()
    lines = []
    for thread in threading.enumerate():
        if thread.name == WATCH_THREAD_NAME or thread.name.startswith("peeps-"):
            continue
        attrs = verdicts.get(thread.name, {})
        verdict = attrs.get("verdict")
        where = _user_frame(frames.get(thread.ident or 0))
        text = f"{thread.name}: {verdict or 'no verdict'}"
        if isinstance(attrs.get("verdict_ns"), int):
            text += f" for {fmt(attrs['verdict_ns'])}"
        if where:
            text += f", at {where}"
        lines.append(text)
    return lines


def _user_frame(frame: FrameType | None) -> str | None:
    """The innermost frame outside peeps, pytest, pluggy and the standard library."""
    import sysconfig

    skip = (os.path.dirname(os.path.abspath(__file__)),
            os.path.dirname(pytest.__file__ or ""),
            sysconfig.get_paths()["stdlib"])
    innermost = None
    while frame is not None:
        raw = frame.f_code.co_filename
        where = f"{raw}:{frame.f_lineno} in {frame.f_code.co_name}"
        innermost = innermost or where
        if (not raw.startswith("<") and not os.path.abspath(raw).startswith(skip)
                and "site-packages" not in raw):
            return where
        frame = frame.f_back
    return innermost
