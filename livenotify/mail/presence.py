"""Whether a Celery worker is there to send the mail the server hands over.

With Redis (or any broker with remote control) a thread asks every
``--mail-worker-check`` seconds which workers consume the ``livenotify-mail``
queue (Celery's ``inspect().active_queues()``, one second to answer). With
the embedded broker remote control is off, so the embedded worker process
being alive is the answer (with ``--no-worker`` it stays 0 and unlogged:
start-up said mail waits in the broker). The first time none is there the server logs one
WARNING (``no mail worker is connected to ...; mail waits``), and one INFO
when one is back. ``stats`` shows ``mail_workers=N``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ..config import Config
from .dispatcher import describe_broker

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("livenotify.mail")

#: Seconds a worker has to answer the inspect broadcast.
INSPECT_TIMEOUT = 1.0
#: Seconds between looks at the embedded worker process (cheap: no I/O).
EMBEDDED_INTERVAL = 1.0


def count_workers(app: Celery) -> int:
    """Workers consuming our queue, by broadcast (blocking: a thread only)."""
    from tasks.celery_app import QUEUE

    replies: Any = app.control.inspect(timeout=INSPECT_TIMEOUT).active_queues() or {}
    return sum(
        1
        for queues in replies.values()
        if any(isinstance(q, dict) and q.get("name") == QUEUE for q in queues or ())
    )


class WorkerPresence:
    """Counts the mail workers; :attr:`workers` is None until first known."""

    def __init__(self, config: Config, embedded_alive: Callable[[], bool] | None = None) -> None:
        self.config = config
        self._embedded_alive = embedded_alive
        self.workers: int | None = None
        #: Why the last look failed (broker unreachable), if it did.
        self.error: str | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Look until cancelled."""
        task_status.started()
        if self.config.broker is None and self._embedded_alive is None:
            # --no-worker: start_mail said so already; a worker started by
            # hand on the embedded broker cannot be seen from here.
            self.workers = 0
            return
        if self.config.broker is None:
            while True:
                alive = self._embedded_alive is not None and self._embedded_alive()
                self._update(1 if alive else 0)
                await trio.sleep(EMBEDDED_INTERVAL)
        from tasks.celery_app import create_app

        app = await trio.to_thread.run_sync(create_app, self.config.broker, self.config.data_dir)
        try:
            while True:
                try:
                    count = await trio.to_thread.run_sync(
                        partial(count_workers, app), abandon_on_cancel=True
                    )
                    self.error = None
                except Exception as exc:  # broker unreachable: the dispatcher says so
                    self.error = f"{type(exc).__name__}: {exc}"
                    log.debug("mail: cannot ask for workers: %s", self.error)
                    count = 0
                self._update(count)
                await trio.sleep(self.config.mail_worker_check)
        finally:
            app.close()

    def _update(self, count: int) -> None:
        before, self.workers = self.workers, count
        broker = describe_broker(self.config.broker)
        if count == 0 and before != 0:
            log.warning("no mail worker is connected to %s; mail waits", broker)
        elif count > 0 and not before:
            log.info("mail worker(s) connected to %s: %d", broker, count)
