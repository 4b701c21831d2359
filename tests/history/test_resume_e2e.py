"""Resuming through a real ``livenotify serve``: publishes racing a resume,
clean restarts, ``kill -9`` of the server and of its storage writer, history
trimmed by size, bad ``since``, the WebSocket URL, the TCP human form and
``register ... resume``."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from tests.helpers import LineClient, ServerProcess, running_server

EVENT = "furniture_created"
OTHER = "furniture_deleted"
FAST = {"LIVENOTIFY_RATE_LIMIT": "0"}


def client(srv: ServerProcess) -> tuple[LineClient, str]:
    """A TCP client and the welcome's position."""
    c = LineClient("127.0.0.1", srv.tcp_port, timeout=30)
    welcome = c.recv()
    assert welcome["type"] == "welcome"
    return c, str(welcome["position"])


def publish(srv: ServerProcess, n: int, event: str = EVENT) -> list[int]:
    """Publish ``n`` notifications, one at a time; their offsets."""
    c, _ = client(srv)
    with c:
        offsets = []
        for i in range(n):
            c.send({"type": "publish", "event": event, "data": {"i": i}})
            offsets.append(int(c.recv_type("published")["offset"]))
        return offsets


def notifications(c: LineClient, n: int) -> list[dict[str, Any]]:
    got = []
    while len(got) < n:
        obj = c.recv()
        if obj["type"] in (EVENT, OTHER):
            got.append(obj)
    return got


def subscribe_since(c: LineClient, since: str, *events: str) -> dict[str, Any]:
    c.send({"type": "subscribe", "events": list(events or [EVENT]), "since": since})
    reply = c.recv()
    assert reply["type"] == "subscribed", reply
    return reply


def test_resume_while_2000_publishes_race_it() -> None:
    with running_server("--queue-size", "20000", env=FAST) as srv:
        first, position = client(srv)
        epoch = position.split(":")[0]
        first.send_line(f"subscribe {EVENT}")
        first.recv_type("subscribed")
        pub, _ = client(srv)
        total = 2000
        acks: list[int] = []

        held, resuming = threading.Event(), threading.Event()

        def publisher() -> None:
            # 300 before the first subscriber leaves; the other 1,700 only
            # once the resume is under way, so that they race it.
            for chunk in range(20):
                if chunk == 3:
                    held.set()
                    assert resuming.wait(30)
                lines = "".join(
                    json.dumps({"type": "publish", "event": EVENT, "data": {"i": chunk * 100 + i}})
                    + "\n"
                    for i in range(100)
                )
                pub.sock.sendall(lines.encode())
                acks.extend(int(pub.recv_type("published")["offset"]) for _ in range(100))

        thread = threading.Thread(target=publisher, daemon=True)
        thread.start()
        seen = notifications(first, 300)
        last = int(seen[-1]["offset"])
        assert [int(n["offset"]) for n in seen] == list(range(1, 301))
        first.close()  # gone while the publishes go on
        second, _ = client(srv)
        assert held.wait(30) and len(acks) == 300  # the rest waits for the resume
        resuming.set()
        reply = subscribe_since(second, f"{epoch}:{last}")
        assert reply["recovered"] is True
        rest = notifications(second, total - last)
        thread.join(60)
        assert not thread.is_alive() and len(acks) == total
        assert [int(n["offset"]) for n in rest] == list(range(last + 1, total + 1))
        assert [n["data"]["i"] for n in rest] == list(range(last, total))
        second.send({"type": "ping"})
        assert second.recv()["type"] == "pong"  # nothing more: no duplicate
        second.close()
        pub.close()


def test_clean_restart_keeps_the_epoch_and_replays_everything(tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    with running_server(db=db) as srv:
        _, start = client(srv)
        offsets = publish(srv, 30)
        assert offsets == list(range(int(start.split(":")[1]) + 1, 31))
        assert srv.stop() == 0
    with running_server(db=db) as srv:
        c, position = client(srv)
        epoch = start.split(":")[0]
        assert position == f"{epoch}:30"
        reply = subscribe_since(c, start)  # read from disk: memory is empty after a restart
        assert (reply["recovered"], reply["replayed"], reply["position"]) == (True, 30, position)
        got = notifications(c, 30)
        assert [n["offset"] for n in got] == list(range(1, 31))
        assert [n["data"]["i"] for n in got] == list(range(30))
        c.close()


def test_kill_9_of_the_server_is_a_new_epoch(tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    with running_server(db=db) as srv:
        _, start = client(srv)
        publish(srv, 20)
        srv.proc.kill()
        srv.proc.wait(10)
    old_epoch = start.split(":")[0]
    with running_server(db=db) as srv:
        c, position = client(srv)
        epoch, head = position.split(":")
        assert epoch != old_epoch
        # The old epoch cannot be proven continuous: nothing is replayed.
        reply = subscribe_since(c, f"{old_epoch}:10", OTHER)
        assert (reply["recovered"], reply["replayed"]) == (False, 0)
        new = publish(srv, 5)
        assert new == list(range(int(head) + 1, int(head) + 6))
        c.close()
        c, _ = client(srv)
        reply = subscribe_since(c, position, EVENT)
        assert (reply["recovered"], reply["replayed"]) == (True, 5)
        assert [n["offset"] for n in notifications(c, 5)] == new
        c.close()
        assert srv.stop() == 0
    conn = sqlite3.connect(db)
    try:
        rows = list(conn.execute('SELECT "offset", epoch, id FROM notifications'))
    finally:
        conn.close()
    # An offset is never given to two notifications.
    assert len({o for o, _, _ in rows}) == len(rows)


def test_kill_9_of_the_writer_loses_no_history(tmp_path: Path) -> None:
    db = str(tmp_path / "h.db")
    with running_server(db=db) as srv:
        pid = int(srv.wait_log(r"storage writer started pid=(\d+)").group(1))
        _, start = client(srv)
        publish(srv, 50)
        os.kill(pid, signal.SIGKILL)
        srv.wait_log(rf"storage writer pid={pid} died", 30)
        publish(srv, 50)
        assert srv.stop() == 0
    with running_server(db=db) as srv:
        c, position = client(srv)
        assert position == f"{start.split(':')[0]}:100"
        reply = subscribe_since(c, start)
        assert (reply["recovered"], reply["replayed"]) == (True, 100)
        assert [n["offset"] for n in notifications(c, 100)] == list(range(1, 101))
        c.close()


def test_history_trimmed_by_size_is_not_recovered() -> None:
    with running_server("--history-size", "10") as srv:
        c, start = client(srv)
        epoch = start.split(":")[0]
        publish(srv, 30)
        # The writer trims about once a second; until then history reaches
        # further back than promised (and a replay from there is exact).
        deadline = time.monotonic() + 30
        while True:
            reply = subscribe_since(c, f"{epoch}:5", OTHER)
            if not reply["recovered"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (reply["recovered"], reply["replayed"]) == (False, 0)
        reply = subscribe_since(c, f"{epoch}:25")
        assert (reply["recovered"], reply["replayed"]) == (True, 5)
        assert [n["offset"] for n in notifications(c, 5)] == [26, 27, 28, 29, 30]
        c.close()


def test_bad_since_and_human_form_over_tcp() -> None:
    with running_server() as srv:
        c, start = client(srv)
        for line in (f"subscribe {EVENT} since nonsense", f"subscribe {EVENT} since 5x"):
            c.send_line(line)
            err = c.recv()
            assert (err["type"], err["code"]) == ("error", "invalid_position")
        publish(srv, 3)
        c.send_line(f"subscribe {EVENT} since {start}")
        reply = c.recv()
        assert (reply["type"], reply["recovered"], reply["replayed"]) == ("subscribed", True, 3)
        assert [n["offset"] for n in notifications(c, 3)] == [1, 2, 3]
        c.close()


def test_websocket_url_since() -> None:
    with running_server() as srv:
        _, start = client(srv)
        publish(srv, 4)
        publish(srv, 2, OTHER)
        url = f"ws://127.0.0.1:{srv.ws_port}/?events={EVENT}&since={start}"
        with connect(url, open_timeout=10) as ws:
            got = [json.loads(ws.recv(timeout=10)) for _ in range(6)]
        assert got[0]["type"] == "welcome" and got[0]["position"].endswith(":6")
        assert got[1] == {
            "type": "subscribed", "events": [EVENT], "recovered": True, "replayed": 4,
            "position": got[0]["position"],
        }  # fmt: skip
        assert [n["offset"] for n in got[2:]] == [1, 2, 3, 4]
        with connect(
            f"ws://127.0.0.1:{srv.ws_port}/?events={EVENT}&since=bad", open_timeout=10
        ) as ws:
            assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
            assert json.loads(ws.recv(timeout=10))["code"] == "invalid_position"
            ws.send('{"type":"subscriptions"}')
            # All or nothing, as a subscribe message with a bad since.
            assert json.loads(ws.recv(timeout=10))["events"] == []


def test_register_resume_replays_what_the_email_missed() -> None:
    with running_server() as srv:
        c, _ = client(srv)
        c.send_line("register ana@example.com")
        c.recv_type("registered")
        c.send_line(f"subscribe {EVENT}")
        c.recv_type("subscribed")
        publish(srv, 3)
        assert [n["offset"] for n in notifications(c, 3)] == [1, 2, 3]
        mark = srv.mark()
        c.send_line("exit")
        c.recv_type("goodbye")
        c.close()
        srv.wait_log(r"disconnect tcp .* reason=exit", start=mark)
        publish(srv, 2, OTHER)  # not its event
        publish(srv, 4)  # offsets 6..9
        c, _ = client(srv)
        c.send_line("register ana@example.com resume")
        reply = c.recv()
        assert reply["type"] == "registered" and reply["events"] == [EVENT]
        assert (reply["recovered"], reply["replayed"]) == (True, 4)
        assert [n["offset"] for n in notifications(c, 4)] == [6, 7, 8, 9]
        publish(srv, 1)
        assert notifications(c, 1)[0]["offset"] == 10  # then live
        mark = srv.mark()
        c.close()
        # Nothing missed since: a resume replays nothing, exactly.
        srv.wait_log(r"disconnect tcp .* reason=eof", start=mark)
        c, _ = client(srv)
        c.send({"type": "register", "email": "ana@example.com", "resume": True})
        reply = c.recv()
        assert (reply["recovered"], reply["replayed"]) == (True, 0)
        c.close()
