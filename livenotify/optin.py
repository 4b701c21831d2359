"""Double opt-in: confirmation codes and the limits on ``register``.

An address registered over the protocol gets notification mails only once
its owner proved they read it: ``register`` stores it unconfirmed and mails
one confirmation with a code (for ``confirm <code>``) and a link
(``<public-url>/confirm?code=...``). Without that, one connection could
enrol thousands of strangers and turn every publish into a mail bomb.

:class:`OptIn` holds what is shared by every connection: the per-client
registration window, code making, the link, and the hand-off of the
confirmation mail to the mail dispatcher. The per-connection limit lives in
the session (it is the session's own set of addresses).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .config import Config
from .protocol import (
    INVALID_CODE,
    STORAGE_BUSY,
    TOO_MANY_REGISTRATIONS,
    ProtocolError,
    check_code,
)
from .storage import StorageBusy

if TYPE_CHECKING:
    from .storage import StorageBridge

log = logging.getLogger("livenotify.optin")

#: Seconds of the per-client registration window.
REGISTRATION_WINDOW = 3600.0
#: Bytes of randomness in a code (192 bits: 32 URL-safe characters).
CODE_BYTES = 24
#: Hosts that mean "every interface": links name ``localhost`` instead.
_WILDCARDS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})

#: Hands a confirmation mail over: (email, code, link) -> accepted.
SendConfirmation = Callable[[str, str, str], bool]


def iso(ts: float) -> str:
    """``ts`` (seconds since the epoch) as the storage's ISO 8601 UTC text."""
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    """Inverse of :func:`iso` (seconds since the epoch)."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def client_key(peer: str) -> str:
    """What the per-client limit counts for a transport's ``peer``
    (``ip:port``/``[ip6]:port``): the IP, an IPv6 address by its /64 (one
    host usually holds a whole /64)."""
    host = peer[1:].split("]", 1)[0] if peer.startswith("[") else peer.rsplit(":", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class PendingCode:
    """The code to mail for one ``register`` of an unconfirmed address."""

    code: str
    expires: str
    #: False: a code was mailed less than ``--confirm-resend`` ago; say
    #: nothing new.
    send: bool


class OptIn:
    """Shared double opt-in state of a server (see the module docstring)."""

    def __init__(self, config: Config, send: SendConfirmation | None = None) -> None:
        self.config = config
        self.enabled = config.confirm
        #: Set once the mail service runs (see :meth:`send`).
        self.sender = send
        #: client key -> {email: when first registered in the window}
        self._window: dict[str, dict[str, float]] = {}
        self._next_prune = 0.0
        #: Counters for ``stats``.
        self.confirmations_sent = 0
        self.confirmed = 0
        self.refused = 0

    # -- limits --------------------------------------------------------------

    def admit(self, peer: str, email: str, now: float | None = None) -> None:
        """Count ``email`` for ``peer``'s client; ``too_many_registrations``
        past ``--max-registrations-per-ip`` distinct addresses per hour."""
        now = time.monotonic() if now is None else now
        self._prune(now)
        seen = self._window.setdefault(client_key(peer), {})
        first = seen.get(email)
        if first is not None and now - first < REGISTRATION_WINDOW:
            return
        limit = self.config.limits.max_registrations_per_ip
        live = sum(1 for t in seen.values() if now - t < REGISTRATION_WINDOW)
        if live >= limit:
            self.refused += 1
            raise ProtocolError(
                TOO_MANY_REGISTRATIONS,
                f"at most {limit} addresses registered per client per hour",
            )
        seen[email] = now

    def refuse_connection(self) -> ProtocolError:
        """The error for a connection past ``--max-registrations``."""
        self.refused += 1
        limit = self.config.limits.max_registrations
        return ProtocolError(
            TOO_MANY_REGISTRATIONS, f"at most {limit} addresses registered per connection"
        )

    def _prune(self, now: float) -> None:
        # Memory stays bounded by the clients of the last hour.
        if now < self._next_prune:
            return
        self._next_prune = now + 60
        for key in list(self._window):
            kept = {e: t for e, t in self._window[key].items() if now - t < REGISTRATION_WINDOW}
            if kept:
                self._window[key] = kept
            else:
                del self._window[key]

    # -- codes ---------------------------------------------------------------

    def pending_code(
        self, code: str | None, expires: str | None, sent: str | None, now: float | None = None
    ) -> PendingCode:
        """The code for an unconfirmed address whose stored state is
        (``code``, ``expires``, ``sent``): a live code is kept (one pending
        at a time) and mailed again only ``--confirm-resend`` after the
        last mail; an expired or missing one is replaced."""
        now = time.time() if now is None else now
        if code and expires and parse_iso(expires) > now:
            recent = sent is not None and now - parse_iso(sent) < self.config.confirm_resend
            return PendingCode(code, expires, send=not recent)
        new = secrets.token_urlsafe(CODE_BYTES)
        return PendingCode(new, iso(now + self.config.confirm_ttl), send=True)

    async def state_of(self, storage: StorageBridge, email: str) -> tuple[bool, PendingCode | None]:
        """Whether ``email`` gets mail (confirmed, or ``--no-confirm``), and
        if not, its pending code. Raises StorageBusy."""
        if not self.enabled:
            return True, None
        state = await storage.subscriber(email)
        if state is not None and state[0]:
            return True, None
        code, expires, sent = state[1:] if state is not None else (None, None, None)
        return False, self.pending_code(code, expires, sent)

    @staticmethod
    def live(expires: str, now: float | None = None) -> bool:
        """Whether a code expiring at ``expires`` is still valid."""
        return parse_iso(expires) > (time.time() if now is None else now)

    async def confirm(self, storage: StorageBridge | None, code: object) -> str:
        """Confirm the address waiting for ``code`` and return it, once the
        change is committed. ``invalid_code`` for a malformed, unknown or
        expired code; ``storage_busy`` when storage cannot answer or commit.
        Used by ``confirm`` (any transport) and ``GET /confirm?code=``."""
        invalid = ProtocolError(INVALID_CODE, "unknown or expired confirmation code")
        if storage is None:
            raise invalid
        code = check_code(code)
        try:
            found = await storage.confirmation(code)
            if found is None or not self.live(found[1]):
                raise invalid
            email = found[0]
            await storage.committed(storage.confirm(email, code))
        except StorageBusy:
            raise ProtocolError(STORAGE_BUSY, "storage is busy; try again shortly") from None
        self.confirmed += 1
        log.info("confirmed %s", email)
        return email

    def link(self, code: str) -> str:
        """The confirmation link for ``code`` (the front door's ``/confirm``)."""
        base = self.config.public_url
        if not base:
            host = self.config.host
            host = "localhost" if host in _WILDCARDS else host
            if ":" in host:
                host = f"[{host}]"
            base = f"http://{host}:{self.config.ws_port}"
        return f"{base.rstrip('/')}/confirm?code={code}"

    def send(self, email: str, code: str) -> None:
        """Hand the confirmation mail to the mail dispatcher."""
        if self.sender is None:
            log.warning("no mail service: confirmation for %s not sent", email)
            return
        if self.sender(email, code, self.link(code)):
            self.confirmations_sent += 1
            log.info("confirmation mail for %s handed to the mail dispatcher", email)
        else:
            log.warning("confirmation queue full: confirmation for %s not sent", email)
