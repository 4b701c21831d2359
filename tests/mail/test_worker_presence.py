"""The server sees whether a mail worker consumes its Redis queue (issues
12.7 and 13.8): a real server on Redis, a real ``celery -A tasks worker``
started and stopped beside it."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import running_server
from tests.mail.test_mail_e2e import worker_env
from tests.mailtools import MAIL_REDIS_URL, celery_worker, flush_redis_db, smtp_sink

NO_WORKER = (
    r"WARNING livenotify.mail: no mail worker is connected to "
    + re.escape(MAIL_REDIS_URL)
    + "; mail waits"
)


def test_stats_and_log_follow_the_worker(tmp_path: Path) -> None:
    flush_redis_db()
    try:
        with (
            smtp_sink() as sink,
            running_server(
                "--broker", MAIL_REDIS_URL, "--mail-worker-check", "1",
                data_dir=str(tmp_path / "server"),
            ) as server,
        ):  # fmt: skip
            server.wait_log(NO_WORKER, timeout=20)
            assert server.command("stats", r"mail_workers=(\d+)").group(1) == "0"
            mark = server.mark()
            with celery_worker(worker_env(MAIL_REDIS_URL, sink, tmp_path / "worker")):
                server.wait_log(
                    r"INFO livenotify.mail: mail worker\(s\) connected to .*: 1$",
                    timeout=20,
                    start=mark,
                )
                assert server.command("stats", r"mail_workers=(\d+)").group(1) == "1"
                # Said once, not on every check.
                assert server.log.count(r"no mail worker is connected", mark) == 0
                mark = server.mark()
            # The worker went away: the server says so once.
            server.wait_log(NO_WORKER, timeout=20, start=mark)
            assert server.command("stats", r"mail_workers=(\d+)").group(1) == "0"
            assert server.log.count(r"no mail worker is connected", mark) == 1
    finally:
        flush_redis_db()
