"""Task helpers: spawn named, tracked tasks."""

from ._tasks import spawn_tracked as spawn_tracked

__all__ = ["spawn_tracked"]
