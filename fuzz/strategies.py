"""Hypothesis strategies for the wire protocol: JSON values, client texts
(valid, nearly valid and garbage), byte streams, limits and server messages."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from livenotify import protocol
from livenotify.config import Limits

#: A small catalog so seed-form messages are found often.
CATALOG = ("a", "b", "furniture_created")

#: Message types a server sends; a notification named like one of them would
#: decode as that message instead (see test_server_roundtrip).
SERVER_TYPES = frozenset(
    {"welcome", "registered", "confirmed", "subscribed", "unsubscribed", "events",
     "subscriptions", "pong", "ping", "published", "dropped", "goodbye", "error", "help"}
)  # fmt: skip
CLIENT_TYPES = ("register", "subscribe", "unsubscribe", "events", "subscriptions", "ping",
                "pong", "publish", "exit")  # fmt: skip

# Text without lone surrogates: what a strict UTF-8 decoder (ours on TCP,
# wsproto's on WebSocket) can hand the protocol.
safe_text = st.text(max_size=20)
# Python's int <-> str conversion refuses more than 4300 digits; keep far below.
json_ints = st.integers(min_value=-(2**70), max_value=2**70)

#: JSON scalars the server can carry verbatim: finite floats only, no lone
#: surrogates (test_what_the_server_relays_encodes feeds the server the rest).
json_scalars = (
    st.none() | st.booleans() | json_ints | st.floats(allow_nan=False, allow_infinity=False)
    | safe_text
)  # fmt: skip


def json_values(scalars: st.SearchStrategy[Any] = json_scalars) -> st.SearchStrategy[Any]:
    """Nested JSON values built from ``scalars``, a few levels deep."""
    return st.recursive(
        scalars,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(safe_text, kids, max_size=4),
        max_leaves=12,
    )


json_objects = st.dictionaries(safe_text, json_values(), max_size=5)

event_names = st.from_regex(r"[A-Za-z0-9_.:\-]{1,12}", fullmatch=True)
bad_event_names = st.one_of(
    st.just(""),
    st.text(min_size=1, max_size=12).filter(lambda s: s != "*" and not s.isascii()),
    st.sampled_from(["a b", "a/b", "x\n", "é", "a,b", "**", "\x00"]),
    json_values().filter(lambda v: not isinstance(v, str)),
)
emails = st.from_regex(r"[a-z0-9._%+\-]{1,20}@[a-z0-9\-]{1,12}\.[a-z]{2,6}", fullmatch=True)


@st.composite
def limits(draw: st.DrawFn) -> Limits:
    """Limits small enough for generated input to cross them."""
    return Limits(
        max_message_bytes=draw(st.sampled_from([16, 64, 200, 1024, 64 * 1024])),
        max_json_depth=draw(st.integers(1, 12)),
        max_events_per_message=draw(st.integers(1, 8)),
        max_event_name=draw(st.integers(1, 16)),
        max_email_length=draw(st.integers(3, 60)),
    )


def _events_value() -> st.SearchStrategy[Any]:
    names = st.one_of(event_names, st.just("*"), st.sampled_from(CATALOG), bad_event_names)
    return st.one_of(st.lists(names, max_size=10), names, json_values())


@st.composite
def message_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Objects shaped like client messages: right and wrong field types."""
    kind = draw(
        st.one_of(st.sampled_from(CLIENT_TYPES), st.sampled_from(CATALOG), safe_text, json_values())
    )
    obj: dict[str, Any] = {"type": kind}
    if draw(st.booleans()):
        obj["email"] = draw(st.one_of(emails, safe_text, json_values()))
    if draw(st.booleans()):
        obj["events"] = draw(_events_value())
    if draw(st.booleans()):
        obj["event"] = draw(st.one_of(event_names, st.sampled_from(CATALOG), st.just("*"),
                                      bad_event_names))  # fmt: skip
    if draw(st.booleans()):
        obj["data"] = draw(json_values())
    if draw(st.booleans()):
        obj["message"] = draw(st.one_of(safe_text, json_values()))
    if draw(st.booleans()):
        obj["token"] = draw(st.one_of(safe_text, json_values()))
    obj.update(draw(json_objects))
    if draw(st.booleans()):
        obj["type"] = kind  # extra keys may have overwritten it
    return obj


@st.composite
def mutated(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> str:
    """``texts``, sometimes cut, spliced or sprinkled with special characters."""
    text = draw(texts)
    for _ in range(draw(st.integers(0, 3))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["cut", "insert", "delete"]))
        if op == "cut":
            text = text[:pos]
        elif op == "insert":
            piece = draw(
                st.one_of(
                    st.sampled_from(['"', "\\", "{", "}", "[", "]", ",", ":", "\x00", "\n",
                                     "\\u0000", "\\ud800", "1e999", "NaN", "-Infinity",
                                     "9" * 5000, "\u2028", "\r"]),
                    st.text(max_size=4),
                )
            )  # fmt: skip
            text = text[:pos] + piece + text[pos:]
        else:
            text = text[:pos] + text[pos + 1 :]
    return text


def deep_json(depth: int, inner: str = "1") -> str:
    """A JSON value nested ``depth`` levels: arrays and objects alternating."""
    text = inner
    for level in range(depth):
        text = f'{{"k":{text}}}' if level % 2 else f"[{text}]"
    return text


#: Anything a client could put in one TCP line or WebSocket text frame.
client_texts = st.one_of(
    st.text(),
    message_dicts().map(json.dumps),
    message_dicts().map(lambda d: json.dumps(d, ensure_ascii=False)),
    mutated(message_dicts().map(json.dumps)),
    st.integers(0, 80).map(lambda n: '{"type":"ping","x":' + deep_json(n) + "}"),
    st.integers(0, 3000).map(lambda n: "[" * n),
    st.sampled_from(["{}", "[]", "null", "1", '"x"', "NaN", '{"type":1}', '{"type":null}']),
)

#: Human command lines (TCP lines that do not start with ``{``).
command_lines = st.one_of(
    st.text(),
    mutated(
        st.tuples(
            st.sampled_from(
                [
                    "register",
                    "subscribe",
                    "unsubscribe",
                    "events",
                    "subscriptions",
                    "list",
                    "ping",
                    "pong",
                    "exit",
                    "quit",
                    "SUBSCRIBE",
                    "Exit",
                    "x",
                ]
            ),
            st.lists(st.one_of(event_names, emails, st.just("*"), safe_text), max_size=10),
        ).map(lambda t: " ".join([t[0], *t[1]]))
    ),
)

#: Anything a server (or something pretending to be one) could send.
server_texts = st.one_of(
    st.text(),
    mutated(
        st.fixed_dictionaries(
            {"type": st.sampled_from(sorted(SERVER_TYPES)) | safe_text},
            optional={
                "events": st.lists(safe_text) | json_values(),
                "email": safe_text | json_values(),
                "timestamp": safe_text | json_values(),
                "event": safe_text | json_values(),
                "id": safe_text | json_values(),
                "delivered": json_ints | json_values(),
                "count": json_ints | st.booleans() | json_values(),
                "reason": safe_text | json_values(),
                "code": st.sampled_from(sorted(protocol.ERROR_CODES)) | json_values(),
                "message": safe_text | json_values(),
            },
        ).map(json.dumps)
    ),
)

#: Byte streams for the TCP line decoder: lines of plausible text, over-long
#: runs, invalid UTF-8, NUL, CR/LF in every arrangement.
stream_pieces = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=30).map(lambda s: s.encode()),
    st.sampled_from(
        [
            b"\n",
            b"\r\n",
            b"\r",
            b"\x00",
            b"\xff",
            b"\xc3",
            b"\xed\xa0\x80",
            b"\xf0\x9f\x98",
            b'{"type":"ping"}\n',
        ]
    ),
    st.integers(0, 300).map(lambda n: b"x" * n),
)
byte_streams = st.lists(stream_pieces, max_size=30).map(b"".join)


# --------------------------------------------------------------------------
# Server messages

str_tuples = st.lists(safe_text, max_size=5).map(tuple)
notification_events = safe_text.filter(lambda s: s not in SERVER_TYPES)

server_messages: st.SearchStrategy[protocol.ServerMessage] = st.one_of(
    st.builds(protocol.Welcome, str_tuples),
    st.builds(protocol.Registered, safe_text, str_tuples),
    st.builds(protocol.Subscribed, str_tuples),
    st.builds(protocol.Unsubscribed, str_tuples),
    st.builds(protocol.EventsList, str_tuples),
    st.builds(protocol.Subscriptions, str_tuples),
    st.builds(protocol.PongReply, safe_text),
    st.builds(protocol.ServerPing),
    st.builds(protocol.Published, safe_text, safe_text, json_ints),
    st.builds(protocol.Dropped, json_ints),
    st.builds(protocol.Goodbye, safe_text),
    st.builds(protocol.HelpReply, str_tuples),
    st.builds(protocol.Error, st.sampled_from(sorted(protocol.ERROR_CODES)), safe_text),
    st.builds(
        protocol.Notification,
        notification_events,
        st.dictionaries(safe_text.filter(lambda k: k != "type"), json_values(), max_size=5),
    ),
)
