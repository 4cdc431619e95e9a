"""Diagnostic providers: user (and built-in) functions that describe extra state
as graph nodes and edges at each snapshot.

A provider is ``fn() -> {"nodes": [...], "edges": [...]}``.  User providers run
on a short-lived daemon thread each with a deadline, so a provider that hangs
costs its own part of the snapshot and nothing else; while it is still hung it
is skipped.  Whatever goes wrong (raised, timed out, returned something that is
not a graph) is reported in that snapshot as one ``provider_error`` node.

Built-in providers (connections, shared memory) are trusted, cheap and run
inline on the collecting thread; they share the same error reporting.

How to write one: ``docs/providers.md``.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ._config import STATE
from ._registry import REGISTRY, Clock
from ._tasks import current_waiter
from .types import Edge, Node

ProviderFn = Callable[[], Any]
#: Built-in providers describe themselves at the snapshot's instant.
BuiltinFn = Callable[[Clock], Any]
FailureKind = Literal["raised", "timeout", "invalid"]

#: Default per-provider deadline.  The snapshot waits at most this long for the
#: slowest provider (they run in parallel).
DEFAULT_TIMEOUT_S: Final = 1.0
#: A provider returning more than this is refused as ``invalid``: one runaway
#: provider must not blow the snapshot frame.
MAX_NODES: Final = 5000
MAX_EDGES: Final = 20000
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ProviderInvalid(ValueError):
    """The provider returned something that is not ``{"nodes": [...], "edges": [...]}``."""


@dataclass
class _Provider:
    name: str
    #: ``fn()`` for user providers, ``fn(now)`` for built-ins.
    fn: Callable[..., Any]
    timeout_s: float
    builtin: bool
    #: The worker thread of a call that missed its deadline and has not returned.
    hung_thread: threading.Thread | None = None
    hung_since_mono_ns: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_PROVIDERS: dict[str, _Provider] = {}
_LOCK = threading.Lock()


def register_provider(name: str, fn: ProviderFn, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Register ``fn`` to describe extra state at every snapshot.

    :param name: unique provider name (letters, digits, ``_.-``; at most 64);
        node ids it returns are namespaced as ``{kind}:{pid}:{name}/{id}``.
        Registering a name again replaces the previous provider.
    :param fn: called with no arguments on a worker thread at each snapshot;
        returns ``{"nodes": [{"id", "kind", "label"?, "attrs"?}], "edges":
        [{"src", "dst", "kind", "attrs"?}]}``.  Edge endpoints name the
        provider's own node ids, or any existing node id of this process
        (e.g. a task id) unchanged.
    :param timeout_s: how long a snapshot waits for this provider.

    Raises ``ValueError`` for a bad name or timeout, ``TypeError`` if ``fn`` is
    not callable.
    """
    _register(name, fn, timeout_s=timeout_s, builtin=False)


def _register(name: str, fn: Callable[..., Any], *, timeout_s: float, builtin: bool) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"provider name must match {_NAME_RE.pattern}, got {name!r}")
    if not callable(fn):
        raise TypeError(f"provider {name!r}: fn must be callable, got {type(fn).__name__}")
    if not (timeout_s > 0):
        raise ValueError(f"provider {name!r}: timeout_s must be positive, got {timeout_s!r}")
    with _LOCK:
        _PROVIDERS[name] = _Provider(name, fn, float(timeout_s), builtin)


def unregister_provider(name: str) -> bool:
    """Stop calling provider ``name``; returns whether it was registered."""
    with _LOCK:
        return _PROVIDERS.pop(name, None) is not None


def current_node_id() -> str | None:
    """The graph node id of the running task (or tracked thread), for providers
    that want to draw edges from the code that uses their resource."""
    waiter = current_waiter()
    return waiter.id if waiter is not None else None


def providers() -> list[str]:
    """Names of the registered providers (built-ins included)."""
    with _LOCK:
        return sorted(_PROVIDERS)


# -- validation ------------------------------------------------------------------


def _local_id(provider: str, kind: str, local: str) -> str:
    return f"{kind}:{STATE.pid}:{provider}/{local}"


def normalize(
    provider: str, result: Any, now: Clock, *, builtin: bool = False
) -> tuple[list[Node], list[Edge]]:
    """Check a provider's result and turn it into namespaced nodes and edges.

    Raises :class:`ProviderInvalid` with a message naming the first problem.
    Built-in providers already use process-unique ids and are not namespaced.
    """
    if not isinstance(result, Mapping):
        raise ProviderInvalid(f"expected a dict with 'nodes' and 'edges', got {type(result).__name__}")
    raw_nodes = result.get("nodes", [])
    raw_edges = result.get("edges", [])
    if not isinstance(raw_nodes, list | tuple):
        raise ProviderInvalid(f"'nodes' must be a list, got {type(raw_nodes).__name__}")
    if not isinstance(raw_edges, list | tuple):
        raise ProviderInvalid(f"'edges' must be a list, got {type(raw_edges).__name__}")
    if len(raw_nodes) > MAX_NODES or len(raw_edges) > MAX_EDGES:
        raise ProviderInvalid(f"too big: {len(raw_nodes)} nodes, {len(raw_edges)} edges "
                              f"(limits {MAX_NODES}, {MAX_EDGES})")
    id_map: dict[str, str] = {}
    nodes: list[Node] = []
    for i, raw in enumerate(raw_nodes):
        if not isinstance(raw, Mapping):
            raise ProviderInvalid(f"nodes[{i}] is a {type(raw).__name__}, not a dict")
        local, kind = raw.get("id"), raw.get("kind")
        if not isinstance(local, str) or not local:
            raise ProviderInvalid(f"nodes[{i}].id must be a non-empty string")
        if not isinstance(kind, str) or not kind:
            raise ProviderInvalid(f"nodes[{i}].kind must be a non-empty string")
        if local in id_map:
            raise ProviderInvalid(f"nodes[{i}].id {local!r} is duplicated")
        label = raw.get("label", local)
        if not isinstance(label, str):
            raise ProviderInvalid(f"nodes[{i}].label must be a string")
        attrs = raw.get("attrs", {})
        if not isinstance(attrs, Mapping):
            raise ProviderInvalid(f"nodes[{i}].attrs must be a dict")
        attrs = dict(attrs)
        meta = attrs.get("meta", {})
        if not isinstance(meta, Mapping):
            raise ProviderInvalid(f"nodes[{i}].attrs.meta must be a dict")
        attrs["meta"] = dict(meta)
        attrs.setdefault("created_at_ns", now.wall_ns)
        attrs.setdefault("age_ns", 0)
        attrs["provider"] = provider
        node_id = local if builtin else _local_id(provider, kind, local)
        id_map[local] = node_id
        nodes.append({"id": node_id, "kind": kind, "label": label, "attrs": attrs})
    edges: list[Edge] = []
    for i, raw in enumerate(raw_edges):
        if not isinstance(raw, Mapping):
            raise ProviderInvalid(f"edges[{i}] is a {type(raw).__name__}, not a dict")
        src, dst, kind = raw.get("src"), raw.get("dst"), raw.get("kind")
        if not isinstance(src, str) or not isinstance(dst, str):
            raise ProviderInvalid(f"edges[{i}].src and .dst must be strings")
        if not isinstance(kind, str) or not kind:
            raise ProviderInvalid(f"edges[{i}].kind must be a non-empty string")
        attrs = raw.get("attrs", {})
        if not isinstance(attrs, Mapping):
            raise ProviderInvalid(f"edges[{i}].attrs must be a dict")
        edges.append({"src": id_map.get(src, src), "dst": id_map.get(dst, dst), "kind": kind,
                      "attrs": dict(attrs)})
    try:
        # Everything crosses the wire as JSON: refuse what would not encode
        # here, where it costs one provider and not the whole reply.
        json.dumps(nodes, allow_nan=False)
        json.dumps(edges, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProviderInvalid(f"not JSON-serializable: {exc}") from None
    return nodes, edges


def error_node(
    provider: str, kind: FailureKind, error: str, now: Clock, **extra: Any
) -> Node:
    """The ``provider_error`` node reporting one failed provider in one snapshot."""
    attrs: dict[str, Any] = {"meta": {}, "created_at_ns": now.wall_ns, "age_ns": 0,
                             "provider": provider, "error_kind": kind, "error": error[:2000]}
    attrs.update(extra)
    return {"id": f"provider_error:{STATE.pid}:{provider}", "kind": "provider_error",
            "label": f"provider {provider}: {kind}", "attrs": attrs}


# -- running ---------------------------------------------------------------------


class _Call:
    """One run of one provider on its own daemon thread."""

    __slots__ = ("done", "error", "provider", "result", "started_mono_ns", "thread")

    def __init__(self, provider: _Provider) -> None:
        self.provider = provider
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.started_mono_ns = time.monotonic_ns()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=f"peeps-provider:{self.provider.name}")
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.provider.fn()
        except BaseException as exc:  # SystemExit in a provider must not end this thread silently
            self.error = exc
        finally:
            self.done.set()


def _emit_failure(provider: str, kind: FailureKind, error: str) -> None:
    REGISTRY.emit(f"provider_error:{STATE.pid}:{provider}", f"provider.collect.{kind}",
                  {"provider": provider, "error": error[:500]})


def _finish(p: _Provider, result: Any, error: BaseException | None, now: Clock,
            nodes: list[Node], edges: list[Edge]) -> None:
    if error is not None:
        err = f"{type(error).__name__}: {error}"
        nodes.append(error_node(p.name, "raised", err, now,
                                exception_type=type(error).__qualname__))
        _emit_failure(p.name, "raised", err)
        return
    try:
        p_nodes, p_edges = normalize(p.name, result, now, builtin=p.builtin)
    except ProviderInvalid as exc:
        nodes.append(error_node(p.name, "invalid", str(exc), now))
        _emit_failure(p.name, "invalid", str(exc))
        return
    nodes.extend(p_nodes)
    edges.extend(p_edges)


def has_blocking_providers() -> bool:
    """Whether :func:`collect_providers` would wait for a thread: any provider
    registered by the host (peeps' own run inline and never block)."""
    with _LOCK:
        return any(not p.builtin for p in _PROVIDERS.values())


def collect_providers(now: Clock, nodes: list[Node], edges: list[Edge]) -> None:
    """Run every provider and append its nodes and edges (or its error node).

    Waits at most the largest per-provider deadline.  Never raises.
    """
    with _LOCK:
        registered = list(_PROVIDERS.values())
    calls: list[_Call] = []
    for p in registered:
        if p.builtin:
            # Ours, cheap and non-blocking: run inline and describe at ``now``.
            try:
                result, error = p.fn(now), None
            except Exception as exc:
                result, error = None, exc
            _finish(p, result, error, now, nodes, edges)
            continue
        with p.lock:
            hung = p.hung_thread
            if hung is not None and hung.is_alive():
                hung_ns = max(0, now.mono_ns - p.hung_since_mono_ns)
                nodes.append(error_node(
                    p.name, "timeout",
                    f"still running {hung_ns / 1e9:.1f}s after it started; skipped until it returns",
                    now, timeout_ns=int(p.timeout_s * 1e9), hung_ns=hung_ns, skipped=True))
                continue
            p.hung_thread = None
            call = _Call(p)
            try:
                call.start()
            except RuntimeError as exc:  # interpreter shutting down, thread limit, ...
                nodes.append(error_node(p.name, "raised", f"could not start: {exc}", now))
                continue
            calls.append(call)
    for call in calls:
        p = call.provider
        remaining_s = p.timeout_s - (time.monotonic_ns() - call.started_mono_ns) / 1e9
        if not call.done.wait(max(0.0, remaining_s)):
            with p.lock:
                p.hung_thread = call.thread
                p.hung_since_mono_ns = call.started_mono_ns
            err = f"no answer within {p.timeout_s:g}s"
            nodes.append(error_node(p.name, "timeout", err, now,
                                    timeout_ns=int(p.timeout_s * 1e9), skipped=False))
            _emit_failure(p.name, "timeout", err)
            continue
        if call.thread is not None:
            # It has answered and is exiting: let it, so no provider thread
            # outlives the snapshot that started it.
            call.thread.join(0.05)
        _finish(p, call.result, call.error, now, nodes, edges)


def _after_fork_in_child() -> None:
    # The hung threads belong to the parent; the child starts clean.
    global _LOCK
    _LOCK = threading.Lock()
    for p in list(_PROVIDERS.values()):
        p.hung_thread = None
        p.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)
