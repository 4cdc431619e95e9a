"""Shared-memory segments that appear in the graph (``shm_segment`` nodes).

``peeps.shared_memory.SharedMemory`` is a drop-in for
``multiprocessing.shared_memory.SharedMemory``; ``peeps.shm(...)`` is the
short form.  See ``docs/providers.md``.
"""

from ._shm import SharedMemory as SharedMemory
from ._shm import shm as shm

__all__ = ["SharedMemory", "shm"]
