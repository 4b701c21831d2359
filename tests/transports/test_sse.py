"""Server-Sent Events on the front door, against a real ``livenotify serve``:
``curl -N``, a raw socket client, heartbeats, errors, the slow-consumer
policy and the connection caps."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from livenotify.payload import Payload, sse_event
from tests.helpers import ServerProcess, running_server

PUB = "/publish/furniture_created"
JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server("--idle-timeout", "0.5", "--rate-limit", "0") as srv:
        yield srv


def publish(port: int, path: str, obj: dict[str, object]) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=json.dumps(obj), headers=JSON_HEADERS)
        resp = conn.getresponse()
        answer: dict[str, object] = json.loads(resp.read())
        return answer
    finally:
        conn.close()


class SseSocket:
    """A raw socket SSE client: the head, then one event (or comment) at a time."""

    def __init__(self, port: int, target: str = "/sse", headers: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        request = f"GET {target} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{headers}\r\n"
        self.sock.sendall(request.encode())
        self.buf = b""
        head = self._until(b"\r\n\r\n").decode("latin-1")
        self.status = int(head.split()[1])
        self.headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:])
        }

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(self.buf)
            self.buf += data
        part, _, self.buf = self.buf.partition(sep)
        return part

    def block(self) -> str:
        """The next SSE block (an event or a comment), without its blank line."""
        return self._until(b"\n\n").decode()

    def event(self) -> dict[str, str]:
        """The next event's fields (comments skipped)."""
        while True:
            block = self.block()
            if not block.startswith(":"):
                return dict(line.split(": ", 1) for line in block.split("\n"))

    def close(self) -> None:
        self.sock.close()


def test_sse_frame_is_built_once_and_carries_the_position() -> None:
    payload = Payload('{"type":"furniture_created","furniture_id":"1"}')
    frame = payload.sse_frame()
    assert frame is payload.sse_frame()  # cached: shared by every subscriber
    assert frame == b'event: furniture_created\ndata: {"type":"furniture_created",' \
        b'"furniture_id":"1"}\n\n'  # fmt: skip
    positioned = sse_event('{"type":"a","epoch":"e1","offset":7}')
    assert positioned.startswith(b"id: e1:7\nevent: a\ndata: ")


def test_raw_socket_client_gets_only_its_events(server: ServerProcess) -> None:
    client = SseSocket(server.ws_port, "/sse?events=furniture_created")
    try:
        assert client.status == 200
        assert client.headers["content-type"].startswith("text/event-stream")
        assert client.headers["connection"] == "close"
        welcome = client.event()
        assert welcome["event"] == "welcome"
        publish(server.ws_port, "/publish/furniture_updated", {"n": 0})  # not subscribed
        ack = publish(server.ws_port, PUB, {"furniture_id": "1"})
        assert ack["type"] == "published" and ack["delivered"] == 1
        got = client.event()
        assert got["event"] == "furniture_created"
        data = json.loads(got["data"])
        assert data["furniture_id"] == "1" and data["id"] == ack["id"]
        assert got["id"] == f"{data['epoch']}:{data['offset']}"
    finally:
        client.close()


def test_heartbeat_comment(server: ServerProcess) -> None:
    client = SseSocket(server.ws_port, "/sse")
    try:
        client.event()  # welcome
        client.sock.settimeout(5)  # --idle-timeout 0.5
        assert client.block() == ": ping"
    finally:
        client.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_streams(server: ServerProcess) -> None:
    proc = subprocess.Popen(
        ["curl", "-sN", "--max-time", "20", f"http://127.0.0.1:{server.ws_port}/sse"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("event: welcome")
        deadline = time.monotonic() + 10
        ack = publish(server.ws_port, PUB, {"furniture_id": "curl"})
        assert ack["delivered"] >= 1
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "curl's stream ended"
            if line.startswith("data: ") and '"curl"' in line:
                assert json.loads(line[6:])["type"] == "furniture_created"
                break
        else:
            pytest.fail("no notification within 10 s")
    finally:
        proc.kill()
        proc.wait(5)


def test_errors_are_json_before_the_stream(server: ServerProcess) -> None:
    client = SseSocket(server.ws_port, "/sse?events=nope")
    try:
        assert client.status == 404
        body = json.loads(client.buf or client.sock.recv(65536))
        assert body["code"] == "unknown_event"
    finally:
        client.close()
    client = SseSocket(server.ws_port, "/sse?since=garbage!")
    try:
        assert client.status == 400
        assert json.loads(client.buf or client.sock.recv(65536))["code"] == "invalid_position"
    finally:
        client.close()
    # A well-formed Last-Event-ID is accepted (it resumes once positions exist).
    client = SseSocket(server.ws_port, "/sse", "Last-Event-ID: abcd1234:5\r\n")
    try:
        assert client.status == 200 and client.event()["event"] == "welcome"
    finally:
        client.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.ws_port, timeout=10)
    conn.request("POST", "/sse")
    assert conn.getresponse().status == 405
    conn.close()


def test_slow_sse_reader_is_disconnected() -> None:
    with running_server("--queue-size", "4", "--rate-limit", "0") as srv:
        reader = SseSocket(srv.ws_port, "/sse?events=furniture_created")
        reader.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            start = srv.mark()
            big = "x" * 60_000
            conn = http.client.HTTPConnection("127.0.0.1", srv.ws_port, timeout=10)
            for _ in range(200):
                conn.request("POST", PUB, body=json.dumps({"b": big}), headers=JSON_HEADERS)
                conn.getresponse().read()
                if any("reason=slow_consumer" in line for line in srv.lines[start:]):
                    break
            conn.close()
            srv.wait_log(r"disconnect sse \S+ #\d+ reason=slow_consumer", start=start)
        finally:
            reader.close()


def test_sse_counts_against_the_connection_cap() -> None:
    with running_server("--max-connections-per-ip", "1") as srv:
        first = SseSocket(srv.ws_port, "/sse")
        try:
            assert first.status == 200
            second = SseSocket(srv.ws_port, "/sse")
            try:
                assert second.status == 503
            finally:
                second.close()
        finally:
            first.close()


def test_a_client_that_keeps_sending_is_closed(server: ServerProcess) -> None:
    client = SseSocket(server.ws_port, "/sse")
    try:
        assert client.event()["event"] == "welcome"
        client.sock.sendall(b"x" * 100_000)  # past the 64 KiB an SSE client may send
        client.sock.settimeout(10)
        with pytest.raises((EOFError, ConnectionResetError)):
            while True:
                client.block()
    finally:
        client.close()


def test_last_event_id_replays_what_the_stream_missed(server: ServerProcess) -> None:
    # An EventSource reconnects with the last id it saw: the stream resumes
    # exactly from there (a `subscribed` event, the missed ones, then live).
    first = SseSocket(server.ws_port, "/sse?events=furniture_updated")
    try:
        assert first.status == 200
        welcome = json.loads(first.event()["data"])
        head = welcome["position"]
    finally:
        first.close()
    acks = [publish(server.ws_port, "/publish/furniture_updated", {"n": n}) for n in range(3)]
    resumed = SseSocket(
        server.ws_port, "/sse?events=furniture_updated", f"Last-Event-ID: {head}\r\n"
    )
    try:
        assert resumed.status == 200 and resumed.event()["event"] == "welcome"
        subscribed = resumed.event()
        assert subscribed["event"] == "subscribed"
        assert json.loads(subscribed["data"])["recovered"] is True
        got = [resumed.event() for _ in range(3)]
        assert [json.loads(e["data"])["n"] for e in got] == [0, 1, 2]
        assert [e["id"].split(":")[1] for e in got] == [str(a["offset"]) for a in acks]
    finally:
        resumed.close()
