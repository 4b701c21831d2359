"""E-mail end to end: ``livenotify serve`` + broker + ``celery -A tasks worker``
+ an SMTP server, all real processes and sockets.

Subscribers register and subscribe over TCP; notifications are published on
the admin console or over TCP; mail is captured by an aiosmtpd server.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import LineClient, ServerProcess, running_server
from tests.mailtools import (
    FAST_RETRY_ENV,
    MAIL_REDIS_URL,
    RedisServer,
    SmtpSink,
    WorkerProcess,
    celery_worker,
    flush_redis_db,
    smtp_sink,
)

CREATED, DELETED = "furniture_created", "furniture_deleted"
#: Registered subscriptions outlive connections (mail goes to offline
#: subscribers too), so each test on the shared server has its own event.
INJECT, SMTP_DOWN = "t_inject", "t_smtp_down"
EVENTS = ",".join((CREATED, "furniture_updated", DELETED, INJECT, SMTP_DOWN))


def worker_env(broker: str, sink: SmtpSink, data_dir: Path) -> dict[str, str]:
    return {
        "LIVENOTIFY_BROKER": broker,
        "LIVENOTIFY_DATA_DIR": str(data_dir),
        "LIVENOTIFY_SMTP_HOST": "127.0.0.1",
        "LIVENOTIFY_SMTP_PORT": str(sink.port),
        "LIVENOTIFY_MAIL_FROM": "alerts@livenotify.test",
        **FAST_RETRY_ENV,
    }


def subscriber(server: ServerProcess, address: str | None, event: str) -> LineClient:
    """A TCP client, registered as ``address`` (if given) and subscribed to ``event``."""
    client = LineClient("127.0.0.1", server.tcp_port)
    assert client.recv()["type"] == "welcome"
    if address is not None:
        client.send({"type": "register", "email": address})
        assert client.recv_type("registered")["email"] == address
    client.send({"type": "subscribe", "events": [event]})
    assert event in client.recv_type("subscribed")["events"]
    return client


def plain_text(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def publish(client: LineClient, event: str, data: dict[str, Any]) -> dict[str, Any]:
    client.send({"type": "publish", "event": event, "data": data})
    return client.recv_type("published")


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as s:
        yield s


@pytest.fixture(scope="module")
def redis_stack(
    sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, WorkerProcess]]:
    """One server and one worker on Redis DB 13, shared by the module's tests."""
    flush_redis_db()
    data = tmp_path_factory.mktemp("redis-stack")
    try:
        with (
            celery_worker(worker_env(MAIL_REDIS_URL, sink, data / "worker")) as worker,
            running_server(
                "--broker", MAIL_REDIS_URL, "--events", EVENTS, data_dir=str(data / "server")
            ) as srv,
        ):
            yield srv, worker
    finally:
        flush_redis_db()


@pytest.fixture
def stack(
    redis_stack: tuple[ServerProcess, WorkerProcess], sink: SmtpSink
) -> tuple[ServerProcess, WorkerProcess]:
    sink.clear()
    return redis_stack


def test_each_subscriber_of_the_event_gets_exactly_one_mail(
    stack: tuple[ServerProcess, WorkerProcess], sink: SmtpSink
) -> None:
    server, _ = stack
    clients = [subscriber(server, f"{n}@example.com", CREATED) for n in ("ana", "bea", "cai")]
    clients.append(subscriber(server, "dan@example.com", DELETED))
    clients.append(subscriber(server, None, CREATED))  # live only: no address, no mail
    try:
        server.command(f"send {CREATED} Mesa de roble", r"sent furniture_created")
        # The worker takes jobs in order: once dan's (later) mail is in,
        # every mail of the first notification has been sent.
        server.command(f"send {DELETED} Silla", r"sent furniture_deleted")
        sink.wait_for(lambda got: any("dan@example.com" in r.rcpt_tos for r in got))
        for name in ("ana", "bea", "cai"):
            [mail] = sink.to(f"{name}@example.com")
            assert mail.rcpt_tos == [f"{name}@example.com"]
            assert mail.message["Subject"] == "[furniture_created] Mesa de roble"
        [dan] = sink.to("dan@example.com")
        assert dan.message["Subject"] == "[furniture_deleted] Silla"
        assert len(sink.received) == 4
    finally:
        for c in clients:
            c.close()


def test_header_injection_through_publish_fails(
    stack: tuple[ServerProcess, WorkerProcess], sink: SmtpSink
) -> None:
    server, _ = stack
    with subscriber(server, "eve@example.com", INJECT) as eve:
        publish(eve, INJECT, {"message": "hola\r\nBcc: x@evil.test\r\n\r\nbody"})
        [mail] = sink.wait_count(1)
    assert mail.rcpt_tos == ["eve@example.com"]
    msg = mail.message
    assert msg["Bcc"] is None and msg["Cc"] is None
    assert msg["Subject"] == "[t_inject] message=hola Bcc: x@evil.test body"
    plain = msg.get_body(("plain",))
    assert plain is not None and "Bcc: x@evil.test" in plain.get_content()


def test_smtp_down_then_back_is_retried_and_delivered_once(
    stack: tuple[ServerProcess, WorkerProcess], sink: SmtpSink
) -> None:
    server, worker = stack
    with subscriber(server, "fay@example.com", SMTP_DOWN):
        sink.stop()
        try:
            start = worker.log.mark()
            server.command(f"send {SMTP_DOWN} durante la caida", rf"sent {SMTP_DOWN}")
            worker.log.wait(r"to fay@example.com failed .*retry 2 in", start=start)
        finally:
            sink.start()
        [mail] = sink.wait_count(1)
        worker.log.wait(r"to fay@example.com: sent", start=start)
    assert mail.rcpt_tos == ["fay@example.com"]
    assert worker.log.count(r"to fay@example.com: sent", start) == 1


def test_broker_down_then_back_live_delivery_unaffected(sink: SmtpSink, tmp_path: Path) -> None:
    sink.clear()
    broker = RedisServer(tmp_path)
    broker.start()
    db = str(tmp_path / "subscriptions.db")
    data = str(tmp_path / "data")
    try:
        with celery_worker(worker_env(broker.url, sink, tmp_path / "worker")):
            with running_server("--broker", broker.url, db=db, data_dir=data) as server:
                gus = subscriber(server, "gus@example.com", CREATED)
                live = subscriber(server, None, CREATED)
                broker.kill()
                mark = server.mark()
                began = time.monotonic()
                publish(gus, CREATED, {"n": 1})  # a publisher does not get its own
                note = live.recv_type(CREATED)
                assert time.monotonic() - began < 1.0  # live delivery did not wait
                assert note["data"] == {"n": 1}
                server.wait_log(r"WARNING livenotify.mail: mail broker unreachable", start=mark)

                broker.start()
                server.wait_log(r"INFO livenotify.mail: mail broker reachable again", start=mark)
                [first] = sink.wait_count(1, timeout=30)
                assert "data:\n  n: 1\n" in plain_text(first.message)

                # Down again, and this time the server stops before it is back.
                mark = server.mark()
                broker.kill()
                publish(gus, CREATED, {"n": 2})
                live.recv_type(CREATED)
                server.wait_log(r"mail broker unreachable", start=mark)
                live.close()
                gus.close()
            broker.start()
            # The pending job survives the restart and goes out.
            with running_server("--broker", broker.url, db=db, data_dir=data) as server:
                server.wait_log(r"mail: 1 job\(s\) handed to the broker")
                mails = sink.wait_count(2, timeout=30)
        assert [m.rcpt_tos for m in mails] == [["gus@example.com"]] * 2
        assert "data:\n  n: 2\n" in plain_text(mails[1].message)
        assert len(sink.received) == 2
    finally:
        broker.kill()


def test_embedded_default_writes_eml_to_the_outbox(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data_dir=str(data), worker=True) as server:
        server.wait_log(r"mail worker ready: no LIVENOTIFY_SMTP_HOST: writing mail to")
        with subscriber(server, "ana@example.com", CREATED):
            server.command(f"send {CREATED} Mesa <nueva>", r"sent furniture_created")
            m = server.wait_log(r"to ana@example.com: written to (\S+\.eml)", timeout=20)
        path = Path(m.group(1))
        assert path.parent == (data / "outbox").absolute()
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert msg["To"] == "ana@example.com"
        assert msg["Subject"] == "[furniture_created] Mesa <nueva>"
        html = msg.get_body(("html",))
        assert html is not None and "Mesa &lt;nueva&gt;" in html.get_content()
        assert server.stop() == 0
        server.wait_log(r"mail worker stopped")
