"""The ``peeps-web`` dashboard server: TCP ingest, SQLite store, HTTP API and UI.

Run it with ``peeps-web`` or ``python -m peeps.web``; see ``docs/server.md``.
"""

from ._config import ConfigError as ConfigError
from ._config import ServerConfig as ServerConfig
from ._config import load_config as load_config
from ._server import PeepsWebServer as PeepsWebServer
from ._server import serve as serve
