"""``python -m peeps run`` argument handling, in-process (no program is run)."""

from __future__ import annotations

import pytest

from peeps._run import Target, default_process_name, split_argv


@pytest.mark.parametrize(("argv", "options", "target"), [
    (["app.py"], [], Target("app.py", None, [])),
    (["--name", "x", "app.py", "--name", "y"], ["--name", "x"], Target("app.py", None,
                                                                      ["--name", "y"])),
    (["--no-patch", "-m", "pkg.mod", "-m", "z"], ["--no-patch"], Target(None, "pkg.mod",
                                                                          ["-m", "z"])),
    (["-mpkg", "a"], [], Target(None, "pkg", ["a"])),
    (["--dashboard", "h:1", "--", "-weird.py", "a"], ["--dashboard", "h:1"],
     Target("-weird.py", None, ["a"])),
    (["--quiet"], ["--quiet"], None),
    (["-m"], ["-m"], None),
])
def test_split_argv(argv: list[str], options: list[str], target: Target | None) -> None:
    assert split_argv(argv) == (options, target)


@pytest.mark.parametrize(("target", "name"), [
    (Target("svc/server.py", None, []), "server"),
    (Target("examples/channel_full_stall", None, []), "channel_full_stall"),
    (Target("examples/channel_full_stall/__main__.py", None, []), "channel_full_stall"),
    (Target("tool.pyz", None, []), "tool"),
    (Target(None, "pkg.mod", []), "pkg.mod"),
    (Target(None, "pkg.__main__", []), "pkg"),
])
def test_default_process_name(target: Target, name: str) -> None:
    assert default_process_name(target) == name
