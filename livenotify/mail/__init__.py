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
from .worker import EmbeddedWorker, worker_command, worker_environment

__all__ = [
    "EmbeddedWorker",
    "MailDispatcher",
    "MailService",
    "OutboxJob",
    "OutboxReader",
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
    return MailService(dispatcher, worker)
