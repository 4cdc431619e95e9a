"""Server configuration: every setting is a CLI flag and a ``PEEPS_*`` variable.

Precedence: command-line flag, then environment variable, then default.  The
single table of settings is ``SETTINGS`` below; ``docs/server.md`` mirrors it.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from peeps.types import DEFAULT_MAX_FRAME_BYTES


class ConfigError(ValueError):
    """A setting has a value the server cannot use."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``peeps-web`` can be told.  Times carry their unit."""

    listen: str = "127.0.0.1:9119"
    http: str = "127.0.0.1:9120"
    db: str = "./peeps-web.sqlite"
    snapshot_interval_s: float = 10.0
    snapshot_timeout_ms: int = 5000
    retain_snapshots: int = 500
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    max_connections: int = 1024
    handshake_timeout_s: float = 5.0
    frame_timeout_s: float = 30.0
    sql_timeout_ms: int = 2000
    sql_max_rows: int = 5000
    sql_max_bytes: int = 8 * 1024 * 1024
    sql_max_concurrent: int = 4
    retain_ingest_events: int = 10000
    token: str | None = None
    insecure_no_token: bool = False
    allowed_hosts: tuple[str, ...] = ()
    log_level: str = "INFO"

    @property
    def listen_addr(self) -> tuple[str, int]:
        return parse_hostport(self.listen, "listen")

    @property
    def http_addr(self) -> tuple[str, int]:
        return parse_hostport(self.http, "http")


@dataclass(frozen=True)
class Setting:
    field: str
    env: str
    flag: str
    parse: Callable[[str], Any]
    help: str


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _hosts(value: str) -> tuple[str, ...]:
    return tuple(h.strip().lower() for h in value.split(",") if h.strip())


def _optional_str(value: str) -> str | None:
    return value or None


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("listen", "PEEPS_LISTEN", "--listen", str, "ingest address host:port (port 0 = any free port)"),
    Setting("http", "PEEPS_HTTP", "--http", str, "HTTP UI/API address host:port (port 0 = any free port)"),
    Setting("db", "PEEPS_DB", "--db", str, "SQLite database path"),
    Setting("snapshot_interval_s", "PEEPS_SNAPSHOT_INTERVAL_S", "--snapshot-interval-s", float,
            "seconds between periodic snapshots (0 = off)"),
    Setting("snapshot_timeout_ms", "PEEPS_SNAPSHOT_TIMEOUT_MS", "--snapshot-timeout-ms", int,
            "how long a snapshot waits for replies"),
    Setting("retain_snapshots", "PEEPS_RETAIN_SNAPSHOTS", "--retain-snapshots", int,
            "newest snapshots kept; older ones are deleted"),
    Setting("max_frame_bytes", "PEEPS_MAX_FRAME_BYTES", "--max-frame-bytes", int,
            "largest accepted ingest frame"),
    Setting("max_connections", "PEEPS_MAX_CONNECTIONS", "--max-connections", int,
            "ingest connections accepted at once; more are refused"),
    Setting("handshake_timeout_s", "PEEPS_HANDSHAKE_TIMEOUT_S", "--handshake-timeout-s", float,
            "a hello must arrive within this time of connecting"),
    Setting("frame_timeout_s", "PEEPS_FRAME_TIMEOUT_S", "--frame-timeout-s", float,
            "once a frame header arrives, its body must arrive within this time"),
    Setting("sql_timeout_ms", "PEEPS_SQL_TIMEOUT_MS", "--sql-timeout-ms", int,
            "deadline of one /api/sql query"),
    Setting("sql_max_rows", "PEEPS_SQL_MAX_ROWS", "--sql-max-rows", int,
            "rows returned by /api/sql before truncating"),
    Setting("sql_max_bytes", "PEEPS_SQL_MAX_BYTES", "--sql-max-bytes", int,
            "result bytes returned by /api/sql before truncating; also caps any one value"),
    Setting("sql_max_concurrent", "PEEPS_SQL_MAX_CONCURRENT", "--sql-max-concurrent", int,
            "/api/sql queries running at once; more wait"),
    Setting("retain_ingest_events", "PEEPS_RETAIN_INGEST_EVENTS", "--retain-ingest-events", int,
            "newest ingest_events rows kept"),
    Setting("token", "PEEPS_TOKEN", "--token", _optional_str,
            "shared secret: hello frames and HTTP requests must carry it"),
    Setting("insecure_no_token", "PEEPS_INSECURE_NO_TOKEN", "--insecure-no-token", _bool,
            "allow binding beyond loopback without a token (dangerous)"),
    Setting("allowed_hosts", "PEEPS_ALLOWED_HOSTS", "--allowed-hosts", _hosts,
            "extra Host header values accepted by HTTP (comma-separated)"),
    Setting("log_level", "PEEPS_LOG_LEVEL", "--log-level", str, "logging level"),
)


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """Parse ``host:port`` (``[v6]:port`` for IPv6)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{what} address must be host:port, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{what} address has a bad port: {value!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what} port out of range: {value!r}")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peeps-web",
        description="peeps dashboard server: TCP ingest, SQLite store, HTTP API and UI.",
        epilog="Every flag also has a PEEPS_* environment variable; flags win.",
    )
    for s in SETTINGS:
        default_text = f" [env {s.env}, default {getattr(ServerConfig(), s.field)!r}]"
        if s.parse is _bool:
            parser.add_argument(s.flag, dest=s.field, action="store_const", const="1",
                                default=None, help=s.help + default_text)
        else:
            parser.add_argument(s.flag, dest=s.field, default=None, help=s.help + default_text)
    return parser


def load_config(argv: Sequence[str] | None = None,
                environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Build the configuration from flags and environment; raise ConfigError."""
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = getattr(args, s.field)
        source = s.flag
        if raw is None and s.env in env:
            raw, source = env[s.env], s.env
        if raw is None:
            continue
        try:
            values[s.field] = s.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    config = dataclasses.replace(ServerConfig(), **values)
    validate(config)
    return config


def validate(config: ServerConfig) -> None:
    config.listen_addr  # noqa: B018 - parse for the error
    config.http_addr  # noqa: B018
    positive = ("snapshot_timeout_ms", "retain_snapshots", "max_frame_bytes", "max_connections",
                "handshake_timeout_s", "frame_timeout_s", "sql_timeout_ms",
                "sql_max_rows", "sql_max_bytes", "sql_max_concurrent", "retain_ingest_events")
    for name in positive:
        if getattr(config, name) <= 0:
            raise ConfigError(f"{name} must be positive, got {getattr(config, name)!r}")
    if config.snapshot_interval_s < 0:
        raise ConfigError("snapshot_interval_s must be >= 0")
    if config.max_frame_bytes < 1024:
        raise ConfigError("max_frame_bytes must be at least 1024")
