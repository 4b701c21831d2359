"""Listening sockets: dual-stack for ``::``, one family for a literal
address, one socket per address for a host name.

``--host ::`` is a single IPv6 socket with ``IPV6_V6ONLY`` off, so IPv4
clients arrive on it as ``::ffff:a.b.c.d``. Keepalive is set on the listening
socket; Linux copies it to every accepted socket, which is how dead TCP
peers are found without an application ping.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import os
import resource
import socket as _socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger(__name__)

#: Pending connections the kernel may hold for us (capped by somaxconn):
#: high, so a burst of connects is not refused while we are busy.
BACKLOG = 4096
#: Keepalive probes sent before a silent peer is declared dead, and their
#: spacing relative to the idle time.
KEEPALIVE_PROBES = 4
#: accept() errors that mean "out of descriptors or memory for now": we
#: wait a little and try again instead of failing.
CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
#: Pause after such an error (the kernel keeps the pending connection).
CAPACITY_BACKOFF = 0.1
#: At most one log line per this many seconds about such errors (a full
#: descriptor table otherwise logs ten lines a second per listener).
CAPACITY_LOG_INTERVAL = 10.0
#: The soft descriptor limit we raise to when the hard limit is unlimited.
FD_LIMIT_CAP = 1 << 20


def _configure(sock: trio.socket.SocketType, keepalive_idle: float) -> None:
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
    idle = max(1, int(keepalive_idle))
    if hasattr(_socket, "TCP_KEEPIDLE"):
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPINTVL, max(1, idle // 4))
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


async def _bind(
    family: int,
    address: Any,
    keepalive_idle: float,
    *,
    dual_stack: bool = False,
    reuse_port: bool = False,
) -> trio.SocketListener:
    sock = trio.socket.socket(family, _socket.SOCK_STREAM)
    try:
        _configure(sock, keepalive_idle)
        if reuse_port:
            # Several processes share the port; the kernel spreads accepts.
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        if family == _socket.AF_INET6:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        await sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        # Name the address: "Address already in use" alone does not say which.
        where = format_address(address)
        raise OSError(exc.errno, f"{where}: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def open_listeners(
    host: str, port: int, keepalive_idle: float, *, reuse_port: bool = False
) -> list[trio.SocketListener]:
    """Listen on ``host``:``port`` as described in the module docstring;
    ``reuse_port`` sets ``SO_REUSEPORT`` (several processes, one port)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        if ip.version == 4:
            return [
                await _bind(_socket.AF_INET, (str(ip), port), keepalive_idle, reuse_port=reuse_port)
            ]
        dual = ip == ipaddress.IPv6Address("::")
        return [
            await _bind(
                _socket.AF_INET6, (str(ip), port), keepalive_idle,
                dual_stack=dual, reuse_port=reuse_port,
            )
        ]  # fmt: skip
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=_socket.SOCK_STREAM, flags=_socket.AI_PASSIVE
        )
    except _socket.gaierror as exc:
        raise OSError(exc.errno, f"host {host!r}: {exc.strerror or exc}") from exc
    listeners: list[trio.SocketListener] = []
    seen: set[tuple[int, str]] = set()
    try:
        for family, _type, _proto, _canon, sockaddr in infos:
            key = (family, str(sockaddr[0]))
            if key in seen:
                continue
            seen.add(key)
            # With port 0, every address shares the port the first one got.
            address = (sockaddr[0], port or _port(listeners), *sockaddr[2:])
            listeners.append(await _bind(family, address, keepalive_idle, reuse_port=reuse_port))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


def _port(listeners: list[trio.SocketListener]) -> int:
    return int(listeners[0].socket.getsockname()[1]) if listeners else 0


def bound_addresses(listeners: list[trio.SocketListener]) -> list[str]:
    """``[::]:8888``-style names of what we listen on, for the start-up log."""
    return [format_address(listener.socket.getsockname()) for listener in listeners]


def format_address(sockaddr: Any) -> str:
    """``1.2.3.4:80`` or ``[::1]:80``; IPv4-mapped IPv6 shown as plain IPv4."""
    host, port = str(sockaddr[0]), int(sockaddr[1])
    host = client_ip(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_ip(host: str) -> str:
    """The client's IP as we count it: ``::ffff:1.2.3.4`` is ``1.2.3.4``."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return host


#: Hosts that mean "every interface": the start-up line shows ``localhost``.
_WILDCARDS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})


def ready_line(host: str, ws_port: int, tcp_port: int, *, console: bool, tls: bool = False) -> str:
    """The start-up line operators (and scripts) wait for::

        ready — ws://localhost:8765  tcp localhost:8888  (type help for commands)

    ``localhost`` for a wildcard host, else the host, bracketed if IPv6.
    Scripts parse it with ``ready — wss?://\\S+:(\\d+)\\s+tcp \\S+:(\\d+)``
    (``wss://`` under ``--tls-cert``: then the TCP port speaks TLS too).
    """
    name = "localhost" if host in _WILDCARDS else host.strip("[]")
    if ":" in name:
        name = f"[{name}]"
    hint = "  (type help for commands)" if console else ""
    scheme = "wss" if tls else "ws"
    return f"ready — {scheme}://{name}:{ws_port}  tcp {name}:{tcp_port}{hint}"


def raise_fd_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; the soft limit after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = FD_LIMIT_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, target, exc)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return FD_LIMIT_CAP if soft == resource.RLIM_INFINITY else int(soft)


def descriptors_in_use() -> int:
    """Open descriptors of this process (an estimate where /proc is absent)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


class Throttle:
    """Log lines for a recurring event: the first ``burst`` in each
    ``interval`` seconds, then silence until the next interval, whose first
    line reports how many occurrences went unlogged."""

    __slots__ = ("_burst", "_interval", "_logged", "_start", "_suppressed")

    def __init__(self, interval: float, burst: int = 1) -> None:
        self._interval = interval
        self._burst = burst
        self._start = -math.inf
        self._logged = 0
        self._suppressed = 0

    def due(self) -> int | None:
        """Count one occurrence: None to stay quiet, else how many went
        unlogged before this one (to report with it)."""
        now = trio.current_time()
        if now - self._start >= self._interval:
            self._start, self._logged = now, 0
        if self._logged >= self._burst:
            self._suppressed += 1
            return None
        self._logged += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed


class AcceptLoop:
    """Accepts on listening sockets and starts a handler task per connection.

    Unlike ``trio.serve_listeners``, a full descriptor table (EMFILE) is
    logged at most once per :data:`CAPACITY_LOG_INTERVAL`, with a count.
    """

    def __init__(self, handler: Callable[[trio.SocketStream], Awaitable[None]], name: str) -> None:
        self._handler = handler
        self._name = name
        self._throttle = Throttle(CAPACITY_LOG_INTERVAL)

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        handler_nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept on every listener until cancelled."""
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept, listener, handler_nursery)
            task_status.started()

    async def _accept(self, listener: trio.SocketListener, handler_nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in CAPACITY_ERRNOS:
                    raise
                self._capacity_error(exc)
                await trio.sleep(CAPACITY_BACKOFF)
                continue
            handler_nursery.start_soon(self._handler, stream)

    def _capacity_error(self, exc: OSError) -> None:
        unlogged = self._throttle.due()
        if unlogged is not None:
            log.error(
                "%s accept: %s (and %d more times since the last such line); retrying",
                self._name, os.strerror(exc.errno or 0), unlogged,
            )  # fmt: skip
