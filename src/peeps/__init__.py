"""peeps: a graph-first causality debugger for asyncio and threaded services.

The public API is re-exported here; implementation lives in underscored modules.
"""

__version__ = "0.1.0"

from . import io as io
from . import rpc as rpc
from . import shared_memory as shared_memory
from . import tasks as tasks
from ._api import init as init
from ._api import init_named as init_named
from ._api import is_enabled as is_enabled
from ._api import shutdown as shutdown
from ._autotrack import install_task_factory as install_task_factory
from ._autotrack import uninstall_task_factory as uninstall_task_factory
from ._channel import Channel as Channel
from ._channel import ChannelClosed as ChannelClosed
from ._channel import OneshotClosed as OneshotClosed
from ._channel import Watch as Watch
from ._channel import channel as channel
from ._channel import oneshot as oneshot
from ._channel import watch as watch
from ._connections import open_connection as open_connection
from ._connections import open_unix_connection as open_unix_connection
from ._connections import start_server as start_server
from ._connections import start_unix_server as start_unix_server
from ._lockdep import find_deadlocks as find_deadlocks
from ._lockdep import reports as lock_order_reports
from ._patch import patch as patch
from ._patch import unpatch as unpatch
from ._peep import peep as peep
from ._providers import current_node_id as current_node_id
from ._providers import providers as providers
from ._providers import register_provider as register_provider
from ._providers import unregister_provider as unregister_provider
from ._redact import DEFAULT_PATTERNS as DEFAULT_REDACT_PATTERNS
from ._shm import shm as shm
from ._snapshot import collect_graph as collect_graph
from ._sync import BoundedSemaphore as BoundedSemaphore
from ._sync import Condition as Condition
from ._sync import Event as Event
from ._sync import Lock as Lock
from ._sync import Notify as Notify
from ._sync import OnceCell as OnceCell
from ._sync import RWLock as RWLock
from ._sync import Semaphore as Semaphore
from ._thread_locks import ThreadBoundedSemaphore as ThreadBoundedSemaphore
from ._thread_locks import ThreadCondition as ThreadCondition
from ._thread_locks import ThreadLock as ThreadLock
from ._thread_locks import ThreadRLock as ThreadRLock
from ._thread_locks import ThreadRWLock as ThreadRWLock
from ._thread_locks import ThreadSemaphore as ThreadSemaphore
from ._threads import run_in_executor as run_in_executor
from ._threads import sampler_stats as sampler_stats
from ._threads import start_sampler as start_sampler
from ._threads import stop_sampler as stop_sampler
from ._threads import to_thread as to_thread
from ._timers import interval as interval
from ._timers import sleep as sleep
from ._timers import timeout as timeout
from ._watchdog import watch_loop as watch_loop

__all__ = [
    "DEFAULT_REDACT_PATTERNS",
    "BoundedSemaphore",
    "Channel",
    "ChannelClosed",
    "Condition",
    "Event",
    "Lock",
    "Notify",
    "OnceCell",
    "OneshotClosed",
    "RWLock",
    "Semaphore",
    "ThreadBoundedSemaphore",
    "ThreadCondition",
    "ThreadLock",
    "ThreadRLock",
    "ThreadRWLock",
    "ThreadSemaphore",
    "Watch",
    "__version__",
    "channel",
    "collect_graph",
    "current_node_id",
    "find_deadlocks",
    "init",
    "init_named",
    "install_task_factory",
    "interval",
    "io",
    "is_enabled",
    "lock_order_reports",
    "oneshot",
    "open_connection",
    "open_unix_connection",
    "patch",
    "peep",
    "providers",
    "register_provider",
    "rpc",
    "run_in_executor",
    "sampler_stats",
    "shared_memory",
    "shm",
    "shutdown",
    "sleep",
    "start_sampler",
    "start_server",
    "start_unix_server",
    "stop_sampler",
    "tasks",
    "timeout",
    "to_thread",
    "uninstall_task_factory",
    "unpatch",
    "unregister_provider",
    "watch",
    "watch_loop",
]
