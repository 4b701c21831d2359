"""``ws://`` / ``wss://`` URLs as the clients use them (stdlib only).

Shared by the terminal client's WebSocket connection and the WebSocket
publisher: both connect with ``events=`` (empty: subscribed to nothing), the
terminal client because it subscribes explicitly as on TCP, a producer so it
is not subscribed to ``*`` and its close stays clean (issue 13, point 9).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["check_url", "host_header", "unsubscribed_url"]


def check_url(url: str) -> tuple[str, int, bool]:
    """``(host, port, tls)`` of a ``ws://`` or ``wss://`` URL; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError("not a ws:// or wss:// URL")
    if not parts.hostname:
        raise ValueError("no host in the URL")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("bad port in the URL") from None
    tls = parts.scheme == "wss"
    return parts.hostname, port if port is not None else (443 if tls else 80), tls


def unsubscribed_url(url: str) -> str:
    """``url`` with ``events=`` (no subscriptions) in place of any ``events`` parameter."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "events"]
    query.append(("events", ""))
    return urlunsplit(parts._replace(path=parts.path or "/", query=urlencode(query)))


def host_header(host: str, port: int, tls: bool) -> str:
    """The HTTP ``Host`` value: the port only when not the scheme's default."""
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if tls else 80) else f"{name}:{port}"
