"""``peeps.patch()``: make the ``asyncio`` names the instrumented primitives.

Replaces module attributes of the ``asyncio`` package only, so code that looks
them up at call time (``asyncio.Lock()``) gets the peeps version.  Names bound
before patching (``from asyncio import Lock``), ``asyncio.locks.Lock`` and
``asyncio.queues.Queue`` keep the originals; objects created before patching
stay uninstrumented.  ``unpatch()`` restores exactly what was there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._channel import Queue
from ._sync import BoundedSemaphore, Condition, Event, Lock, Semaphore

_REPLACEMENTS: dict[str, Any] = {
    "BoundedSemaphore": BoundedSemaphore,
    "Condition": Condition,
    "Event": Event,
    "Lock": Lock,
    "Queue": Queue,
    "Semaphore": Semaphore,
}

_saved: dict[str, Any] = {}


def patch() -> None:
    """Replace ``asyncio.Lock``, ``Queue``, ``Semaphore``, ``BoundedSemaphore``,
    ``Event`` and ``Condition`` with the instrumented versions.  Idempotent."""
    for name, replacement in _REPLACEMENTS.items():
        if name not in _saved:
            _saved[name] = getattr(asyncio, name)
            setattr(asyncio, name, replacement)


def unpatch() -> None:
    """Undo :func:`patch`.  Idempotent."""
    for name, original in list(_saved.items()):
        if getattr(asyncio, name) is _REPLACEMENTS[name]:
            setattr(asyncio, name, original)
        del _saved[name]


def is_patched() -> bool:
    return bool(_saved)
