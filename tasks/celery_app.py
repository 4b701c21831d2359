"""The Celery application, shared by the worker and the server's dispatcher.

The server only publishes (``send_task`` by name), the worker only consumes;
both build their app here so that broker, queue, serialisation and timeouts
cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery

from . import fsbroker

#: The one task: mail one notification to one recipient.
SEND_MAIL = "livenotify.send_mail"
#: Our own queue, so a Redis shared with other Celery apps never mixes tasks.
QUEUE = "livenotify-mail"
#: Seconds to establish a broker connection. Short: the dispatcher retries
#: with its own backoff, and a publish must not sit on a dead broker.
BROKER_CONNECT_TIMEOUT = 3.0
#: Seconds one Redis socket operation may take before the connection counts
#: as lost.
REDIS_SOCKET_TIMEOUT = 5.0
#: Seconds a Redis-delivered task may stay unacknowledged before Redis hands
#: it to another worker. It must exceed the longest retry countdown a
#: worker holds (``retry_max_delay``, 600 s) plus an SMTP conversation.
REDIS_VISIBILITY_TIMEOUT = 3600
#: Seconds between looks into the embedded broker's queue folder: the
#: latency of embedded mail, against a directory listing per look.
EMBEDDED_POLL_INTERVAL = 0.25
#: Seconds; Celery's default is 1.0. Waking 4 times a second costs nothing.
WORKER_TIMER_PRECISION = 0.25
#: One quick retry of a publish that failed on a stale pooled connection;
#: anything longer is the dispatcher's backoff, not a blocked publish.
PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0.0,
    "interval_step": 0.5,
    "interval_max": 0.5,
}


def embedded_broker_dir(data_dir: str | os.PathLike[str]) -> Path:
    """The embedded broker's folder: ``<data_dir>/broker``."""
    return Path(data_dir).absolute() / "broker"


#: kombu's Redis transport, surviving a Redis restart (:mod:`tasks.redisbroker`);
#: named, not imported, so that the server does not load kombu's Redis code.
REDIS_TRANSPORT = "tasks.redisbroker:Transport"


def is_redis(broker: str | None) -> bool:
    """True for ``redis://``, ``rediss://`` and ``redis+socket://`` URLs."""
    return broker is not None and broker.split("://", 1)[0] in (
        "redis",
        "rediss",
        "redis+socket",
    )


def broker_settings(broker: str | None, data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The Celery settings that depend on which broker we use."""
    if broker is None:
        options: dict[str, Any] = fsbroker.folders(embedded_broker_dir(data_dir))
        options["polling_interval"] = EMBEDDED_POLL_INTERVAL
        return {
            "broker_url": "filesystem://",
            "broker_transport": fsbroker.TRANSPORT,
            "broker_transport_options": options,
            # Remote control needs broadcast queues; nobody drives an
            # embedded worker remotely, so do not poll for them.
            "worker_enable_remote_control": False,
        }
    options = {}
    if is_redis(broker):
        options = {
            "socket_timeout": REDIS_SOCKET_TIMEOUT,
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT,
            "visibility_timeout": REDIS_VISIBILITY_TIMEOUT,
        }
    settings: dict[str, Any] = {"broker_url": broker, "broker_transport_options": options}
    if broker.split("://", 1)[0] == "redis":
        # Survives a Redis restart (see tasks.redisbroker). Not for
        # rediss:// (kombu derives TLS from the scheme name) nor sockets.
        settings["broker_transport"] = REDIS_TRANSPORT
    return settings


def describe_broker(broker: str | None, data_dir: str | os.PathLike[str]) -> str:
    """The broker for the start-up log line, its password masked.

    A worker started in another folder without ``LIVENOTIFY_BROKER`` uses
    another embedded broker; saying which one makes that visible.
    """
    if broker is None:
        return f"embedded in {embedded_broker_dir(data_dir)} (LIVENOTIFY_BROKER unset)"
    from livenotify.settings import mask_url

    return mask_url(broker)


def create_app(broker: str | None, data_dir: str | os.PathLike[str]) -> Celery:
    """A Celery app for ``broker`` (``None``: embedded under ``data_dir``)."""
    app = Celery("livenotify", set_as_current=False)
    app.conf.update(
        broker_settings(broker, data_dir),
        # JSON only: a pickle payload from anyone who can write to the
        # broker would be code execution in the worker.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_default_queue=QUEUE,
        # Acknowledge after the task ran, so a worker that dies mid-mail
        # leaves the message to be delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_timeout=BROKER_CONNECT_TIMEOUT,
        # The worker waits for the broker however long it is away.
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_publish_retry=True,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        # Longest sleep of the worker's timer thread: retry countdowns fire
        # within this, and a warm shutdown waits for it once.
        worker_timer_precision=WORKER_TIMER_PRECISION,
        worker_hijack_root_logger=True,
        enable_utc=True,
    )
    return app
