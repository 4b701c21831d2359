"""E-mail on the server side: the outbox hand-off and the embedded worker.

:class:`~.dispatcher.MailDispatcher` hands pending outbox rows to the Celery
broker; :class:`~.worker.EmbeddedWorker` runs the worker of the embedded
broker. :func:`start_mail` starts what a configuration needs in the
server's nursery.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from ..config import Config
from .dispatcher import MailDispatcher, OutboxJob, OutboxReader, describe_broker, job_message
from .presence import WorkerPresence
from .worker import EmbeddedWorker, worker_command, worker_environment

__all__ = [
    "EmbeddedWorker",
    "MailDispatcher",
    "MailService",
    "OutboxJob",
    "OutboxReader",
    "WorkerPresence",
    "describe_broker",
    "job_message",
    "start_mail",
    "worker_command",
    "worker_environment",
]

log = logging.getLogger("livenotify.mail")


@dataclass(slots=True)
class MailService:
    """The running e-mail side of a server."""

    dispatcher: MailDispatcher
    worker: EmbeddedWorker | None
    presence: WorkerPresence

    # What stats.collect reads (its MailCounters protocol).
    @property
    def queued(self) -> int:
        """Notification mails handed to the broker since start."""
        return self.dispatcher.queued

    @property
    def failed_attempts(self) -> int:
        """Hand-off rounds the broker did not (fully) accept."""
        return self.dispatcher.failed_attempts

    @property
    def broker_down(self) -> bool:
        """True while the broker is unreachable."""
        return self.dispatcher.broker_down

    @property
    def capped(self) -> int:
        """Notification mails not sent: over the per-recipient cap."""
        return self.dispatcher.capped

    @property
    def confirmations_queued(self) -> int:
        """Confirmation mails handed to the broker since start."""
        return self.dispatcher.confirmations_queued

    @property
    def workers(self) -> int | None:
        """Mail workers seen at the last look (None: not looked yet)."""
        return self.presence.workers

    def ready(self) -> dict[str, object]:
        """For a readiness check (``/ready``): mail is ready when the broker
        takes jobs and at least one worker consumes them."""
        workers = self.presence.workers
        return {
            "ready": not self.broker_down and bool(workers),
            "broker": "down" if self.broker_down else "up",
            "workers": workers,
        }

    def stop(self) -> None:
        """Stop handing over mail; call before closing storage."""
        self.dispatcher.stop()


async def start_mail(nursery: trio.Nursery, config: Config, storage: OutboxReader) -> MailService:
    """Start the dispatcher (and, for the embedded broker, the worker) in ``nursery``."""
    dispatcher = MailDispatcher(config, storage)
    await nursery.start(dispatcher.run)
    worker: EmbeddedWorker | None = None
    if config.broker is None and config.worker:
        worker = EmbeddedWorker(config)
        await nursery.start(worker.run)
    elif config.broker is None:
        log.info("mail: embedded broker without a worker (--no-worker); mail waits in the broker")
    embedded = worker
    presence = WorkerPresence(
        config, (lambda: embedded.pid is not None) if embedded is not None else None
    )
    await nursery.start(presence.run)
    return MailService(dispatcher, worker, presence)
