"""Configuration: flags beat environment beat defaults; the docs list every setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from peeps.web import ConfigError, ServerConfig, load_config
from peeps.web._config import SETTINGS, parse_hostport
from peeps.web._server import check_exposure

DOCS = Path(__file__).resolve().parents[2] / "docs" / "server.md"


def test_defaults() -> None:
    config = load_config([], {})
    assert config == ServerConfig()
    assert config.listen_addr == ("127.0.0.1", 9119) and config.http_addr == ("127.0.0.1", 9120)


def test_flag_beats_environment() -> None:
    env = {"PEEPS_SNAPSHOT_TIMEOUT_MS": "100", "PEEPS_DB": "/tmp/env.sqlite",
           "PEEPS_ALLOWED_HOSTS": "a.example, B.example", "PEEPS_INSECURE_NO_TOKEN": "yes"}
    config = load_config(["--snapshot-timeout-ms", "250"], env)
    assert config.snapshot_timeout_ms == 250 and config.db == "/tmp/env.sqlite"
    assert config.allowed_hosts == ("a.example", "b.example")
    assert config.insecure_no_token is True
    assert load_config(["--insecure-no-token"], {}).insecure_no_token is True


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--snapshot-timeout-ms", "x"], {}, "--snapshot-timeout-ms"),
    ([], {"PEEPS_RETAIN_SNAPSHOTS": "0"}, "retain_snapshots must be positive"),
    ([], {"PEEPS_LISTEN": "nope"}, "listen address must be host:port"),
    ([], {"PEEPS_HTTP": "127.0.0.1:99999"}, "http port out of range"),
    ([], {"PEEPS_INSECURE_NO_TOKEN": "maybe"}, "PEEPS_INSECURE_NO_TOKEN"),
    ([], {"PEEPS_SNAPSHOT_INTERVAL_S": "-1"}, "snapshot_interval_s"),
])
def test_bad_values(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(argv, env)


def test_ipv6_addresses() -> None:
    assert parse_hostport("[::1]:0", "listen") == ("::1", 0)


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    for setting in SETTINGS:
        assert f"| `{setting.env}` | `{setting.flag}` |" in text, setting.env


def test_exposure_needs_a_token_or_an_explicit_opt_out() -> None:
    check_exposure(ServerConfig())
    exposed = ServerConfig(http="0.0.0.0:9120")
    with pytest.raises(ConfigError, match="without a token"):
        check_exposure(exposed)
    check_exposure(ServerConfig(http="0.0.0.0:9120", token="s3cret"))
    check_exposure(ServerConfig(listen="192.0.2.1:9119", insecure_no_token=True))


def test_console_script_and_module_help() -> None:
    script = Path(sys.executable).parent / "peeps-web"
    commands = [[sys.executable, "-m", "peeps.web", "--help"]]
    if script.exists():
        commands.append([str(script), "--help"])
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
        assert "PEEPS_SNAPSHOT_TIMEOUT_MS" in result.stdout
