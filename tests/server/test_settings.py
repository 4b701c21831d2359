"""Settings: one declaration, flags > environment > file > defaults, one-line errors."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from livenotify import settings
from livenotify.config import Config, SlowPolicy
from livenotify.settings import SettingError
from tests.helpers import ROOT


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    full = {k: v for k, v in os.environ.items() if not k.startswith("LIVENOTIFY_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "livenotify", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=full,
        cwd=str(cwd or ROOT),
    )


def parse(argv: list[str], env: dict[str, str] | None = None) -> tuple[Config, dict[str, str]]:
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    return settings.load(parser.parse_args(argv), env or {})


BAD_FLAGS = [
    (["--port", "70000"], "--port: 70000 is out of range 0..65535"),
    (["--ws-port", "-1"], "--ws-port: -1 is out of range 0..65535"),
    (["--port", "http"], "--port: 'http' is not an integer"),
    (["--log-level", "foo"], "--log-level: 'foo' is not one of DEBUG, INFO, WARNING, ERROR"),
    (["--log-format", "xml"], "--log-format: 'xml' is not one of text, json"),
    (["--idle-timeout", "-5"], "--idle-timeout: -5 is out of range 0.1..86400"),
    (["--idle-timeout", "nan"], "--idle-timeout: 'nan' is not a finite number"),
    (["--queue-size", "0"], "--queue-size: 0 is out of range 1..10000000"),
    (["--slow-policy", "ignore"], "--slow-policy: 'ignore' is not one of disconnect, drop"),
    (["--rate-limit", "-1"], "--rate-limit: -1 is out of range 0..1000000000"),
    (["--grace-period", "1e9"], "--grace-period: 1000000000 is out of range 0..3600"),
    (["--events", "ping"], "--events: 'ping' is a protocol message type"),
    (["--events", ","], "--events: empty event list"),
    (["--max-connections", "0"], "--max-connections: 0 is out of range 1..10000000"),
    (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--port"], "--port: expected one argument"),
    (["--port", "18888", "--ws-port", "18888"], "--port and --ws-port are both 18888"),
    (["--backend", "http://cache:6379"], "--backend: expected redis://host:port/db"),
    (["--backend-prefix", "a b"], "--backend-prefix: 1-64 letters, digits"),
]
BAD_ENV = [
    ({"LIVENOTIFY_BACKEND": "redis:/x"}, "LIVENOTIFY_BACKEND: expected redis://host:port/db"),
    ({"LIVENOTIFY_PORT": "70000"}, "LIVENOTIFY_PORT: 70000 is out of range 0..65535"),
    ({"LIVENOTIFY_LOG_LEVEL": "loud"}, "LIVENOTIFY_LOG_LEVEL: 'loud' is not one of"),
    ({"LIVENOTIFY_QUEUE_SIZE": "0"}, "LIVENOTIFY_QUEUE_SIZE: 0 is out of range"),
    ({"LIVENOTIFY_NO_WORKER": "maybe"}, "LIVENOTIFY_NO_WORKER: 'maybe' is not a switch value"),
    ({"LIVENOTIFY_CONFIG": "/nonexistent.toml"}, "--config /nonexistent.toml: No such file"),
]
BAD_FILE = [
    ("port = 70000\n", "port: 70000 is out of range 0..65535"),
    ('port = "8888"\n', "port: '8888' is not an integer"),
    ("portt = 1\n", "unknown key 'portt'"),
    ("events = [1, 2]\n", "events: [1, 2] is not a list of strings"),
    ("no_worker = 1\n", "no_worker: 1 is not true or false"),
    ("idle_timeout = -5\n", "idle_timeout: -5 is out of range 0.1..86400"),
    ("port = \n", "Invalid value"),
]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], expected: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("livenotify: error: "), lines[0]
    assert expected in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "env", "text", "expected"),
    [(a, {}, None, e) for a, e in BAD_FLAGS]
    + [([], env, None, e) for env, e in BAD_ENV]
    + [([], {}, text, e) for text, e in BAD_FILE],
)
def test_bad_setting_is_one_line_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], text: str | None, expected: str
) -> None:
    argv = ["serve", "--db", str(tmp_path / "s.db"), "--data-dir", str(tmp_path / "d"), *args]
    if text is not None:
        (tmp_path / "livenotify.toml").write_text(text)
        argv += ["--config", str(tmp_path / "livenotify.toml")]
    assert_one_line_error(run_cli(*argv, env=env), expected)


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    cfg = tmp_path / "livenotify.toml"
    cfg.write_text(
        'port = 1111\nws_port = 2222\nqueue_size = 7\nevents = ["a", "b"]\n'
        "no_worker = true\nrate_limit = 5\n"
    )
    config, origins = parse(
        ["--config", str(cfg), "--port", "3333"],
        {"LIVENOTIFY_PORT": "4444", "LIVENOTIFY_WS_PORT": "5555"},
    )
    assert config.port == 3333 and origins["port"] == "flag --port"
    assert config.ws_port == 5555 and origins["ws_port"] == "env LIVENOTIFY_WS_PORT"
    assert config.queue_size == 7 and origins["queue_size"] == f"file {cfg}"
    assert config.events == ("a", "b")
    assert config.worker is False
    assert config.limits.rate_per_second == 5.0 and origins["rate_limit"] == f"file {cfg}"
    assert config.idle_timeout == 60.0 and origins["idle_timeout"] == "default"


def test_every_old_flag_and_env_still_works() -> None:
    argv = [
        "--host", "127.0.0.1", "--port", "1", "--ws-port", "2", "--db", "x.db",
        "--data-dir", "dd", "--events", "a,b", "--idle-timeout", "3",
        "--handshake-timeout", "4", "--write-timeout", "5", "--queue-size", "6",
        "--slow-policy", "drop", "--broker", "redis://h/1", "--no-worker",
        "--publish-token", "t", "--grace-period", "7", "--log-level", "debug",
        "--max-message-bytes", "1000", "--max-json-depth", "8",
        "--max-events-per-message", "9", "--max-subscriptions", "10",
        "--max-connections", "11", "--max-connections-per-ip", "12",
        "--rate-limit", "0", "--rate-burst", "13",
    ]  # fmt: skip
    config, _ = parse(argv)
    lim = config.limits
    assert (config.host, config.port, config.ws_port, config.db) == ("127.0.0.1", 1, 2, "x.db")
    assert (config.data_dir, config.events) == ("dd", ("a", "b"))
    assert (config.idle_timeout, config.handshake_timeout, config.write_timeout) == (3, 4, 5)
    assert (config.queue_size, config.slow_policy) == (6, SlowPolicy.DROP)
    assert (config.broker, config.worker, config.publish_token) == ("redis://h/1", False, "t")
    assert (config.grace_period, config.log_level) == (7, "DEBUG")
    assert (lim.max_message_bytes, lim.max_json_depth, lim.max_events_per_message) == (1000, 8, 9)
    assert (lim.max_subscriptions, lim.max_connections, lim.max_connections_per_ip) == (10, 11, 12)
    assert (lim.rate_per_second, lim.rate_burst) == (0.0, 13)
    env = {
        "LIVENOTIFY_WS_PORT": "9", "LIVENOTIFY_NO_WORKER": "1", "LIVENOTIFY_BROKER": "",
        "LIVENOTIFY_PUBLISH_TOKEN": "s", "LIVENOTIFY_RATE_LIMIT": "2.5",
        "LIVENOTIFY_EVENTS": "x, y ,x",
    }  # fmt: skip
    config, _ = parse([], env)
    assert (config.ws_port, config.worker, config.broker) == (9, False, None)
    assert (config.publish_token, config.limits.rate_per_second) == ("s", 2.5)
    assert config.events == ("x", "y")


def test_every_setting_is_declared_with_help_and_numbers_with_a_range() -> None:
    specs = settings.specs()
    assert len({s.flag for s in specs}) == len(specs)
    for spec in specs:
        assert spec.meta.help, f"{spec.flag} has no help"
        if spec.kind in ("int", "float"):
            assert spec.meta.lo is not None and spec.meta.hi is not None, spec.flag
        assert spec.env == "LIVENOTIFY_" + spec.flag[2:].replace("-", "_").upper()


def test_print_config_shows_values_and_origins(tmp_path: Path) -> None:
    cfg = tmp_path / "livenotify.toml"
    cfg.write_text('queue_size = 7\nbroker = "redis://:hunter2@localhost:6379/3"\n')
    proc = run_cli(
        "serve", "--config", str(cfg), "--port", "3333", "--print-config",
        env={"LIVENOTIFY_PUBLISH_TOKEN": "sekrit", "LIVENOTIFY_WS_PORT": "4444"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "port = 3333  # flag --port" in out
    assert "ws_port = 4444  # env LIVENOTIFY_WS_PORT" in out
    assert f"queue_size = 7  # file {cfg}" in out
    assert "idle_timeout = 60.0  # default" in out
    assert 'broker = "redis://:***@localhost:6379/3"' in out
    assert "hunter2" not in out and "sekrit" not in out
    # The output is itself a valid config file.
    import tomllib

    body = "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    assert tomllib.loads(body)["port"] == 3333


def test_config_file_starts_a_server(tmp_path: Path) -> None:
    from tests.helpers import running_server

    cfg = tmp_path / "livenotify.toml"
    cfg.write_text('events = ["alpha", "beta"]\n')
    with running_server("--config", str(cfg)) as server:
        from tests.helpers import LineClient

        client = LineClient("127.0.0.1", server.tcp_port)
        assert client.recv()["events"] == ["alpha", "beta"]


def test_load_rejects_bad_values_in_process() -> None:
    with pytest.raises(SettingError, match=r"^--queue-size: 0 is out of range"):
        parse(["--queue-size", "0"])


def test_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    begin = readme.index("<!-- settings:begin")
    start = readme.index("\n", begin) + 1
    end = readme.index("<!-- settings:end -->")
    assert readme[start:end].strip() == settings.markdown_table(), (
        "README's settings table is stale: regenerate it with python -m livenotify.settings"
    )


def test_backend_and_reuse_port() -> None:
    config, _ = parse(["--reuse-port"], {"LIVENOTIFY_BACKEND": "redis://cache:6379/2"})
    assert config.backend == "redis://cache:6379/2" and config.reuse_port
    assert config.backend_prefix == "livenotify"
    default, _ = parse([])
    assert default.backend is None and not default.reuse_port
