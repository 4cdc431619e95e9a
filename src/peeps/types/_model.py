"""The graph data model shared by the library, the server, the CLI and the UI.

These are plain JSON-shaped dictionaries on the wire; the TypedDicts here are the
single typed description of that shape.  The TypeScript mirror lives in
``ui/src/types.ts`` and must be kept in step with this file.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypedDict

#: Edge kinds.  ``needs`` is the wait-for graph: ``src`` cannot progress until
#: ``dst`` changes.  ``holds``: src (task/thread) holds dst (lock, permit, cell).
#: ``touches``: src interacted with dst at least once.  ``spawned``: src created
#: dst.  ``closed_by``: src ended because dst ended or was dropped.
EdgeKind = Literal["needs", "holds", "touches", "spawned", "closed_by"]
EDGE_KINDS: Final[tuple[str, ...]] = ("needs", "holds", "touches", "spawned", "closed_by")

#: Node kinds the library emits.  Providers may add their own kinds.
NodeKind = Literal[
    "task",
    "future",
    "channel",
    "oneshot",
    "watch",
    "lock",
    "rwlock",
    "semaphore",
    "event",
    "notify",
    "condition",
    "once_cell",
    "sleep",
    "timeout",
    "interval",
    "peep",
    "thread",
    "thread_lock",
    "subprocess",
    "file_op",
    "net_op",
    "connection",
    "request",
    "response",
    "shm_segment",
    "group",
    "provider_error",
    "event_loop",
    "loop",
    "thread_call",
    "lockdep",
]


class Node(TypedDict):
    """One entity.  ``id`` is ``{kind}:{pid}:{n}``, unique for the entity's life."""

    id: str
    kind: str
    label: str
    #: Kind-specific attributes.  ``attrs["meta"]`` carries shared context:
    #: ``ctx.location`` (``path:line`` of the creating call) and user metadata.
    attrs: dict[str, Any]


class Edge(TypedDict):
    src: str
    dst: str
    kind: str
    attrs: dict[str, Any]


class Event(TypedDict):
    """A runtime event; ``name`` is ``<domain>.<subject>.<action>[.<outcome>]``."""

    id: int
    ts_ns: int
    proc_key: str
    entity_id: str
    name: str
    parent_entity_id: str | None
    attrs: dict[str, Any]


class GraphSnapshot(TypedDict):
    """The graph of one process at one moment."""

    process_name: str
    proc_key: str
    pid: int
    captured_at_ns: int
    nodes: list[Node]
    edges: list[Edge]
    events: list[Event]
