"""Task entities: named tasks (``spawn_tracked``), lineage, state, await stacks."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import _registry
from ._config import STATE
from ._registry import REGISTRY, Clock, Location, base_attrs, capture_location, new_id
from .types import Edge, Node

T = TypeVar("T")

#: Task object -> its entity.  Weak on the task so peeps never keeps one alive.
_ENTITIES: weakref.WeakKeyDictionary[asyncio.Future[Any], TaskEntity] = weakref.WeakKeyDictionary()

STACK_LIMIT = 24


class TaskEntity:
    """What peeps knows about one asyncio task."""

    __slots__ = (
        "__weakref__",
        "coro_name",
        "created_mono_ns",
        "exception_type",
        "finished_mono_ns",
        "id",
        "location",
        "meta",
        "name",
        "outcome",
        "parent_id",
        "task_ref",
        "tracked",
    )

    def __init__(
        self,
        task: asyncio.Future[Any],
        name: str,
        *,
        tracked: bool,
        location: Location | None,
        parent_id: str | None,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self.id = new_id("task")
        self.name = name
        self.tracked = tracked
        self.location = location
        self.parent_id = parent_id
        self.meta = meta
        self.created_mono_ns = time.monotonic_ns()
        self.finished_mono_ns: int | None = None
        self.outcome: str | None = None
        self.exception_type: str | None = None
        coro = task.get_coro() if isinstance(task, asyncio.Task) else None
        self.coro_name = getattr(coro, "__qualname__", None) or type(coro).__name__
        self.task_ref: weakref.ref[asyncio.Future[Any]] = weakref.ref(task, self._collected)

    # Runs in whichever thread drops the last reference to a never-finished task.
    def _collected(self, _ref: object) -> None:
        if self.finished_mono_ns is None:
            REGISTRY.tasks.pop(self.id, None)

    def _on_done(self, task: asyncio.Future[Any]) -> None:
        self.finished_mono_ns = time.monotonic_ns()
        if task.cancelled():
            self.outcome = "cancelled"
        else:
            # Read the private slot: Task.exception() would mark the exception as
            # retrieved and silence asyncio's own "never retrieved" report.
            exc = getattr(task, "_exception", None)
            if exc is not None:
                self.outcome = "failed"
                self.exception_type = type(exc).__qualname__
            else:
                self.outcome = "done"
        REGISTRY.tasks.pop(self.id, None)
        REGISTRY.finished.append(self)
        REGISTRY.emit(self.id, f"task.run.{self.outcome}",
                      {"exception_type": self.exception_type} if self.exception_type else None)

    def state(self) -> str:
        if self.outcome is not None:
            return self.outcome
        task = self.task_ref()
        if task is None:
            return "collected"
        if task.done():
            return "done"
        try:
            if asyncio.current_task(task.get_loop()) is task:
                return "running"
        except Exception:
            pass
        return "pending"

    def stack(self) -> list[str]:
        task = self.task_ref()
        if task is None or self.outcome is not None or not isinstance(task, asyncio.Task):
            return []
        try:
            frames = task.get_stack(limit=STACK_LIMIT)
        except Exception:
            return []
        return [f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}" for f in frames]

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, self.meta, now)
        attrs.update(
            state=self.state(),
            name=self.name,
            coro=self.coro_name,
            tracked=self.tracked,
            stack=self.stack(),
        )
        if self.finished_mono_ns is not None:
            attrs["finished_at_ns"] = now.wall_of(self.finished_mono_ns)
            attrs["outcome"] = self.outcome
            if self.exception_type:
                attrs["exception_type"] = self.exception_type
        node: Node = {"id": self.id, "kind": "task", "label": self.name, "attrs": attrs}
        edges: list[Edge] = []
        if self.parent_id is not None:
            edges.append({"src": self.parent_id, "dst": self.id, "kind": "spawned", "attrs": {}})
        return node, edges


def register_task(
    task: asyncio.Future[Any],
    name: str,
    *,
    tracked: bool,
    location: Location | None,
    parent: TaskEntity | None,
    meta: dict[str, Any] | None = None,
) -> TaskEntity:
    entity = TaskEntity(
        task, name, tracked=tracked, location=location,
        parent_id=parent.id if parent is not None else None, meta=meta,
    )
    _ENTITIES[task] = entity
    REGISTRY.tasks[entity.id] = entity
    task.add_done_callback(entity._on_done)
    return entity


def entity_for_task(task: asyncio.Future[Any]) -> TaskEntity | None:
    return _ENTITIES.get(task)


def current_task_entity() -> TaskEntity | None:
    """The entity of the running task, registering an unknown task on first sight."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    if task is None:
        return None
    entity = _ENTITIES.get(task)
    if entity is None:
        entity = register_task(task, task.get_name(), tracked=False, location=None, parent=None)
    return entity


def current_waiter() -> Any:
    """The entity that is about to wait or hold: the running task, else the
    calling thread (when thread tracking is on), else ``None``."""
    entity = current_task_entity()
    if entity is not None:
        return entity
    hook = _registry.thread_waiter_hook
    return hook() if hook is not None else None


def spawn_tracked(
    name: str,
    coro: Coroutine[Any, Any, T],
    **meta: Any,
) -> asyncio.Task[T]:
    """Create a task on the running loop that appears in the graph under ``name``.

    The task records who spawned it (a ``spawned`` edge), where (``ctx.location``),
    and any ``meta`` given.  With peeps disabled this is ``loop.create_task``.
    """
    loop = asyncio.get_running_loop()
    if not STATE.enabled:
        return loop.create_task(coro, name=name)
    location = capture_location()
    parent = current_task_entity()
    task = loop.create_task(coro, name=name)
    entity = _ENTITIES.get(task)
    if entity is None:
        register_task(task, name, tracked=True, location=location, parent=parent,
                      meta=meta or None)
    else:
        # An automatic task factory saw it first; give it the caller's name.
        entity.name = name
        entity.tracked = True
        entity.location = location
        if meta:
            entity.meta = meta
    return task


def _forget_all() -> None:
    _ENTITIES.clear()
