"""Where a snapshot's work runs: on a running event loop when it answers,
else on the collector thread.

The collector thread answers snapshot requests, and it used to do all the
work itself, handing the GIL back to the event loop every millisecond.  Each
hand-off has to be won back: a busy loop drops the GIL at every ``epoll_wait``
and socket call and retakes it at once, so the collector wakes, loses the
race and sleeps again, thousands of times, until the interpreter's switch
interval (5 ms) forces a switch.  Measured in a saturated loop (a CPU-bound
service, ~380 nodes): a snapshot took 0.7-1 s of wall time and 40-65 ms of the
collector's CPU, against ~5 ms of CPU for the same work done in the loop's own
thread (``docs/performance.md``).

So the collector hands the work, as steps (a generator, see
``_reply_encoder.Steps``), to a running loop: each loop callback runs steps
for about a millisecond and schedules the next one with ``call_soon``, so the
loop's own callbacks and I/O run between slices, and no GIL changes hands.
A step that may block (a provider registered by the host, which waits for
its own thread) is handed back to the collector thread and the rest
returned to the loop.

A loop that does not answer is what peeps is there to diagnose, so the
collector never depends on it: if no slice starts or finishes within
:data:`LOOP_PATIENCE_S`, the collector takes the steps back and finishes
them itself, and while the loop has not run the callback it was last sent,
snapshots go straight to the collector thread.  Snapshots bigger than
:data:`MAX_LOOP_NODES` stay there too, and so does each connection's first,
whose size is not known yet.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ._config import env_flag
from ._reply_encoder import HANDOFF_NS, OFF_LOOP, Steps, hand_off, run_steps

T = TypeVar("T")

#: ``PEEPS_SNAPSHOT_ON_LOOP=0`` keeps all snapshot work on the collector thread.
enabled: bool = env_flag("PEEPS_SNAPSHOT_ON_LOOP", default=True)

#: Snapshots of more nodes than this stay on the collector thread.  Some of
#: a snapshot's work is one call over every task (``asyncio.all_tasks``), which
#: on the loop would stall it for its whole length (~5 ms at 10k tasks), while
#: on a thread the interpreter's switch interval cuts it at 5 ms; a small
#: snapshot has no such part longer than a slice.
MAX_LOOP_NODES = 5000

#: How long the collector waits for the loop to start (or go on with) a
#: snapshot before it does the work itself.
LOOP_PATIENCE_S = 0.1

_perf_ns = time.perf_counter_ns
_LOCK = threading.Lock()
#: Loops that may run snapshot work, most recently seen first (weakly held).
_LOOPS: list[weakref.ref[asyncio.AbstractEventLoop]] = []
_MAX_LOOPS = 8
#: The last job sent to a loop, while that loop has not run it (it lets go
#: when it does).
_unanswered: LoopJob[Any] | None = None


def remember_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Offer ``loop`` for snapshot work (called where peeps sees a loop run)."""
    with _LOCK:
        for ref in _LOOPS:
            if ref() is loop:
                return
        try:
            _LOOPS.insert(0, weakref.ref(loop))
        except TypeError:  # a loop type without weak references
            return
        live = [ref for ref in _LOOPS if ref() is not None]
        _LOOPS[:] = live[:_MAX_LOOPS]


def forget_loops() -> None:
    """Drop every remembered loop: after a fork (they do not run in the
    child), and when the collector stops."""
    global _unanswered
    with _LOCK:
        _LOOPS.clear()
        _unanswered = None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    with _LOCK:
        refs = list(_LOOPS)
        unanswered = _unanswered
    for ref in refs:
        loop = ref()
        if loop is None or loop.is_closed() or not loop.is_running():
            continue
        if unanswered is not None and unanswered.loop is loop and not unanswered.ran:
            continue  # still has not run the last one: blocked, or too busy to ask
        if getattr(loop, "_thread_id", None) == threading.get_ident():
            continue  # asked from the loop's own thread: it would wait for itself
        return loop
    return None


class LoopCost:
    """What a snapshot's steps took on the event loop (filled in by
    :func:`run_snapshot_steps`): the collector reports it on its thread node."""

    __slots__ = ("finished_by", "loop_ns", "slices")

    def __init__(self) -> None:
        #: Wall time of the slices the loop ran: the time its callbacks waited.
        self.loop_ns = 0
        self.slices = 0
        #: The loop, if it did the whole of the work it was handed.
        self.finished_by: asyncio.AbstractEventLoop | None = None


class LoopJob(Generic[T]):
    """Steps handed to one loop, in slices: by the collector, which waits on
    ``wake``, or by a loop serving the connection (``_collector._Link``),
    which runs ``slice`` itself and hears back through ``on_yield``."""

    __slots__ = ("done", "error", "lock", "loop", "loop_ns", "on_yield", "owner", "ran", "result",
                 "slices", "steps", "wake")

    def __init__(self, steps: Steps[T], loop: asyncio.AbstractEventLoop,
                 on_yield: Callable[[LoopJob[T]], None] | None = None) -> None:
        self.steps = steps
        self.loop = loop
        #: Called on the loop, with no lock held, when the loop is through
        #: with the job: done, or handed to a thread (a step that may block).
        self.on_yield = on_yield
        #: Held while steps run, by the loop or the collector, never both.
        self.lock = threading.Lock()
        #: "loop" while the loop may run steps, "thread" once the collector has them.
        self.owner = "loop"
        self.ran = False
        self.slices = 0
        self.loop_ns = 0
        self.done = False
        self.result: object = None
        self.error: BaseException | None = None
        self.wake = threading.Event()

    def slice(self) -> None:
        """One loop callback's worth of steps (about ``HANDOFF_NS``)."""
        if not self.ran:
            self.ran = True
            _answered(self)
        if not self.lock.acquire(blocking=False):
            # The collector is looking (or running a step that may block).
            if self.owner == "loop" and not self.done:
                self.loop.call_soon(self.slice)
            return
        try:
            if self.owner != "loop" or self.done:
                return
            self.slices += 1
            started = _perf_ns()
            deadline = started + HANDOFF_NS
            try:
                self._run_slice(deadline)
            finally:
                self.loop_ns += _perf_ns() - started
        except Exception:  # call_soon on a closing loop, say: the collector goes on
            self.owner = "thread"
            self.wake.set()
        finally:
            self.lock.release()
            if self.on_yield is not None and (self.done or self.owner != "loop"):
                on_yield, self.on_yield = self.on_yield, None
                on_yield(self)

    def _run_slice(self, deadline: int) -> None:
        """Steps until ``deadline`` (then the next slice is scheduled), the
        end, or a step that must run off the loop.  Called with ``lock`` held."""
        while True:
            try:
                marker = next(self.steps)
            except StopIteration as stop:
                self._finish(stop.value, None)
                return
            except Exception as exc:  # handed to the collector, never to the loop
                self._finish(None, exc)
                return
            except BaseException as exc:
                # KeyboardInterrupt (a signal handled while a slice ran) or
                # SystemExit: the host's, so it goes on out of the loop.
                self._finish(None, RuntimeError(f"snapshot interrupted on the loop: {exc!r}"))
                raise
            if marker is OFF_LOOP:
                self.owner = "thread"
                self.wake.set()
                return
            if _perf_ns() >= deadline:
                break
        self.loop.call_soon(self.slice)

    def _finish(self, result: object, error: BaseException | None) -> None:
        self.result = result
        self.error = error
        self.done = True
        self.wake.set()


def small_enough(nodes_hint: int | None) -> bool:
    """Whether a snapshot the size of the last (``None``: not known yet) may be
    worked on a loop (see :data:`MAX_LOOP_NODES`)."""
    return nodes_hint is not None and nodes_hint <= MAX_LOOP_NODES


def run_snapshot_steps(steps: Steps[T], *, nodes_hint: int | None = 0,
                       cost: LoopCost | None = None) -> T:
    """Run ``steps`` to the end, on a running event loop if one answers,
    else (or for what the loop leaves) on this thread with GIL hand-offs.
    ``nodes_hint``: how big the last snapshot was; a big one, or ``None``
    (not known yet), stays here (see :data:`MAX_LOOP_NODES`).  ``cost``, if
    given, gets what the loop's share took.  Called by the collector thread;
    raises what the steps raise."""
    global _unanswered
    loop = _running_loop() if enabled and small_enough(nodes_hint) else None
    if loop is None:
        return run_steps(steps, hand_off)
    job = LoopJob(steps, loop)
    if not _post(job):
        return run_steps(steps, hand_off)
    with _LOCK:
        if not job.ran:  # else it has run already, and is not held
            _unanswered = job
    try:
        return _await_job(job, steps)
    finally:
        if cost is not None:
            with job.lock:  # a slice still running adds its time first
                cost.loop_ns = job.loop_ns
                cost.slices = job.slices
                cost.finished_by = loop if job.done else None


def _await_job(job: LoopJob[T], steps: Steps[T]) -> T:
    """Wait for the loop to work ``job`` (running here what it hands back),
    or take the rest over when the loop stops answering."""
    seen = 0
    while True:
        job.wake.wait(LOOP_PATIENCE_S)
        with job.lock:
            job.wake.clear()
            if job.done:
                if job.error is not None:
                    raise job.error
                result: T = job.result  # type: ignore[assignment]
                return result
            if job.owner == "thread":
                # A step that may block: run it here, then give the rest back.
                try:
                    next(steps)
                except StopIteration as stop:
                    value: T = stop.value
                    return value
                job.owner = "loop"
                if _post(job):
                    seen = job.slices
                    continue
            elif job.slices != seen:
                seen = job.slices  # the loop is getting on with it
                continue
            job.owner = "thread"  # the loop is stuck (or gone): finish here
        return run_steps(steps, hand_off)


def take_over(job: LoopJob[T]) -> T:
    """The result of ``job``, finishing its steps on this thread if the loop
    has not (it stopped answering, or handed a step that may block here)."""
    with job.lock:
        done = job.done
        if not done:
            job.owner = "thread"  # its slices stop
    if done:
        if job.error is not None:
            raise job.error
        result: T = job.result  # type: ignore[assignment]
        return result
    return run_steps(job.steps, hand_off)


def _answered(job: LoopJob[Any]) -> None:
    """``job``'s loop has run it: stop holding the job (and its loop)."""
    global _unanswered
    with _LOCK:
        if _unanswered is job:
            _unanswered = None


def _post(job: LoopJob[T]) -> bool:
    try:
        job.loop.call_soon_threadsafe(job.slice)
    except Exception:  # closed since we looked
        return False
    return True
