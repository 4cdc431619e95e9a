"""A dead man's switch for background threads: a kernel timer (Linux
``timerfd``) that the watched side re-arms while it is healthy and that a
watching thread blocks on, so the watcher wakes only when the deadline passes.

Why: a Python thread that wakes up needs the GIL, and a busy event loop drops
and retakes the GIL at every ``epoll_wait`` and socket call; each drop wakes
the waiting thread, which loses the race and sleeps again, for up to a switch
interval (5 ms) per wake-up.  A watchdog polling at 40 Hz cost a saturated
service ~2 % CPU per request and ~15 % p99 that way (``docs/performance.md``).
With a deadline the watcher sleeps in ``select()`` -- no timeout, so no GIL
wanted -- until the loop really stops re-arming it.

Python 3.13 has ``os.timerfd_create``; on 3.11 and 3.12 the two libc calls go
through ``ctypes`` (standard library), with the argument types declared.  Where
neither works (not Linux), :func:`create` returns ``None`` and callers poll as
before.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

#: ``CLOCK_MONOTONIC`` (the same number on every Linux architecture).
_CLOCK_MONOTONIC = 1

_settime: Any = None  # (fd, seconds) -> None, raising OSError
_create: Any = None  # () -> fd, raising OSError
_initialized = False


def _init() -> None:
    """Pick the ``timerfd`` implementation: ``os`` (3.13+) or libc via ctypes
    (imported on first use: ``import peeps`` stays free of it)."""
    global _settime, _create, _initialized
    if _initialized:
        return
    _initialized = True
    if not sys.platform.startswith("linux"):
        return
    flags = os.O_CLOEXEC | os.O_NONBLOCK  # TFD_CLOEXEC / TFD_NONBLOCK are these
    os_create: Any = getattr(os, "timerfd_create", None)  # 3.13+
    os_settime: Any = getattr(os, "timerfd_settime", None)
    if os_create is not None and os_settime is not None:
        def create_os() -> int:
            fd: int = os_create(_CLOCK_MONOTONIC, flags=flags)
            return fd

        def settime_os(fd: int, seconds: float) -> None:
            os_settime(fd, initial=seconds)

        _create = create_os
        _settime = settime_os
        return
    try:
        import ctypes
    except ImportError:  # a Python built without ctypes
        return

    class Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    class Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", Timespec), ("it_value", Timespec)]

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        c_create = libc.timerfd_create
        c_settime = libc.timerfd_settime
    except (OSError, AttributeError):
        return
    c_create.argtypes = [ctypes.c_int, ctypes.c_int]
    c_create.restype = ctypes.c_int
    c_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(Itimerspec),
                          ctypes.c_void_p]
    c_settime.restype = ctypes.c_int

    def create_c() -> int:
        fd: int = c_create(_CLOCK_MONOTONIC, flags)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return fd

    #: seconds -> a prebuilt ``itimerspec`` (deadlines use one or two durations).
    specs: dict[float, Any] = {}

    def settime_c(fd: int, seconds: float) -> None:
        spec = specs.get(seconds)
        if spec is None:
            whole = int(seconds)
            spec = Itimerspec(Timespec(0, 0),
                              Timespec(whole, int((seconds - whole) * 1e9)))
            if len(specs) < 64:
                specs[seconds] = spec
        if c_settime(fd, 0, spec, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    _create = create_c
    _settime = settime_c


class Deadline:
    """One one-shot deadline.  ``arm()`` (from the watched side) moves it to
    ``seconds`` from now; once it passes, :meth:`fileno` turns readable
    (``select``) until :meth:`drain` is called."""

    __slots__ = ("_fd", "seconds")

    def __init__(self, fd: int, seconds: float) -> None:
        self._fd = fd
        self.seconds = seconds

    def fileno(self) -> int:
        return self._fd

    def arm(self) -> None:
        """Push the deadline to ``seconds`` from now (raises ``OSError`` once closed)."""
        _settime(self._fd, self.seconds)

    def disarm(self) -> None:
        _settime(self._fd, 0.0)

    def drain(self) -> None:
        """Consume a passed deadline, so ``select`` blocks again."""
        with contextlib.suppress(OSError):  # EAGAIN: it had not passed
            os.read(self._fd, 8)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class Waker:
    """A self-pipe that wakes a thread asleep in ``select`` on it (to stop it,
    or to make it look at a new deadline)."""

    __slots__ = ("_read", "_write")

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def fileno(self) -> int:
        return self._read

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe wakes it anyway; closed: gone
            os.write(self._write, b"!")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self._read, 512)

    def close(self) -> None:
        fds, self._read, self._write = (self._read, self._write), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)


def create_waker() -> Waker | None:
    """A :class:`Waker`, or ``None`` when no pipe can be made (out of descriptors)."""
    try:
        return Waker()
    except OSError:
        return None


def create(seconds: float) -> Deadline | None:
    """A new, disarmed deadline of ``seconds``, or ``None`` where the platform
    has no ``timerfd`` (or the descriptor cannot be made)."""
    _init()
    if _create is None:
        return None
    try:
        fd = _create()
    except OSError:
        return None
    deadline = Deadline(fd, seconds)
    try:
        deadline.disarm()
    except OSError:
        deadline.close()
        return None
    return deadline


def available() -> bool:
    """Whether :func:`create` can make deadlines here (Linux ``timerfd``)."""
    _init()
    return _create is not None
