"""Write coalescing (hub.delivery.Coalescer): a burst reaches each subscriber in few
writes, in order, within the queue limit; a lone notification is not held.

The hub runs in-process here, its subscribers on real TCP transports over
real socket pairs; each transport's ``send_nowait`` is wrapped to count the
writes (each still goes to the socket). The last test drives a real server.
"""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

import pytest
import trio
import trio.testing

from livenotify import protocol
from livenotify.config import Config
from livenotify.hub import Coalescer, Hub, Subscriber
from livenotify.transports.tcp import TcpTransport
from tests.helpers import LineClient, running_server, send_burst

#: Liveness bound for every wait below; nothing here should take a fraction of it.
TIMEOUT = 10.0


@dataclass
class Peer:
    """One subscriber: the hub's view, and the far end of its socket."""

    sub: Subscriber
    far: trio.SocketStream
    writes: list[int] = field(default_factory=list)
    kills: list[str] = field(default_factory=list)
    buffer: bytes = b""

    async def lines(self, n: int) -> list[dict[str, object]]:
        """The next ``n`` NDJSON lines this subscriber was sent."""
        out: list[dict[str, object]] = []
        with trio.fail_after(TIMEOUT):
            while len(out) < n:
                while b"\n" not in self.buffer:
                    data = await self.far.receive_some(65536)
                    assert data, "the hub side closed"
                    self.buffer += data
                line, self.buffer = self.buffer.split(b"\n", 1)
                out.append(json.loads(line))
        return out


def attach(hub: Hub, sndbuf: int | None = None) -> Peer:
    near, far = socket.socketpair()
    if sndbuf is not None:
        near.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    near.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(near))
    transport = TcpTransport(stream, "test", 65536)
    peer = Peer(None, trio.SocketStream(trio.socket.from_stdlib_socket(far)))  # type: ignore[arg-type]
    real_send: Callable[[bytes], int | None] = transport.send_nowait

    def counted(data: bytes) -> int | None:
        sent = real_send(data)
        peer.writes.append(data.count(b"\n"))
        return sent

    peer.sub = hub.attach(transport, peer.kills.append)
    peer.sub.send_nowait = counted
    hub.subscribe(peer.sub, ["bench"])
    return peer


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    hub = Hub(replace(Config(), events=("bench",), queue_size=8))
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.coalescer.run)
        yield hub
        nursery.cancel_scope.cancel()


async def test_burst_goes_out_in_one_write_per_subscriber(hub: Hub) -> None:
    peers = [attach(hub) for _ in range(3)]
    # One publisher's read: several publishes with no checkpoint between.
    burst = 5
    for seq in range(burst):
        assert hub.publish_nowait("bench", {"seq": seq})[1] == len(peers)
    for peer in peers:
        got = await peer.lines(burst)
        assert [m["seq"] for m in got] == list(range(burst))
        # The first at once, the rest together (without coalescing: [1] * 5).
        assert peer.writes == [1, burst - 1], peer.writes


async def test_lone_notification_is_written_at_once(hub: Hub) -> None:
    peer = attach(hub)
    hub.publish_nowait("bench", {"seq": 0})
    assert peer.writes == [1]  # at once: nothing held
    assert [m["seq"] for m in await peer.lines(1)] == [0]
    # Once all is quiet, a burst again starts with a write at once; the
    # rest of it is held, and written when it pauses.
    await trio.testing.wait_all_tasks_blocked()
    for seq in (1, 2, 3):
        hub.publish_nowait("bench", {"seq": seq})
    assert peer.writes == [1, 1]
    assert [m["seq"] for m in await peer.lines(3)] == [1, 2, 3]
    assert peer.writes == [1, 1, 2]


async def test_a_long_burst_is_written_in_pieces(hub: Hub) -> None:
    config = replace(Config(), events=("bench",), queue_size=10_000)
    hub.config = config
    peer = attach(hub)
    peer.sub.outbox.maxlen = config.queue_size
    total = 3 * Coalescer.HOLD_MAX
    for seq in range(total):
        hub.publish_nowait("bench", {"seq": seq})
    got = await peer.lines(total)
    assert [m["seq"] for m in got] == list(range(total))
    # A subscriber never holds more than HOLD_MAX.
    assert peer.writes == [1, Coalescer.HOLD_MAX, Coalescer.HOLD_MAX, Coalescer.HOLD_MAX - 1]


async def test_held_deliveries_count_against_the_queue_limit(hub: Hub) -> None:
    slow = attach(hub, sndbuf=4096)
    fast = attach(hub)
    # Fill the slow subscriber's socket: the kernel takes nothing more.
    filler = b"x" * 65536
    while slow.sub.send_nowait(filler):
        pass
    hub.coalescer.touch()  # a burst is on: from the first publish, all are held
    queue_size = hub.config.queue_size
    delivered = [hub.publish_nowait("bench", {"seq": seq})[1] for seq in range(queue_size + 3)]
    # The slow one held queue_size; then its queue was full, and it was
    # disconnected. The fast one got everything, its queue never full.
    assert delivered == [2] * queue_size + [1] * 3
    assert set(slow.kills) == {protocol.SLOW_CONSUMER}  # the session ends it once
    assert slow.sub.queued == queue_size
    assert fast.kills == []
    got = await fast.lines(queue_size + 3)
    assert [m["seq"] for m in got] == list(range(queue_size + 3))


async def test_a_partly_taken_write_still_counts_one_entry_per_delivery(hub: Hub) -> None:
    """The kernel takes part of a held batch: what is left is queued one
    entry per delivery (the cut frame's rest first), so the queue limit and
    ``queued`` still count deliveries, not writes."""
    peer = attach(hub, sndbuf=4096)
    peer.sub.outbox.on_queue = lambda: None  # no writer task: the queue stays put
    hub.coalescer.touch()  # a burst is on: every publish is held
    queue_size = hub.config.queue_size
    pad = "p" * 2000
    for seq in range(queue_size - 1):
        hub.publish_nowait("bench", {"seq": seq, "pad": pad})
    hub.coalescer.flush()
    taken, left = peer.writes, peer.sub.outbox._items
    assert taken == [queue_size - 1]  # one write of the whole batch...
    assert 0 < len(left) < queue_size - 1  # ...of which the kernel took part
    # One entry per delivery not yet written: the cut frame's rest, then
    # the untouched ones (without the split: one entry holding them all).
    deliveries_left = sum(i.count(b"\n") if isinstance(i, bytes) else 1 for i in left)
    assert deliveries_left > 1
    assert len(left) == deliveries_left
    assert isinstance(left[0], bytes) and all(not isinstance(i, bytes) for i in left[1:])
    queued = len(left)
    assert peer.sub.queued == queued
    # Room for exactly queue_size - queued more, then the policy applies.
    more = [hub.publish_nowait("bench", {"seq": s, "pad": pad})[1] for s in range(queue_size)]
    assert more.count(1) == queue_size - queued
    assert set(peer.kills) == {protocol.SLOW_CONSUMER}


def test_replies_and_notifications_keep_their_order_in_a_burst() -> None:
    """A publisher subscribed to its own event sends 300 publishes in one
    write: it reads notification, then ``published``, for each, in order;
    a TCP subscriber reads all 300 in order."""
    count = 300
    with (
        running_server("--events", "bench", env={"LIVENOTIFY_RATE_LIMIT": "0"}) as srv,
        LineClient("127.0.0.1", srv.tcp_port) as publisher,
        LineClient("127.0.0.1", srv.tcp_port) as other,
    ):
        for client in (publisher, other):
            assert client.recv()["type"] == "welcome"
            client.send_line("subscribe bench")
            client.recv_type("subscribed")
        lines = [
            json.dumps({"type": "publish", "event": "bench", "data": {"seq": s}})
            for s in range(count)
        ]
        publisher.sock.sendall(("\n".join(lines) + "\n").encode())
        for seq in range(count):
            note, ack = publisher.recv(), publisher.recv()
            assert note["type"] == "bench" and note["data"] == {"seq": seq}, note
            assert ack["type"] == "published" and ack["id"] == note["id"], ack
        assert [other.recv()["data"] for _ in range(count)] == [{"seq": s} for s in range(count)]


def test_shutdown_in_a_burst_flushes_what_is_held_then_says_goodbye() -> None:
    """SIGTERM while a 20,000-publish burst is being handled: the subscriber
    gets a gap-free, in-order prefix of the burst, then ``goodbye`` last."""
    count = 20_000
    with (
        running_server(
            "--events", "bench", "--queue-size", "100000",
            env={"LIVENOTIFY_RATE_LIMIT": "0"},
        ) as srv,
        LineClient("127.0.0.1", srv.tcp_port) as publisher,
        LineClient("127.0.0.1", srv.tcp_port) as subscriber,
    ):  # fmt: skip
        for client in (publisher, subscriber):
            assert client.recv()["type"] == "welcome"
        subscriber.send_line("subscribe bench")
        subscriber.recv_type("subscribed")
        send_burst(publisher, "bench", count)
        assert subscriber.recv()["data"] == {"seq": 0}
        srv.proc.send_signal(signal.SIGTERM)
        seqs = [0]
        while (msg := subscriber.recv())["type"] != "goodbye":
            seqs.append(msg["data"]["seq"])
        assert seqs == list(range(len(seqs)))
        assert msg == {"type": "goodbye", "reason": "shutting_down"}
        assert subscriber.file.readline() == b""  # nothing after goodbye
        assert srv.proc.wait(TIMEOUT) == 0
