"""``serve()``: the root nursery that owns every task of a running server.

Start-up order: storage first (a bad database stops us before we listen),
then e-mail, then the listeners; ``ready — ws://host:port  tcp host:port`` is
logged (on :data:`READY_LOG`) once every socket is accepting. Shutdown
(``exit``, SIGINT, SIGTERM) stops accepting, asks every session to flush
and say goodbye, gives them the grace period, flushes storage, and then
cancels the root nursery.
"""

from __future__ import annotations

import logging
import signal
import urllib.parse
from functools import partial

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, WebSocketServer

from . import protocol
from .admission import Admission
from .backplane import LocalBackplane
from .config import Config
from .console import Console
from .history import EmbeddedLog
from .hub import Hub
from .listeners import bound_addresses, client_ip, format_address, open_listeners, ready_line
from .liveness import Heartbeat
from .mail import MailService, start_mail
from .payload import Payload
from .session import Session
from .stats import Snapshot, collect
from .storage import StorageBridge, display_db
from .transports import TcpTransport, WsTransport

log = logging.getLogger(__name__)
#: The start-up line's logger. Scripts wait for that line at any
#: ``--log-level``: its INFO record passes this logger's own level and goes to
#: the root handlers whatever the root level (unless configured otherwise).
READY_LOG = logging.getLogger("livenotify.ready")
if READY_LOG.level == logging.NOTSET:
    READY_LOG.setLevel(logging.INFO)

#: WebSocket messages trio-websocket may read ahead of the session (its
#: default is 1). At most this many times ``--max-message-bytes`` per
#: connection waits in memory.
WS_READ_AHEAD = 16


class Server:
    """A running livenotify server: hub, listeners, sessions, services."""

    def __init__(self, config: Config, *, console: bool = True) -> None:
        self.config = config
        self.hub = Hub(config)
        #: Pings every WebSocket connection; the sessions enrol themselves.
        self.heartbeat = Heartbeat(config.idle_timeout)
        self.admission = Admission(config.limits)
        self.sessions: set[Session] = set()
        self.storage: StorageBridge | None = None
        self.history: EmbeddedLog | None = None
        self.mail: MailService | None = None
        self.tcp_port = 0
        self.ws_port = 0
        self._console = console
        self._shutdown = trio.Event()
        self._shutting_down = False
        self._drained = trio.Event()
        self._accept_scope = trio.CancelScope()
        #: Non-zero when the run did not end cleanly (writes not saved).
        self.exit_status = 0

    def request_shutdown(self, why: str) -> None:
        """Begin a graceful shutdown (idempotent)."""
        if not self._shutdown.is_set():
            log.info("shutdown requested: %s", why)
            self._shutdown.set()

    def stats(self) -> Snapshot:
        """The server's counters now (console ``stats``)."""
        mail = self.mail.dispatcher if self.mail is not None else None
        return collect(self.hub, self.storage, mail)

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown is requested, then drain and return."""
        config = self.config
        # Bind first: a port in use fails at once, before any process starts.
        # Nothing is accepted until storage is ready.
        tcp = await open_listeners(config.host, config.port, config.idle_timeout)
        try:
            ws = await open_listeners(config.host, config.ws_port, config.idle_timeout)
        except BaseException:
            _close_all(tcp)
            raise
        async with trio.open_nursery() as root:
            try:
                await self._start_services(root)
            except BaseException:
                _close_all(tcp + ws)
                raise
            async with trio.open_nursery() as connections:
                # Signals are handled before "ready" is logged, so a SIGINT
                # sent right after it is a graceful shutdown, not a traceback.
                await root.start(self._watch_signals)
                await connections.start(self.heartbeat.run)
                await connections.start(self.hub.coalescer.run)
                await connections.start(self._accept, tcp, ws, connections)
                if self._console:
                    root.start_soon(Console(self.hub, self.stats, self.request_shutdown).run)
                ready = ready_line(config.host, self.ws_port, self.tcp_port, console=self._console)
                READY_LOG.info("%s", ready)
                task_status.started(self)
                await self._shutdown.wait()
                await self._drain(connections)
            if self.mail is not None:
                self.mail.stop()  # pending rows stay in the outbox for next time
            if self.storage is not None:
                with trio.move_on_after(config.grace_period) as scope:
                    await self.storage.aclose()
                if scope.cancelled_caught:
                    log.warning("storage did not flush within %.1fs", config.grace_period)
            root.cancel_scope.cancel()
        if self.storage is not None and self.storage.lost:
            # Clients may have been told these were stored (published):
            # a supervisor must see that this stop was not clean.
            log.error(
                "stopped: %d acknowledged writes were not saved to %s",
                self.storage.lost,
                display_db(config.db),
            )
            self.exit_status = 1
            return
        log.info("stopped")

    async def _start_services(self, root: trio.Nursery) -> None:
        """Storage first, then e-mail (which reads the storage outbox)."""

        storage = StorageBridge(self.config)
        await root.start(storage.run)
        self.storage = storage
        # The log takes every publish before it is delivered (its offset),
        # and its storage write feeds the e-mail outbox.
        self.history = EmbeddedLog(self.config, storage)
        self.hub.use(LocalBackplane(self.history))
        await root.start(self.hub.run_backplane)
        self.mail = await start_mail(root, self.config, storage)

    async def _accept(
        self,
        tcp: list[trio.SocketListener],
        ws: list[trio.SocketListener],
        connections: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        config = self.config
        self.tcp_port = int(tcp[0].socket.getsockname()[1])
        self.ws_port = int(ws[0].socket.getsockname()[1])
        for name in bound_addresses(tcp):
            log.info("listening tcp %s", name)
        for name in bound_addresses(ws):
            log.info("listening ws %s (ws://%s/)", name, name)
        ws_server = WebSocketServer(
            self._handle_ws,
            ws,
            handler_nursery=connections,
            max_message_size=config.limits.max_message_bytes,
            # Messages read ahead for the session: a burst from a publisher
            # then reaches the hub one per scheduler round, which is what
            # lets the coalescer batch it (see hub.delivery.Coalescer).
            message_queue_size=WS_READ_AHEAD,
            connect_timeout=config.handshake_timeout,
            disconnect_timeout=2.0,
        )
        with self._accept_scope:
            async with trio.open_nursery() as nursery:
                serve_tcp = partial(
                    trio.serve_listeners, self._handle_tcp, tcp, handler_nursery=connections
                )
                await nursery.start(serve_tcp)
                await nursery.start(ws_server.run)
                task_status.started()

    async def _drain(self, connections: trio.Nursery) -> None:
        self._shutting_down = True
        self._accept_scope.cancel()
        log.info("draining %d connections", len(self.sessions))
        for session in list(self.sessions):
            session.shutdown()
        if not self.sessions:
            self._drained.set()
        with trio.move_on_after(self.config.grace_period):
            await self._drained.wait()
        connections.cancel_scope.cancel()

    async def _watch_signals(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                self.request_shutdown(signal.Signals(signum).name)

    async def _serve_session(self, session: Session, ip: str) -> None:
        self.sessions.add(session)
        if self._shutting_down:
            session.shutdown()
        try:
            await session.run()
        except Exception:
            # A bug in one session must not take the server (and every other
            # client) down with it: log it with its traceback and move on.
            log.exception("session %s failed", session.transport.peer)
        finally:
            self.sessions.discard(session)
            self.admission.release(ip)
            if self._shutting_down and not self.sessions:
                self._drained.set()

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        try:
            sockaddr = stream.socket.getpeername()
        except OSError:
            # Reset before we got to it (ENOTCONN): nothing to serve.
            await stream.aclose()
            return
        ip, peer = client_ip(str(sockaddr[0])), format_address(sockaddr)
        if not self.admission.admit(ip):
            log.warning("refuse tcp %s: too_many_connections", peer)
            reply = protocol.Error(protocol.TOO_MANY_CONNECTIONS, "connection limit reached")
            with trio.move_on_after(1.0):
                try:
                    await stream.send_all(Payload(protocol.encode_server(reply)).line())
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            await stream.aclose()
            return
        transport = TcpTransport(stream, peer, self.config.limits.max_message_bytes)
        session = Session(self.hub, self.config, transport, self.storage, heartbeat=self.heartbeat)
        await self._serve_session(session, ip)

    async def _handle_ws(self, request: WebSocketRequest) -> None:
        try:
            remote = request.remote
        except OSError:
            # Reset before we got to it (ENOTCONN); trio-websocket closes
            # the connection when the handler returns.
            return
        if isinstance(remote, str):
            ip = peer = remote
        else:
            ip = client_ip(str(remote.address))
            peer = format_address((str(remote.address), remote.port))
        events = _query_events(request.path, self.config.limits.max_events_per_message)
        since = _query_since(request.path)
        try:
            ws = await request.accept()
            if not self.admission.admit(ip):
                log.warning("refuse ws %s: too_many_connections", peer)
                with trio.move_on_after(1.0):
                    await ws.aclose(1013, protocol.TOO_MANY_CONNECTIONS)
                return
        except ConnectionClosed:
            return  # reset during the handshake
        except Exception:
            # Whatever else one handshake raises stays with it: the shared
            # connections nursery must not see it.
            log.exception("ws %s: handshake failed", peer)
            return
        transport = WsTransport(ws, peer)
        session = Session(
            self.hub, self.config, transport, self.storage, events,
            heartbeat=self.heartbeat, initial_since=since,
        )  # fmt: skip
        await self._serve_session(session, ip)


def _close_all(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        listener.socket.close()


def _query_events(path: str, limit: int) -> tuple[str, ...]:
    """``/?events=a,b`` -> ("a", "b"); no ``events`` parameter -> ("*",)."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    if "events" not in query:
        return (protocol.ALL_EVENTS,)
    names = [n for value in query["events"] for n in value.split(",") if n]
    return tuple(dict.fromkeys(names))[:limit]


def _query_since(path: str) -> str | None:
    """``/?since=E:N`` -> "E:N" (checked by the session); None without one."""
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("since")
    return values[-1] if values else None


async def serve(
    config: Config,
    *,
    console: bool = True,
    task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a server with ``config`` until it is asked to shut down.

    Raises ``SystemExit(1)`` after a stop that could not save every write
    storage had accepted (see :attr:`Server.exit_status`)."""
    server = Server(config, console=console)
    await server.run(task_status=task_status)
    if server.exit_status:
        raise SystemExit(server.exit_status)
