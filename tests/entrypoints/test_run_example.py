"""``scripts/run-example`` (the README's way to run another scenario) with a
Python that cannot import peeps: it finds ``scripts/demo``'s venv, or says
what to do instead of starting an example that dies on ``import peeps``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python of this version without peeps (a fresh venv, no packages)."""
    where = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    python = str(where / "bin" / "python")
    assert subprocess.run([python, "-c", "import peeps"], capture_output=True).returncode != 0
    return python


def checkout(tmp_path: Path) -> Path:
    """scripts/run-example and one scenario, in a tree with no .venv/demo."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "run-example", tmp_path / "scripts" / "run-example")
    shutil.copytree(ROOT / "examples" / "semaphore_starvation",
                    tmp_path / "examples" / "semaphore_starvation")
    return tmp_path


def run(python: str, tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEEPS_", "PYTHON"))}
    return subprocess.run([python, str(tree / "scripts" / "run-example"), *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_without_peeps_it_says_how_to_get_it_and_starts_nothing(
        bare_python: str, tmp_path: Path) -> None:
    tree = checkout(tmp_path)
    listed = run(bare_python, tree, "--list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("semaphore-starvation ")

    result = run(bare_python, tree, "semaphore-starvation")
    assert result.returncode == 1
    assert "cannot import peeps" in result.stderr
    assert "run scripts/demo semaphore-starvation" in result.stderr
    assert "starting peeps-web" not in result.stdout  # nothing was started


def test_without_peeps_it_uses_the_demo_venv(bare_python: str, tmp_path: Path) -> None:
    """With ``.venv/demo`` there (standing for this test run's Python, which
    has peeps), the script says it uses that one; ``PEEPS_HTTP`` points at a port
    nothing answers on and the server it starts is given a bad address, so it
    stops at once instead of running a scenario."""
    tree = checkout(tmp_path)
    demo = tree / ".venv" / "demo" / "bin"
    demo.mkdir(parents=True)
    # A wrapper, not a link: a linked venv Python would not find its venv.
    (demo / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (demo / "python").chmod(0o755)
    env_probe = subprocess.run([sys.executable, "-c", "import peeps.web, aiohttp"],
                               capture_output=True)
    if env_probe.returncode != 0:
        pytest.skip("this test run's Python has no peeps[web]")
    result = subprocess.run(
        [bare_python, str(tree / "scripts" / "run-example"), "semaphore-starvation"],
        capture_output=True, text=True, timeout=60,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PEEPS_")},
             "PEEPS_HTTP": "127.0.0.1:1", "PEEPS_LISTEN": "not-an-address"})
    assert f"run-example: using {demo / 'python'}" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1
    assert "peeps-web did not start" in result.stderr
