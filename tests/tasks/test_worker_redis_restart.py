"""Issue 13.8: a ``celery -A tasks worker`` survives a Redis restart.

A private ``redis-server`` (no persistence) on a free port, a worker with
the README's command line (prefork pool), one mail in flight while Redis is
killed and started again on the same port; afterwards the worker is still
running and delivers a new mail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.celery_app import SEND_MAIL, create_app
from tests.helpers import ROOT, LogLines
from tests.mailtools import WORKER_START_TIMEOUT, Received, RedisServer, SmtpSink, smtp_sink

pytestmark = pytest.mark.slow


def job(email: str) -> dict[str, Any]:
    return {
        "outbox_id": 1,
        "notification_id": uuid.uuid4().hex,
        "event": "furniture_created",
        "email": email,
        "payload": json.dumps({"type": "furniture_created", "message": "m"}),
    }


def sink_to(received: list[Received], address: str) -> list[Received]:
    return [r for r in received if r.rcpt_tos == [address]]


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with smtp_sink() as s:
        yield s


def test_worker_survives_redis_restart(tmp_path: Path, sink: SmtpSink) -> None:
    redis = RedisServer(tmp_path)
    redis.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVENOTIFY_")}
    env.update(
        PYTHONUNBUFFERED="1",
        LIVENOTIFY_BROKER=redis.url,
        LIVENOTIFY_DATA_DIR=str(tmp_path / "data"),
        LIVENOTIFY_SMTP_HOST="127.0.0.1",
        LIVENOTIFY_SMTP_PORT=str(sink.port),
        LIVENOTIFY_MAIL_FROM="alerts@livenotify.test",
        LIVENOTIFY_MAIL_RETRY_DELAY="0.2",
        LIVENOTIFY_MAIL_RETRY_MAX_DELAY="1",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--loglevel=INFO",
         "--concurrency=2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1, env=env, cwd=str(ROOT),
    )  # fmt: skip
    log = LogLines(worker.stdout)
    app = None
    try:
        log.wait(r"\bready\.$", WORKER_START_TIMEOUT)
        app = create_app(redis.url, tmp_path)
        app.send_task(SEND_MAIL, args=[job("before@example.com")])
        sink.wait_for(lambda got: bool(sink_to(got, "before@example.com")), timeout=30)

        # A mail in flight (acks_late, not yet acknowledged) while Redis goes away.
        sink.hold_next()
        app.send_task(SEND_MAIL, args=[job("inflight@example.com")])
        sink.wait_holding(timeout=30)
        mark = log.mark()
        redis.kill()
        log.wait(r"Connection to broker lost", 30, start=mark)
        redis.start()
        sink.release()
        log.wait(r"Connected to \S+://", 60, start=mark)
        app.close()

        app = create_app(redis.url, tmp_path)
        app.send_task(SEND_MAIL, args=[job("after@example.com")])
        sink.wait_for(lambda got: bool(sink_to(got, "after@example.com")), timeout=60)
        assert worker.poll() is None, log.text()
        assert log.count(r"Unrecoverable error") == 0, log.text()
    finally:
        if app is not None:
            app.close()
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)
        redis.kill()
