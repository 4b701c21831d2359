"""The livenotify wire protocol, sans-IO.

Text in, typed messages out; typed messages in, text out. Nothing here knows
about sockets, Trio or time beyond formatting a timestamp: that is what lets
``fuzz/`` hammer it directly.

- :mod:`.errors`: the stable error codes, :class:`ProtocolError` (the peer
  sent something we will not accept; ``.reply()`` is the :class:`Error` to
  send back).
- :mod:`.jsontext`: bounded JSON loading.
- :mod:`.client`: client messages, :func:`decode_client` (one JSON object)
  and :func:`decode_command` (a human TCP command line).
- :mod:`.server`: server messages, :func:`encode_server` and
  :func:`decode_server` (used by the terminal client and the tests),
  :func:`notification`, :func:`timestamp`.
- :mod:`.lines`: :class:`LineDecoder` splits a TCP byte stream into bounded
  UTF-8 lines.
- :mod:`.positions`: log positions ``E:N`` and the ``since`` forms
  (durations, RFC 3339, ``all``); :class:`InvalidPosition` is
  ``invalid_position``.
"""

from __future__ import annotations

from .client import (
    ALL_EVENTS,
    COMMAND_USAGE,
    RESERVED_TYPES,
    ClientMessage,
    EventsRequest,
    Exit,
    HelpRequest,
    Ping,
    Pong,
    Publish,
    Register,
    SeedEvent,
    Subscribe,
    SubscriptionsRequest,
    Unsubscribe,
    check_catalog_name,
    check_email,
    check_event_name,
    check_since,
    decode_client,
    decode_command,
)
from .errors import (
    BACKEND_UNAVAILABLE,
    BINARY_FRAME,
    BUSY,
    ERROR_CODES,
    FORBIDDEN,
    IDLE_TIMEOUT,
    INVALID_EMAIL,
    INVALID_EVENT,
    INVALID_JSON,
    INVALID_MESSAGE,
    INVALID_POSITION,
    INVALID_UTF8,
    JSON_TOO_DEEP,
    MESSAGE_TOO_LARGE,
    NUL_BYTE,
    RATE_LIMITED,
    SHUTTING_DOWN,
    SLOW_CONSUMER,
    STORAGE_BUSY,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_EVENTS,
    TOO_MANY_SUBSCRIPTIONS,
    UNKNOWN_COMMAND,
    UNKNOWN_EVENT,
    UNKNOWN_TYPE,
    Error,
    ProtocolError,
)
from .jsontext import (
    load_object,
)
from .lines import (
    Line,
    LineDecoder,
)
from .server import (
    Dropped,
    EventsList,
    Goodbye,
    HelpReply,
    Notification,
    PongReply,
    Published,
    Recovery,
    Registered,
    ServerMessage,
    ServerPing,
    Subscribed,
    Subscriptions,
    Unsubscribed,
    Welcome,
    decode_server,
    encode,
    encode_server,
    notification,
    timestamp,
)

__all__ = [
    "ALL_EVENTS",
    "BACKEND_UNAVAILABLE",
    "BINARY_FRAME",
    "BUSY",
    "COMMAND_USAGE",
    "ERROR_CODES",
    "FORBIDDEN",
    "IDLE_TIMEOUT",
    "INVALID_EMAIL",
    "INVALID_EVENT",
    "INVALID_JSON",
    "INVALID_MESSAGE",
    "INVALID_POSITION",
    "INVALID_UTF8",
    "JSON_TOO_DEEP",
    "MESSAGE_TOO_LARGE",
    "NUL_BYTE",
    "RATE_LIMITED",
    "RESERVED_TYPES",
    "SHUTTING_DOWN",
    "SLOW_CONSUMER",
    "STORAGE_BUSY",
    "TOO_MANY_CONNECTIONS",
    "TOO_MANY_EVENTS",
    "TOO_MANY_SUBSCRIPTIONS",
    "UNKNOWN_COMMAND",
    "UNKNOWN_EVENT",
    "UNKNOWN_TYPE",
    "ClientMessage",
    "Dropped",
    "Error",
    "EventsList",
    "EventsRequest",
    "Exit",
    "Goodbye",
    "HelpReply",
    "HelpRequest",
    "Line",
    "LineDecoder",
    "Notification",
    "Ping",
    "Pong",
    "PongReply",
    "ProtocolError",
    "Publish",
    "Published",
    "Recovery",
    "Register",
    "Registered",
    "SeedEvent",
    "ServerMessage",
    "ServerPing",
    "Subscribe",
    "Subscribed",
    "Subscriptions",
    "SubscriptionsRequest",
    "Unsubscribe",
    "Unsubscribed",
    "Welcome",
    "check_catalog_name",
    "check_email",
    "check_event_name",
    "check_since",
    "decode_client",
    "decode_command",
    "decode_server",
    "encode",
    "encode_server",
    "load_object",
    "notification",
    "timestamp",
]
