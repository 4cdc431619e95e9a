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


class _AsyncioName(type):
    """The metaclass of what :func:`patch` installs as ``asyncio.Lock`` & co.

    Calling such a name calls the peeps primitive (so with peeps disabled it
    still returns a plain stdlib object), and a class derived from it derives
    from the peeps primitive and checks as usual; but ``isinstance`` and
    ``issubclass`` against the name itself answer as they would for the
    stdlib class it replaced.  So host code checking ``isinstance(x,
    asyncio.Lock)`` keeps working for objects made before patching, through
    names bound before it (``from asyncio import Lock``), or with peeps
    disabled.
    """

    _peeps_made: type
    _peeps_original: type

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        made = cls.__dict__.get("_peeps_made")
        if made is not None:
            return made(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        if "_peeps_original" in cls.__dict__:
            return isinstance(obj, cls._peeps_original)
        return super().__instancecheck__(obj)

    def __subclasscheck__(cls, sub: type) -> bool:
        if "_peeps_original" in cls.__dict__:
            return issubclass(sub, cls._peeps_original)
        return super().__subclasscheck__(sub)


def _asyncio_name(name: str, peeps_cls: type) -> type:
    original = getattr(asyncio, name)
    return _AsyncioName(name, (peeps_cls,), {
        "__slots__": (), "__module__": peeps_cls.__module__,
        "__qualname__": peeps_cls.__qualname__, "__doc__": peeps_cls.__doc__,
        "_peeps_made": peeps_cls, "_peeps_original": original,
    })


_REPLACEMENTS: dict[str, Any] = {
    name: _asyncio_name(name, cls) for name, cls in (
        ("BoundedSemaphore", BoundedSemaphore),
        ("Condition", Condition),
        ("Event", Event),
        ("Lock", Lock),
        ("Queue", Queue),
        ("Semaphore", Semaphore),
    )
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
