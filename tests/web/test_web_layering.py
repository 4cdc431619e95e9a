"""Layering rules: the server never imports library internals; analysis is stdlib-only;
public namespaces only re-export."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import peeps.analysis
import peeps.web

SRC = Path(peeps.web.__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # resolve relative imports against the file's package
                package = path.parent.relative_to(SRC.parent).parts
                base = ".".join(package[: len(package) - node.level + 1] + ((base,) if base else ()))
            found.add(base)
    return found


def test_server_and_analysis_never_import_library_internals() -> None:
    for package in ("web", "analysis"):
        for path in (SRC / package).glob("*.py"):
            for module in imported_modules(path):
                if module.startswith("peeps."):
                    allowed = module.startswith(("peeps.types", "peeps.analysis", "peeps.web"))
                    assert allowed, f"{path.name} imports {module}"


def test_analysis_and_types_import_without_aiohttp() -> None:
    code = ("import sys; sys.modules['aiohttp'] = None; import peeps.analysis, peeps.types; "
            "assert not [m for m in sys.modules if m.startswith('peeps.web')]")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_public_namespaces_only_reexport() -> None:
    for module, expected in (
        (peeps.web, {"ConfigError", "ServerConfig", "load_config", "PeepsWebServer", "serve"}),
    ):
        public = {name for name in vars(module) if not name.startswith("_")}
        submodules = {name for name in public
                      if type(getattr(module, name)).__name__ == "module"}
        assert public - submodules == expected
    public_analysis = {name for name in vars(peeps.analysis) if not name.startswith("_")
                       and type(getattr(peeps.analysis, name)).__name__ != "module"}
    for name in ("find_suspects", "format_chain", "format_duration_ns", "describe_node",
                 "GraphIndex", "Suspect", "Thresholds", "find_deadlocks"):
        assert name in public_analysis
    for name in public_analysis:
        value = getattr(peeps.analysis, name)
        if name in ("NodeKey", "Severity"):  # type aliases
            continue
        assert value.__module__.startswith("peeps.analysis._"), name
