"""Start-up refusals name what is wrong: paths, ports, hosts (issue 12.2, 12.4, 12.7)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from .test_settings import assert_one_line_error, run_cli


def serve(tmp_path: Path, *args: str) -> list[str]:
    base = ["serve", "--host", "127.0.0.1", "--port", "0", "--ws-port", "0", "--no-worker"]
    defaults = {"--db": str(tmp_path / "s.db"), "--data-dir": str(tmp_path / "data")}
    for flag, value in defaults.items():
        if flag not in args:
            base += [flag, value]
    return [*base, *args]


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--data-dir", "FILE", "exists and is not a directory"),
        ("--data-dir", "/proc/x", "--data-dir /proc/x: cannot create it in /proc"),
        ("--db", "/proc/x.db", "--db /proc/x.db: cannot create files in /proc"),
    ],
)
def test_bad_paths_refused_up_front(tmp_path: Path, flag: str, value: str, expected: str) -> None:
    (tmp_path / "file").write_text("x")
    value = {"FILE": str(tmp_path / "file"), "DIR": str(tmp_path)}.get(value, value)
    assert_one_line_error(run_cli(*serve(tmp_path, flag, value)), expected)


def test_port_in_use_names_address_and_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for flag in ("--port", "--ws-port"):
            proc = run_cli(*serve(tmp_path, flag, str(port)))
            assert proc.returncode == 2
            assert f"cannot start: 127.0.0.1:{port}: Address already in use" in proc.stderr
            assert "Traceback" not in proc.stderr


def test_unknown_host_is_named(tmp_path: Path) -> None:
    proc = run_cli(*serve(tmp_path, "--host", "no-such-host.invalid"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "cannot start: host 'no-such-host.invalid'" in proc.stderr
