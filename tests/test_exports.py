"""The public API: exactly what is meant to be public, each piece documented.

Fails when something leaks into a public namespace or goes missing from it
(trio's test_exports is the model).  Changing the public API means changing
the expected sets here on purpose.
"""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

import peeps

EXPECTED_TOP_LEVEL = {
    "DEFAULT_REDACT_PATTERNS", "BoundedSemaphore", "Channel", "ChannelClosed", "Condition",
    "Event", "Lock", "Notify", "OnceCell", "OneshotClosed", "RWLock", "Semaphore",
    "ThreadBoundedSemaphore", "ThreadCondition", "ThreadLock", "ThreadRLock", "ThreadRWLock",
    "ThreadSemaphore", "Watch", "__version__", "channel", "collect_graph", "current_node_id",
    "find_deadlocks", "init", "init_named", "install_task_factory", "interval", "io",
    "is_enabled", "lock_order_reports", "oneshot", "open_connection", "open_unix_connection",
    "patch", "peep", "providers", "register_provider", "rpc", "run_in_executor",
    "sampler_stats", "shared_memory", "shm", "shutdown", "sleep", "start_sampler",
    "start_server", "start_unix_server", "stop_sampler", "tasks", "timeout", "to_thread",
    "uninstall_task_factory", "unpatch", "unregister_provider", "watch", "watch_loop",
}

#: Subpackages that are public in their own right (imported on demand).
PUBLIC_SUBPACKAGES = {"types", "analysis", "web", "cli", "integrations", "pytest_plugin"}

NAMESPACES = ["peeps.tasks", "peeps.io", "peeps.rpc", "peeps.shared_memory", "peeps.types",
              "peeps.analysis"]


def test_top_level_all_is_exactly_the_public_api() -> None:
    assert set(peeps.__all__) == EXPECTED_TOP_LEVEL
    assert len(peeps.__all__) == len(set(peeps.__all__)), "duplicates in __all__"


def test_nothing_else_public_leaks_into_peeps() -> None:
    leaked = {
        name for name, value in vars(peeps).items()
        if not name.startswith(("_", "@")) and name not in peeps.__all__
        and not (isinstance(value, types.ModuleType) and name in PUBLIC_SUBPACKAGES)
    }
    assert not leaked, f"public names not in __all__: {sorted(leaked)}"


@pytest.mark.parametrize("modname", NAMESPACES)
def test_namespaces_only_reexport_and_list_everything(modname: str) -> None:
    module = importlib.import_module(modname)
    exported = set(getattr(module, "__all__", ()))
    public = {n for n, v in vars(module).items() if not n.startswith("_")
              and not isinstance(v, types.ModuleType) and n not in ("annotations",)}
    assert public <= exported | {"TYPE_CHECKING"}, f"{modname} leaks {sorted(public - exported)}"
    for name in exported:
        assert hasattr(module, name), f"{modname}.__all__ names missing {name}"
        value = getattr(module, name)
        origin = getattr(value, "__module__", "") or ""
        if callable(value) and origin.startswith("peeps"):
            # Implementation lives in underscored modules; namespaces re-export it.
            assert "._" in origin or origin.split(".")[-1].startswith("_"), (
                f"{modname}.{name} is implemented in public module {origin}")


@pytest.mark.parametrize("name", sorted(EXPECTED_TOP_LEVEL - {"__version__", "io", "rpc",
                                                               "shared_memory", "tasks",
                                                               "DEFAULT_REDACT_PATTERNS"}))
def test_every_public_callable_is_documented(name: str) -> None:
    value = getattr(peeps, name)
    doc = inspect.getdoc(value)
    assert doc and len(doc) > 20, f"peeps.{name} needs a docstring"


def test_public_callables_are_typed() -> None:
    untyped = []
    for name in peeps.__all__:
        value = getattr(peeps, name)
        if inspect.isfunction(value):
            sig = inspect.signature(value)
            if sig.return_annotation is inspect.Signature.empty:
                untyped.append(name)
    assert not untyped, f"missing return annotations: {untyped}"


def test_importing_peeps_imports_no_server_side_packages() -> None:
    import subprocess
    import sys
    code = ("import sys, peeps; bad = [m for m in ('aiohttp', 'peeps.web', 'sqlite3') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
