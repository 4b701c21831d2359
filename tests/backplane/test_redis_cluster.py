"""Several ``livenotify serve`` processes on one Redis (``--backend``) behave
as one server: one log, the same positions everywhere, nothing acknowledged
lost when one of them is killed, registrations shared through PostgreSQL,
ports shared with ``--reuse-port``."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import redis
import trio

from livenotify.backplane.redis import RedisBackplane
from livenotify.config import Config
from livenotify.history import LogEntry, Position, Since
from livenotify.payload import Payload
from tests.backplane.services import (
    BOUND,
    SHARED_REDIS,
    cluster,
    notifications,
    publish,
    subscriber,
)
from tests.helpers import LineClient, free_port, running_server

CREATED, UPDATED = "furniture_created", "furniture_updated"


def burst(client: LineClient, tag: str, count: int) -> None:
    """``count`` publishes in one write, from a thread."""
    text = "".join(
        json.dumps({"type": "publish", "event": CREATED, "data": {"p": tag, "seq": s}}) + "\n"
        for s in range(count)
    ).encode()

    def send() -> None:
        try:
            client.sock.sendall(text)
        except OSError:
            pass  # the server was killed

    threading.Thread(target=send, daemon=True).start()


def acks(client: LineClient, count: int) -> list[dict[str, Any]]:
    """Up to ``count`` ``published`` answers, until the connection ends."""
    out: list[dict[str, Any]] = []
    try:
        while len(out) < count:
            obj = client.recv()
            assert obj["type"] == "published", obj
            out.append(obj)
    except (EOFError, OSError):
        pass
    return out


def test_three_processes_one_log(prefix: str, pg_url: str) -> None:
    with cluster(3, SHARED_REDIS, prefix, db=pg_url) as servers:
        subs = [subscriber(s) for s in servers]
        pubs = [LineClient("127.0.0.1", s.tcp_port) for s in servers]
        for pub in pubs:
            assert pub.recv()["type"] == "welcome"
        for i, pub in enumerate(pubs):
            burst(pub, f"p{i}", 20)
        published = [acks(pub, 20) for pub in pubs]
        seen = [notifications(sub, 60) for sub in subs]
        # Same notification at the same position on every process.
        assert seen[0] == seen[1] == seen[2]
        assert [n["offset"] for n in seen[0]] == list(range(1, 61))
        assert len({n["epoch"] for n in seen[0]}) == 1
        by_offset = {n["offset"]: n for n in seen[0]}
        for i, answers in enumerate(published):
            assert len(answers) == 20
            for answer in answers:
                note = by_offset[answer["offset"]]
                assert note["id"] == answer["id"] and note["data"]["p"] == f"p{i}"
            # Each publisher's notifications keep its order.
            mine = [n["data"]["seq"] for n in seen[0] if n["data"]["p"] == f"p{i}"]
            assert mine == list(range(20))
        # A client arriving now, on any process, starts at the same head.
        late = LineClient("127.0.0.1", servers[2].tcp_port)
        assert late.recv()["position"] == f"{seen[0][0]['epoch']}:60"
        for client in (*subs, *pubs, late):
            client.close()


def test_kill_9_of_one_process_loses_nothing_for_the_others(prefix: str) -> None:
    with cluster(3, SHARED_REDIS, prefix) as (a, b, c):
        subs = [subscriber(b), subscriber(c)]
        pub_a = LineClient("127.0.0.1", a.tcp_port)
        pub_b = LineClient("127.0.0.1", b.tcp_port)
        for pub in (pub_a, pub_b):
            assert pub.recv()["type"] == "welcome"
        burst(pub_a, "a", 400)
        burst(pub_b, "b", 100)
        first = acks(pub_a, 30)
        os.kill(a.proc.pid, signal.SIGKILL)
        acked_a = first + acks(pub_a, 400)
        acked_b = acks(pub_b, 100)
        assert len(first) == 30 and len(acked_a) < 400  # killed mid-burst
        assert len(acked_b) == 100
        a.proc.wait(10)
        client = redis.Redis.from_url(SHARED_REDIS, decode_responses=True)
        total = int(client.get(f"{prefix}:offset") or 0)
        client.close()
        # Everything Redis accepted — every acknowledged publish among it —
        # reaches the survivors' subscribers, in order, once.
        for sub in subs:
            seen = notifications(sub, total)
            assert [n["offset"] for n in seen] == list(range(1, total + 1))
            ids = {n["id"] for n in seen}
            assert {x["id"] for x in acked_a + acked_b} <= ids
            sub.close()
        pub_a.close()
        pub_b.close()


async def test_history_is_shared_across_processes(prefix: str) -> None:
    """A client that saw offset k on one process recovers exactly k+1.. from
    another: history() of a further process (this test) over the stream
    that the server processes wrote."""
    with cluster(2, SHARED_REDIS, prefix) as (a, b):
        sub_b = subscriber(b)
        pub = LineClient("127.0.0.1", a.tcp_port)
        pub.recv()
        for n in range(6):
            event = CREATED if n % 2 else UPDATED
            assert publish(pub, event, {"n": n})["type"] == "published"
        seen = notifications(sub_b, 6)
        epoch = seen[0]["epoch"]
        third = RedisBackplane(Config(backend=SHARED_REDIS, backend_prefix=prefix))
        delivered: list[LogEntry] = []

        def deliver(entry: LogEntry, payload: Payload, exclude: object | None) -> int:
            delivered.append(entry)
            return 0

        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                await nursery.start(third.run, deliver)
                assert third.position == Position(epoch, 6)
                replay = await third.history(Since(Position(epoch, 2)), ["*"])
                assert replay.recovered
                assert [json.loads(e.text) for e in replay.entries] == seen[2:]
                only = await third.history(Since(Position(epoch, 2)), [CREATED])
                assert [e.offset for e in only.entries] == [4, 6]
                assert (await third.history(Since(Position(epoch, 6)), ["*"])).recovered
                stale = await third.history(Since(Position("0ther", 2)), ["*"])
                assert not stale.recovered and stale.entries == []
                everything = await third.history(Since(), ["*"])
                assert everything.recovered and len(everything.entries) == 6
                # A position this process's reader has not reached yet (seen
                # on a faster process) is waited for, not refused.
                fresh = publish(pub, CREATED, {"n": 6})  # blocks: no checkpoint here
                assert third.position.offset == 6
                ahead = await third.history(Since(Position(epoch, fresh["offset"])), ["*"])
                assert ahead.recovered and ahead.entries == []
                assert notifications(sub_b, 1)[0]["id"] == fresh["id"]
                # Its publishes reach the servers' subscribers at the next offset.
                sent = await third.publish(CREATED, {"from": "third"})
                assert sent.offset == 8
                assert notifications(sub_b, 1)[0]["id"] == sent.id
                assert [e.offset for e in delivered] == [7, 8]
                nursery.cancel_scope.cancel()
        third.close()
        sub_b.close()
        pub.close()


async def test_history_not_exact_once_trimmed(prefix: str) -> None:
    config = Config(backend=SHARED_REDIS, backend_prefix=prefix, history_size=10)
    plane = RedisBackplane(config)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            await nursery.start(plane.run, lambda entry, payload, exclude: 0)
            for n in range(400):
                await plane.publish(CREATED, {"n": n})
            epoch = plane.position.epoch
            old = await plane.history(Since(Position(epoch, 1)), ["*"])
            assert not old.recovered and old.entries == []
            recent = await plane.history(Since(Position(epoch, 395)), ["*"])
            assert recent.recovered and [e.offset for e in recent.entries] == [
                396, 397, 398, 399, 400,
            ]  # fmt: skip
            nursery.cancel_scope.cancel()
    plane.close()


def test_registration_shared_through_postgresql(prefix: str, pg_url: str) -> None:
    with cluster(2, SHARED_REDIS, prefix, db=pg_url) as (a, b):
        with LineClient("127.0.0.1", a.tcp_port) as first:
            first.recv()
            first.send({"type": "register", "email": "ana@scale.test"})
            first.recv_type("registered")
            first.send({"type": "subscribe", "events": [UPDATED]})
            first.recv_type("subscribed")
        with LineClient("127.0.0.1", b.tcp_port) as second:
            second.recv()
            second.send({"type": "register", "email": "ana@scale.test"})
            assert second.recv_type("registered")["events"] == [UPDATED]
            # Restored: it gets UPDATED published on the other process.
            with LineClient("127.0.0.1", a.tcp_port) as pub:
                pub.recv()
                assert publish(pub, UPDATED, {"n": 1})["type"] == "published"
            assert notifications(second, 1)[0]["data"] == {"n": 1}


def test_reuse_port_shares_the_ports(prefix: str) -> None:
    port, ws_port = free_port(), free_port()
    flags = ("--backend", SHARED_REDIS, "--backend-prefix", prefix, "--reuse-port")
    with (
        running_server(*flags, port=port, ws_port=ws_port) as a,
        running_server(*flags, port=port, ws_port=ws_port) as b,
    ):
        assert a.tcp_port == b.tcp_port == port
        clients = [LineClient("127.0.0.1", port) for _ in range(24)]
        for client in clients:
            assert client.recv()["type"] == "welcome"
        deadline = time.monotonic() + BOUND
        served = [0, 0]
        while sum(served) < 24 and time.monotonic() < deadline:
            time.sleep(0.05)  # the log readers catch up
            served = [s.log.count(r"connect tcp ") for s in (a, b)]
        assert sum(served) == 24 and min(served) > 0, served
        for client in clients:
            client.close()
