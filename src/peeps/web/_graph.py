"""Shaping a stored snapshot into the graph the UI and the analysis read.

``link_cross_process`` joins request/response nodes of different processes on
their shared span id (a missing side shown as a ghost node) and links
shared-memory segments by name; the join itself is the pure
``peeps.analysis.join_cross_process``.
"""

from __future__ import annotations

import logging
from typing import Any

from ..analysis import join_cross_process

log = logging.getLogger("peeps.web")


def link_cross_process(graph: dict[str, Any]) -> dict[str, Any]:
    """Return ``graph`` with cross-process join edges and ghost nodes added."""
    try:
        nodes, edges = join_cross_process(graph["nodes"], graph["edges"])
    except Exception:  # a bad stored graph must still be served, unjoined
        log.exception("peeps-web: cross-process join failed; serving the graph unjoined")
        return graph
    return {**graph, "nodes": nodes, "edges": edges}
