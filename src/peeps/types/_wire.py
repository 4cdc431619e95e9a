"""Wire protocol between an instrumented process and ``peeps-web``.

Every frame is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON (an object with a ``type`` field).  The client connects and sends ``hello``;
the server sends ``snapshot_request``; the client answers ``graph_reply``.  The
server may send nothing else: the protocol is read-only by design.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final, Literal, TypedDict

from ._model import GraphSnapshot

PROTOCOL_VERSION: Final = 1
#: Frames larger than this are refused by both sides (configurable on each side).
DEFAULT_MAX_FRAME_BYTES: Final = 64 * 1024 * 1024
HEADER: Final = struct.Struct(">I")


class Hello(TypedDict, total=False):
    type: Literal["hello"]
    protocol_version: int
    process_name: str
    pid: int
    proc_key: str
    peeps_version: str
    #: Shared secret; required by servers that listen beyond loopback.
    token: str


class SnapshotRequest(TypedDict):
    type: Literal["snapshot_request"]
    snapshot_id: int
    timeout_ms: int


class GraphReply(TypedDict):
    type: Literal["graph_reply"]
    snapshot_id: int
    process: str
    pid: int
    graph: GraphSnapshot


class ErrorFrame(TypedDict):
    """Sent by the server just before it closes a connection it refuses."""

    type: Literal["error"]
    message: str


class FrameError(ValueError):
    """A frame that cannot be accepted (too large, not JSON, wrong shape)."""


def encode_frame(message: dict[str, Any] | Hello | SnapshotRequest | GraphReply | ErrorFrame,
                 *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """Serialize one message as a length-prefixed frame."""
    body = json.dumps(message, separators=(",", ":"), default=_json_default).encode("utf-8")
    if len(body) > max_frame_bytes:
        raise FrameError(f"frame of {len(body)} bytes exceeds the cap of {max_frame_bytes} bytes")
    return HEADER.pack(len(body)) + body


def decode_length(header: bytes, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> int:
    """Read a frame header, refusing lengths of zero or above the cap."""
    if len(header) != HEADER.size:
        raise FrameError(f"frame header must be {HEADER.size} bytes, got {len(header)}")
    (length,) = HEADER.unpack(header)
    if length == 0:
        raise FrameError("empty frame")
    if length > max_frame_bytes:
        raise FrameError(f"declared frame length {length} exceeds the cap of {max_frame_bytes} bytes")
    return int(length)


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse a frame body into a message object with a string ``type``."""
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FrameError(f"frame is not UTF-8 JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise FrameError("frame must be a JSON object with a string 'type'")
    return message


def _json_default(value: object) -> object:
    # Attribute values are meant to be JSON already; anything else is shown, not lost.
    return repr(value)
