"""The shared data model and wire frames (standard library only)."""

from ._model import EDGE_KINDS as EDGE_KINDS
from ._model import Edge as Edge
from ._model import EdgeKind as EdgeKind
from ._model import Event as Event
from ._model import GraphSnapshot as GraphSnapshot
from ._model import Node as Node
from ._model import NodeKind as NodeKind
from ._wire import DEFAULT_MAX_FRAME_BYTES as DEFAULT_MAX_FRAME_BYTES
from ._wire import HEADER as HEADER
from ._wire import PROTOCOL_VERSION as PROTOCOL_VERSION
from ._wire import ErrorFrame as ErrorFrame
from ._wire import FrameError as FrameError
from ._wire import GraphReply as GraphReply
from ._wire import Hello as Hello
from ._wire import SnapshotRequest as SnapshotRequest
from ._wire import decode_body as decode_body
from ._wire import decode_length as decode_length
from ._wire import encode_frame as encode_frame

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "EDGE_KINDS",
    "HEADER",
    "PROTOCOL_VERSION",
    "Edge",
    "EdgeKind",
    "ErrorFrame",
    "Event",
    "FrameError",
    "GraphReply",
    "GraphSnapshot",
    "Hello",
    "Node",
    "NodeKind",
    "SnapshotRequest",
    "decode_body",
    "decode_length",
    "encode_frame",
]
