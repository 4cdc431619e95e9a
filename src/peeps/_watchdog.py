"""Event-loop stall detection.

A heartbeat on the loop (a ``call_later`` tick every ``threshold/2``) stamps
when the loop last came back; a thread other than the loop's notices a tick
that is overdue by more than the threshold.  On Linux each heartbeat also
re-arms a kernel deadline (``_deadline``, a timerfd) that the
``peeps-watchdog`` daemon thread blocks on, so that thread sleeps -- wanting no
GIL -- until a heartbeat is really overdue.  Elsewhere it polls at
``threshold/4``, or lets the thread sampler poll for it after the sampler's
wake-ups (``poll_if_due``).  While the loop is stalled the
watchdog reads the loop thread's stack (``sys._current_frames()``) and the task
whose step is running (``asyncio.current_task(loop)``, read from the watchdog
thread), so the ``loop`` node shows the stall *while it lasts* (``stalled_ns``,
``stack``, ``frame``, a ``needs[step]`` edge to the task).  When the loop comes
back, the tick records event ``loop.stall`` with the duration and that stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import sys
import threading
import time
import weakref
from types import FrameType
from typing import Any, Final

from . import _deadline, _loophooks
from ._config import STATE
from ._registry import _PKG_DIR, REGISTRY, Clock, base_attrs, capture_location, new_id
from ._tasks import entity_for_task
from ._threads import entity_for_ident, format_frame, stack_of
from .types import Edge, Node

log = logging.getLogger("peeps")

ENV_WATCHDOG_MS: Final = "PEEPS_WATCHDOG_MS"
DEFAULT_THRESHOLD_MS: Final = 100.0
MIN_THRESHOLD_MS: Final = 5.0
MAX_STALLS_KEPT: Final = 16

_ASYNCIO_DIR: Final = os.path.dirname(asyncio.__file__) + os.sep


def _culprit_frame(frame: FrameType | None) -> str | None:
    """The innermost frame outside asyncio and peeps: the line that blocks."""
    first = frame
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_ASYNCIO_DIR) and not filename.startswith(_PKG_DIR):
            return format_frame(frame.f_code, frame.f_lineno)
        frame = frame.f_back
    return format_frame(first.f_code, first.f_lineno) if first is not None else None


class _Stall:
    __slots__ = ("beat", "frame", "seen_mono_ns", "stack", "started_mono_ns", "task_id",
                 "task_name", "thread_ident")

    def __init__(self, beat: int, started_mono_ns: int, thread_ident: int | None) -> None:
        self.beat = beat
        self.started_mono_ns = started_mono_ns
        self.seen_mono_ns = time.monotonic_ns()
        self.thread_ident = thread_ident
        self.stack: list[str] = []
        self.frame: str | None = None
        self.task_id: str | None = None
        self.task_name: str | None = None


class LoopWatch:
    """One watched event loop (a ``loop`` node).  ``stop()`` ends the watch."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_ms: float) -> None:
        self._peeps_id = new_id("loop")
        self.loop_ref = weakref.ref(loop)
        self.threshold_ns = int(max(MIN_THRESHOLD_MS, threshold_ms) * 1_000_000)
        self.interval_ns = self.threshold_ns // 2
        self.location = capture_location()
        self.created_mono_ns = time.monotonic_ns()
        self.thread_ident: int | None = None
        self.beat = 0
        self.next_due_mono_ns: int | None = None
        self.stall: _Stall | None = None
        self.stalls = 0
        self.stall_total_ns = 0
        self.stall_max_ns = 0
        self.recent: list[dict[str, Any]] = []
        self.stopped = False
        self._handle: asyncio.TimerHandle | None = None
        #: Re-armed by every heartbeat; passes when a stall is due to be seen.
        self.deadline = _deadline.create((self.interval_ns + self.threshold_ns) / 1e9 + 0.001)

    # -- loop side -----------------------------------------------------------------
    def _tick(self) -> None:
        if self.stopped:
            return
        try:
            now = time.monotonic_ns()
            self.thread_ident = threading.get_ident()
            due = self.next_due_mono_ns
            stall, self.stall = self.stall, None
            if due is not None and now - due > self.threshold_ns:
                self._finish_stall(now - due, due,
                                   stall if stall is not None and stall.beat == self.beat
                                   else None)
            self.beat += 1
            self.next_due_mono_ns = now + self.interval_ns
            loop = self.loop_ref()
            if loop is not None:
                self._handle = loop.call_later(self.interval_ns / 1e9, self._tick)
            if self.deadline is not None:
                self.deadline.arm()
        except Exception as exc:
            REGISTRY.part_failed("event-loop watchdog heartbeat", exc)
            self.stopped = True

    def _finish_stall(self, duration_ns: int, started_mono_ns: int, stall: _Stall | None) -> None:
        self.stalls += 1
        self.stall_total_ns += duration_ns
        self.stall_max_ns = max(self.stall_max_ns, duration_ns)
        attrs: dict[str, Any] = {
            "duration_ns": duration_ns,
            "stall_ns": duration_ns,
            "threshold_ns": self.threshold_ns,
            "started_at_ns": Clock().wall_of(started_mono_ns),
            "stack": stall.stack if stall is not None else [],
            "frame": stall.frame if stall is not None else None,
            "location": (stall.frame.rsplit(" in ", 1)[0]
                         if stall is not None and stall.frame else None),
            "task_id": stall.task_id if stall is not None else None,
            "task_name": stall.task_name if stall is not None else None,
            "captured": stall is not None,
        }
        self.recent.append(attrs)
        del self.recent[:-MAX_STALLS_KEPT]
        REGISTRY.emit(self._peeps_id, "loop.stall", attrs,
                      stall.task_id if stall is not None else None)

    # -- watchdog side -------------------------------------------------------------
    def check(self, now: int) -> None:
        """Called from the watchdog thread: capture a stall in progress."""
        loop = self.loop_ref()
        if loop is None or loop.is_closed():
            self.stop()
            return
        due = self.next_due_mono_ns
        if not loop.is_running():
            # A stopped loop is not a stalled one: restart the heartbeat clock.
            self.next_due_mono_ns = None
            return
        if due is None or now - due <= self.threshold_ns:
            return
        beat = self.beat
        current = self.stall
        if current is not None and current.beat == beat and current.stack:
            return  # already captured this one
        ident = self.thread_ident
        stall = _Stall(beat, due, ident)
        frame = sys._current_frames().get(ident) if ident is not None else None
        try:
            stall.stack = stack_of(frame)
            stall.frame = _culprit_frame(frame)
        finally:
            del frame
        try:
            task = asyncio.current_task(loop)
        except Exception:
            task = None
        if task is not None:
            stall.task_name = task.get_name()
            entity = entity_for_task(task)
            if entity is not None:
                stall.task_id = entity.id
        if self.beat == beat:  # the loop has not come back meanwhile
            self.stall = stall

    def healthy(self, now: int) -> bool:
        """Not stalled now (a stopped loop counts as healthy: nothing to see)."""
        due = self.next_due_mono_ns
        return due is None or now - due <= self.threshold_ns

    def stop(self) -> None:
        self.stopped = True
        deadline, self.deadline = self.deadline, None
        if deadline is not None:
            _retire(deadline)
        handle = self._handle
        loop = self.loop_ref()
        if handle is not None and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(handle.cancel)
        _unwatch(self)

    # -- snapshot side -------------------------------------------------------------
    def current_stall(self) -> _Stall | None:
        stall = self.stall
        return stall if stall is not None and stall.beat == self.beat else None

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, None, now)
        loop = self.loop_ref()
        stall = self.current_stall()
        due = self.next_due_mono_ns
        overdue = now.mono_ns - due if due is not None else 0
        running = loop is not None and loop.is_running()
        thread = entity_for_ident(self.thread_ident) if self.thread_ident is not None else None
        attrs.update(
            threshold_ns=self.threshold_ns,
            running=running,
            closed=loop is None or loop.is_closed(),
            thread_id=thread.id if thread is not None else None,
            stalls=self.stalls,
            stall_total_ns=self.stall_total_ns,
            stall_max_ns=self.stall_max_ns,
            recent_stalls=list(self.recent),
            stalled=bool(running and overdue > self.threshold_ns),
            stalled_ns=overdue if running and overdue > self.threshold_ns else None,
            stack=stall.stack if stall is not None else [],
            frame=stall.frame if stall is not None else None,
            task_id=stall.task_id if stall is not None else None,
            task_name=stall.task_name if stall is not None else None,
        )
        name = thread.name if thread is not None else "?"
        node: Node = {"id": self._peeps_id, "kind": "loop",
                      "label": f"event loop ({name})", "attrs": attrs}
        edges: list[Edge] = []
        if stall is not None and stall.task_id is not None and attrs["stalled"]:
            edges.append({"src": self._peeps_id, "dst": stall.task_id, "kind": "needs",
                          "attrs": {"op": "step", "since_ns": now.wall_of(stall.started_mono_ns),
                                    "waited_ns": overdue}})
        return node, edges


# -- the watchdog thread ------------------------------------------------------------

_WATCHES: dict[int, LoopWatch] = {}  # id(loop) -> watch
_LOCK = threading.Lock()
_THREAD: threading.Thread | None = None
_STOP = threading.Event()


def watches_loops() -> bool:
    """Whether any event loop is watched (then a thread sampler that ticks in
    its stead must poll at its full rate)."""
    return bool(_WATCHES)


def _poll_interval_s() -> float:
    watches = list(_WATCHES.values())
    if not watches:
        return 0.1
    return max(0.005, min(0.05, min(w.threshold_ns for w in watches) / 4e9))


#: How often the watchdog thread looks again while the thread sampler polls for it.
_ADOPTED_RECHECK_S: Final = 0.5
_POLLING = threading.Lock()  # one poll at a time: the sampler's tick or our thread
_next_poll_ns = 0


def poll(now: int) -> None:
    """One pass over the watched loops (from the watchdog thread or a sampler tick)."""
    global _next_poll_ns
    if not _POLLING.acquire(blocking=False):
        return
    try:
        _next_poll_ns = now + int(_poll_interval_s() * 1e9)
        for watch in list(_WATCHES.values()):
            try:
                watch.check(now)
            except Exception as exc:
                REGISTRY.part_failed("event-loop watchdog", exc)
                watch.stop()
    finally:
        _POLLING.release()


def poll_if_due(now: int) -> None:
    """Called by the thread sampler after each tick: poll when a poll is due.

    Every Python thread that wakes up while a busy event loop keeps releasing
    and retaking the GIL (each socket call, each ``epoll_wait``) costs that loop
    up to a switch interval (5 ms) of futile GIL hand-offs, so the watchdog does
    not wake a thread of its own while the sampler is awake anyway.
    """
    if _WATCHES and now >= _next_poll_ns and not _blocking_mode():
        poll(now)


def _sampler_polls_for_us() -> bool:
    """Whether a running thread sampler ticks at least as often as we poll."""
    from ._threads import current_sampler

    sampler = current_sampler()
    return (sampler is not None and sampler.running and sampler.mode == "thread"
            and sampler.effective_hz * _poll_interval_s() >= 1.0)


def _run() -> None:
    interval = _poll_interval_s()
    while True:
        if _blocking_mode():
            if not _block_until_due():
                return
        elif _STOP.wait(interval):
            return
        elif _sampler_polls_for_us():
            interval = _ADOPTED_RECHECK_S
            continue
        interval = _poll_interval_s()
        poll(time.monotonic_ns())


# -- blocking on the loops' deadlines (Linux) ---------------------------------------

#: Deadlines of stopped watches, closed by the watchdog thread (which may be
#: inside ``select`` on them) or by whoever stops that thread.
_RETIRED: list[_deadline.Deadline] = []
_waker: _deadline.Waker | None = None


def _retire(deadline: _deadline.Deadline) -> None:
    _RETIRED.append(deadline)
    _wake_thread()


def _wake_thread() -> None:
    waker = _waker
    if waker is not None:
        waker.wake()


def _close_retired() -> None:
    while _RETIRED:
        _RETIRED.pop().close()


def _blocking_mode() -> bool:
    """Whether every watched loop has a deadline and none is stalled now (then
    the thread can sleep until a deadline passes)."""
    if _waker is None:
        return False
    now = time.monotonic_ns()
    return all(w.deadline is not None and w.healthy(now) for w in list(_WATCHES.values()))


def _block_until_due() -> bool:
    """Sleep in ``select`` until a deadline passes, a watch is added or removed,
    or the thread is stopped; ``False`` when stopped."""
    waker = _waker
    assert waker is not None
    deadlines = {w.deadline.fileno(): w.deadline for w in list(_WATCHES.values())
                 if w.deadline is not None}
    try:
        ready, _, _ = select.select([waker.fileno(), *deadlines], [], [])
    except (OSError, ValueError):  # a deadline closed under us: look again
        ready = []
    for fd in ready:
        deadline = deadlines.get(fd)
        if deadline is not None:
            deadline.drain()
        else:
            waker.drain()
    _close_retired()
    return not _STOP.is_set()


def _ensure_thread() -> None:
    global _THREAD, _waker
    if _THREAD is not None and _THREAD.is_alive():
        _wake_thread()  # a new watch: select on its deadline too
        return
    _STOP.clear()
    if _waker is None and _deadline.available():
        _waker = _deadline.create_waker()
    _THREAD = threading.Thread(target=_run, name="peeps-watchdog", daemon=True)
    _THREAD.start()


def _unwatch(watch: LoopWatch) -> None:
    with _LOCK:
        for key, value in list(_WATCHES.items()):
            if value is watch:
                del _WATCHES[key]
    REGISTRY.untrack(watch)


def watch_loop(loop: asyncio.AbstractEventLoop | None = None, *,
               threshold_ms: float = DEFAULT_THRESHOLD_MS) -> LoopWatch | None:
    """Watch ``loop`` (default: the running loop) for stalls longer than
    ``threshold_ms``.  Returns the watch (``.stop()`` ends it), the existing one
    if the loop is already watched, or ``None`` with peeps disabled.

    Each stall becomes a ``loop.stall`` event naming the task and the line that
    blocked; a snapshot taken during a stall shows it on the ``loop`` node.
    """
    if not STATE.enabled:
        return None
    if loop is None:
        loop = asyncio.get_running_loop()
    with _LOCK:
        existing = _WATCHES.get(id(loop))
        if existing is not None and existing.loop_ref() is loop and not existing.stopped:
            return existing
        watch = LoopWatch(loop, threshold_ms)
        _WATCHES[id(loop)] = watch
    REGISTRY.track(watch)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        loop.call_soon(watch._tick)
    else:
        loop.call_soon_threadsafe(watch._tick)
    _ensure_thread()
    return watch


def unwatch_all() -> None:
    """Stop every watch and the watchdog thread (joined)."""
    global _THREAD
    _remove_loop_hook()
    for watch in list(_WATCHES.values()):
        watch.stop()
    _STOP.set()
    _wake_thread()
    thread, _THREAD = _THREAD, None
    if thread is not None and thread.is_alive() and thread is not threading.current_thread():
        thread.join(2.0)
    if thread is None or not thread.is_alive():
        _close_retired()


def watched_loops() -> list[LoopWatch]:
    return list(_WATCHES.values())


# -- loops that start later ------------------------------------------------------------

_hook_threshold_ms: float | None = None
_HOOK_NAME = "watching a new event loop"


def _on_loop_start(loop: asyncio.AbstractEventLoop) -> None:
    threshold = _hook_threshold_ms
    if threshold is not None and STATE.enabled:
        watch_loop(loop, threshold_ms=threshold)


def watch_future_loops(threshold_ms: float = DEFAULT_THRESHOLD_MS) -> None:
    """Watch the running loop (if any) and every loop that starts running later
    (through ``_loophooks``; removed by :func:`unwatch_all`)."""
    global _hook_threshold_ms
    _hook_threshold_ms = threshold_ms
    _loophooks.on_loop_start(_HOOK_NAME, _on_loop_start)
    with contextlib.suppress(RuntimeError):
        watch_loop(asyncio.get_running_loop(), threshold_ms=threshold_ms)


def _remove_loop_hook() -> None:
    global _hook_threshold_ms
    _hook_threshold_ms = None
    _loophooks.remove(_HOOK_NAME)


def threshold_from_env() -> float | None:
    """``PEEPS_WATCHDOG_MS``: the stall threshold; ``0`` turns the watchdog off."""
    raw = os.environ.get(ENV_WATCHDOG_MS, "").strip()
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        log.warning("peeps: ignoring %s=%r (not a number)", ENV_WATCHDOG_MS, raw)
        return None


def _after_fork_in_child() -> None:
    global _THREAD, _waker
    for watch in _WATCHES.values():  # the parent's: their descriptors are ours to close
        if watch.deadline is not None:
            watch.deadline.close()
    _WATCHES.clear()
    _close_retired()
    if _waker is not None:
        _waker.close()
        _waker = None
    _THREAD = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
