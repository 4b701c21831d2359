"""``/ready``, ``/metrics`` and ``Publisher("http://...")`` against a real
``livenotify serve``."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from livenotify import Publisher
from livenotify.publisher import PublishError
from tests.helpers import ServerProcess, running_server

TOKEN = "s3cret"
WRITER_STARTED = r"storage writer started pid=(\d+)"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server("--publish-token", TOKEN, "--rate-limit", "0") as srv:
        yield srv


def get(port: int, path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type") or "", resp.read()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, keyed by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_ready_is_200_with_every_part(server: ServerProcess) -> None:
    status, ctype, body = get(server.ws_port, "/ready")
    obj = json.loads(body)
    assert (status, ctype, obj["status"]) == (200, "application/json", "ok"), obj
    assert set(obj) == {"status", "storage", "mail", "backplane", "canary"}
    assert obj["storage"]["ok"] and obj["storage"]["alive"] and obj["storage"]["backlog"] == 0
    backplane = obj["backplane"]
    assert (backplane["ok"], backplane["kind"]) == (True, "local"), backplane
    assert re.fullmatch(r"[0-9a-f]+:\d+", backplane["position"]), backplane
    assert obj["canary"]["ok"] and obj["canary"]["seconds"] < 2


def test_ready_canary_reaches_no_client(server: ServerProcess) -> None:
    with connect(f"ws://127.0.0.1:{server.ws_port}/") as ws:  # subscribed to "*"
        json.loads(ws.recv(timeout=5))  # welcome
        assert get(server.ws_port, "/ready")[0] == 200
        with Publisher(f"http://127.0.0.1:{server.ws_port}", token=TOKEN) as pub:
            ack = pub.publish("furniture_deleted", furniture_id="after")
        # The first thing the client sees after the probe is the publish.
        got = json.loads(ws.recv(timeout=5))
        assert got["type"] == "furniture_deleted" and got["id"] == ack.id


def test_ready_is_503_while_the_writer_is_stopped() -> None:
    with running_server("--storage-timeout", "1") as srv:
        pid = int(srv.wait_log(WRITER_STARTED).group(1))
        os.kill(pid, signal.SIGSTOP)
        try:
            status, _, body = get(srv.ws_port, "/ready")
        finally:
            os.kill(pid, signal.SIGCONT)
        obj = json.loads(body)
        assert status == 503 and obj["status"] == "unavailable", obj
        assert obj["storage"]["ok"] is False and obj["storage"]["error"]
        assert obj["canary"]["ok"] is True  # live delivery goes on
        deadline = time.monotonic() + 10
        while get(srv.ws_port, "/ready")[0] != 200:
            assert time.monotonic() < deadline, "not ready again after SIGCONT"


def test_metrics_parse_and_count(server: ServerProcess) -> None:
    before = samples(get(server.ws_port, "/metrics")[2].decode())
    with connect(f"ws://127.0.0.1:{server.ws_port}/?events=furniture_created") as ws:
        json.loads(ws.recv(timeout=5))
        with Publisher(f"http://127.0.0.1:{server.ws_port}", token=TOKEN) as pub:
            for i in range(20):
                pub.publish("furniture_created", n=i)
        for _ in range(20):
            ws.recv(timeout=5)
        status, ctype, body = get(server.ws_port, "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        now = samples(body.decode())
        assert now[("livenotify_connections", (("transport", "ws"),))] >= 1
    key = ("livenotify_published_total", ())
    assert now[key] - before.get(key, 0) >= 20
    out = ("livenotify_messages_out_total", ())
    assert now[out] - before.get(out, 0) >= 20
    for name in (
        "livenotify_dropped_total", "livenotify_refused_total", "livenotify_throttled_total",
        "livenotify_storage_backlog", "livenotify_mail_queued_total",
        "livenotify_backplane_lag_seconds", "livenotify_subscriptions",
    ):  # fmt: skip
        assert (name, ()) in now, name
    assert ("livenotify_connections", (("transport", "sse"),)) in now
    # 20 publishes: at least one was timed (1 in 16) once storage committed it.
    deadline = time.monotonic() + 10
    while (
        samples(get(server.ws_port, "/metrics")[2].decode()).get(
            ("livenotify_publish_write_seconds_count", ()), 0
        )
        < 1
    ):
        assert time.monotonic() < deadline, "no publish-to-write sample"
        time.sleep(0.05)


def test_metrics_disconnect_reasons(server: ServerProcess) -> None:
    with connect(f"ws://127.0.0.1:{server.ws_port}/") as ws:
        json.loads(ws.recv(timeout=5))
    deadline = time.monotonic() + 10
    while True:
        now = samples(get(server.ws_port, "/metrics")[2].decode())
        reasons = {dict(k[1]).get("reason") for k in now if k[0] == "livenotify_disconnects_total"}
        if "eof" in reasons:
            break
        assert time.monotonic() < deadline, reasons
        time.sleep(0.05)


def _ws_connections(server: ServerProcess) -> set[int]:
    """Remote ports of the server's established connections on its WebSocket port."""
    conns = psutil.Process(server.proc.pid).net_connections(kind="tcp")
    return {
        c.raddr.port
        for c in conns
        if c.laddr.port == server.ws_port and c.status == psutil.CONN_ESTABLISHED and c.raddr
    }


def test_publisher_http_one_keep_alive_connection(server: ServerProcess) -> None:
    with connect(f"ws://127.0.0.1:{server.ws_port}/?events=furniture_created") as ws:
        json.loads(ws.recv(timeout=5))
        idle = _ws_connections(server)
        with Publisher(f"http://127.0.0.1:{server.ws_port}/", token=TOKEN) as pub:
            seen: list[set[int]] = []
            for i in range(3):
                ack = pub.publish("furniture_created", furniture={"id": str(i)})
                assert ack.event == "furniture_created" and ack.delivered == 1
                got = json.loads(ws.recv(timeout=5))
                assert got["furniture"] == {"id": str(i)} and got["id"] == ack.id
                seen.append(_ws_connections(server) - idle)
            assert len(seen[0]) == 1 and seen[0] == seen[1] == seen[2]  # one, kept alive
            ack = pub.publish("furniture_created", {"x": 1}, message="hi")
            got = json.loads(ws.recv(timeout=5))
            assert (got["data"], got["message"]) == ({"x": 1}, "hi")


def test_publisher_http_errors(server: ServerProcess) -> None:
    url = f"http://127.0.0.1:{server.ws_port}"
    with Publisher(url, token="wrong") as pub, pytest.raises(PublishError) as info:
        pub.publish("furniture_created", a=1)
    assert info.value.code == "forbidden"
    with Publisher(url, token=TOKEN) as pub:
        with pytest.raises(PublishError) as info:
            pub.publish("nope", a=1)
        assert info.value.code == "unknown_event"
        assert pub.publish("furniture_created", a=1).event == "furniture_created"  # still usable
    with Publisher("http://127.0.0.1:1", timeout=2) as pub, pytest.raises(PublishError) as info:
        pub.publish("furniture_created", a=1)
    assert info.value.code == "unreachable"


def test_cli_publish_url(server: ServerProcess) -> None:
    base = [sys.executable, "-m", "livenotify", "publish"]
    url = f"http://127.0.0.1:{server.ws_port}"
    done = subprocess.run(
        [*base, "--url", url, "--token", TOKEN, "furniture_created", '{"furniture_id": "7"}'],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("published furniture_created id=")
    bad = subprocess.run(
        [*base, "--url", "ftp://x", "furniture_created", "hi"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2 and "--url" in bad.stderr and "Traceback" not in bad.stderr
