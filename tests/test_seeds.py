"""Both seed documents, run as written, on one server at the same time.

Seed 2 (the WebSocket furniture broker) is driven with the real ``wscat``
from the npm registry; ``scripts/test.sh`` installs it into ``.tools/``.
Seed 1 (the TCP flow) is driven line by line, over IPv4 and IPv6, with the
console's ``send <evento> <mensaje>``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT, LineClient, LogLines, ServerProcess, running_server

SEED_MESSAGES = [
    '{"type": "furniture_created", "furniture": {"furniture_id": "test123", "nombre": "Silla Test", "descripcion": "Silla de prueba", "altura": 90, "ancho": 45, "material": "plastico", "autor_username": "TestUser"}}',  # noqa: E501
    '{"type": "furniture_updated", "furniture": {"furniture_id": "test123", "nombre": "Silla Test Modificada", "descripcion": "Silla modificada", "altura": 95, "ancho": 50, "material": "madera", "autor_username": "TestUser"}}',  # noqa: E501
    '{"type": "furniture_deleted", "furniture": {"furniture_id": "test123", "nombre": "Silla Test", "descripcion": "Silla de prueba", "altura": 90, "ancho": 45, "material": "plastico", "autor_username": "TestUser"}}',  # noqa: E501
]
JSON_IN_LINE = re.compile(r"(\{.*\})")


def find_wscat() -> str:
    for candidate in (
        os.environ.get("LIVENOTIFY_WSCAT"),
        str(ROOT / ".tools" / "node_modules" / ".bin" / "wscat"),
        shutil.which("wscat"),
    ):
        if candidate and Path(candidate).exists():
            return candidate
    message = "wscat not installed: run scripts/test.sh (it installs wscat into .tools/)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class Wscat:
    """A real ``wscat -c URL`` with its stdin and stdout piped."""

    def __init__(self, url: str) -> None:
        self.proc = subprocess.Popen(
            [find_wscat(), "--no-color", "-c", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.objects: queue.Queue[dict[str, Any]] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            m = JSON_IN_LINE.search(line)
            if m:
                try:
                    self.objects.put(json.loads(m.group(1)))
                except ValueError:
                    pass

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def next(self, timeout: float = 15.0) -> dict[str, Any]:
        try:
            return self.objects.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"wscat printed nothing new: {''.join(self.output)!r}") from None

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def dual_server() -> Any:
    with running_server("--host", "::", host="::") as srv:
        yield srv


def test_seed2_wscat_walkthrough(dual_server: ServerProcess) -> None:
    listener = Wscat(f"ws://localhost:{dual_server.ws_port}")
    producer = Wscat(f"ws://127.0.0.1:{dual_server.ws_port}")
    try:
        assert listener.next()["type"] == "welcome"
        assert producer.next()["type"] == "welcome"
        producer.type('{"type": "ping"}')
        pong = producer.next()
        assert pong["type"] == "pong"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", pong["timestamp"])
        for text in SEED_MESSAGES:
            producer.type(text)
        for text in SEED_MESSAGES:
            sent = json.loads(text)
            got = listener.next()
            assert {k: got[k] for k in sent} == sent  # unchanged
        # The producer gets no echo of its own messages: its next line is a pong.
        producer.type('{"type": "ping"}')
        assert producer.next()["type"] == "pong"
    finally:
        listener.close()
        producer.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_seed1_tcp_flow(dual_server: ServerProcess, host: str) -> None:
    with LineClient(host, dual_server.tcp_port) as client:
        welcome = client.recv()
        assert welcome["events"] == ["furniture_created", "furniture_updated", "furniture_deleted"]
        client.send_line("register maria@example.com")
        assert client.recv()["type"] == "registered"
        client.send_line("subscribe furniture_updated")
        client.recv_type("subscribed")
        dual_server.command("send furniture_updated mesa actualizada", r"delivered=[1-9]")
        got = client.recv()
        assert got["type"] == "furniture_updated" and got["message"] == "mesa actualizada"
        client.send_line("exit")
        assert client.recv()["type"] == "goodbye"


@pytest.mark.parametrize(("listen", "connect"), [("::", "::1"), ("::", "127.0.0.1"),
                                                 ("127.0.0.1", "127.0.0.1")])  # fmt: skip
def test_seed1_scripts_as_written(listen: str, connect: str) -> None:
    """``python server.py --host H --port P`` and ``python client.py --host H --port P``."""
    with running_server(host=listen, script="server.py") as srv:
        srv.wait_log(rf"listening tcp .*:{srv.tcp_port}")  # "indicando dirección y puerto"
        argv = [sys.executable, str(ROOT / "client.py"), "--host", connect]
        client = subprocess.Popen(
            [*argv, "--port", str(srv.tcp_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        out = LogLines(client.stdout)
        try:
            assert client.stdin is not None
            assert "furniture_created" in out.wait("events").string
            client.stdin.write("ana@example.com\nsubscribe furniture_created\n")
            client.stdin.flush()
            out.wait("registered as ana@example.com")
            out.wait("subscribed to: furniture_created")
            srv.command("send furniture_created mesa nueva", r"delivered=1")
            assert "mesa nueva" in out.wait("furniture_created:").string
            client.stdin.write("exit\n")
            client.stdin.close()
            assert client.wait(15) == 0
        finally:
            if client.poll() is None:
                client.kill()
                client.wait(5)


def test_seed1_ipv4_only_server_refuses_ipv6() -> None:
    with running_server(host="127.0.0.1", script="server.py") as srv:
        with pytest.raises(OSError):
            socket.create_connection(("::1", srv.tcp_port), timeout=5).close()
        with LineClient("127.0.0.1", srv.tcp_port) as client:
            assert client.recv()["type"] == "welcome"


def test_seed2_websocket_server_script() -> None:
    """``python websocket_server.py`` serves ``ws://localhost:<port>`` as the seed describes."""
    with running_server(host="::", script="websocket_server.py") as srv:
        listener = Wscat(f"ws://localhost:{srv.ws_port}")
        try:
            assert listener.next()["type"] == "welcome"
            listener.type('{"type": "ping"}')
            assert listener.next()["type"] == "pong"
        finally:
            listener.close()
