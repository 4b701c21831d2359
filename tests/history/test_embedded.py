"""``EmbeddedLog`` against a real storage writer process: offsets, replay
from memory and from disk, epochs across clean and unclean stops, a killed
writer, trimming, and a full backlog."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from livenotify.config import Config
from livenotify.history import ALL, EmbeddedLog, HistoryBusy, Position, Since
from livenotify.storage import StorageBridge

BOUND = 30.0
EVENTS = ("a", "b")


@asynccontextmanager
async def opened(
    db: Path, *, clean: bool = True, settings: dict[str, Any] | None = None, **kw: Any
) -> AsyncIterator[tuple[StorageBridge, EmbeddedLog]]:
    """A running bridge and its log; closed cleanly, or cut off (``clean=False``:
    the bridge is cancelled, as when the server dies, and flushes nothing)."""
    bridge = StorageBridge(Config(db=str(db), **(settings or {})), **kw)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(BOUND):
            await nursery.start(bridge.run)
        try:
            yield bridge, EmbeddedLog(bridge.config, bridge)
        finally:
            if clean:
                with trio.fail_after(BOUND):
                    await bridge.aclose()
            nursery.cancel_scope.cancel()


def publish(log: EmbeddedLog, n: int, start: int = 0) -> list[int]:
    """Append ``n`` notifications alternating events a/b; their offsets."""
    offsets = []
    for i in range(start, start + n):
        event = EVENTS[i % 2]
        entry = log.append(
            f"id{i}", event, lambda p, i=i, e=event: json.dumps({"type": e, "i": i, "at": str(p)})
        )
        offsets.append(entry.offset)
    return offsets


def numbers(entries: list[Any]) -> list[int]:
    return [json.loads(e.text)["i"] for e in entries]


async def test_offsets_are_gap_free_and_replay_is_exact_from_memory(tmp_path: Path) -> None:
    async with opened(tmp_path / "h.db") as (_bridge, log):
        assert log.head == 0
        assert publish(log, 10) == list(range(1, 11))
        assert log.position == Position(log.epoch, 10)
        replay = await log.since(Since(position=Position(log.epoch, 4)), ["a"])
        assert replay.recovered
        assert [e.offset for e in replay.entries] == [5, 7, 9]  # a only, in order
        assert json.loads(replay.entries[0].text)["at"] == f"{log.epoch}:5"
        assert await log.since(Since(position=Position(log.epoch, 10)), ["*"]) == (True, [])
        # Unknown epoch, or an offset never given out: nothing, not recovered.
        assert await log.since(Since(position=Position("other", 3)), ["*"]) == (False, [])
        assert await log.since(Since(position=Position(log.epoch, 11)), ["*"]) == (False, [])
        everything = await log.since(ALL, ["*"])
        assert everything.recovered and numbers(everything.entries) == list(range(10))


async def test_clean_restart_keeps_epoch_and_history(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    async with opened(db) as (_bridge, log):
        publish(log, 20)
        epoch = log.epoch
    async with opened(db) as (_bridge, log):
        assert log.kept and log.epoch == epoch and log.head == 20
        # Memory is empty after a restart: this replay reads the disk.
        replay = await log.since(Since(position=Position(epoch, 5)), ["*"])
        assert replay.recovered and numbers(replay.entries) == list(range(5, 20))
        publish(log, 3, start=20)
        replay = await log.since(Since(position=Position(epoch, 18)), ["b"])
        assert replay.recovered and [e.offset for e in replay.entries] == [18 + 2, 22]
        since_time = await log.since(Since(time=0.0), ["*"])
        assert since_time.recovered and len(since_time.entries) == 23


async def test_unclean_stop_starts_a_new_epoch_and_never_reuses_an_offset(
    tmp_path: Path,
) -> None:
    db = tmp_path / "h.db"
    async with opened(db, clean=False) as (bridge, log):
        publish(log, 5)
        with trio.fail_after(BOUND):
            await bridge.flush()
        old = log.epoch
    async with opened(db) as (_bridge, log):
        assert not log.kept and log.epoch != old
        assert log.head == 5  # offsets go on: the column stays unique
        assert await log.since(Since(position=Position(old, 2)), ["*"]) == (False, [])
        assert publish(log, 2, start=5) == [6, 7]
        replay = await log.since(Since(position=Position(log.epoch, 0)), ["*"])
        assert replay.recovered and numbers(replay.entries) == [5, 6]
    conn = sqlite3.connect(db)
    try:
        stored = conn.execute('SELECT "offset", epoch FROM notifications ORDER BY "offset"')
        offsets = [row for row in stored]
    finally:
        conn.close()
    assert [o for o, _ in offsets] == list(range(1, 8))
    assert {e for _, e in offsets[:5]} == {old}


async def test_kill_9_of_the_writer_loses_no_history(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    async with opened(db, settings={"history_size": 50}) as (bridge, log):
        publish(log, 30)
        pid = bridge.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        publish(log, 70, start=30)  # some of these go out of memory (50)
        with trio.fail_after(BOUND):
            replay = await log.since(Since(position=Position(log.epoch, 40)), ["*"])
        assert replay.recovered and numbers(replay.entries) == list(range(40, 100))
        epoch = log.epoch
    async with opened(db, settings={"history_size": 50}) as (_bridge, log):
        assert log.epoch == epoch and log.head == 100
        with trio.fail_after(BOUND):
            replay = await log.since(Since(position=Position(epoch, 60)), ["*"])
        assert replay.recovered and numbers(replay.entries) == list(range(60, 100))


async def test_trimmed_history_is_not_recovered(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    async with opened(db, settings={"history_size": 10}) as (bridge, log):
        publish(log, 40)
        await bridge.flush()
        epoch = log.epoch
        # The writer trims about once a second.
        with trio.fail_after(BOUND):
            while True:
                replay = await log.since(Since(position=Position(epoch, 5)), ["*"])
                if not replay.recovered:
                    break
                await trio.sleep(0.2)
        assert replay.entries == []
        # Memory holds the last 10 exactly.
        replay = await log.since(Since(position=Position(epoch, 30)), ["*"])
        assert replay.recovered and numbers(replay.entries) == list(range(30, 40))
        assert not (await log.since(ALL, ["*"])).recovered


async def test_full_backlog_refuses_append_without_taking_an_offset(tmp_path: Path) -> None:
    async with opened(tmp_path / "h.db", backlog_limit=20) as (bridge, log):
        pid = bridge.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            publish(log, 20)
            encoded: list[Position] = []
            with pytest.raises(HistoryBusy):
                log.append("x", "a", lambda p: encoded.append(p) or "{}")  # type: ignore[func-returns-value]
            assert encoded == [] and log.head == 20
        finally:
            os.kill(pid, signal.SIGCONT)
        with trio.fail_after(BOUND):
            await bridge.flush()
        assert publish(log, 1, start=20) == [21]


async def test_memory_is_bounded_in_bytes_and_older_entries_come_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from livenotify.history import embedded

    monkeypatch.setattr(embedded, "MEMORY_BYTES", 2000)
    async with opened(tmp_path / "h.db") as (_bridge, log):
        for i in range(20):
            log.append(f"id{i}", "a", lambda p, i=i: json.dumps({"i": i, "pad": "x" * 180}))
        held = await log.since(Since(position=Position(log.epoch, 15)), ["*"])
        assert held.recovered and numbers(held.entries) == list(range(15, 20))
        with trio.fail_after(BOUND):
            replay = await log.since(Since(position=Position(log.epoch, 2)), ["*"])
        assert replay.recovered and numbers(replay.entries) == list(range(2, 20))
