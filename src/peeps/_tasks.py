"""Task entities: named tasks (``spawn_tracked``), lineage, state, step statistics,
await stacks, and the ``needs`` edges a blocked task's await chain implies.

Everything expensive (await stacks, what a task is blocked on) is computed at
snapshot time from the task object; the hot path only creates the entity and,
when step statistics are on, bumps counters in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from types import FrameType, ModuleType
from typing import Any, TypeVar

from . import _redact, _registry
from ._config import STATE, env_flag
from ._loopside import remember_loop
from ._registry import REGISTRY, Clock, Location, base_attrs, capture_location, new_id
from ._reply_encoder import Encoded, Steps
from .types import Edge, Node

T = TypeVar("T")
R = TypeVar("R")

#: ``id(task)`` -> its entity.  The entity drops its entry when the task is
#: garbage collected (a weakref callback), so an id is never reused while mapped;
#: lookups still verify identity.  A plain dict keyed by int is the cheapest
#: lookup on the hot path (``WeakKeyDictionary.get`` allocates a weakref).
_BY_TASK_ID: dict[int, TaskEntity] = {}

STACK_LIMIT = 24

_ASYNCIO_DIR = os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep
_PKG_DIR = _registry._PKG_DIR
_PEEP_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_peep.py")


class TaskEntity:
    """What peeps knows about one asyncio task.

    Created for every task in automatic mode, so construction is kept minimal:
    rarely-set fields are class-level defaults, the id and coroutine name are
    computed on first use.
    """

    # Class-level defaults: only tasks that fail, get cancelled or are measured
    # pay for these attributes.
    meta: dict[str, Any] | None = None
    finished_mono_ns: int | None = None
    outcome: str | None = None
    exception_type: str | None = None
    cancelled_by: str | None = None
    cancel_requested_mono_ns: int | None = None
    steps = 0
    busy_ns = 0
    longest_step_ns = 0
    last_resumed_mono_ns = 0
    last_yield_mono_ns = 0
    _id: str | None = None
    _coro_name: str | None = None
    #: The task's name when it finished (``Task.get_name()``), for when the
    #: task object is gone.
    _name_at_finish: str | None = None
    #: A finished task's description: (what it depends on, its node with the
    #: node's JSON, its edges).  Reused by every later snapshot that shows it.
    _finished_description: tuple[tuple[Any, ...], Node, list[Edge]] | None = None

    def __init__(
        self,
        task: asyncio.Future[Any],
        name: str | None,
        *,
        tracked: bool,
        location: Location | None,
        parent_id: str | None,
        meta: dict[str, Any] | None = None,
        source: str = "first_sight",
    ) -> None:
        self.explicit_name = name
        self.tracked = tracked
        self.source = "spawn_tracked" if tracked else source
        self.location = location
        self.parent_id = parent_id
        if meta:
            self.meta = meta
        self.created_mono_ns = time.monotonic_ns()
        self.task_id = id(task)
        self.task_ref: weakref.ref[asyncio.Future[Any]] = weakref.ref(task, self._collected)

    @property
    def id(self) -> str:
        node_id = self._id
        if node_id is None:
            node_id = self._id = new_id("task")
        return node_id

    @id.setter
    def id(self, value: str) -> None:
        self._id = value

    @property
    def coro_name(self) -> str:
        name = self._coro_name
        if name is None:
            task = self.task_ref()
            # Never ask a finished task for its coroutine: on 3.12.0/3.12.1 that
            # crashes the interpreter for eager tasks (the slot is cleared).
            if task is None or task.done():
                return "?"
            get_coro = getattr(task, "get_coro", None)
            coro = get_coro() if get_coro is not None else None
            name = getattr(coro, "__qualname__", None) or type(coro).__name__
            self._coro_name = name
        return name

    @coro_name.setter
    def coro_name(self, value: str) -> None:
        self._coro_name = value

    # Runs in whichever thread drops the last reference to the task.
    def _collected(self, _ref: object) -> None:
        if _BY_TASK_ID.get(self.task_id) is self:
            _BY_TASK_ID.pop(self.task_id, None)
        if self.finished_mono_ns is None:
            REGISTRY.tasks.pop(self.task_id, None)  # type: ignore[call-overload]

    def _on_done(self, task: asyncio.Future[Any]) -> None:
        try:
            self.finished_mono_ns = time.monotonic_ns()
            if self.explicit_name is None and isinstance(task, asyncio.Task):
                # Kept for when the task object, which holds the name, is
                # garbage: often before a snapshot describes it finished.
                self._name_at_finish = task.get_name()
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
            REGISTRY.tasks.pop(self.task_id, None)  # type: ignore[call-overload]
            REGISTRY.finished.append(self)
            # Plain completions are not events (they would flood the ring buffer).
            if self.outcome == "failed":
                REGISTRY.emit(self.id, "task.run.failed", {"exception_type": self.exception_type})
            elif self.outcome == "cancelled":
                REGISTRY.emit(self.id, "task.run.cancelled",
                              {"cancelled_by": self.cancelled_by} if self.cancelled_by else None)
        except Exception as exc:
            REGISTRY.part_failed("task completion", exc)

    @property
    def name(self) -> str:
        """The ``spawn_tracked`` name, a custom ``Task.get_name()``, else the
        coroutine's qualified name."""
        return self.label(self.task_ref())

    @name.setter
    def name(self, value: str) -> None:
        self.explicit_name = value

    def label(self, task: asyncio.Future[Any] | None) -> str:
        if self.explicit_name is not None:
            return self.explicit_name
        task_name: str | None
        if task is not None and isinstance(task, asyncio.Task):
            task_name = task.get_name()
        else:
            task_name = self._name_at_finish
        if task_name is not None and not task_name.startswith("Task-"):
            return task_name
        return self.coro_name

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
        return _format_stack(self._frames(self.task_ref()))

    def _frames(self, task: Any) -> list[FrameType]:
        if (task is None or self.outcome is not None or not isinstance(task, asyncio.Task)
                or task.done()):
            return []
        return _await_frames(task.get_coro())

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge], list[Node]]:
        task = self.task_ref()
        if self.outcome is not None:
            cached = self._finished_description
            # Most finished tasks are garbage already: then nothing but the
            # redaction patterns can change their node (no rename, no cancel).
            if task is None and cached is not None and cached[0][-1] is _redact.REDACTOR:
                return cached[1], cached[2], []
            return self._describe_finished(task, now)
        return self._describe(task, now)

    def _describe_finished(self, task: asyncio.Future[Any] | None,
                           now: Clock) -> tuple[Node, list[Edge], list[Node]]:
        """A finished task no longer changes, but it is shown in every snapshot
        for minutes (``finished_task_max_age_ns``): in a busy service most task
        nodes are finished ones.  Its durations are as of when it finished
        (``age_ns`` is its lifetime), so its node is the same in every
        snapshot: it is described, scrubbed and encoded once, its edges too
        (:class:`~peeps._reply_encoder.Encoded`), and the same node and edges
        are given to every later snapshot.  What could still change -- the name
        (``Task.set_name``), meta, the parent found late, the redaction
        patterns -- is the cache's key; once the task object is garbage (most
        finished tasks, by the next snapshot) only the patterns can, and
        :meth:`_peeps_describe` checks just those."""
        redactor = _redact.REDACTOR
        key = (self.label(task), self.meta, self.location, self.parent_id, self.tracked,
               self.source, self.cancelled_by, redactor)
        cached = self._finished_description
        if cached is not None and cached[0] == key:
            return cached[1], cached[2], []
        node, edges, extra = self._describe(task, now)
        node["attrs"] = redactor.scrub(node["attrs"])
        encoded = Encoded.of(node)
        if encoded is None:  # not encodable: sent the ordinary way, never cached
            return node, edges, extra
        edges = [Encoded.of(edge) or edge for edge in edges]
        self._finished_description = (key, encoded, edges)
        return encoded, edges, extra

    def _spawned_edges(self) -> list[Edge]:
        """The edge from the task that spawned this one, if it is known."""
        if self.parent_id is None:
            return []
        return [{"src": self.parent_id, "dst": self.id, "kind": "spawned", "attrs": {}}]

    def _describe(self, task: asyncio.Future[Any] | None,
                  now: Clock) -> tuple[Node, list[Edge], list[Node]]:
        """The node, edges and extra nodes.  A finished task's durations are
        as of when it finished (its ``age_ns`` is its lifetime)."""
        attrs = base_attrs(self.created_mono_ns, self.location, self.meta, now)
        finished = self.finished_mono_ns
        as_of = now.mono_ns if finished is None else finished
        if finished is not None:
            attrs["age_ns"] = max(0, finished - self.created_mono_ns)
        state = self.state()
        frames = self._frames(task)  # once, for the stack and the await edges
        attrs.update(
            state=state,
            name=self.label(task),
            coro=self.coro_name,
            tracked=self.tracked,
            source=self.source,
            stack=_format_stack(frames),
        )
        if self.steps:
            attrs.update(
                steps=self.steps,
                busy_ns=self.busy_ns,
                longest_step_ns=self.longest_step_ns,
                last_resumed_at_ns=now.wall_of(self.last_resumed_mono_ns),
                since_resumed_ns=max(0, as_of - self.last_resumed_mono_ns),
            )
            if state == "pending" and self.last_yield_mono_ns:
                attrs["waiting_since_ns"] = now.wall_of(self.last_yield_mono_ns)
                attrs["waiting_ns"] = max(0, now.mono_ns - self.last_yield_mono_ns)
        if self.cancel_requested_mono_ns is not None:
            attrs["cancel_requested_at_ns"] = now.wall_of(self.cancel_requested_mono_ns)
            attrs["cancelled_by"] = self.cancelled_by
        if self.finished_mono_ns is not None:
            attrs["finished_at_ns"] = now.wall_of(self.finished_mono_ns)
            attrs["outcome"] = self.outcome
            if self.exception_type:
                attrs["exception_type"] = self.exception_type
        node: Node = {"id": self.id, "kind": "task", "label": attrs["name"], "attrs": attrs}
        edges = self._spawned_edges()
        extra: list[Node] = []
        if task is not None and self.outcome is None:
            try:
                _await_edges(self.id, task, now, edges, extra, frames)
            except Exception as exc:
                REGISTRY.part_failed("describing a task's await chain", exc)
        return node, edges, extra


# -- await chains ----------------------------------------------------------------


def _format_stack(frames: list[FrameType]) -> list[str]:
    return [f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}" for f in frames]


def _await_frames(coro: Any) -> list[FrameType]:
    """The frames of a suspended coroutine chain, outermost first.

    ``Task.get_stack`` only shows the outermost coroutine of a suspended task;
    following ``cr_await`` gives the whole async stack down to the awaited future.
    """
    frames: list[FrameType] = []
    while coro is not None and len(frames) < STACK_LIMIT:
        frame = (getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                 or getattr(coro, "ag_frame", None))
        if frame is not None:
            frames.append(frame)
        nxt = getattr(coro, "cr_await", None)
        if nxt is None:
            nxt = getattr(coro, "gi_yieldfrom", None)
        coro = nxt
    return frames


def _callback_targets(cb: Any) -> list[Any]:
    """Futures a done-callback will complete (closures of gather/wait/shield,
    ``functools.partial`` of wait_for, a TaskGroup's bound method)."""
    found: list[Any] = []
    if isinstance(cb, functools.partial):
        found.extend(a for a in cb.args if isinstance(a, asyncio.Future))
        cb = cb.func
    owner = getattr(cb, "__self__", None)
    if isinstance(owner, asyncio.TaskGroup):
        found.append(owner)
        return found
    for cell in getattr(cb, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, asyncio.Future):
            found.append(value)
    return found


class _CompleterIndex:
    """Built once per snapshot: future id -> the live tasks whose completion
    feeds it (gather children, ``wait`` sets, shielded tasks, TaskGroup members)."""

    __slots__ = ("clock", "emitted", "feeds", "groups")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.feeds: dict[int, list[TaskEntity]] = {}
        # Weak: the index lives until the next snapshot and must not keep
        # finished task groups alive.
        self.groups: dict[int, weakref.ref[asyncio.TaskGroup]] = {}
        self.emitted: set[str] = set()
        for entity in list(REGISTRY.tasks.copy().values()):
            if not isinstance(entity, TaskEntity):
                continue
            task = entity.task_ref()
            if task is None:
                continue
            for cb in list(getattr(task, "_callbacks", None) or ()):
                if isinstance(cb, tuple):
                    cb = cb[0]
                for target in _callback_targets(cb):
                    if isinstance(target, asyncio.TaskGroup):
                        fut = getattr(target, "_on_completed_fut", None)
                        if fut is None:
                            continue
                        self.groups[id(fut)] = weakref.ref(target)
                        target = fut
                    self.feeds.setdefault(id(target), []).append(entity)


_index: _CompleterIndex | None = None


def _completer_index(now: Clock) -> _CompleterIndex:
    global _index
    index = _index
    if index is None or index.clock is not now:
        index = _index = _CompleterIndex(now)
    return index


def _future_label(fut: Any, frames: list[FrameType]) -> tuple[str, str]:
    """(kind, label) for a future a task is blocked on."""
    name = type(fut).__name__
    if name == "_GatheringFuture":
        return "group", f"gather({len(getattr(fut, '_children', ()) or ())})"
    if frames:
        code = frames[-1].f_code
        qual = getattr(code, "co_qualname", code.co_name)
        return "future", f"future in {qual}"
    return "future", name


def _await_edges(
    src_id: str, task: asyncio.Future[Any], now: Clock, edges: list[Edge], extra: list[Node],
    frames: list[FrameType] | None = None,
) -> None:
    fut = getattr(task, "_fut_waiter", None)
    if fut is None:
        return
    target = entity_for_task(fut) if isinstance(fut, asyncio.Task) else None
    if target is not None:
        edges.append({"src": src_id, "dst": target.id, "kind": "needs",
                      "attrs": {"op": "await"}})
        return
    if frames is None:
        frames = _await_frames(task.get_coro()) if isinstance(task, asyncio.Task) else []
    # A wait inside a peeps primitive (even when it delegates to the stdlib one
    # it subclasses) is already a ``needs`` edge to that primitive.
    for frame in reversed(frames):
        filename = frame.f_code.co_filename
        if filename.startswith(_ASYNCIO_DIR):
            continue
        if filename.startswith(_PKG_DIR) and filename != _PEEP_FILE:
            return
        break
    index = _completer_index(now)
    fut_id = f"future:{STATE.pid}:f{id(fut)}"
    edges.append({"src": src_id, "dst": fut_id, "kind": "needs", "attrs": {"op": "await"}})
    if fut_id in index.emitted:
        return
    index.emitted.add(fut_id)
    kind, label = _future_label(fut, frames)
    attrs_type = type(fut).__name__
    children: list[TaskEntity] = []
    group_ref = index.groups.get(id(fut))
    group = group_ref() if group_ref is not None else None
    if group is not None:
        kind, label = "group", "TaskGroup"
        attrs_type = "TaskGroup"
        children = [e for t in list(getattr(group, "_tasks", ()) or ())
                    if (e := entity_for_task(t)) is not None]
    elif kind == "group":
        children = [e for t in list(getattr(fut, "_children", ()) or ())
                    if isinstance(t, asyncio.Future) and not t.done()
                    and (e := entity_for_task(t)) is not None]
    else:
        children = index.feeds.get(id(fut), [])
        if children and label.startswith("future in "):
            label = label[len("future in "):]
    attrs: dict[str, Any] = {"meta": {}, "type": attrs_type,
                             "children": len(children)}
    if frames:
        code = frames[-1].f_code
        attrs["meta"]["ctx.location"] = f"{code.co_filename}:{frames[-1].f_lineno}"
    extra.append({"id": fut_id, "kind": kind, "label": label, "attrs": attrs})
    for child in children:
        edges.append({"src": fut_id, "dst": child.id, "kind": "needs", "attrs": {"op": "await"}})


# -- registration ----------------------------------------------------------------


def creation_site() -> Location | None:
    """The first caller frame outside peeps and asyncio (a few frames at most).

    ``sys._getframe(depth)`` materializes only the frame it returns, where
    walking ``f_back`` would materialize every frame on the way (3.11+).
    """
    for depth in range(2, 8):
        try:
            frame = sys._getframe(depth)
        except ValueError:
            return None
        filename = frame.f_code.co_filename
        if not filename.startswith(_PKG_DIR) and not filename.startswith(_ASYNCIO_DIR):
            return (filename, frame.f_lineno)
    return None


def _publish(task: Any, entity: TaskEntity) -> TaskEntity:
    """Map ``task`` to ``entity`` unless another thread just mapped it (a
    snapshot adopting it while its loop sees it first): then that one wins."""
    key = entity.task_id
    existing = _BY_TASK_ID.setdefault(key, entity)  # atomic
    if existing is entity:
        return entity
    if existing.task_ref() is task:
        return existing
    _BY_TASK_ID[key] = entity  # a dead task's entry whose callback has not run yet
    return entity


def register_task(
    task: asyncio.Future[Any],
    name: str | None,
    *,
    tracked: bool,
    location: Location | None,
    parent: TaskEntity | None,
    meta: dict[str, Any] | None = None,
    source: str = "first_sight",
    coro: Any = None,
) -> TaskEntity:
    parent_id = parent.id if parent is not None else None
    spawn = spawn_record(task)
    if spawn is not None and location is None and parent is None:
        location, parent_id, _ = _spawn_info(task, spawn, None)
        source = "auto"
    entity = TaskEntity(
        task, name, tracked=tracked, location=location,
        parent_id=parent_id, meta=meta, source=source,
    )
    if spawn is not None:
        entity.created_mono_ns = spawn[3]
        _copy_cancel(task, entity)
        _copy_tracked(task, spawn, entity)
        if parent_id is None and spawn[0]:
            # Seen before its (lazily tracked) parent was: the next snapshot,
            # which can list the loop's tasks, finds the parent.
            _PENDING_PARENT[entity] = None
    if coro is not None:
        entity._coro_name = getattr(coro, "__qualname__", None) or type(coro).__name__
    elif not task.done():
        _ = entity.coro_name  # resolve it while the task still has its coroutine
    winner = _publish(task, entity)
    if winner is not entity:
        return winner
    # Keyed by ``id(task)``: formatting the string node id costs more than the
    # rest of the registration; it is made on first use.
    REGISTRY.tasks[entity.task_id] = entity  # type: ignore[index]
    if task.done():  # an eager task that finished inside its factory
        entity._on_done(task)
    else:
        task.add_done_callback(entity._on_done)
    return entity


_get_running_loop = asyncio.events._get_running_loop
_current_task = asyncio.current_task
#: loop -> its running task: the dict ``asyncio.current_task`` reads on 3.11-3.13
#: (reading it directly skips two Python-level calls on 3.11).  Later versions
#: keep the running task elsewhere; then ``asyncio.current_task`` is used.
_current_tasks: dict[Any, Any] | None = (
    getattr(asyncio.tasks, "_current_tasks", None) if sys.version_info < (3, 14) else None
)
#: ``_current_tasks.get``, bound once.  Called as ``_current_tasks.get(loop)``
#: in the task factory and the 3.11 lock paths, the method was looked up the
#: generic way with a bound method built on every call (~500 instructions on
#: 3.11, ~900 on 3.12/3.13, counted by callgrind; not at every call site, and
#: we did not find what decides it); the bound method costs ~200 everywhere.
_task_of: Callable[[Any], Any] | None = (
    _current_tasks.get if _current_tasks is not None else None
)

#: The optional C extension (``src/peeps/_speedups.c``), None where the install
#: could not build it; ``PEEPS_SPEEDUPS=0`` keeps peeps' Python code even where
#: it was.  Each user of it keeps its own switch, initialised from this one.
_speedups: ModuleType | None
try:
    from . import _speedups
except ImportError:  # built without a C compiler
    _speedups = None
speedups_wanted: bool = env_flag("PEEPS_SPEEDUPS", True)
#: ``spawn_tracked``'s spawn record in C (``peeps._speedups.record_spawn``), or
#: None (Python).
_record_spawn: Callable[..., None] | None = (
    _speedups.record_spawn
    if _speedups is not None and _current_tasks is not None and speedups_wanted else None
)


#: 3.12+ has a C ``current_task`` (one call); 3.11's is Python, so read the dict.
_C_CURRENT_TASK = sys.version_info >= (3, 12)


def running_task() -> asyncio.Task[Any] | None:
    """The task running on this thread's loop, or ``None`` (never raises)."""
    if _C_CURRENT_TASK:
        try:
            return _current_task()
        except RuntimeError:
            return None
    loop = _get_running_loop()
    if loop is None:
        return None
    if _task_of is not None:
        task: asyncio.Task[Any] | None = _task_of(loop)
        return task
    return _current_task(loop)


def entity_for_task(task: Any) -> TaskEntity | None:
    entity = _BY_TASK_ID.get(id(task))
    if entity is not None and entity.task_ref() is task:
        return entity
    return None


def current_task_entity() -> TaskEntity | None:
    """The entity of the running task, registering an unknown task on first sight."""
    task = running_task()
    if task is None:
        return None
    entity = _BY_TASK_ID.get(id(task))
    if entity is not None and entity.task_ref() is task:
        return entity
    return register_task(task, None, tracked=False, location=None, parent=None)


def current_waiter() -> Any:
    """The entity that is about to wait or hold: the running task, else the
    calling thread (when thread tracking is on), else ``None``.

    On the primitives' waiting paths (their uncontended paths inline their own).
    """
    task = running_task()
    if task is not None:
        entity = _BY_TASK_ID.get(id(task))
        if entity is not None and entity.task_ref() is task:
            return entity
        return register_task(task, None, tracked=False, location=None, parent=None)
    hook = _registry.thread_waiter_hook
    return hook() if hook is not None else None


def current_holder() -> Any:
    """What is running now, as cheaply as possible: the running task object
    itself (no entity lookup), else the calling thread's entity, else ``None``.
    Snapshot code turns it into a node id with :func:`holder_id`."""
    task = running_task()
    if task is not None:
        return task
    hook = _registry.thread_waiter_hook
    return hook() if hook is not None else None


class TrackedTask(asyncio.Task):  # type: ignore[type-arg]
    """``asyncio.Task`` with a ``cancel()`` that records who asked
    (``_peeps_cancel``: the running task or thread, else ``"loop"``, and when).

    Opt-in (:data:`cancel_origin`, on with step statistics): a Python subclass
    of the C ``Task`` loses the C fast paths that test for the exact type --
    every step of it is a method call, and a task awaiting it takes the
    generic future protocol -- which costs ~0.5-1.5 µs per task in a real
    service, more than the rest of lazy tracking together."""

    __slots__ = ("_peeps_cancel",)

    _peeps_cancel: tuple[str, int]

    def cancel(self, msg: Any = None) -> bool:
        try:
            by = current_waiter()
            by_id = by.id if by is not None else "loop"
            now = time.monotonic_ns()
            entity = _BY_TASK_ID.get(id(self))
            if entity is not None and entity.task_ref() is self:
                if entity.cancel_requested_mono_ns is None:
                    entity.cancelled_by = by_id
                    entity.cancel_requested_mono_ns = now
            elif getattr(self, "_peeps_cancel", None) is None:
                self._peeps_cancel = (by_id, now)
        except Exception as exc:
            REGISTRY.part_failed("recording a cancel", exc)
        return super().cancel(msg)


#: Record who cancels a task (``cancelled_by``): the factory and
#: ``spawn_tracked`` then make :class:`TrackedTask` instead of ``asyncio.Task``.
#: ``PEEPS_CANCEL_ORIGIN=1``; step statistics turn it on too.
cancel_origin: bool = env_flag("PEEPS_CANCEL_ORIGIN")


#: A task's spawn record, in its ``_peeps_spawn`` attribute: (parent task id
#: or 0, creating code or None, instruction offset, created mono ns,
#: ``spawn_tracked`` meta or None for an automatically tracked task).
#: ``asyncio.Task`` instances take attributes (the C type has an instance
#: dict), so the record needs no subclass; one tuple is one dict entry.  The C
#: extension stores ``_speedups.SpawnRecord`` instead (unless meta is not
#: empty): one object with C fields that indexes and unpacks as this tuple,
#: its integers made when read.
SpawnRecord = tuple[int, Any, int, int, "dict[str, Any] | None"]


def spawn_record(task: Any) -> SpawnRecord | None:
    """What the lean factory or ``spawn_tracked`` stored on ``task``, if anything."""
    # getattr with a default: a plain task without the attribute raises no
    # exception internally (a try/except would build one per task).
    record: SpawnRecord | None = getattr(task, "_peeps_spawn", None)
    return record


#: (id(code), offset) -> (code, line): a bounded cache of decoded creation lines.
_LINES: dict[tuple[int, int], tuple[Any, int]] = {}


def line_of(code: Any, lasti: int) -> int:
    """The source line of instruction offset ``lasti`` in ``code`` (what
    ``frame.f_lineno`` would have said)."""
    key = (id(code), lasti)
    hit = _LINES.get(key)
    if hit is not None and hit[0] is code:
        return hit[1]
    line: int = code.co_firstlineno
    for start, end, lineno in code.co_lines():
        if start <= lasti < end:
            if lineno is not None:
                line = lineno
            break
    if len(_LINES) >= 4096:
        _LINES.clear()
    _LINES[key] = (code, line)
    return line


def _spawn_info(task: Any, spawn: SpawnRecord,
                by_id: dict[int, Any] | None) -> tuple[Location | None, str | None, int]:
    """(location, parent node id, created mono ns) from a task's spawn record."""
    parent_key, code, lasti, created, _ = spawn
    location: Location | None = ((code.co_filename, line_of(code, lasti))
                                 if code is not None else None)
    parent_id: str | None = None
    if parent_key:
        # An id can be reused once its task is gone; a task created after this
        # one cannot be its parent, so the creation times disambiguate.
        parent_entity = _BY_TASK_ID.get(parent_key)
        if parent_entity is not None and parent_entity.created_mono_ns <= created:
            parent_id = parent_entity.id
        elif by_id is not None and parent_key in by_id:
            parent_task = by_id[parent_key]
            parent_spawn = spawn_record(parent_task)
            if parent_spawn is None or parent_spawn[3] <= created:
                parent_id = adopt_task(parent_task, by_id).id
    return location, parent_id, created


def _copy_cancel(task: Any, entity: TaskEntity) -> None:
    cancel = getattr(task, "_peeps_cancel", None)
    if cancel is not None:
        entity.cancelled_by, entity.cancel_requested_mono_ns = cancel


def _copy_tracked(task: Any, spawn: SpawnRecord, entity: TaskEntity) -> None:
    """A lazily spawned ``spawn_tracked`` task: its name, meta and source."""
    meta = spawn[4]
    if meta is not None:
        entity.tracked = True
        entity.source = "spawn_tracked"
        if entity.explicit_name is None:
            entity.explicit_name = task.get_name()
        if meta:
            entity.meta = meta


def adopt_task(task: asyncio.Future[Any], by_id: dict[int, Any] | None = None) -> TaskEntity:
    """The entity for ``task``, registering it if needed, from any thread (the
    done callback is added on the task's own loop).  ``by_id`` (live tasks by
    ``id``) lets a lazily tracked task's parent be found."""
    entity = entity_for_task(task)
    if entity is not None:
        return entity
    spawn = spawn_record(task)
    parent_pending = False
    if spawn is not None:
        location, parent_id, created = _spawn_info(task, spawn, by_id)
        # Its parent not found yet (no entity, and no task list to find it
        # in): the next snapshot, which lists the loop's tasks, links it.
        parent_pending = parent_id is None and bool(spawn[0])
        entity = TaskEntity(task, None, tracked=False, location=location, parent_id=parent_id,
                            source="auto")
        entity.created_mono_ns = created
        _copy_cancel(task, entity)
        _copy_tracked(task, spawn, entity)
    else:
        entity = TaskEntity(task, None, tracked=False, location=None, parent_id=None)
    if not task.done():
        _ = entity.coro_name
    winner = _publish(task, entity)
    if winner is not entity:
        return winner
    if parent_pending:
        _PENDING_PARENT[entity] = None
    REGISTRY.tasks[entity.task_id] = entity  # type: ignore[index]
    batch: dict[asyncio.AbstractEventLoop, list[tuple[Any, TaskEntity]]] | None = getattr(
        _batch_local, "watches", None)
    if batch is not None:
        batch.setdefault(task.get_loop(), []).append((task, entity))
    else:
        # A closed loop raises RuntimeError: then the task will never finish anyway.
        with contextlib.suppress(RuntimeError):
            task.get_loop().call_soon_threadsafe(_watch_done, task, entity)
    return entity


def _watch_done(task: asyncio.Future[Any], entity: TaskEntity) -> None:
    if task.done():
        entity._on_done(task)
    else:
        task.add_done_callback(entity._on_done)


def _watch_all_done(pairs: list[tuple[Any, TaskEntity]]) -> None:
    for task, entity in pairs:
        try:
            _watch_done(task, entity)
        except Exception as exc:  # runs on the host's loop: never raise into it
            REGISTRY.part_failed("watching an adopted task", exc)


#: Per thread: the adoptions whose done callbacks wait to be sent to their loops.
_batch_local = threading.local()


def batched_watches(steps: Steps[R]) -> Steps[R]:
    """Run ``steps`` (yielding what they yield) so that the tasks they adopt
    have their done callbacks added on their loops by one
    ``call_soon_threadsafe`` per loop, at the end.

    Each such call writes to the loop's self-pipe and so wakes the loop: about
    18 µs of the caller's CPU apiece in the loaded benchmark service, where a
    snapshot adopts ~55 tasks (what started since the last one).  A snapshot
    runs its description through this, so it wakes each loop once.

    The batch is this thread's only while a step runs: between steps other
    code may run on the same thread (the event loop, when the snapshot runs
    there), and the steps may go on on another thread."""
    watches: dict[asyncio.AbstractEventLoop, list[tuple[Any, TaskEntity]]] = {}
    try:
        while True:
            outer = getattr(_batch_local, "watches", None)
            # Nested in another batch on this thread: that one sends.
            _batch_local.watches = watches if outer is None else outer
            try:
                marker = next(steps)
            except StopIteration as stop:
                result: R = stop.value
                return result
            finally:
                _batch_local.watches = outer
            yield marker
    finally:
        for loop, pairs in watches.items():
            # A closed loop raises RuntimeError: then its tasks will never finish anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_watch_all_done, pairs)


def id_of(entity: Any) -> str | None:
    """An entity's node id, or ``None`` for no entity."""
    return entity.id if entity is not None else None


def holder_id(holder: Any) -> str | None:
    """The node id of something :func:`current_holder` returned."""
    if holder is None:
        return None
    if isinstance(holder, asyncio.Future):
        try:
            return adopt_task(holder).id
        except Exception as exc:
            REGISTRY.part_failed("resolving a holder task", exc)
            return None
    node_id: str | None = getattr(holder, "id", None)
    return node_id


def _waiter_id(waiter: Any) -> str | None:
    """:func:`holder_id` for ``WaitSet``: every waiting task of every primitive
    is named at every snapshot, and by then (the snapshot adopts live tasks
    first) it nearly always has its entity -- one dict lookup, inlined."""
    entity = _BY_TASK_ID.get(id(waiter))
    if entity is not None and entity.task_ref() is waiter:
        return entity._id or entity.id
    return holder_id(waiter)


# Waiters recorded as the task itself (see ``WaitSet``) are named this way.
_registry.waiter_id_hook = _waiter_id


#: ``spawn_tracked`` registers lazily (see :func:`spawn_tracked`).  False while
#: step statistics are on, or with ``PEEPS_EAGER_TASKS=1``.
lazy_spawn: bool = not env_flag("PEEPS_EAGER_TASKS")

#: ``id(loop)`` -> weak reference, for loops with lazily spawned tracked tasks:
#: each snapshot adopts those loops' tracked tasks (:func:`adopt_lazy_tracked`).
_LAZY_LOOPS: dict[int, weakref.ref[asyncio.AbstractEventLoop]] = {}
#: The weak reference in ``_LAZY_LOOPS`` of the loop ``spawn_tracked`` last
#: spawned on.
_last_lazy_loop: list[weakref.ref[asyncio.AbstractEventLoop] | None] = [None]
_getframe = sys._getframe
_monotonic_ns = time.monotonic_ns


def _register_lazy_loop(
        loop: asyncio.AbstractEventLoop) -> weakref.ref[asyncio.AbstractEventLoop] | None:
    """Make ``loop``'s lazily spawned tracked tasks known to the snapshot; its
    weak reference, or ``None`` for a loop type without weak references."""
    key = id(loop)

    def dropped(ref: weakref.ref[asyncio.AbstractEventLoop]) -> None:
        _drop_lazy_loop(key, ref)

    try:
        ref = _LAZY_LOOPS[key] = weakref.ref(loop, dropped)
    except TypeError:
        return None
    remember_loop(loop)  # a loop with tracked tasks can run snapshot work
    return ref


def _drop_lazy_loop(key: int, ref: weakref.ref[Any]) -> None:
    if _LAZY_LOOPS.get(key) is ref:
        _LAZY_LOOPS.pop(key, None)


#: Entities registered on first sight whose parent had no entity yet (an
#: insertion-ordered set; weak so a dropped task does not linger here).
_PENDING_PARENT: weakref.WeakKeyDictionary[TaskEntity, None] = weakref.WeakKeyDictionary()


def _resolve_pending_parents() -> None:
    """Link entities seen before their parent to that parent (adopting it)."""
    by_loop: dict[int, dict[int, Any]] = {}
    for entity in list(_PENDING_PARENT.copy()):
        _PENDING_PARENT.pop(entity, None)
        task = entity.task_ref()
        spawn = spawn_record(task)
        if task is None or spawn is None or entity.parent_id is not None:
            continue
        loop = task.get_loop()
        by_id = by_loop.get(id(loop))
        if by_id is None:
            try:
                by_id = by_loop[id(loop)] = {id(t): t for t in list(asyncio.all_tasks(loop))}
            except Exception as exc:
                REGISTRY.part_failed("listing a loop's tasks", exc)
                continue
        entity.parent_id = _spawn_info(task, spawn, by_id)[1]


def adopt_lazy_tracked() -> Iterator[None]:
    """Give every live lazily spawned tracked task its entity, and link tasks
    seen before their parents (called by each snapshot before anything is
    described).  Steps: yields every :data:`_ADOPT_SLICE` tasks."""
    if _PENDING_PARENT:
        _resolve_pending_parents()
    for ref in list(_LAZY_LOOPS.copy().values()):
        loop = ref()
        if loop is None or loop.is_closed():
            continue
        try:
            tasks = list(asyncio.all_tasks(loop))
        except Exception as exc:
            REGISTRY.part_failed("listing a loop's tasks", exc)
            continue
        yield None
        by_id: dict[int, asyncio.Task[Any]] = {}
        for start in range(0, len(tasks), _ADOPT_SLICE):
            by_id.update({id(t): t for t in tasks[start:start + _ADOPT_SLICE]})
            yield None
        for i, task in enumerate(tasks):
            if not i % _ADOPT_SLICE:
                yield None
            spawn = getattr(task, "_peeps_spawn", None)
            if spawn is not None and spawn[4] is not None and entity_for_task(task) is None:
                try:
                    adopt_task(task, by_id)
                except Exception as exc:
                    REGISTRY.part_failed("adopting a task", exc)


#: Tasks per step of :func:`adopt_lazy_tracked`.
_ADOPT_SLICE = 256


def spawn_tracked(
    name: str,
    coro: Coroutine[Any, Any, T],
    **meta: Any,
) -> asyncio.Task[T]:
    """Create a task on the running loop that appears in the graph under ``name``.

    The task records who spawned it (a ``spawned`` edge), where (``ctx.location``),
    and any ``meta`` given.  With peeps disabled this is ``loop.create_task``.

    Registration is lazy: the task carries its name, parent, site and meta in
    slots, and gets its graph entity when first seen -- at a snapshot, or when
    it waits on a primitive that registers its waiters.  So spawning costs
    little more than ``create_task``; the price is that a task that starts and finishes between
    two snapshots leaves no trace.  ``PEEPS_EAGER_TASKS=1`` registers every
    tracked task at creation instead (finished ones are then kept for a while).
    """
    loop = asyncio.get_running_loop()
    if not STATE.enabled:
        return loop.create_task(coro, name=name)
    try:
        # asyncio's loops keep it here; reading it skips a method call.
        factory = loop._task_factory  # type: ignore[attr-defined]
    except AttributeError:  # other loop implementations
        factory = loop.get_task_factory()
    # The automatic factory's lean function makes the task itself, so it can
    # be built here directly.
    if lazy_spawn and (factory is None or hasattr(factory, "peeps_factory")):
        # Most spawns are on the loop of the previous one: one weak-reference
        # call instead of id(), a dict lookup and the call.
        ref = _last_lazy_loop[0]
        if ref is None or ref() is not loop:
            ref = _LAZY_LOOPS.get(id(loop))
            if ref is None or ref() is not loop:
                ref = _register_lazy_loop(loop)
                if ref is None:
                    return _spawn_eagerly(name, coro, meta, loop)
            _last_lazy_loop[0] = ref
        # What ``loop.create_task`` does without a factory, and what our own
        # lean factory does.
        task: asyncio.Task[T] = (TrackedTask if cancel_origin else asyncio.Task)(
            coro, loop=loop, name=name)
        try:
            if _record_spawn is not None:  # the same record, in C
                _record_spawn(task, _current_tasks, loop, meta, _monotonic_ns)
            else:
                parent = _task_of(loop) if _task_of is not None else _current_task(loop)
                frame = _getframe(1)
                task._peeps_spawn = (  # type: ignore[attr-defined]
                    id(parent) if parent is not None else 0, frame.f_code, frame.f_lasti,
                    _monotonic_ns(), meta)
        except Exception as exc:
            REGISTRY.part_failed("spawn_tracked", exc)
        return task
    return _spawn_eagerly(name, coro, meta, loop)


def _spawn_eagerly(name: str, coro: Coroutine[Any, Any, T], meta: dict[str, Any],
                   loop: asyncio.AbstractEventLoop) -> asyncio.Task[T]:
    """``spawn_tracked`` with the entity made now (another task factory is
    installed, or ``PEEPS_EAGER_TASKS=1``)."""
    location = capture_location()
    parent = current_task_entity()
    task = loop.create_task(coro, name=name)
    entity = entity_for_task(task)
    if entity is None:
        register_task(task, name, tracked=True, location=location, parent=parent,
                      meta=meta or None, coro=coro)
    else:
        # An automatic task factory saw it first; give it the caller's name.
        entity.name = name
        entity.tracked = True
        entity.source = "spawn_tracked"
        entity.location = location
        if meta:
            entity.meta = meta
    return task


def _forget_all() -> None:
    _BY_TASK_ID.clear()
    _LAZY_LOOPS.clear()
    _last_lazy_loop[0] = None
    _PENDING_PARENT.clear()
