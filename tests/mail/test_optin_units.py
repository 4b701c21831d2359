"""Double opt-in pieces in isolation: codes, the per-client window, the
per-recipient cap, the confirm message and the confirmation mail."""

from __future__ import annotations

import logging

import pytest
import trio

from livenotify import protocol
from livenotify.config import Config, Limits
from livenotify.mail.caps import RecipientCap
from livenotify.mail.presence import WorkerPresence
from livenotify.optin import OptIn, client_key, iso, parse_iso
from tasks.compose import ComposeError
from tasks.confirmation import compose_confirmation


def test_client_key_counts_ipv6_by_its_64() -> None:
    assert client_key("1.2.3.4:5000") == "1.2.3.4"
    assert client_key("[2001:db8:1:2::5]:80") == client_key("[2001:db8:1:2:ffff::9]:81")
    assert client_key("[2001:db8:1:2::5]:80") != client_key("[2001:db8:1:3::5]:80")


def test_window_counts_distinct_addresses_per_hour() -> None:
    optin = OptIn(Config(limits=Limits(max_registrations_per_ip=2)))
    optin.admit("1.2.3.4:1", "a@x.org", now=0)
    optin.admit("1.2.3.4:2", "a@x.org", now=1)  # the same address again
    optin.admit("1.2.3.4:3", "b@x.org", now=2)
    with pytest.raises(protocol.ProtocolError) as refused:
        optin.admit("1.2.3.4:4", "c@x.org", now=3)
    assert refused.value.code == protocol.TOO_MANY_REGISTRATIONS
    optin.admit("5.6.7.8:1", "c@x.org", now=3)  # another client
    optin.admit("1.2.3.4:5", "c@x.org", now=3601)  # an hour later
    assert optin.refused == 1


def test_codes_one_pending_resend_after_the_interval_new_after_expiry() -> None:
    optin = OptIn(Config(confirm_ttl=3600, confirm_resend=600))
    first = optin.pending_code(None, None, None, now=1000)
    assert first.send and len(first.code) >= 32
    assert parse_iso(first.expires) == pytest.approx(4600, abs=0.01)
    sent = iso(1000)
    again = optin.pending_code(first.code, first.expires, sent, now=1300)
    assert (again.code, again.send) == (first.code, False)
    resend = optin.pending_code(first.code, first.expires, sent, now=1700)
    assert (resend.code, resend.send) == (first.code, True)
    expired = optin.pending_code(first.code, first.expires, sent, now=5000)
    assert expired.send and expired.code != first.code
    assert optin.pending_code(None, None, None, now=1).code != first.code


def test_link_names_the_front_door() -> None:
    assert OptIn(Config(ws_port=8765)).link("abc") == "http://localhost:8765/confirm?code=abc"
    assert OptIn(Config(host="::1", ws_port=1)).link("c") == "http://[::1]:1/confirm?code=c"
    custom = OptIn(Config(public_url="https://n.example.org/"))
    assert custom.link("c") == "https://n.example.org/confirm?code=c"


def test_cap_is_a_burst_then_the_hourly_rate() -> None:
    cap = RecipientCap(burst=3, per_hour=1)
    assert [cap.take("a@x.org", now=0) for _ in range(4)] == [True, True, True, False]
    assert cap.take("b@x.org", now=0)  # per recipient
    assert not cap.take("a@x.org", now=3599)
    assert cap.take("a@x.org", now=3600 * 2)
    cap.refund("a@x.org")
    assert cap.take("a@x.org", now=3600 * 2)
    assert cap.capped == 2


def test_confirm_message_on_both_forms() -> None:
    limits = Limits()
    assert protocol.decode_command("confirm abc_-9", limits) == protocol.Confirm("abc_-9")
    assert protocol.decode_client('{"type":"confirm","code":"x1"}', (), limits) == (
        protocol.Confirm("x1")
    )
    for bad in ("confirm", "confirm a b", "confirm a;b"):
        with pytest.raises(protocol.ProtocolError) as exc:
            protocol.decode_command(bad, limits)
        assert exc.value.code == protocol.INVALID_CODE
    with pytest.raises(protocol.ProtocolError) as exc:
        protocol.decode_client('{"type":"confirm","code":5}', (), limits)
    assert exc.value.code == protocol.INVALID_CODE
    text = protocol.encode_server(protocol.Registered("a@x.org", (), False))
    assert text == '{"type":"registered","email":"a@x.org","events":[],"confirmed":false}'
    assert protocol.decode_server(text) == protocol.Registered("a@x.org", (), False)
    confirmed = protocol.encode_server(protocol.Confirmed("a@x.org"))
    assert protocol.decode_server(confirmed) == protocol.Confirmed("a@x.org")


def test_confirmation_mail_carries_code_and_link_only() -> None:
    msg = compose_confirmation(
        payload='{"code":"abc","link":"http://h:1/confirm?code=abc"}',
        recipient="a@x.org",
        sender="n@x.org",
    )
    body = str(msg.get_body(("plain",)).get_content())  # type: ignore[union-attr]
    assert "confirm abc" in body and "http://h:1/confirm?code=abc" in body
    assert msg["X-Livenotify-Confirm"] == "abc"
    with pytest.raises(ComposeError):
        compose_confirmation(
            payload='{"code":"a\\r\\nBcc: x@y.z","link":"http://h/"}',
            recipient="a@x.org",
            sender="n@x.org",
        )


async def test_embedded_presence_follows_the_worker_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="livenotify.mail")
    alive = [True]
    presence = WorkerPresence(Config(), lambda: alive[0])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(presence.run)
            while presence.workers != 1:
                await trio.sleep(0.01)
            alive[0] = False
            while presence.workers != 0:
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("no mail worker is connected to embedded; mail waits") == 1
    assert "mail worker(s) connected to embedded: 1" in lines
