"""Timers as nodes: ``sleep`` shows its deadline and what waits on it."""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

from ._config import STATE
from ._registry import REGISTRY, Clock, Location, WaitSet, base_attrs, capture_location, new_id
from ._tasks import current_task_entity
from .types import Edge, Node

T = TypeVar("T")


class SleepEntity:
    __slots__ = ("__weakref__", "_peeps_id", "created_mono_ns", "duration_ns", "label",
                 "location", "waiters")

    def __init__(self, delay_s: float, label: str, location: Location | None) -> None:
        self._peeps_id = new_id("sleep")
        self.label = label
        self.location = location
        self.duration_ns = int(delay_s * 1e9)
        self.created_mono_ns = time.monotonic_ns()
        self.waiters = WaitSet()

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, None, now)
        deadline_mono = self.created_mono_ns + self.duration_ns
        attrs.update(
            duration_ns=self.duration_ns,
            deadline_at_ns=now.wall_of(deadline_mono),
            remaining_ns=max(0, deadline_mono - now.mono_ns),
        )
        node: Node = {"id": self._peeps_id, "kind": "sleep", "label": self.label, "attrs": attrs}
        return node, self.waiters.needs_edges(self._peeps_id, now)


async def sleep(delay: float, result: T = None, *, label: str | None = None) -> T:  # type: ignore[assignment]
    """``asyncio.sleep`` that appears in the graph as a ``sleep`` node."""
    if not STATE.enabled:
        return await asyncio.sleep(delay, result)
    entity = SleepEntity(delay, label or f"sleep {delay:g}s", capture_location())
    waiter = current_task_entity()
    entity.waiters.add(waiter, "sleep")
    REGISTRY.track(entity)
    try:
        return await asyncio.sleep(delay, result)
    finally:
        entity.waiters.remove(waiter)
        REGISTRY.untrack(entity)


__all__: list[Any] = ["sleep"]
