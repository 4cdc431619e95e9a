"""Small helpers for tests that read a graph from ``peeps.collect_graph()``."""

from __future__ import annotations

import asyncio
from typing import Any


async def settle(rounds: int = 8) -> None:
    """Let every runnable task run until it blocks (no sleeping and hoping)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def node(graph: Any, node_id: str) -> dict[str, Any]:
    """The node with ``node_id``; fails the test if it is not in the graph."""
    found = [n for n in graph["nodes"] if n["id"] == node_id]
    assert found, f"{node_id} not in graph"
    return found[0]  # type: ignore[no-any-return]


def edges(graph: Any, kind: str, *, src: str | None = None,
          dst: str | None = None) -> list[dict[str, Any]]:
    """Edges of ``kind``, optionally only those from ``src`` and/or to ``dst``."""
    return [e for e in graph["edges"] if e["kind"] == kind
            and (src is None or e["src"] == src) and (dst is None or e["dst"] == dst)]
