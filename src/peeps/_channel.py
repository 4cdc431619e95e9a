"""Channels: instrumented ``asyncio.Queue`` subclasses that show depth, capacity
and who is blocked sending or receiving."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Generic, TypeVar

from ._config import STATE
from ._registry import REGISTRY, Clock, WaitSet, base_attrs, capture_location, new_id
from ._tasks import current_task_entity
from .types import Edge, Node

T = TypeVar("T")


class PlainChannel(asyncio.Queue[T], Generic[T]):
    """What ``channel()`` returns with peeps disabled: a plain queue plus the
    ``send``/``recv`` names, with no bookkeeping at all."""

    send = asyncio.Queue.put
    recv = asyncio.Queue.get
    send_nowait = asyncio.Queue.put_nowait
    recv_nowait = asyncio.Queue.get_nowait


class Channel(asyncio.Queue[T], Generic[T]):
    """A bounded or unbounded queue that describes itself in the graph.

    Drop-in for ``asyncio.Queue`` (``put``/``get`` and friends) with ``send``/``recv``
    aliases.  Blocked senders and receivers become ``needs`` edges.
    """

    def __init__(self, name: str, capacity: int | None = None, **meta: Any) -> None:
        super().__init__(maxsize=capacity or 0)
        self._peeps_id = new_id("channel")
        self._peeps_name = name
        self._peeps_meta = meta or None
        self._peeps_location = capture_location()
        self._peeps_created_mono_ns = time.monotonic_ns()
        self._peeps_sent = 0
        self._peeps_received = 0
        self._peeps_waiters = WaitSet()
        REGISTRY.track(self)

    @property
    def name(self) -> str:
        return self._peeps_name

    def put_nowait(self, item: T) -> None:
        super().put_nowait(item)
        self._peeps_sent += 1

    def get_nowait(self) -> T:
        item = super().get_nowait()
        self._peeps_received += 1
        return item

    async def put(self, item: T) -> None:
        if not self.full():
            return self.put_nowait(item)
        waiter = current_task_entity()
        self._peeps_waiters.add(waiter, "send")
        REGISTRY.emit(self._peeps_id, "channel.send.blocked", {"depth": self.qsize()},
                      waiter.id if waiter else None)
        try:
            await super().put(item)
        finally:
            self._peeps_waiters.remove(waiter)
        REGISTRY.emit(self._peeps_id, "channel.send.unblocked", None,
                      waiter.id if waiter else None)
        return None

    async def get(self) -> T:
        if not self.empty():
            return self.get_nowait()
        waiter = current_task_entity()
        self._peeps_waiters.add(waiter, "recv")
        try:
            return await super().get()
        finally:
            self._peeps_waiters.remove(waiter)

    send = put
    recv = get
    send_nowait = put_nowait
    recv_nowait = get_nowait

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self._peeps_created_mono_ns, self._peeps_location,
                           self._peeps_meta, now)
        attrs.update(
            capacity=self.maxsize or None,
            depth=self.qsize(),
            sent=self._peeps_sent,
            received=self._peeps_received,
            blocked_senders=self._peeps_waiters.count("send"),
            blocked_receivers=self._peeps_waiters.count("recv"),
            unfinished_tasks=getattr(self, "_unfinished_tasks", None),
            closed=bool(getattr(self, "_is_shutdown", False)),
        )
        node: Node = {"id": self._peeps_id, "kind": "channel", "label": self._peeps_name,
                      "attrs": attrs}
        return node, self._peeps_waiters.needs_edges(self._peeps_id, now)


def channel(name: str, capacity: int | None = None, **meta: Any) -> asyncio.Queue[Any]:
    """A named queue: bounded when ``capacity`` is given, unbounded otherwise.

    Returns a :class:`Channel` (``PlainChannel`` when peeps is disabled); both are
    ``asyncio.Queue`` subclasses with ``send``/``recv`` aliases.
    """
    if capacity is not None and capacity <= 0:
        raise ValueError(f"channel capacity must be positive or None, got {capacity!r}")
    if not STATE.enabled:
        return PlainChannel(maxsize=capacity or 0)
    return Channel(name, capacity, **meta)
