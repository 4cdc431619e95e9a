"""Counting another process's events with Linux ``perf_event_open`` (through
the standard library's ``ctypes``), for ``bench_service.py --counters``.

Why: the service's remaining cost is not in its instruction count
(``docs/performance.md``, 1d), so what is left to say is *which* hardware
footprint it is: cycles, instructions, cache and TLB misses per request,
measured in the same interleaved slices as the CPU time.  The kernel's
generalized events name the same thing on every CPU it knows
(``perf list`` shows them as ``cycles``, ``L1-icache-load-misses``, ...).

A counter is opened per thread of the process (``pid`` = the thread id,
``cpu`` = -1: it follows the thread to any CPU) and kept open; :meth:`read`
adds up every thread's count, opening counters for threads started since.
Where the PMU is shared out (more events than counters), the kernel rotates
them and each count is scaled by ``time_enabled / time_running``, as
``perf stat`` does; :meth:`ProcessCounters.coverage` says how much.

Where an event cannot be counted -- no PMU exposed (most virtual machines),
an event this CPU lacks, a ``perf_event_paranoid`` that forbids it -- it is
left out with the kernel's reason (:attr:`ProcessCounters.unavailable`); the
software events (``task-clock``, ``context-switches``, ...) need no PMU.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass
from pathlib import Path

#: ``perf_event_open``'s system call number per architecture (``unistd.h``).
_SYSCALL = {"x86_64": 298, "aarch64": 241, "riscv64": 241, "ppc64le": 319, "ppc64": 319,
            "s390x": 331}

# linux/perf_event.h
_TYPE_HARDWARE, _TYPE_SOFTWARE, _TYPE_HW_CACHE = 0, 1, 3
_FORMAT_TIMES = 1 | 2  # PERF_FORMAT_TOTAL_TIME_ENABLED | PERF_FORMAT_TOTAL_TIME_RUNNING
_FLAG_FD_CLOEXEC = 1 << 3
_EXCLUDE_KERNEL, _EXCLUDE_HV = 1 << 5, 1 << 6
_ATTR_SIZE_VER0 = 64  # the first published struct perf_event_attr: every kernel takes it


def _cache(cache: int, op: int = 0, result: int = 1) -> int:
    """A ``PERF_TYPE_HW_CACHE`` config: cache id | op << 8 | result << 16
    (op 0 = read, result 1 = miss)."""
    return cache | op << 8 | result << 16


@dataclass(frozen=True)
class Event:
    name: str
    type: int
    config: int
    what: str


#: The events ``--counters`` asks for, in the order the table shows them.
EVENTS: tuple[Event, ...] = (
    Event("cycles", _TYPE_HARDWARE, 0, "CPU cycles"),
    Event("instructions", _TYPE_HARDWARE, 1, "instructions retired"),
    Event("branch-misses", _TYPE_HARDWARE, 5, "mispredicted branches"),
    Event("L1i-misses", _TYPE_HW_CACHE, _cache(1), "L1 instruction cache misses"),
    Event("L1d-misses", _TYPE_HW_CACHE, _cache(0), "L1 data cache read misses"),
    Event("LLC-misses", _TYPE_HW_CACHE, _cache(2), "last-level cache read misses"),
    Event("iTLB-misses", _TYPE_HW_CACHE, _cache(4), "instruction TLB misses"),
    Event("dTLB-misses", _TYPE_HW_CACHE, _cache(3), "data TLB read misses"),
    Event("task-clock", _TYPE_SOFTWARE, 1, "ns on a CPU (the kernel's clock, no PMU)"),
    Event("context-switches", _TYPE_SOFTWARE, 3, "context switches"),
    Event("cpu-migrations", _TYPE_SOFTWARE, 4, "moves to another CPU"),
    Event("page-faults", _TYPE_SOFTWARE, 2, "page faults"),
)
EVENT_NAMES = tuple(e.name for e in EVENTS)
TASK_CLOCK = next(e for e in EVENTS if e.name == "task-clock")

_libc: ctypes.CDLL | None = None


def _syscall_number() -> int | None:
    return _SYSCALL.get(platform.machine())


def _attr(event: Event, exclude_kernel: bool) -> bytes:
    """A ``struct perf_event_attr`` of the first published size (64 bytes):
    counting (no sampling), enabled from the start, the two times read back."""
    flags = (_EXCLUDE_KERNEL | _EXCLUDE_HV) if exclude_kernel else 0
    return struct.pack("=IIQQQQQIIQ", event.type, _ATTR_SIZE_VER0, event.config, 0, 0,
                       _FORMAT_TIMES, flags, 0, 0, 0)


def open_event(event: Event, tid: int, *, exclude_kernel: bool = False) -> int:
    """One counter of ``event`` for thread ``tid`` (0: the caller's thread):
    its file descriptor.  Raises ``OSError`` with the kernel's errno."""
    global _libc
    number = _syscall_number()
    if number is None or not Path("/proc/sys/kernel/perf_event_paranoid").exists():
        raise OSError(errno.ENOSYS, f"perf_event_open is not available on "
                                    f"{platform.system()} {platform.machine()}")
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(_attr(event, exclude_kernel), _ATTR_SIZE_VER0)
    fd = _libc.syscall(ctypes.c_long(number), buf, ctypes.c_int(tid), ctypes.c_int(-1),
                       ctypes.c_int(-1), ctypes.c_ulong(_FLAG_FD_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


def read_event(fd: int) -> tuple[int, int, int]:
    """(count, time enabled ns, time running ns) of one counter."""
    value, enabled, running = struct.unpack("=QQQ", os.read(fd, 24))
    return value, enabled, running


def _reason(exc: OSError) -> str:
    """Why the kernel refused an event, in words a reader can act on."""
    code = errno.errorcode.get(exc.errno or 0, "?")
    hint = {
        errno.ENOENT: "the kernel exposes no such event here (no PMU: a virtual machine "
                      "without PMU passthrough, or an event this CPU lacks)",
        errno.EOPNOTSUPP: "this CPU or kernel cannot count it per thread",
        errno.ENODEV: "no PMU for it",
        errno.EACCES: f"not permitted (perf_event_paranoid={paranoid()})",
        errno.ENOSYS: str(exc.strerror),
    }.get(exc.errno or 0, str(exc.strerror))
    return f"{code}: {hint}"


def paranoid() -> int | None:
    """``/proc/sys/kernel/perf_event_paranoid`` (None when unreadable)."""
    try:
        return int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    except (OSError, ValueError):
        return None


class ProcessCounters:
    """Counters of :data:`EVENTS` (or ``events``) for every thread of ``pid``.

    Never raises once made: an event the kernel refuses is listed in
    :attr:`unavailable` with its reason, and a thread that is gone is
    skipped.  Kernel-mode work (the process's system calls, its TCP paths)
    is counted where ``perf_event_paranoid`` allows it; otherwise the
    events count user space only and :attr:`user_only` is true."""

    def __init__(self, pid: int, events: tuple[Event, ...] = EVENTS) -> None:
        self.pid = pid
        self.events = events
        #: event name -> why it is not counted (the kernel's error).
        self.unavailable: dict[str, str] = {}
        self._fds: dict[tuple[str, int], int] = {}  # (event, tid) -> fd
        self._last: dict[tuple[str, int], tuple[int, int, int]] = {}
        self._tids: set[int] = set()
        self.user_only = self._kernel_forbidden()
        self._refresh()

    # -- opening -----------------------------------------------------------------
    def _kernel_forbidden(self) -> bool:
        """Whether counting this process's kernel-mode work is refused
        (``perf_event_paranoid`` >= 2 for an unprivileged user): then every
        event counts user space only, so the counts stay comparable.  Probed
        once with the task clock, a software event every kernel has."""
        try:
            os.close(open_event(TASK_CLOCK, self.pid))
        except OSError as exc:
            return exc.errno in (errno.EACCES, errno.EPERM)
        return False

    def _threads(self) -> list[int]:
        try:
            return sorted(int(p.name) for p in Path(f"/proc/{self.pid}/task").iterdir())
        except (OSError, ValueError):
            return []

    def _refresh(self) -> None:
        for tid in self._threads():
            if tid in self._tids:
                continue
            self._tids.add(tid)
            for event in self.events:
                if event.name not in self.unavailable:
                    self._open(event, tid)

    def _open(self, event: Event, tid: int) -> None:
        try:
            self._fds[(event.name, tid)] = open_event(event, tid,
                                                      exclude_kernel=self.user_only)
        except OSError as exc:
            if exc.errno == errno.ESRCH:  # the thread ended meanwhile
                return
            if not any(name == event.name for name, _ in self._fds):
                self.unavailable[event.name] = _reason(exc)

    # -- reading -----------------------------------------------------------------
    def read(self) -> dict[str, float]:
        """Each counted event's total so far over the process's threads,
        scaled where the PMU was shared out."""
        self._refresh()
        totals = {e.name: 0.0 for e in self.events if e.name not in self.unavailable}
        for key, fd in self._fds.items():
            try:
                value, enabled, running = read_event(fd)
            except OSError:
                continue
            self._last[key] = (value, enabled, running)
            if running and enabled > running:
                totals[key[0]] += value * enabled / running
            elif running:
                totals[key[0]] += value
        return totals

    def coverage(self) -> dict[str, float]:
        """Per event, the share of its enabled time that it was on the PMU
        (1.0: counted throughout; lower: rotated with others and scaled),
        over the threads that ran, as of the last :meth:`read`."""
        enabled: dict[str, int] = {}
        running: dict[str, int] = {}
        for (name, _tid), (_, en, run) in self._last.items():
            enabled[name] = enabled.get(name, 0) + en
            running[name] = running.get(name, 0) + run
        return {name: running[name] / en for name, en in enabled.items() if en}

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def __enter__(self) -> ProcessCounters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
