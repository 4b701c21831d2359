"""The embedded broker: the crash-safe filesystem transport, and the worker
that ``livenotify serve`` starts and supervises for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from kombu import Connection, Exchange, Queue

from livenotify.config import Config
from livenotify.mail import EmbeddedWorker
from tasks import fsbroker
from tasks.celery_app import SEND_MAIL, create_app
from tests.helpers import ROOT
from tests.mailtools import FAST_RETRY_ENV, capture_logs, smtp_sink

QUEUE = Queue("t", Exchange("t"), "t")

#: Takes one message from the broker in ``argv[1]`` and dies without acking.
TAKE_AND_DIE = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from kombu import Connection, Exchange, Queue
from tasks import fsbroker
conn = Connection("filesystem://", transport=fsbroker.Transport,
                  transport_options=fsbroker.folders(sys.argv[1]))
message = Queue("t", Exchange("t"), "t")(conn.default_channel).get(no_ack=False)
print(message.payload["n"], flush=True)
os._exit(0)
"""


def broker(root: Path) -> Connection:
    return Connection(
        "filesystem://", transport=fsbroker.Transport, transport_options=fsbroker.folders(root)
    )


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[Connection]:
    with broker(tmp_path) as conn:
        yield conn


def publish(conn: Connection, n: int) -> None:
    conn.Producer().publish({"n": n}, exchange=QUEUE.exchange, routing_key="t", declare=[QUEUE])


def test_message_of_a_killed_consumer_is_delivered_again(
    connection: Connection, tmp_path: Path
) -> None:
    publish(connection, 1)
    out = subprocess.run(
        [sys.executable, "-c", TAKE_AND_DIE, str(tmp_path)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "1"
    assert len(os.listdir(tmp_path / "unacked")) == 1
    assert os.listdir(tmp_path / "queue") == []

    again = QUEUE(connection.default_channel).get(no_ack=False)
    assert again is not None and again.payload == {"n": 1}
    again.ack()
    assert os.listdir(tmp_path / "unacked") == []
    assert os.listdir(tmp_path / "queue") == []
    assert QUEUE(connection.default_channel).get() is None


def test_unacked_message_goes_back_on_clean_close(tmp_path: Path) -> None:
    with broker(tmp_path) as conn:
        publish(conn, 2)
        held = QUEUE(conn.default_channel).get(no_ack=False)
        assert held is not None
        assert len(os.listdir(tmp_path / "unacked")) == 1
    # Closing the connection (a worker's warm shutdown) put it back.
    assert os.listdir(tmp_path / "unacked") == []
    with broker(tmp_path) as conn:
        again = QUEUE(conn.default_channel).get(no_ack=False)
        assert again is not None and again.payload == {"n": 2}
        again.ack()


def test_messages_come_out_in_publish_order(connection: Connection) -> None:
    for n in range(5):
        publish(connection, n)
    channel = connection.default_channel
    got = []
    for _ in range(5):
        m = QUEUE(channel).get(no_ack=True)
        assert m is not None
        got.append(m.payload["n"])
    assert got == [0, 1, 2, 3, 4]


async def test_embedded_worker_retries_survives_a_crash_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker ``livenotify serve`` supervises, on the embedded broker: SMTP
    retries, a worker killed mid-send (its message is delivered by the next
    worker, once), restart after a crash, warm stop on cancel."""
    data = tmp_path / "data"
    config = Config(data_dir=str(data))
    app = create_app(None, data)

    def send(n: int) -> None:
        payload = json.dumps({"type": "furniture_created", "message": f"sofa {n}"})
        job = {"outbox_id": n, "notification_id": f"n{n}", "event": "furniture_created",
               "email": f"u{n}@example.com", "payload": payload}  # fmt: skip
        app.send_task(SEND_MAIL, args=[job])

    with smtp_sink() as sink, capture_logs("livenotify.mail") as logs:
        monkeypatch.setenv("LIVENOTIFY_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("LIVENOTIFY_SMTP_PORT", str(sink.port))
        for name, value in FAST_RETRY_ENV.items():
            monkeypatch.setenv(name, value)
        worker = EmbeddedWorker(config)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.run)
                await logs.wait(r"mail worker ready: sending mail via 127\.0\.0\.1")
                sink.fail_next(2)
                await trio.to_thread.run_sync(send, 1)
                await trio.to_thread.run_sync(sink.wait_count, 1)
                assert sink.attempts == 3
                assert logs.count(r"mail n1 to u1@example.com failed \(451") == 2

                # Killed in the middle of an SMTP conversation.
                sink.hold_next()
                await trio.to_thread.run_sync(send, 2)
                await trio.to_thread.run_sync(sink.wait_holding)
                first_pid = worker.pid
                assert first_pid is not None
                mark = logs.mark()
                os.kill(first_pid, signal.SIGKILL)
                await logs.wait(r"mail worker exited with status -9; restarting", start=mark)
                sink.release()
                await logs.wait(r"requeued 1 message\(s\) of a stopped worker", start=mark)
                got = await trio.to_thread.run_sync(sink.wait_count, 2)
                assert [r.rcpt_tos for r in got] == [["u1@example.com"], ["u2@example.com"]]
                second_pid = worker.pid
                assert second_pid not in (None, first_pid)
                nursery.cancel_scope.cancel()
        await logs.wait(r"mail worker stopped")
    assert second_pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(second_pid, 0)
    assert os.listdir(data / "broker" / "unacked") == []
    assert os.listdir(data / "broker" / "queue") == []
    app.close()
