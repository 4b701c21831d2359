"""The producer side: ``livenotify.Publisher`` and ``livenotify publish``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from livenotify import Publisher, PublishError
from tests.helpers import LineClient, free_port, running_server


def subscriber(port: int, event: str) -> LineClient:
    c = LineClient("127.0.0.1", port)
    c.recv()
    c.send_line(f"subscribe {event}")
    c.recv_type("subscribed")
    return c


def test_publisher_reuses_one_connection_and_reports_acks() -> None:
    with running_server("--host", "::", host="::") as srv:
        sub = subscriber(srv.tcp_port, "furniture_created")
        with Publisher("::1", srv.tcp_port) as pub:
            for n in range(3):
                ack = pub.publish("furniture_created", {"n": n})
                assert ack.delivered == 1 and len(ack.id) == 32
                got = sub.recv()
                assert got["data"] == {"n": n} and got["id"] == ack.id
            ack = pub.publish("furniture_created", message="texto")
            assert sub.recv()["message"] == "texto"
            with pytest.raises(PublishError) as err:
                pub.publish("no_such_event", 1)
            assert err.value.code == "unknown_event"
        # Three publishes, one TCP connection for the publisher.
        srv.command("stats", r"connections_total=2 ")
        sub.close()


def test_publisher_reconnects_after_server_restart() -> None:
    port = free_port()
    pub = Publisher("127.0.0.1", port, timeout=5)
    with running_server(port=port) as srv:
        assert pub.publish("furniture_updated", 1).delivered == 0
        assert srv.stop() == 0
    with running_server(port=port):
        assert pub.publish("furniture_updated", 2).event == "furniture_updated"
    pub.close()


def test_publisher_token_and_unreachable() -> None:
    with running_server("--publish-token", "t0k") as srv:
        with pytest.raises(PublishError) as err:
            Publisher("127.0.0.1", srv.tcp_port).publish("furniture_created", 1)
        assert err.value.code == "forbidden"
        ack = Publisher("127.0.0.1", srv.tcp_port, token="t0k").publish("furniture_created", 1)
        assert ack.event == "furniture_created"
    with pytest.raises(PublishError) as err:
        Publisher("127.0.0.1", free_port(), timeout=2).publish("furniture_created", 1)
    assert err.value.code == "unreachable"


def test_publish_command() -> None:
    with running_server() as srv:
        with subscriber(srv.tcp_port, "furniture_deleted") as c:
            base = [sys.executable, "-m", "livenotify", "publish", "--host", "127.0.0.1",
                    "--port", str(srv.tcp_port), "furniture_deleted"]  # fmt: skip
            out = subprocess.run(
                [*base, '{"furniture_id": "42"}'], capture_output=True, text=True, timeout=60
            )
            assert out.returncode == 0, out.stderr
            assert "published furniture_deleted" in out.stdout and "delivered=1" in out.stdout
            assert c.recv()["data"] == {"furniture_id": "42"}
            out = subprocess.run([*base, "adiós"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert c.recv()["message"] == "adiós"
        bad = subprocess.run(
            [sys.executable, "-m", "livenotify", "publish", "--port", str(free_port()), "x", "y"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert bad.returncode == 1 and "unreachable" in bad.stderr
        assert "Traceback" not in bad.stderr
