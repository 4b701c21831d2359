"""Why a connection ended: one table for every reason.

Each reason is the code that logs, the console's ``disconnects`` counters,
the TCP error line and the WebSocket close frame carry; the table gives its
WebSocket close code (RFC 6455 section 7.4.1), the text a peer is told, and
whether the disconnect is ordinary (logged at INFO, no error line on TCP)
rather than a failure worth a WARNING.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from . import protocol

__all__ = [
    "EOF",
    "EXIT",
    "IDLE_TIMEOUT",
    "REASONS",
    "SHUTTING_DOWN",
    "SLOW_CONSUMER",
    "TOKEN_EXPIRED",
    "TOO_MANY_CONNECTIONS",
    "WRITE_TIMEOUT",
    "Reason",
    "lookup",
]

#: The peer closed the connection (or vanished).
EOF: Final = "eof"
#: The client asked to leave (``exit``).
EXIT: Final = "exit"
#: A write did not complete within ``--write-timeout``.
WRITE_TIMEOUT: Final = "write_timeout"
# Reasons that are also protocol error codes keep the protocol's spelling.
SHUTTING_DOWN: Final = protocol.SHUTTING_DOWN
IDLE_TIMEOUT: Final = protocol.IDLE_TIMEOUT
SLOW_CONSUMER: Final = protocol.SLOW_CONSUMER
TOO_MANY_CONNECTIONS: Final = protocol.TOO_MANY_CONNECTIONS
MESSAGE_TOO_LARGE: Final = protocol.MESSAGE_TOO_LARGE
INVALID_UTF8: Final = protocol.INVALID_UTF8
TOKEN_EXPIRED: Final = protocol.TOKEN_EXPIRED

# Close codes of RFC 6455 section 7.4.1.
_NORMAL, _GOING_AWAY, _INVALID_DATA, _POLICY, _TOO_BIG, _TRY_AGAIN_LATER = (
    1000, 1001, 1007, 1008, 1009, 1013,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Reason:
    """One way a connection ends."""

    code: str
    #: The WebSocket close code sent with it.
    close_code: int
    #: What the peer is told (the TCP error line's message).
    text: str
    #: An ordinary end: logged at INFO, and TCP closes without an error line.
    quiet: bool


#: Every reason the server ends a connection with, by code.
REASONS: Final[Mapping[str, Reason]] = {
    r.code: r
    for r in (
        Reason(EOF, _NORMAL, "the connection was closed", quiet=True),
        Reason(EXIT, _NORMAL, "the client asked to leave", quiet=True),
        Reason(SHUTTING_DOWN, _GOING_AWAY, "the server is shutting down", quiet=True),
        Reason(
            IDLE_TIMEOUT,
            _GOING_AWAY,
            "idle: no answer to the liveness ping, or silent with no subscription",
            quiet=False,
        ),
        Reason(
            SLOW_CONSUMER,
            _POLICY,
            "not reading fast enough: the notification queue is full",
            quiet=False,
        ),
        Reason(WRITE_TIMEOUT, _POLICY, "a write did not complete in time", quiet=False),
        Reason(TOO_MANY_CONNECTIONS, _TRY_AGAIN_LATER, "connection limit reached", quiet=False),
        Reason(MESSAGE_TOO_LARGE, _TOO_BIG, "a message over the size limit", quiet=False),
        Reason(INVALID_UTF8, _INVALID_DATA, "a text frame that is not UTF-8", quiet=False),
        # A connection outliving its token: send a fresh auth before exp.
        Reason(TOKEN_EXPIRED, _POLICY, "the access token expired", quiet=False),
    )
}


def lookup(code: str) -> Reason:
    """The table's entry for ``code``; an unlisted code (another protocol
    error) is a policy close that names itself and is logged as a warning."""
    return REASONS.get(code) or Reason(code, _POLICY, code, quiet=False)
