"""The Celery side for real: Redis (DB 13) broker, a ``celery -A tasks worker``
subprocess and an aiosmtpd server. One worker serves the whole module."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery

from tasks.celery_app import SEND_MAIL, create_app
from tasks.claims import REDIS_PREFIX, idempotency_key
from tests.mailtools import (
    FAST_RETRY_ENV,
    MAIL_REDIS_URL,
    SmtpSink,
    WorkerProcess,
    celery_worker,
    flush_redis_db,
    smtp_sink,
)


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as s:
        yield s


@pytest.fixture(scope="module")
def worker(sink: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    flush_redis_db()
    env = {
        "LIVENOTIFY_BROKER": MAIL_REDIS_URL,
        "LIVENOTIFY_DATA_DIR": str(tmp_path_factory.mktemp("worker-data")),
        "LIVENOTIFY_SMTP_HOST": "127.0.0.1",
        "LIVENOTIFY_SMTP_PORT": str(sink.port),
        "LIVENOTIFY_MAIL_FROM": "alerts@livenotify.test",
        **FAST_RETRY_ENV,
    }
    try:
        with celery_worker(env) as w:
            yield w
    finally:
        flush_redis_db()


@pytest.fixture
def app(worker: WorkerProcess, sink: SmtpSink, tmp_path: Any) -> Iterator[Celery]:
    sink.clear()
    app = create_app(MAIL_REDIS_URL, tmp_path)
    yield app
    app.close()


def job(email: str, payload: dict[str, Any], event: str = "furniture_created") -> dict[str, Any]:
    return {
        "outbox_id": 1,
        "notification_id": uuid.uuid4().hex,
        "event": event,
        "email": email,
        "payload": json.dumps({"type": event, **payload}),
    }


def test_mail_reaches_smtp_once_with_text_and_html(
    app: Celery, sink: SmtpSink, worker: WorkerProcess
) -> None:
    j = job("ana@example.com", {"message": "Sofá <nuevo> & listo"})
    app.send_task(SEND_MAIL, args=[j])
    [got] = sink.wait_count(1)
    assert got.rcpt_tos == ["ana@example.com"]
    assert got.mail_from == "alerts@livenotify.test"
    msg = got.message
    assert msg["Subject"] == "[furniture_created] Sofá <nuevo> & listo"
    assert msg["To"] == "ana@example.com"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    assert "Sofá <nuevo> & listo" in plain.get_content()
    assert "Sofá &lt;nuevo&gt; &amp; listo" in html.get_content()
    worker.log.wait(rf"mail {j['notification_id']} \(furniture_created\) to ana@example.com: sent")


def test_duplicate_hand_off_mails_once(app: Celery, sink: SmtpSink, worker: WorkerProcess) -> None:
    j = job("bea@example.com", {"data": {"id": 7}})
    start = worker.log.mark()
    app.send_task(SEND_MAIL, args=[j])
    app.send_task(SEND_MAIL, args=[j])  # e.g. the server crashed before marking it queued
    worker.log.wait(rf"mail {j['notification_id']} to bea@example.com: already sent", start=start)
    assert len(sink.to("bea@example.com")) == 1


def test_smtp_failure_is_retried_and_delivered_once(
    app: Celery, sink: SmtpSink, worker: WorkerProcess
) -> None:
    sink.fail_next(2)
    j = job("cai@example.com", {"message": "retry me"})
    start = worker.log.mark()
    app.send_task(SEND_MAIL, args=[j])
    sink.wait_count(1)
    assert sink.attempts == 3
    assert worker.log.count(r"to cai@example.com failed \(451 .*retry \d in", start) == 2
    worker.log.wait(r"to cai@example.com: sent", start=start)
    assert len(sink.to("cai@example.com")) == 1


def test_smtp_down_then_back(app: Celery, sink: SmtpSink, worker: WorkerProcess) -> None:
    sink.stop()
    try:
        j = job("dan@example.com", {"message": "while down"})
        start = worker.log.mark()
        app.send_task(SEND_MAIL, args=[j])
        worker.log.wait(r"to dan@example.com failed .*Connection refused.*retry 2 in", start=start)
    finally:
        sink.start()
    [got] = sink.wait_count(1)
    assert got.rcpt_tos == ["dan@example.com"]


@pytest.mark.parametrize(
    ("evil", "subject"),
    [
        ("hello\r\nBcc: x@evil.test\r\nSubject: pwned\n\nfake body",
         "hello Bcc: x@evil.test Subject: pwned fake body"),
        # An RFC 2047 encoded word that decodes to CRLF + header.
        ("=?utf-8?q?hi=0D=0ABcc=3A_x=40evil.test?=", "= ?utf-8?q?hi=0D=0ABcc=3A_x=40evil.test?="),
    ],
)  # fmt: skip
def test_header_injection_attempt_fails(
    app: Celery, sink: SmtpSink, worker: WorkerProcess, evil: str, subject: str
) -> None:
    j = job("eve@example.com", {"message": evil})
    app.send_task(SEND_MAIL, args=[j])
    [got] = sink.wait_count(1)
    assert got.rcpt_tos == ["eve@example.com"]
    msg = got.message
    assert msg["Bcc"] is None
    # The whole text is one subject line, not new headers.
    assert msg.get_all("Subject") == ["[furniture_created] " + subject]
    headers = got.raw.split(b"\r\n\r\n", 1)[0].lower()
    assert b"\nbcc:" not in headers


def test_address_with_line_break_is_refused_not_injected(
    app: Celery, sink: SmtpSink, worker: WorkerProcess
) -> None:
    j = job("fay@example.com\r\nBcc: x@evil.test", {"message": "hi"})
    start = worker.log.mark()
    app.send_task(SEND_MAIL, args=[j])
    worker.log.wait(r"refused for good: unusable address", start=start)
    assert sink.attempts == 0


def test_recipient_refused_is_not_retried(
    app: Celery, sink: SmtpSink, worker: WorkerProcess
) -> None:
    sink.refuse.add("gus@example.com")
    j = job("gus@example.com", {"message": "bounce"})
    start = worker.log.mark()
    app.send_task(SEND_MAIL, args=[j])
    worker.log.wait(r"to gus@example.com refused for good: 550", start=start)
    assert worker.log.count(r"gus@example.com failed", start) == 0


def test_stale_sending_claim_does_not_block_forever(
    app: Celery, sink: SmtpSink, worker: WorkerProcess
) -> None:
    j = job("hal@example.com", {"message": "after the crash"})
    # A worker that crashed mid-send left its claim behind; it lapses.
    r = redis.Redis.from_url(MAIL_REDIS_URL)
    key = REDIS_PREFIX + idempotency_key(j["notification_id"], j["email"])
    r.set(key, "sending:crashed-worker", ex=2)
    r.close()
    app.send_task(SEND_MAIL, args=[j])
    [got] = sink.wait_count(1, timeout=15)
    assert got.rcpt_tos == ["hal@example.com"]
