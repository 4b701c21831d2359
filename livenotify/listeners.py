"""Listening sockets: dual-stack for ``::``, one family for a literal
address, one socket per address for a host name.

``--host ::`` is a single IPv6 socket with ``IPV6_V6ONLY`` off, so IPv4
clients arrive on it as ``::ffff:a.b.c.d``. Keepalive is set on the listening
socket; Linux copies it to every accepted socket, which is how dead TCP
peers are found without an application ping.
"""

from __future__ import annotations

import ipaddress
import socket as _socket
from typing import Any

import trio

#: Pending connections the kernel may hold for us (capped by somaxconn):
#: high, so a burst of connects is not refused while we are busy.
BACKLOG = 4096
#: Keepalive probes sent before a silent peer is declared dead, and their
#: spacing relative to the idle time.
KEEPALIVE_PROBES = 4


def _configure(sock: trio.socket.SocketType, keepalive_idle: float) -> None:
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
    idle = max(1, int(keepalive_idle))
    if hasattr(_socket, "TCP_KEEPIDLE"):
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPINTVL, max(1, idle // 4))
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


async def _bind(
    family: int, address: Any, keepalive_idle: float, *, dual_stack: bool = False
) -> trio.SocketListener:
    sock = trio.socket.socket(family, _socket.SOCK_STREAM)
    try:
        _configure(sock, keepalive_idle)
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


async def open_listeners(host: str, port: int, keepalive_idle: float) -> list[trio.SocketListener]:
    """Listen on ``host``:``port`` as described in the module docstring."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        if ip.version == 4:
            return [await _bind(_socket.AF_INET, (str(ip), port), keepalive_idle)]
        dual = ip == ipaddress.IPv6Address("::")
        return [await _bind(_socket.AF_INET6, (str(ip), port), keepalive_idle, dual_stack=dual)]
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
            listeners.append(await _bind(family, address, keepalive_idle))
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


def ready_line(host: str, ws_port: int, tcp_port: int, *, console: bool) -> str:
    """The start-up line operators (and scripts) wait for::

        ready — ws://localhost:8765  tcp localhost:8888  (type help for commands)

    ``localhost`` for a wildcard host, else the host, bracketed if IPv6.
    Scripts parse it with ``ready — ws://\\S+:(\\d+)\\s+tcp \\S+:(\\d+)``.
    """
    name = "localhost" if host in _WILDCARDS else host.strip("[]")
    if ":" in name:
        name = f"[{name}]"
    hint = "  (type help for commands)" if console else ""
    return f"ready — ws://{name}:{ws_port}  tcp {name}:{tcp_port}{hint}"
