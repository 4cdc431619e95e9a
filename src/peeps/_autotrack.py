"""Automatic mode: a task factory that tracks every asyncio task, and opt-in
per-step statistics.

The factory chains to whatever factory the loop already had (including
``asyncio.eager_task_factory``) and is removed by restoring that factory.  For
loops that do not exist yet, two light hooks install it as loops appear:
``asyncio.new_event_loop`` (so ``asyncio.run``'s main task is tracked) and
``asyncio.events._set_running_loop`` (any loop that starts running, however
it was created; through ``_loophooks``).  Step statistics wrap ``asyncio.events.Handle._run``, the one
place every task step passes through on the standard loops.
"""

from __future__ import annotations

import asyncio
import asyncio.events as _events
import sys
import time
import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any, Final

from . import _loophooks
from . import _tasks as _tasks_module
from ._config import STATE, env_flag
from ._registry import REGISTRY, Clock, base_attrs, new_id
from ._tasks import (
    _BY_TASK_ID,
    TaskEntity,
    TrackedTask,
    _task_of,
    adopt_task,
    creation_site,
    entity_for_task,
    register_task,
)
from .types import Edge, Node

TaskFactory = Callable[..., "asyncio.Future[Any]"]



_ASYNCIO_DIR = _tasks_module._ASYNCIO_DIR

#: Record where each automatically tracked task was created (``ctx.location``).
#: The frame lookup is about a quarter of a plain spawn's cost;
#: ``PEEPS_TASK_SITES=0`` (or setting this False) skips it.
capture_sites: bool = env_flag("PEEPS_TASK_SITES", True)
_getframe = sys._getframe
_Task = asyncio.Task


class PeepsTaskFactory:
    """A loop task factory that tracks every task it creates.

    ``previous`` is the factory that was installed before (``None`` = the
    loop's default); it is called to create the task, so eager factories and
    custom task classes keep working.

    Without a previous factory (the common case) the factory makes a plain
    ``asyncio.Task`` (a :class:`TrackedTask` with ``cancel_origin``) and only
    stores ``(parent id, creation code, offset, created)`` on it: the entity is made when the task is first seen (at
    a snapshot, or when it touches an instrumented primitive).  That keeps
    spawn cheap; the price is that a task that finishes unseen leaves no
    trace.  Chained factories, and step-statistics mode, register every task
    at creation (entity plus done callback), so finished tasks are retained.
    """

    __slots__ = ("_lean", "active", "previous")

    def __init__(self, previous: TaskFactory | None) -> None:
        self.previous = previous
        self._lean: TaskFactory | None = None
        #: False once uninstalled while another factory still chains to us.
        self.active = True

    def __call__(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        previous = self.previous
        if previous is None and not _register_eagerly:
            return self.lean_function()(loop, coro, **kwargs)
        created: asyncio.Future[Any]
        if previous is not None:
            created = previous(loop, coro, **kwargs)
        else:
            created = (TrackedTask if _tasks_module.cancel_origin else _Task)(
                coro, loop=loop, **kwargs)
        self.register(loop, coro, created, kwargs)
        return created

    def register(self, loop: asyncio.AbstractEventLoop, coro: Any, task: Any,
                 kwargs: dict[str, Any]) -> None:
        """Register ``task`` now (chained factories, step statistics)."""
        if STATE.enabled and self.active:
            try:
                if entity_for_task(task) is None:
                    parent = _spawning_entity(loop, task)
                    register_task(task, kwargs.get("name"), tracked=False,
                                  location=creation_site(), parent=parent, source="auto",
                                  coro=coro)
            except Exception as exc:
                REGISTRY.part_failed("automatic task tracking", exc)

    def lean_function(self) -> TaskFactory:
        """What is installed on a loop that had no factory: a plain function (a
        call costs less than an instance's ``__call__``) bound to this state.
        It makes the task and only stores its spawn record."""
        if self._lean is not None:
            return self._lean
        state = self

        def peeps_task_factory(loop: asyncio.AbstractEventLoop, coro: Any,
                               **kwargs: Any) -> Any:
            task = (TrackedTask if _tasks_module.cancel_origin else _Task)(
                coro, loop=loop, **kwargs)
            if _register_eagerly or not state.active or not STATE.enabled:
                state.register(loop, coro, task, kwargs)
                return task
            try:
                parent = _task_of(loop) if _task_of is not None else _safe_current_task(loop)
                code = None
                lasti = -1
                if capture_sites:
                    # Where: frame 0 is us, 1 is loop.create_task, 2 its caller;
                    # _getframe(n) builds just that frame object.  The offset,
                    # not f_lineno: the line is decoded when the task is seen.
                    frame = _getframe(2)
                    code = frame.f_code
                    if code is not _last_site_code[0]:  # a new site: is it asyncio's?
                        if code.co_filename.startswith(_ASYNCIO_DIR):
                            frame = _first_outside_asyncio(3) or frame
                            code = frame.f_code
                        else:
                            _last_site_code[0] = code
                    lasti = frame.f_lasti
                task._peeps_spawn = (  # type: ignore[attr-defined]
                    id(parent) if parent is not None else 0, code, lasti, _monotonic_ns(), None)
            except Exception as exc:
                REGISTRY.part_failed("automatic task tracking", exc)
            return task

        peeps_task_factory.peeps_factory = self  # type: ignore[attr-defined]
        self._lean = _accelerated(self, peeps_task_factory) or peeps_task_factory
        return self._lean


#: The C extension, if it was built (else the Python factory does it all).
_speedups: ModuleType | None = _tasks_module._speedups

#: Use the C factory (``peeps._speedups``) when it was built.  ``PEEPS_SPEEDUPS=0``
#: (or setting this False before tracking starts) keeps the Python one.
use_speedups: bool = _tasks_module.speedups_wanted


def _report_failure(exc: BaseException) -> None:
    REGISTRY.part_failed("automatic task tracking", exc)


def _accelerated(state: PeepsTaskFactory, fallback: TaskFactory) -> TaskFactory | None:
    """The C version of ``fallback`` (the lean Python factory), if it was built.
    It does the common case -- a plain ``asyncio.Task`` and its spawn record --
    and passes every other call to ``fallback`` unchanged."""
    current_tasks = _tasks_module._current_tasks
    if _speedups is None or not use_speedups or current_tasks is None:
        return None
    factory: TaskFactory = _speedups.TaskFactory(
        state=state, fallback=fallback, task_type=_Task,
        current_tasks=current_tasks, autotrack_ns=globals(),
        tasks_ns=vars(_tasks_module), config=STATE, asyncio_dir=_ASYNCIO_DIR,
        monotonic_ns=time.monotonic_ns, on_error=_report_failure)
    return factory


#: The last creation site's code that was not asyncio's: most spawns repeat a
#: site, and an identity test is cheaper than the file-name test.
_last_site_code: list[Any] = [None]


def _first_outside_asyncio(depth: int) -> Any:
    """The first frame from ``depth`` (counted from our caller's caller) whose
    code is not asyncio's (``asyncio.create_task``, ``ensure_future``, ...)."""
    try:
        for d in range(depth + 1, depth + 5):
            frame = _getframe(d)
            if not frame.f_code.co_filename.startswith(_ASYNCIO_DIR):
                return frame
    except ValueError:
        pass
    return None


def factory_state(factory: Any) -> PeepsTaskFactory | None:
    """The :class:`PeepsTaskFactory` behind an installed task factory, if ours."""
    if isinstance(factory, PeepsTaskFactory):
        return factory
    state = getattr(factory, "peeps_factory", None)
    return state if isinstance(state, PeepsTaskFactory) else None


_monotonic_ns = time.monotonic_ns


def _safe_current_task(loop: asyncio.AbstractEventLoop) -> Any:
    try:
        return asyncio.current_task(loop)
    except RuntimeError:
        return None


def _spawning_entity(loop: asyncio.AbstractEventLoop, task: Any) -> TaskEntity | None:
    if _task_of is not None:
        current = _task_of(loop)
    else:
        try:
            current = asyncio.current_task(loop)
        except RuntimeError:
            return None
    if current is None or current is task:  # an eager task is current during its first step
        return None
    entity = _BY_TASK_ID.get(id(current))
    if entity is not None and entity.task_ref() is current:
        return entity
    return register_task(current, None, tracked=False, location=None, parent=None)


# -- per-loop install ------------------------------------------------------------

#: Loops we installed on (weakly): uninstall visits them.
_INSTALLED: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
_OURS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[PeepsTaskFactory]] = (
    weakref.WeakKeyDictionary()
)
_step_stats_on = False
#: Register every task at creation (entity + done callback) instead of lazily.
_register_eagerly = False


class LoopEntity:
    """One event loop peeps installed on, as an ``event_loop`` node.  Describing
    it (first in every snapshot: resources are described before tasks) adopts
    the loop's lazily tracked tasks, so they get their entities in time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._peeps_id = new_id("event_loop")
        self.loop_ref = weakref.ref(loop)
        self.created_mono_ns = time.monotonic_ns()

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        loop = self.loop_ref()
        tasks: list[Any] = []
        if loop is not None and not loop.is_closed():
            try:
                tasks = list(asyncio.all_tasks(loop))
            except Exception as exc:
                REGISTRY.part_failed("listing a loop's tasks", exc)
        if STATE.enabled:
            by_id = {id(t): t for t in tasks}
            for task in tasks:
                if entity_for_task(task) is None:
                    try:
                        adopt_task(task, by_id)
                    except Exception as exc:
                        REGISTRY.part_failed("adopting a task", exc)
        attrs = base_attrs(self.created_mono_ns, None, None, now)
        attrs.update(
            running=bool(loop is not None and loop.is_running()),
            closed=bool(loop is None or loop.is_closed()),
            tasks=len(tasks),
            loop_type=type(loop).__name__ if loop is not None else None,
        )
        node: Node = {"id": self._peeps_id, "kind": "event_loop", "label": "event loop",
                      "attrs": attrs}
        return node, []


#: loop -> its LoopEntity (kept alive by the loop, registered weakly).
_LOOP_ENTITIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopEntity] = (
    weakref.WeakKeyDictionary()
)


#: CPython 3.13.0-3.13.2's ``loop.create_task`` calls ``task.set_name(name)``
#: after any task factory, also when no name was given, so every unnamed task
#: is renamed "None" (python/cpython#130033; 3.13.3 changed the call).
#: Installing our factory would inflict that on the host's tasks, and label
#: them "None" in the graph.
_FACTORY_NAMES_TASKS_NONE: Final = (3, 13, 0) <= sys.version_info[:3] < (3, 13, 3)


def _keep_task_names(loop: asyncio.AbstractEventLoop) -> None:
    """On the 3.13 releases above, give ``loop`` its own ``create_task``: the
    method as 3.12 wrote it, where a factory's task is renamed only when a name
    was given.  The loop is held weakly (no reference cycle to keep a closed
    loop alive until a full collection), and the factory's creation site, two
    frames up, is the same as under asyncio's method."""
    if not (_FACTORY_NAMES_TASKS_NONE and isinstance(loop, asyncio.BaseEventLoop)
            # a loop class's own create_task is theirs to keep
            and type(loop).create_task is asyncio.BaseEventLoop.create_task
            and "create_task" not in vars(loop)):
        return
    loop_ref = weakref.ref(loop)

    def create_task(coro: Any, *, name: str | None = None, context: Any = None) -> Any:
        self: Any = loop_ref()  # alive: this function lives in its __dict__
        self._check_closed()
        factory = self._task_factory
        if factory is None:
            task = asyncio.Task(coro, loop=self, name=name, context=context)
            if task._source_traceback:  # type: ignore[attr-defined]
                del task._source_traceback[-1]  # type: ignore[attr-defined]
            return task
        task = factory(self, coro) if context is None else factory(self, coro, context=context)
        if name is not None:
            task.set_name(name)
        return task

    create_task.peeps_keeps_names = True  # type: ignore[attr-defined]
    setattr(loop, "create_task", create_task)  # noqa: B010 (a method, shadowed)


def _restore_task_naming(loop: asyncio.AbstractEventLoop) -> None:
    own = getattr(loop, "__dict__", {}).get("create_task")
    if getattr(own, "peeps_keeps_names", False):
        delattr(loop, "create_task")


def install_task_factory(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """Install the tracking factory on ``loop`` (default: the running loop),
    chaining to the factory already there.  Tasks that exist already are
    registered too.  Returns ``False`` when it was installed already."""
    if loop is None:
        loop = asyncio.get_running_loop()
    current = loop.get_task_factory()
    if factory_state(current) is not None:
        return False
    factory = PeepsTaskFactory(current)
    loop.set_task_factory(factory.lean_function() if current is None else factory)
    _keep_task_names(loop)
    _INSTALLED.add(loop)
    _OURS.setdefault(loop, []).append(factory)
    if loop not in _LOOP_ENTITIES:
        loop_entity = LoopEntity(loop)
        _LOOP_ENTITIES[loop] = loop_entity
        REGISTRY.track(loop_entity)
    _register_existing(loop)
    return True


def uninstall_task_factory(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Restore the previous factory on ``loop`` (default: every loop peeps
    installed on) and remove the hooks for future loops and step statistics."""
    loops = [loop] if loop is not None else list(_INSTALLED)
    for each in loops:
        current = factory_state(each.get_task_factory())
        if current is not None:
            current.active = False
            each.set_task_factory(current.previous)
        else:
            # Someone installed a factory on top of ours (maybe chaining to it):
            # leave theirs in place; ours, if still called, just passes through.
            for factory in _OURS.get(each, ()):
                factory.active = False
        _restore_task_naming(each)
        _INSTALLED.discard(each)
        loop_entity = _LOOP_ENTITIES.pop(each, None)
        if loop_entity is not None:
            REGISTRY.untrack(loop_entity)
    if loop is None:
        global _register_eagerly
        _register_eagerly = False
        _tasks_module.lazy_spawn = not env_flag("PEEPS_EAGER_TASKS")
        _tasks_module.cancel_origin = env_flag("PEEPS_CANCEL_ORIGIN")
        _remove_loop_hooks()
        disable_step_stats()


def _register_existing(loop: asyncio.AbstractEventLoop) -> None:
    if not STATE.enabled:
        return
    try:
        for task in list(asyncio.all_tasks(loop)):
            if entity_for_task(task) is None:
                register_task(task, None, tracked=False, location=None, parent=None,
                              source="auto")
    except Exception as exc:
        REGISTRY.part_failed("registering existing tasks", exc)


# -- hooks for loops that do not exist yet ---------------------------------------

_orig_new_event_loop: Callable[[], asyncio.AbstractEventLoop] | None = None


def _hooked_new_event_loop() -> asyncio.AbstractEventLoop:
    assert _orig_new_event_loop is not None
    loop = _orig_new_event_loop()
    try:
        install_task_factory(loop)
    except Exception as exc:
        REGISTRY.part_failed("installing the task factory", exc)
    return loop


def _on_loop_start(loop: asyncio.AbstractEventLoop) -> None:
    if factory_state(loop.get_task_factory()) is None:
        install_task_factory(loop)


_LOOP_HOOK: Final = "installing the task factory"


def install_loop_hooks() -> None:
    """Make loops created or started from now on get the tracking factory."""
    global _orig_new_event_loop
    if _orig_new_event_loop is None:
        _orig_new_event_loop = _events.new_event_loop
        _events.new_event_loop = _hooked_new_event_loop
        asyncio.new_event_loop = _hooked_new_event_loop
    _loophooks.on_loop_start(_LOOP_HOOK, _on_loop_start)


def _remove_loop_hooks() -> None:
    global _orig_new_event_loop
    if _orig_new_event_loop is not None:
        _events.new_event_loop = _orig_new_event_loop
        asyncio.new_event_loop = _orig_new_event_loop
        _orig_new_event_loop = None
    _loophooks.remove(_LOOP_HOOK)


def loop_hooks_installed() -> bool:
    return _orig_new_event_loop is not None


def enable_auto(*, step_stats: bool = False) -> None:
    """Track every task: on the running loop now (if any) and on later loops.

    ``step_stats`` also turns on per-step statistics and cancel attribution
    (tasks become ``TrackedTask``, see ``_tasks.cancel_origin``); both cost
    measurable time per task.
    """
    global _register_eagerly
    _register_eagerly = step_stats
    if step_stats:  # step statistics need every task's entity from its first step
        _tasks_module.lazy_spawn = False
        _tasks_module.cancel_origin = True
    install_loop_hooks()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        install_task_factory(loop)
    if step_stats:
        enable_step_stats()


# -- step statistics (opt-in) ------------------------------------------------------

_orig_handle_run: Callable[[asyncio.Handle], None] | None = None


def _timed_handle_run(self: asyncio.Handle) -> None:
    assert _orig_handle_run is not None
    task = getattr(self._callback, "__self__", None)  # type: ignore[attr-defined]
    entity = _BY_TASK_ID.get(id(task)) if task is not None else None
    if entity is None:
        return _orig_handle_run(self)
    start = time.monotonic_ns()
    entity.last_resumed_mono_ns = start
    try:
        return _orig_handle_run(self)
    finally:
        end = time.monotonic_ns()
        step = end - start
        entity.steps += 1
        entity.busy_ns += step
        entity.last_yield_mono_ns = end
        if step > entity.longest_step_ns:
            entity.longest_step_ns = step


def enable_step_stats() -> None:
    """Count steps, busy time and the longest step of every tracked task.

    Wraps ``asyncio.events.Handle._run`` process-wide (every callback on every
    standard loop pays a ``getattr`` and a dict lookup).  Loops that do not use
    ``asyncio.Handle`` (uvloop) are not measured.
    """
    global _orig_handle_run, _step_stats_on
    if _orig_handle_run is None:
        _orig_handle_run = _events.Handle._run
        _events.Handle._run = _timed_handle_run  # type: ignore[method-assign]
    _step_stats_on = True


def disable_step_stats() -> None:
    global _orig_handle_run, _step_stats_on
    if _orig_handle_run is not None:
        _events.Handle._run = _orig_handle_run  # type: ignore[method-assign,assignment]
        _orig_handle_run = None
    _step_stats_on = False


def step_stats_enabled() -> bool:
    return _step_stats_on

