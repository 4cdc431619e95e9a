"""Shaping a stored snapshot into the graph the UI and the analysis read.

``link_cross_process`` is the hook where request/response nodes of different
processes will be joined on their shared ids (an RPC request in one process, its
response in another; a missing side shown as a ghost node).  It is the identity
for now: cross-process joining is tracked as its own piece of work.
"""

from __future__ import annotations

from typing import Any


def link_cross_process(graph: dict[str, Any]) -> dict[str, Any]:
    """Return ``graph`` with cross-process edges added (not yet: unchanged)."""
    return graph
