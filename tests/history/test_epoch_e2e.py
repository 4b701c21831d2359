"""Epochs through the real server: a clean restart keeps the epoch and its
offsets go on; ``kill -9`` of the server starts a new one, and no offset is
ever stored twice."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.helpers import LineClient, running_server

EPOCH = r"history epoch (\w+) head=(\d+): (.*)"


def publish(port: int, n: int) -> None:
    with LineClient("127.0.0.1", port, timeout=30) as c:
        c.recv_type("welcome")
        for i in range(n):
            c.send({"type": "publish", "event": "furniture_created", "data": {"i": i}})
            c.recv_type("published")


def test_epoch_kept_on_clean_restart_and_renewed_after_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with running_server(db=str(db)) as srv:
        first = srv.wait_log(EPOCH)
        assert first.group(2) == "0" and first.group(3) == "new database"
        publish(srv.tcp_port, 10)
        assert srv.stop() == 0
    with running_server(db=str(db)) as srv:
        kept = srv.wait_log(EPOCH)
        assert (kept.group(1), kept.group(2)) == (first.group(1), "10")
        assert kept.group(3).startswith("kept")
        publish(srv.tcp_port, 5)
        srv.proc.kill()
        srv.proc.wait(10)
    with running_server(db=str(db)) as srv:
        renewed = srv.wait_log(EPOCH)
        assert renewed.group(1) != first.group(1)
        assert renewed.group(3) == "new: the last stop was not clean"
        publish(srv.tcp_port, 3)
        assert srv.stop() == 0
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute('SELECT "offset", epoch FROM notifications ORDER BY "offset"')
        stored = list(rows)
    finally:
        conn.close()
    offsets = [o for o, _ in stored]
    assert offsets == sorted(set(offsets))  # never one offset twice
    assert offsets[:10] == list(range(1, 11))  # a clean stop saved every one
    # (Publishes are acknowledged before their commit: kill -9 may lose a tail.)
    assert [o for o, e in stored if e == renewed.group(1)] == list(
        range(int(renewed.group(2)) + 1, int(renewed.group(2)) + 4)
    )
