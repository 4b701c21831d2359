"""Protocol findings replayed against a live server, each as its own test.

The sans-IO properties pin these inputs as ``@example``s; here they show what
each one does to a running ``livenotify serve`` and its other clients.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from fuzz.rawclients import TcpConn, WsConn
from tests.helpers import ServerProcess, running_server

ARGS = ("--events", "a", "--no-worker", "--rate-limit", "0")


def strict_loads(text: str) -> object:
    def reject(name: str) -> object:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=reject)


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    # One server per test: the first finding kills the server it is sent to.
    with running_server(*ARGS) as srv:
        yield srv


def subscriber(server: ServerProcess) -> TcpConn:
    conn = TcpConn(server.tcp_port)
    assert conn.recv()["type"] == "welcome"
    conn.send_text("subscribe a")
    assert conn.recv() == {"type": "subscribed", "events": ["a"]}
    return conn


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"publish","event":"a","data":"\\ud800"}',
        '{"type":"a","x":"\\udfff"}',
        '{"type":"register","email":"\\ud800@example.com"}',
    ],
)
def test_lone_surrogate_escape_is_refused(server: ServerProcess, text: str) -> None:
    sub = subscriber(server)
    sender = WsConn(server.ws_port, "/?events=a")
    assert sender.recv()["type"] == "welcome"
    sender.send_text(text)
    reply = sender.recv()
    assert reply["type"] == "error", reply
    # The subscriber got nothing broken and is still served.
    sub.send_text("ping")
    assert sub.recv()["type"] == "pong"
    sender.close()
    sub.close()


def test_overflowing_number_is_not_relayed_as_infinity(server: ServerProcess) -> None:
    sub = subscriber(server)
    sender = TcpConn(server.tcp_port)
    assert sender.recv()["type"] == "welcome"
    sender.send_text('{"type":"publish","event":"a","data":1e999}')
    # Either the publish is refused, or what the subscriber gets is strict JSON.
    if sender.recv()["type"] != "error":
        sub.send_text("ping")
        while (line := sub.recv_line()) and json.loads(line)["type"] != "pong":
            strict_loads(line)
    sender.close()
    sub.close()
