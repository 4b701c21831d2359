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

import trio

from . import protocol, tls
from .access import Authority, Grant
from .admission import Admission
from .backplane import LocalBackplane
from .backplane.redis import RedisBackplane
from .config import Config
from .console import Console
from .history import EmbeddedLog
from .hub import Hub
from .listeners import (
    AcceptLoop,
    Throttle,
    bound_addresses,
    client_ip,
    descriptors_in_use,
    format_address,
    open_listeners,
    raise_fd_limit,
    ready_line,
)
from .liveness import Heartbeat
from .mail import MailService, start_mail
from .metrics import Metrics
from .optin import OptIn
from .payload import Payload
from .ready import Canary
from .session import Session
from .stats import Snapshot, collect
from .storage import StorageBridge, display_db
from .transports import TcpTransport, Transport, WsTransport, sse
from .transports.http import FrontDoor

log = logging.getLogger(__name__)
#: The start-up line's logger. Scripts wait for that line at any
#: ``--log-level``: its INFO record passes this logger's own level and goes to
#: the root handlers whatever the root level (unless configured otherwise).
READY_LOG = logging.getLogger("livenotify.ready")
if READY_LOG.level == logging.NOTSET:
    READY_LOG.setLevel(logging.INFO)

#: At most REFUSAL_LOG_BURST "refuse ... too_many_connections" lines per
#: REFUSAL_LOG_INTERVAL seconds.
REFUSAL_LOG_INTERVAL = 1.0
REFUSAL_LOG_BURST = 10


class Server:
    """A running livenotify server: hub, listeners, sessions, services."""

    def __init__(self, config: Config, *, console: bool = True) -> None:
        self.config = config
        self.hub = Hub(config)
        #: Pings every WebSocket connection; the sessions enrol themselves.
        self.heartbeat = Heartbeat(config.idle_timeout)
        #: Writes SSE streams' heartbeat comments (more often: for proxies).
        self.sse_heartbeat = Heartbeat(min(config.idle_timeout, sse.HEARTBEAT_INTERVAL))
        #: The /ready canary's probe through the delivery path.
        self.canary = Canary(self.hub)
        #: /metrics: the registry over stats(), and the latency histogram.
        self.metrics = Metrics(self)
        self.admission = Admission(config.limits)
        self.sessions: set[Session] = set()
        self.storage: StorageBridge | None = None
        self.history: EmbeddedLog | None = None
        self.backplane: RedisBackplane | None = None
        self.mail: MailService | None = None
        #: Double opt-in and the registration limits, shared by the sessions.
        self.optin = OptIn(config)
        self.tcp_port = 0
        self.ws_port = 0
        self._console = console
        self._shutdown = trio.Event()
        self._shutting_down = False
        self._drained = trio.Event()
        self._accept_scope = trio.CancelScope()
        #: Non-zero when the run did not end cleanly (writes not saved).
        self.exit_status = 0
        #: Who may publish and subscribe (JWT, private events, the shared token).
        self.access = Authority(config)
        #: TLS on both listeners, when configured (checked by preflight).
        self.tls = tls.server_context(config)
        self.front_door = FrontDoor(config, self._start_ws_session, self)
        self._refusal_log = Throttle(REFUSAL_LOG_INTERVAL, REFUSAL_LOG_BURST)

    def request_shutdown(self, why: str) -> None:
        """Begin a graceful shutdown (idempotent)."""
        if not self._shutdown.is_set():
            log.info("shutdown requested: %s", why)
            self._shutdown.set()

    def stats(self) -> Snapshot:
        """The server's counters now (console ``stats``)."""
        return collect(self.hub, self.storage, self.mail, self.optin)

    async def run(self, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until shutdown is requested, then drain and return."""
        config = self.config
        self._size_for_descriptors()
        # Bind first: a port in use fails at once, before any process starts.
        # Nothing is accepted until storage is ready.
        reuse = config.reuse_port
        tcp = await open_listeners(config.host, config.port, config.idle_timeout, reuse_port=reuse)
        try:
            ws = await open_listeners(
                config.host, config.ws_port, config.idle_timeout, reuse_port=reuse
            )
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
                await connections.start(self.sse_heartbeat.run)
                await connections.start(self.hub.coalescer.run)
                await connections.start(self._accept, tcp, ws, connections)
                if self._console:
                    root.start_soon(Console(self.hub, self.stats, self.request_shutdown).run)
                ready = ready_line(
                    config.host, self.ws_port, self.tcp_port,
                    console=self._console, tls=self.tls is not None,
                )  # fmt: skip
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
        if self.backplane is not None:
            self.backplane.close()  # its Redis connections
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

    def _size_for_descriptors(self) -> None:
        """Raise the soft descriptor limit to the hard one, and lower the
        connection cap to what is left after a reserve (so that
        ``too_many_connections`` can always be said)."""
        soft = raise_fd_limit()
        room = soft - descriptors_in_use() - self.config.limits.fd_reserve
        if self.admission.max_connections > room:
            log.warning(
                "max-connections lowered from %d to %d: the descriptor limit is %d "
                "(raise it with ulimit -n)",
                self.admission.max_connections, max(room, 1), soft,
            )  # fmt: skip
            self.admission.max_connections = max(room, 1)

    async def _start_services(self, root: trio.Nursery) -> None:
        """Storage first, then e-mail (which reads the storage outbox)."""

        storage = StorageBridge(self.config)
        await root.start(storage.run)
        self.storage = storage
        # The log takes every publish before it is delivered (its offset),
        # and its storage write feeds the e-mail outbox.
        if self.config.backend:
            # Several processes: the log is Redis's; this storage gets the
            # notifications published here (their mail rows) only.
            self.backplane = RedisBackplane(self.config, storage)
            self.hub.use(self.backplane)
        else:
            self.history = EmbeddedLog(self.config, storage)
            self.hub.use(LocalBackplane(self.history))
        self.hub.add_observer(self.metrics.on_publish)
        await root.start(self.hub.run_backplane)
        await root.start(self.metrics.run)
        self.mail = await start_mail(root, self.config, storage)
        self.optin.sender = self.mail.dispatcher.submit_confirmation

    async def _accept(
        self,
        tcp: list[trio.SocketListener],
        ws: list[trio.SocketListener],
        connections: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.tcp_port = int(tcp[0].socket.getsockname()[1])
        self.ws_port = int(ws[0].socket.getsockname()[1])
        for name in bound_addresses(tcp):
            log.info("listening tcp %s%s", name, " (TLS)" if self.tls is not None else "")
        for name in bound_addresses(ws):
            scheme = "wss" if self.tls is not None else "ws"
            log.info("listening ws %s (%s://%s/)", name, scheme, name)
        tcp_loop = AcceptLoop(self._handle_tcp, "tcp")
        ws_loop = AcceptLoop(self._handle_front_door, "ws")
        with self._accept_scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(tcp_loop.serve, tcp, connections)
                await nursery.start(ws_loop.serve, ws, connections)
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

    async def _serve_session(self, session: Session) -> None:
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
            if self._shutting_down and not self.sessions:
                self._drained.set()

    def _peer(self, stream: trio.SocketStream) -> tuple[str, str] | None:
        """(client IP, "ip:port") of an accepted connection; None if it is gone."""
        try:
            sockaddr = stream.socket.getpeername()
        except OSError:
            return None  # reset before we got to it (ENOTCONN)
        return client_ip(str(sockaddr[0])), format_address(sockaddr)

    def _log_refusal(self, kind: str, peer: str) -> None:
        self.hub.stats.refused_connections += 1
        # A few lines per second at most: a flood must not flood the log too.
        unlogged = self._refusal_log.due()
        if unlogged is not None:
            more = f" ({unlogged} more refused unlogged)" if unlogged else ""
            log.warning("refuse %s %s: too_many_connections%s", kind, peer, more)

    def _refusal_allowed(self) -> bool:
        """Whether a refused connection may take a descriptor from the
        reserve to be told why; otherwise it is closed at once."""
        return self.admission.refusing < self.config.limits.fd_reserve // 2

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        who = self._peer(stream)
        if who is None:
            await stream.aclose()
            return
        ip, peer = who
        if not self.admission.admit(ip):
            await self._refuse_tcp(stream, peer)
            return
        try:
            wrapped = await self._secure(stream, peer, http=False)
            if wrapped is None:
                return
            transport = TcpTransport(wrapped, peer, self.config.limits.max_message_bytes)
            session = Session(
                self.hub, self.config, transport, self.storage, heartbeat=self.heartbeat,
                access=self.access, optin=self.optin,
            )  # fmt: skip
            await self._serve_session(session)
        finally:
            self.admission.release(ip)

    async def _secure(
        self, stream: trio.SocketStream, peer: str, *, http: bool
    ) -> trio.abc.HalfCloseableStream | trio.SSLStream[trio.SocketStream] | None:
        """``stream`` itself, or under TLS with its handshake done (None,
        with ``stream`` closed, when that failed)."""
        if self.tls is None:
            return stream
        secured = await tls.accept(stream, self.tls, self.config.handshake_timeout, peer, http=http)
        if secured is None:
            await stream.aclose()
        return secured

    async def _refuse_tcp(self, stream: trio.SocketStream, peer: str) -> None:
        self._log_refusal("tcp", peer)
        if not self._refusal_allowed():
            await stream.aclose()
            return
        self.admission.refusing += 1
        try:
            # Under TLS the refusal is said inside it (the handshake first).
            target = await self._secure(stream, peer, http=False)
            if target is None:
                return
            reply = protocol.Error(protocol.TOO_MANY_CONNECTIONS, "connection limit reached")
            with trio.move_on_after(1.0):
                try:
                    await target.send_all(Payload(protocol.encode_server(reply)).line())
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            await target.aclose()
        finally:
            self.admission.refusing -= 1

    async def _handle_front_door(self, stream: trio.SocketStream) -> None:
        """A connection on the WebSocket port: counted now, before any
        handshake (see :mod:`livenotify.admission`), then HTTP or WebSocket."""
        who = self._peer(stream)
        if who is None:
            await stream.aclose()
            return
        ip, peer = who
        if self.admission.admit(ip):
            try:
                wrapped = await self._secure(stream, peer, http=True)
                if wrapped is not None:
                    await self.front_door.serve(wrapped, peer)
            finally:
                self.admission.release(ip)
            return
        self._log_refusal("ws", peer)
        if not self._refusal_allowed():
            await stream.aclose()
            return
        self.admission.refusing += 1
        try:
            target = await self._secure(stream, peer, http=True)
            if target is not None:
                await self.front_door.serve(target, peer, refuse=protocol.TOO_MANY_CONNECTIONS)
        finally:
            self.admission.refusing -= 1

    async def _start_ws_session(
        self, transport: WsTransport, events: tuple[str, ...], grant: Grant, since: str | None
    ) -> None:
        session = Session(
            self.hub, self.config, transport, self.storage, events, heartbeat=self.heartbeat,
            access=self.access, grant=grant, optin=self.optin, initial_since=since,
        )  # fmt: skip
        await self._serve_session(session)

    async def start_session(
        self, transport: Transport, events: tuple[str, ...], grant: Grant, since: str | None
    ) -> None:
        """Serve a front-door stream (SSE) as a session subscribed to
        ``events``, replaying from ``since`` first when given."""
        session = Session(
            self.hub, self.config, transport, self.storage, events,
            heartbeat=self.sse_heartbeat, access=self.access, grant=grant, initial_since=since,
        )  # fmt: skip
        await self._serve_session(session)


def _close_all(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        listener.socket.close()


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
