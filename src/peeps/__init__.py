"""peeps: a graph-first causality debugger for asyncio and threaded services.

The public API is re-exported here; implementation lives in underscored modules.
"""

__version__ = "0.1.0"

from . import rpc as rpc
from . import shared_memory as shared_memory
from . import tasks as tasks
from ._api import init as init
from ._api import init_named as init_named
from ._api import is_enabled as is_enabled
from ._api import shutdown as shutdown
from ._channel import Channel as Channel
from ._channel import channel as channel
from ._connections import open_connection as open_connection
from ._connections import open_unix_connection as open_unix_connection
from ._connections import start_server as start_server
from ._connections import start_unix_server as start_unix_server
from ._peep import peep as peep
from ._providers import providers as providers
from ._providers import register_provider as register_provider
from ._providers import unregister_provider as unregister_provider
from ._redact import DEFAULT_PATTERNS as DEFAULT_REDACT_PATTERNS
from ._shm import shm as shm
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
    "open_connection",
    "open_unix_connection",
    "peep",
    "providers",
    "register_provider",
    "rpc",
    "shared_memory",
    "shm",
    "shutdown",
    "sleep",
    "start_server",
    "start_unix_server",
    "tasks",
    "unregister_provider",
]
