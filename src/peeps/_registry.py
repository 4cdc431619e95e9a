"""The live registry: every instrumented entity, its waiters, and runtime events.

Hot paths (wrappers on the event loop or in threads) only update per-entity
state in place and touch plain dicts.  The collector thread reads the registry
through ``dict.copy()``/``list()`` snapshots, which are atomic under the GIL for
the key types used here, so no lock is ever taken on a hot path.
"""

from __future__ import annotations

import asyncio.events
import collections
import itertools
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from ._config import STATE
from .types import Edge, Node

log = logging.getLogger("peeps")

_PKG_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
#: The frame that runs an event loop's callback (a snapshot slice's, too).
_HANDLE_RUN = asyncio.events.Handle._run.__code__
_next_id = itertools.count(1).__next__
_next_event_id = itertools.count(1).__next__
#: ``Registry.emit_repeated``: the least time between two kept events of one
#: name on one entity.
REPEAT_GAP_NS = 100_000_000

Location = tuple[str, int]


def new_id(kind: str) -> str:
    """A process-unique node id ``{kind}:{pid}:{n}``."""
    return f"{kind}:{STATE.pid}:{_next_id()}"


def capture_location() -> Location | None:
    """The first caller frame outside the peeps package, as (filename, line).

    Walks a handful of frames at most: creation sites must stay cheap.
    """
    frame: FrameType | None = sys._getframe(1)
    for _ in range(12):
        if frame is None:
            return None
        filename = frame.f_code.co_filename
        if not filename.startswith(_PKG_DIR):
            return (filename, frame.f_lineno)
        frame = frame.f_back
    return None


def format_location(location: Location | None) -> str | None:
    if location is None:
        return None
    return f"{location[0]}:{location[1]}"


class Waiter(Protocol):
    """Something that can wait: a task (or, later, a thread)."""

    id: str


class Describable(Protocol):
    """An entity that can describe itself into nodes and edges at snapshot time."""

    _peeps_id: str

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]: ...


class Clock:
    """The capture instant, both as wall time and monotonic time."""

    __slots__ = ("_frames", "mono_ns", "wall_ns")

    def __init__(self) -> None:
        self.wall_ns = time.time_ns()
        self.mono_ns = time.monotonic_ns()
        self._frames: dict[int, FrameType] | None = None

    def thread_frames(self) -> dict[int, FrameType]:
        """``sys._current_frames()``, read once per capture: it walks every
        thread, so describing each thread with its own call cost a snapshot
        ~75 µs per thread under load.  Held only as long as this clock is."""
        # No local holds the dict: this frame is in it, and the cycle would
        # outlive drop_frames.
        if self._frames is None:
            self._frames = sys._current_frames()
            # This thread is in the middle of taking the snapshot: show where
            # its host code is (an event loop between callbacks, a caller of
            # collect_graph), not peeps' own frames, nor the callback that
            # runs them on a loop.
            me = threading.get_ident()
            host = self._frames.get(me)
            while host is not None and host.f_code.co_filename.startswith(_PKG_DIR):
                host = host.f_back
            if host is not None and host.f_code is _HANDLE_RUN:
                host = host.f_back
            if host is not None:
                self._frames[me] = host
            del host
        return self._frames

    def drop_frames(self) -> None:
        """Let go of the frames :meth:`thread_frames` read.  The caller's own
        frame is among them, and holds this clock: a cycle that would keep every
        thread's frames, and their locals, alive until a garbage collection."""
        self._frames = None

    def wall_of(self, mono_ns: int) -> int:
        """Convert a monotonic instant recorded earlier into wall-clock ns."""
        return self.wall_ns - (self.mono_ns - mono_ns)


class WaitSet:
    """Who waits on one resource, for what, since when.

    Keys are waiter entities, or the waiting task itself as
    ``current_holder()`` gives it (no entity lookup on the waiting path; named
    when described); values are ``(op, since_mono_ns)``.  A resource turns
    each entry into a ``needs`` edge ``waiter -> resource``.
    """

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        #: Keys: a ``Waiter`` entity or a task object (``Any``: the registry
        #: does not import asyncio's types).
        self._waiting: dict[Any, tuple[str, int]] = {}

    def add(self, waiter: Any, op: str, since_mono_ns: int | None = None) -> None:
        """``since_mono_ns``: the caller's clock reading of the moment, if it has one."""
        if waiter is not None:
            self._waiting[waiter] = (op, since_mono_ns if since_mono_ns is not None
                                     else time.monotonic_ns())

    def remove(self, waiter: Any) -> None:
        if waiter is not None:
            self._waiting.pop(waiter, None)

    def __len__(self) -> int:
        return len(self._waiting)

    def counts(self) -> dict[str, int]:
        """Waiters per operation, in one pass (most primitives have none)."""
        if not self._waiting:
            return {}
        out: dict[str, int] = {}
        for op, _ in self._waiting.copy().values():
            out[op] = out.get(op, 0) + 1
        return out

    def needs_edges(self, dst_id: str, now: Clock) -> list[Edge]:
        if not self._waiting:
            return []
        name = waiter_id_hook
        edges: list[Edge] = []
        for waiter, (op, since) in self._waiting.copy().items():
            src = waiter.id if name is None else name(waiter)
            if src is None:
                continue
            edges.append({
                "src": src,
                "dst": dst_id,
                "kind": "needs",
                "attrs": {
                    "op": op,
                    "since_ns": now.wall_of(since),
                    "waited_ns": max(0, now.mono_ns - since),
                },
            })
        return edges


class HoldSet:
    """Who holds one resource (a lock, a permit, a once-cell's init) since when.

    Keys are holder entities (tasks or threads); values are ``(count, since_mono_ns)``
    so re-entrant holds and multi-permit holders are counted.  Each entry becomes
    a ``holds`` edge ``holder -> resource``.
    """

    __slots__ = ("_holding",)

    def __init__(self) -> None:
        self._holding: dict[Waiter, tuple[int, int]] = {}

    def add(self, holder: Waiter | None) -> None:
        if holder is None:
            return
        count, since = self._holding.get(holder, (0, 0))
        self._holding[holder] = (count + 1, since if count else time.monotonic_ns())

    def remove(self, holder: Waiter | None) -> None:
        if holder is None:
            return
        entry = self._holding.get(holder)
        if entry is None:
            return
        if entry[0] <= 1:
            self._holding.pop(holder, None)
        else:
            self._holding[holder] = (entry[0] - 1, entry[1])

    def __len__(self) -> int:
        return len(self._holding)

    def holders(self) -> list[Waiter]:
        return list(self._holding.copy())

    def holds_edges(self, dst_id: str, now: Clock) -> list[Edge]:
        return [
            {
                "src": holder.id,
                "dst": dst_id,
                "kind": "holds",
                "attrs": {"count": count, "since_ns": now.wall_of(since),
                          "held_ns": max(0, now.mono_ns - since)},
            }
            for holder, (count, since) in self._holding.copy().items()
        ]


#: Set by the threads module: returns the entity of the calling thread when it
#: is not inside an asyncio task (so threads can wait on and hold resources).
thread_waiter_hook: Callable[[], Waiter | None] | None = None
#: Set by the tasks module: the node id of a waiter, which may be a task
#: object (adopted when first described) or an entity.
waiter_id_hook: Callable[[Any], str | None] | None = None


class Registry:
    """All live entities of this process."""

    def __init__(self) -> None:
        # Resources (channels, locks, ...) are held weakly: dropping one removes it.
        self._resources: dict[str, weakref.ref[Any]] = {}
        # Live task/thread entities are held strongly until they finish.
        self.tasks: dict[str, Any] = {}
        # Finished tasks, newest last; bounded by count here and by age at snapshot.
        self.finished: collections.deque[Any] = collections.deque(
            maxlen=STATE.finished_task_retention
        )
        self.events: collections.deque[tuple[int, int, str, str, str | None, dict[str, Any]]] = (
            collections.deque(maxlen=STATE.event_buffer_size)
        )
        self._failed_parts: set[str] = set()

    # -- resources -------------------------------------------------------
    def track(self, obj: Describable) -> None:
        key = obj._peeps_id
        resources = self._resources

        def _gone(_: object, key: str = key) -> None:
            resources.pop(key, None)

        resources[key] = weakref.ref(obj, _gone)

    def untrack(self, obj: Describable) -> None:
        self._resources.pop(obj._peeps_id, None)

    def live_resources(self) -> list[Any]:
        out = []
        for ref in list(self._resources.copy().values()):
            obj = ref()
            if obj is not None:
                out.append(obj)
        return out

    # -- events ----------------------------------------------------------
    def emit(
        self,
        entity_id: str,
        name: str,
        attrs: dict[str, Any] | None = None,
        parent_entity_id: str | None = None,
    ) -> None:
        self.events.append(
            (_next_event_id(), time.time_ns(), entity_id, name, parent_entity_id, attrs or {})
        )

    def repeat_due(self, owner: Any, name: str, now: int | None = None) -> bool:
        """Whether ``owner``'s repeated event ``name`` is due (``REPEAT_GAP_NS``
        since the last one kept); if not, it is counted as dropped here.  A hot
        path asks first, and builds the event's attributes and calls
        :meth:`emit_repeated` only for the one in many that is due.  ``now``:
        the caller's ``time.monotonic_ns()`` reading, if it has one."""
        gates: dict[str, list[int]] | None = getattr(owner, "_peeps_gates", None)
        gate = gates.get(name) if gates is not None else None
        if gate is None:
            return True
        if (time.monotonic_ns() if now is None else now) - gate[0] >= REPEAT_GAP_NS:
            return True
        gate[1] += 1
        return False

    def emit_repeated(
        self,
        owner: Any,
        name: str,
        attrs: dict[str, Any] | None = None,
        parent_entity_id: str | None = None,
    ) -> None:
        """An event a hot path may repeat thousands of times a second (a
        contended lock, a full channel): at most one per ``owner`` and ``name``
        every ``REPEAT_GAP_NS``.  The next one kept carries ``"repeats"``: how
        many were dropped since the last one kept.  Without this a busy
        primitive would flush the ring buffer every few milliseconds, pushing
        out the rare events worth reading and making every snapshot carry a
        full buffer.  The gate lives on the owner, so it goes with it."""
        if not self.repeat_due(owner, name):
            return
        now = time.monotonic_ns()
        gates: dict[str, list[int]] | None = getattr(owner, "_peeps_gates", None)
        if gates is None:
            gates = {}
            try:
                owner._peeps_gates = gates
            except AttributeError:  # an owner with fixed slots: no gate
                self.emit(owner._peeps_id, name, attrs, parent_entity_id)
                return
        gate = gates.get(name)
        if gate is None:
            gates[name] = [now, 0]
        else:
            if gate[1]:
                attrs = dict(attrs or (), repeats=gate[1])
            gate[0] = now
            gate[1] = 0
        self.emit(owner._peeps_id, name, attrs, parent_entity_id)

    # -- failure containment ---------------------------------------------
    def part_failed(self, part: str, exc: BaseException) -> None:
        """Log an instrumentation failure once per part; the host never sees it."""
        if part not in self._failed_parts:
            self._failed_parts.add(part)
            log.warning("peeps: %s failed and is skipped from now on: %r", part, exc)

    def clear(self) -> None:
        """Forget everything (tests and fork children)."""
        self._resources.clear()
        self.tasks.clear()
        self.finished.clear()
        self.events.clear()


REGISTRY = Registry()


def base_attrs(
    created_mono_ns: int,
    location: Location | None,
    meta: dict[str, Any] | None,
    now: Clock,
) -> dict[str, Any]:
    """Attributes every node carries."""
    node_meta: dict[str, Any] = dict(meta) if meta else {}
    loc = format_location(location)
    if loc is not None:
        node_meta["ctx.location"] = loc
    return {
        "meta": node_meta,
        "created_at_ns": now.wall_of(created_mono_ns),
        "age_ns": max(0, now.mono_ns - created_mono_ns),
    }


def guard(part: str, fn: Callable[[], None]) -> None:
    """Run instrumentation bookkeeping that must never raise into the host."""
    try:
        fn()
    except Exception as exc:
        REGISTRY.part_failed(part, exc)
