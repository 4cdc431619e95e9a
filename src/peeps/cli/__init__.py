"""The ``peeps`` terminal CLI: ``ps``, ``tree``, ``suspects``, ``sql``, ``jump``
against a running ``peeps-web``, through its public HTTP API only."""

from ._client import CliError as CliError
from ._client import PeepsClient as PeepsClient
from ._main import main as main

__all__ = ["CliError", "PeepsClient", "main"]
