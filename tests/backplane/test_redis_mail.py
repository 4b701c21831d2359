"""One mail per recipient with three processes: Redis backplane and broker
(a private redis-server), one PostgreSQL database, one Celery worker, an
SMTP sink. Only the publishing process writes the notification (and its
outbox rows) to storage; the worker's idempotency key (in the broker's
Redis) covers a row handed over by two dispatchers at once."""

from __future__ import annotations

import re
from pathlib import Path

from tests.backplane.services import BOUND, cluster, own_redis, publish
from tests.helpers import LineClient
from tests.mail.test_mail_e2e import worker_env
from tests.mailtools import celery_worker, smtp_sink
from tests.pg import rows as pg_rows

CREATED, DELETED = "furniture_created", "furniture_deleted"
PEOPLE = ("ana@scale.test", "bea@scale.test")


def test_one_mail_per_recipient_with_three_processes(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "redis").mkdir()
    with (
        smtp_sink() as sink,
        own_redis(tmp_path / "redis", durable=False) as red,
        celery_worker(worker_env(red.url, sink, tmp_path / "worker")),
        cluster(3, red.url, "mail", "--broker", red.url, db=pg_url) as servers,
    ):
        # Registered on different processes; subscriptions in PostgreSQL.
        for server, address in zip(servers, PEOPLE, strict=False):
            with LineClient("127.0.0.1", server.tcp_port) as client:
                client.recv()
                client.send({"type": "register", "email": address})
                client.recv_type("registered")
                client.send({"type": "subscribe", "events": [CREATED, DELETED]})
                client.recv_type("subscribed")
        # One notification published on each process.
        for n, server in enumerate(servers):
            with LineClient("127.0.0.1", server.tcp_port) as pub:
                pub.recv()
                assert publish(pub, CREATED, {"message": f"mesa {n}"})["type"] == "published"
        sink.wait_for(lambda got: len(got) >= 6, BOUND)
        # One outbox row per recipient in total, all handed over.
        assert pg_rows(pg_url, "SELECT count(*) FROM outbox") == [(6,)]
        # The worker takes jobs in order: once the marker's mails are in, a
        # duplicate hand-off of the earlier rows would have been mailed too.
        with LineClient("127.0.0.1", servers[2].tcp_port) as pub:
            pub.recv()
            assert publish(pub, DELETED, {"message": "marker"})["type"] == "published"
        got = sink.wait_for(
            lambda got: sum(DELETED in str(r.message["Subject"]) for r in got) == 2, BOUND
        )
        for address in PEOPLE:
            subjects = sorted(
                re.sub(r", offset=.*", "", str(r.message["Subject"]))
                for r in got
                if address in r.rcpt_tos
            )
            assert subjects == [
                "[furniture_created] message=mesa 0",
                "[furniture_created] message=mesa 1",
                "[furniture_created] message=mesa 2",
                "[furniture_deleted] message=marker",
            ], subjects
        assert len(got) == 8
