"""Storage faults against a real server (issue 13.6 and 13.7): a reply that
claims a stored write is never sent before the commit, a stop that could not
save accepted writes exits non-zero, and a broken database file costs
registrations, never live delivery or the server."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LineClient, running_server

WRITER_STARTED = r"storage writer started pid=(\d+)"
EVENT = "furniture_created"


def register(client: LineClient, email: str) -> dict[str, object]:
    """Send a register; the first reply that is not a notification."""
    client.send({"type": "register", "email": email})
    while True:
        reply = client.recv()
        if reply["type"] in ("registered", "error"):
            return reply


def stored_emails(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {str(row[0]) for row in conn.execute("SELECT email FROM subscribers")}
    finally:
        conn.close()


@contextlib.contextmanager
def continued(pid: int) -> Iterator[None]:
    """SIGSTOP ``pid`` for the block; SIGCONT after, whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_stopped_writer_gives_storage_busy_and_a_non_zero_exit(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with running_server("--grace-period", "1", db=str(db)) as srv:
        pid = int(srv.wait_log(WRITER_STARTED).group(1))
        with LineClient("127.0.0.1", srv.tcp_port, timeout=30) as c:
            c.recv_type("welcome")
            assert register(c, "before@x.test")["type"] == "registered"
            with continued(pid):
                reply = register(c, "lost@x.test")
                # Not a false "registered": the write is not on disk.
                assert reply["type"] == "error" and reply["code"] == "storage_busy", reply
                # A publish is acknowledged before its log write commits; the
                # stop cannot save it, and must say so.
                c.send({"type": "publish", "event": EVENT, "data": {}})
                c.recv_type("published")
                start = srv.mark()
                srv.console("exit")
                status = srv.proc.wait(30)
        assert status == 1
        srv.wait_log(r"stopped: \d+ acknowledged writes were not saved", start=start)
    assert "before@x.test" in stored_emails(db)


def test_kill_9_of_the_server_keeps_every_acknowledged_registration(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    emails = [f"u{i}@kill.test" for i in range(60)]
    with running_server(db=str(db)) as srv:
        with LineClient("127.0.0.1", srv.tcp_port, timeout=30) as c:
            c.recv_type("welcome")
            for email in emails:
                assert register(c, email)["type"] == "registered"
        srv.proc.kill()
        srv.proc.wait(10)
    # The orphaned writer commits what it holds and exits; a new server
    # (which takes the lock) then finds every acknowledged address.
    with running_server(db=str(db)) as srv:
        with LineClient("127.0.0.1", srv.tcp_port, timeout=30) as c:
            c.recv_type("welcome")
            assert register(c, "after@kill.test")["type"] == "registered"
        assert srv.stop() == 0
    assert set(emails) <= stored_emails(db)


def _immutable(paths: list[Path], on: bool) -> None:
    flag = "+i" if on else "-i"
    for path in paths:
        if path.exists():
            subprocess.run(["chattr", flag, str(path)], check=True, capture_output=True)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("chattr") is None,
    reason="needs root and chattr (root ignores chmod)",
)
@pytest.mark.parametrize("fault", ["immutable", "garbage"])
def test_broken_database_costs_registrations_not_delivery(tmp_path: Path, fault: str) -> None:
    db = tmp_path / "s.db"
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    with running_server(db=str(db)) as srv:
        pid = int(srv.wait_log(WRITER_STARTED).group(1))
        with (
            LineClient("127.0.0.1", srv.tcp_port, timeout=30) as sub,
            LineClient("127.0.0.1", srv.tcp_port, timeout=30) as pub,
        ):
            sub.recv_type("welcome")
            pub.recv_type("welcome")
            assert register(sub, "ok@x.test")["type"] == "registered"
            sub.send({"type": "subscribe", "events": [EVENT]})
            sub.recv_type("subscribed")
            try:
                if fault == "immutable":
                    _immutable(files, True)
                else:
                    for path in files:
                        if path.exists():
                            path.write_bytes(b"\xde\xad" * 8192)
                # A writer restarted now meets the broken file.
                os.kill(pid, signal.SIGKILL)
                srv.wait_log(rf"storage writer pid={pid} died", 30)
                for i in range(2):
                    reply = register(pub, f"new{i}@x.test")
                    assert reply["type"] == "error" and reply["code"] == "storage_busy", reply
                    pub.send({"type": "publish", "event": EVENT, "data": {"n": i}})
                    assert pub.recv_type("published")["event"] == EVENT
                    assert sub.recv_type(EVENT)["data"] == {"n": i}
                assert srv.proc.poll() is None
            finally:
                if fault == "immutable":
                    _immutable(files, False)
            assert srv.log.count(r"storage writer (pid=\d+ died|failed to start)") >= 2
            if fault == "immutable":
                # Repaired: the next writer takes the backlog and registers work.
                for _ in range(10):
                    if register(pub, "back@x.test")["type"] == "registered":
                        break
                else:
                    raise AssertionError(srv.log_text())
