"""Server messages: what the server sends, their wire text
(:func:`encode_server`) and its reading back (:func:`decode_server`, for
clients), plus the notification object and its timestamp."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..config import Limits
from .errors import INVALID_MESSAGE, Error, ProtocolError
from .jsontext import load_object


@dataclass(frozen=True, slots=True)
class Welcome:
    events: tuple[str, ...]
    #: The log's head, ``E:N`` (None: a server without positions).
    position: str | None = None


@dataclass(frozen=True, slots=True)
class Recovery:
    """How a ``since`` / ``resume`` went: ``recovered`` is true only when
    the ``replayed`` notifications that follow are every one missed."""

    recovered: bool
    replayed: int


@dataclass(frozen=True, slots=True)
class Registered:
    email: str
    events: tuple[str, ...]
    #: False until the address's owner confirmed it (double opt-in); only
    #: confirmed addresses get notification mails.
    confirmed: bool = True
    #: Only when ``resume`` was asked.
    recovery: Recovery | None = None


@dataclass(frozen=True, slots=True)
class Confirmed:
    """The answer to a valid ``confirm``: ``email`` now gets notification mails."""

    email: str


@dataclass(frozen=True, slots=True)
class Subscribed:
    events: tuple[str, ...]
    #: Only when ``since`` was given.
    recovery: Recovery | None = None
    #: The head when the replay was read (with ``recovery``).
    position: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventsList:
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Subscriptions:
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PongReply:
    timestamp: str


@dataclass(frozen=True, slots=True)
class HelpReply:
    """The answer to ``help``: the human commands with their arguments."""

    commands: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServerPing:
    """The server's liveness probe on TCP; answer with ``{"type":"pong"}``."""


@dataclass(frozen=True, slots=True)
class Published:
    event: str
    id: str
    delivered: int
    #: Its place in the log (None from a server without positions).
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class Dropped:
    """Sent under the ``drop`` slow-consumer policy once the queue has room."""

    count: int


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The answer to ``auth``: the token's user and its ``exp`` (Unix
    seconds; None when it does not expire)."""

    sub: str | None
    expires: int | None


@dataclass(frozen=True, slots=True)
class Goodbye:
    reason: str


@dataclass(frozen=True, slots=True)
class Notification:
    """``{"type": EV, ...}``: every field as published, plus ``id``/``timestamp``."""

    event: str
    fields: Mapping[str, Any] = field(default_factory=dict)


ServerMessage = (
    Welcome | Registered | Confirmed | Subscribed | Unsubscribed | EventsList | Subscriptions
    | PongReply | ServerPing | Published | Dropped | Goodbye | Error | HelpReply | Notification
    | Authenticated
)  # fmt: skip


def encode(obj: Mapping[str, Any]) -> str:
    """Compact JSON, UTF-8 kept as is: one line, no trailing newline."""
    # ensure_ascii=False keeps payloads readable and short; json.dumps still
    # escapes control characters, so the result never contains a newline.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def encode_server(msg: ServerMessage) -> str:
    """The wire text of a server message."""
    match msg:
        case Welcome(events, position):
            obj: dict[str, Any] = {"type": "welcome", "events": list(events)}
            if position is not None:
                obj["position"] = position
            return encode(obj)
        case Registered(email, events, confirmed, recovery):
            obj = {"type": "registered", "email": email, "events": list(events),
                   "confirmed": confirmed}  # fmt: skip
            return encode(_with_recovery(obj, recovery, None))
        case Confirmed(email):
            return encode({"type": "confirmed", "email": email})
        case Subscribed(events, recovery, position):
            obj = {"type": "subscribed", "events": list(events)}
            return encode(_with_recovery(obj, recovery, position))
        case Unsubscribed(events):
            return encode({"type": "unsubscribed", "events": list(events)})
        case EventsList(events):
            return encode({"type": "events", "events": list(events)})
        case Subscriptions(events):
            return encode({"type": "subscriptions", "events": list(events)})
        case PongReply(ts):
            return encode({"type": "pong", "timestamp": ts})
        case ServerPing():
            return encode({"type": "ping"})
        case Published(event, id_, delivered, offset):
            obj = {"type": "published", "event": event, "id": id_, "delivered": delivered}
            if offset is not None:
                obj["offset"] = offset
            return encode(obj)
        case Dropped(count):
            return encode({"type": "dropped", "count": count})
        case Goodbye(reason):
            return encode({"type": "goodbye", "reason": reason})
        case Error(code, message):
            return encode({"type": "error", "code": code, "message": message})
        case HelpReply(commands):
            return encode({"type": "help", "commands": list(commands)})
        case Authenticated(sub, expires):
            return encode({"type": "authenticated", "sub": sub, "expires": expires})
        case Notification(event, fields):
            return encode({**fields, "type": event})
    raise TypeError(f"not a server message: {msg!r}")  # pragma: no cover


def _with_recovery(
    obj: dict[str, Any], recovery: Recovery | None, position: str | None
) -> dict[str, Any]:
    if recovery is not None:
        obj["recovered"] = recovery.recovered
        obj["replayed"] = recovery.replayed
    if position is not None:
        obj["position"] = position
    return obj


def _recovery(obj: Mapping[str, Any]) -> Recovery | None:
    if "recovered" not in obj:
        return None
    recovered = obj["recovered"]
    if not isinstance(recovered, bool):
        raise ProtocolError(INVALID_MESSAGE, '"recovered" must be a boolean')
    return Recovery(recovered, _int(obj, "replayed"))


def _opt_str(obj: Mapping[str, Any], key: str) -> str | None:
    return None if obj.get(key) is None else _str(obj, key)


def _opt_int(obj: Mapping[str, Any], key: str) -> int | None:
    return None if obj.get(key) is None else _int(obj, key)


def _str_tuple(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(INVALID_MESSAGE, f'"{key}" must be a list of strings')
    return tuple(value)


def _str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ProtocolError(INVALID_MESSAGE, f'"{key}" must be a string')
    return value


def _int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(INVALID_MESSAGE, f'"{key}" must be an integer')
    return value


def decode_server(text: str, limits: Limits | None = None) -> ServerMessage:
    """Decode one server message (for clients). Unknown types are notifications."""
    obj = load_object(text, limits or Limits(), escaped_nul=True)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(INVALID_MESSAGE, 'a message needs a string "type"')
    if kind == "welcome":
        return Welcome(_str_tuple(obj, "events"), _opt_str(obj, "position"))
    if kind == "registered":
        confirmed = obj.get("confirmed", True)
        if not isinstance(confirmed, bool):
            raise ProtocolError(INVALID_MESSAGE, '"confirmed" must be a boolean')
        return Registered(_str(obj, "email"), _str_tuple(obj, "events"), confirmed, _recovery(obj))
    if kind == "confirmed":
        return Confirmed(_str(obj, "email"))
    if kind == "subscribed":
        return Subscribed(_str_tuple(obj, "events"), _recovery(obj), _opt_str(obj, "position"))
    if kind == "unsubscribed":
        return Unsubscribed(_str_tuple(obj, "events"))
    if kind == "events":
        return EventsList(_str_tuple(obj, "events"))
    if kind == "subscriptions":
        return Subscriptions(_str_tuple(obj, "events"))
    if kind == "pong":
        return PongReply(_str(obj, "timestamp"))
    if kind == "ping":
        return ServerPing()
    if kind == "published":
        return Published(
            _str(obj, "event"), _str(obj, "id"), _int(obj, "delivered"), _opt_int(obj, "offset")
        )
    if kind == "dropped":
        return Dropped(_int(obj, "count"))
    if kind == "goodbye":
        return Goodbye(_str(obj, "reason"))
    if kind == "error":
        return Error(_str(obj, "code"), _str(obj, "message"))
    if kind == "help":
        return HelpReply(_str_tuple(obj, "commands"))
    if kind == "authenticated":
        sub, expires = obj.get("sub"), obj.get("expires")
        return Authenticated(
            sub if isinstance(sub, str) else None,
            expires if isinstance(expires, int) and not isinstance(expires, bool) else None,
        )
    return Notification(kind, {k: v for k, v in obj.items() if k != "type"})


def timestamp(now: datetime | None = None) -> str:
    """UTC ISO-8601 with milliseconds and ``Z``: ``2024-01-15T14:30:00.000Z``."""
    now = now or datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def notification(
    event: str, fields: Mapping[str, Any], notification_id: str, ts: str
) -> dict[str, Any]:
    """The object subscribers receive: the fields unchanged, ``type`` first,
    ``id`` and ``timestamp`` added unless the publisher already set them."""
    obj: dict[str, Any] = {"type": event}
    obj.update(fields)
    obj["type"] = event
    obj.setdefault("id", notification_id)
    obj.setdefault("timestamp", ts)
    return obj
