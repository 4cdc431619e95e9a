"""Helpers for the thread, lock-order and watchdog tests: poll the real graph
until a condition holds (never sleep-and-hope), and pick nodes out of it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import peeps

Graph = Mapping[str, Any]


def wait_for_graph(predicate: Callable[[Graph], bool], timeout: float = 10.0,
                   interval: float = 0.02) -> dict[str, Any]:
    """``collect_graph()`` until ``predicate`` holds; fail with the last graph."""
    deadline = time.monotonic() + timeout
    graph: dict[str, Any] = dict(peeps.collect_graph())
    while not predicate(graph):
        if time.monotonic() > deadline:
            summary = [(n["kind"], n["label"], n["attrs"].get("verdict"))
                       for n in graph["nodes"]]
            raise AssertionError(f"graph condition not reached in {timeout}s: {summary}")
        time.sleep(interval)
        graph = dict(peeps.collect_graph())
    return graph


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def thread_node(graph: Graph, name: str) -> dict[str, Any] | None:
    for node in graph["nodes"]:
        if node["kind"] == "thread" and node["attrs"].get("name") == name:
            return node  # type: ignore[no-any-return]
    return None


def verdict_of(graph: Graph, name: str) -> str | None:
    node = thread_node(graph, name)
    return node["attrs"].get("verdict") if node is not None else None


def node_labelled(graph: Graph, label: str, kind: str | None = None) -> dict[str, Any]:
    found = [n for n in graph["nodes"] if n["label"] == label and (kind is None or n["kind"] == kind)]
    assert len(found) == 1, f"expected one node {label!r}, got {found}"
    return found[0]  # type: ignore[no-any-return]




def voluntary_switches(thread: threading.Thread) -> int:
    """How often ``thread`` has gone to sleep so far (Linux ``/proc``): its wake-ups."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines()
                    if line.startswith("voluntary_ctxt_switches")))
