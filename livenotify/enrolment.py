"""What a connection does for its e-mail address and its token, beside
delivery: ``register`` (double opt-in, limits, ``resume``), ``confirm``,
storage acknowledgements, ``since`` recovery, and the token's grant and
expiry. A part of :class:`~livenotify.session.Session` (its base), kept
apart so each module holds one job.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import trio

from . import protocol, reasons
from .access import Grant, seconds_left
from .config import Config
from .history import Position, Since
from .hub import Hub, Subscriber
from .optin import OptIn
from .protocol import ProtocolError, ServerMessage
from .recovery import Answer, Replayer
from .storage import StorageBridge, StorageBusy
from .transports import Transport

log = logging.getLogger("livenotify.session")


def storage_busy() -> ProtocolError:
    """The reply when storage cannot take or commit a write in time."""
    return ProtocolError(protocol.STORAGE_BUSY, "storage is busy; try again shortly")


class Enrolment:
    """Registration, recovery and access for one connection (a base of
    :class:`~livenotify.session.Session`, which holds the state below)."""

    # The state only this part assigns; the rest is the session's.
    __slots__ = ("_expires_at", "_expiry_watched", "_grant", "_replayer")

    hub: Hub
    config: Config
    transport: Transport
    storage: StorageBridge | None
    sub: Subscriber
    _optin: OptIn | None
    _emails: set[str]
    _explicit: set[str]
    _nursery: trio.Nursery | None

    _grant: Grant
    _expires_at: float
    _expiry_watched: bool
    _replayer: Replayer | None

    async def _send(self, msg: ServerMessage) -> None:
        raise NotImplementedError

    def kill(self, reason: str) -> None:
        raise NotImplementedError

    # -- history ----------------------------------------------------------------

    async def _subscribe_since(self, events: Sequence[str], since: Since) -> None:
        """Subscribe, then replay what ``events`` missed after ``since``."""
        sub = self.sub

        async def answer(recovery: protocol.Recovery, position: str) -> None:
            reply = protocol.Subscribed(tuple(sorted(sub.events)), recovery, position)
            await self._send(reply)

        await self._recover(events, since, answer)

    async def _recover(self, events: Sequence[str], since: Since | None, answer: Answer) -> None:
        sub = self.sub
        self.hub.begin_recovery(sub)  # before subscribing: no live one slips past
        self.hub.subscribe(sub, events)
        replayer = self._replayer = Replayer(self.hub, sub)
        await replayer.run(since, events, answer)
        if not replayer.cut:
            # Cut short, it stays: the resume position starts at its floor.
            self._replayer = None

    async def _register(self, email: str, resume: bool = False) -> None:
        sub = self.sub
        stored: list[str] = []
        self._admit(email)
        confirmed = self._optin is None or not self._optin.enabled
        code = None
        saved: tuple[str, int] | None = None
        if self.storage is not None:
            try:
                stored = await self.storage.subscriptions_of(email)
                if self._optin is not None:
                    confirmed, code = await self._optin.state_of(self.storage, email)
                if resume:
                    saved = await self.storage.position_of(email)
            except StorageBusy:
                raise storage_busy() from None
            explicit = sorted(self._explicit)
            try:
                seq = self.storage.register(email, confirmed=confirmed)
                if explicit:
                    seq = self.storage.subscribe(email, explicit)
                if code is not None and code.send:
                    seq = self.storage.set_confirmation(email, code.code, code.expires)
            except StorageBusy:
                raise storage_busy() from None
            await self._committed(seq)  # all: they commit in order
            if code is not None and code.send and self._optin is not None:
                self._optin.send(email, code.code)
        self._emails.add(email)
        sub.email = email
        # Events dropped from the catalog since stay stored but are not live.
        # A private one only with this connection's grant: anyone may
        # register any address.
        restored = [e for e in stored if self.hub.is_known(e) and self._may_subscribe(e)]
        self._explicit.update(restored)
        log.info(
            "register #%d %s restored=%d confirmed=%s resume=%s",
            sub.id, email, len(restored), confirmed, resume,
        )  # fmt: skip
        registered = tuple(sorted(self._explicit))
        # What this connection already receives live is not replayed again.
        missed = sorted(set(self._explicit) - sub.events)
        if not resume:
            self.hub.subscribe(sub, restored)
            await self._send(protocol.Registered(email, registered, confirmed))
            return
        since = None if saved is None else Since(position=Position(*saved))

        async def answer(recovery: protocol.Recovery, _position: str) -> None:
            await self._send(protocol.Registered(email, registered, confirmed, recovery))

        await self._recover(missed, since, answer)

    def _admit(self, email: str) -> None:
        """The registration limits: per connection, then per client."""
        optin = self._optin
        if optin is None or email in self._emails:
            return
        if len(self._emails) >= self.config.limits.max_registrations:
            raise optin.refuse_connection()
        optin.admit(self.transport.peer, email)

    async def _confirm(self, code: str) -> None:
        """``confirm <code>``: the address waiting for ``code`` gets mail from now on."""
        if self._optin is None:
            raise ProtocolError(protocol.INVALID_CODE, "unknown or expired confirmation code")
        email = await self._optin.confirm(self.storage, code)
        await self._send(protocol.Confirmed(email))

    async def _store(self, write: Callable[..., int], *args: Any) -> None:
        """Hand a write to storage and wait until it is committed: a reply
        that says so is never sent before. A full backlog, or no commit
        within ``storage_timeout``, is the client's ``storage_busy``."""
        try:
            seq = write(*args)
        except StorageBusy:
            raise storage_busy() from None
        await self._committed(seq)

    async def _committed(self, seq: int) -> None:
        assert self.storage is not None
        try:
            await self.storage.committed(seq)
        except StorageBusy:
            raise storage_busy() from None

    # -- access --------------------------------------------------------------

    def _may_subscribe(self, event: str) -> bool:
        return event not in self.hub.private or self._grant.may_subscribe(event)

    def _set_grant(self, grant: Grant) -> None:
        """Make ``grant`` the connection's: what ``*`` delivers of the private
        events, and when the connection expires. Private subscriptions the
        new grant does not cover are dropped."""
        hub, sub = self.hub, self.sub
        self._grant = grant
        log.info("auth #%d sub=%s", sub.id, grant.sub or "-")
        hub.grant(sub, grant.may_subscribe if grant.subscribe else None)
        lost = [e for e in sub.events if not self._may_subscribe(e)]
        if lost:
            hub.unsubscribe(sub, lost)
            self._explicit.difference_update(lost)
        left = seconds_left(grant)
        self._expires_at = math.inf if left is None else trio.current_time() + left

    def _watch_expiry(self) -> None:
        """Start the task that ends the connection when its token expires
        (one per connection, only once a token with ``exp`` was given)."""
        if self._expiry_watched or self._nursery is None:
            return  # run() starts it
        self._expiry_watched = True
        self._nursery.start_soon(self._expiry)

    async def _expiry(self) -> None:
        # A fresh ``auth`` moves _expires_at: the sleep then ends early and
        # waits again for the new deadline.
        while trio.current_time() < self._expires_at:
            await trio.sleep_until(self._expires_at)
        self.kill(reasons.TOKEN_EXPIRED)
