"""Requests across processes: ``request`` (caller side) and ``response``
(responder side) nodes, joined by the server on a shared span id.

See ``docs/requests.md``.
"""

from ._rpc import CHAIN_ID as CHAIN_ID
from ._rpc import HEADER_NAMES as HEADER_NAMES
from ._rpc import PARENT_SPAN_ID as PARENT_SPAN_ID
from ._rpc import SPAN_ID as SPAN_ID
from ._rpc import Request as Request
from ._rpc import Response as Response
from ._rpc import current_span as current_span
from ._rpc import request as request
from ._rpc import response as response

__all__ = [
    "CHAIN_ID",
    "HEADER_NAMES",
    "PARENT_SPAN_ID",
    "SPAN_ID",
    "Request",
    "Response",
    "current_span",
    "request",
    "response",
]
