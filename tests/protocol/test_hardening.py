"""Protocol hardening: e-mail addresses, CRLF at the line limit, escaped NUL,
and the TCP ``help`` command."""

from __future__ import annotations

import json

import pytest

from livenotify import protocol
from livenotify.config import Limits
from livenotify.protocol import Line, LineDecoder, ProtocolError
from tests.helpers import LineClient, running_server

LIMITS = Limits()


def _register(email: str) -> protocol.ClientMessage:
    return protocol.decode_client(json.dumps({"type": "register", "email": email}), (), LIMITS)


@pytest.mark.parametrize(
    "email",
    [
        "ana\x85@example.com",  # C1 NEL
        "ana\x9b@example.com",  # C1 CSI
        "ana\x1b@example.com",  # C0 ESC
        "ana\u202e@example.com",  # RIGHT-TO-LEFT OVERRIDE
        "ana@example.com\u2066",  # LEFT-TO-RIGHT ISOLATE
        "an\u200ba@example.com",  # ZERO WIDTH SPACE (Cf)
        "\ufeffana@example.com",  # BOM (Cf)
        "<evil@x.com>",
        "Evil <evil@x.com>",
        "evil@x.com>",
        "a(comment)@x.com",
        "a,b@x.com",
        "a;b@x.com",
        "group:a@x.com",
        "a..b@x.com",
        ".a@x.com",
    ],
)
def test_email_refuses_controls_format_chars_and_display_forms(email: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        _register(email)
    assert exc.value.code == protocol.INVALID_EMAIL
    # The human command form refuses the same address.
    with pytest.raises(ProtocolError) as exc:
        protocol.decode_command(f"register {email}", LIMITS)
    assert exc.value.code == protocol.INVALID_EMAIL


@pytest.mark.parametrize(
    "email",
    ["ana@example.com", "a.b+tag@mail.example.co.uk", "o'brien@x.io", "josé@correo.es",
     "user@exámple.com", "a_b-c%d@x-y.io"],
)  # fmt: skip
def test_email_accepts_plain_addresses(email: str) -> None:
    assert _register(email) == protocol.Register(email)


@pytest.mark.parametrize("chunked", [False, True])
def test_line_limit_does_not_count_a_trailing_cr(chunked: bool) -> None:
    dec = LineDecoder(10)
    data = b"x" * 10 + b"\r\n" + b"y" * 11 + b"\r\n" + b"z" * 10 + b"\n"
    results: list[Line | ProtocolError] = []
    for piece in [data[i : i + 1] for i in range(len(data))] if chunked else [data]:
        dec.receive_data(piece)
        while (item := dec.next_line()) is not None:
            results.append(item)
    assert results[0] == Line("x" * 10)
    assert isinstance(results[1], ProtocolError)
    assert results[1].code == protocol.MESSAGE_TOO_LARGE
    assert results[2:] == [Line("z" * 10)]


def test_line_limit_still_refuses_one_byte_too_many_without_cr() -> None:
    dec = LineDecoder(10)
    dec.receive_data(b"x" * 11)
    item = dec.next_line()
    assert isinstance(item, ProtocolError) and item.code == protocol.MESSAGE_TOO_LARGE


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"ping","x":"a\\u0000b"}',
        '{"type":"ping","a\\u0000":1}',
        '{"type":"publish","event":"a","data":{"deep":["\\u0000"]}}',
        '{"type":"register","email":"a\\u0000@x.com"}',
        '{"type":"ping","x":"a\x00b"}',  # the raw NUL, for comparison
    ],
)
def test_escaped_nul_is_refused_like_a_raw_nul(text: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        protocol.decode_client(text, ("a",), LIMITS)
    assert exc.value.code == protocol.NUL_BYTE


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    msg = protocol.decode_client('{"type":"publish","event":"a","message":"\\\\u0000"}', (), LIMITS)
    assert msg == protocol.Publish("a", {"message": "\\u0000"})


def test_help_command_decodes_and_encodes() -> None:
    assert protocol.decode_command("HELP", LIMITS) == protocol.HelpRequest()
    text = protocol.encode_server(protocol.HelpReply(protocol.COMMAND_USAGE))
    assert json.loads(text) == {"type": "help", "commands": list(protocol.COMMAND_USAGE)}
    assert protocol.decode_server(text) == protocol.HelpReply(protocol.COMMAND_USAGE)
    assert "help" in protocol.RESERVED_TYPES


def test_help_over_tcp_lists_the_commands() -> None:
    with running_server() as srv:
        client = LineClient("127.0.0.1", srv.tcp_port)
        client.recv()  # welcome
        client.send_line("help")
        reply = client.recv()
        assert reply["type"] == "help"
        assert "subscribe <event>... [since <position|10m|time|all>]" in reply["commands"]
        assert "exit" in reply["commands"]
        # The connection goes on afterwards.
        client.send_line("ping")
        client.recv_type("pong")
        client.close()
