"""kombu's Redis transport, made to survive a Redis restart (issue 13.8).

When the worker's broker connection breaks, kombu closes the channel and
hands the unacknowledged (``acks_late``) messages back to Redis; a message
that finishes later is acknowledged through the same closed channel. Both
go through :meth:`Channel.conn_or_acquire`, which on a closed transport
fails with ``AttributeError: 'NoneType' object has no attribute
'hostname'``. Celery does not count that as a connection error, so the
worker stops with "Unrecoverable error".

Here a closed transport raises :class:`redis.exceptions.ConnectionError`
instead: Celery logs it and reconnects, and the messages stay in Redis's
unacknowledged set, from which Redis hands them out again after the
visibility timeout (the idempotency key keeps them from mailing anyone
twice). Used for ``redis://`` brokers; see :func:`tasks.celery_app.broker_settings`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    """A Redis channel whose closed transport is a connection error."""

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client is None and self.connection.client is None:
            raise RedisConnectionError("the broker connection is closed")
        with super().conn_or_acquire(client) as conn:
            yield conn


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
