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
                assert ack.delivered == 1 and len(ack.id) == 32 and ack.offset == n + 1
                got = sub.recv()
                assert got["data"] == {"n": n} and got["id"] == ack.id
                assert got["offset"] == ack.offset
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
            assert "offset=1" in out.stdout
            # Seed form: the object's keys are the notification's fields.
            got = c.recv()
            assert got["furniture_id"] == "42" and "data" not in got
            out = subprocess.run([*base, "adiós"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert c.recv()["message"] == "adiós"
        bad = subprocess.run(
            [sys.executable, "-m", "livenotify", "publish", "--port", str(free_port()), "x", "y"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert bad.returncode == 1 and "unreachable" in bad.stderr
        assert "Traceback" not in bad.stderr


def test_one_shape_for_one_event() -> None:
    """Publisher fields, a CLI object and the seed form all arrive at the top level."""
    furniture = {"id": "42", "nombre": "Mesa"}
    with running_server() as srv, subscriber(srv.tcp_port, "furniture_created") as c:
        with Publisher("127.0.0.1", srv.tcp_port) as pub:
            assert pub.publish("furniture_created", furniture=furniture).delivered == 1
            got = c.recv()
            assert got["type"] == "furniture_created" and got["furniture"] == furniture
            assert "data" not in got and "fields" not in got
            pub.publish("furniture_created", {"n": 1})  # explicit data stays data
            assert c.recv()["data"] == {"n": 1}
            pub.publish("furniture_created", message="hola", furniture=furniture)
            got = c.recv()
            assert (got["message"], got["furniture"]) == ("hola", furniture)
        seed = LineClient("127.0.0.1", srv.tcp_port)
        seed.recv()
        seed.send({"type": "furniture_created", "furniture": furniture})
        assert c.recv()["furniture"] == furniture
        # "fields" must be an object; the server says so and stays up.
        seed.send({"type": "publish", "event": "furniture_created", "fields": [1]})
        err = seed.recv_type("error")
        assert err["code"] == "invalid_message"
        seed.send({"type": "publish", "event": "furniture_created", "fields": {"type": "x"}})
        assert seed.recv_type("published")["delivered"] == 1
        assert c.recv()["type"] == "furniture_created"


def test_publish_to_a_bad_host_names_it() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "livenotify", "publish", "--host", "no-such-host.invalid",
         "furniture_created", "x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert "no-such-host.invalid:8888" in proc.stderr, proc.stderr
