"""Requests across processes: ``request`` and ``response`` nodes joined by a
shared span id.

The caller wraps an outgoing call in :func:`request`, which makes a ``request``
node the waiting task ``needs`` and fills the outgoing metadata with
``peeps.span_id``, ``peeps.parent_span_id`` and ``peeps.chain_id``.  The
responder wraps its handler in :func:`response`, built from the incoming
metadata: the ``response`` node ``needs`` the handler task, and requests the
handler makes keep the response's span as their parent.  The server joins a
request and its response across processes (``peeps.analysis._crossproc``).

Design notes and the header format: ``docs/requests.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import time
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any, Final, Self

from ._config import STATE
from ._registry import (
    REGISTRY,
    Clock,
    Location,
    Waiter,
    WaitSet,
    base_attrs,
    capture_location,
    guard,
    new_id,
)
from ._tasks import current_waiter
from .types import Edge, Node

SPAN_ID: Final = "peeps.span_id"
PARENT_SPAN_ID: Final = "peeps.parent_span_id"
CHAIN_ID: Final = "peeps.chain_id"
HEADER_NAMES: Final = (SPAN_ID, PARENT_SPAN_ID, CHAIN_ID)

#: The span of the response being handled in this context (task or thread), so
#: requests made while handling it name it as their parent.
_CURRENT: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "peeps_rpc_current_span", default=None)


def new_span_id() -> str:
    """16 hex digits, random: unique enough across a fleet for one snapshot's join."""
    return os.urandom(8).hex()


def current_span() -> tuple[str, str] | None:
    """``(span_id, chain_id)`` of the response being handled here, if any."""
    return _CURRENT.get()


def _clean(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    text: str = value.strip()
    # Ids are opaque but bounded: a hostile header must not bloat the graph.
    if not text or len(text) > 128:
        return None
    return text


def incoming_ids(metadata: Mapping[str, Any] | None) -> dict[str, str]:
    """The ``peeps.*`` ids in incoming metadata, by lower-case name.

    Names match case-insensitively (HTTP/2 and gRPC lower-case them; a plain
    dict may not): exact lookups first, one scan of the keys only if needed.
    """
    found: dict[str, str] = {}
    if not metadata:
        return found
    for name in HEADER_NAMES:
        value = _clean(metadata.get(name))
        if value is not None:
            found[name] = value
    if len(found) < len(HEADER_NAMES):
        for key in list(metadata.keys()):
            if isinstance(key, str):
                lowered = key.lower()
                if lowered in HEADER_NAMES and lowered not in found:
                    value = _clean(metadata[key])
                    if value is not None:
                        found[lowered] = value
    return found


class _RpcBase:
    """State common to both sides: timing, state, span ids, waiters, events."""

    kind: str = ""
    _peeps_id: str

    def __init__(self, method: str, meta: dict[str, Any] | None, location: Location | None) -> None:
        self._peeps_id = new_id(self.kind)
        self.method = method
        self.meta = meta
        self.location = location
        self.created_mono_ns = time.monotonic_ns()
        self.started_mono_ns: int | None = None
        self.finished_mono_ns: int | None = None
        self.state = "created"
        self.status: Any = None
        self.exception_type: str | None = None
        self.span_id = ""
        self.parent_span_id: str | None = None
        self.chain_id = ""
        self.waiters = WaitSet()
        self._token: contextvars.Token[tuple[str, str] | None] | None = None

    @property
    def id(self) -> str:
        """This request's node id."""
        return self._peeps_id

    def set_status(self, status: Any) -> None:
        """Record the outcome the protocol reported (an HTTP status, a gRPC code...)."""
        self.status = status

    def _span_attrs(self) -> dict[str, Any]:
        return {"span_id": self.span_id, "parent_span_id": self.parent_span_id,
                "chain_id": self.chain_id}

    def _timing_attrs(self, now: Clock) -> dict[str, Any]:
        start = self.started_mono_ns if self.started_mono_ns is not None else self.created_mono_ns
        end = self.finished_mono_ns if self.finished_mono_ns is not None else now.mono_ns
        return {"started_at_ns": now.wall_of(start), "elapsed_ns": max(0, end - start)}

    def _outcome(self, exc: BaseException | None) -> str:
        if exc is None:
            return "completed"
        if isinstance(exc, asyncio.CancelledError):
            return "cancelled"
        return "failed"

    # Both sides are sync and async context managers; bookkeeping never raises
    # into the caller (guard logs once and turns that part off).
    def start(self) -> None:
        raise NotImplementedError

    def finish(self, exc: BaseException | None = None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        guard(f"rpc {self.kind} start", self.start)
        return self

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        guard(f"rpc {self.kind} finish", lambda: self.finish(exc))

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(et, exc, tb)


class Request(_RpcBase):
    """An outgoing call, from the caller's side.

    Use as ``async with peeps.rpc.request(...) as req`` (or ``with`` in a thread);
    ``req.headers`` is the metadata to send along.
    """

    kind = "request"

    def __init__(self, method: str, headers: MutableMapping[str, Any] | None, *,
                 target: str | None, meta: dict[str, Any] | None,
                 location: Location | None) -> None:
        super().__init__(method, meta, location)
        self.target = target
        parent = _CURRENT.get()
        self.span_id = new_span_id()
        self.parent_span_id = parent[0] if parent else None
        self.chain_id = parent[1] if parent else self.span_id
        self.headers: MutableMapping[str, Any] = headers if headers is not None else {}
        self.headers[SPAN_ID] = self.span_id
        self.headers[CHAIN_ID] = self.chain_id
        if self.parent_span_id is not None:
            self.headers[PARENT_SPAN_ID] = self.parent_span_id
        else:  # a reused headers mapping must not carry an earlier call's parent
            self.headers.pop(PARENT_SPAN_ID, None)
        self._waiter: Waiter | None = None
        #: Set by integrations that know the wire connection (a connection node id).
        self.connection_id: str | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        """Mark the request sent: the calling task (or thread) now ``needs`` it."""
        if self.started_mono_ns is not None:
            return
        self.started_mono_ns = time.monotonic_ns()
        self.state = "in_flight"
        self._waiter = current_waiter()
        self.waiters.add(self._waiter, "response")
        REGISTRY.track(self)
        REGISTRY.emit(self._peeps_id, "rpc.request.sent",
                      {"method": self.method, "target": self.target, **self._span_attrs()},
                      self._waiter.id if self._waiter is not None else None)

    def finish(self, exc: BaseException | None = None) -> None:
        """Mark the request answered (or failed, with ``exc``); its node goes away."""
        if self.finished_mono_ns is not None or self.started_mono_ns is None:
            return
        self.finished_mono_ns = time.monotonic_ns()
        self.state = self._outcome(exc)
        self.waiters.remove(self._waiter)
        REGISTRY.untrack(self)
        attrs: dict[str, Any] = {"method": self.method, "target": self.target,
                                 "total_ns": self.finished_mono_ns - self.started_mono_ns,
                                 "status": _jsonable(self.status), **self._span_attrs()}
        if exc is not None:
            self.exception_type = type(exc).__qualname__
            attrs["exception_type"] = self.exception_type
            attrs["outcome"] = self.state
            REGISTRY.emit(self._peeps_id, "rpc.request.failed", attrs)
        else:
            REGISTRY.emit(self._peeps_id, "rpc.request.completed", attrs)

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, self.meta, now)
        attrs.update(method=self.method, target=self.target, state=self.state,
                     status=_jsonable(self.status), **self._span_attrs(),
                     **self._timing_attrs(now))
        if self.connection_id is not None:
            attrs["connection_id"] = self.connection_id
        label = f"{self.method} {self.target}" if self.target else self.method
        node: Node = {"id": self._peeps_id, "kind": "request", "label": label, "attrs": attrs}
        edges = self.waiters.needs_edges(self._peeps_id, now)
        if self.connection_id is not None:
            edges.append({"src": self._peeps_id, "dst": self.connection_id, "kind": "touches",
                          "attrs": {}})
        return node, edges


class Response(_RpcBase):
    """An incoming call, from the responder's side.

    Creating it records the call's arrival (state ``queued``); entering it
    (``async with``/``with``) marks the handler start: the ``response`` node then
    ``needs`` the handler task, and requests made inside name it as parent.
    """

    kind = "response"

    def __init__(self, metadata: Mapping[str, Any] | None, *, method: str,
                 peer: str | None, meta: dict[str, Any] | None,
                 location: Location | None) -> None:
        super().__init__(method, meta, location)
        self.peer = peer
        ids = incoming_ids(metadata)
        incoming = ids.get(SPAN_ID)
        #: Whether the caller sent peeps ids (else this response starts a chain).
        self.propagated = incoming is not None
        self.span_id = incoming or new_span_id()
        self.parent_span_id = ids.get(PARENT_SPAN_ID)
        self.chain_id = ids.get(CHAIN_ID) or self.span_id
        self.state = "queued"
        self._handler: Waiter | None = None
        self.connection_id: str | None = None
        REGISTRY.track(self)

    def start(self) -> None:
        """Mark the handler started in the calling task (or thread)."""
        if self.started_mono_ns is not None:
            return
        self.started_mono_ns = time.monotonic_ns()
        self.state = "handling"
        self._handler = current_waiter()
        self._token = _CURRENT.set((self.span_id, self.chain_id))
        REGISTRY.emit(self._peeps_id, "rpc.response.started",
                      {"method": self.method, "queue_wait_ns": self.queue_wait_ns,
                       **self._span_attrs()},
                      self._handler.id if self._handler is not None else None)

    @property
    def queue_wait_ns(self) -> int:
        """Time between arrival and handler start (so far, if not started)."""
        end = self.started_mono_ns if self.started_mono_ns is not None else time.monotonic_ns()
        return max(0, end - self.created_mono_ns)

    def finish(self, exc: BaseException | None = None) -> None:
        """Mark the response sent (or the handler failed); its node goes away."""
        if self.finished_mono_ns is not None:
            return
        self.finished_mono_ns = time.monotonic_ns()
        if self.started_mono_ns is None:
            self.started_mono_ns = self.finished_mono_ns
        self.state = self._outcome(exc)
        if self._token is not None:
            # Finished from another context: nothing to restore there.
            with contextlib.suppress(ValueError):
                _CURRENT.reset(self._token)
            self._token = None
        REGISTRY.untrack(self)
        attrs: dict[str, Any] = {
            "method": self.method,
            "queue_wait_ns": self.started_mono_ns - self.created_mono_ns,
            "handler_ns": self.finished_mono_ns - self.started_mono_ns,
            "total_ns": self.finished_mono_ns - self.created_mono_ns,
            "outcome": self.state,
            "status": _jsonable(self.status),
            **self._span_attrs(),
        }
        if exc is not None:
            self.exception_type = type(exc).__qualname__
            attrs["exception_type"] = self.exception_type
            REGISTRY.emit(self._peeps_id, "rpc.response.failed", dict(attrs))
        REGISTRY.emit(self._peeps_id, "rpc.response.completed", attrs)

    def _peeps_describe(self, now: Clock) -> tuple[Node, list[Edge]]:
        attrs = base_attrs(self.created_mono_ns, self.location, self.meta, now)
        attrs.update(method=self.method, state=self.state, peer=self.peer,
                     propagated=self.propagated, status=_jsonable(self.status),
                     queue_wait_ns=(self.started_mono_ns or now.mono_ns) - self.created_mono_ns,
                     **self._span_attrs(), **self._timing_attrs(now))
        if self.connection_id is not None:
            attrs["connection_id"] = self.connection_id
        node: Node = {"id": self._peeps_id, "kind": "response", "label": self.method,
                      "attrs": attrs}
        edges = self.waiters.needs_edges(self._peeps_id, now)
        handler = self._handler
        if handler is not None and self.finished_mono_ns is None and self.started_mono_ns:
            edges.append({"src": self._peeps_id, "dst": handler.id, "kind": "needs",
                          "attrs": {"op": "handler", "since_ns": now.wall_of(self.started_mono_ns),
                                    "waited_ns": max(0, now.mono_ns - self.started_mono_ns)}})
        if self.connection_id is not None:
            edges.append({"src": self._peeps_id, "dst": self.connection_id, "kind": "touches",
                          "attrs": {}})
        return node, edges


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class _NoopCall:
    """What ``request``/``response`` return with peeps disabled."""

    def __init__(self, headers: MutableMapping[str, Any] | None = None) -> None:
        self.headers: MutableMapping[str, Any] = headers if headers is not None else {}
        self.id: str | None = None
        self.span_id: str | None = None
        self.parent_span_id: str | None = None
        self.chain_id: str | None = None
        self.state = "disabled"
        self.connection_id: str | None = None

    def set_status(self, status: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def finish(self, exc: BaseException | None = None) -> None:
        pass

    def __enter__(self) -> _NoopCall:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    async def __aenter__(self) -> _NoopCall:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


def request(method: str, headers: MutableMapping[str, Any] | None = None, *,
            target: str | None = None, **meta: Any) -> Request:
    """An outgoing call the current task waits for.

    ::

        async with peeps.rpc.request("GET /users", target="users-svc") as req:
            resp = await session.get(url, headers=req.headers)

    :param method: what is being called (shown as the node label).
    :param headers: the outgoing metadata to fill with the ``peeps.*`` ids
        (a new dict when omitted); available as ``req.headers``.
    :param target: where it goes (URL, service name); a ghost response names it
        when the responder is missing from a snapshot.
    :param meta: node metadata.

    Works as ``async with`` and, in threads, ``with``.  With peeps disabled it
    returns an inert object whose ``headers`` are left untouched.
    """
    if not STATE.enabled:
        return _NoopCall(headers)  # type: ignore[return-value]
    return Request(method, headers, target=target, meta=meta or None,
                   location=capture_location())


def response(metadata: Mapping[str, Any] | None, *, method: str, peer: str | None = None,
             **meta: Any) -> Response:
    """An incoming call being answered, continuing the caller's span.

    ::

        async with peeps.rpc.response(request.headers, method="GET /users"):
            return await handle(request)

    :param metadata: the incoming headers (any mapping; names are matched
        case-insensitively).  Without ``peeps.*`` ids the response starts a chain.
    :param method: what was called.
    :param peer: the caller's address, if known.
    :param meta: node metadata.

    The response node exists from this call (state ``queued``); entering the
    context starts the handler.
    """
    if not STATE.enabled:
        return _NoopCall()  # type: ignore[return-value]
    return Response(metadata, method=method, peer=peer, meta=meta or None,
                    location=capture_location())
