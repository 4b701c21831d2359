"""Retention in the writer (issue 13.3): history trimmed to its size and
age, handed-over outbox rows deleted, and a database file that stops
growing under steady publishing."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from livenotify.config import Config
from livenotify.storage import StorageBridge

BOUND = 60.0


@asynccontextmanager
async def running(db: Path, **settings: Any) -> AsyncIterator[StorageBridge]:
    bridge = StorageBridge(Config(db=str(db), **settings))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(BOUND):
            await nursery.start(bridge.run)
        try:
            yield bridge
        finally:
            with trio.fail_after(BOUND):
                await bridge.aclose()


def count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


async def until(db: Path, sql: str, target: int) -> None:
    """Poll (bounded) until ``sql`` counts ``target``: retention runs in the
    writer about once a second, with nothing to wait on from outside."""
    with trio.fail_after(BOUND):
        while count(db, sql) != target:
            await trio.sleep(0.1)


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


async def test_file_size_plateaus_under_steady_publishing(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    payload = "x" * 2000
    sizes = []
    async with running(db, history_size=500) as bridge:
        for round_ in range(12):
            for i in range(1500):
                bridge.log_notification(f"n{round_}-{i}", "ev", payload)
            with trio.fail_after(BOUND):
                await bridge.flush()
            await until(db, "SELECT count(*) FROM notifications", 500)
            sizes.append(db_bytes(db))
    # 18,000 notifications of 2 KB (36 MB) were written; the database holds
    # about 500 of them and, with its WAL (kept to 16 MiB after a
    # checkpoint), stays the size it reached in the first rounds.
    assert max(sizes[4:]) <= max(sizes[:4]) * 1.25, sizes
    assert sizes[-1] < 24 * 1024 * 1024, sizes


async def test_outbox_rows_leave_after_retention_and_keep_their_notification(
    tmp_path: Path,
) -> None:
    db = tmp_path / "r.db"
    async with running(db, history_size=1, outbox_retention=0.5) as bridge:
        bridge.register("ana@example.com")
        bridge.subscribe("ana@example.com", ["ev"])
        for i in range(5):
            bridge.log_notification(f"n{i}", "ev", "{}")
        with trio.fail_after(BOUND):
            await bridge.flush()
        # Out of history, but still wanted by pending mail: kept.
        await until(db, "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'floor'", 0)
        with trio.fail_after(BOUND):
            jobs = await bridge.pending_mail(10)
        assert len(jobs) == 5
        assert count(db, "SELECT count(*) FROM notifications") == 5
        bridge.mark_mail_queued([job.outbox_id for job in jobs])
        with trio.fail_after(BOUND):
            await bridge.flush()
        # Queued more than outbox_retention ago: gone, then their notifications.
        await until(db, "SELECT count(*) FROM outbox", 0)
        await until(db, "SELECT count(*) FROM notifications", 1)


async def test_history_older_than_its_ttl_is_deleted(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    async with running(db, history_ttl=3.0) as bridge:
        for i in range(10):
            bridge.log_notification(f"n{i}", "ev", "{}")
        with trio.fail_after(BOUND):
            await bridge.flush()
        assert count(db, "SELECT count(*) FROM notifications") == 10
        await until(db, "SELECT count(*) FROM notifications", 0)
