"""Redis outages under several processes: publishes are refused
(``backend_unavailable``, HTTP 503) while it is gone, ``/ready`` says so,
clients stay connected, and delivery resumes where it stopped; a Redis that
comes back empty is a new epoch."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import Any

import trio

from livenotify.backplane.redis import RedisBackplane
from livenotify.config import Config
from livenotify.history import Position, Since
from tests.backplane.services import (
    BOUND,
    cluster,
    notifications,
    own_redis,
    publish,
    subscriber,
)
from tests.helpers import LineClient, ServerProcess, running_server

CREATED = "furniture_created"


def request(server: ServerProcess, method: str, path: str, body: str = "") -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.ws_port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def wait_ready(server: ServerProcess, ok: bool) -> None:
    """Poll ``/ready`` until it says ``ok`` (bounded)."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        status, _ = request(server, "GET", "/ready")
        if (status == 200) == ok:
            return
        time.sleep(0.05)
    raise AssertionError(f"/ready never became {'200' if ok else '503'}\n{server.log_text()}")


def test_redis_stopped_and_restarted_mid_stream(tmp_path: Path) -> None:
    with own_redis(tmp_path, durable=True) as red, cluster(2, red.url, "t") as (a, b):
        subs = [subscriber(a), subscriber(b)]
        pub_a, pub_b = LineClient("127.0.0.1", a.tcp_port), LineClient("127.0.0.1", b.tcp_port)
        pub_a.recv(), pub_b.recv()
        before = [publish(pub_a, CREATED, {"n": n}) for n in range(5)]
        assert all(x["type"] == "published" for x in before)
        red.stop()
        for server in (a, b):
            wait_ready(server, ok=False)
        # Refused, never accepted and lost: over TCP and over HTTP.
        refused = publish(pub_b, CREATED, {"n": "lost"})
        assert refused["type"] == "error" and refused["code"] == "backend_unavailable"
        status, body = request(a, "POST", f"/publish/{CREATED}", json.dumps({"n": "http"}))
        assert status == 503 and body["code"] == "backend_unavailable"
        red.start()
        for server in (a, b):
            wait_ready(server, ok=True)
        after = [publish(pub_b, CREATED, {"n": n}) for n in range(5, 10)]
        assert all(x["type"] == "published" for x in after)
        # The same connections, nothing acknowledged missing, nothing refused
        # delivered, one epoch throughout.
        for sub in subs:
            seen = notifications(sub, 10)
            assert [n["data"]["n"] for n in seen] == list(range(10))
            assert [n["offset"] for n in seen] == list(range(1, 11))
            assert len({n["epoch"] for n in seen}) == 1
        a.wait_log(r"backend unreachable")
        b.wait_log(r"backend reachable again")


async def test_redis_back_empty_is_a_new_epoch(tmp_path: Path) -> None:
    with own_redis(tmp_path, durable=False) as red, cluster(2, red.url, "t") as (a, b):
        sub = subscriber(b)
        pub = LineClient("127.0.0.1", a.tcp_port)
        pub.recv()
        for n in range(3):
            assert publish(pub, CREATED, {"n": n})["type"] == "published"
        old = notifications(sub, 3)
        red.stop()
        red.wipe()
        red.start()
        for server in (a, b):
            wait_ready(server, ok=True)
        assert publish(pub, CREATED, {"n": "new"})["type"] == "published"
        new = notifications(sub, 1)[0]
        assert new["epoch"] != old[0]["epoch"] and new["offset"] == 1
        b.wait_log(r"backend epoch changed")
        # A client resuming the old epoch cannot recover exactly.
        plane = RedisBackplane(Config(backend=red.url, backend_prefix="t"))
        with trio.fail_after(BOUND):
            async with trio.open_nursery() as nursery:
                await nursery.start(plane.run, lambda entry, payload, exclude: 0)
                assert plane.position == Position(new["epoch"], 1)
                replay = await plane.history(Since(Position(old[0]["epoch"], 3)), ["*"])
                assert not replay.recovered and replay.entries == []
                nursery.cancel_scope.cancel()
        plane.close()
        with LineClient("127.0.0.1", a.tcp_port) as late:
            assert late.recv()["position"] == f"{new['epoch']}:1"


def test_ready_of_a_single_process() -> None:
    with running_server() as server:
        status, body = request(server, "GET", "/ready")
        assert status == 200 and body["status"] == "ok"
        assert body["backplane"]["kind"] == "local" and body["backplane"]["ok"] is True
