"""Process-wide configuration: whether peeps is on, the process identity, limits.

Read once from the environment at import; ``peeps.init`` may override it.  The
hot paths read the module-level ``STATE`` object's attributes directly.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field

#: Environment variables the library reads (documented in docs/configuration.md).
ENV_DISABLE = "PEEPS_DISABLE"
ENV_DASHBOARD = "PEEPS_DASHBOARD"
ENV_PROCESS_NAME = "PEEPS_PROCESS_NAME"
ENV_AUTO = "PEEPS_AUTO"
ENV_MAX_FRAME_BYTES = "PEEPS_MAX_FRAME_BYTES"
ENV_TOKEN = "PEEPS_TOKEN"

_TRUE = {"1", "true", "yes", "on"}


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in _TRUE


def sanitize_process_name(name: str) -> str:
    """Make a process name safe to use inside a ``proc_key``."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    return cleaned[:64] or "process"


def _default_process_name() -> str:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "python"
    base = os.path.basename(argv0.rstrip("/"))
    if base in ("__main__.py", "-c", "-m", ""):
        base = os.path.basename(os.path.dirname(os.path.abspath(argv0))) or "python"
    return base.removesuffix(".py") or "python"


@dataclass
class State:
    """Mutable process-wide state.  One instance, ``STATE``."""

    #: False makes every wrapper created from now on a plain pass-through.
    enabled: bool = True
    process_name: str = field(default_factory=lambda: _default_process_name())
    pid: int = field(default_factory=os.getpid)
    initialized: bool = False
    #: How many finished tasks to keep visible, and for how long.
    finished_task_retention: int = 256
    finished_task_max_age_ns: int = 300 * 1_000_000_000
    #: Runtime events kept per process (ring buffer).
    event_buffer_size: int = 2048

    @property
    def proc_key(self) -> str:
        return f"{sanitize_process_name(self.process_name)}-{self.pid}"


STATE = State(enabled=not env_flag(ENV_DISABLE))
if os.environ.get(ENV_PROCESS_NAME):
    STATE.process_name = os.environ[ENV_PROCESS_NAME]
