"""Timers as nodes: ``sleep`` shows its deadline and what waits on it;
``timeout`` is a deadline scope; ``interval`` a periodic ticker."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
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



# -- timeout -------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeoutStatistics:
    """``Timeout.statistics()``."""

    delay_ns: int | None
    remaining_ns: int | None
    expired: bool
    entered: bool


class Timeout:
    """``async with peeps.timeout(delay):`` — ``asyncio.timeout`` as a node.

    While the block runs, the graph has a ``timeout`` node (deadline, remaining)
    and the task inside ``touches`` it (op ``scope``): whatever that task
    ``needs`` is bounded by the deadline.  ``delay=None`` means no deadline.
    The node leaves the graph when the block exits.
    """

    def __init__(self, delay: float | None, label: str | None, location: Location | None) -> None:
        self._peeps_id = new_id("timeout")
        self.label = label or (f"timeout {delay:g}s" if delay is not None else "timeout")
        self.location = location
        self.delay_ns = int(delay * 1e9) if delay is not None else None
        self.created_mono_ns = time.monotonic_ns()
        self.inner: asyncio.Timeout | None = None
        self.waiters = WaitSet()
        self._expired = False

    def statistics(self) -> TimeoutStatistics:
        remaining = None
        if self.delay_ns is not None:
            remaining = max(0, self.created_mono_ns + self.delay_ns - time.monotonic_ns())
        return TimeoutStatistics(delay_ns=self.delay_ns, remaining_ns=remaining,
                                 expired=self._expired, entered=self.inner is not None)

    def reschedule(self, delay: float | None) -> None:
        """Move the deadline to ``delay`` seconds from now (``None``: no deadline)."""
        self.created_mono_ns = time.monotonic_ns()
        self.delay_ns = int(delay * 1e9) if delay is not None else None
        if self.inner is not None:
            loop = asyncio.get_running_loop()
            self.inner.reschedule(loop.time() + delay if delay is not None else None)

    def expired(self) -> bool:
        """Whether the deadline passed (like ``asyncio.Timeout.expired()``)."""
        return self._expired

    async def __aenter__(self) -> Timeout:
        loop = asyncio.get_running_loop()
        when = loop.time() + self.delay_ns / 1e9 if self.delay_ns is not None else None
        self.inner = asyncio.timeout_at(when)
        await self.inner.__aenter__()
        self.waiters.add(current_task_entity(), "scope")
        REGISTRY.track(self)
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        REGISTRY.untrack(self)
        self.waiters.remove(current_task_entity())
        assert self.inner is not None
        try:
            await self.inner.__aexit__(exc_type, exc, tb)
        finally:
            self._expired = self.inner.expired()
            if self._expired:
                REGISTRY.emit(self._peeps_id, "timer.timeout.expired",
                              {"delay_ns": self.delay_ns})

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, None, now)
        if self.delay_ns is not None:
            deadline = self.created_mono_ns + self.delay_ns
            attrs.update(delay_ns=self.delay_ns, deadline_at_ns=now.wall_of(deadline),
                         remaining_ns=max(0, deadline - now.mono_ns))
        else:
            attrs.update(delay_ns=None, deadline_at_ns=None, remaining_ns=None)
        attrs["expired"] = self._expired
        node: Node = {"id": self._peeps_id, "kind": "timeout", "label": self.label,
                      "attrs": attrs}
        edges = self.waiters.needs_edges(self._peeps_id, now)
        for edge in edges:
            edge["kind"] = "touches"
        return node, edges


def timeout(delay: float | None, *, label: str | None = None) -> Any:
    """An async context manager like ``asyncio.timeout(delay)`` that appears in
    the graph as a ``timeout`` node.  With peeps disabled it is ``asyncio.timeout``."""
    if not STATE.enabled:
        return asyncio.timeout(delay)
    return Timeout(delay, label, capture_location())


# -- interval ------------------------------------------------------------------------


@dataclass(frozen=True)
class IntervalStatistics:
    """``Interval.statistics()``."""

    period_ns: int
    ticks: int
    missed_ticks: int
    waiting: bool


class Interval:
    """``async for tick in peeps.interval(period):`` — yields the tick number
    every ``period`` seconds, first at once (tokio's ``interval``).  Late ticks
    are skipped, not bursted (``missed_ticks`` counts them).  In the graph an
    ``interval`` node; the task waiting for the next tick ``needs`` it."""

    def __init__(self, period: float, label: str | None, tracked: bool) -> None:
        if period <= 0:
            raise ValueError(f"interval period must be positive, got {period!r}")
        self.period = period
        self.period_ns = int(period * 1e9)
        self.ticks = 0
        self.missed_ticks = 0
        self._next: float | None = None
        self._tracked = tracked
        if tracked:
            self._peeps_id = new_id("interval")
            self.label = label or f"interval {period:g}s"
            self.location = capture_location()
            self.created_mono_ns = time.monotonic_ns()
            self.next_mono_ns = self.created_mono_ns
            self.waiters = WaitSet()
            REGISTRY.track(self)

    def __aiter__(self) -> Interval:
        return self

    async def __anext__(self) -> int:
        return await self.tick()

    async def tick(self) -> int:
        """Wait for the next tick; return its number (0, 1, ...)."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._next is None:
            self._next = now
        delay = self._next - now
        if delay > 0:
            if self._tracked:
                self.next_mono_ns = time.monotonic_ns() + int(delay * 1e9)
                waiter = current_task_entity()
                self.waiters.add(waiter, "tick")
                try:
                    await asyncio.sleep(delay)
                finally:
                    self.waiters.remove(waiter)
            else:
                await asyncio.sleep(delay)
        else:
            missed = int(-delay // self.period)
            if missed:
                self.missed_ticks += missed
                self._next += missed * self.period
        tick = self.ticks
        self.ticks += 1
        self._next += self.period
        return tick

    def statistics(self) -> IntervalStatistics:
        waiting = bool(self._tracked and len(self.waiters))
        return IntervalStatistics(period_ns=self.period_ns, ticks=self.ticks,
                                  missed_ticks=self.missed_ticks, waiting=waiting)

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, None, now)
        attrs.update(period_ns=self.period_ns, ticks=self.ticks,
                     missed_ticks=self.missed_ticks,
                     next_tick_at_ns=now.wall_of(self.next_mono_ns),
                     remaining_ns=max(0, self.next_mono_ns - now.mono_ns))
        node: Node = {"id": self._peeps_id, "kind": "interval", "label": self.label,
                      "attrs": attrs}
        return node, self.waiters.needs_edges(self._peeps_id, now)


def interval(period: float, *, label: str | None = None) -> Interval:
    """A periodic ticker; see :class:`Interval`."""
    return Interval(period, label, STATE.enabled)


__all__ = ["Interval", "Timeout", "interval", "sleep", "timeout"]
