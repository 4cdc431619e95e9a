"""Encode a large ``graph_reply`` frame without stalling the event loop.

``json.dumps`` is one C call: it holds the GIL from start to end, so encoding a
13 MB reply (10k tasks + 10k channels) stopped every other thread — the
service's event loop included — for ~0.4 s (measured by bench/bench_snapshot.py).
Here long lists are encoded in slices, as steps (:data:`Steps`, a generator
that yields after each slice).  Whoever runs them lets the loop run between
slices: the event loop itself, running them in ~1 ms callbacks
(``_loopside``), or the collector thread, giving the GIL away
(``time.sleep(0)``) once a slice ends at least ``HANDOFF_NS`` after the last
hand-off (:func:`hand_off`), so the loop waits about that long at most.
The output is byte-for-byte what :func:`peeps.types.encode_frame` produces.

The other stall was the garbage collector: a snapshot allocates a few container
objects per entity, enough to trigger young collections that promote them and
then a full collection of the host's whole heap — on whichever thread allocates,
holding the GIL throughout (a 0.4 s gen-2 pass measured at 10k tasks).
:func:`gc_paused` keeps automatic collection off while the collector thread
builds and encodes a reply: the reply's objects are freed by reference counting
when it has been sent, so they never reach the collector at all.

Freeing is the third: dropping the last reference to a 20k-node graph frees every
dict in one C-level cascade (~0.1 s measured).  :func:`release_in_slices` empties
the big lists a slice at a time instead.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar, cast

from .types import DEFAULT_MAX_FRAME_BYTES, HEADER, Edge, FrameError, Node
from .types._wire import _json_default

#: Entries encoded (or freed) per slice, between checks of :func:`hand_off`.
SLICE = 64

#: GIL-holding work between two hand-offs.  Paced by time, not by count: a
#: hand-off on a busy loop is a GIL round trip through the kernel, and the
#: collector then resumes on cold caches, so one every 64 entities made a
#: ~400-node snapshot cost ~8 ms of the collector's CPU under load.
HANDOFF_NS = 1_000_000
_perf_ns = time.perf_counter_ns
log = logging.getLogger("peeps")
#: Whether the unencodable-attributes warning was given (once per process).
_warned_unencodable = False
_due_ns = 0


def hand_off() -> None:
    """Let the event loop (and every other thread) run, if ``HANDOFF_NS`` of
    work were done since the last hand-off.  Called by the collector thread
    between slices; other threads calling it only shift when the next one is."""
    global _due_ns
    if _perf_ns() >= _due_ns:
        time.sleep(0)
        _due_ns = _perf_ns() + HANDOFF_NS

T = TypeVar("T")
#: A node or an edge.
E = TypeVar("E", Node, Edge)

#: Work in steps: a generator that yields at points where whoever runs it may
#: let others run (``None``), or :data:`OFF_LOOP`, and returns its result.
Steps = Generator[object, None, T]

#: Yielded by :data:`Steps` before a part that may block (waits for another
#: thread): the steps must not be running on an event loop for it.
OFF_LOOP = object()


def run_steps(steps: Steps[T], pace: Callable[[], None] | None = None) -> T:
    """Run ``steps`` to the end in this thread, calling ``pace`` at each step."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        if pace is not None:
            pace()


_encode = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode


class Encoded(dict):  # type: ignore[type-arg]
    """A node or edge that no longer changes, with its JSON made once
    (``json``): a finished task's, shown in every snapshot for minutes.  It
    is a dict like any other for whoever reads the graph in the process; the
    encoder writes ``json`` instead of encoding it again, and the snapshot
    does not scrub it again (it was scrubbed before it was encoded).  Nobody
    may change it: the same object is in every snapshot that shows it."""

    __slots__ = ("json",)

    json: str

    @classmethod
    def of(cls, item: E) -> E | None:
        """``item`` with its JSON made, or None if it cannot be encoded (it is
        then sent as an ordinary one, through the encoder's fallback)."""
        try:
            text = _encode(item)
        except (ValueError, TypeError, RecursionError):
            return None
        encoded = cls(item)
        encoded.json = text
        return cast(E, encoded)


def _encode_steps(value: Any, out: bytearray) -> Iterator[None]:
    """Append ``value``'s JSON to ``out``, yielding after each slice of a list."""
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        out += b"{"
        first = True
        for key, item in value.items():
            if not first:
                out += b","
            first = False
            out += _encode(key).encode("utf-8")
            out += b":"
            yield from _encode_steps(item, out)
        out += b"}"
    elif isinstance(value, list):
        out += b"["
        for start in range(0, len(value), SLICE):
            if start:
                out += b","
            out += _encode_slice(value[start:start + SLICE]).encode("utf-8")
            yield
        out += b"]"
    else:
        out += _encode(value).encode("utf-8")


def _encode_slice(items: list[Any]) -> str:
    """``items`` as JSON array elements (no brackets).  Nodes, edges and events
    carry attribute values from the host program (task meta, provider attrs),
    and one that JSON cannot take (a dict that contains itself, a tuple as a
    key) must not cost the whole snapshot: that item's ``attrs`` are replaced
    by a ``peeps_error`` saying why, or the item is left out."""
    encoded = [i for i, item in enumerate(items) if type(item) is Encoded]
    if not encoded:
        return _encode_plain(items)
    parts: list[str] = []
    start = 0
    for i in encoded:
        if i > start:
            parts.append(_encode_plain(items[start:i]))
        parts.append(items[i].json)
        start = i + 1
    if start < len(items):
        parts.append(_encode_plain(items[start:]))
    return ",".join([part for part in parts if part])


def _encode_plain(items: list[Any]) -> str:
    """:func:`_encode_slice` for items none of which is :class:`Encoded`."""
    global _warned_unencodable
    try:
        return _encode(items)[1:-1]
    except (ValueError, TypeError, RecursionError):
        pass
    parts: list[str] = []
    for item in items:
        try:
            parts.append(_encode(item))
            continue
        except (ValueError, TypeError, RecursionError) as exc:
            error = exc
        if not _warned_unencodable:
            _warned_unencodable = True
            log.warning("peeps: an entity's attributes could not be encoded as JSON (%r); "
                        "such entities are sent with attrs {\"peeps_error\": ...} instead "
                        "(logged once)", error)
        if isinstance(item, dict) and "attrs" in item:
            replaced = dict(item)
            replaced["attrs"] = {"peeps_error": f"attributes not encodable as JSON: {error}"}
            with contextlib.suppress(ValueError, TypeError, RecursionError):
                parts.append(_encode(replaced))
    return ",".join(parts)


def encode_reply_frame(message: dict[str, Any], *,
                       max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytearray:
    """``encode_frame(message)``, in GIL-releasing slices
    (:func:`encode_reply_steps`, handing off between them)."""
    return run_steps(encode_reply_steps(message, max_frame_bytes=max_frame_bytes), hand_off)


def encode_reply_steps(message: dict[str, Any], *,
                       max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Steps[bytearray]:
    """``encode_frame(message)`` as steps, one per slice of a long list.

    Written straight into one growing ``bytearray`` (header first, its length
    filled in at the end): a list of parts joined at the end meant, at 100k
    entities, C calls over 1.6 million parts (the length sum, the join, freeing
    the parts) that each held the GIL for tens of milliseconds.  Large buffers
    grow by ``mremap``, not by copying.  ``socket.sendall`` takes it as it is.
    """
    out = bytearray(HEADER.size)
    yield from _encode_steps(message, out)
    length = len(out) - HEADER.size
    if length > max_frame_bytes:
        raise FrameError(f"frame of {length} bytes exceeds the cap of {max_frame_bytes} bytes")
    HEADER.pack_into(out, 0, length)
    return out


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Automatic garbage collection off for the block, if it was on.

    Global to the process, so kept short (one snapshot).  Limitation: a host
    that switches collection off during that window finds it on again after.
    """
    was_enabled = gc.isenabled()
    if was_enabled:
        gc.disable()
    try:
        yield
    finally:
        if was_enabled and not gc.isenabled():
            gc.enable()


def release_in_slices(graph: dict[str, Any]) -> None:
    """Free a collected graph's long lists a slice at a time, handing off between."""
    run_steps(release_steps(graph), hand_off)


def release_steps(graph: dict[str, Any]) -> Steps[None]:
    """Empty a collected graph's long lists, a slice at a time."""
    for key in ("nodes", "edges", "events"):
        items = graph.get(key)
        if not isinstance(items, list):
            continue
        while len(items) > SLICE:
            del items[-SLICE:]
            yield None
        items.clear()
