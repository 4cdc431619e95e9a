"""Shared memory: ``multiprocessing.shared_memory.SharedMemory`` created or
attached through peeps, described by the ``shared_memory`` built-in provider.

Each process reports only its own attachment (name, size, whether it created
the segment, closed/unlinked); the server joins nodes with the same segment
name across processes (``peeps.analysis._crossproc``), so one snapshot shows
which processes have a segment attached.
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from multiprocessing import shared_memory as _mp_shm
from typing import Any

from ._config import STATE
from ._providers import _register
from ._registry import Clock, Location, base_attrs, capture_location, guard, new_id
from .types import Edge, Node

_HAS_TRACK = sys.version_info >= (3, 13)


class SharedMemory(_mp_shm.SharedMemory):
    """A ``multiprocessing.shared_memory.SharedMemory`` that appears in the graph
    as a ``shm_segment`` node.  Same constructor and methods; ``peeps_meta``
    becomes node metadata; ``track`` (3.13+ in the standard library) works on
    3.11 and 3.12 too.
    """

    # No __slots__: the subclass gains __weakref__, which the base lacks.

    def __init__(self, name: str | None = None, create: bool = False, size: int = 0,
                 *, track: bool = True, peeps_meta: dict[str, Any] | None = None) -> None:
        if _HAS_TRACK:
            super().__init__(name, create, size, track=track)  # type: ignore[call-arg,unused-ignore]
        else:
            super().__init__(name, create, size)
            if not track and os.name == "posix":
                # ``track=False`` (3.13+) backported: an attaching process must
                # not let its resource tracker unlink the segment at exit.
                from multiprocessing import resource_tracker

                resource_tracker.unregister(self._name, "shared_memory")  # type: ignore[attr-defined]
        self._peeps_id = new_id("shm_segment")
        self._peeps_created = bool(create)
        self._peeps_location: Location | None = capture_location()
        self._peeps_meta = peeps_meta
        self._peeps_created_mono_ns = time.monotonic_ns()
        self._peeps_closed = False
        self._peeps_unlinked = False
        guard("shared memory tracking", lambda: _remember(self))

    def close(self) -> None:
        super().close()
        self._peeps_closed = True

    def unlink(self) -> None:
        super().unlink()
        self._peeps_unlinked = True

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self._peeps_created_mono_ns, self._peeps_location, self._peeps_meta,
                           now)
        attrs.update(
            name=self.name,
            size=self.size,
            role="creator" if self._peeps_created else "attached",
            creator_pid=STATE.pid if self._peeps_created else None,
            pid=os.getpid(),
            closed=self._peeps_closed,
            unlinked=self._peeps_unlinked,
        )
        node: Node = {"id": self._peeps_id, "kind": "shm_segment", "label": self.name,
                      "attrs": attrs}
        return node, []


_SEGMENTS: dict[str, weakref.ref[SharedMemory]] = {}


def _remember(segment: SharedMemory) -> None:
    key = segment._peeps_id

    def _gone(_: object, key: str = key) -> None:
        _SEGMENTS.pop(key, None)

    _SEGMENTS[key] = weakref.ref(segment, _gone)


def _describe_segments(now: Clock) -> dict[str, Any]:
    nodes: list[Node] = []
    for ref in list(_SEGMENTS.copy().values()):
        segment = ref()
        if segment is not None:
            nodes.append(segment._peeps_describe(now)[0])
    return {"nodes": nodes, "edges": []}


_register("shared_memory", _describe_segments, timeout_s=1.0, builtin=True)


def shm(name: str | None = None, *, create: bool = False, size: int = 0, track: bool = True,
        **meta: Any) -> _mp_shm.SharedMemory:
    """Create (``create=True``, with ``size``) or attach to (by ``name``) a
    shared-memory segment that appears in the graph; ``meta`` becomes node
    metadata.

    ``track=False`` keeps this process's resource tracker from unlinking the
    segment when the process exits (the 3.13 standard-library flag, honoured on
    3.11 and 3.12 too): use it when attaching to a segment another process owns.
    With peeps disabled, returns a plain ``multiprocessing.shared_memory.SharedMemory``
    (``track`` then needs 3.13).
    """
    if not STATE.enabled:
        if _HAS_TRACK:
            return _mp_shm.SharedMemory(name, create, size, track=track)  # type: ignore[call-arg,unused-ignore]
        return _mp_shm.SharedMemory(name, create, size)
    return SharedMemory(name, create, size, track=track, peeps_meta=meta or None)
