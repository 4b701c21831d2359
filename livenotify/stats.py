"""One snapshot of the server's counters.

The single source for the console's ``stats`` command (and, later,
``/metrics``): :func:`collect` reads the hub, storage and mail counters at one
moment into a frozen :class:`Snapshot`; :meth:`Snapshot.line` renders it as
the console's ``key=value`` line. Storage and mail are described by small
protocols, so this module imports neither (nor the hub, beyond its type).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["MailCounters", "Snapshot", "StorageCounters", "collect"]


class StorageCounters(Protocol):
    """What :func:`collect` reads from the storage bridge."""

    def stats(self) -> Mapping[str, int]: ...


class MailCounters(Protocol):
    """What :func:`collect` reads from the mail dispatcher."""

    @property
    def queued(self) -> int: ...
    @property
    def failed_attempts(self) -> int: ...
    @property
    def broker_down(self) -> bool: ...
    @property
    def capped(self) -> int: ...
    @property
    def confirmations_queued(self) -> int: ...
    @property
    def workers(self) -> int | None: ...


class OptInCounters(Protocol):
    """What :func:`collect` reads from the double opt-in state."""

    @property
    def refused(self) -> int: ...
    @property
    def confirmed(self) -> int: ...


@dataclass(frozen=True, slots=True)
class MailSnapshot:
    queued: int
    failed_handoffs: int
    broker_up: bool
    #: Notification mails over the per-recipient cap (not sent).
    capped: int = 0
    confirmations: int = 0
    #: Mail workers seen (None: not known yet).
    workers: int | None = None
    registrations_refused: int = 0
    confirmed: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The server's counters at one moment."""

    connections: int
    #: Open connections per transport kind ("tcp", "ws").
    connections_by_transport: Mapping[str, int]
    #: (connection, event) pairs: one per subscription.
    subscriptions: int
    connections_total: int
    messages_in: int
    messages_out: int
    published: int
    dropped: int
    #: Closed connections per disconnect reason (see :mod:`livenotify.reasons`).
    disconnects: Mapping[str, int]
    #: The storage bridge's counters; empty when storage is not running.
    storage: Mapping[str, int] = field(default_factory=dict)
    mail: MailSnapshot | None = None
    #: Messages refused with an error, and reads held back by the rate limit.
    refused: int = 0
    throttled: int = 0
    #: Connections refused at accept (``too_many_connections``).
    refused_connections: int = 0

    def line(self) -> str:
        """One line of counters, ``key=value`` separated by spaces."""
        parts: dict[str, object] = {
            "connections": self.connections,
            "subscribers": self.subscriptions,
            "connections_total": self.connections_total,
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
            "published": self.published,
            "dropped": self.dropped,
            "refused": self.refused,
            "throttled": self.throttled,
            "refused_connections": self.refused_connections,
        }
        parts.update({f"storage_{k}": v for k, v in self.storage.items()})
        if self.mail is not None:
            parts.update(
                {
                    "mail_queued": self.mail.queued,
                    "mail_failed_handoffs": self.mail.failed_handoffs,
                    "mail_broker": "up" if self.mail.broker_up else "down",
                    "mail_workers": "?" if self.mail.workers is None else self.mail.workers,
                    "mail_capped": self.mail.capped,
                    "mail_confirmations": self.mail.confirmations,
                    "registrations_refused": self.mail.registrations_refused,
                    "confirmed": self.mail.confirmed,
                }
            )
        by_transport = ",".join(
            f"{k}:{v}" for k, v in sorted(self.connections_by_transport.items())
        )
        disconnects = ",".join(f"{k}:{v}" for k, v in sorted(self.disconnects.items()))
        return (
            " ".join(f"{k}={v}" for k, v in parts.items())
            + f" transports={by_transport or '-'} disconnects={disconnects or '-'}"
        )


def collect(
    hub: Hub,
    storage: StorageCounters | None = None,
    mail: MailCounters | None = None,
    optin: OptInCounters | None = None,
) -> Snapshot:
    """Read every counter now."""
    stats = hub.stats
    by_transport = Counter(sub.transport for sub in hub.connections.values())
    return Snapshot(
        connections=len(hub.connections),
        connections_by_transport=dict(by_transport),
        subscriptions=hub.subscription_count,
        connections_total=stats.connections_total,
        messages_in=stats.messages_in,
        messages_out=stats.messages_out,
        published=stats.published,
        dropped=stats.dropped,
        disconnects=dict(stats.disconnects),
        storage=dict(storage.stats()) if storage is not None else {},
        mail=(
            MailSnapshot(
                mail.queued,
                mail.failed_attempts,
                not mail.broker_down,
                mail.capped,
                mail.confirmations_queued,
                mail.workers,
                optin.refused if optin is not None else 0,
                optin.confirmed if optin is not None else 0,
            )
            if mail is not None
            else None
        ),
        refused=stats.refused,
        throttled=stats.throttled,
        refused_connections=stats.refused_connections,
    )
