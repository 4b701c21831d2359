"""Storage through the real server: restarts, a killed writer, bad files."""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.helpers import LineClient, running_server, serve_command

WRITER_STARTED = r"storage writer started pid=(\d+)"


def register(client: LineClient, email: str) -> list[str]:
    client.send({"type": "register", "email": email})
    reply = client.recv_type("registered")
    assert reply["email"] == email
    events: list[str] = reply["events"]
    return events


def test_subscriptions_survive_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "subs.db")
    odd = "Zoë-עברית-😀@exämple.org"
    with running_server("--no-worker", db=db) as srv:
        with LineClient("127.0.0.1", srv.tcp_port) as c:
            c.recv_type("welcome")
            assert register(c, "a@b.c") == []
            c.send_line("subscribe furniture_created furniture_deleted")  # human command
            assert c.recv_type("subscribed")["events"] == [
                "furniture_created",
                "furniture_deleted",
            ]
            # Same connection, second address: it takes the connection's
            # subscriptions along (and stores them for itself).
            assert register(c, odd) == ["furniture_created", "furniture_deleted"]
            c.send({"type": "unsubscribe", "events": ["furniture_deleted"]})
            assert c.recv_type("unsubscribed")["events"] == ["furniture_created"]
        assert srv.stop() == 0
    with running_server("--no-worker", db=db) as srv:
        # Not the schema being created again: the same database.
        assert not any("schema created" in line for line in srv.lines)
        with LineClient("127.0.0.1", srv.tcp_port) as c:
            c.recv_type("welcome")
            assert register(c, "a@b.c") == ["furniture_created", "furniture_deleted"]
        with LineClient("127.0.0.1", srv.tcp_port) as c:
            c.recv_type("welcome")
            c.send_line(f"register {odd}")
            assert c.recv_type("registered") == {
                "type": "registered",
                "email": odd,
                "events": ["furniture_created"],
                "confirmed": True,
            }


def test_kill_9_writer_during_registration_burst(tmp_path: Path) -> None:
    db = tmp_path / "subs.db"
    clients, per_client = 20, 40
    events = ["furniture_created", "furniture_updated", "furniture_deleted"]
    with running_server("--no-worker", db=str(db)) as srv:
        first_pid = int(srv.wait_log(WRITER_STARTED).group(1))
        replies = 0
        lock = threading.Lock()
        halfway = threading.Event()

        def one_client(n: int) -> list[str]:
            """One connection per address: connect, register, subscribe, leave."""
            nonlocal replies
            problems: list[str] = []
            for i in range(per_client):
                email = f"c{n}-{i}@burst.test"
                with LineClient("127.0.0.1", srv.tcp_port, timeout=30) as c:
                    c.recv_type("welcome")
                    c.send({"type": "register", "email": email})
                    c.send({"type": "subscribe", "events": events[: 1 + (i % 3)]})
                    for kind in ("registered", "subscribed"):
                        reply = c.recv()
                        if reply["type"] != kind:
                            problems.append(f"{email}: {reply}")
                with lock:
                    replies += 1
                    if replies == clients * per_client // 3:
                        halfway.set()
            return problems

        with ThreadPoolExecutor(clients) as pool:
            futures = [pool.submit(one_client, n) for n in range(clients)]
            assert halfway.wait(60)
            os.kill(first_pid, signal.SIGKILL)
            problems = [p for f in futures for p in f.result(timeout=120)]
        assert problems == []
        srv.wait_log(rf"storage writer pid={first_pid} died \(killed by SIGKILL\)", 30)
        second = srv.wait_log(rf"storage writer started pid=(?!{first_pid}\b)(\d+)", 30)
        assert int(second.group(1)) != first_pid
        assert srv.stop() == 0
    conn = sqlite3.connect(db)
    try:
        stored: dict[str, set[str]] = {}
        for email, event in conn.execute("SELECT email, event FROM subscriptions"):
            stored.setdefault(email, set()).add(event)
        registered = {row[0] for row in conn.execute("SELECT email FROM subscribers")}
    finally:
        conn.close()
    expected = {
        f"c{n}-{i}@burst.test": set(events[: 1 + (i % 3)])
        for n in range(clients)
        for i in range(per_client)
    }
    assert stored == expected
    assert registered == set(expected)


def run_serve(tmp_path: Path, db: Path) -> subprocess.CompletedProcess[str]:
    argv = serve_command(
        "--host", "127.0.0.1", "--port", "0", "--ws-port", "0", "--no-worker",
        "--db", str(db), "--data-dir", str(tmp_path / "data"),
    )  # fmt: skip
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], expect: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    ours = [line for line in result.stderr.splitlines() if line.startswith("livenotify:")]
    assert len(ours) == 1, result.stderr
    assert re.search(expect, ours[0]), ours[0]


def test_bad_database_files_stop_the_server(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    garbage = random.Random(7).randbytes(32 * 1024)
    corrupt.write_bytes(garbage)
    assert_one_line_exit_2(run_serve(tmp_path, corrupt), r"corrupt\.db: the file is corrupt")
    assert corrupt.read_bytes() == garbage  # not replaced by an empty store

    not_a_dir = tmp_path / "plain-file"
    not_a_dir.write_text("x")
    assert_one_line_exit_2(
        run_serve(tmp_path, not_a_dir / "subs.db"), r"cannot write database .*not a directory"
    )

    db = tmp_path / "subs.db"
    with running_server("--no-worker", db=str(db)) as srv:
        assert_one_line_exit_2(
            run_serve(tmp_path, db),
            rf"in use by another livenotify server \(pid {srv.proc.pid},",
        )
