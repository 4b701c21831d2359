"""One typed configuration object, passed explicitly into every constructor.

Every limit lives here as a named setting with a default that is safe for a
public port; ``livenotify serve`` exposes each one as a flag and as a
``LIVENOTIFY_<NAME>`` environment variable (see :mod:`livenotify.cli`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

#: The catalog of the WebSocket seed document.
DEFAULT_EVENTS: tuple[str, ...] = ("furniture_created", "furniture_updated", "furniture_deleted")


class SlowPolicy(StrEnum):
    """What the hub does when a subscriber's queue is full."""

    #: Close the connection with reason / error code ``slow_consumer``.
    DISCONNECT = "disconnect"
    #: Keep the connection, drop the notification, and tell the client how
    #: many it missed once its queue has room again.
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Limits:
    """Protocol and resource limits; each one answered with an error code."""

    #: A TCP line or WebSocket text frame. 64 KiB fits any realistic
    #: notification while bounding what one client can make us buffer.
    max_message_bytes: int = 64 * 1024
    #: Nesting depth of a JSON object; deep nesting costs recursion, not data.
    max_json_depth: int = 32
    #: Event names in one subscribe/unsubscribe message.
    max_events_per_message: int = 100
    #: Subscriptions one connection may hold.
    max_subscriptions: int = 1000
    #: Length of an event name.
    max_event_name: int = 128
    #: RFC 5321 caps an address at 254 octets.
    max_email_length: int = 254
    #: Connections in total and from one IP address.
    max_connections: int = 20_000
    max_connections_per_ip: int = 2_000
    #: File descriptors kept free below the process limit (new in the front
    #: door): ``--max-connections`` is lowered to fit under the limit minus
    #: this, so storage, logs and refusing a connection with
    #: ``too_many_connections`` always have a descriptor.
    fd_reserve: int = 64
    #: HTTP on the front door (new): a request head (request line and
    #: headers) larger than this, or with more headers, is refused with 431
    #: (browsers and curl send well under 8 KiB); a kept-alive connection is
    #: closed after this many requests.
    max_http_head_bytes: int = 16 * 1024
    max_http_headers: int = 100
    max_requests_per_connection: int = 1000
    #: Token bucket per connection: sustained messages per second and burst.
    rate_per_second: float = 200.0
    rate_burst: int = 400


@dataclass(frozen=True, slots=True)
class Config:
    """Everything ``livenotify serve`` can be told."""

    host: str = "::"
    port: int = 8888
    ws_port: int = 8765
    db: str = "subscriptions.db"
    #: Where the embedded broker, the mail outbox (.eml files) and other
    #: runtime files live.
    data_dir: str = "livenotify-data"
    events: tuple[str, ...] = DEFAULT_EVENTS
    #: WebSocket: seconds between liveness pings; a ping unanswered for as
    #: long again closes the connection. TCP: the keepalive idle time.
    idle_timeout: float = 60.0
    #: Seconds a client has to finish the WebSocket opening handshake.
    handshake_timeout: float = 10.0
    #: Seconds a single write to a client may take before the connection is
    #: considered stuck and dropped.
    write_timeout: float = 10.0
    #: Per-subscriber queue of pending notifications.
    queue_size: int = 1024
    slow_policy: SlowPolicy = SlowPolicy.DISCONNECT
    #: Celery broker URL; ``None`` means the embedded filesystem broker.
    broker: str | None = None
    #: Start the e-mail worker ourselves when the broker is embedded.
    worker: bool = True
    publish_token: str | None = None
    #: Seconds ``exit``/SIGTERM waits for clients and storage to drain.
    grace_period: float = 5.0
    log_level: str = "INFO"
    limits: Limits = field(default_factory=Limits)
