"""The livenotify wire protocol, sans-IO.

Text in, typed messages out; typed messages in, text out. Nothing here knows
about sockets, Trio or time beyond formatting a timestamp: that is what lets
``fuzz/`` hammer it directly.

Errors form one small tree::

    ProtocolError            the peer sent something we will not accept;
                             ``.code`` is stable snake_case, ``.reply()``
                             is the error object to send back

Client messages (what a client sends) are decoded by :func:`decode_client`
(one JSON object) and :func:`decode_command` (a human TCP command line).
Server messages are built by :func:`encode_server` and read back by
:func:`decode_server`, which the terminal client and :class:`Publisher` use.
:class:`LineDecoder` splits a TCP byte stream into bounded UTF-8 lines.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from .config import Limits

__all__ = [
    "ALL_EVENTS",
    "RESERVED_TYPES",
    "ClientMessage",
    "Error",
    "EventsRequest",
    "Exit",
    "LineDecoder",
    "Ping",
    "Pong",
    "ProtocolError",
    "Publish",
    "Register",
    "SeedEvent",
    "ServerMessage",
    "Subscribe",
    "SubscriptionsRequest",
    "Unsubscribe",
    "check_catalog_name",
    "decode_client",
    "decode_command",
    "decode_server",
    "encode",
    "encode_server",
    "notification",
    "timestamp",
]

#: Subscribing to this name means every event.
ALL_EVENTS: Final = "*"

# Stable error codes. Clients match on these, so they never change meaning.
INVALID_JSON: Final = "invalid_json"
INVALID_MESSAGE: Final = "invalid_message"
UNKNOWN_TYPE: Final = "unknown_type"
UNKNOWN_COMMAND: Final = "unknown_command"
UNKNOWN_EVENT: Final = "unknown_event"
INVALID_EVENT: Final = "invalid_event"
INVALID_EMAIL: Final = "invalid_email"
MESSAGE_TOO_LARGE: Final = "message_too_large"
JSON_TOO_DEEP: Final = "json_too_deep"
TOO_MANY_EVENTS: Final = "too_many_events"
TOO_MANY_SUBSCRIPTIONS: Final = "too_many_subscriptions"
INVALID_UTF8: Final = "invalid_utf8"
NUL_BYTE: Final = "nul_byte"
BINARY_FRAME: Final = "binary_frame"
FORBIDDEN: Final = "forbidden"
RATE_LIMITED: Final = "rate_limited"
SLOW_CONSUMER: Final = "slow_consumer"
STORAGE_BUSY: Final = "storage_busy"
TOO_MANY_CONNECTIONS: Final = "too_many_connections"
IDLE_TIMEOUT: Final = "idle_timeout"
SHUTTING_DOWN: Final = "shutting_down"

#: Every code the server may put in an error reply or close reason.
ERROR_CODES: Final = frozenset(
    {
        INVALID_JSON, INVALID_MESSAGE, UNKNOWN_TYPE, UNKNOWN_COMMAND, UNKNOWN_EVENT,
        INVALID_EVENT, INVALID_EMAIL, MESSAGE_TOO_LARGE, JSON_TOO_DEEP, TOO_MANY_EVENTS,
        TOO_MANY_SUBSCRIPTIONS, INVALID_UTF8, NUL_BYTE, BINARY_FRAME, FORBIDDEN,
        RATE_LIMITED, SLOW_CONSUMER, STORAGE_BUSY, TOO_MANY_CONNECTIONS, IDLE_TIMEOUT,
        SHUTTING_DOWN,
    }
)  # fmt: skip

# An event name is a short identifier: letters, digits and ``_ . : -``. That
# keeps names safe in logs, e-mail subjects and the human command syntax.
_EVENT_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
# Deliberately simple: one @, no whitespace or control characters, a dot in
# the domain. Real validation is "the mail arrives".
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f.]+")

_CONTROL_TYPES: Final = frozenset(
    {"register", "subscribe", "unsubscribe", "events", "subscriptions", "ping", "pong",
     "publish", "exit"}
)  # fmt: skip


class ProtocolError(Exception):
    """The peer sent something we will not accept.

    ``code`` is one of :data:`ERROR_CODES`; ``message`` is for humans.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def reply(self) -> Error:
        """The error message to send back to the peer."""
        return Error(self.code, self.message)


# --------------------------------------------------------------------------
# Client messages


@dataclass(frozen=True, slots=True)
class Register:
    email: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EventsRequest:
    pass


@dataclass(frozen=True, slots=True)
class SubscriptionsRequest:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    """A client's answer to the server's liveness ``ping`` (TCP)."""


@dataclass(frozen=True, slots=True)
class Publish:
    """``{"type":"publish","event":EV,"fields":{...},"data":...,"message":"..."}``.

    ``fields`` holds the keys of the ``fields`` object and whichever of
    ``data`` and ``message`` were given; they are what subscribers receive,
    at the top level, besides ``type``, ``id`` and ``timestamp``.
    """

    event: str
    fields: Mapping[str, Any]
    token: str | None = None


@dataclass(frozen=True, slots=True)
class SeedEvent:
    """The seed form: ``{"type": EV, ...}`` broadcast with its fields unchanged."""

    event: str
    fields: Mapping[str, Any]
    token: str | None = None


@dataclass(frozen=True, slots=True)
class Exit:
    pass


ClientMessage = (
    Register | Subscribe | Unsubscribe | EventsRequest | SubscriptionsRequest | Ping | Pong
    | Publish | SeedEvent | Exit
)  # fmt: skip


def _check_depth(text: str, limit: int) -> None:
    # json.loads recurses once per nesting level; a 64 KiB line of "[" would
    # blow the interpreter's recursion limit. Counting brackets is a cheap
    # upper bound, so the exact scan only runs on suspicious input.
    if text.count("[") + text.count("{") <= limit:
        return
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise ProtocolError(JSON_TOO_DEEP, f"JSON nested deeper than {limit} levels")
        elif ch in "]}":
            depth -= 1


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    # 1e999 would become inf, which we could only relay as the non-JSON
    # "Infinity"; refuse it like NaN.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def _has_lone_surrogate(value: object) -> bool:
    # json.loads turns a "\ud800" escape into a lone surrogate, which no
    # UTF-8 encoder accepts: relaying it would fail in every subscriber's writer.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _too_large(text: str, limit: int) -> bool:
    # The limit is in UTF-8 bytes; encoding is only needed when the
    # character count alone cannot decide (a character is at most 4 bytes).
    if len(text) > limit:
        return True
    if len(text) * 4 <= limit:
        return False
    return len(text.encode("utf-8", "surrogatepass")) > limit


def load_object(text: str, limits: Limits) -> dict[str, Any]:
    """Parse one JSON object within the limits, or raise ProtocolError."""
    if _too_large(text, limits.max_message_bytes):
        raise ProtocolError(
            MESSAGE_TOO_LARGE, f"message longer than {limits.max_message_bytes} bytes"
        )
    if "\x00" in text:
        raise ProtocolError(NUL_BYTE, "NUL characters are not allowed")
    _check_depth(text, limits.max_json_depth)
    try:
        obj = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(INVALID_JSON, f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(INVALID_MESSAGE, "expected a JSON object")
    if "\\u" in text and _has_lone_surrogate(obj):
        raise ProtocolError(
            INVALID_UTF8, "a \\u escape encodes a lone surrogate, which is not Unicode text"
        )
    return obj


def check_event_name(name: object, limits: Limits, *, allow_all: bool = True) -> str:
    """Return ``name`` if it is a well-formed event name, else raise."""
    if not isinstance(name, str):
        raise ProtocolError(INVALID_EVENT, "event names are strings")
    if allow_all and name == ALL_EVENTS:
        return name
    if not name or len(name) > limits.max_event_name or not _EVENT_NAME.fullmatch(name):
        raise ProtocolError(
            INVALID_EVENT,
            f"invalid event name {name[:64]!r}: use 1-{limits.max_event_name} letters, "
            "digits or _.:-",
        )
    return name


#: Message types of the protocol itself: an event with one of these names
#: could not be told apart from them in seed form.
RESERVED_TYPES: Final = _CONTROL_TYPES | frozenset(
    {"welcome", "registered", "subscribed", "unsubscribed", "published", "dropped",
     "goodbye", "error"}
)  # fmt: skip


def check_catalog_name(name: str, limits: Limits) -> str:
    """Return ``name`` if it can be an event of the catalog, else raise."""
    check_event_name(name, limits, allow_all=False)
    if name in RESERVED_TYPES:
        raise ProtocolError(INVALID_EVENT, f"{name!r} is a protocol message type")
    return name


def check_email(email: object, limits: Limits) -> str:
    """Return ``email`` if it looks like an address within the limits, else raise."""
    if not isinstance(email, str):
        raise ProtocolError(INVALID_EMAIL, "email must be a string")
    if len(email) > limits.max_email_length:
        raise ProtocolError(
            INVALID_EMAIL, f"email longer than {limits.max_email_length} characters"
        )
    if not _EMAIL.fullmatch(email):
        raise ProtocolError(INVALID_EMAIL, f"not an e-mail address: {email[:64]!r}")
    return email


def _event_list(value: object, limits: Limits) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ProtocolError(INVALID_MESSAGE, '"events" must be a list of event names')
    if len(value) > limits.max_events_per_message:
        raise ProtocolError(
            TOO_MANY_EVENTS, f"at most {limits.max_events_per_message} events per message"
        )
    # dict.fromkeys: de-duplicate, keep the client's order.
    return tuple(dict.fromkeys(check_event_name(v, limits) for v in value))


def _token(obj: Mapping[str, Any]) -> str | None:
    token = obj.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError(INVALID_MESSAGE, '"token" must be a string')
    return token


def _publish_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    # "fields" are published at the top level, as the seed form would;
    # "data" and "message" are fields of their own, as in v1.
    extra = obj.get("fields", {})
    if not isinstance(extra, dict):
        raise ProtocolError(INVALID_MESSAGE, '"fields" must be an object')
    fields = {k: v for k, v in extra.items() if k not in ("type", "token")}
    fields.update((k, obj[k]) for k in ("data", "message") if k in obj)
    return fields


def decode_client(text: str, catalog: Iterable[str], limits: Limits) -> ClientMessage:
    """Decode one JSON object sent by a client.

    ``catalog`` is the set of event names that may appear in seed form
    (``{"type": "furniture_created", ...}``).
    """
    obj = load_object(text, limits)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(INVALID_MESSAGE, 'a message needs a string "type"')
    if kind not in _CONTROL_TYPES:
        if kind in catalog:
            return SeedEvent(kind, obj, _token(obj))
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind[:64]!r}")
    if kind == "register":
        return Register(check_email(obj.get("email"), limits))
    if kind == "subscribe":
        return Subscribe(_event_list(obj.get("events"), limits))
    if kind == "unsubscribe":
        return Unsubscribe(_event_list(obj.get("events"), limits))
    if kind == "events":
        return EventsRequest()
    if kind == "subscriptions":
        return SubscriptionsRequest()
    if kind == "ping":
        return Ping()
    if kind == "pong":
        return Pong()
    if kind == "exit":
        return Exit()
    # publish
    event = check_event_name(obj.get("event"), limits, allow_all=False)
    fields = _publish_fields(obj)
    if "message" in fields and not isinstance(fields["message"], str):
        raise ProtocolError(INVALID_MESSAGE, '"message" must be a string')
    return Publish(event, fields, _token(obj))


_COMMANDS: Final = ("register", "subscribe", "unsubscribe", "events", "subscriptions", "ping",
                    "exit")  # fmt: skip


def decode_command(line: str, limits: Limits) -> ClientMessage:
    """Decode a human command line from TCP (``subscribe a b``, ``exit``...)."""
    if "\x00" in line:
        raise ProtocolError(NUL_BYTE, "NUL characters are not allowed")
    words = line.replace(",", " ").split()
    if not words:
        raise ProtocolError(UNKNOWN_COMMAND, "empty command")
    verb, args = words[0].lower(), words[1:]
    if verb == "register":
        if len(args) != 1:
            raise ProtocolError(INVALID_EMAIL, "usage: register <email>")
        return Register(check_email(args[0], limits))
    if verb in ("subscribe", "unsubscribe"):
        if not args:
            raise ProtocolError(INVALID_MESSAGE, f"usage: {verb} <event>...")
        events = _event_list(args, limits)
        return Subscribe(events) if verb == "subscribe" else Unsubscribe(events)
    if args:
        raise ProtocolError(UNKNOWN_COMMAND, f"{verb[:32]!r} takes no arguments")
    simple: dict[str, ClientMessage] = {
        "events": EventsRequest(),
        "subscriptions": SubscriptionsRequest(),
        "list": SubscriptionsRequest(),
        "ping": Ping(),
        "pong": Pong(),
        "exit": Exit(),
        "quit": Exit(),
    }
    try:
        return simple[verb]
    except KeyError:
        raise ProtocolError(
            UNKNOWN_COMMAND,
            f"unknown command {verb[:32]!r}; commands: {', '.join(_COMMANDS)}",
        ) from None


# --------------------------------------------------------------------------
# Server messages


@dataclass(frozen=True, slots=True)
class Welcome:
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Registered:
    email: str
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Subscribed:
    events: tuple[str, ...]


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
class ServerPing:
    """The server's liveness probe on TCP; answer with ``{"type":"pong"}``."""


@dataclass(frozen=True, slots=True)
class Published:
    event: str
    id: str
    delivered: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """Sent under the ``drop`` slow-consumer policy once the queue has room."""

    count: int


@dataclass(frozen=True, slots=True)
class Goodbye:
    reason: str


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Notification:
    """``{"type": EV, ...}``: every field as published, plus ``id``/``timestamp``."""

    event: str
    fields: Mapping[str, Any] = field(default_factory=dict)


ServerMessage = (
    Welcome | Registered | Subscribed | Unsubscribed | EventsList | Subscriptions | PongReply
    | ServerPing | Published | Dropped | Goodbye | Error | Notification
)  # fmt: skip


def encode(obj: Mapping[str, Any]) -> str:
    """Compact JSON, UTF-8 kept as is: one line, no trailing newline."""
    # ensure_ascii=False keeps payloads readable and short; json.dumps still
    # escapes control characters, so the result never contains a newline.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def encode_server(msg: ServerMessage) -> str:
    """The wire text of a server message."""
    match msg:
        case Welcome(events):
            return encode({"type": "welcome", "events": list(events)})
        case Registered(email, events):
            return encode({"type": "registered", "email": email, "events": list(events)})
        case Subscribed(events):
            return encode({"type": "subscribed", "events": list(events)})
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
        case Published(event, id_, delivered):
            return encode({"type": "published", "event": event, "id": id_, "delivered": delivered})
        case Dropped(count):
            return encode({"type": "dropped", "count": count})
        case Goodbye(reason):
            return encode({"type": "goodbye", "reason": reason})
        case Error(code, message):
            return encode({"type": "error", "code": code, "message": message})
        case Notification(event, fields):
            return encode({**fields, "type": event})
    raise TypeError(f"not a server message: {msg!r}")  # pragma: no cover


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
    obj = load_object(text, limits or Limits())
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(INVALID_MESSAGE, 'a message needs a string "type"')
    if kind == "welcome":
        return Welcome(_str_tuple(obj, "events"))
    if kind == "registered":
        return Registered(_str(obj, "email"), _str_tuple(obj, "events"))
    if kind == "subscribed":
        return Subscribed(_str_tuple(obj, "events"))
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
        return Published(_str(obj, "event"), _str(obj, "id"), _int(obj, "delivered"))
    if kind == "dropped":
        return Dropped(_int(obj, "count"))
    if kind == "goodbye":
        return Goodbye(_str(obj, "reason"))
    if kind == "error":
        return Error(_str(obj, "code"), _str(obj, "message"))
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


# --------------------------------------------------------------------------
# TCP framing


@dataclass(frozen=True, slots=True)
class Line:
    """One complete line, decoded, without its line ending."""

    text: str


class LineDecoder:
    """Split a byte stream into UTF-8 lines of bounded length.

    Feed bytes with :meth:`receive_data`; take results with :meth:`next_line`,
    which returns a :class:`Line`, a :class:`ProtocolError` (the line was too
    long, not UTF-8 or held a NUL; the stream goes on after it), or ``None``
    when more data is needed. An over-long line is reported once and its
    remainder skipped, so the buffer never exceeds the limit.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._buf = bytearray()
        self._skipping = False
        self._scan_from = 0

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_line(self) -> Line | ProtocolError | None:
        while True:
            nl = self._buf.find(b"\n", self._scan_from)
            if nl < 0:
                if len(self._buf) > self._max:
                    if self._skipping:
                        self._buf.clear()
                        self._scan_from = 0
                        continue
                    self._skipping = True
                    self._buf.clear()
                    self._scan_from = 0
                    return ProtocolError(MESSAGE_TOO_LARGE, f"line longer than {self._max} bytes")
                self._scan_from = len(self._buf)
                return None
            raw = bytes(self._buf[:nl])
            del self._buf[: nl + 1]
            self._scan_from = 0
            if self._skipping:
                # The tail of a line already reported as too long.
                self._skipping = False
                continue
            if len(raw) > self._max:
                return ProtocolError(MESSAGE_TOO_LARGE, f"line longer than {self._max} bytes")
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if b"\x00" in raw:
                return ProtocolError(NUL_BYTE, "NUL bytes are not allowed")
            try:
                return Line(raw.decode("utf-8"))
            except UnicodeDecodeError:
                return ProtocolError(INVALID_UTF8, "line is not valid UTF-8")
