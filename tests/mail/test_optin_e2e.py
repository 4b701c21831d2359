"""Double opt-in, registration limits and the per-recipient mail cap, end to
end: ``livenotify serve`` on Redis + ``celery -A tasks worker`` + an aiosmtpd
SMTP server, all real processes and sockets (issue 13, point 4).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LineClient, ServerProcess, running_server
from tests.mail.test_mail_e2e import worker_env
from tests.mailtools import (
    MAIL_REDIS_URL,
    Received,
    SmtpSink,
    WorkerProcess,
    celery_worker,
    flush_redis_db,
    smtp_sink,
)

#: Each test its own event: registered subscriptions outlive connections.
OPTIN, BOMB, CAP = "t_optin", "t_bomb", "t_cap"
EVENTS = ",".join((OPTIN, BOMB, CAP))
#: Small limits, so that the tests reach them quickly.
MAX_PER_CONNECTION = 3
BURST = 3


def confirmation_code(received: Received) -> str:
    body = received.message.get_body(("plain",))
    assert body is not None
    m = re.search(r"^[ \t]*confirm ([A-Za-z0-9_-]+)\r?$", str(body.get_content()), re.M)
    assert m is not None, body.get_content()
    return m.group(1)


def confirmations(sink: SmtpSink, address: str) -> list[Received]:
    return [r for r in sink.to(address) if r.message["X-Livenotify-Confirm"]]


def notifications(sink: SmtpSink, address: str) -> list[Received]:
    return [r for r in sink.to(address) if r.message["X-Livenotify-Event"]]


def client(server: ServerProcess) -> LineClient:
    c = LineClient("127.0.0.1", server.tcp_port)
    assert c.recv()["type"] == "welcome"
    return c


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as s:
        yield s


@pytest.fixture(scope="module")
def stack(
    sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, WorkerProcess]]:
    flush_redis_db()
    data: Path = tmp_path_factory.mktemp("optin")
    try:
        with (
            celery_worker(worker_env(MAIL_REDIS_URL, sink, data / "worker")) as worker,
            running_server(
                "--broker", MAIL_REDIS_URL, "--events", EVENTS,
                "--max-registrations", str(MAX_PER_CONNECTION),
                "--mail-burst", str(BURST), "--mail-per-hour", "1",
                "--public-url", "http://notify.example.test:8765",
                data_dir=str(data / "server"), confirm=True,
            ) as srv,
        ):  # fmt: skip
            yield srv, worker
    finally:
        flush_redis_db()


def test_mail_only_after_the_confirmation_code(
    stack: tuple[ServerProcess, WorkerProcess], sink: SmtpSink
) -> None:
    server, _ = stack
    ana = "ana@optin.test"
    with client(server) as c, client(server) as publisher:
        c.send_line(f"register {ana}")
        reply = c.recv_type("registered")
        assert reply["confirmed"] is False
        c.send_line(f"subscribe {OPTIN}")
        c.recv_type("subscribed")
        # One confirmation mail, with the code and the front door's link.
        [mail] = sink.wait_for(lambda r: bool(confirmations(sink, ana)))[-1:]
        code = confirmation_code(mail)
        assert len(code) >= 32  # unguessable
        body = str(mail.message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
        assert f"http://notify.example.test:8765/confirm?code={code}" in body
        # Registering again does not mail again (one pending code).
        c.send_line(f"register {ana}")
        assert c.recv_type("registered")["confirmed"] is False

        # Unconfirmed: live delivery works, e-mail is withheld.
        publisher.send({"type": "publish", "event": OPTIN, "data": {"n": 1}})
        publisher.recv_type("published")
        assert c.recv_type(OPTIN)["data"] == {"n": 1}

        c.send_line("confirm not-the-code")
        assert c.recv_type("error")["code"] == "invalid_code"
        c.send_line(f"confirm {code}")
        assert c.recv_type("confirmed") == {"type": "confirmed", "email": ana}

        publisher.send({"type": "publish", "event": OPTIN, "data": {"n": 2}})
        publisher.recv_type("published")
        sink.wait_for(lambda r: bool(notifications(sink, ana)))
        got = notifications(sink, ana)
        # Only the notification published after the confirmation.
        assert len(got) == 1 and "n: 2" in str(got[0].message.get_body(("plain",)).get_content())  # type: ignore[union-attr]
        assert len(confirmations(sink, ana)) == 1
        # A new connection: the address is known as confirmed.
        with client(server) as again:
            again.send({"type": "register", "email": ana})
            assert again.recv_type("registered")["confirmed"] is True


def test_one_connection_cannot_enrol_a_hundred_addresses(
    stack: tuple[ServerProcess, WorkerProcess], sink: SmtpSink
) -> None:
    server, _ = stack
    victims = [f"victim{n}@bomb.test" for n in range(100)]
    with client(server) as c:
        replies = []
        for address in victims:
            c.send({"type": "register", "email": address})
            reply = c.recv()
            while reply["type"] not in ("registered", "error"):
                reply = c.recv()
            replies.append(reply)
        ok = [r for r in replies if r["type"] == "registered"]
        refused = [r for r in replies if r["type"] == "error"]
        assert len(ok) == MAX_PER_CONNECTION
        assert {r["code"] for r in refused} == {"too_many_registrations"}
        assert len(refused) == 100 - MAX_PER_CONNECTION
        c.send({"type": "subscribe", "events": [BOMB]})
        c.recv_type("subscribed")
        c.send({"type": "publish", "event": BOMB, "data": {"x": 1}})
        c.recv_type("published")
        sink.wait_for(
            lambda r: (
                sum(1 for v in victims[:MAX_PER_CONNECTION] if confirmations(sink, v))
                == MAX_PER_CONNECTION
            )
        )
        # A bounded wait: a round-trip through server, broker and worker that
        # mails someone else, so any stray mail would have arrived by then.
        marker = "marker@optin.test"
        with client(server) as m:
            m.send({"type": "register", "email": marker})
            m.recv_type("registered")
            sink.wait_for(lambda r: bool(confirmations(sink, marker)))
    mailed = {v for v in victims if sink.to(v)}
    assert mailed == set(victims[:MAX_PER_CONNECTION])
    assert all(len(sink.to(v)) == 1 for v in mailed)  # one confirmation, no notification


def test_per_recipient_cap(stack: tuple[ServerProcess, WorkerProcess], sink: SmtpSink) -> None:
    server, _ = stack
    bo = "bo@cap.test"
    with client(server) as c:
        c.send({"type": "register", "email": bo})
        c.recv_type("registered")
        c.send({"type": "subscribe", "events": [CAP]})
        c.recv_type("subscribed")
        [mail] = sink.wait_for(lambda r: bool(confirmations(sink, bo)))[-1:]
        c.send({"type": "confirm", "code": confirmation_code(mail)})
        c.recv_type("confirmed")
        mark = server.mark()
        for n in range(BURST + 4):
            c.send({"type": "publish", "event": CAP, "data": {"n": n}})
            c.recv_type("published")
        sink.wait_for(lambda r: len(notifications(sink, bo)) >= BURST)
        server.wait_log(rf"mail to {re.escape(bo)} over its cap", start=mark)
        # Logged once per recipient and window, and counted.
        m = server.command("stats", r"mail_capped=(\d+)")
        assert int(m.group(1)) == 4
        assert server.log.count(rf"mail to {re.escape(bo)} over its cap", mark) == 1
        # Every over-cap row was handled: nothing more reaches the worker.
        marker = "marker2@optin.test"
        c.send({"type": "register", "email": marker})
        c.recv_type("registered")
        sink.wait_for(lambda r: bool(confirmations(sink, marker)))
    assert len(notifications(sink, bo)) == BURST


def test_registrations_per_client_address() -> None:
    with running_server(
        "--max-registrations", "2", "--max-registrations-per-ip", "5", confirm=True
    ) as server:
        results: list[str] = []
        for n in range(4):
            with client(server) as c:
                for k in range(2):
                    c.send({"type": "register", "email": f"u{n}.{k}@ip.test"})
                    reply = c.recv()
                    while reply["type"] not in ("registered", "error"):
                        reply = c.recv()
                    results.append(reply.get("code", reply["type"]))
        assert results.count("registered") == 5
        assert results[5:] == ["too_many_registrations"] * 3
        # Registering an address already counted is not a new registration.
        with client(server) as c:
            c.send({"type": "register", "email": "u0.0@ip.test"})
            assert c.recv_type("registered")["email"] == "u0.0@ip.test"
        server.command("stats", r"registrations_refused=3\b")


def test_the_link_of_the_mail_confirms_on_the_front_door(
    stack: tuple[ServerProcess, WorkerProcess], sink: SmtpSink
) -> None:
    server, _ = stack
    cy = "cy@link.test"
    with client(server) as c:
        c.send({"type": "register", "email": cy})
        assert c.recv_type("registered")["confirmed"] is False
        [mail] = sink.wait_for(lambda r: bool(confirmations(sink, cy)))[-1:]
        code = confirmation_code(mail)
        base = f"http://127.0.0.1:{server.ws_port}/confirm"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}?code=nope{code[4:]}", timeout=10)
        assert refused.value.code == 400
        assert json.loads(refused.value.read())["code"] == "invalid_code"
        with urllib.request.urlopen(f"{base}?code={code}", timeout=10) as answer:
            assert answer.status == 200
            assert json.loads(answer.read()) == {"type": "confirmed", "email": cy}
        c.send({"type": "register", "email": cy})
        assert c.recv_type("registered")["confirmed"] is True
