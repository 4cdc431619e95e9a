"""System boundaries as graph nodes: subprocesses, file operations, blocking calls."""

from ._io import TrackedProcess as TrackedProcess
from ._io import create_subprocess_exec as create_subprocess_exec
from ._io import create_subprocess_shell as create_subprocess_shell
from ._io import read_file as read_file
from ._io import to_thread as to_thread
from ._io import write_file as write_file

__all__ = [
    "TrackedProcess",
    "create_subprocess_exec",
    "create_subprocess_shell",
    "read_file",
    "to_thread",
    "write_file",
]
