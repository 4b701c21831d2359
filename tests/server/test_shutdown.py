"""Graceful exit: console ``exit``, SIGTERM and SIGINT drain and exit 0;
end of stdin ends only the console."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.helpers import LineClient, running_server, send_burst, serve_command


@pytest.mark.parametrize("how", ["exit", "SIGTERM", "SIGINT"])
def test_graceful_shutdown_says_goodbye(how: str) -> None:
    with running_server() as srv:
        tcp = LineClient("127.0.0.1", srv.tcp_port)
        tcp.recv()
        with connect(f"ws://127.0.0.1:{srv.ws_port}/") as ws:
            ws.recv(timeout=10)
            if how == "exit":
                srv.console("exit")
            else:
                srv.proc.send_signal(getattr(signal, how))
            assert tcp.recv() == {"type": "goodbye", "reason": "shutting_down"}
            assert tcp.file.readline() == b""  # EOF after the goodbye
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 1001
        assert srv.proc.wait(15) == 0
        srv.wait_log(r"stopped")
        tcp.close()


def test_end_of_stdin_ends_only_the_console() -> None:
    with running_server() as srv:
        assert srv.proc.stdin is not None
        srv.proc.stdin.close()
        srv.wait_log(r"console: end of input")
        with LineClient("127.0.0.1", srv.tcp_port) as c:
            assert c.recv()["type"] == "welcome"
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(15) == 0


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with running_server() as srv:
        argv = serve_command(
            "--host", "127.0.0.1", "--port", str(srv.tcp_port), "--ws-port", "0",
            "--db", str(tmp_path / "s.db"), "--data-dir", str(tmp_path),
        )  # fmt: skip
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
        assert result.returncode == 2
        assert "Address already in use" in result.stderr
        assert "Traceback" not in result.stderr


def test_console_help_and_unknown() -> None:
    with running_server() as srv:
        srv.command("help", r"send <event> <message>")
        srv.command("frobnicate", r"unknown command 'frobnicate'")
        srv.command("send nope hi", r"unknown event 'nope'")
        srv.command("send furniture_created", r"usage: send <event> <message>")
        srv.command("events", r"furniture_created furniture_updated furniture_deleted")


def test_console_survives_bytes_that_are_not_utf8() -> None:
    # A strict stdin decoder would raise on \xe9 and end the server with it.
    with running_server(env={"PYTHONIOENCODING": "utf-8:strict"}) as srv:
        assert srv.proc.stdin is not None
        srv.proc.stdin.buffer.write(b"send furniture_created caf\xe9\n")  # type: ignore[attr-defined]
        srv.proc.stdin.flush()
        srv.wait_log(r"sent furniture_created id=\w+ delivered=0")
        srv.command("stats", r"connections=0 ")
        assert srv.proc.poll() is None


def test_full_queue_under_drop_policy_still_ends_with_dropped_then_goodbye() -> None:
    """A subscriber that stopped reading (``--slow-policy drop``, its queue
    full) and reads again once the server shuts down: every notification is
    either delivered or counted in a ``dropped`` notice, and ``goodbye``
    comes last, past the full queue."""
    with (
        running_server(
            "--events", "bench", "--queue-size", "64", "--slow-policy", "drop",
            env={"LIVENOTIFY_RATE_LIMIT": "0"},
        ) as srv,
        LineClient("127.0.0.1", srv.tcp_port) as publisher,
        LineClient("127.0.0.1", srv.tcp_port) as fast,
        socket.socket() as slow_sock,
    ):  # fmt: skip
        slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow_sock.settimeout(10)
        slow_sock.connect(("127.0.0.1", srv.tcp_port))
        slow = slow_sock.makefile("rb")
        for line in (publisher.file.readline(), fast.file.readline(), slow.readline()):
            assert json.loads(line)["type"] == "welcome"
        for sock in (fast.sock, slow_sock):
            sock.sendall(b"subscribe bench\n")
        fast.recv_type("subscribed")
        assert json.loads(slow.readline())["type"] == "subscribed"
        send_burst(publisher, "bench", 20_000)
        assert fast.recv()["data"] == {"seq": 0}
        srv.proc.send_signal(signal.SIGTERM)
        # The fast one's last line is its goodbye: every publish handled is in.
        handled = 0
        while (msg := fast.recv())["type"] != "goodbye":
            handled = msg["data"]["seq"] + 1
        got = [json.loads(line) for line in slow]  # the slow one reads at last
        assert got[-1] == {"type": "goodbye", "reason": "shutting_down"}, got[-3:]
        delivered = [m["data"]["seq"] for m in got if m["type"] == "bench"]
        dropped = sum(m["count"] for m in got if m["type"] == "dropped")
        assert delivered == sorted(delivered) and dropped > 0
        assert len(delivered) + dropped == handled
        assert srv.proc.wait(15) == 0
