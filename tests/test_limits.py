"""Every limit, one test each, against a real ``livenotify serve``.

Each test sends the offending input, checks the exact error code or close
code/reason, then checks the damage stayed local: a fresh client is still
answered and an existing subscriber still receives (:func:`still_serving`).
Limits are set small on the command line so crossing them is cheap.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.helpers import LineClient, ServerProcess, running_server

CATALOG = ["a", "b", "c"]
# Limits far below the defaults, so that crossing each one takes a few bytes.
MAX_MESSAGE = 1024
MAX_DEPTH = 8
MAX_EVENTS = 5
MAX_SUBSCRIPTIONS = 3
HANDSHAKE_TIMEOUT = 1.0
LIMIT_ARGS = (
    "--events", ",".join(CATALOG), "--no-worker",
    "--max-message-bytes", str(MAX_MESSAGE), "--max-json-depth", str(MAX_DEPTH),
    "--max-events-per-message", str(MAX_EVENTS), "--max-subscriptions", str(MAX_SUBSCRIPTIONS),
    "--handshake-timeout", str(HANDSHAKE_TIMEOUT),
)  # fmt: skip
STATS = r"^connections=(\d+) subscribers=(\d+) "
#: Bound for anything the server does asynchronously (noticing a close...).
SETTLE = 10.0
_checks = itertools.count()


# --------------------------------------------------------------------------
# Clients and checks


def ws_recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    data = ws.recv(timeout=timeout)
    assert isinstance(data, str)
    obj: dict[str, Any] = json.loads(data)
    return obj


class SourcedLineClient(LineClient):
    """A LineClient connecting from a chosen loopback address (127.0.0.0/8)."""

    def __init__(self, port: int, source: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), 10, (source, 0))
        self.file = self.sock.makefile("rb")


def tcp_client(port: int, source: str | None = None) -> LineClient:
    client = LineClient("127.0.0.1", port) if source is None else SourcedLineClient(port, source)
    welcome = client.recv()
    welcome.pop("position", None)  # the log's head (v2): any value
    assert welcome == {"type": "welcome", "events": CATALOG}
    return client


def ws_client(port: int, query: str = "", source: str | None = None) -> ClientConnection:
    sock = socket.create_connection(("127.0.0.1", port), 10, (source or "127.0.0.1", 0))
    ws = connect(f"ws://127.0.0.1:{port}/{query}", sock=sock, open_timeout=10, close_timeout=5)
    welcome = ws_recv(ws)
    welcome.pop("position", None)  # the log's head (v2): any value
    assert welcome == {"type": "welcome", "events": CATALOG}
    return ws


Client = LineClient | ClientConnection


def send(client: Client, obj: dict[str, Any] | str) -> None:
    text = obj if isinstance(obj, str) else json.dumps(obj)
    if isinstance(client, LineClient):
        client.send_line(text)
    else:
        client.send(text)


def recv(client: Client) -> dict[str, Any]:
    return client.recv() if isinstance(client, LineClient) else ws_recv(client)


def open_client(server: ServerProcess, transport: str, query: str = "") -> Client:
    """A fresh client; a WebSocket one starts subscribed to "*" unless ``query`` says."""
    if transport == "tcp":
        return tcp_client(server.tcp_port)
    return ws_client(server.ws_port, query)


def assert_error(client: Client, code: str) -> None:
    reply = recv(client)
    assert reply["type"] == "error" and reply["code"] == code, reply


def assert_pong(client: Client) -> None:
    """The connection is still open and served."""
    send(client, {"type": "ping"})
    assert recv(client)["type"] == "pong"


@dataclass
class Watchers:
    """Existing subscribers of event ``a``, one per transport."""

    tcp: LineClient
    ws: ClientConnection

    def close(self) -> None:
        self.tcp.close()
        self.ws.close()


def watch(server: ServerProcess) -> Watchers:
    tcp = tcp_client(server.tcp_port)
    tcp.send_line("subscribe a")
    assert tcp.recv() == {"type": "subscribed", "events": ["a"]}
    ws = ws_client(server.ws_port, "?events=a")
    assert_pong(ws)  # its URL subscription is in place
    return Watchers(tcp, ws)


def still_serving(server: ServerProcess, watchers: Watchers, transport: str = "tcp") -> None:
    """A fresh client is answered, and every existing subscriber still receives."""
    check = next(_checks)
    fresh = open_client(server, transport, "?events=b")  # not "*": no copy of its own publish
    try:
        send(fresh, {"type": "publish", "event": "a", "data": {"check": check}})
        reply = recv(fresh)
        assert reply["type"] == "published" and reply["delivered"] >= 2, reply
    finally:
        fresh.close()
    for watcher in (watchers.tcp, watchers.ws):
        got = recv(watcher)
        assert got["type"] == "a" and got["data"] == {"check": check}, got


def settle(server: ServerProcess, connections: int, subscribers: int) -> str:
    """Poll the console ``stats`` until it shows these counts; the line."""
    deadline = time.monotonic() + SETTLE
    while True:
        m = server.command("stats", STATS)
        if (int(m.group(1)), int(m.group(2))) == (connections, subscribers):
            return m.string
        if time.monotonic() > deadline:
            raise AssertionError(f"stats stuck at {m.string!r}, want {connections}/{subscribers}")
        time.sleep(0.02)  # a counter to poll; no event to await


# --------------------------------------------------------------------------
# Message limits (one server with small limits)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server(*LIMIT_ARGS) as srv:
        yield srv


@pytest.fixture
def watchers(server: ServerProcess) -> Iterator[Watchers]:
    w = watch(server)
    yield w
    w.close()


def padded_ping(size: int) -> str:
    """A ping exactly ``size`` bytes long."""
    text = '{"type":"ping","p":""}'
    return text[:-2] + "x" * (size - len(text)) + '"}'


def test_tcp_line_too_long(server: ServerProcess, watchers: Watchers) -> None:
    with tcp_client(server.tcp_port) as c:
        c.send_line(padded_ping(MAX_MESSAGE))  # at the limit: fine
        assert c.recv()["type"] == "pong"
        c.send_line(padded_ping(MAX_MESSAGE + 1))
        assert_error(c, "message_too_large")
        c.sock.sendall(b"y" * (10 * MAX_MESSAGE) + b"\n")  # reported once, skipped whole
        assert_error(c, "message_too_large")
        assert_pong(c)  # the connection goes on
    still_serving(server, watchers)


def test_ws_frame_too_long(server: ServerProcess, watchers: Watchers) -> None:
    with ws_client(server.ws_port) as ws:
        ws.send(padded_ping(MAX_MESSAGE))
        assert ws_recv(ws)["type"] == "pong"
        ws.send(padded_ping(MAX_MESSAGE + 1))
        with pytest.raises(ConnectionClosed) as info:
            ws_recv(ws)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    still_serving(server, watchers, "ws")


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_json_too_deep(server: ServerProcess, watchers: Watchers, transport: str) -> None:
    # The outer object is one level: MAX_DEPTH - 1 more arrays is the limit.
    at_limit = '{"type":"ping","x":' + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "}"
    over = '{"type":"ping","x":' + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "}"
    with open_client(server, transport) as c:
        send(c, at_limit)
        assert recv(c)["type"] == "pong"
        send(c, over)
        assert_error(c, "json_too_deep")
        assert_pong(c)
    still_serving(server, watchers, transport)


@pytest.mark.parametrize("form", ["tcp-json", "tcp-command", "ws"])
def test_too_many_events(server: ServerProcess, watchers: Watchers, form: str) -> None:
    # One name repeated: the count is checked before duplicates are merged,
    # and a WebSocket ("*" already) stays under the subscription limit.
    events = ["a"] * (MAX_EVENTS + 1)
    with open_client(server, form[:3]) as c:
        if form == "tcp-command":
            send(c, "subscribe " + " ".join(events))
        else:
            send(c, {"type": "subscribe", "events": events})
        assert_error(c, "too_many_events")
        send(c, {"type": "subscribe", "events": events[:MAX_EVENTS]})  # at the limit
        reply = recv(c)
        assert reply["type"] == "subscribed" and "a" in reply["events"], reply
    still_serving(server, watchers, form[:3])


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_too_many_subscriptions(server: ServerProcess, watchers: Watchers, transport: str) -> None:
    with open_client(server, transport) as c:
        # TCP starts with nothing, WebSocket with "*": both can reach the limit.
        first = ["a", "b", "c"] if transport == "tcp" else ["a", "b"]
        send(c, {"type": "subscribe", "events": first})
        held = sorted(recv(c)["events"])
        assert len(held) == MAX_SUBSCRIPTIONS
        more = "*" if transport == "tcp" else "c"
        send(c, {"type": "subscribe", "events": [more]})
        assert_error(c, "too_many_subscriptions")
        send(c, {"type": "subscriptions"})
        assert recv(c) == {"type": "subscriptions", "events": held}  # unchanged
    still_serving(server, watchers, transport)


@pytest.mark.parametrize("form", ["tcp-json", "tcp-command", "ws"])
def test_email_too_long(server: ServerProcess, watchers: Watchers, form: str) -> None:
    domain = "@example.com"
    longest = "u" * (254 - len(domain)) + domain  # RFC 5321's 254
    with open_client(server, form[:3]) as c:

        def register(email: str) -> None:
            if form == "tcp-command":
                send(c, f"register {email}")
            else:
                send(c, {"type": "register", "email": email})

        register("v" + longest)
        assert_error(c, "invalid_email")
        register(longest)
        reply = recv(c)
        assert reply["type"] == "registered" and reply["email"] == longest, reply
    still_serving(server, watchers, form[:3])


def test_handshake_deadline(server: ServerProcess, watchers: Watchers) -> None:
    with socket.create_connection(("127.0.0.1", server.ws_port), timeout=SETTLE) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        start = time.monotonic()
        try:
            while s.recv(4096):  # whatever it says, it must then hang up
                pass
        except ConnectionResetError:
            pass
        waited = time.monotonic() - start
    assert HANDSHAKE_TIMEOUT * 0.5 <= waited < SETTLE
    still_serving(server, watchers, "ws")


def test_binary_frame(server: ServerProcess, watchers: Watchers) -> None:
    with ws_client(server.ws_port) as ws:
        ws.send(b'{"type":"ping"}')
        assert_error(ws, "binary_frame")
        assert_pong(ws)
    still_serving(server, watchers, "ws")


def test_invalid_utf8(server: ServerProcess, watchers: Watchers) -> None:
    with tcp_client(server.tcp_port) as c:
        c.sock.sendall(b'{"type":"ping","x":"\xc3\x28"}\n')
        assert_error(c, "invalid_utf8")
        c.sock.sendall(b"\xed\xa0\x80\n")  # an encoded surrogate is not UTF-8 either
        assert_error(c, "invalid_utf8")
        assert_pong(c)
    still_serving(server, watchers)


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_nul_byte(server: ServerProcess, watchers: Watchers, transport: str) -> None:
    with open_client(server, transport) as c:
        send(c, '{"type":"ping","x":"\x00"}')
        assert_error(c, "nul_byte")
        if isinstance(c, LineClient):
            c.sock.sendall(b"ping\x00\n")
            assert_error(c, "nul_byte")
        assert_pong(c)
    still_serving(server, watchers, transport)


HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def raw_websocket(port: int) -> socket.socket:
    """A completed WebSocket handshake on a plain socket (no client library)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(HANDSHAKE)
    assert s.recv(4096).startswith(b"HTTP/1.1 101")
    return s


def _abrupt(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_connect_disconnect_burst_leaves_nothing_behind(server: ServerProcess) -> None:
    watchers = watch(server)
    settle(server, 2, 2)  # whatever earlier tests left has gone
    for i in range(30):
        kind = i % 5
        if kind == 0:  # subscribe, then RST
            c = tcp_client(server.tcp_port)
            c.send_line("subscribe a b c")
            c.recv()
            _abrupt(c.sock)
            c.file.close()  # the last reference to the socket: now it resets
        elif kind == 1:  # WebSocket subscribed to "*", then RST without a close frame
            _abrupt(raw_websocket(server.ws_port))
        elif kind == 2:  # half a handshake, then gone
            s = socket.create_connection(("127.0.0.1", server.ws_port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\n")
            _abrupt(s)
        elif kind == 3:  # ask, and hang up without reading the answer
            c = tcp_client(server.tcp_port)
            c.send_line("subscribe a")
            _abrupt(c.sock)
            c.file.close()  # the last reference to the socket: now it resets
        else:  # half a JSON line, then FIN
            s = socket.create_connection(("127.0.0.1", server.tcp_port), timeout=10)
            s.sendall(b'{"type":"subscr')
            s.close()
    settle(server, 2, 2)
    still_serving(server, watchers)
    watchers.close()
    line = settle(server, 0, 0)
    assert "connections=0" in line and "subscribers=0" in line


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_reset_right_after_connect_does_not_kill_the_server(transport: str) -> None:
    with running_server(*LIMIT_ARGS) as srv:
        watchers = watch(srv)
        # WebSocket: a reset can also land inside trio-websocket's accept();
        # varied delays and a few thousand tries reach that window.
        for i in range(50 if transport == "tcp" else 5000):
            port = srv.tcp_port if transport == "tcp" else srv.ws_port
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if transport == "ws":  # a whole handshake, then gone around the answer
                s.sendall(HANDSHAKE)
                time.sleep(0.0003 * (i % 5))  # not synchronisation: timing variety
            _abrupt(s)
        still_serving(srv, watchers, transport)
        watchers.close()
        settle(srv, 0, 0)


# --------------------------------------------------------------------------
# Rate limit


RATE = 5


def paced(n: int) -> float:
    """The least time ``n`` messages take to be read at RATE after a burst of
    RATE (the limit is backpressure), less a margin for the clocks."""
    return (n - RATE) / RATE * 0.9


def test_refused_input_is_paced_and_answered_once_per_run() -> None:
    """Refused messages cost a token each (garbage is no way around the
    limit), and a run of them is answered by few errors whose counts add up."""
    env = {"LIVENOTIFY_RATE_LIMIT": str(RATE), "LIVENOTIFY_RATE_BURST": str(RATE)}
    with running_server("--events", ",".join(CATALOG), "--no-worker", env=env) as srv:
        with tcp_client(srv.tcp_port) as c:
            start = time.monotonic()
            c.sock.sendall(b"garbage\n" * 12 + b"ping\n")
            errors = []
            while (reply := recv(c))["type"] == "error":
                errors.append(reply)
            elapsed = time.monotonic() - start
        assert reply["type"] == "pong", reply
        assert elapsed >= paced(13), elapsed
        assert {e["code"] for e in errors} == {"unknown_command"}, errors
        # The first at once, then one summary per half second at most.
        assert errors[0].get("count", 1) == 1, errors
        assert sum(e.get("count", 1) for e in errors) == 12, errors
        assert len(errors) <= 2 + elapsed / 0.5, errors


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_rate_limit_is_backpressure(transport: str) -> None:
    burst = 12
    # Set through the environment this time: every flag has a LIVENOTIFY_ twin.
    env = {"LIVENOTIFY_RATE_LIMIT": str(RATE), "LIVENOTIFY_RATE_BURST": str(RATE)}
    with running_server("--events", ",".join(CATALOG), "--no-worker", env=env) as srv:
        watchers = watch(srv)
        with open_client(srv, transport, "?events=b") as c:
            frames = [json.dumps({"type": "publish", "event": "a", "data": {"seq": i}})
                      for i in range(burst)]  # fmt: skip
            start = time.monotonic()
            if isinstance(c, LineClient):
                c.sock.sendall("".join(f + "\n" for f in frames).encode())
            else:
                for frame in frames:
                    c.send(frame)
            replies = [recv(c) for _ in range(burst)]
            elapsed = time.monotonic() - start
        # Nothing refused, nothing lost: the burst is read at the limit's pace.
        assert [r["type"] for r in replies] == ["published"] * burst, replies
        assert elapsed >= paced(burst), elapsed
        for watcher in (watchers.tcp, watchers.ws):
            assert [recv(watcher)["data"]["seq"] for _ in range(burst)] == list(range(burst))
        still_serving(srv, watchers, transport)
        # ...and nothing else was delivered after them.
        for watcher in (watchers.tcp, watchers.ws):
            assert_pong(watcher)


# --------------------------------------------------------------------------
# Connections in total and per IP


def assert_refused_tcp(port: int, source: str) -> None:
    s = socket.create_connection(("127.0.0.1", port), 10, (source, 0))
    with s, s.makefile("rb") as f:
        reply = json.loads(f.readline())
        assert reply["type"] == "error" and reply["code"] == "too_many_connections", reply
        assert f.readline() == b""  # then EOF


def assert_refused_ws(port: int, source: str) -> None:
    sock = socket.create_connection(("127.0.0.1", port), 10, (source, 0))
    with (
        connect(f"ws://127.0.0.1:{port}/", sock=sock, open_timeout=10) as ws,
        pytest.raises(ConnectionClosed) as info,
    ):
        ws.recv(timeout=10)
    rcvd = info.value.rcvd
    assert rcvd is not None and (rcvd.code, rcvd.reason) == (1013, "too_many_connections")


def test_connection_limits() -> None:
    args = ("--events", ",".join(CATALOG), "--no-worker",
            "--max-connections", "3", "--max-connections-per-ip", "2")  # fmt: skip
    with running_server(*args) as srv:
        # Two subscribers from 127.0.0.1 fill that address's quota.
        watchers = Watchers(tcp_client(srv.tcp_port, "127.0.0.1"),
                            ws_client(srv.ws_port, "?events=a", "127.0.0.1"))  # fmt: skip
        watchers.tcp.send_line("subscribe a")
        assert watchers.tcp.recv()["type"] == "subscribed"
        assert_refused_tcp(srv.tcp_port, "127.0.0.1")
        assert_refused_ws(srv.ws_port, "127.0.0.1")
        # Another address still gets in, and that fills the server.
        third = tcp_client(srv.tcp_port, "127.0.0.2")
        assert_refused_tcp(srv.tcp_port, "127.0.0.3")
        assert_refused_ws(srv.ws_port, "127.0.0.3")
        # The subscribers are still served.
        srv.command("send a still here", r"delivered=2")
        assert watchers.tcp.recv()["message"] == "still here"
        assert ws_recv(watchers.ws)["message"] == "still here"
        # A slot freed is a slot for a fresh client.
        third.close()
        settle(srv, 2, 2)
        fresh = tcp_client(srv.tcp_port, "127.0.0.3")
        fresh.send({"type": "publish", "event": "a", "data": {}})
        assert fresh.recv()["delivered"] == 2
        assert watchers.tcp.recv()["type"] == "a" and ws_recv(watchers.ws)["type"] == "a"
        fresh.close()
        watchers.close()
        srv.wait_log(r"refuse tcp 127\.0\.0\.3:\d+: too_many_connections")


# --------------------------------------------------------------------------
# Slow consumers

PAD = "x" * 16_000
#: Publishes enough to fill every kernel buffer between the server and a
#: client that never reads (a few MiB on loopback); stops much sooner.
MAX_FLOOD = 2000


def slow_reader(port: int) -> socket.socket:
    """Subscribes to ``a`` and then stops reading (tiny receive buffer)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(SETTLE)
    s.connect(("127.0.0.1", port))
    s.sendall(b"subscribe a\n")
    return s


def publish_until_missed(pub: LineClient, watchers: Watchers, start: int = 0) -> int:
    """Publish one at a time until one reaches only the watchers; returns the
    next seq. The watchers read each one, so only the slow reader falls behind."""
    for seq in range(start, start + MAX_FLOOD):
        pub.send({"type": "publish", "event": "a", "data": {"seq": seq, "pad": PAD}})
        reply = pub.recv()
        assert reply["type"] == "published", reply
        assert watchers.tcp.recv()["data"]["seq"] == seq
        assert ws_recv(watchers.ws)["data"]["seq"] == seq
        if reply["delivered"] == 2:
            return seq + 1
    raise AssertionError(f"the slow reader kept up with {MAX_FLOOD} notifications")


def read_lines(sock: socket.socket) -> Iterator[bytes]:
    """Complete lines until EOF (a final partial line is dropped)."""
    buf = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return
        if not data:
            return
        buf += data
        *lines, buf = buf.split(b"\n")
        yield from lines


def test_slow_consumer_is_disconnected() -> None:
    args = ("--events", ",".join(CATALOG), "--no-worker", "--rate-limit", "0",
            "--queue-size", "8", "--log-level", "debug")  # fmt: skip
    with running_server(*args) as srv:
        mark = srv.mark()
        slow = slow_reader(srv.tcp_port)
        # Per-message lines are DEBUG. The slow reader never reads the reply.
        srv.wait_log(r"recv #\d+ Subscribe", start=mark)
        watchers = watch(srv)
        with tcp_client(srv.tcp_port) as pub:
            seq = publish_until_missed(pub, watchers)
            srv.wait_log(r"disconnect tcp 127\.0\.0\.1:\d+ #\d+ reason=slow_consumer")
            # Everyone else got, and still gets, everything in order.
            publish_until_missed(pub, watchers, seq)
        still_serving(srv, watchers)
        # The slow reader finds what fitted in the buffers, then the end.
        messages = [json.loads(line) for line in read_lines(slow)]
        seqs = [m["data"]["seq"] for m in messages if m["type"] == "a"]
        assert seqs == list(range(len(seqs)))
        errors = [m for m in messages if m["type"] == "error"]
        assert all(e["code"] == "slow_consumer" for e in errors), errors
        slow.close()
        watchers.close()


def test_slow_consumer_drop_policy() -> None:
    args = ("--events", ",".join(CATALOG), "--no-worker", "--rate-limit", "0",
            "--queue-size", "8", "--slow-policy", "drop", "--log-level", "debug")  # fmt: skip
    with running_server(*args) as srv:
        mark = srv.mark()
        slow = slow_reader(srv.tcp_port)
        srv.wait_log(r"recv #\d+ Subscribe", start=mark)
        watchers = watch(srv)
        with tcp_client(srv.tcp_port) as pub:
            seq = publish_until_missed(pub, watchers)
            seq = publish_until_missed(pub, watchers, seq)  # and a few more missed
            published = seq
            # The slow reader catches up: what it got plus what it was told
            # it missed is everything; then live delivery resumes.
            lines = read_lines(slow)
            received: list[int] = []
            dropped = 0
            assert [json.loads(next(lines))["type"] for _ in range(2)] == ["welcome", "subscribed"]
            marker_sent = False
            for line in lines:
                msg = json.loads(line)
                if msg["type"] == "dropped":
                    dropped += msg["count"]
                    if not marker_sent:
                        pub.send({"type": "publish", "event": "a", "data": {"seq": -1}})
                        assert pub.recv()["delivered"] == 3  # kept, and no longer full
                        marker_sent = True
                    continue
                assert msg["type"] == "a", msg
                if msg["data"]["seq"] == -1:
                    break
                received.append(msg["data"]["seq"])
            assert marker_sent
        assert dropped > 0
        assert received == sorted(received) and len(set(received)) == len(received)
        assert len(received) + dropped == published
        for watcher in (watchers.tcp, watchers.ws):
            assert recv(watcher)["data"]["seq"] == -1
        still_serving(srv, watchers)
        slow.close()
        watchers.close()


def test_flag_names_match_help() -> None:
    """The flags these tests rely on exist (a rename fails here, clearly)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "livenotify", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    for flag in ("--max-message-bytes", "--max-json-depth", "--max-events-per-message",
                 "--max-subscriptions", "--max-connections", "--max-connections-per-ip",
                 "--handshake-timeout", "--rate-limit", "--rate-burst", "--queue-size",
                 "--slow-policy"):  # fmt: skip
        assert re.search(rf"{flag}\b", out), flag
