"""Client messages: what a client sends, as JSON objects or human TCP
command lines, and the checks on event names and e-mail addresses."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import parseaddr
from typing import Any, Final

from ..config import Limits
from .errors import (
    INVALID_CODE,
    INVALID_EMAIL,
    INVALID_EVENT,
    INVALID_MESSAGE,
    INVALID_POSITION,
    NUL_BYTE,
    TOO_MANY_EVENTS,
    UNKNOWN_COMMAND,
    UNKNOWN_TYPE,
    ProtocolError,
)
from .jsontext import load_object
from .positions import InvalidPosition, parse_position, parse_since

#: Subscribing to this name means every event.
ALL_EVENTS: Final = "*"

# keeps names safe in logs, e-mail subjects and the human command syntax.
_EVENT_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
# Deliberately simple: one @, no whitespace or control characters, a dot in
# the domain. Real validation is "the mail arrives".
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f.]+")

_CONTROL_TYPES: Final = frozenset(
    {"register", "subscribe", "unsubscribe", "events", "subscriptions", "ping", "pong",
     "publish", "exit", "confirm", "auth"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Register:
    email: str
    #: Replay what this e-mail's subscriptions missed since its last connection.
    resume: bool = False


@dataclass(frozen=True, slots=True)
class Confirm:
    """``confirm <code>``: the code of a confirmation mail (double opt-in)."""

    code: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    events: tuple[str, ...]
    #: Replay from here first (a checked ``since`` form; a position object
    #: is given as its text ``E:N``). Durations count back from when the
    #: server acts on it.
    since: str | None = None


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


@dataclass(frozen=True, slots=True)
class Auth:
    """``{"type":"auth","token":T}`` / ``auth <token>``: present a JWT."""

    token: str


@dataclass(frozen=True, slots=True)
class HelpRequest:
    """``help``, a human TCP command: answered with the list of commands."""


ClientMessage = (
    Register | Subscribe | Unsubscribe | EventsRequest | SubscriptionsRequest | Ping | Pong
    | Publish | SeedEvent | Exit | HelpRequest | Confirm | Auth
)  # fmt: skip


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
    {"welcome", "registered", "confirmed", "subscribed", "unsubscribed", "published", "dropped",
     "goodbye", "error", "help", "authenticated"}
)  # fmt: skip


def check_catalog_name(name: str, limits: Limits) -> str:
    """Return ``name`` if it can be an event of the catalog, else raise."""
    check_event_name(name, limits, allow_all=False)
    if name in RESERVED_TYPES:
        raise ProtocolError(INVALID_EVENT, f"{name!r} is a protocol message type")
    return name


#: A confirmation code as :mod:`livenotify.optin` makes them (URL-safe base64).
_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_code(code: object) -> str:
    """Return ``code`` if it could be a confirmation code, else ``invalid_code``."""
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise ProtocolError(INVALID_CODE, "not a confirmation code")
    return code


def check_email(email: object, limits: Limits) -> str:
    """Return ``email`` if it looks like an address within the limits, else raise."""
    if not isinstance(email, str):
        raise ProtocolError(INVALID_EMAIL, "email must be a string")
    if len(email) > limits.max_email_length:
        raise ProtocolError(
            INVALID_EMAIL, f"email longer than {limits.max_email_length} characters"
        )
    if not _EMAIL.fullmatch(email) or not _is_bare_addr_spec(email):
        raise ProtocolError(INVALID_EMAIL, f"not an e-mail address: {email[:64]!r}")
    return email


def _is_bare_addr_spec(email: str) -> bool:
    """True if ``email`` is one plain ``local@domain`` and nothing else.

    The address ends up in mail headers and operators' logs: no control
    character (C0, C1), no invisible format character (Unicode ``Cf``: bidi
    overrides, zero-width joiners) that would make it read as another, and
    no display name, angle brackets, comment, group or second address that
    a mail library would pick apart (``Evil <e@x.com>``, ``<e@x.com>``).
    """
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in email):
        return False
    # parseaddr gives back exactly what it was given only for a bare address.
    if parseaddr(email) != ("", email):
        return False
    # headerregistry checks the RFC 5322 addr-spec grammar (dots, quoting,
    # specials). It flags a non-ASCII local part (RFC 6531 allows it), so
    # non-ASCII characters stand in as ASCII letters for that check.
    ascii_form = "".join(c if c < "\x80" else "x" for c in email)
    try:
        Address(addr_spec=ascii_form)
    except (ValueError, HeaderParseError, IndexError):
        return False
    return True


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


def _publish_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    # "fields" are published at the top level, as the seed form would;
    # "data" and "message" are fields of their own, as in v1.
    extra = obj.get("fields", {})
    if not isinstance(extra, dict):
        raise ProtocolError(INVALID_MESSAGE, '"fields" must be an object')
    fields = {k: v for k, v in extra.items() if k not in ("type", "token")}
    fields.update((k, obj[k]) for k in ("data", "message") if k in obj)
    return fields


def check_since(value: object) -> str:
    """A ``since`` value in text form, or ``invalid_position``."""
    try:
        if isinstance(value, dict):
            return str(parse_position(value))
        parse_since(value, 0.0)
    except InvalidPosition as exc:
        raise ProtocolError(INVALID_POSITION, str(exc)) from None
    assert isinstance(value, str)
    return value


def _since(obj: Mapping[str, Any]) -> str | None:
    value = obj.get("since")
    return None if value is None else check_since(value)


def _resume(obj: Mapping[str, Any]) -> bool:
    value = obj.get("resume", False)
    if not isinstance(value, bool):
        raise ProtocolError(INVALID_MESSAGE, '"resume" must be true or false')
    return value


def _token(obj: Mapping[str, Any]) -> str | None:
    token = obj.get("token")
    if token is not None and not isinstance(token, str):
        raise ProtocolError(INVALID_MESSAGE, '"token" must be a string')
    return token


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
        return Register(check_email(obj.get("email"), limits), _resume(obj))
    if kind == "confirm":
        return Confirm(check_code(obj.get("code")))
    if kind == "subscribe":
        return Subscribe(_event_list(obj.get("events"), limits), _since(obj))
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
    if kind == "auth":
        token = _token(obj)
        if not token:
            raise ProtocolError(INVALID_MESSAGE, 'auth needs a "token"')
        return Auth(token)
    # publish
    event = check_event_name(obj.get("event"), limits, allow_all=False)
    fields = _publish_fields(obj)
    if "message" in fields and not isinstance(fields["message"], str):
        raise ProtocolError(INVALID_MESSAGE, '"message" must be a string')
    return Publish(event, fields, _token(obj))


_COMMANDS: Final = ("register", "confirm", "subscribe", "unsubscribe", "events",
                    "subscriptions", "ping", "auth", "help", "exit")  # fmt: skip

#: What ``help`` answers: each human command with its arguments. JSON objects
#: (``{"type":"subscribe",...}``) work too; see docs/protocol.md.
COMMAND_USAGE: Final = (
    "register <email> [resume]", "confirm <code>",
    "subscribe <event>... [since <position|10m|time|all>]", "unsubscribe <event>...",
    "events", "subscriptions", "ping", "auth <token>", "help", "exit",
)  # fmt: skip


def decode_command(line: str, limits: Limits) -> ClientMessage:
    """Decode a human command line from TCP (``subscribe a b``, ``exit``...)."""
    if "\x00" in line:
        raise ProtocolError(NUL_BYTE, "NUL characters are not allowed")
    words = line.replace(",", " ").split()
    if not words:
        raise ProtocolError(UNKNOWN_COMMAND, "empty command")
    verb, args = words[0].lower(), words[1:]
    if verb == "register":
        resume = len(args) == 2 and args[1].lower() == "resume"
        if len(args) != 1 and not resume:
            raise ProtocolError(INVALID_EMAIL, "usage: register <email> [resume]")
        return Register(check_email(args[0], limits), resume)
    if verb == "confirm":
        if len(args) != 1:
            raise ProtocolError(INVALID_CODE, "usage: confirm <code>")
        return Confirm(check_code(args[0]))
    if verb in ("subscribe", "unsubscribe"):
        since = None
        if verb == "subscribe" and len(args) >= 2 and args[-2].lower() == "since":
            since = check_since(args[-1])
            args = args[:-2]
        if not args:
            raise ProtocolError(INVALID_MESSAGE, f"usage: {verb} <event>...")
        events = _event_list(args, limits)
        return Subscribe(events, since) if verb == "subscribe" else Unsubscribe(events)
    if verb == "auth":
        if len(args) != 1:
            raise ProtocolError(INVALID_MESSAGE, "usage: auth <token>")
        return Auth(args[0])
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
        "help": HelpRequest(),
    }
    try:
        return simple[verb]
    except KeyError:
        raise ProtocolError(
            UNKNOWN_COMMAND,
            f"unknown command {verb[:32]!r}; commands: {', '.join(_COMMANDS)}",
        ) from None
