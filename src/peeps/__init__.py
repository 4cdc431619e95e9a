"""peeps: a graph-first causality debugger for asyncio and threaded services.

The public API is re-exported here; implementation lives in underscored modules.
"""

__version__ = "0.1.0"

from . import tasks as tasks
from ._api import init as init
from ._api import init_named as init_named
from ._api import is_enabled as is_enabled
from ._api import shutdown as shutdown
from ._channel import Channel as Channel
from ._channel import channel as channel
from ._peep import peep as peep
from ._redact import DEFAULT_PATTERNS as DEFAULT_REDACT_PATTERNS
from ._snapshot import collect_graph as collect_graph
from ._timers import sleep as sleep

__all__ = [
    "DEFAULT_REDACT_PATTERNS",
    "Channel",
    "__version__",
    "channel",
    "collect_graph",
    "init",
    "init_named",
    "is_enabled",
    "peep",
    "shutdown",
    "sleep",
    "tasks",
]
