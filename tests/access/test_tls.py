"""TLS on both ports, against a real ``livenotify serve`` with certificates
made by trustme: TCP JSON lines, wss://, https:// publish, the terminal
client and ``livenotify publish``; plain text on a TLS port; bad files."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.sync.client import connect as ws_connect

from livenotify import Publisher
from tests.helpers import ROOT, ServerProcess, running_server

HANDSHAKE_TIMEOUT = 1.0


class Pems:
    def __init__(self, tmp: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("localhost", "127.0.0.1")
        self.ca = tmp / "ca.pem"
        self.cert = tmp / "cert.pem"
        self.key = tmp / "key.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        cert.cert_chain_pems[0].write_to_path(str(self.cert))
        cert.private_key_pem.write_to_path(str(self.key))
        # A key of another certificate: it does not match ours.
        other = ca.issue_cert("localhost")
        self.other_key = tmp / "other-key.pem"
        other.private_key_pem.write_to_path(str(self.other_key))

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> Pems:
    return Pems(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(pems: Pems) -> Iterator[ServerProcess]:
    args = ("--tls-cert", str(pems.cert), "--tls-key", str(pems.key),
            "--handshake-timeout", str(HANDSHAKE_TIMEOUT))  # fmt: skip
    with running_server(*args) as srv:
        yield srv


class TlsLines:
    """A blocking NDJSON client over TLS."""

    def __init__(self, ctx: ssl.SSLContext, port: int, host: str = "localhost") -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock = ctx.wrap_socket(raw, server_hostname=host)
        self.file = self.sock.makefile("rb")

    def send(self, obj: dict[str, Any]) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def recv(self) -> dict[str, Any]:
        raw = self.file.readline()
        if not raw:
            raise EOFError("closed")
        obj: dict[str, Any] = json.loads(raw)
        return obj

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_ready_line_says_wss(server: ServerProcess) -> None:
    server.wait_log(r"ready — wss://127\.0\.0\.1:\d+  tcp 127\.0\.0\.1:\d+")


def test_tcp_json_subscribe_and_receive(server: ServerProcess, pems: Pems) -> None:
    client = TlsLines(pems.context(), server.tcp_port)
    try:
        assert client.recv()["type"] == "welcome"
        client.send({"type": "subscribe", "events": ["furniture_created"]})
        assert client.recv() == {"type": "subscribed", "events": ["furniture_created"]}
        # Publisher over TLS, verifying the server against the test CA.
        with Publisher("localhost", server.tcp_port, tls=True, cafile=str(pems.ca)) as pub:
            ack = pub.publish("furniture_created", furniture={"id": "1"})
        assert ack.delivered == 1
        note = client.recv()
        assert (note["type"], note["furniture"], note["id"]) == (
            "furniture_created", {"id": "1"}, ack.id,
        )  # fmt: skip
    finally:
        client.close()


def test_many_notifications_go_through_the_writer(server: ServerProcess, pems: Pems) -> None:
    # Under TLS there is no direct socket write: every notification is
    # written by the connection's writer task, in order.
    client = TlsLines(pems.context(), server.tcp_port)
    try:
        client.recv()
        client.send({"type": "subscribe", "events": ["furniture_updated"]})
        client.recv()
        burst = "".join(
            json.dumps({"type": "publish", "event": "furniture_updated", "data": {"seq": i}}) + "\n"
            for i in range(200)
        )
        client.sock.sendall(burst.encode())
        seqs = []
        while len(seqs) < 200:
            msg = client.recv()
            if msg["type"] == "furniture_updated":
                seqs.append(msg["data"]["seq"])
        assert seqs == list(range(200))
    finally:
        client.close()


def test_wss_and_https_publish(server: ServerProcess, pems: Pems) -> None:
    ctx = pems.context()
    with ws_connect(f"wss://localhost:{server.ws_port}/", ssl=ctx, open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
        conn = http.client.HTTPSConnection("localhost", server.ws_port, timeout=10, context=ctx)
        try:
            conn.request("POST", "/publish/furniture_deleted", body=b'{"id": "9"}',
                         headers={"Content-Type": "application/json"})  # fmt: skip
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert (resp.status, body["type"], body["delivered"]) == (200, "published", 1)
            # Keep-alive over TLS: a second request on the same connection.
            conn.request("GET", "/health")
            resp = conn.getresponse()
            assert (resp.status, json.loads(resp.read())) == (200, {"status": "ok"})
        finally:
            conn.close()
        note = json.loads(ws.recv(timeout=10))
        assert (note["type"], note["id"]) == ("furniture_deleted", "9")


def test_plain_text_on_the_tls_ports_is_refused_cleanly(server: ServerProcess, pems: Pems) -> None:
    with socket.create_connection(("127.0.0.1", server.tcp_port), timeout=10) as s:
        s.sendall(b"subscribe furniture_created\n")
        data = s.makefile("rb").read()  # until the server's EOF
    assert json.loads(data)["code"] == "tls_required"
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = s.makefile("rb").read()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["code"] == "tls_required"
    # The server is still up for TLS clients.
    client = TlsLines(pems.context(), server.tcp_port)
    assert client.recv()["type"] == "welcome"
    client.close()


def test_unverified_certificate_is_refused_by_the_client(server: ServerProcess) -> None:
    ctx = ssl.create_default_context()  # the system CAs do not know our test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        TlsLines(ctx, server.tcp_port)


def test_handshake_deadline(server: ServerProcess) -> None:
    # The first byte of a TLS handshake, then nothing: cut at the deadline.
    with socket.create_connection(("127.0.0.1", server.tcp_port), timeout=10) as s:
        s.sendall(b"\x16")
        start = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - start < HANDSHAKE_TIMEOUT + 5


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_openssl_s_client(server: ServerProcess, pems: Pems) -> None:
    out = subprocess.run(
        ["openssl", "s_client", "-quiet", "-ign_eof", "-verify_return_error",
         "-CAfile", str(pems.ca), "-servername", "localhost",
         "-connect", f"127.0.0.1:{server.tcp_port}"],
        input=b"events\nexit\n", capture_output=True, timeout=20,
    )  # fmt: skip
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith(b"{")]
    assert [m["type"] for m in lines] == ["welcome", "events", "goodbye"], out


def test_terminal_client_and_publish_command(server: ServerProcess, pems: Pems) -> None:
    publish = subprocess.run(
        [sys.executable, "-m", "livenotify", "publish", "--host", "localhost",
         "--port", str(server.tcp_port), "--tls", "--cafile", str(pems.ca),
         "furniture_created", '{"id": "7"}'],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert publish.returncode == 0, publish.stderr
    assert publish.stdout.startswith("published furniture_created id=")
    client = subprocess.run(
        [sys.executable, "-m", "livenotify", "client", "--host", "localhost",
         "--port", str(server.tcp_port), "--tls", "--cafile", str(pems.ca),
         "--email", "tls@example.org", "--json"],
        input="events\n", capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    lines = [line for line in client.stdout.splitlines() if line.startswith("{")]
    types = [json.loads(line)["type"] for line in lines]
    assert "events" in types, (client.stdout, client.stderr)


def _serve_error(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livenotify", "serve", "--port", "0", "--ws-port", "0", *args],
        capture_output=True, text=True, timeout=30, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("case", "flag", "words"),
    [
        ("missing-cert", "--tls-cert", "No such file"),
        ("missing-key", "--tls-key", "No such file"),
        ("cert-is-key", "--tls-cert", "PEM"),
        ("bad-key", "--tls-key", "PEM"),
        ("mismatch", "--tls-key", "does not match"),
        ("no-key", "--tls-cert", "needs --tls-key"),
    ],
)
def test_bad_certificate_files_are_one_line(
    pems: Pems, tmp_path: Path, case: str, flag: str, words: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    args = {
        "missing-cert": ["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key", str(pems.key)],
        "missing-key": ["--tls-cert", str(pems.cert), "--tls-key", str(tmp_path / "nope.pem")],
        "cert-is-key": ["--tls-cert", str(pems.key), "--tls-key", str(pems.key)],
        "bad-key": ["--tls-cert", str(pems.cert), "--tls-key", str(garbage)],
        "mismatch": ["--tls-cert", str(pems.cert), "--tls-key", str(pems.other_key)],
        "no-key": ["--tls-cert", str(pems.cert)],
    }[case]
    result = _serve_error(*args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and flag in lines[0] and words in lines[0], lines
    assert "Traceback" not in result.stderr
