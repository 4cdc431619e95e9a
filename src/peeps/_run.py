"""``python -m peeps run``: run a program under peeps without changing it.

The program runs in this interpreter with ``__main__`` semantics (``runpy``),
``sys.argv`` and ``sys.path[0]`` set as ``python script.py`` / ``python -m mod``
would set them.  Before it starts, peeps is initialised with automatic task
tracking (which also reaches loops created later, e.g. by ``asyncio.run``),
patched asyncio primitives, the thread sampler and the event-loop
stall watchdog; each part has a flag to turn it off.
"""

from __future__ import annotations

import argparse
import logging
import os
import runpy
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, NoReturn

from ._config import ENV_DASHBOARD, ENV_PROCESS_NAME

log = logging.getLogger("peeps")

USAGE: Final = ("python -m peeps run [options] script.py [args ...]\n"
                "       python -m peeps run [options] -m module [args ...]")

#: Options that take a value (so the script/module is found after them).
_VALUE_OPTIONS: Final = frozenset({"--dashboard", "--name", "--stall-threshold-ms",
                                   "--sampler-hz"})


@dataclass(frozen=True)
class RunOptions:
    dashboard: str | None
    name: str | None
    auto: bool
    patch: bool
    threads: bool
    watchdog: bool
    stall_threshold_ms: float | None
    sampler_hz: float | None
    quiet: bool


@dataclass(frozen=True)
class Target:
    """What to run: a path (file, directory or zip) or a module, with its argv tail."""

    path: str | None
    module: str | None
    args: list[str]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m peeps run", usage=USAGE,
        description="Run a Python program with peeps on: every asyncio task tracked, "
                    "asyncio locks, queues and events instrumented, threads sampled and "
                    "event-loop stalls recorded, connected to peeps-web. The program is not "
                    "changed.")
    parser.add_argument("--dashboard", metavar="HOST:PORT",
                        help=f"peeps-web ingest address (default: ${ENV_DASHBOARD}; unset = "
                             "collect but send nothing)")
    parser.add_argument("--name", help=f"process name in the dashboard (default: "
                                        f"${ENV_PROCESS_NAME}, else the script or module name)")
    parser.add_argument("--no-auto", dest="auto", action="store_false",
                        help="do not track every asyncio task automatically")
    parser.add_argument("--no-patch", dest="patch", action="store_false",
                        help="do not swap asyncio.Lock, Queue, Semaphore, Event, Condition for "
                             "peeps' instrumented ones")
    parser.add_argument("--no-threads", dest="threads", action="store_false",
                        help="do not sample threads")
    parser.add_argument("--no-watchdog", dest="watchdog", action="store_false",
                        help="do not watch the event loop for stalls")
    parser.add_argument("--stall-threshold-ms", type=float, metavar="MS",
                        help="a loop that has not come back for this long is stalled")
    parser.add_argument("--sampler-hz", type=float, metavar="HZ", help="thread sampling rate")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="do not print the one-line banner on stderr")
    return parser


def split_argv(argv: Sequence[str]) -> tuple[list[str], Target | None]:
    """Split ``[options] (script | -m module) [args]`` at the target.

    Everything after the script or module belongs to the program, even if it
    looks like one of our options.
    """
    options: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            if i + 1 < len(argv):
                return options, Target(argv[i + 1], None, list(argv[i + 2:]))
            return options, None
        if arg == "-m":
            if i + 1 >= len(argv):
                return [*options, arg], None
            return options, Target(None, argv[i + 1], list(argv[i + 2:]))
        if arg.startswith("-m") and len(arg) > 2 and not arg.startswith("--"):
            return options, Target(None, arg[2:], list(argv[i + 1:]))
        if not arg.startswith("-") or arg == "-":
            return options, Target(arg, None, list(argv[i + 1:]))
        options.append(arg)
        if arg in _VALUE_OPTIONS and i + 1 < len(argv):
            options.append(argv[i + 1])
            i += 1
        i += 1
    return options, None


def default_process_name(target: Target) -> str:
    if target.module is not None:
        return target.module.removesuffix(".__main__")
    assert target.path is not None
    path = os.path.abspath(target.path)
    base = os.path.basename(path.rstrip(os.sep))
    if base == "__main__.py":
        base = os.path.basename(os.path.dirname(path))
    return base.removesuffix(".py").removesuffix(".pyz") or "python"


def start_peeps(options: RunOptions, name: str) -> bool:
    """Switch on every part ``options`` asks for.  Returns whether primitives
    were patched.  Patching that fails is logged and skipped: never fatal to the
    program."""
    import peeps

    peeps.init(
        name,
        dashboard=options.dashboard,
        auto=options.auto,
        sampler="thread" if options.threads else "off",
        sampler_hz=options.sampler_hz,
        watchdog=options.watchdog,
        stall_threshold_ms=options.stall_threshold_ms if options.watchdog else None,
    )
    if not options.patch:
        return False
    try:
        peeps.patch()
    except Exception as exc:
        log.warning("peeps: patching primitives failed, continuing without: %s", exc)
        return False
    return True


def stop_peeps(*, patched: bool, auto: bool) -> None:
    """Undo :func:`start_peeps` (used by the pytest plugin at session end)."""
    import peeps

    if patched:
        peeps.unpatch()
    if auto:
        peeps.uninstall_task_factory()
    peeps.shutdown()


def _fail(message: str) -> NoReturn:
    print(f"python -m peeps run: {message}", file=sys.stderr)
    raise SystemExit(2)


def _trim_traceback(tb: TracebackType | None) -> TracebackType | None:
    """Drop our own and runpy's frames from the top of the program's traceback."""
    here = os.path.abspath(__file__)
    runpy_file = os.path.abspath(runpy.__file__ or "")
    while tb is not None:
        raw = tb.tb_frame.f_code.co_filename
        if not raw.startswith("<frozen runpy") and os.path.abspath(raw) not in (here, runpy_file):
            break
        tb = tb.tb_next
    return tb


def run_target(target: Target) -> None:
    """Run ``target`` as ``__main__`` with ``sys.argv`` and ``sys.path[0]`` set."""
    if target.module is not None:
        sys.argv = [target.module, *target.args]  # runpy replaces argv[0] with the file
        sys.path[0:0] = [] if sys.path and sys.path[0] == os.getcwd() else [os.getcwd()]
        runpy.run_module(target.module, run_name="__main__", alter_sys=True)
        return
    assert target.path is not None
    if not os.path.exists(target.path):
        _fail(f"can't open file {target.path!r}: no such file or directory")
    sys.argv = [target.path, *target.args]
    script_dir = os.path.dirname(os.path.abspath(target.path))
    if os.path.isdir(target.path) or target.path.endswith((".zip", ".pyz")):
        script_dir = os.path.abspath(target.path)
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path[0] = script_dir
    else:
        sys.path.insert(0, script_dir)
    runpy.run_path(target.path, run_name="__main__")


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    option_args, target = split_argv(raw)
    parser = build_parser()
    parsed = parser.parse_args(option_args)
    if target is None:
        parser.print_usage(sys.stderr)
        print("python -m peeps run: give a script or -m module to run", file=sys.stderr)
        return 2
    options = RunOptions(
        dashboard=parsed.dashboard, name=parsed.name, auto=parsed.auto, patch=parsed.patch,
        threads=parsed.threads, watchdog=parsed.watchdog,
        stall_threshold_ms=parsed.stall_threshold_ms, sampler_hz=parsed.sampler_hz,
        quiet=parsed.quiet)
    name = options.name or os.environ.get(ENV_PROCESS_NAME) or default_process_name(target)
    start_peeps(options, name)
    if not options.quiet:
        dashboard = options.dashboard or os.environ.get(ENV_DASHBOARD) or ""
        where = (f"sending to {dashboard}" if dashboard.strip()
                 else f"not connected (set {ENV_DASHBOARD} or --dashboard)")
        print(f"peeps: running {target.module or target.path} as {name!r}, {where}",
              file=sys.stderr, flush=True)
    try:
        run_target(target)
    except SystemExit:
        raise
    except BaseException as exc:
        # Report it as ``python script.py`` would, without our frames on top.
        exc = exc.with_traceback(_trim_traceback(exc.__traceback__))
        if isinstance(exc, KeyboardInterrupt):
            traceback.print_exception(exc)
            return 130
        sys.excepthook(type(exc), exc, exc.__traceback__)
        return 1
    return 0
