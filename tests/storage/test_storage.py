"""StorageBridge against a real writer process and a real database file."""

from __future__ import annotations

import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from livenotify.config import Config
from livenotify.storage import MailJob, StorageBridge, StorageBusy, StorageError
from storage_proc.schema import SCHEMA_VERSION

#: Bound for starting a writer: a cold interpreter on a busy 2-core machine.
START = 30.0
#: Bound for flushing a few thousand writes, restarts included.
FLUSH = 30.0

ODD_TEXT = [
    "plain@example.com",
    "ÜñÍçødé@exämple.org",
    "名前@例え.日本",
    "עברית@דוגמה.ישראל",  # right-to-left
    "e\u0301\u0301\u0301@combining.test",
    "😀👩‍👩‍👧‍👦@emoji.test",  # astral plane, zero-width joiners
    "lone\ud800surrogate@json.test",  # valid in JSON, not encodable as UTF-8
    "\udfff\ud83d@swapped.test",
    "quote'\"; DROP TABLE subscriptions;--@sql.test",
    "tab\tnl\ncr\r@ctl.test",
    "nul\x00inside@nul.test",
    "\u2028\u2029\ufeff\ufffe\uffff@unicode.test",
    "x" * 5000 + "@long.test",
]


def db_config(path: Path, **settings: Any) -> Config:
    return Config(db=str(path), **settings)


@asynccontextmanager
async def running(
    path: Path, settings: dict[str, Any] | None = None, **kwargs: Any
) -> AsyncIterator[StorageBridge]:
    """A started bridge; closed (flushed) on the way out."""
    bridge = StorageBridge(db_config(path, **(settings or {})), **kwargs)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(START):
            await nursery.start(bridge.run)
        try:
            yield bridge
        finally:
            with trio.fail_after(FLUSH):
                await bridge.aclose()


async def start_error(path: Path) -> str:
    """Start a bridge that must fail; its StorageError message."""
    bridge = StorageBridge(db_config(path))
    with trio.fail_after(START):
        async with trio.open_nursery() as nursery:
            with pytest.raises(StorageError) as info:
                await nursery.start(bridge.run)
    message = str(info.value)
    assert "\n" not in message
    return message


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# -- round trips ------------------------------------------------------------


async def test_odd_text_round_trips_byte_for_byte(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with running(db) as bridge:
        for text in ODD_TEXT:
            bridge.register(text)
            bridge.subscribe(text, [text, "*"])
        # Before the writer acknowledges: the bridge's own pending writes.
        for text in ODD_TEXT:
            assert await bridge.subscriptions_of(text) == sorted([text, "*"])
        with trio.fail_after(FLUSH):
            await bridge.flush()
        assert bridge.stats()["pending"] == 0
        # After: straight from the database.
        for text in ODD_TEXT:
            assert await bridge.subscriptions_of(text) == sorted([text, "*"])
        payload = '{"type":"x","message":"' + "".join(ODD_TEXT) + '"}'
        bridge.log_notification("n-" + ODD_TEXT[6], ODD_TEXT[1], payload)
        with trio.fail_after(FLUSH):
            await bridge.wait_outbox()
        jobs = await bridge.pending_mail(100)
    # Every address is subscribed to "*", so each gets exactly one job.
    assert sorted(job.email for job in jobs) == sorted(ODD_TEXT)
    assert {(j.notification_id, j.event, j.payload) for j in jobs} == {
        ("n-" + ODD_TEXT[6], ODD_TEXT[1], payload)
    }
    # Encodable text is stored as TEXT, byte for byte (the sqlite3 shell
    # shows what was sent); only lone surrogates need the BLOB form.
    stored = {r[0] for r in rows(db, "SELECT email FROM subscribers")}
    for text in ODD_TEXT:
        if "\ud800" in text or "\udfff" in text:
            assert text.encode("utf-8", "surrogatepass") in stored
        else:
            assert text in stored


async def test_restart_on_same_db_reads_back(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with running(db) as bridge:
        bridge.register("a@b.c")
        bridge.subscribe("a@b.c", ["furniture_created", "furniture_deleted", "gone"])
        bridge.unsubscribe("a@b.c", ["gone"])
        bridge.register("z@b.c")
    async with running(db) as bridge:
        assert await bridge.subscriptions_of("a@b.c") == ["furniture_created", "furniture_deleted"]
        assert await bridge.subscriptions_of("z@b.c") == []
        assert await bridge.subscriptions_of("nobody@b.c") == []
    assert rows(db, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def expected_burst(n: int, offset: int = 0) -> dict[str, set[str]]:
    return {
        f"user{i}@burst.test": {"a"} if i % 2 == 0 else {"a", "b"}
        for i in range(offset, offset + n)
    }


def write_burst(bridge: StorageBridge, n: int, offset: int = 0) -> None:
    """Per address: register, subscribe a+b, and for even ones unsubscribe b
    (so a replay in the wrong order would show)."""
    for i in range(offset, offset + n):
        email = f"user{i}@burst.test"
        bridge.register(email)
        bridge.subscribe(email, ["a", "b"])
        if i % 2 == 0:
            bridge.unsubscribe(email, ["b"])


def stored_burst(db: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for email, event in rows(db, "SELECT email, event FROM subscriptions"):
        found.setdefault(email, set()).add(event)
    return found


async def test_kill_9_mid_burst_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="livenotify.storage")
    db = tmp_path / "s.db"
    async with running(db) as bridge:
        first_pid = bridge.writer_pid
        assert first_pid is not None
        write_burst(bridge, 1500)
        with trio.fail_after(FLUSH):
            await bridge.flush()  # some committed ...
        write_burst(bridge, 1500, offset=1500)
        for _ in range(3):
            await trio.sleep(0)  # ... some on their way to the writer ...
        before = bridge.stats()
        assert before["pending"] > 0
        os.kill(first_pid, signal.SIGKILL)
        # ... and more accepted while it is dead and restarting.
        write_burst(bridge, 1500, offset=3000)
        with trio.fail_after(FLUSH):
            await bridge.flush()
        after = bridge.stats()
        assert after["restarts"] == 1
        assert after["pending"] == 0
        assert bridge.writer_pid not in (None, first_pid)
        for i in (0, 1, 2999, 4499):
            email = f"user{i}@burst.test"
            assert set(await bridge.subscriptions_of(email)) == expected_burst(1, i)[email]
    assert stored_burst(db) == expected_burst(4500)
    assert len(rows(db, "SELECT email FROM subscribers")) == 4500
    died = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert len(died) == 1 and "killed by SIGKILL" in died[0], died


async def test_aclose_right_after_burst_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with running(db) as bridge:
        write_burst(bridge, 5000)
        # aclose (on leaving the block) with every write still unacknowledged.
        assert bridge.stats()["pending"] == 12500
    assert stored_burst(db) == expected_burst(5000)
    with pytest.raises(StorageBusy):
        bridge.register("late@b.c")  # closed: refused, not silently dropped


async def test_upgrade_from_schema_v1(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="livenotify.storage")
    db = tmp_path / "old.db"
    # Version 1 as it shipped: subscribers and subscriptions only.
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (1);
        CREATE TABLE subscribers (email TEXT PRIMARY KEY, first_seen TEXT NOT NULL,
                                  last_seen TEXT NOT NULL);
        CREATE TABLE subscriptions (email TEXT NOT NULL, event TEXT NOT NULL,
                                    since TEXT NOT NULL, PRIMARY KEY (email, event))
                                    WITHOUT ROWID;
        INSERT INTO subscribers VALUES ('old@b.c', '2024-01-15T14:30:00.000Z',
                                        '2024-01-16T09:00:00.000Z');
        INSERT INTO subscriptions VALUES ('old@b.c', 'furniture_created',
                                          '2024-01-15T14:30:00.000Z');
        INSERT INTO subscriptions VALUES ('old@b.c', '*', '2024-01-15T14:30:00.000Z');
        """
    )
    conn.close()
    async with running(db) as bridge:
        assert await bridge.subscriptions_of("old@b.c") == ["*", "furniture_created"]
        bridge.log_notification("n1", "furniture_created", '{"type":"furniture_created"}')
        with trio.fail_after(FLUSH):
            await bridge.wait_outbox()
        jobs = await bridge.pending_mail(10)
        assert [(j.email, j.notification_id) for j in jobs] == [("old@b.c", "n1")]
    assert rows(db, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert rows(db, "SELECT first_seen FROM subscribers") == [("2024-01-15T14:30:00.000Z",)]
    assert any(
        f"schema upgraded from version 1 to {SCHEMA_VERSION}" in r.getMessage()
        for r in caplog.records
    )


# -- the outbox -------------------------------------------------------------


async def test_outbox_rows_for_registered_subscribers_of_event_or_all(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with running(db) as bridge:
        bridge.register("ev@b.c")
        bridge.subscribe("ev@b.c", ["furniture_created"])
        bridge.register("all@b.c")
        bridge.subscribe("all@b.c", ["*"])
        bridge.register("both@b.c")
        bridge.subscribe("both@b.c", ["*", "furniture_created"])
        bridge.register("other@b.c")
        bridge.subscribe("other@b.c", ["furniture_deleted"])
        bridge.subscribe("unregistered@b.c", ["furniture_created"])
        assert await bridge.pending_mail(10) == []
        bridge.log_notification("n1", "furniture_created", '{"n":1}')
        with trio.fail_after(FLUSH):
            await bridge.wait_outbox()
        jobs = await bridge.pending_mail(10)
        assert sorted(j.email for j in jobs) == ["all@b.c", "both@b.c", "ev@b.c"]
        assert all(isinstance(j, MailJob) and j.payload == '{"n":1}' for j in jobs)
        # A logged notification replayed (same id) adds nothing.
        bridge.log_notification("n1", "furniture_created", '{"n":1}')
        bridge.mark_mail_queued([jobs[0].outbox_id])
        # Gone from pending at once, before the writer acknowledges it.
        assert [j.outbox_id for j in await bridge.pending_mail(10)] == [
            j.outbox_id for j in jobs[1:]
        ]
        with trio.fail_after(FLUSH):
            await bridge.flush()
        assert [j.outbox_id for j in await bridge.pending_mail(1)] == [jobs[1].outbox_id]
    states = rows(db, "SELECT outbox_id, state, queued_at IS NOT NULL FROM outbox ORDER BY 1")
    assert states == [
        (jobs[0].outbox_id, "queued", 1),
        (jobs[1].outbox_id, "pending", 0),
        (jobs[2].outbox_id, "pending", 0),
    ]


async def test_wait_outbox_misses_no_commit(tmp_path: Path) -> None:
    async with running(tmp_path / "s.db") as bridge:
        bridge.register("a@b.c")
        bridge.subscribe("a@b.c", ["e"])
        assert await bridge.pending_mail(10) == []
        bridge.log_notification("n1", "e", "{}")
        with trio.fail_after(FLUSH):
            await bridge.flush()  # committed before anyone waits ...
            await bridge.wait_outbox()  # ... still wakes the next wait
        assert len(await bridge.pending_mail(10)) == 1
        with trio.move_on_after(0.3):
            await bridge.wait_outbox()
            pytest.fail("wait_outbox returned with nothing new")


# -- the full-backlog rule --------------------------------------------------


async def test_full_backlog_raises_storage_busy_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    settings = {"storage_timeout": 0.5}
    async with running(db, settings, backlog_limit=500, in_flight_limit=100) as bridge:
        pid = bridge.writer_pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # a writer that is alive but not keeping up
        try:
            for i in range(500):
                bridge.subscribe(f"u{i}@b.c", ["e"])
            await trio.testing.wait_all_tasks_blocked()
            stats = bridge.stats()
            # The queue toward the writer is bounded; the rest waits here.
            assert stats["in_flight"] == 100
            assert stats["pending"] == 500
            with pytest.raises(StorageBusy):
                bridge.subscribe("one-too-many@b.c", ["e"])
            with pytest.raises(StorageBusy):
                bridge.register("one-too-many@b.c")
            assert bridge.stats()["busy"] == 2
            # Reads go through the writer: a stuck one answers nothing, so
            # the read is refused within storage_timeout, not left hanging.
            with trio.fail_after(FLUSH), pytest.raises(StorageBusy):
                await bridge.subscriptions_of("u499@b.c")
            # Waiting for a commit is bounded the same way.
            with trio.fail_after(FLUSH), pytest.raises(StorageBusy):
                await bridge.committed(500)
        finally:
            os.kill(pid, signal.SIGCONT)
        with trio.fail_after(FLUSH):
            await bridge.flush()
            # Own not yet acknowledged writes are part of a read.
            bridge.unsubscribe("u499@b.c", ["e"])
            bridge.subscribe("u499@b.c", ["f"])
            assert await bridge.subscriptions_of("u499@b.c") == ["f"]
            bridge.unsubscribe("u499@b.c", ["f"])
            bridge.subscribe("u499@b.c", ["e"])
            await bridge.committed(bridge.subscribe("u499@b.c", ["e"]))
        bridge.subscribe("after@b.c", ["e"])  # room again
    emails = {r[0] for r in rows(db, "SELECT email FROM subscriptions")}
    assert emails == {f"u{i}@b.c" for i in range(500)} | {"after@b.c"}


# -- files that must stop start-up ------------------------------------------


async def test_corrupt_file_stops_startup_and_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    garbage = random.Random(4).randbytes(64 * 1024)
    db.write_bytes(garbage)
    message = await start_error(db)
    assert str(db) in message and "corrupt" in message
    assert db.read_bytes() == garbage


async def test_damaged_database_stops_startup(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with running(db) as bridge:
        write_burst(bridge, 2000)
    raw = bytearray(db.read_bytes())
    # Keep the header (page 1) valid, scribble over the pages after it.
    raw[4096:] = random.Random(5).randbytes(len(raw) - 4096)
    db.write_bytes(bytes(raw))
    message = await start_error(db)
    assert str(db) in message and "corrupt" in message


async def test_db_in_use_by_another_bridge(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    async with running(db) as bridge:
        bridge.subscribe("a@b.c", ["e"])
        message = await start_error(db)
        assert f"in use by another livenotify server (pid {os.getpid()}" in message
        assert bridge.writer_pid is not None  # the first one is unharmed
    async with running(db) as bridge:  # the lock went with the first server
        assert await bridge.subscriptions_of("a@b.c") == ["e"]


async def test_db_locked_by_another_program(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        message = await start_error(db)
    finally:
        holder.close()
    assert "locked by another program" in message


async def test_unwritable_paths_stop_startup(tmp_path: Path) -> None:
    # chmod does not stop root, which runs these tests; these fail for anyone.
    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("x")
    message = await start_error(not_a_dir / "s.db")
    assert "cannot write database" in message and "not a directory" in message
    a_dir = tmp_path / "dir.db"
    a_dir.mkdir()
    message = await start_error(a_dir)
    assert "cannot write database" in message and "is a directory" in message
    missing = tmp_path / "no" / "such" / "s.db"
    message = await start_error(missing)
    assert "cannot write database" in message
    assert not missing.parent.exists()


async def test_foreign_or_newer_database_stops_startup(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.commit()
    conn.close()
    assert "not a livenotify database" in await start_error(foreign)
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.executescript(
        "CREATE TABLE schema_version (version INTEGER); INSERT INTO schema_version VALUES (99);"
    )
    conn.close()
    assert "schema version 99 is newer" in await start_error(newer)


async def test_bad_arguments_fail_at_the_call_site(tmp_path: Path) -> None:
    bridge = StorageBridge(db_config(tmp_path / "s.db"))
    with pytest.raises(TypeError):
        bridge.subscribe("a@b.c", "furniture_created")  # a str is not a list of events
    with pytest.raises(TypeError):
        bridge.register(None)  # type: ignore[arg-type]
    assert bridge.stats()["pending"] == 0
    await bridge.aclose()  # never started: returns at once


async def test_pending_mail_pages_past_rows_marked_queued(tmp_path: Path) -> None:
    """Rows marked queued are skipped page by page (keyset), so a read never
    grows with how many are marked and not yet committed."""
    async with running(tmp_path / "s.db") as bridge:
        for n in range(25):
            bridge.register(f"u{n:02}@b.c")
            bridge.subscribe(f"u{n:02}@b.c", ["*"])
        bridge.log_notification("n1", "furniture_created", '{"n":1}')
        with trio.fail_after(FLUSH):
            await bridge.wait_outbox()
        jobs = await bridge.pending_mail(100)
        assert len(jobs) == 25
        bridge.mark_mail_queued([j.outbox_id for j in jobs[:20]])
        # Pages of 3 past 20 skipped rows: the 21st to 23rd, then the rest.
        assert await bridge.pending_mail(3) == jobs[20:23]
        assert await bridge.pending_mail(10) == jobs[20:]
        with trio.fail_after(FLUSH):
            await bridge.flush()
        assert await bridge.pending_mail(3) == jobs[20:23]


def test_writer_process_imports_no_trio() -> None:
    """The writer is ``python -m storage_proc``: stdlib and storage_proc only."""
    code = (
        "import sys, storage_proc.__main__;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " {'trio', 'livenotify', 'trio_websocket', 'celery'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


async def test_writer_is_a_fresh_interpreter(tmp_path: Path) -> None:
    async with running(tmp_path / "s.db") as bridge:
        pid = bridge.writer_pid
        assert pid is not None
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-m", b"storage_proc"]
