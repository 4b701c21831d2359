"""Every setting of ``livenotify serve``, declared once.

Each field of :class:`Config` (and of the nested :class:`Limits`) is one
setting. Its declaration is all there is: :mod:`livenotify.settings` derives
from it the command-line flag, the ``LIVENOTIFY_<NAME>`` environment
variable, the key of the ``--config`` TOML file, the parser, the range
check, ``--help`` and ``--print-config``.

Adding a setting is one field declaration::

    #: Notifications kept per event for replay.
    history_size: int = setting(1000, "notifications kept per event", lo=0)

which gives ``--history-size``, ``LIVENOTIFY_HISTORY_SIZE`` and
``history_size = ...`` in the file. The type comes from the annotation
(``int``, ``float``, ``str``, ``str | None``, ``bool``, ``tuple[str, ...]``
or a ``StrEnum``); a numeric setting must give its range (``lo``/``hi``,
inclusive). Optional: ``flag=`` when the flag is not the field name,
``choices=``, ``check=`` (a function that returns the normalised value or
raises ``ValueError`` with a reason), ``invert=True`` for a ``--no-x``
switch that sets the field to False, ``secret=True`` to mask the value in
``--print-config``. A field declared with ``field(metadata={"setting":
False})`` is not a setting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

#: The catalog of the WebSocket seed document.
DEFAULT_EVENTS: tuple[str, ...] = ("furniture_created", "furniture_updated", "furniture_deleted")

#: Highest TCP port; 0 asks the system for a free one.
MAX_PORT = 65535
#: Longest timeout we accept, in seconds (one day): anything longer is a typo.
MAX_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class Setting:
    """How one field is exposed; see the module docstring."""

    help: str
    flag: str | None = None
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], Any] | None = None
    invert: bool = False
    secret: bool = False


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] | None = None,
    check: Callable[[Any], Any] | None = None,
    invert: bool = False,
    secret: bool = False,
) -> Any:
    """A dataclass field that is a setting (see the module docstring)."""
    meta = Setting(help, flag, lo, hi, choices, check, invert, secret)
    return field(default=default, metadata={"setting": meta})


def _catalog(names: tuple[str, ...]) -> tuple[str, ...]:
    # Imported here: protocol imports this module for Limits.
    from .protocol import ProtocolError, check_catalog_name

    if not names:
        raise ValueError("empty event list")
    for name in names:
        try:
            check_catalog_name(name, Limits())
        except ProtocolError as exc:
            raise ValueError(exc.message) from None
    return names


def _host(text: str) -> str:
    if not text.strip():
        raise ValueError("empty host")
    return text.strip()


def _pem_file(marker: str) -> Callable[[str], str]:
    """A check: ``path`` is a readable file holding a PEM ``marker`` block."""

    def check(path: str) -> str:
        try:
            with open(path, "rb") as fh:
                head = fh.read(1 << 20)
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror or exc}") from None
        if b"-----BEGIN " not in head or marker.encode() not in head:
            raise ValueError(f"{path}: not a PEM file with a {marker}")
        return path

    return check


def _secret(text: str) -> str:
    if not text.strip():
        raise ValueError("empty secret")
    return text


def load_public_key(path: str) -> tuple[Any, str]:
    """The key in PEM file ``path`` and its algorithm (RS256 or ES256);
    ``ValueError`` with a reason otherwise."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ValueError("not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key, "ES256"
    raise ValueError("only RSA (RS256) and EC (ES256) keys are supported")


def _public_key(path: str) -> str:
    try:
        load_public_key(path)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return path


def _event_names(names: tuple[str, ...]) -> tuple[str, ...]:
    from .protocol import ProtocolError, check_catalog_name

    for name in names:
        try:
            check_catalog_name(name, Limits())
        except ProtocolError as exc:
            raise ValueError(exc.message) from None
    return names


#: URL schemes redis-py opens (``--backend``).
BACKEND_SCHEMES: tuple[str, ...] = ("redis", "rediss", "unix")


def _backend(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    scheme, sep, rest = text.strip().partition("://")
    if not sep or scheme.lower() not in BACKEND_SCHEMES or not rest:
        raise ValueError("expected redis://host:port/db (or rediss://, unix://)")
    return text.strip()


def _prefix(text: str) -> str:
    if not text or len(text) > 64 or not all(c.isalnum() or c in "-_.:" for c in text):
        raise ValueError("1-64 letters, digits or - _ . :")
    return text


class SlowPolicy(StrEnum):
    """What the hub does when a subscriber's queue is full."""

    #: Close the connection with reason / error code ``slow_consumer``.
    DISCONNECT = "disconnect"
    #: Keep the connection, drop the notification, and tell the client how
    #: many it missed once its queue has room again.
    DROP = "drop"


class LogFormat(StrEnum):
    """How log lines are written to stderr."""

    #: ``time LEVEL logger: message``.
    TEXT = "text"
    #: One JSON object per line (see :mod:`livenotify.logs`).
    JSON = "json"


@dataclass(frozen=True, slots=True)
class Limits:
    """Protocol and resource limits; each one answered with an error code."""

    #: A TCP line or WebSocket text frame. 64 KiB fits any realistic
    #: notification while bounding what one client can make us buffer.
    max_message_bytes: int = setting(64 * 1024, "largest line or frame", lo=256, hi=16 << 20)
    #: Nesting depth of a JSON object; deep nesting costs recursion, not data.
    max_json_depth: int = setting(32, "deepest JSON nesting", lo=2, hi=256)
    #: Event names in one subscribe/unsubscribe message.
    max_events_per_message: int = setting(100, "events in one message", lo=1, hi=100_000)
    #: Subscriptions one connection may hold.
    max_subscriptions: int = setting(1000, "subscriptions per connection", lo=1, hi=1_000_000)
    #: Length of an event name.
    max_event_name: int = setting(128, "longest event name", lo=1, hi=1024)
    #: RFC 5321 caps an address at 254 octets.
    max_email_length: int = setting(254, "longest e-mail address", lo=6, hi=254)
    #: Connections in total and from one IP address.
    max_connections: int = setting(20_000, "connections in total", lo=1, hi=10_000_000)
    max_connections_per_ip: int = setting(
        2_000, "connections per IP (an IPv6 /64 counts as one)", lo=1, hi=10_000_000
    )
    #: Bytes one connection's outgoing queue may hold (notifications and
    #: replies, framed), beside ``queue_size`` items: a queue of large replies
    #: pins memory long before it holds many. 4 MiB keeps a connection that
    #: never reads at a few MiB; past it the slow-consumer policy applies.
    max_queue_bytes: int = setting(4 << 20, "bytes queued per connection", lo=4096, hi=1 << 30)
    #: File descriptors kept free below the process limit:
    #: ``--max-connections`` is lowered to fit under the limit minus this, so
    #: storage, logs and refusing a connection with ``too_many_connections``
    #: always have a descriptor.
    fd_reserve: int = setting(64, "file descriptors kept free below the limit", lo=16, hi=65536)
    #: HTTP on the front door: a request head (request line and headers)
    #: larger than this, or with more headers, is refused with 431 (browsers
    #: and curl send well under 8 KiB); a kept-alive connection is closed
    #: after this many requests.
    max_http_head_bytes: int = setting(
        16 * 1024, "largest HTTP request head in bytes", lo=1024, hi=1 << 20
    )
    max_http_headers: int = setting(100, "most headers in one HTTP request", lo=8, hi=10_000)
    max_requests_per_connection: int = setting(
        1000, "HTTP requests on one kept-alive connection", lo=1, hi=10_000_000
    )
    #: Token bucket per connection: sustained messages per second and burst.
    rate_per_second: float = setting(
        200.0, "messages/s per connection (0: off)", flag="--rate-limit", lo=0, hi=1e9
    )
    rate_burst: int = setting(400, "burst allowance of the rate limit", lo=1, hi=1_000_000_000)
    #: Distinct e-mail addresses one connection may register (double opt-in:
    #: each can cost a confirmation mail); past it ``too_many_registrations``.
    max_registrations: int = setting(
        3, "distinct e-mail addresses registered per connection", lo=1, hi=1_000_000
    )
    #: Distinct addresses registered from one client IP (IPv6: its /64) per
    #: hour, over all its connections.
    max_registrations_per_ip: int = setting(
        20, "distinct e-mail addresses registered per client IP per hour", lo=1, hi=1_000_000
    )


@dataclass(frozen=True, slots=True)
class Config:
    """Everything ``livenotify serve`` can be told."""

    host: str = setting("::", "address to listen on; '::' is dual-stack IPv6+IPv4", check=_host)
    port: int = setting(8888, "TCP port", lo=0, hi=MAX_PORT)
    ws_port: int = setting(8765, "WebSocket port", lo=0, hi=MAX_PORT)
    db: str = setting(
        "subscriptions.db", "SQLite file, or a postgresql:// URL, for subscriptions and history"
    )
    #: Where the embedded broker, the mail outbox (.eml files) and other
    #: runtime files live.
    data_dir: str = setting("livenotify-data", "folder for the embedded broker and the mail outbox")
    events: tuple[str, ...] = setting(
        DEFAULT_EVENTS, "comma-separated event catalog", check=_catalog
    )
    #: WebSocket: seconds between liveness pings; a ping unanswered for as
    #: long again closes the connection. TCP: the keepalive idle time.
    idle_timeout: float = setting(60.0, "seconds between liveness probes", lo=0.1, hi=MAX_SECONDS)
    #: A TCP connection that has no subscription and sends nothing for this
    #: long is closed (``idle_timeout``): it holds a descriptor and a slot
    #: for nothing. Subscribers may stay silent for ever. 0: never.
    tcp_idle_timeout: float = setting(
        300.0, "seconds a TCP connection with no subscription may stay silent (0: for ever)",
        lo=0, hi=MAX_SECONDS,
    )  # fmt: skip
    #: Seconds a client has to finish the WebSocket opening handshake.
    handshake_timeout: float = setting(
        10.0, "WebSocket handshake deadline in seconds", lo=0.1, hi=3600
    )
    #: Seconds a single write to a client may take before the connection is
    #: considered stuck and dropped.
    write_timeout: float = setting(10.0, "seconds a write to a client may take", lo=0.1, hi=3600)
    #: Per-subscriber queue of pending notifications.
    queue_size: int = setting(1024, "notifications queued per subscriber", lo=1, hi=10_000_000)
    slow_policy: SlowPolicy = setting(SlowPolicy.DISCONNECT, "full queue: disconnect or drop")
    #: Celery broker URL; ``None`` means the embedded filesystem broker.
    broker: str | None = setting(
        None, "Celery broker URL (embedded filesystem broker if unset)", secret=True
    )
    #: Start the e-mail worker ourselves when the broker is embedded.
    worker: bool = setting(
        True,
        "do not start the e-mail worker for the embedded broker",
        flag="--no-worker",
        invert=True,
    )
    publish_token: str | None = setting(None, "token required to publish", secret=True)
    #: TLS on both listeners (TCP port, and https:// / wss:// on the front
    #: door); both files are PEM, checked at start-up.
    tls_cert: str | None = setting(
        None, "PEM certificate (chain): both ports speak TLS", check=_pem_file("CERTIFICATE")
    )
    tls_key: str | None = setting(
        None, "PEM private key of --tls-cert (unencrypted)", check=_pem_file("PRIVATE KEY")
    )
    #: JWT access (see livenotify.access): a shared secret (HS256) or the
    #: public key of whoever signs the tokens (RS256 or ES256).
    jwt_secret: str | None = setting(
        None, "accept JWTs signed with this HS256 secret", check=_secret, secret=True
    )
    jwt_public_key: str | None = setting(
        None, "accept JWTs signed by this PEM public key's owner (RS256/ES256)", check=_public_key
    )
    #: Events only a token's ``subscribe`` claim opens (also through ``*``).
    private_events: tuple[str, ...] = setting(
        (), "comma-separated events that need a token to subscribe", check=_event_names
    )
    #: Seconds ``exit``/SIGTERM waits for clients and storage to drain.
    grace_period: float = setting(5.0, "seconds to drain on shutdown", lo=0, hi=3600)
    log_level: str = setting(
        "INFO", "least severe level logged", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    log_format: LogFormat = setting(LogFormat.TEXT, "text, or json: one object per line")
    #: Seconds a reply that claims a stored write (``registered``,
    #: ``subscribed``) or a storage read waits for the writer before the
    #: client gets ``storage_busy``.
    storage_timeout: float = setting(
        5.0, "seconds to wait for a storage commit before storage_busy", lo=0.1, hi=3600
    )
    #: Notifications kept as history (and in memory for replay); 0 keeps all.
    history_size: int = setting(
        100_000, "notifications kept as history (0: no limit)", lo=0, hi=1_000_000_000
    )
    #: Seconds a notification stays in history; 0 keeps them for ever.
    history_ttl: float = setting(
        24 * 3600.0, "seconds a notification stays in history (0: for ever)", lo=0, hi=1e9
    )
    #: Seconds an outbox row handed to the mail broker is kept; 0 keeps them.
    outbox_retention: float = setting(
        3600.0, "seconds a sent mail job's row is kept (0: for ever)", lo=0, hi=1e9
    )
    #: Double opt-in: a registered address gets notification mails only
    #: once its owner answered the confirmation mail. ``--no-confirm`` (a
    #: closed deployment) confirms every address at ``register``.
    confirm: bool = setting(
        True,
        "confirm addresses at register: no confirmation mail (closed deployments)",
        flag="--no-confirm",
        invert=True,
    )
    #: Seconds a confirmation code stays valid.
    confirm_ttl: float = setting(
        86_400.0, "seconds a confirmation code stays valid", lo=60, hi=30 * 86_400
    )
    #: Seconds before ``register`` may mail the same address's code again.
    confirm_resend: float = setting(
        600.0, "seconds before a confirmation mail may be sent again", lo=0, hi=MAX_SECONDS
    )
    #: The confirmation link's base (``<url>/confirm?code=...``); unset:
    #: ``http://<host>:<ws-port>`` (``localhost`` for a wildcard host).
    public_url: str | None = setting(None, "base URL of confirmation links")
    #: Notification mails per recipient: a burst, then this many per hour
    #: (ntfy's rule); mails over it are not sent.
    mail_burst: int = setting(16, "notification mails per recipient in a burst", lo=1, hi=1_000_000)
    mail_per_hour: float = setting(
        1.0, "notification mails per recipient per hour after the burst", lo=0, hi=1e6
    )
    #: Seconds between asking the broker which mail workers are there.
    mail_worker_check: float = setting(
        15.0, "seconds between checks that a mail worker is connected", lo=0.5, hi=3600
    )
    #: The shared log of several processes (``redis://host:6379/0``); unset:
    #: this process alone, over the embedded log.
    backend: str | None = setting(
        None, "redis:// URL: run as one of several processes sharing it", check=_backend,
        secret=True,
    )  # fmt: skip
    #: Prefix of every Redis key of the backend (several deployments, one Redis).
    backend_prefix: str = setting("livenotify", "prefix of the backend's Redis keys", check=_prefix)
    #: SO_REUSEPORT on the listening sockets: processes on one machine share ports.
    reuse_port: bool = setting(False, "share the ports with other processes (SO_REUSEPORT)")
    limits: Limits = field(default_factory=Limits)
