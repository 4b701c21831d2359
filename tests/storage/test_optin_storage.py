"""Double opt-in in the store, on SQLite and PostgreSQL: the outbox gets
rows only for confirmed subscribers; codes are found, confirmed, and an
address is never un-confirmed (schema version 5)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from livenotify.config import Config
from livenotify.storage import StorageBridge
from tests.pg import fresh_database

BOUND = 30.0


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "s.db")
        return
    with fresh_database() as url:
        yield url


async def test_outbox_only_for_confirmed_subscribers(db: str) -> None:
    bridge = StorageBridge(Config(db=db))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(BOUND):
            await nursery.start(bridge.run)
            for email, confirmed in (("yes@b.c", True), ("no@b.c", False), ("later@b.c", False)):
                bridge.register(email, confirmed=confirmed)
                bridge.subscribe(email, ["e"])
            bridge.set_confirmation("later@b.c", "code-later", "2999-01-01T00:00:00.000Z")
            await bridge.committed(
                bridge.set_confirmation("no@b.c", "code-no", "2999-01-01T00:00:00.000Z")
            )
            assert await bridge.subscriber("nobody@b.c") is None
            state = await bridge.subscriber("no@b.c")
            assert state is not None and state[:3] == (
                False, "code-no", "2999-01-01T00:00:00.000Z",
            )  # fmt: skip
            assert (await bridge.subscriber("yes@b.c") or ())[0] is True
            assert await bridge.confirmation("code-later") == (
                "later@b.c", "2999-01-01T00:00:00.000Z",
            )  # fmt: skip
            assert await bridge.confirmation("nope") is None

            bridge.log_notification("n1", "e", '{"type":"e"}')
            await bridge.flush()
            assert [j.email for j in await bridge.pending_mail(10)] == ["yes@b.c"]

            # A wrong code confirms nothing; the right one does.
            bridge.confirm("later@b.c", "code-no")
            await bridge.committed(bridge.confirm("later@b.c", "code-later"))
            # register(confirmed=False) never un-confirms.
            await bridge.committed(bridge.register("yes@b.c", confirmed=False))
            bridge.log_notification("n2", "e", '{"type":"e"}')
            await bridge.flush()
            jobs = await bridge.pending_mail(10)
            assert sorted((j.notification_id, j.email) for j in jobs) == [
                ("n1", "yes@b.c"), ("n2", "later@b.c"), ("n2", "yes@b.c"),
            ]  # fmt: skip
            assert (await bridge.subscriber("no@b.c") or ())[0] is False
            await bridge.aclose()
