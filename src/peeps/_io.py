"""System boundaries as nodes: subprocesses and file operations.

``peeps.io.create_subprocess_exec``/``create_subprocess_shell`` return the
asyncio ``Process`` wrapped so that it shows as a ``subprocess`` node (command,
pid, running time, exit status) and a task waiting in ``wait()`` or
``communicate()`` ``needs`` it.  ``peeps.io.read_file``/``write_file``/
``to_thread`` run blocking work in a thread as a short-lived ``file_op`` node
that the awaiting task ``needs``.  Network streams are instrumented by
``peeps.open_connection``/``peeps.start_server`` (``connection`` nodes).

With peeps disabled these are the plain asyncio calls.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ._config import STATE
from ._registry import REGISTRY, Clock, Location, WaitSet, base_attrs, capture_location, new_id
from ._tasks import current_waiter, id_of
from .types import Edge, Node

T = TypeVar("T")

#: Longest command text kept on a node.
COMMAND_LIMIT = 200


# -- subprocesses -------------------------------------------------------------------


@dataclass(frozen=True)
class SubprocessStatistics:
    """``TrackedProcess.statistics()``."""

    command: str
    pid: int | None
    running_ns: int
    returncode: int | None
    waiters: int


class TrackedProcess:
    """An ``asyncio.subprocess.Process`` that describes itself as a
    ``subprocess`` node.  Every attribute and method of the process is
    available; ``wait()`` and ``communicate()`` record their waiters."""

    def __init__(self, process: asyncio.subprocess.Process, command: str,
                 label: str | None, location: Location | None,
                 meta: dict[str, Any] | None) -> None:
        self._process = process
        self._peeps_id = new_id("subprocess")
        self._command = command[:COMMAND_LIMIT]
        self._label = label or command.split(" ", 1)[0].rsplit("/", 1)[-1][:60] or "subprocess"
        self._location = location
        self._meta = meta
        self._started_mono_ns = time.monotonic_ns()
        self._exited_mono_ns: int | None = None
        self._waiters = WaitSet()
        self._spawner = id_of(current_waiter())
        REGISTRY.track(self)
        REGISTRY.emit(self._peeps_id, "subprocess.started", {"pid": process.pid},
                      self._spawner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._process, name)

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def _note_exit(self) -> None:
        if self._exited_mono_ns is None and self._process.returncode is not None:
            self._exited_mono_ns = time.monotonic_ns()
            REGISTRY.emit(self._peeps_id, "subprocess.exited",
                          {"returncode": self._process.returncode})

    async def wait(self) -> int:
        waiter = current_waiter()
        self._waiters.add(waiter, "wait")
        try:
            return await self._process.wait()
        finally:
            self._waiters.remove(waiter)
            self._note_exit()

    async def communicate(self, input: bytes | None = None) -> tuple[bytes, bytes]:
        waiter = current_waiter()
        self._waiters.add(waiter, "communicate")
        try:
            return await self._process.communicate(input)
        finally:
            self._waiters.remove(waiter)
            self._note_exit()

    def statistics(self) -> SubprocessStatistics:
        end = self._exited_mono_ns or time.monotonic_ns()
        return SubprocessStatistics(
            command=self._command, pid=self._process.pid,
            running_ns=end - self._started_mono_ns,
            returncode=self._process.returncode, waiters=len(self._waiters),
        )

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self._started_mono_ns, self._location, self._meta, now)
        end = self._exited_mono_ns if self._exited_mono_ns is not None else now.mono_ns
        returncode = self._process.returncode
        attrs.update(
            command=self._command,
            pid=self._process.pid,
            running=returncode is None,
            running_ns=max(0, end - self._started_mono_ns),
            returncode=returncode,
            spawned_by=self._spawner,
        )
        node: Node = {"id": self._peeps_id, "kind": "subprocess", "label": self._label,
                      "attrs": attrs}
        edges = self._waiters.needs_edges(self._peeps_id, now)
        if self._spawner is not None:
            edges.append({"src": self._spawner, "dst": self._peeps_id, "kind": "spawned",
                          "attrs": {}})
        return node, edges


async def create_subprocess_exec(program: str, *args: Any, label: str | None = None,
                                 meta: dict[str, Any] | None = None,
                                 **kwargs: Any) -> Any:
    """``asyncio.create_subprocess_exec`` returning a :class:`TrackedProcess`."""
    location = capture_location()
    process = await asyncio.create_subprocess_exec(program, *args, **kwargs)
    if not STATE.enabled:
        return process
    command = shlex.join([os.fspath(program), *(os.fspath(a) if isinstance(a, (str, os.PathLike))
                                                 else repr(a) for a in args)])
    return TrackedProcess(process, command, label, location, meta)


async def create_subprocess_shell(cmd: str, *, label: str | None = None,
                                  meta: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """``asyncio.create_subprocess_shell`` returning a :class:`TrackedProcess`."""
    location = capture_location()
    process = await asyncio.create_subprocess_shell(cmd, **kwargs)
    if not STATE.enabled:
        return process
    return TrackedProcess(process, cmd, label, location, meta)


# -- file operations and other blocking work ------------------------------------------------


class _BlockingOp:
    """A blocking call running in a worker thread: a ``file_op`` node while it runs."""

    def __init__(self, op: str, label: str, target: str | None, location: Location | None) -> None:
        self._peeps_id = new_id("file_op")
        self.op = op
        self.label = label
        self.target = target
        self.location = location
        self.started_mono_ns = time.monotonic_ns()
        self.waiters = WaitSet()

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.started_mono_ns, self.location, None, now)
        attrs.update(op=self.op, path=self.target,
                     running_ns=max(0, now.mono_ns - self.started_mono_ns))
        node: Node = {"id": self._peeps_id, "kind": "file_op", "label": self.label,
                      "attrs": attrs}
        return node, self.waiters.needs_edges(self._peeps_id, now)


async def _run_blocking(op: str, label: str, target: str | None, location: Location | None,
                        fn: Callable[..., T], *args: Any) -> T:
    if not STATE.enabled:
        return await asyncio.to_thread(fn, *args)
    entity = _BlockingOp(op, label, target, location)
    waiter = current_waiter()
    entity.waiters.add(waiter, op)
    REGISTRY.track(entity)
    try:
        return await asyncio.to_thread(fn, *args)
    finally:
        entity.waiters.remove(waiter)
        REGISTRY.untrack(entity)


def _read(path: str | os.PathLike[str], mode: str) -> Any:
    with open(path, mode) as fh:
        return fh.read()


def _write(path: str | os.PathLike[str], data: Any, mode: str) -> int:
    with open(path, mode) as fh:
        written: int = fh.write(data)
        return written


async def read_file(path: str | os.PathLike[str], *, binary: bool = False) -> Any:
    """Read a whole file in a worker thread (``str``, or ``bytes`` with ``binary``)."""
    target = os.fspath(path)
    return await _run_blocking("read", f"read {os.path.basename(target)}", target,
                               capture_location(), _read, path, "rb" if binary else "r")


async def write_file(path: str | os.PathLike[str], data: str | bytes, *,
                     append: bool = False) -> int:
    """Write ``data`` to a file in a worker thread; returns what ``write`` returned."""
    target = os.fspath(path)
    mode = ("a" if append else "w") + ("b" if isinstance(data, bytes) else "")
    return await _run_blocking("write", f"write {os.path.basename(target)}", target,
                               capture_location(), _write, path, data, mode)


async def to_thread(fn: Callable[..., T], /, *args: Any, label: str | None = None) -> T:
    """``asyncio.to_thread`` as a node (op ``call``) the awaiting task ``needs``."""
    name = label or getattr(fn, "__qualname__", None) or repr(fn)
    return await _run_blocking("call", name, None, capture_location(), fn, *args)
