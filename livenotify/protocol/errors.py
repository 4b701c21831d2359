"""Error codes and the protocol's error tree.

::

    ProtocolError            the peer sent something we will not accept;
                             ``.code`` is stable snake_case, ``.reply()``
                             is the :class:`Error` message to send back
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Stable error codes. Clients match on these, so they never change meaning.
INVALID_JSON: Final = "invalid_json"
INVALID_MESSAGE: Final = "invalid_message"
UNKNOWN_TYPE: Final = "unknown_type"
UNKNOWN_COMMAND: Final = "unknown_command"
UNKNOWN_EVENT: Final = "unknown_event"
INVALID_EVENT: Final = "invalid_event"
INVALID_EMAIL: Final = "invalid_email"
MESSAGE_TOO_LARGE: Final = "message_too_large"
JSON_TOO_DEEP: Final = "json_too_deep"
TOO_MANY_EVENTS: Final = "too_many_events"
TOO_MANY_SUBSCRIPTIONS: Final = "too_many_subscriptions"
INVALID_UTF8: Final = "invalid_utf8"
NUL_BYTE: Final = "nul_byte"
BINARY_FRAME: Final = "binary_frame"
FORBIDDEN: Final = "forbidden"
RATE_LIMITED: Final = "rate_limited"
SLOW_CONSUMER: Final = "slow_consumer"
STORAGE_BUSY: Final = "storage_busy"
TOO_MANY_CONNECTIONS: Final = "too_many_connections"
IDLE_TIMEOUT: Final = "idle_timeout"
SHUTTING_DOWN: Final = "shutting_down"
#: ``confirm`` with a code that is unknown or expired (double opt-in).
INVALID_CODE: Final = "invalid_code"
#: ``register`` past the per-connection or per-address registration limit.
TOO_MANY_REGISTRATIONS: Final = "too_many_registrations"
#: The connection's token expired (close reason; refresh with ``auth`` before).
TOKEN_EXPIRED: Final = "token_expired"
#: Plain text on a port that speaks TLS.
TLS_REQUIRED: Final = "tls_required"
#: The notification log cannot take a publish now (storage backlog full).
BUSY: Final = "busy"
#: The shared log (Redis) cannot be reached: the publish is refused.
BACKEND_UNAVAILABLE: Final = "backend_unavailable"
#: A malformed ``since`` (position, duration, timestamp or ``all``).
INVALID_POSITION: Final = "invalid_position"

#: Every code the server may put in an error reply or close reason.
ERROR_CODES: Final = frozenset(
    {
        INVALID_JSON, INVALID_MESSAGE, UNKNOWN_TYPE, UNKNOWN_COMMAND, UNKNOWN_EVENT,
        INVALID_EVENT, INVALID_EMAIL, MESSAGE_TOO_LARGE, JSON_TOO_DEEP, TOO_MANY_EVENTS,
        TOO_MANY_SUBSCRIPTIONS, INVALID_UTF8, NUL_BYTE, BINARY_FRAME, FORBIDDEN,
        RATE_LIMITED, SLOW_CONSUMER, STORAGE_BUSY, TOO_MANY_CONNECTIONS, IDLE_TIMEOUT,
        SHUTTING_DOWN, INVALID_CODE, TOO_MANY_REGISTRATIONS, TOKEN_EXPIRED, TLS_REQUIRED,
        BUSY, BACKEND_UNAVAILABLE, INVALID_POSITION,
    }
)  # fmt: skip

# An event name is a short identifier: letters, digits and ``_ . : -``. That


class ProtocolError(Exception):
    """The peer sent something we will not accept.

    ``code`` is one of :data:`ERROR_CODES`; ``message`` is for humans.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def reply(self) -> Error:
        """The error message to send back to the peer."""
        return Error(self.code, self.message)


@dataclass(frozen=True, slots=True)
class Error:
    """``{"type":"error","code":...,"message":...}``: the reply to bad input."""

    code: str
    message: str
