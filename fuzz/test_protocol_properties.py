"""Properties of the sans-IO protocol (livenotify/protocol.py).

One rule above all (h11's): any input yields a message or a ProtocolError
with a stable code, never another exception. Then: what the server encodes
decodes back to the same message, and every limit holds, exactly at its
boundary. Failures hypothesis has found are pinned as ``@example``s.
"""

from __future__ import annotations

import email.utils as email_utils
import json
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from fuzz.strategies import (
    CATALOG,
    SERVER_TYPES,
    byte_streams,
    client_texts,
    command_lines,
    deep_json,
    emails,
    event_names,
    json_values,
    limits,
    server_messages,
    server_texts,
)
from livenotify import protocol
from livenotify.config import Limits
from livenotify.protocol import ERROR_CODES, LineDecoder, ProtocolError

CLIENT_MESSAGES = (
    protocol.Register, protocol.Subscribe, protocol.Unsubscribe, protocol.EventsRequest,
    protocol.SubscriptionsRequest, protocol.Ping, protocol.Pong, protocol.Publish,
    protocol.SeedEvent, protocol.Exit, protocol.HelpRequest,
)  # fmt: skip
SERVER_MESSAGES = (
    protocol.Welcome, protocol.Registered, protocol.Subscribed, protocol.Unsubscribed,
    protocol.EventsList, protocol.Subscriptions, protocol.PongReply, protocol.ServerPing,
    protocol.Published, protocol.Dropped, protocol.Goodbye, protocol.Error, protocol.HelpReply,
    protocol.Notification,
)  # fmt: skip
EVENT_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
DEFAULT = Limits()
any_limits = st.one_of(st.just(DEFAULT), limits())


def strict_json(text: str) -> Any:
    """Parse as a strict RFC 8259 reader would (no NaN/Infinity)."""

    def reject(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=reject)


def assert_stable(exc: ProtocolError) -> None:
    """A ProtocolError carries a known code and a reply that survives the wire."""
    assert exc.code in ERROR_CODES, exc.code
    assert isinstance(exc.message, str) and exc.message
    reply = protocol.encode_server(exc.reply())
    reply.encode("utf-8")  # sendable
    assert "\n" not in reply
    assert protocol.decode_server(reply) == protocol.Error(exc.code, exc.message)


def depth(value: Any) -> int:
    """Nesting depth as the protocol counts it: one per array or object."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def assert_event_names(events: tuple[str, ...], lim: Limits, *, allow_all: bool) -> None:
    assert len(events) == len(set(events))
    for name in events:
        if allow_all and name == protocol.ALL_EVENTS:
            continue
        assert EVENT_NAME.fullmatch(name) and len(name) <= lim.max_event_name, name


def assert_message_within_limits(msg: protocol.ClientMessage, lim: Limits) -> None:
    """What a decoder accepts respects every limit (shared by JSON and commands)."""
    assert isinstance(msg, CLIENT_MESSAGES)
    match msg:
        case protocol.Register(email):
            assert len(email) <= lim.max_email_length
            assert email.count("@") == 1 and "." in email.split("@")[1]
            assert not any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in email)
        case protocol.Subscribe(events) | protocol.Unsubscribe(events):
            assert len(events) <= lim.max_events_per_message
            assert_event_names(events, lim, allow_all=True)
        case protocol.Publish(event, fields, token):
            assert_event_names((event,), lim, allow_all=False)
            assert set(fields) <= {"data", "message"}
            assert isinstance(fields.get("message", ""), str)
            assert token is None or isinstance(token, str)
        case protocol.SeedEvent(event, fields, token):
            assert event in CATALOG and fields["type"] == event
            assert token is None or isinstance(token, str)


# --------------------------------------------------------------------------
# Any input: a message or a ProtocolError, nothing else


@given(text=client_texts, lim=any_limits)
@example(text='{"type":"ping","x":' + "[" * 5000 + "]" * 5000 + "}", lim=Limits())
@example(text='{"type":"ping","n":' + "9" * 5000 + "}", lim=Limits())
@example(text='{"type":"ping","n":NaN}', lim=Limits())
def test_decode_client_yields_message_or_protocol_error(text: str, lim: Limits) -> None:
    try:
        msg = protocol.decode_client(text, CATALOG, lim)
    except ProtocolError as exc:
        assert_stable(exc)
        return
    assert_message_within_limits(msg, lim)
    # Accepted means: within the size, NUL and depth limits, and a JSON object.
    assert len(text) <= lim.max_message_bytes and "\x00" not in text
    assert depth(json.loads(text)) <= lim.max_json_depth


@given(line=command_lines, lim=any_limits)
def test_decode_command_yields_message_or_protocol_error(line: str, lim: Limits) -> None:
    try:
        msg = protocol.decode_command(line, lim)
    except ProtocolError as exc:
        assert_stable(exc)
        return
    assert_message_within_limits(msg, lim)
    assert not isinstance(msg, protocol.Publish | protocol.SeedEvent)


@given(text=server_texts | client_texts)
def test_decode_server_yields_message_or_protocol_error(text: str) -> None:
    try:
        msg = protocol.decode_server(text)
    except ProtocolError as exc:
        assert_stable(exc)
        return
    assert isinstance(msg, SERVER_MESSAGES)


# --------------------------------------------------------------------------
# TCP framing


def reference_lines(data: bytes, max_bytes: int) -> list[tuple[str, str]]:
    """What LineDecoder must report for ``data``, computed the obvious way."""
    *complete, tail = data.split(b"\n")
    out: list[tuple[str, str]] = []
    for raw in complete:
        # The limit is on the line's text: a CRLF's "\r" does not count.
        raw = raw.removesuffix(b"\r")
        if len(raw) > max_bytes:
            out.append(("error", protocol.MESSAGE_TOO_LARGE))
            continue
        if b"\x00" in raw:
            out.append(("error", protocol.NUL_BYTE))
            continue
        try:
            out.append(("line", raw.decode("utf-8")))
        except UnicodeDecodeError:
            out.append(("error", protocol.INVALID_UTF8))
    # An unfinished line is reported as soon as it is known to be too long
    # (one byte over may still be the "\r" of a CRLF).
    if len(tail.removesuffix(b"\r")) > max_bytes or len(tail) > max_bytes + 1:
        out.append(("error", protocol.MESSAGE_TOO_LARGE))
    return out


def feed(chunks: list[bytes], max_bytes: int) -> list[tuple[str, str]]:
    """Feed ``chunks`` as a transport would, checking the buffer bound throughout."""
    decoder = LineDecoder(max_bytes)
    out: list[tuple[str, str]] = []
    for chunk in chunks:
        decoder.receive_data(chunk)
        # The bound the issue sets: the limit (and a CR) plus the chunk just received.
        assert len(decoder._buf) <= max_bytes + 1 + len(chunk)
        while (item := decoder.next_line()) is not None:
            if isinstance(item, ProtocolError):
                assert_stable(item)
                out.append(("error", item.code))
            else:
                assert isinstance(item, protocol.Line)
                assert "\n" not in item.text and "\x00" not in item.text
                assert len(item.text.encode("utf-8")) <= max_bytes
                out.append(("line", item.text))
        # Between reads the decoder holds at most one unfinished line.
        assert len(decoder._buf) <= max_bytes + 1
    return out


@given(
    data=byte_streams,
    max_bytes=st.sampled_from([1, 2, 8, 30, 100, 64 * 1024]),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
@example(data=b"xx\r\n", max_bytes=2, cuts=[])  # a CRLF's CR does not count
@example(data=b"xxx\r\n", max_bytes=2, cuts=[3])  # ... but the text beyond it does
@example(data=b"xx\r\r\n", max_bytes=2, cuts=[1, 2, 3, 4])  # only one CR is the ending
@example(data=b"xxx", max_bytes=2, cuts=[1, 2])  # unfinished over-long line
@example(data=b"xxx\nab\n", max_bytes=2, cuts=[3])  # skip only the long line's tail
def test_line_decoder_whole_or_split(data: bytes, max_bytes: int, cuts: list[int]) -> None:
    expected = reference_lines(data, max_bytes)
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert feed([data], max_bytes) == expected
    assert feed(chunks, max_bytes) == expected
    if len(data) <= 400:
        assert feed([data[i : i + 1] for i in range(len(data))], max_bytes) == expected


def test_line_decoder_memory_stays_bounded_on_an_endless_line() -> None:
    decoder = LineDecoder(1024)
    reports = []
    for _ in range(1000):  # 16 MB without a newline
        decoder.receive_data(b"x" * 16 * 1024)
        while (item := decoder.next_line()) is not None:
            reports.append(item)
        assert len(decoder._buf) <= 1024
    decoder.receive_data(b"tail\nping\n")
    reports.extend(iter(decoder.next_line, None))
    assert [getattr(r, "code", None) for r in reports] == [protocol.MESSAGE_TOO_LARGE, None]
    assert reports[-1] == protocol.Line("ping")


# --------------------------------------------------------------------------
# Server messages round-trip


@given(msg=server_messages)
def test_server_messages_roundtrip(msg: protocol.ServerMessage) -> None:
    text = protocol.encode_server(msg)
    assert "\n" not in text
    text.encode("utf-8")
    strict_json(text)
    assert protocol.decode_server(text) == msg


@given(
    event=event_names,
    fields=st.dictionaries(st.text(max_size=8), json_values(), max_size=5),
    notification_id=st.text(min_size=1, max_size=32),
)
def test_notification_keeps_every_field(
    event: str, fields: dict[str, Any], notification_id: str
) -> None:
    ts = protocol.timestamp()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts)
    obj = protocol.notification(event, fields, notification_id, ts)
    assert obj["type"] == event
    assert {k: v for k, v in obj.items() if k != "type"} == {
        "id": notification_id, "timestamp": ts, **{k: v for k, v in fields.items() if k != "type"}
    }  # fmt: skip
    assume(event not in SERVER_TYPES)
    decoded = protocol.decode_server(protocol.encode(obj))
    assert decoded == protocol.Notification(event, {k: v for k, v in obj.items() if k != "type"})


# What a client may send that the server then re-encodes for others: strings
# with lone-surrogate escapes and numbers that overflow a float.
_RAW_VALUES = st.sampled_from(
    ['"\\ud800"', '"ok \\udfff"', '{"\\ud83d":1}', "1e999", "-1e400", "[1e309]", '"\\u00e9"']
)


@st.composite
def relayed_client_texts(draw: st.DrawFn) -> str:
    raw = draw(st.one_of(_RAW_VALUES, json_values().map(json.dumps)))
    return draw(
        st.sampled_from([
            '{"type":"publish","event":"a","data":' + raw + "}",
            '{"type":"b","x":' + raw + "}",
            '{"type":"register","email":' + (raw if raw.startswith('"') else '"x@y.io"') + "}",
            '{"type":"register","email":"\\ud800@example.com"}',
        ])
    )  # fmt: skip


@given(text=client_texts | relayed_client_texts())
@example(text='{"type":"publish","event":"a","data":"\\ud800"}')
@example(text='{"type":"publish","event":"a","data":1e999}')
@example(text='{"type":"register","email":"\\ud800@example.com"}')
def test_what_the_server_relays_encodes(text: str) -> None:
    try:
        msg = protocol.decode_client(text, CATALOG, DEFAULT)
    except ProtocolError:
        return
    ts = protocol.timestamp()
    match msg:
        case protocol.Publish(event, fields) | protocol.SeedEvent(event, fields):
            body = {k: v for k, v in fields.items() if k != "type"}
            out = protocol.encode(protocol.notification(event, body, "id1", ts))
        case protocol.Register(email):
            out = protocol.encode_server(protocol.Registered(email, ()))
        case _:
            return
    out.encode("utf-8")  # what Payload.line()/ws_frame() do
    strict_json(out)


# --------------------------------------------------------------------------
# Every limit, exactly at its boundary


@given(lim=limits(), size=st.integers(0, 1200))
def test_message_size_limit(lim: Limits, size: int) -> None:
    text = '{"type":"ping","p":"' + "x" * size + '"}'
    try:
        msg = protocol.decode_client(text, CATALOG, lim)
    except ProtocolError as exc:
        assert len(text) > lim.max_message_bytes
        assert exc.code == protocol.MESSAGE_TOO_LARGE
    else:
        assert len(text) <= lim.max_message_bytes and msg == protocol.Ping()


@given(size=st.integers(10, 40))
@example(size=20)
def test_message_size_limit_counts_bytes(size: int) -> None:
    text = '{"type":"ping","p":"' + "é" * size + '"}'
    lim = Limits(max_message_bytes=40)
    assume(len(text.encode()) > lim.max_message_bytes)
    with pytest.raises(ProtocolError) as info:
        protocol.decode_client(text, CATALOG, lim)
    assert info.value.code == protocol.MESSAGE_TOO_LARGE


@given(
    max_depth=st.integers(1, 40),
    nesting=st.integers(0, 45),
    inner=st.sampled_from(["1", '"[{"', '"\\"["', "[]", "{}"]),
)
def test_json_depth_limit(max_depth: int, nesting: int, inner: str) -> None:
    lim = Limits(max_json_depth=max_depth)
    value = deep_json(nesting, inner)
    text = '{"type":"ping","x":' + value + "}"
    total = 1 + depth(json.loads(value))  # the outer object counts
    try:
        msg = protocol.decode_client(text, CATALOG, lim)
    except ProtocolError as exc:
        assert exc.code == protocol.JSON_TOO_DEEP and total > max_depth
    else:
        assert msg == protocol.Ping() and total <= max_depth


@given(
    lim=limits(),
    names=st.lists(event_names | st.just("*"), max_size=12),
    kind=st.sampled_from(["subscribe", "unsubscribe"]),
    form=st.sampled_from(["json", "command"]),
)
def test_events_per_message_limit(lim: Limits, names: list[str], kind: str, form: str) -> None:
    lim = Limits(max_events_per_message=lim.max_events_per_message, max_event_name=12)
    try:
        if form == "json":
            msg = protocol.decode_client(json.dumps({"type": kind, "events": names}), (), lim)
        else:
            assume(names)
            msg = protocol.decode_command(" ".join([kind, *names]), lim)
    except ProtocolError as exc:
        assert exc.code == protocol.TOO_MANY_EVENTS
        assert len(names) > lim.max_events_per_message
    else:
        assert len(names) <= lim.max_events_per_message
        cls = protocol.Subscribe if kind == "subscribe" else protocol.Unsubscribe
        assert msg == cls(tuple(dict.fromkeys(names)))


@given(
    max_len=st.integers(6, 300),
    local=st.integers(1, 300),
    form=st.sampled_from(["json", "command"]),
)
def test_email_length_limit(max_len: int, local: int, form: str) -> None:
    lim = Limits(max_email_length=max_len)
    email = "u" * local + "@ex.io"
    try:
        if form == "json":
            msg = protocol.decode_client(json.dumps({"type": "register", "email": email}), (), lim)
        else:
            msg = protocol.decode_command(f"register {email}", lim)
    except ProtocolError as exc:
        assert exc.code == protocol.INVALID_EMAIL and len(email) > max_len
    else:
        assert msg == protocol.Register(email) and len(email) <= max_len


@given(email=emails | st.text(max_size=30))
def test_email_shape(email: str) -> None:
    try:
        msg = protocol.decode_client(json.dumps({"type": "register", "email": email}), (), DEFAULT)
    except ProtocolError as exc:
        # A NUL, even as a \u0000 escape, is refused before the address is read.
        expected = protocol.NUL_BYTE if "\x00" in email else protocol.INVALID_EMAIL
        assert exc.code == expected
    else:
        assert_message_within_limits(msg, DEFAULT)
        # An accepted address is one bare addr-spec with nothing invisible in it.
        assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in email)
        assert email_utils.parseaddr(email) == ("", email)


@given(
    name=event_names | st.text(max_size=20) | st.just("*"),
    max_name=st.integers(1, 16),
    kind=st.sampled_from(["subscribe", "publish"]),
)
def test_event_name_limit(name: str, max_name: int, kind: str) -> None:
    lim = Limits(max_event_name=max_name)
    valid = bool(EVENT_NAME.fullmatch(name)) and len(name) <= max_name
    if kind == "subscribe":
        obj: dict[str, Any] = {"type": "subscribe", "events": [name]}
        valid = valid or name == "*"
    else:
        obj = {"type": "publish", "event": name, "data": {}}
    try:
        msg = protocol.decode_client(json.dumps(obj), (), lim)
    except ProtocolError as exc:
        # A NUL, even as a \u0000 escape, is refused before the name is read.
        expected = protocol.NUL_BYTE if "\x00" in name else protocol.INVALID_EVENT
        assert exc.code == expected and not valid, (name, exc)
    else:
        assert valid
        assert msg in (protocol.Subscribe((name,)), protocol.Publish(name, {"data": {}}))


@given(text=st.text(max_size=40))
def test_nul_is_refused_everywhere(text: str) -> None:
    line = text[: len(text) // 2] + "\x00" + text[len(text) // 2 :]
    with pytest.raises(ProtocolError) as info:
        protocol.decode_client(line, CATALOG, DEFAULT)
    assert info.value.code == protocol.NUL_BYTE or len(line) > DEFAULT.max_message_bytes
    with pytest.raises(ProtocolError) as info:
        protocol.decode_command(line, DEFAULT)
    assert info.value.code == protocol.NUL_BYTE
