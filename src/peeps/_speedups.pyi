"""Type stub for the optional C extension (``_speedups.c``)."""

from collections.abc import Callable, Generator
from typing import Any, final

def record_spawn(task: Any, current_tasks: dict[Any, Any], loop: Any, meta: Any,
                 monotonic_ns: Callable[[], int]) -> None:
    """``spawn_tracked``'s spawn record, its site the caller of ``spawn_tracked``."""

def lock_methods(lock_type: type[Any], chain_type: type[Any], local: Any,
                 chain_here: Callable[[], Any], nested: Callable[..., Any],
                 unlink: Callable[..., Any], py_acquire: Callable[..., Any],
                 py_release: Callable[..., Any], py_clocked_acquire: Callable[..., Any],
                 py_clocked_release: Callable[..., Any], coarse_now: list[int],
                 monotonic_ns: Callable[[], int]) -> tuple[Any, Any, Any, Any]:
    """ThreadLock's tick-timed (acquire, release) and clocked (acquire,
    release) as C method descriptors."""

def rlock_methods(rlock_type: type[Any], py_acquire: Callable[..., Any],
                  py_release: Callable[..., Any]) -> tuple[Any, Any, Any]:
    """ThreadRLock's (acquire, release, __exit__) as C method descriptors
    (after :func:`lock_methods`, whose slot offsets it shares)."""

def aio_methods(lock_type: type[Any], sem_type: type[Any], bounded_type: type[Any],
                current_task: Callable[[], Any] | None, current_tasks: dict[Any, Any] | None,
                current_holder: Callable[[], Any], monotonic_ns: Callable[[], int],
                py_lock_enter: Callable[[Any], Any], py_lock_release: Callable[[Any], None],
                py_sem_enter: Callable[[Any], Any],
                py_sem_release: Callable[[Any], None]) -> tuple[Any, ...]:
    """asyncio ``Lock``'s and ``Semaphore``'s ``__aenter__``, ``__aexit__`` and
    ``release`` (Lock's three, then Semaphore's) as C method descriptors."""

class TaskFactory:
    """peeps' automatic task factory, the common case in C (see ``_autotrack``)."""

    peeps_factory: Any
    fallback: Callable[..., Any]

    def __init__(self, *, state: Any, fallback: Callable[..., Any], task_type: type[Any],
                 current_tasks: dict[Any, Any], autotrack_ns: dict[str, Any],
                 tasks_ns: dict[str, Any], config: Any, asyncio_dir: str,
                 monotonic_ns: Callable[[], int],
                 on_error: Callable[[BaseException], object]) -> None: ...
    def __call__(self, loop: Any, coro: Any, **kwargs: Any) -> Any: ...

# Linux only.
def quiet_sleep(interval_ns: int, max_pace: int, stretch_ns: int, waker_fd: int,
                threshold_ns: int,
                sink: Callable[[list[int]], object] | None) -> tuple[list[int], bool]:
    """The thread sampler's sleep: quiet ticks (monotonic ns) while no other
    thread runs, handed to ``sink`` first; and whether ``waker_fd`` woke it."""

def quiet_pending() -> list[int]:
    """The quiet ticks of the ``quiet_sleep`` in progress (monotonic ns)."""

def quiet_count() -> int:
    """Quiet ticks taken in this process so far (those in progress included)."""

@final
class Done:
    """An awaitable that is already done: ``await DONE`` is None at once."""

    def __await__(self) -> Generator[Any]: ...

#: The one ``Done``: what ``Lock``'s and ``Semaphore``'s ``__aenter__`` and
#: ``__aexit__`` return when they took or gave back the primitive at once.
DONE: Done
