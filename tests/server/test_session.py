"""The session in-process: bytes in through a real TcpTransport over an
in-memory stream, replies out, no sockets and no subprocess."""

from __future__ import annotations

import json
from typing import Any

import trio
import trio.testing

from livenotify import protocol, reasons
from livenotify.config import Config
from livenotify.hub import Hub
from livenotify.session import Session
from livenotify.transports import TcpTransport

CONFIG = Config(events=("a", "b"))
TIMEOUT = 5.0


class Peer:
    """The client end of one in-memory connection."""

    def __init__(self, stream: trio.testing.MemoryStapledStream) -> None:
        self.stream = stream
        self._buf = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def line(self) -> bytes | None:
        with trio.fail_after(TIMEOUT):
            while b"\n" not in self._buf:
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    async def recv(self) -> dict[str, Any]:
        line = await self.line()
        assert line is not None, "connection closed"
        obj = json.loads(line)
        assert isinstance(obj, dict)
        return obj


async def connect(hub: Hub, nursery: trio.Nursery) -> tuple[Peer, Session]:
    client, server = trio.testing.memory_stream_pair()
    transport = TcpTransport(server, "memory", CONFIG.limits.max_message_bytes)  # type: ignore[arg-type]
    session = Session(hub, CONFIG, transport)
    nursery.start_soon(session.run)
    peer = Peer(client)
    welcome = await peer.recv()
    assert welcome == {"type": "welcome", "events": ["a", "b"], "position": str(hub.position)}
    return peer, session


async def test_human_commands_json_and_delivery() -> None:
    hub = Hub(CONFIG)
    async with trio.open_nursery() as nursery:
        sub, _ = await connect(hub, nursery)
        pub, _ = await connect(hub, nursery)
        # CRLF endings, a bare Enter, and commas, as typed into nc.
        await sub.send(b"\r\nsubscribe a,b\r\n")
        assert await sub.recv() == {"type": "subscribed", "events": ["a", "b"]}
        await pub.send(b'{"type":"publish","event":"a","data":{"n":1}}\n')
        ack = await pub.recv()
        assert ack["type"] == "published" and ack["delivered"] == 1 and ack["offset"] == 1
        got = await sub.recv()
        assert got["type"] == "a" and got["data"] == {"n": 1} and got["id"] == ack["id"]
        assert (got["offset"], got["epoch"]) == (1, hub.position.epoch)
        await sub.send(b"help\n")
        assert (await sub.recv())["commands"] == list(protocol.COMMAND_USAGE)
        # Garbage is answered, and the conversation goes on.
        await sub.send(b"flibble\n{\n")
        assert (await sub.recv())["code"] == protocol.UNKNOWN_COMMAND
        assert (await sub.recv())["code"] == protocol.INVALID_JSON
        await sub.send(b"exit\n")
        assert await sub.recv() == {"type": "goodbye", "reason": reasons.EXIT}
        assert await sub.line() is None  # then EOF
        await pub.stream.send_eof()
        assert await pub.line() is None
    assert hub.stats.disconnects == {reasons.EXIT: 1, reasons.EOF: 1}
    assert hub.connections == {}


async def test_bytes_split_anywhere_make_the_same_lines() -> None:
    hub = Hub(CONFIG)
    async with trio.open_nursery() as nursery:
        peer, _ = await connect(hub, nursery)
        for byte in b'{"type":"subscribe","events":["b"]}\r\nping\n':
            await peer.send(bytes([byte]))
        assert await peer.recv() == {"type": "subscribed", "events": ["b"]}
        assert (await peer.recv())["type"] == "pong"
        await peer.stream.send_eof()
        assert await peer.line() is None


async def test_shutdown_says_goodbye_on_tcp() -> None:
    hub = Hub(CONFIG)
    async with trio.open_nursery() as nursery:
        peer, session = await connect(hub, nursery)
        session.shutdown()
        assert await peer.recv() == {"type": "goodbye", "reason": reasons.SHUTTING_DOWN}
        assert await peer.line() is None
    assert hub.stats.disconnects == {reasons.SHUTTING_DOWN: 1}
