"""The client's conversation with the server, across reconnections.

Tasks, all in one nursery:

- the *supervisor* owns the connection: it runs the *pump* (every line the
  server sends: answer pings, track state, print, hand replies to the one
  request waiting) and, when the connection is gone, reconnects with backoff,
  registers again with the same e-mail and re-subscribes to what it had;
- the *conversation* (the main task) asks for the e-mail, then reads
  commands and sends them, one request at a time.

Replies arrive in order, so "the next reply" to a request is its answer.
"""

from __future__ import annotations

import signal
import ssl
import sys
from dataclasses import dataclass
from typing import Any

import trio

from ..config import Limits
from ..protocol import (
    INVALID_EMAIL,
    INVALID_MESSAGE,
    Dropped,
    Error,
    EventsList,
    Goodbye,
    Notification,
    ProtocolError,
    Recovery,
    Registered,
    ServerMessage,
    ServerPing,
    Subscribed,
    Subscriptions,
    Unsubscribed,
    Welcome,
    check_email,
)
from . import render
from .commands import HELP, Command, CommandError, parse_command
from .connection import (
    Backoff,
    ConnectError,
    Connection,
    ConnectionLost,
    address,
    open_connection,
)
from .terminal import Interrupted, OutputClosed, Ui
from .ws import WsConnection, open_ws_connection

__all__ = ["Client", "Options"]

#: Seconds to wait for the server's answer to a request. A healthy server
#: answers in milliseconds; this only bounds a wedged one.
REPLY_TIMEOUT = 10.0
#: Pause before registering again after a temporary refusal (storage_busy...).
REGISTER_RETRY = 1.0
#: Seconds from connect to the server's welcome.
WELCOME_TIMEOUT = 10.0
#: Seconds ``exit`` waits for the server's goodbye before just closing.
GOODBYE_TIMEOUT = 2.0
_UNKNOWN_TYPE = "unknown_type"


@dataclass(frozen=True, slots=True)
class Options:
    """What ``livenotify client`` was told on its command line."""

    host: str = "localhost"
    port: int = 8888
    email: str | None = None
    json: bool = False
    stay: bool = False
    #: TLS (``--tls``), trusting ``cafile`` (``--cafile``) or the system's CAs.
    tls: bool = False
    cafile: str | None = None
    #: A JWT sent with ``auth`` on every connection (``--token``).
    token: str | None = None
    #: A ``ws://`` / ``wss://`` URL to connect to instead of TCP (``--url``).
    url: str | None = None


class NotConnected(Exception):
    """No usable connection right now (reconnecting)."""


class _Link:
    """A connection plus the bookkeeping of its one outstanding request."""

    def __init__(self, conn: Connection | WsConnection) -> None:
        self.conn = conn
        self.welcomed = trio.Event()
        #: Replies are not printed while restoring after a reconnection;
        #: one summary line says what was restored instead.
        self.quiet = False
        #: Set once the handshake is done, and once the connection is gone.
        self.ready = False
        self.closed = False
        self._lock = trio.Lock()
        self._waiting: trio.MemorySendChannel[ServerMessage | None] | None = None
        #: Requests that timed out: their replies, when they come, are
        #: theirs, not the next request's (the server answers each once).
        self._overdue = 0

    async def request(self, obj: dict[str, Any], timeout: float = REPLY_TIMEOUT) -> ServerMessage:
        """Send ``obj`` and return the server's next reply."""
        async with self._lock:
            if self.closed:
                raise ConnectionLost("the connection was lost")
            send, receive = trio.open_memory_channel[ServerMessage | None](1)
            self._waiting = send
            try:
                await self.conn.send(obj)
                with trio.move_on_after(timeout):
                    reply = await receive.receive()
                    if reply is None:
                        raise ConnectionLost("the connection was lost")
                    if isinstance(reply, Goodbye) and obj.get("type") != "exit":
                        # Not an answer: the server is going away.
                        raise ConnectionLost(f"the server is shutting down ({reply.reason})")
                    return reply
                self._overdue += 1
                raise ConnectionLost(f"no answer from the server within {timeout:g}s")
            finally:
                self._waiting = None

    def take_reply(self, msg: ServerMessage | None) -> bool:
        """Hand ``msg`` (None: connection lost) to the waiting request, if any."""
        if msg is not None and self._overdue:
            self._overdue -= 1  # the late answer of a request that gave up
            return False
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return False
        waiting.send_nowait(msg)
        return True


class Client:
    """One run of ``livenotify client``; :meth:`run` returns the exit status."""

    def __init__(self, options: Options, ui: Ui | None = None) -> None:
        self.options = options
        #: The client TLS context (``--tls``), made once: it reads the CA file.
        self._tls = (
            ssl.create_default_context(cafile=options.cafile)
            if options.tls or options.cafile
            else None
        )
        self.where = address(options.host, options.port)
        #: The server's event catalog, and my subscriptions, as last heard.
        self.catalog: tuple[str, ...] = ()
        self.subscribed: tuple[str, ...] = ()
        self.email: str | None = None
        #: The last position heard (``E:N``: the first welcome's head, then
        #: each notification's): a reconnection resumes from it.
        self.position: str | None = None
        self.ui: Ui = ui if ui is not None else _default_ui(self)
        self._link: _Link | None = None  # set once ready for requests
        self._ready = trio.Event()
        self._leaving = False
        self._exit_code = 0
        self._cancel_all: trio.CancelScope | None = None
        self._conversation = trio.CancelScope()

    def completion_source(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(catalog, my subscriptions), for Tab completion."""
        return self.catalog, self.subscribed

    # -- the run ---------------------------------------------------------------

    async def run(self) -> int:
        """Connect, converse, leave; the exit status."""
        # Hosts each ws:// connection's reader task (trio-websocket needs a
        # nursery that outlives the connect); empty on TCP.
        async with trio.open_nursery() as hosting:
            self._hosting = hosting
            try:
                return await self._run()
            finally:
                hosting.cancel_scope.cancel()

    async def _connect(self) -> Connection | WsConnection:
        """A new connection: TCP, or WebSocket with ``--url``; raise ConnectError."""
        if self.options.url is None:
            return await open_connection(self.options.host, self.options.port, self._tls)
        return await open_ws_connection(self._hosting, self.options.url, self._tls)

    async def _run(self) -> int:
        try:
            first = await self._connect()
        except ConnectError as exc:
            self.ui.error(f"livenotify client: {exc}")
            return 1
        self.ui.note(f"connected to {first.where}")
        async with trio.open_nursery() as nursery:
            self._cancel_all = nursery.cancel_scope
            nursery.start_soon(self._supervise, first)
            nursery.start_soon(self._watch_signals)
            with self._conversation:
                code = await self._converse()
                self._exit_code = max(self._exit_code, code)
            self._leaving = True
            await self._leave()
            nursery.cancel_scope.cancel()
        return self._exit_code

    async def _watch_signals(self) -> None:
        # SIGTERM, a closed terminal (SIGHUP) and Ctrl-C while no prompt is
        # up (waiting for a reply; at the prompt Ctrl-C is a key, see
        # PromptUi) still leave in order: the server hears "exit" and the
        # terminal gets its settings back. A second Ctrl-C, once we stopped
        # listening, interrupts the leaving itself (exit 130 all the same).
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP, signal.SIGINT) as signals:
            async for signum in signals:
                self._exit_code = 128 + signum
                self._conversation.cancel()
                return

    async def _converse(self) -> int:
        if not await self._register():
            return 0 if self.ui.interactive else 1
        if self.ui.interactive:
            self.ui.note("type 'help' for the commands, Tab to complete")
        while True:
            try:
                line = await self.ui.read_line("", commands=True)
            except Interrupted:
                return 0
            if line is None:
                if self.options.stay and not self.ui.interactive:
                    # Keep printing until the server goes; the supervisor
                    # cancels us with the exit status then.
                    await trio.sleep_forever()
                return 0
            try:
                command = parse_command(line)
            except CommandError as exc:
                self.ui.warn(str(exc))
                self._failed()
                continue
            if command is None:
                continue
            if command.verb == "exit":
                return 0
            await self._execute(command)

    def _failed(self) -> None:
        # In a pipe, any refused command makes the exit status 1, so a
        # script notices a typo'd event name.
        if not self.ui.interactive:
            self._exit_code = 1

    async def _register(self) -> bool:
        """Get a valid e-mail registered; False if the user left instead."""
        given = self.options.email
        email = given
        while True:
            await self._ready.wait()
            if email is None:
                try:
                    line = await self.ui.read_line("e-mail: ", commands=False)
                except Interrupted:
                    return False
                if line is None:
                    if not self.ui.interactive:
                        self.ui.warn("livenotify client: end of input before an e-mail address")
                    return False
                email = line.strip()
                if not email:
                    continue
            try:
                check_email(email, Limits())
            except ProtocolError as exc:
                self.ui.warn(f"{exc.message}; an address looks like name@example.com")
                if given is not None:
                    return False
                email = None
                continue
            try:
                reply = await self._request({"type": "register", "email": email})
            except (NotConnected, ConnectionLost) as exc:
                self.ui.warn(f"could not register: {exc}")
                continue  # same address, once reconnected
            if isinstance(reply, Registered):
                self.email = email
                return True
            if isinstance(reply, Error) and reply.code not in (INVALID_EMAIL, INVALID_MESSAGE):
                # storage_busy, rate_limited...: the address is fine; the
                # pump printed why; try it again shortly.
                await trio.sleep(REGISTER_RETRY)
                continue
            # The address was refused (the pump printed why): ask again.
            if given is not None:
                return False
            if self.ui.interactive:
                self.ui.note("please enter another address")
            email = None

    async def _execute(self, command: Command) -> None:
        if command.verb == "help":
            # An example from this server's catalog, so that it works as typed.
            example = f"\nexample: subscribe {self.catalog[0]}" if self.catalog else ""
            self.ui.show(HELP + example)
            return
        obj: dict[str, Any]
        if command.verb in ("subscribe", "unsubscribe"):
            obj = {"type": command.verb, "events": list(command.events)}
        elif command.verb == "list":
            obj = {"type": "subscriptions"}
        else:  # events, ping
            obj = {"type": command.verb}
        try:
            reply = await self._request(obj)
        except NotConnected:
            self.ui.warn("not connected: reconnecting in the background, try again shortly")
            self._failed()
            return
        except ConnectionLost as exc:
            self.ui.warn(f"no answer: {exc}")
            self._failed()
            return
        if isinstance(reply, Error):
            if command.verb == "list" and reply.code == _UNKNOWN_TYPE:
                # An older server without "subscriptions": what we last heard.
                self.ui.show(f"subscribed to: {render.event_list(self.subscribed)}")
                return
            self._failed()

    async def _request(self, obj: dict[str, Any]) -> ServerMessage:
        link = self._link
        if link is None:
            raise NotConnected("not connected")
        return await link.request(obj)

    async def _leave(self) -> None:
        link = self._link
        if link is None:
            return
        with trio.move_on_after(GOODBYE_TIMEOUT):
            try:
                await link.request({"type": "exit"}, GOODBYE_TIMEOUT)
            except ConnectionLost:
                pass
        with trio.CancelScope(shield=True):
            await link.conn.aclose()

    # -- the connection ------------------------------------------------------------

    async def _supervise(self, conn: Connection | WsConnection) -> None:
        backoff = Backoff()
        restore = False
        said = None  # the last "reconnecting" reason shown in this outage
        while True:
            reason, was_ready = await self._serve(conn, restore)
            if was_ready:
                backoff.reset()
                said = None
            with trio.CancelScope(shield=True):
                await conn.aclose()
            if self._leaving:
                return
            if not self.ui.interactive:
                self.ui.warn(f"livenotify client: {reason}")
                self._exit_code = max(self._exit_code, 0 if conn.goodbye else 1)
                assert self._cancel_all is not None
                self._cancel_all.cancel()
                return
            if reason != said:
                # A server that accepts and hangs up at once (full) would
                # otherwise print the same line at every retry.
                self.ui.warn(f"{reason}; reconnecting...")
                said = reason
            while True:
                await trio.sleep(backoff.next_delay())
                try:
                    conn = await self._connect()
                except ConnectError:
                    continue
                break
            restore = True

    async def _serve(self, conn: Connection | WsConnection, restore: bool) -> tuple[str, bool]:
        """Run one connection until it ends: why it ended, and whether it got ready."""
        link = _Link(conn)
        link.quiet = restore
        reason = "the server closed the connection"
        async with trio.open_nursery() as nursery:

            async def pump() -> None:
                nonlocal reason
                reason = await self._pump(link)
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump)
            try:
                await self._handshake(link, restore)
            except ConnectionLost as exc:
                reason = str(exc)
                nursery.cancel_scope.cancel()
                return reason, False
            await trio.sleep_forever()  # until the pump ends
        return reason, link.ready

    async def _handshake(self, link: _Link, restore: bool) -> None:
        with trio.move_on_after(WELCOME_TIMEOUT):
            await link.welcomed.wait()
        if not link.welcomed.is_set():
            raise ConnectionLost(f"no welcome from {self.where} within {WELCOME_TIMEOUT:g}s")
        if self.options.token is not None:
            # First, on every connection: private events need the grant.
            reply = await link.request({"type": "auth", "token": self.options.token})
            if isinstance(reply, Error):
                raise ConnectionLost(f"the token was refused: {reply.message}")
        if restore:
            await self._restore(link)
        if link.closed:  # lost in the last step: the pump has said so
            raise ConnectionLost("the connection was lost")
        link.ready = True
        self._link = link
        self._ready.set()
        self.ui.set_connected(True)

    async def _restore(self, link: _Link) -> None:
        """Re-subscribe to what we had before the loss, replaying what was
        missed since the last position heard, then register again."""
        wanted = self.subscribed
        catalog = set(self.catalog) | {"*"}
        kept = [e for e in wanted if e in catalog]
        gone = [e for e in wanted if e not in catalog]
        recovery: Recovery | None = None
        if kept:
            # Subscribed first, with since: the register below then adds
            # nothing twice (its stored events are live already).
            request: dict[str, Any] = {"type": "subscribe", "events": kept}
            if self.position is not None:
                request["since"] = self.position
            reply = await link.request(request)
            if isinstance(reply, Error):
                self.ui.warn(render.reply(reply) or "")
            elif isinstance(reply, Subscribed):
                recovery = reply.recovery
        if self.email is not None:
            reply = await link.request({"type": "register", "email": self.email})
            if not isinstance(reply, Registered):
                # Not registered is not reconnected: retry with backoff.
                why = reply.code if isinstance(reply, Error) else type(reply).__name__
                raise ConnectionLost(f"could not register {self.email} again ({why})")
        link.quiet = False
        self.ui.note(
            f"reconnected to {link.conn.where}"
            + (f" as {self.email}" if self.email else "")
            + f"; subscribed to: {render.event_list(self.subscribed)}"
        )
        if recovery is not None:
            self.ui.note(render.recovery(recovery))
        if gone:
            self.ui.warn(f"no longer offered by the server: {render.event_list(gone)}")

    async def _pump(self, link: _Link) -> str:
        """Read the server until the connection ends; why it ended."""
        conn = link.conn
        output_closed = False
        try:
            while True:
                received = await conn.receive()
                if received is None:
                    if conn.goodbye is not None:
                        return f"the server at {conn.where} shut down ({conn.goodbye.reason})"
                    return f"the server at {conn.where} closed the connection"
                msg = received.message
                if isinstance(msg, ServerPing):
                    # The server's liveness probe on an idle connection.
                    await conn.send({"type": "pong"})
                    continue
                if isinstance(msg, ProtocolError):
                    # Never echoed in --json: stdout stays one object per line.
                    self.ui.warn(f"unreadable message from the server: {msg.message}")
                    continue
                if self.options.json:
                    self.ui.show(received.text)
                self._track(msg)
                notice = isinstance(msg, Notification | Dropped)
                if isinstance(msg, Welcome):
                    link.welcomed.set()
                elif not notice:
                    link.take_reply(msg)
                if not self.options.json and (notice or not link.quiet):
                    self._print(msg)
        except ConnectionLost as exc:
            return f"connection to {conn.where} lost: {exc}"
        except OutputClosed:
            # `| head`: the run ends quietly (exit 0). A waiting request is
            # cancelled with it, not told "connection lost" to print.
            output_closed = True
            raise
        finally:
            # Unpublish before waking the waiting request, so that its task
            # sees "not connected" at once rather than using a dead link.
            link.closed = True
            if self._link is link:
                self._link = None
                self._ready = trio.Event()
                self.ui.set_connected(False)
            if not output_closed:
                link.take_reply(None)

    def _track(self, msg: ServerMessage) -> None:
        match msg:
            case Notification(_, fields):
                offset, epoch = fields.get("offset"), fields.get("epoch")
                if isinstance(offset, int) and isinstance(epoch, str):
                    self.position = f"{epoch}:{offset}"
            case Welcome(events, position):
                self.catalog = events
                if self.position is None:
                    self.position = position
            case EventsList(events):
                self.catalog = events
            case Registered(_, events) | Subscribed(events) | Unsubscribed(events):
                self.subscribed = events
            case Subscriptions(events):
                self.subscribed = events

    def _print(self, msg: ServerMessage) -> None:
        text = render.reply(msg)
        if text is None:
            return
        if isinstance(msg, Notification):
            self.ui.show(text, "notification")
        elif isinstance(msg, Error | Dropped):
            self.ui.warn(text) if self.ui.interactive else self.ui.show(text)
        elif isinstance(msg, Goodbye):
            return  # our own exit, or the shutdown the loss message reports
        else:
            self.ui.show(text)


def _default_ui(client: Client) -> Ui:
    if sys.stdin.isatty() and sys.stdout.isatty():
        from .terminal import PromptUi

        return PromptUi(client.completion_source)
    from .terminal import PipeUi

    return PipeUi()
