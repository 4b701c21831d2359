"""One connection's conversation, written once for both transports.

A session runs the reader (this task) and, only once something has had to
be queued, a writer task (drains the hub queue into one ``send_all`` per
wake-up), both in one nursery: most deliveries are written directly by
the publisher (:meth:`Subscriber.push`), so an idle or keeping-up
connection never has a writer. Liveness pings are the hub's one
:class:`~livenotify.liveness.Heartbeat` task, not a task per connection.
Whatever ends the connection — the peer closing, ``exit``, an unanswered
ping, a stuck write, the slow-consumer policy, server shutdown — lands in
the ``finally`` of :meth:`Session.run`, which detaches from the hub, tells
the peer why where it can, and logs one line.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import trio

from . import protocol, reasons
from .access import ANONYMOUS, Authority, Grant
from .config import Config
from .enrolment import Enrolment
from .history import Since
from .hub import Hub, Subscriber
from .liveness import Heartbeat, Probe
from .optin import OptIn
from .payload import Payload
from .protocol import (
    Auth,
    ClientMessage,
    Confirm,
    EventsRequest,
    Exit,
    HelpRequest,
    Ping,
    Pong,
    ProtocolError,
    Publish,
    Register,
    SeedEvent,
    ServerMessage,
    Subscribe,
    SubscriptionsRequest,
    Unsubscribe,
)
from .ratelimit import TokenBucket
from .recovery import Replayer, publish, save_position, since_now
from .replies import Replies, unknown_events
from .storage import StorageBridge
from .transports import Transport, TransportClosed

log = logging.getLogger(__name__)

#: Bytes per write when the writer drains a backlog (see Session._write).
WRITE_CHUNK = 256 * 1024


class Session(Enrolment):
    """Serve one connection until it ends, for any reason."""

    # Slots: one instance per connection (see BENCHMARKS.md, idle memory).
    __slots__ = (
        "_bucket", "_emails", "_end_reason", "_explicit", "_initial_events", "_initial_since",
        "_killed", "_nursery", "_optin", "_probe", "_reader_scope", "_replies", "_writer_done",
        "access", "config", "hub", "storage", "sub", "transport",
    )  # fmt: skip

    def __init__(
        self,
        hub: Hub,
        config: Config,
        transport: Transport,
        storage: StorageBridge | None = None,
        initial_events: Sequence[str] = (),
        heartbeat: Heartbeat | None = None,
        *,
        access: Authority | None = None,
        grant: Grant = ANONYMOUS,
        optin: OptIn | None = None,
        initial_since: str | None = None,
    ) -> None:
        self.hub = hub
        #: Token checks; the connection's grant (from the WebSocket upgrade
        #: or an ``auth`` message) and when it expires, in Trio time.
        self.access = access if access is not None else Authority(config)
        self._grant = ANONYMOUS
        self._expires_at = math.inf
        self._expiry_watched = False
        self.config = config
        self.transport = transport
        self.storage = storage
        self._initial_events = initial_events
        #: Double opt-in and registration limits; addresses this connection
        #: registered (``--max-registrations``).
        self._optin = optin
        self._emails: set[str] = set()
        #: A WebSocket URL's ``since``: the initial events are replayed from it.
        self._initial_since = initial_since
        #: The connection's nursery while it runs; cancelling it ends everything.
        self._nursery: trio.Nursery | None = None
        self._killed = False
        self._reader_scope = trio.CancelScope()
        self._end_reason: str | None = None
        self._bucket = TokenBucket(config.limits.rate_per_second, config.limits.rate_burst)
        # Subscriptions the client asked for by message; only these are
        # persisted for its e-mail (not the WebSocket "*" default).
        self._explicit: set[str] = set()
        #: Set once a writer task exists (it is started on demand), and set
        #: by it when it ends.
        self._writer_done: trio.Event | None = None
        self.sub: Subscriber = hub.attach(transport, self.kill)
        #: The recovery under way, if any (see :mod:`livenotify.recovery`).
        self._replayer: Replayer | None = None
        self.sub.outbox.on_queue = self._start_writer
        self._replies = Replies(self.sub, config.slow_policy, self.kill)
        #: Its place in the heartbeat schedule (transports that answer pings).
        self._probe: Probe | None = None
        if heartbeat is not None and transport.probes:
            self._probe = heartbeat.watch(self.sub, transport)
        if grant is not ANONYMOUS:
            self._set_grant(grant)

    # -- ending --------------------------------------------------------------

    def kill(self, reason: str) -> None:
        """End the connection now with ``reason`` (a protocol error code)."""
        if self._end_reason is None:
            self._end_reason = reason
        self._killed = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def shutdown(self) -> None:
        """Server shutdown: stop reading, flush what is queued, say goodbye."""
        if self._end_reason is None:
            self._end_reason = reasons.SHUTTING_DOWN
        if self.transport.goodbye_message:
            self._report_dropped()
            # Past the queue limit if need be: a full queue (drop policy)
            # still ends with the goodbye.
            self._queue_nowait(protocol.Goodbye(reasons.SHUTTING_DOWN), force=True)
        # Nothing may follow the goodbye; the writer flushes what is queued.
        self.sub.flush_pending()
        self.sub.outbox.close()
        self._reader_scope.cancel()

    # -- running -------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection; returns when it has ended and been cleaned up."""
        sub = self.sub
        log.info("connect %s %s #%d", self.transport.kind, self.transport.peer, sub.id)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = self._replies.nursery = nursery
                if self._killed:
                    nursery.cancel_scope.cancel()  # killed before it ran
                if self._writer_done is not None:
                    nursery.start_soon(self._writer)  # queued before it ran
                if self._expires_at < math.inf:
                    self._watch_expiry()
                await self._start()
                with self._reader_scope:
                    reason = await self._reader()
                    if self._end_reason is None:
                        self._end_reason = reason
                # Let the writer flush everything queued (replies, goodbye).
                sub.flush_pending()
                sub.outbox.close()
                if self._writer_done is not None:
                    with trio.move_on_after(self.config.write_timeout):
                        await self._writer_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            reason = self._end_reason or reasons.EOF
            why = reasons.lookup(reason)
            if self._probe is not None:
                Heartbeat.unwatch(self._probe)
            if sub.email is not None and self.storage is not None:
                floor = self._replayer.floor if self._replayer is not None else 0
                save_position(self.hub, sub, self.storage, floor)
            self.hub.detach(sub, reason)
            with trio.CancelScope(shield=True):
                try:
                    await self.transport.close(reason, why.text)
                except Exception as exc:  # the peer may be long gone
                    log.debug("close #%d: %r", sub.id, exc)
            level = logging.INFO if why.quiet else logging.WARNING
            log.log(
                level,
                "disconnect %s %s #%d reason=%s delivered=%d",
                self.transport.kind, self.transport.peer, sub.id, reason, sub.delivered,
            )  # fmt: skip

    async def _start(self) -> None:
        await self._send(protocol.Welcome(self.hub.catalog, str(self.hub.position)))
        if self._initial_events:
            unknown = self.hub.unknown(self._initial_events)
            known = [e for e in self._initial_events if e not in unknown]
            # A private event in ?events= needs the upgrade's token.
            refused = [e for e in known if not self._may_subscribe(e)]
            allowed = [e for e in known if e not in refused]
            since: Since | None = None
            bad_since: ProtocolError | None = None
            if self._initial_since is not None:
                try:
                    since = since_now(protocol.check_since(self._initial_since))
                except ProtocolError as exc:
                    # As a ``subscribe`` with a bad since: nothing subscribed.
                    bad_since = exc
            if since is None and bad_since is None:
                # Live at once: nothing published during the replies below is missed.
                self.hub.subscribe(self.sub, allowed)
            if bad_since is not None:
                await self._replies.refuse(bad_since)
            if unknown:
                await self._replies.refuse(unknown_events(unknown, self.hub.catalog))
            if refused:
                try:
                    self.access.check_subscribe(refused, self._grant)
                except ProtocolError as exc:
                    await self._replies.refuse(exc)
            if since is not None:
                await self._subscribe_since(allowed, since)

    def _start_writer(self) -> None:
        """The outbox got its first item: from now on a writer task drains it."""
        self._writer_done = trio.Event()
        if self._nursery is not None:
            try:
                self._nursery.start_soon(self._writer)
            except RuntimeError:
                pass  # the nursery is closing: nothing more is written
        # else run() starts it

    async def _writer(self) -> None:
        assert self._writer_done is not None
        sub, transport = self.sub, self.transport
        frame = transport.frame
        outbox = sub.outbox
        try:
            while items := await outbox.take():
                # Coalesce: everything queued goes out in as few writes as
                # _write allows. Raw bytes are the unsent tail of a
                # fast-path write.
                chunks = [i if isinstance(i, bytes) else frame(i) for i in items]
                if sub.dropped:
                    notice = protocol.encode_server(protocol.Dropped(sub.dropped))
                    chunks.append(frame(Payload(notice)))
                    sub.dropped = 0
                if not await self._write(chunks):
                    self.kill(reasons.WRITE_TIMEOUT)
                    return
                outbox.done()
        except TransportClosed:
            self.kill(reasons.EOF)
        finally:
            self._writer_done.set()

    async def _write(self, chunks: list[bytes]) -> bool:
        """Write ``chunks`` in pieces of about :data:`WRITE_CHUNK` bytes, each
        under its own ``--write-timeout``; False when one missed it.

        Pieces bound the memory a backlog costs (one join of at most
        ~WRITE_CHUNK, not of the whole queue) and let a reader that is slow
        but alive keep up with a long queue.
        """
        transport, timeout = self.transport, self.config.write_timeout
        start, size = 0, 0
        for end, chunk in enumerate(chunks, 1):
            size += len(chunk)
            if size >= WRITE_CHUNK or end == len(chunks):
                with trio.move_on_after(timeout) as deadline:
                    await transport.send_all(b"".join(chunks[start:end]))
                if deadline.cancelled_caught:
                    return False
                start, size = end, 0
        return True

    async def _reader(self) -> str:
        transport, limits = self.transport, self.config.limits
        stats = self.hub.stats
        human = transport.human_commands
        while True:
            # The rate limit is backpressure: with the bucket empty the
            # connection is not read, so flow control slows the sender and
            # nothing valid is discarded. Every message costs a token,
            # refused ones too: garbage must not be a way around the limit.
            if await self._bucket.acquire():
                stats.throttled += 1
            # A TCP connection with nothing subscribed that stays silent only
            # holds a slot: it is closed after --tcp-idle-timeout.
            deadline = math.inf
            if human and self.config.tcp_idle_timeout and not self.sub.events:
                deadline = trio.current_time() + self.config.tcp_idle_timeout
            with trio.move_on_at(deadline) as idle:
                item = await transport.receive()
            if idle.cancelled_caught:
                return reasons.IDLE_TIMEOUT
            if item is None:
                await self._replies.accepted()
                return reasons.EOF
            stats.messages_in += 1
            try:
                if isinstance(item, ProtocolError):
                    raise item
                if human:
                    stripped = item.strip()
                    if not stripped:
                        continue  # a bare Enter from `nc`
                    # JSON objects (and stray arrays) are JSON; the rest is human.
                    if stripped[0] in "{[":
                        msg = protocol.decode_client(stripped, self.hub.catalog, limits)
                    else:
                        msg = protocol.decode_command(stripped, limits)
                else:
                    msg = protocol.decode_client(item, self.hub.catalog, limits)
                log.debug("recv #%d %s", self.sub.id, type(msg).__name__)
                if await self._handle(msg):
                    return reasons.EXIT
                await self._replies.accepted()
            except ProtocolError as exc:
                stats.refused += 1
                await self._replies.refuse(exc)

    # -- messages ------------------------------------------------------------

    async def _handle(self, msg: ClientMessage) -> bool:
        """Act on one message; True means the client asked to leave."""
        hub, sub = self.hub, self.sub
        match msg:
            case Register(email, resume):
                await self._register(email, resume)
            case Confirm(code):
                await self._confirm(code)
            case Subscribe(events, since_text):
                self._check_known(events)
                # All or nothing: a private event without a grant subscribes
                # to none of them.
                self.access.check_subscribe(events, self._grant)
                since = None if since_text is None else since_now(since_text)
                total = len(sub.events | set(events))
                if total > self.config.limits.max_subscriptions:
                    raise ProtocolError(
                        protocol.TOO_MANY_SUBSCRIPTIONS,
                        f"at most {self.config.limits.max_subscriptions} subscriptions",
                    )
                if sub.email and self.storage is not None:
                    await self._store(self.storage.subscribe, sub.email, list(events))
                self._explicit.update(events)
                if since is not None:
                    await self._subscribe_since(events, since)
                else:
                    hub.subscribe(sub, events)
                    await self._send(protocol.Subscribed(tuple(sorted(sub.events))))
            case Unsubscribe(events):
                if sub.email and self.storage is not None:
                    await self._store(self.storage.unsubscribe, sub.email, list(events))
                hub.unsubscribe(sub, events)
                self._explicit.difference_update(events)
                await self._send(protocol.Unsubscribed(tuple(sorted(sub.events))))
            case EventsRequest():
                await self._send(protocol.EventsList(hub.catalog))
            case SubscriptionsRequest():
                await self._send(protocol.Subscriptions(tuple(sorted(sub.events))))
            case Ping():
                await self._send(protocol.PongReply(protocol.timestamp()))
            case Pong():
                pass
            case Publish(event, fields, token):
                self._check_known([event])
                self.access.check_publish(event, self._grant, token)
                # Refusals before it are answered before its notification.
                await self._replies.accepted()
                sent = await publish(hub, event, fields)
                await self._send(protocol.Published(event, sent.id, sent.delivered, sent.offset))
            case SeedEvent(event, fields, token):
                self.access.check_publish(event, self._grant, token)
                body: dict[str, Any] = {k: v for k, v in fields.items() if k != "type"}
                if self.config.publish_token is not None or self.access.jwt:
                    body.pop("token", None)  # never leak the secret to subscribers
                await self._replies.accepted()
                # Seed form relays to the *other* clients, as the seed server did.
                await publish(hub, event, body, exclude=sub)
            case HelpRequest():
                await self._send(protocol.HelpReply(protocol.COMMAND_USAGE))
            case Auth(token):
                grant = self.access.verify(token)
                self._set_grant(grant)
                if self._expires_at < math.inf:
                    self._watch_expiry()
                expires = int(grant.expires) if grant.expires is not None else None
                await self._send(protocol.Authenticated(grant.sub, expires))
            case Exit():
                if self.transport.goodbye_message:
                    self._report_dropped()
                    await self._send(protocol.Goodbye(reasons.EXIT))
                return True
        return False

    def _check_known(self, events: Sequence[str]) -> None:
        unknown = self.hub.unknown(events)
        if unknown:
            raise unknown_events(unknown, self.hub.catalog)

    # -- output --------------------------------------------------------------

    async def _send(self, msg: ServerMessage) -> None:
        """Send a reply behind any notifications already queued (order kept)."""
        await self._replies.send(msg)

    def _queue_nowait(self, msg: ServerMessage, *, force: bool = False) -> None:
        """Queue without waiting; dropped when the queue is full, unless ``force``."""
        payload = Payload(protocol.encode_server(msg))
        try:
            if not self.sub.push(payload) and force:
                self.sub.outbox.extend([payload])
        except trio.ClosedResourceError:
            pass

    def _report_dropped(self) -> None:
        """Queue the ``dropped`` notice now, so that it comes before a goodbye
        (the writer would otherwise add it after its batch)."""
        sub = self.sub
        if sub.dropped:
            self._queue_nowait(protocol.Dropped(sub.dropped), force=True)
            sub.dropped = 0
