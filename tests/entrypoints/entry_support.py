"""Helpers for the entry-point tests: run ``python -m peeps run``, the ``peeps``
console script and ``pytest --peeps`` as a user would, in child processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from support import ChildProcess

PROGRAMS = Path(__file__).resolve().parent / "programs"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name in ("PEEPS_DASHBOARD", "PEEPS_HTTP", "PEEPS_PROCESS_NAME", "PEEPS_AUTO",
                 "PYTEST_ADDOPTS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        env.pop(name, None)
    env.update(extra)
    return env


def peeps_command() -> list[str]:
    """The ``peeps`` console script next to this interpreter, else ``-m peeps.cli``."""
    script = Path(sys.executable).with_name("peeps")
    if script.exists():
        return [str(script)]
    found = shutil.which("peeps")
    if found and Path(found).parent == Path(sys.executable).parent:
        return [found]
    return [sys.executable, "-m", "peeps.cli"]


def peeps_cli(*args: str, http: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [*peeps_command(), *args]
    if http is not None:
        command += ["--http", http]
    return subprocess.run(command, env=child_env(**(env or {})), capture_output=True, text=True,
                          timeout=60)


class PeepsRun(ChildProcess):
    """``python -m peeps run [options] target...`` as a child process."""

    def __init__(self, *args: str, cwd: Path | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__([sys.executable, "-m", "peeps", "run", *args], cwd=cwd,
                         env=child_env(**(env or {})))


PYTEST_INI = """[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
"""


def run_pytest(directory: Path, source: str, *args: str,
               timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Write ``source`` as a test file in ``directory`` (its own rootdir and ini,
    so the project's settings do not apply) and run pytest on it."""
    (directory / "pytest.ini").write_text(PYTEST_INI)
    (directory / "test_generated.py").write_text(source)
    return subprocess.run(
        # Plugins that import hypothesis take seconds to load and are not needed here.
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         "-p", "no:schemathesis", "-p", "no:anyio", "-q", "-rf",
         "test_generated.py", *args],
        cwd=directory, env=child_env(COLUMNS="200"), capture_output=True, text=True,
        timeout=timeout)
