"""HTTP on the WebSocket port, against a real ``livenotify serve``: the
routes, publishing to WebSocket and TCP subscribers, the error statuses,
keep-alive and the request limits."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
from websockets.sync.client import connect

from livenotify.config import Config, Limits
from livenotify.hub import Hub
from livenotify.transports.http import FrontDoor
from livenotify.transports.ws import WsTransport
from tests.helpers import LineClient, ServerProcess, running_server

TOKEN = "s3cret"
MAX_MESSAGE = 2048
HANDSHAKE_TIMEOUT = 1.0
ARGS = (
    "--publish-token", TOKEN, "--max-message-bytes", str(MAX_MESSAGE),
    "--handshake-timeout", str(HANDSHAKE_TIMEOUT), "--rate-limit", "5", "--rate-burst", "5",
)  # fmt: skip
AUTH = {"Authorization": f"Bearer {TOKEN}"}
AUTH_JSON = {**AUTH, "Content-Type": "application/json"}
PUB = "/publish/furniture_created"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server(*ARGS) as srv:
        yield srv


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def assert_error(status: int, body: bytes, want_status: int, code: str) -> None:
    obj = json.loads(body)
    assert (status, obj["type"], obj["code"]) == (want_status, "error", code), obj
    assert isinstance(obj["message"], str) and obj["message"]


def test_health_and_page(server: ServerProcess) -> None:
    status, headers, body = request(server.ws_port, "GET", "/health")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": "ok"}
    status, headers, body = request(server.ws_port, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b"<html" in body


def test_unknown_path_and_method(server: ServerProcess) -> None:
    status, _, body = request(server.ws_port, "GET", "/nowhere")
    assert_error(status, body, 404, "not_found")
    status, headers, body = request(server.ws_port, "DELETE", "/health")
    assert_error(status, body, 405, "method_not_allowed")
    assert headers["allow"] == "GET"
    status, _, body = request(server.ws_port, "GET", "/publish/furniture_created")
    assert_error(status, body, 405, "method_not_allowed")


def ws_subscriber(port: int) -> Any:
    ws = connect(f"ws://127.0.0.1:{port}/?events=furniture_created", open_timeout=10)
    assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
    return ws


def tcp_subscriber(port: int) -> LineClient:
    c = LineClient("127.0.0.1", port)
    assert c.recv()["type"] == "welcome"
    c.send_line("subscribe furniture_created")
    assert c.recv()["type"] == "subscribed"
    return c


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_publish_reaches_every_subscriber() -> None:
    # The "done when", as written (no token configured).
    with running_server() as srv:
        ws, tcp = ws_subscriber(srv.ws_port), tcp_subscriber(srv.tcp_port)
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "10", "-d", '{"furniture_id":"1"}',
             "-H", "Content-Type: application/json",
             f"localhost:{srv.ws_port}/publish/furniture_created"],
            capture_output=True, timeout=20, check=True,
        )  # fmt: skip
        published = json.loads(out.stdout)
        assert published["type"] == "published" and published["delivered"] == 2
        for got in (json.loads(ws.recv(timeout=10)), tcp.recv()):
            assert got["type"] == "furniture_created" and got["furniture_id"] == "1"
            assert got["id"] == published["id"]
        ws.close()
        tcp.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_expect_gets_100_continue(server: ServerProcess) -> None:
    # curl (and others) may ask "Expect: 100-continue" before a body; without
    # an answer curl waits --expect100-timeout (30 s, past --max-time).
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "--expect100-timeout", "30",
         "-H", f"Authorization: Bearer {TOKEN}", "-H", "Content-Type: text/plain",
         "-H", "Expect: 100-continue",
         "--data-binary", "z" * 1500, f"localhost:{server.ws_port}/publish/furniture_updated"],
        capture_output=True, timeout=20, check=True,
    )  # fmt: skip
    assert json.loads(out.stdout)["type"] == "published"


def test_publish_json_and_text(server: ServerProcess) -> None:
    ws, tcp = ws_subscriber(server.ws_port), tcp_subscriber(server.tcp_port)
    body = json.dumps({"furniture": {"name": "chair"}, "type": "ignored", "token": "x"})
    status, _, raw = request(
        server.ws_port, "POST", "/publish/furniture_created", body.encode(),
        {**AUTH, "Content-Type": "application/json"},
    )  # fmt: skip
    assert status == 200, raw
    reply = json.loads(raw)
    assert (reply["type"], reply["event"], reply["delivered"]) == (
        "published",
        "furniture_created",
        2,
    )
    for got in (json.loads(ws.recv(timeout=10)), tcp.recv()):
        assert got["type"] == "furniture_created" and got["furniture"] == {"name": "chair"}
        assert "token" not in got
    status, _, raw = request(
        server.ws_port, "POST", "/publish/furniture_created", "héllo".encode(),
        {**AUTH, "Content-Type": "text/plain"},
    )  # fmt: skip
    assert status == 200, raw
    for got in (json.loads(ws.recv(timeout=10)), tcp.recv()):
        assert got["message"] == "héllo"
    ws.close()
    tcp.close()


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "code"),
    [
        (PUB, b"{}", {}, 401, "forbidden"),
        (PUB, b"{}", {"Authorization": "Bearer nope"}, 403, "forbidden"),
        (PUB, b"{}", {"Authorization": "Basic x"}, 403, "forbidden"),
        ("/publish/nothing_here", b"{}", AUTH, 404, "unknown_event"),
        ("/publish/bad%20name", b"{}", AUTH, 400, "invalid_event"),
        (PUB, b"{nope", AUTH_JSON, 400, "invalid_json"),
        (PUB, b"[1]", AUTH_JSON, 400, "invalid_message"),
        (PUB, b"\xff\xfe", AUTH, 400, "invalid_utf8"),
        (PUB, b"a\x00b", AUTH, 400, "nul_byte"),
        (PUB, b'{"a":"\x00"}', AUTH_JSON, 400, "nul_byte"),
        (PUB, b"x" * (MAX_MESSAGE + 1), AUTH, 413, "message_too_large"),
    ],
)
def test_publish_errors(
    server: ServerProcess, path: str, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    got_status, _, raw = request(server.ws_port, "POST", path, body, headers)
    assert_error(got_status, raw, status, code)


def test_rate_limited_on_one_connection(server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.ws_port, timeout=10)
    statuses = []
    for _ in range(12):  # burst 5 at 5/s: a fast run of 12 crosses it
        conn.request("POST", "/publish/furniture_deleted", body=b"x", headers=AUTH)
        resp = conn.getresponse()
        raw = resp.read()
        statuses.append(resp.status)
        if resp.status != 200:
            assert_error(resp.status, raw, 429, "rate_limited")
    conn.close()
    assert 429 in statuses and statuses[0] == 200


def test_keep_alive_serves_many_requests_on_one_socket(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        data = b""
        while data.count(b'{"status":"ok"}') < 3:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 3


def read_until_close(s: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_header_limits(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 200 + b"\r\n")
        data = read_until_close(s)
    assert data.startswith(b"HTTP/1.1 431 ")
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["code"] == "bad_request"
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 40_000 + b"\r\n\r\n")
        data = read_until_close(s)
    assert data.startswith(b"HTTP/1.1 431 ")


def test_garbage_gets_400(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        data = read_until_close(s)
    assert data.startswith(b"HTTP/1.1 400 ")


@pytest.mark.parametrize(
    "partial",
    [b"GET /health HTTP/1.1\r\nHost: x\r\n",  # a head that never ends
     b"POST /publish/furniture_created HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab"],
)  # fmt: skip
def test_slow_request_is_cut(server: ServerProcess, partial: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=15) as s:
        s.sendall(partial)
        start = time.monotonic()
        assert read_until_close(s) == b""  # cut, no answer
        waited = time.monotonic() - start
    assert HANDSHAKE_TIMEOUT * 0.5 <= waited < 10
    # The port still answers.
    assert request(server.ws_port, "GET", "/health")[0] == 200


def test_bad_websocket_handshake_is_400(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        data = read_until_close(s)
    assert data.startswith(b"HTTP/1.1 400 ")
    assert b"Sec-WebSocket-Key" in data


async def test_keep_alive_cap_closes_after_the_last_request() -> None:
    # In process (the cap is not a flag): three pipelined requests, a cap of 2.
    config = Config(limits=Limits(max_requests_per_connection=2))

    class App:
        hub = Hub(config)

    async def no_session(transport: WsTransport, events: tuple[str, ...]) -> None:
        raise AssertionError("no WebSocket here")

    door = FrontDoor(config, no_session, App())  # type: ignore[arg-type]
    client, server = trio.testing.memory_stream_pair()
    out = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(door.serve, server, "test:1")
        await client.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
        with trio.fail_after(10):
            while chunk := await client.receive_some():
                out += chunk
    assert out.count(b"HTTP/1.1 200 OK") == 2
    second = out.split(b"HTTP/1.1 200 OK")[2]
    assert b"connection: close" in second.lower()
