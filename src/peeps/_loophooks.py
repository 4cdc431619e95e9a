"""Hear about every event loop that starts running, in any thread.

One chained hook on ``asyncio.events._set_running_loop`` (``run_forever`` calls
it, in the loop's own thread, before the first callback runs) serves every part
of peeps that wants to know: the loop-stall watchdog and the thread sampler.
Callbacks run in the loop's thread; one that raises is reported once and the
others still run.  The hook is removed when the last callback is, unless
someone chained on top of it, in which case it stays as a pass-through.
(Automatic task tracking, the watchdog and the sampler all hear about loops
through it, so none of them can unhook another.)
"""

from __future__ import annotations

import asyncio
import asyncio.events as _events
import threading
from collections.abc import Callable
from typing import Any

from ._registry import REGISTRY

LoopCallback = Callable[[asyncio.AbstractEventLoop], None]

_CALLBACKS: dict[str, LoopCallback] = {}  # what it is for -> callback
_LOCK = threading.Lock()
_orig_set_running_loop: Callable[[Any], None] | None = None


def _hooked_set_running_loop(loop: Any) -> None:
    assert _orig_set_running_loop is not None
    _orig_set_running_loop(loop)
    if loop is None:
        return
    for what, callback in list(_CALLBACKS.items()):
        try:
            callback(loop)
        except Exception as exc:
            REGISTRY.part_failed(what, exc)


def on_loop_start(what: str, callback: LoopCallback) -> None:
    """Call ``callback(loop)`` whenever a loop starts running (``what`` names the
    purpose in error reports and is the key: adding it again replaces it)."""
    global _orig_set_running_loop
    with _LOCK:
        _CALLBACKS[what] = callback
        if _events._set_running_loop is not _hooked_set_running_loop:
            # Not installed, or unhooked by someone who had chained on top.
            _orig_set_running_loop = _events._set_running_loop
            _events._set_running_loop = _hooked_set_running_loop


def remove(what: str) -> None:
    """Forget ``what``'s callback; unhook when none is left and nobody chained on top."""
    global _orig_set_running_loop
    with _LOCK:
        _CALLBACKS.pop(what, None)
        if (not _CALLBACKS and _orig_set_running_loop is not None
                and _events._set_running_loop is _hooked_set_running_loop):
            _events._set_running_loop = _orig_set_running_loop
            _orig_set_running_loop = None
