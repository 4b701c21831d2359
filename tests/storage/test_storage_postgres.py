"""The storage writer on PostgreSQL (``--db postgresql://...``): the same
writes, reads, acks, replay and history as on SQLite. Each test gets its own
database (livenotify_test_<hex>), dropped after."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from livenotify.config import Config
from livenotify.history import EmbeddedLog, Position, Since
from livenotify.storage import StorageBridge
from storage_proc.schema import SCHEMA_VERSION
from tests.helpers import LineClient, running_server, serve_command
from tests.pg import fresh_database, rows
from tests.storage.test_storage import ODD_TEXT

psycopg = pytest.importorskip("psycopg")

BOUND = 30.0
#: Neither NUL nor a lone surrogate fits PostgreSQL TEXT as such.
SURROGATE = "lone\ud800surrogate@json.test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


async def test_round_trip_acks_and_writer_kill(pg_url: str) -> None:
    bridge = StorageBridge(Config(db=pg_url))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(BOUND):
            await nursery.start(bridge.run)
            for text in ODD_TEXT:
                await bridge.committed(bridge.subscribe(text, [text, "e"]))
            for text in ODD_TEXT:
                assert await bridge.subscriptions_of(text) == sorted({text, "e"})
            pid = bridge.writer_pid
            assert pid is not None
            for i in range(300):
                bridge.register(f"u{i}@pg.test")
            os.kill(pid, signal.SIGKILL)  # the backlog is replayed to the next one
            await bridge.committed(bridge.register("last@pg.test"))
            # Registered and subscribed to "e": gets the mail job.
            await bridge.committed(bridge.register(SURROGATE))
            bridge.log_notification("n1", "e", '{"type":"e"}')
            await bridge.flush()
            jobs = await bridge.pending_mail(10)
            await bridge.aclose()
    assert [job.email for job in jobs] == [SURROGATE]
    emails = {r[0] for r in rows(pg_url, "SELECT email FROM subscribers")}
    assert {f"u{i}@pg.test" for i in range(300)} | {"last@pg.test"} <= emails
    assert rows(pg_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_history_epoch_survives_a_clean_restart(pg_url: str) -> None:
    epoch = ""
    for run in range(2):
        bridge = StorageBridge(Config(db=pg_url))
        async with trio.open_nursery() as nursery:
            with trio.fail_after(BOUND):
                await nursery.start(bridge.run)
                log = EmbeddedLog(bridge.config, bridge)
                if run == 0:
                    epoch = log.epoch
                    for i in range(5):
                        log.append(f"n{i}", "a", lambda p, i=i: f'{{"i":{i},"at":"{p}"}}')
                else:
                    assert log.kept and log.epoch == epoch and log.head == 5
                    replay = await log.since(Since(position=Position(epoch, 2)), ["*"])
                    assert replay.recovered and [e.offset for e in replay.entries] == [3, 4, 5]
                await bridge.aclose()


def test_server_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    with running_server(db=pg_url) as srv:
        with LineClient("127.0.0.1", srv.tcp_port) as c:
            c.recv_type("welcome")
            c.send({"type": "register", "email": "pg@x.test"})
            c.recv_type("registered")
            c.send({"type": "subscribe", "events": ["furniture_created"]})
            c.recv_type("subscribed")
        assert srv.stop() == 0
    with running_server(db=pg_url) as srv, LineClient("127.0.0.1", srv.tcp_port) as c:
        c.recv_type("welcome")
        c.send({"type": "register", "email": "pg@x.test"})
        assert c.recv_type("registered")["events"] == ["furniture_created"]


def test_unreachable_postgresql_is_one_line_without_the_password(tmp_path: Path) -> None:
    argv = serve_command(
        "--host", "127.0.0.1", "--port", "0", "--ws-port", "0", "--no-worker",
        "--db", "postgresql://livenotify:s3cret@127.0.0.1:1/none",
        "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 2, result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("livenotify:")]
    assert len(ours) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot open database postgresql://livenotify:***@127.0.0.1:1/none" in ours[0]
    assert "s3cret" not in result.stderr


async def test_retention_on_postgresql(pg_url: str) -> None:
    bridge = StorageBridge(Config(db=pg_url, history_size=10))
    async with trio.open_nursery() as nursery:
        with trio.fail_after(BOUND):
            await nursery.start(bridge.run)
            for i in range(50):
                bridge.log_notification(f"n{i}", "ev", "{}")
            await bridge.flush()
            while rows(pg_url, "SELECT count(*) FROM notifications") != [(10,)]:
                await trio.sleep(0.1)  # the writer trims about once a second
            assert bridge.stats()["restarts"] == 0  # retention did not fail
            await bridge.aclose()
