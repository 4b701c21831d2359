"""MailDispatcher against the real StorageBridge and a real Redis broker:
outbox rows reach the broker from a worker thread; a broker outage keeps them
pending (one WARNING) and they go when it is back (one INFO), without ever
blocking the Trio thread."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from livenotify.config import Config
from livenotify.mail import MailDispatcher
from livenotify.storage import StorageBridge, StorageBusy
from tasks.celery_app import QUEUE
from tests.mailtools import MAIL_REDIS_URL, RedisServer, capture_logs, flush_redis_db


def queued_jobs(url: str) -> list[dict[str, Any]]:
    """The ``send_mail`` arguments waiting in the broker's queue, oldest first."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        raw = client.lrange(QUEUE, 0, -1)
    finally:
        client.close()
    jobs = []
    for item in reversed(raw):  # LPUSH: newest first
        envelope = json.loads(item)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        jobs.append(args[0])
    return jobs


@pytest.fixture
def mail_db() -> Iterator[str]:
    flush_redis_db()
    yield MAIL_REDIS_URL
    flush_redis_db()


@asynccontextmanager
async def storage(config: Config) -> AsyncIterator[StorageBridge]:
    bridge = StorageBridge(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(bridge.run)
        yield bridge
        await bridge.aclose()
        nursery.cancel_scope.cancel()


def subscribe(bridge: StorageBridge, email: str, event: str) -> None:
    bridge.register(email)
    bridge.subscribe(email, [event])


async def test_rows_pending_at_start_and_new_ones_reach_the_broker(
    mail_db: str, tmp_path: Path
) -> None:
    config = Config(broker=mail_db, db=str(tmp_path / "s.db"), data_dir=str(tmp_path))
    with capture_logs("livenotify.mail") as logs, trio.fail_after(30):
        async with storage(config) as bridge:
            for who in ("ana", "bea", "cai"):
                subscribe(bridge, f"{who}@example.com", "furniture_created")
            subscribe(bridge, "dan@example.com", "furniture_deleted")
            # Logged before the dispatcher runs: as after a restart.
            bridge.log_notification("n1", "furniture_created", '{"type":"furniture_created"}')
            await bridge.flush()
            dispatcher = MailDispatcher(config, bridge, batch=2)
            async with trio.open_nursery() as nursery:
                await nursery.start(dispatcher.run)
                await logs.wait(r"mail: 1 job\(s\) handed")  # 2 + 1 with batch=2
                bridge.log_notification("n2", "furniture_deleted", '{"type":"furniture_deleted"}')
                await logs.wait(r"mail: 1 job\(s\) handed", start=logs.mark())
                assert await bridge.pending_mail(10) == []
                nursery.cancel_scope.cancel()
    jobs = queued_jobs(mail_db)
    assert sorted((j["notification_id"], j["email"]) for j in jobs) == [
        ("n1", "ana@example.com"),
        ("n1", "bea@example.com"),
        ("n1", "cai@example.com"),
        ("n2", "dan@example.com"),
    ]
    assert jobs[0]["event"] == "furniture_created"
    assert json.loads(jobs[0]["payload"]) == {"type": "furniture_created"}
    assert dispatcher.queued == 4 and dispatcher.failed_attempts == 0


async def test_broker_outage_keeps_mail_pending_then_hands_it_over(tmp_path: Path) -> None:
    broker = RedisServer(tmp_path)
    broker.start()
    config = Config(broker=broker.url, db=str(tmp_path / "s.db"), data_dir=str(tmp_path))
    try:
        with capture_logs("livenotify.mail") as logs, trio.fail_after(40):
            async with storage(config) as bridge:
                subscribe(bridge, "ana@example.com", "ev")
                dispatcher = MailDispatcher(config, bridge)
                async with trio.open_nursery() as nursery:
                    await nursery.start(dispatcher.run)
                    bridge.log_notification("n1", "ev", '{"type":"ev"}')
                    await logs.wait(r"mail: 1 job\(s\) handed")
                    assert len(queued_jobs(broker.url)) == 1

                    broker.kill()
                    bridge.log_notification("n2", "ev", '{"type":"ev"}')
                    await logs.wait(r"mail broker unreachable")
                    await logs.wait(r"hand-off attempt 3 failed")
                    # The Trio thread never waited on the dead broker.
                    for _ in range(20):
                        with trio.fail_after(0.25):
                            await trio.sleep(0.01)
                    [waiting] = await bridge.pending_mail(10)
                    assert waiting.notification_id == "n2"
                    assert dispatcher.broker_down

                    mark = logs.mark()
                    broker.start()  # same port, empty: the job was never accepted
                    await logs.wait(r"mail broker reachable again", start=mark)
                    assert await bridge.pending_mail(10) == []
                    nursery.cancel_scope.cancel()
        assert [j["notification_id"] for j in queued_jobs(broker.url)] == ["n2"]
        assert logs.count(r"mail broker unreachable") == 1
        assert logs.count(r"mail broker reachable again") == 1
        assert dispatcher.failed_attempts >= 3
    finally:
        broker.kill()


class RefusingMarks:
    """The real bridge, except that ``mark_mail_queued`` is refused while
    ``refuse`` is set: a backlog full of other writes while reads still
    answer (reads go through the writer, so a stopped writer stops them too)."""

    def __init__(self, bridge: StorageBridge) -> None:
        self.bridge = bridge
        self.refuse = True

    async def pending_mail(self, limit: int) -> list[Any]:
        return list(await self.bridge.pending_mail(limit))

    def mark_mail_queued(self, outbox_ids: Any) -> int:
        if self.refuse:
            raise StorageBusy("storage backlog full (test)")
        return self.bridge.mark_mail_queued(outbox_ids)

    async def wait_outbox(self) -> None:
        await self.bridge.wait_outbox()


async def test_stuck_writer_pauses_hand_off_instead_of_repeating_it(
    mail_db: str, tmp_path: Path
) -> None:
    config = Config(broker=mail_db, db=str(tmp_path / "s.db"), data_dir=str(tmp_path))
    bridge = StorageBridge(config)
    with capture_logs("livenotify.mail") as logs, trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            await nursery.start(bridge.run)
            subscribe(bridge, "ana@example.com", "ev")
            bridge.log_notification("n1", "ev", '{"type":"ev"}')
            await bridge.flush()
            outbox = RefusingMarks(bridge)
            dispatcher = MailDispatcher(config, outbox)
            await nursery.start(dispatcher.run)
            await logs.wait(r"hand-off paused")
            # A window in which the old code handed the same row over
            # hundreds of times: it must stay handed over once.
            await trio.sleep(1.0)
            assert len(queued_jobs(mail_db)) == 1 and dispatcher.queued == 1
            outbox.refuse = False
            await logs.wait(r"hand-off resumes")
            await bridge.flush()
            assert await bridge.pending_mail(10) == []
            assert len(queued_jobs(mail_db)) == 1
            assert logs.count(r"hand-off paused") == 1
            dispatcher.stop()
            await bridge.aclose()
            nursery.cancel_scope.cancel()
