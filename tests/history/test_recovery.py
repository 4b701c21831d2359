"""Recovery in the session, in-process (in-memory log, in-memory streams):
``subscribe ... since`` replays exactly what was missed, with publishes
racing it, and says when it cannot."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import replace
from typing import Any

import trio
import trio.testing

from livenotify import protocol
from livenotify.backplane import LocalBackplane
from livenotify.config import Config
from livenotify.history import HistoryBusy, MemoryLog, Replay, Since
from livenotify.hub import Hub
from livenotify.session import Session
from livenotify.transports import TcpTransport

CONFIG = Config(events=("a", "b"))
TIMEOUT = 20.0


class Peer:
    """The client end of one in-memory connection."""

    def __init__(self, stream: trio.testing.MemoryStapledStream) -> None:
        self.stream = stream
        self._buf = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(TIMEOUT):
            while b"\n" not in self._buf:
                data = await self.stream.receive_some(65536)
                assert data, "connection closed"
                self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        obj = json.loads(line)
        assert isinstance(obj, dict)
        return obj


async def connect(hub: Hub, nursery: trio.Nursery, config: Config = CONFIG) -> Peer:
    client, server = trio.testing.memory_stream_pair()
    transport = TcpTransport(server, "memory", config.limits.max_message_bytes)  # type: ignore[arg-type]
    nursery.start_soon(Session(hub, config, transport).run)
    peer = Peer(client)
    welcome = await peer.recv()
    assert welcome["type"] == "welcome" and welcome["position"] == str(hub.position)
    return peer


class SlowLog(MemoryLog):
    """Reads history like a disk would, yielding before and after it takes
    the answer: publishes race it, some land in both the answer and the
    subscriber's live buffer."""

    async def since(self, since: Since, events: Collection[str]) -> Replay:
        for _ in range(100):
            await trio.lowlevel.checkpoint()
        replay = await super().since(since, events)
        for _ in range(100):
            await trio.lowlevel.checkpoint()
        return replay


def publish(hub: Hub, n: int) -> list[int]:
    return [hub.publish_nowait("ab"[i % 2], {"i": i}).offset for i in range(n)]


async def test_since_position_replays_exactly_what_was_missed() -> None:
    hub = Hub(CONFIG)
    publish(hub, 10)  # a: offsets 1,3,5,7,9
    epoch = hub.position.epoch
    async with trio.open_nursery() as nursery:
        peer = await connect(hub, nursery)
        await peer.send(f"subscribe a since {epoch}:3\n".encode())
        reply = await peer.recv()
        assert reply == {
            "type": "subscribed", "events": ["a"], "recovered": True, "replayed": 3,
            "position": f"{epoch}:10",
        }  # fmt: skip
        got = [await peer.recv() for _ in range(3)]
        assert [g["offset"] for g in got] == [5, 7, 9]
        assert all(g["type"] == "a" and g["epoch"] == epoch for g in got)
        publish(hub, 2)  # offsets 11 (a), 12 (b): live again
        assert (await peer.recv())["offset"] == 11
        nursery.cancel_scope.cancel()


async def test_unknown_epoch_or_future_offset_is_not_recovered() -> None:
    hub = Hub(CONFIG)
    publish(hub, 4)
    async with trio.open_nursery() as nursery:
        peer = await connect(hub, nursery)
        for since in ("0badc0de:1", f"{hub.position.epoch}:99"):
            await peer.send(
                json.dumps({"type": "subscribe", "events": ["a"], "since": since}).encode() + b"\n"
            )
            reply = await peer.recv()
            assert (reply["recovered"], reply["replayed"]) == (False, 0)
        # "all" is best effort: everything history holds, and it is all of it.
        await peer.send(b'{"type":"subscribe","events":["b"],"since":"all"}\n')
        reply = await peer.recv()
        assert (reply["recovered"], reply["replayed"]) == (True, 2)
        assert [(await peer.recv())["offset"] for _ in range(2)] == [2, 4]
        nursery.cancel_scope.cancel()


async def test_invalid_since_is_refused() -> None:
    hub = Hub(CONFIG)
    async with trio.open_nursery() as nursery:
        peer = await connect(hub, nursery)
        for line in (
            b"subscribe a since yesterday\n",
            b'{"type":"subscribe","events":["a"],"since":5}\n',
        ):
            await peer.send(line)
            err = await peer.recv()
            assert err["type"] == "error" and err["code"] == protocol.INVALID_POSITION
        await peer.send(b"subscriptions\n")
        assert (await peer.recv())["events"] == []  # nothing was subscribed
        nursery.cancel_scope.cancel()


async def test_replay_races_publishes_without_gap_or_duplicate() -> None:
    """Publishes keep coming while the subscriber's replay is queued: the
    client sees every offset of its events exactly once, in order."""
    config = replace(CONFIG, queue_size=100_000)
    hub = Hub(config)
    hub.use(LocalBackplane(SlowLog(), hub.deliver_entry))
    publish(hub, 1500)
    total = 4000
    async with trio.open_nursery() as nursery:
        peer = await connect(hub, nursery, config)

        async def race() -> None:
            for i in range(total - 1500):
                hub.publish_nowait("ab"[i % 2], {"i": i})
                if i % 7 == 0:
                    await trio.lowlevel.checkpoint()

        await peer.send(f"subscribe a b since {hub.position.epoch}:0\n".encode())
        nursery.start_soon(race)
        reply = await peer.recv()
        assert (
            reply["type"] == "subscribed"
            and reply["recovered"] is True
            and reply["replayed"] >= 1500
        )
        offsets = [(await peer.recv())["offset"] for _ in range(total)]
        assert offsets == list(range(1, total + 1))
        nursery.cancel_scope.cancel()


class BusyLog(MemoryLog):
    """A log that cannot take anything while ``busy``."""

    busy = False

    def append(self, notification_id: str, event: str, encode: Any) -> Any:
        if self.busy:
            raise HistoryBusy("storage backlog full")
        return super().append(notification_id, event, encode)


async def test_a_full_log_refuses_the_publish_and_delivers_nothing() -> None:
    hub = Hub(CONFIG)
    log = BusyLog()
    hub.use(LocalBackplane(log, hub.deliver_entry))
    async with trio.open_nursery() as nursery:
        sub = await connect(hub, nursery)
        pub = await connect(hub, nursery)
        await sub.send(b"subscribe a\n")
        await sub.recv()
        log.busy = True
        await pub.send(b'{"type":"publish","event":"a","data":1}\n{"type":"a","seed":1}\n')
        for _ in range(2):  # the seed form, which has no reply, gets the error too
            err = await pub.recv()
            assert (err["type"], err["code"]) == ("error", protocol.BUSY)
        log.busy = False
        await pub.send(b'{"type":"publish","event":"a","data":2}\n')
        ack = await pub.recv()
        assert ack["offset"] == 1  # the refused ones took no offset
        got = await sub.recv()  # the first thing it gets: nothing was delivered before
        assert (got["data"], got["offset"]) == (2, 1)
        nursery.cancel_scope.cancel()


class StuckWriter:
    """A connection whose socket takes nothing: pushes queue up."""

    kind = "tcp"
    peer = "stuck"

    def frame(self, payload: Any) -> bytes:
        return bytes(payload.line())

    def send_nowait(self, data: bytes) -> int | None:
        return None


async def test_a_replay_cut_short_keeps_its_floor_for_the_resume_position() -> None:
    # The connection ends (shutdown closes its queue) while a replay waits
    # for room: the resume position must start at the first one not queued,
    # not at the head, or the next resume skips the rest.
    from livenotify.history import Position
    from livenotify.recovery import Replayer

    hub = Hub(replace(CONFIG, queue_size=5))
    epoch = hub.position.epoch
    for i in range(50):
        hub.publish_nowait("a", {"i": i})
    sub = hub.attach(StuckWriter(), lambda reason: None)
    hub.begin_recovery(sub)
    hub.subscribe(sub, ["a"])
    replayer = Replayer(hub, sub)

    async def answer(recovery: protocol.Recovery, position: str) -> None:
        assert recovery.recovered and recovery.replayed == 50

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replayer.run, Since(position=Position(epoch, 0)), {"a"}, answer)
            while len(sub.outbox) < 5:  # full: the replay now waits for room
                await trio.lowlevel.checkpoint()
            await trio.testing.wait_all_tasks_blocked()
            sub.outbox.close()
    assert replayer.cut
    assert replayer.floor == 6, replayer.floor
