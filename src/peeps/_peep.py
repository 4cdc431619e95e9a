"""``peep``: make any awaitable visible as a node the waiting task ``needs``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from ._config import STATE
from ._registry import REGISTRY, Clock, Location, WaitSet, base_attrs, capture_location, new_id
from ._tasks import adopt_task, current_task_entity
from .types import Edge, Node

T = TypeVar("T")


class PeepEntity:
    __slots__ = ("__weakref__", "_peeps_id", "created_mono_ns", "label", "location", "meta",
                 "target_id", "waiters")

    def __init__(self, label: str, location: Location | None, meta: dict[str, Any] | None,
                 target_id: str | None) -> None:
        self._peeps_id = new_id("peep")
        self.label = label
        self.location = location
        self.meta = meta
        self.target_id = target_id
        self.created_mono_ns = time.monotonic_ns()
        self.waiters = WaitSet()

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, self.meta, now)
        attrs["waited_ns"] = attrs["age_ns"]
        node: Node = {"id": self._peeps_id, "kind": "peep", "label": self.label, "attrs": attrs}
        edges = self.waiters.needs_edges(self._peeps_id, now)
        if self.target_id is not None:
            edges.append({"src": self._peeps_id, "dst": self.target_id, "kind": "needs",
                          "attrs": {"op": "await"}})
        return node, edges


async def _peeped(awaitable: Awaitable[T], entity: PeepEntity) -> T:
    waiter = current_task_entity()
    entity.waiters.add(waiter, "await")
    REGISTRY.track(entity)
    try:
        return await awaitable
    finally:
        entity.waiters.remove(waiter)
        REGISTRY.untrack(entity)


def peep(awaitable: Awaitable[T], label: str, **meta: Any) -> Awaitable[T]:
    """Wrap ``awaitable`` so that, while it is awaited, the graph shows a node
    ``label`` that the awaiting task ``needs``.  ``meta`` becomes node metadata.

    With peeps disabled, returns ``awaitable`` unchanged.
    """
    if not STATE.enabled:
        return awaitable
    # A lazily tracked task (automatic mode) gets its entity now, so the peep
    # can point at it.
    target = adopt_task(awaitable) if isinstance(awaitable, asyncio.Task) else None
    entity = PeepEntity(label, capture_location(), meta or None,
                        target.id if target is not None else None)
    return _peeped(awaitable, entity)
