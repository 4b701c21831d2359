"""Every row of the wire contract, over TCP and WebSocket, IPv4 and IPv6,
against a real ``livenotify serve`` process."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.helpers import LineClient, ServerProcess, running_server

CATALOG = ["furniture_created", "furniture_updated", "furniture_deleted"]
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
POSITION = re.compile(r"^[0-9a-f]{8}:\d+$")
SEED_CREATED = {
    "type": "furniture_created",
    "furniture": {
        "furniture_id": "673a2f1b8e4d2a1c3b5e6f7a",
        "nombre": "Mesa de Roble",
        "descripcion": "Mesa elegante de comedor",
        "altura": 75,
        "ancho": 120,
        "material": "roble",
        "autor_username": "Juan",
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server("--host", "::", host="::", env={"LIVENOTIFY_RATE_LIMIT": "0"}) as srv:
        yield srv


def ws_recv(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    data = ws.recv(timeout=timeout)
    assert isinstance(data, str)
    obj: dict[str, Any] = json.loads(data)
    return obj


def ws_client(server: ServerProcess, host: str = "127.0.0.1", query: str = "") -> ClientConnection:
    netloc = f"[{host}]" if ":" in host else host
    ws = connect(f"ws://{netloc}:{server.ws_port}/{query}", open_timeout=10, close_timeout=5)
    welcome = ws_recv(ws)
    assert welcome["events"] == CATALOG and POSITION.match(welcome.pop("position"))
    assert welcome == {"type": "welcome", "events": CATALOG}
    return ws


def tcp_client(server: ServerProcess, host: str = "127.0.0.1") -> LineClient:
    client = LineClient(host, server.tcp_port)
    welcome = client.recv()
    assert POSITION.match(welcome.pop("position"))
    assert welcome == {"type": "welcome", "events": CATALOG}
    return client


def sync(client: LineClient | ClientConnection) -> None:
    """Round-trip a ping: everything queued before it has been delivered."""
    if isinstance(client, LineClient):
        client.send({"type": "ping"})
        client.recv_type("pong")
    else:
        client.send('{"type":"ping"}')
        for _ in range(100):
            if ws_recv(client)["type"] == "pong":
                return
        raise AssertionError("no pong")


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_json_rows(server: ServerProcess, host: str) -> None:
    with tcp_client(server, host) as c:
        c.send({"type": "register", "email": "ana@example.com"})
        reply = c.recv()
        assert reply["type"] == "registered" and reply["email"] == "ana@example.com"
        assert isinstance(reply["events"], list)
        c.send({"type": "subscribe", "events": ["furniture_created", "furniture_deleted"]})
        assert c.recv() == {
            "type": "subscribed", "events": ["furniture_created", "furniture_deleted"]
        }  # fmt: skip
        c.send({"type": "unsubscribe", "events": ["furniture_deleted"]})
        assert c.recv() == {"type": "unsubscribed", "events": ["furniture_created"]}
        c.send({"type": "events"})
        assert c.recv() == {"type": "events", "events": CATALOG}
        c.send({"type": "ping"})
        pong = c.recv()
        assert pong["type"] == "pong" and TIMESTAMP.match(pong["timestamp"])
        c.send({"type": "exit"})
        assert c.recv() == {"type": "goodbye", "reason": "exit"}
        assert c.file.readline() == b""  # then a clean EOF


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_tcp_human_commands(server: ServerProcess, host: str) -> None:
    with tcp_client(server, host) as c:
        c.send_line("register bea@example.com")
        assert c.recv()["type"] == "registered"
        c.send_line("subscribe furniture_created furniture_updated")
        assert c.recv()["events"] == ["furniture_created", "furniture_updated"]
        c.send_line("unsubscribe furniture_updated")
        assert c.recv() == {"type": "unsubscribed", "events": ["furniture_created"]}
        c.send_line("events")
        assert c.recv() == {"type": "events", "events": CATALOG}
        c.send_line("ping")
        assert c.recv()["type"] == "pong"
        c.send_line("exit")
        assert c.recv()["type"] == "goodbye"
        assert c.file.readline() == b""


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_websocket_rows(server: ServerProcess, host: str) -> None:
    with ws_client(server, host) as ws:
        ws.send('{"type":"ping"}')
        pong = ws_recv(ws)
        assert pong["type"] == "pong" and TIMESTAMP.match(pong["timestamp"])
        ws.send('{"type":"subscriptions"}')
        assert ws_recv(ws) == {"type": "subscriptions", "events": ["*"]}
        ws.send('{"type":"unsubscribe","events":["*"]}')
        assert ws_recv(ws) == {"type": "unsubscribed", "events": []}
        ws.send('{"type":"subscribe","events":["furniture_updated"]}')
        assert ws_recv(ws) == {"type": "subscribed", "events": ["furniture_updated"]}
        ws.send('{"type":"events"}')
        assert ws_recv(ws) == {"type": "events", "events": CATALOG}
        ws.send('{"type":"exit"}')
        with pytest.raises(ConnectionClosed):  # the server closes: 1000 "exit"
            ws.recv(timeout=10)
        assert ws.close_code == 1000 and ws.close_reason == "exit"


def test_publish_reaches_both_transports(server: ServerProcess) -> None:
    with (
        tcp_client(server, "::1") as tcp,
        ws_client(server, "127.0.0.1") as ws_all,
        ws_client(server, "::1", "?events=furniture_deleted") as ws_other,
        tcp_client(server) as publisher,
    ):
        tcp.send_line("subscribe furniture_created")
        tcp.recv_type("subscribed")
        publisher.send({"type": "publish", "event": "furniture_created", "data": {"n": 1}})
        ack = publisher.recv()
        assert ack["type"] == "published" and ack["event"] == "furniture_created"
        assert ack["delivered"] >= 2 and ack["offset"] >= 1
        got_tcp = tcp.recv()
        got_ws = ws_recv(ws_all)
        for got in (got_tcp, got_ws):
            assert got["type"] == "furniture_created" and got["data"] == {"n": 1}
            assert got["id"] == ack["id"] and TIMESTAMP.match(got["timestamp"])
            assert got["offset"] == ack["offset"] and POSITION.match(f"{got['epoch']}:1")
        # A subscriber of another event gets nothing: the next thing it sees is its pong.
        sync(ws_other)


def test_seed_form_relayed_verbatim_to_others(server: ServerProcess) -> None:
    with ws_client(server) as producer, ws_client(server, "::1") as a, tcp_client(server) as b:
        b.send_line("subscribe furniture_created")
        b.recv_type("subscribed")
        producer.send(json.dumps(SEED_CREATED))
        for got in (ws_recv(a), b.recv()):
            # Every field unchanged; the server only adds id, timestamp and
            # the notification's position.
            assert {k: got[k] for k in SEED_CREATED} == SEED_CREATED
            assert set(got) - set(SEED_CREATED) == {"id", "timestamp", "offset", "epoch"}
        # The producer is not echoed its own message.
        sync(producer)


def test_console_send_and_stats(server: ServerProcess) -> None:
    with tcp_client(server) as c:
        c.send_line("subscribe furniture_deleted")
        c.recv_type("subscribed")
        server.command("send furniture_deleted adiós mesa", r"sent furniture_deleted .*delivered=1")
        got = c.recv()
        assert got["type"] == "furniture_deleted" and got["message"] == "adiós mesa"
        m = server.command("stats", r"connections=(\d+) subscribers=(\d+)")
        assert int(m.group(1)) >= 1 and int(m.group(2)) >= 1
        server.command("clients", r"#\d+ tcp 127\.0\.0\.1:\d+ .*events=furniture_deleted")


BAD_INPUTS: list[tuple[str, str]] = [
    ("{not json", "invalid_json"),
    ("[1, 2]", "invalid_message"),
    ('{"no":"type"}', "invalid_message"),
    ('{"type":"teleport"}', "unknown_type"),
    ('{"type":"subscribe","events":["nope"]}', "unknown_event"),
    ('{"type":"subscribe","events":["bad name!"]}', "invalid_event"),
    ('{"type":"subscribe","events":5}', "invalid_message"),
    ('{"type":"register","email":"not-an-email"}', "invalid_email"),
    ('{"type":"publish","event":"nope","data":1}', "unknown_event"),
    ('{"type":"publish","event":"furniture_created","message":5}', "invalid_message"),
    ('{"type":"ping","x":' + "[" * 100 + "]" * 100 + "}", "json_too_deep"),
    ('{"type":"ping","x":NaN}', "invalid_json"),
]


@pytest.mark.parametrize(("text", "code"), BAD_INPUTS)
def test_bad_input_gets_code_and_connection_lives(
    server: ServerProcess, text: str, code: str
) -> None:
    with tcp_client(server, "::1") as tcp, ws_client(server) as ws:
        tcp.send_line(text)
        err = tcp.recv()
        assert err["type"] == "error" and err["code"] == code and err["message"]
        ws.send(text)
        err = ws_recv(ws)
        assert err["type"] == "error" and err["code"] == code
        sync(tcp)
        sync(ws)


def test_bad_human_commands(server: ServerProcess) -> None:
    with tcp_client(server) as c:
        for line, code in [
            ("dance", "unknown_command"),
            ("register", "invalid_email"),
            ("subscribe", "invalid_message"),
            ("events please", "unknown_command"),
        ]:
            c.send_line(line)
            err = c.recv()
            assert (err["type"], err["code"]) == ("error", code), line
        c.send_line("")  # a bare Enter is ignored, not an error
        sync(c)


def test_tcp_framing_errors(server: ServerProcess) -> None:
    with tcp_client(server) as c:
        c.sock.sendall(b'{"type":"ping"}\xff\xfe\n')
        assert c.recv()["code"] == "invalid_utf8"
        c.sock.sendall(b"ping\x00\n")
        assert c.recv()["code"] == "nul_byte"
        c.sock.sendall(b"x" * (64 * 1024 + 10) + b"\n")
        assert c.recv()["code"] == "message_too_large"
        sync(c)


def test_binary_websocket_frame(server: ServerProcess) -> None:
    with ws_client(server) as ws:
        ws.send(b'{"type":"ping"}')
        assert ws_recv(ws)["code"] == "binary_frame"
        sync(ws)


def test_websocket_query_subscriptions(server: ServerProcess) -> None:
    with ws_client(server, query="?events=furniture_updated,nope") as ws:
        err = ws_recv(ws)
        assert err["code"] == "unknown_event" and "nope" in err["message"]
        ws.send('{"type":"subscriptions"}')
        assert ws_recv(ws) == {"type": "subscriptions", "events": ["furniture_updated"]}


def test_dual_stack_accepts_ipv4_and_ipv6(server: ServerProcess) -> None:
    for family, host in [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect((host, server.tcp_port))
            assert b'"welcome"' in s.recv(4096)
    server.wait_log(rf"listening tcp \[::\]:{server.tcp_port}")


def test_ipv4_address_listens_on_ipv4_only() -> None:
    with running_server("--events", "a,b") as srv:
        srv.wait_log(rf"listening tcp 127\.0\.0\.1:{srv.tcp_port}")
        with LineClient("127.0.0.1", srv.tcp_port) as c:
            assert c.recv()["events"] == ["a", "b"]
        for port in (srv.tcp_port, srv.ws_port):
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                with pytest.raises(ConnectionRefusedError):
                    s.connect(("::1", port))


def test_host_name_listens_on_each_address() -> None:
    infos = socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    addresses = sorted({str(info[4][0]) for info in infos})
    with running_server("--host", "localhost", host="localhost") as srv:
        for address in addresses:
            shown = f"[{address}]" if ":" in address else address
            srv.wait_log(rf"listening tcp {re.escape(shown)}:{srv.tcp_port}")
            srv.wait_log(rf"listening ws {re.escape(shown)}:{srv.ws_port}")
            with LineClient(address, srv.tcp_port) as c:
                assert c.recv()["type"] == "welcome"
            with connect(f"ws://{shown}:{srv.ws_port}/") as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "welcome"


def test_publish_token() -> None:
    with (
        running_server("--publish-token", "s3cret") as srv,
        LineClient("127.0.0.1", srv.tcp_port) as sub,
        LineClient("127.0.0.1", srv.tcp_port) as pub,
    ):
        sub.recv()
        pub.recv()
        sub.send_line("subscribe furniture_created")
        sub.recv_type("subscribed")
        pub.send({"type": "publish", "event": "furniture_created", "data": 1})
        assert pub.recv()["code"] == "forbidden"
        seed = {**SEED_CREATED, "token": "wrong"}
        pub.send(seed)
        assert pub.recv()["code"] == "forbidden"
        seed["token"] = "s3cret"
        pub.send(seed)
        got = sub.recv()
        # Reached the subscriber, without the secret.
        assert got["furniture"] == SEED_CREATED["furniture"] and "token" not in got
        pub.send({"type": "publish", "event": "furniture_created", "data": 2,
                      "token": "s3cret"})  # fmt: skip
        assert pub.recv()["type"] == "published"
        assert sub.recv()["data"] == 2
