"""Slow consumers, dead peers and stuck handshakes: each one is found and
dropped by its rule, and nobody else notices."""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.helpers import LineClient, running_server

BIG = "x" * 4000
#: Enough bytes to overflow every kernel buffer between us and a client
#: that never reads (loopback autotunes to a few MiB each way).
FLOOD = 3000


def slow_reader(port: int) -> socket.socket:
    """A TCP client with a tiny receive buffer that subscribes and then never reads."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(b"subscribe furniture_created\n")
    return s


def read_all(client: LineClient, count: int, out: list[Any]) -> None:
    for _ in range(count):
        obj = client.recv()
        if obj["type"] == "furniture_created":
            out.append(obj["data"]["seq"])


def flood(port: int, count: int) -> None:
    with LineClient("127.0.0.1", port, timeout=30) as pub:
        pub.recv()
        for seq in range(count):
            pub.send({"type": "publish", "event": "furniture_created",
                      "data": {"seq": seq, "pad": BIG}})  # fmt: skip
            assert pub.recv()["type"] == "published"


def test_slow_consumer_is_disconnected_and_others_get_everything() -> None:
    # 256 queued (1 MiB here) is slack for the fast readers, threads on a
    # loaded machine; the slow one, with a 4 KiB receive buffer, overflows
    # it long before the flood's 12 MB are through.
    with running_server("--queue-size", "256", "--rate-limit", "0") as srv:
        slow = slow_reader(srv.tcp_port)
        fast = LineClient("127.0.0.1", srv.tcp_port, timeout=30)
        fast.recv()
        fast.send_line("subscribe furniture_created")
        fast.recv_type("subscribed")
        with connect(f"ws://127.0.0.1:{srv.ws_port}/?events=furniture_created") as ws:
            ws.recv(timeout=10)  # welcome
            got_tcp: list[int] = []
            got_ws: list[int] = []

            def read_ws() -> None:
                while len(got_ws) < FLOOD:
                    got_ws.append(json.loads(ws.recv(timeout=30))["data"]["seq"])

            readers = [
                threading.Thread(target=read_all, args=(fast, FLOOD, got_tcp)),
                threading.Thread(target=read_ws),
            ]
            for t in readers:
                t.start()
            flood(srv.tcp_port, FLOOD)
            for t in readers:
                t.join(60)
        assert got_tcp == list(range(FLOOD))
        assert got_ws == list(range(FLOOD))
        srv.wait_log(r"disconnect tcp 127\.0\.0\.1:\d+ #\d+ reason=slow_consumer")
        slow.close()
        fast.close()


def test_drop_policy_keeps_the_client_and_counts_what_it_missed() -> None:
    with running_server("--queue-size", "16", "--slow-policy", "drop", "--rate-limit", "0") as srv:
        slow = slow_reader(srv.tcp_port)
        flood(srv.tcp_port, FLOOD)
        # Now read everything: notifications plus one or more dropped notices.
        f = slow.makefile("rb")
        received = dropped = 0
        with LineClient("127.0.0.1", srv.tcp_port) as probe:
            probe.recv()
        # The notice follows the batch that was queued when room appeared, so
        # two ping round trips guarantee it has been written.
        for _ in range(2):
            slow.sendall(b'{"type":"ping"}\n')
            while True:
                obj = json.loads(f.readline())
                if obj["type"] == "furniture_created":
                    received += 1
                elif obj["type"] == "dropped":
                    dropped += obj["count"]
                elif obj["type"] == "pong":
                    break
        assert dropped > 0, (received, dropped)
        assert received + dropped == FLOOD
        slow.close()


def test_client_that_stops_reading_hits_the_write_deadline() -> None:
    args = ("--queue-size", "100000", "--slow-policy", "drop", "--write-timeout", "1",
            "--rate-limit", "0")  # fmt: skip
    with running_server(*args) as srv:
        slow = slow_reader(srv.tcp_port)
        flood(srv.tcp_port, FLOOD)
        srv.wait_log(r"disconnect tcp .* reason=write_timeout", timeout=20)
        slow.close()


def raw_websocket(port: int, path: str = "/") -> socket.socket:
    """Complete a WebSocket handshake by hand, then never read or answer again."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert b"101" in s.recv(4096).split(b"\r\n")[0]
    return s


def test_websocket_heartbeat_drops_silent_peer_keeps_live_listener() -> None:
    with running_server("--idle-timeout", "0.5") as srv:
        # websockets answers pings automatically: a passive but alive listener.
        with connect(f"ws://127.0.0.1:{srv.ws_port}/") as alive:
            alive.recv(timeout=10)
            mark = srv.mark()
            silent = raw_websocket(srv.ws_port)
            srv.wait_log(r"disconnect ws .* reason=idle_timeout", timeout=15, start=mark)
            # Several heartbeat intervals later the listener is still served.
            srv.command("send furniture_created still here", r"delivered=1")
            got = json.loads(alive.recv(timeout=10))
            assert got["message"] == "still here"
        silent.close()


def test_slow_websocket_handshake_is_dropped() -> None:
    with running_server("--handshake-timeout", "0.5") as srv:
        with socket.create_connection(("127.0.0.1", srv.ws_port), timeout=15) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # ...and never the rest
            assert s.recv(4096) == b""  # the server hung up
        # The listener is unaffected.
        with connect(f"ws://127.0.0.1:{srv.ws_port}/") as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "welcome"


def test_a_silent_tcp_connection_with_no_subscription_is_closed_subscribers_stay() -> None:
    # An idle connection that subscribed to nothing only holds a slot and a
    # descriptor (issue 13): it is closed; a silent subscriber is not.
    with running_server("--tcp-idle-timeout", "0.5") as srv:
        idle = LineClient("127.0.0.1", srv.tcp_port, timeout=10)
        listener = LineClient("127.0.0.1", srv.tcp_port, timeout=10)
        assert idle.recv()["type"] == "welcome"
        assert listener.recv()["type"] == "welcome"
        listener.send_line("subscribe furniture_created")
        listener.recv_type("subscribed")
        # The server ends the idle one on its own: an error line, then EOF.
        error = idle.recv()
        assert (error["type"], error["code"]) == ("error", "idle_timeout"), error
        with pytest.raises(EOFError):
            idle.recv()
        srv.wait_log(r"disconnect tcp \S+ #\d+ reason=idle_timeout")
        # Well past the timeout, the silent subscriber still gets notifications.
        with LineClient("127.0.0.1", srv.tcp_port) as publisher:
            publisher.recv()
            publisher.send({"type": "publish", "event": "furniture_created", "data": {"n": 1}})
            publisher.recv_type("published")
        got = listener.recv_type("furniture_created")
        assert got["data"] == {"n": 1}
        idle.close()
        listener.close()
