"""Server messages as text for people: one short line per reply, a
timestamped block per notification.

Pure functions: no I/O, no terminal. Everything that came from the network
goes through :func:`clean` first, so a notification cannot move the cursor,
clear the screen or retitle the terminal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ..protocol import (
    Authenticated,
    Confirmed,
    Dropped,
    Error,
    EventsList,
    Goodbye,
    Notification,
    PongReply,
    Published,
    Recovery,
    Registered,
    ServerMessage,
    ServerPing,
    Subscribed,
    Subscriptions,
    Unsubscribed,
    Welcome,
)

__all__ = ["clean", "event_list", "local_time", "notification", "reply"]

#: Fields every notification may carry that the header line already shows
#: (``timestamp``) or that mean nothing to a reader (``id``).
#: Not shown as fields: the header shows the time; the rest is bookkeeping.
_HEADER_FIELDS = frozenset({"id", "timestamp", "offset", "epoch"})
#: Nesting shown as indented lines; anything deeper is printed as compact JSON
#: so one odd payload cannot fill the screen with a staircase.
MAX_DEPTH = 4
#: Characters of one value shown before it is cut with an ellipsis.
MAX_VALUE_CHARS = 2000
INDENT = "  "


def clean(text: str) -> str:
    """``text`` with control characters (escape sequences, bells...) made visible."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _visible(c) for c in text)


def _visible(c: str) -> str:
    if c == "\t":
        return "    "
    code = ord(c)
    return f"^{chr(code + 64)}" if code < 32 else f"\\x{code:02x}" if code < 256 else "?"


def event_list(events: tuple[str, ...] | list[str], empty: str = "none") -> str:
    """``a, b, c`` (cleaned), or ``empty``."""
    return ", ".join(clean(e) for e in events) if events else empty


def reply(msg: ServerMessage) -> str | None:
    """One line for a reply or notice; None for what needs no words (ping)."""
    match msg:
        case Welcome(events):
            return f"available events: {event_list(events)}"
        case Registered(email, events, confirmed):
            line = f"registered as {clean(email)}; subscribed to: {event_list(events)}"
            if not confirmed:
                line += " (no e-mail until you confirm: see the mail sent to you)"
            return line
        case Confirmed(email):
            return f"confirmed: {clean(email)} now gets e-mail"
        case Subscribed(events) | Unsubscribed(events) | Subscriptions(events):
            return f"subscribed to: {event_list(events)}"
        case EventsList(events):
            return f"available events: {event_list(events)}"
        case PongReply(ts):
            return f"pong {clean(ts)}"
        case ServerPing():
            return None
        case Published(event, id_, delivered, offset):
            at = "" if offset is None else f" offset={offset}"
            return f"published {clean(event)} id={clean(id_)} delivered={delivered}{at}"
        case Dropped(count):
            return f"{count} notification(s) dropped: this client was reading too slowly"
        case Goodbye(reason):
            return f"server said goodbye ({clean(reason)})"
        case Error(code, message):
            return f"error: {clean(message)} [{clean(code)}]"
        case Authenticated(sub, expires):
            until = (
                ""
                if expires is None
                else " until " + datetime.fromtimestamp(expires).strftime("%H:%M:%S")
            )
            return f"authenticated as {clean(sub or '-')}{until}"
        case Notification():
            return notification(msg)
    return None  # pragma: no cover - every ServerMessage is matched above


def recovery(result: Recovery) -> str:
    """What a resume after a reconnection recovered, in words."""
    if result.recovered:
        return f"caught up: {result.replayed} missed notifications"
    return "some notifications may be missing (history no longer reaches back)"


def local_time(fields: Mapping[str, Any], now: datetime | None = None) -> str:
    """``HH:MM:SS`` in local time of the notification's ``timestamp``, else of now."""
    stamp = fields.get("timestamp")
    when: datetime | None = None
    if isinstance(stamp, str):
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            when = None
    if when is None or when.tzinfo is None:
        when = now or datetime.now().astimezone()
    return when.astimezone().strftime("%H:%M:%S")


def notification(msg: Notification, now: datetime | None = None) -> str:
    """``[14:30:05] news: hello``, then the other fields indented, one per line.

    The ``data`` of a ``publish`` is the payload itself, so its fields are
    shown directly rather than under a ``data:`` heading.
    """
    fields = dict(msg.fields)
    header = f"[{local_time(fields, now)}] {clean(msg.event)}"
    body: dict[str, Any] = {k: v for k, v in fields.items() if k not in _HEADER_FIELDS}
    if isinstance(body.get("message"), str):
        header += f": {_scalar(body.pop('message'))}"
    data = body.pop("data", None)
    if isinstance(data, Mapping):
        body = {**data, **body}
    elif data is not None:
        body = {"data": data, **body}
    lines = [header]
    _fields(body, 1, lines)
    return "\n".join(lines)


def _fields(obj: Mapping[str, Any], depth: int, lines: list[str]) -> None:
    pad = INDENT * depth
    for key, value in obj.items():
        name = clean(str(key))
        if isinstance(value, Mapping) and value and depth < MAX_DEPTH:
            lines.append(f"{pad}{name}:")
            _fields(value, depth + 1, lines)
        else:
            lines.append(f"{pad}{name}: {_scalar(value, pad + INDENT)}")


def _scalar(value: Any, pad: str = INDENT) -> str:
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, bool | int | float):
        text = json.dumps(value)
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "..."
    # Keep multi-line text inside its field's indentation.
    return "\n".join(clean(part) for part in text.split("\n")).replace("\n", "\n" + pad)
