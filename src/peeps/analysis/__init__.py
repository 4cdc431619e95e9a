"""Suspects over one snapshot's graph: deadlocks, long waits, full channels, contention.

Pure functions over plain node/edge dictionaries (standard library only), shared
by the server (``/api/snapshots/{id}/suspects``), the CLI and the pytest plugin.
"""

from ._crossproc import join_cross_process as join_cross_process
from ._format import describe_node as describe_node
from ._format import format_arc as format_arc
from ._format import format_chain as format_chain
from ._format import format_duration_ns as format_duration_ns
from ._format import format_wait_chain as format_wait_chain
from ._format import node_location as node_location
from ._graph import GraphIndex as GraphIndex
from ._graph import NodeKey as NodeKey
from ._graph import WaitArc as WaitArc
from ._suspects import Severity as Severity
from ._suspects import Suspect as Suspect
from ._suspects import Thresholds as Thresholds
from ._suspects import find_contended as find_contended
from ._suspects import find_deadlocks as find_deadlocks
from ._suspects import find_full_channels as find_full_channels
from ._suspects import find_long_waits as find_long_waits
from ._suspects import find_loop_stalls as find_loop_stalls
from ._suspects import find_suspects as find_suspects
from ._suspects import find_thread_verdicts as find_thread_verdicts
from ._suspects import rank as rank

__all__ = [
    "GraphIndex",
    "NodeKey",
    "Severity",
    "Suspect",
    "Thresholds",
    "WaitArc",
    "describe_node",
    "find_contended",
    "find_deadlocks",
    "find_full_channels",
    "find_long_waits",
    "find_loop_stalls",
    "find_suspects",
    "find_thread_verdicts",
    "format_arc",
    "format_chain",
    "format_duration_ns",
    "format_wait_chain",
    "join_cross_process",
    "node_location",
    "rank",
]
