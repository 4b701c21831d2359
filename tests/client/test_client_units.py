"""The client's pure parts: how messages read, what may be typed, what Tab
offers, how long reconnection waits."""

from __future__ import annotations

import random
from datetime import datetime

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from livenotify.client.commands import Command, CommandError, parse_command
from livenotify.client.connection import Backoff, address
from livenotify.client.render import clean, local_time, notification, reply
from livenotify.client.terminal import CommandCompleter
from livenotify.protocol import Error, Notification, Registered, ServerPing, decode_server

SEED = {
    "type": "furniture_created",
    "furniture": {"furniture_id": "673a", "nombre": "Mesa de Roble", "altura": 75},
    "id": "abc",
    "timestamp": "2024-01-15T14:30:00.000Z",
}


def test_seed_notification_reads_as_a_header_and_indented_fields() -> None:
    msg = decode_server(
        '{"type":"furniture_created","furniture":{"furniture_id":"673a",'
        '"nombre":"Mesa de Roble","altura":75},"id":"abc","timestamp":"2024-01-15T14:30:00.000Z"}'
    )
    assert isinstance(msg, Notification)
    hhmmss = local_time(SEED)
    assert notification(msg).splitlines() == [
        f"[{hhmmss}] furniture_created",
        "  furniture:",
        "    furniture_id: 673a",
        "    nombre: Mesa de Roble",
        "    altura: 75",
    ]


def test_console_message_and_publish_data() -> None:
    sent = Notification("news", {"message": "hello", "id": "1", "timestamp": "x"})
    now = datetime(2024, 1, 15, 9, 5, 7).astimezone()
    assert notification(sent, now) == "[09:05:07] news: hello"
    published = Notification("orders", {"data": {"n": 2, "tags": ["a", "b"]}})
    assert notification(published, now).splitlines() == [
        "[09:05:07] orders", "  n: 2", '  tags: ["a", "b"]',
    ]  # fmt: skip


def test_timestamp_is_shown_in_local_time() -> None:
    utc = "2024-01-15T14:30:00.000Z"
    expected = datetime.fromisoformat("2024-01-15T14:30:00+00:00").astimezone()
    assert local_time({"timestamp": utc}) == expected.strftime("%H:%M:%S")


def test_control_characters_from_the_network_are_made_harmless() -> None:
    msg = Notification("news", {"message": "\x1b[2Jgotcha\x07", "who\x1b": "x\ny"})
    text = notification(msg, datetime(2024, 1, 1).astimezone())
    assert "\x1b" not in text and "\x07" not in text
    assert "^[[2Jgotcha^G" in text
    assert "  who^[: x\n    y" in text  # a newline stays inside its field
    assert clean("plain") == "plain"


def test_replies_are_one_line_and_pings_are_silent() -> None:
    assert reply(Registered("a@b.c", ())) == "registered as a@b.c; subscribed to: none"
    assert reply(Error("unknown_event", "unknown events: x")) == (
        "error: unknown events: x [unknown_event]"
    )
    assert reply(ServerPing()) is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("subscribe a b,c a", Command("subscribe", ("a", "b", "c"))),
        ("UNSUBSCRIBE x", Command("unsubscribe", ("x",))),
        ("list", Command("list")),
        ("quit", Command("exit")),
        ("   ", None),
    ],
)
def test_commands_parse(line: str, expected: Command | None) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize("line", ["subscribe", "events now", "launch rockets"])
def test_bad_commands_say_why(line: str) -> None:
    with pytest.raises(CommandError):
        parse_command(line)


def completions(text: str, catalog: tuple[str, ...], mine: tuple[str, ...]) -> list[str]:
    completer = CommandCompleter(lambda: (catalog, mine))
    found = completer.get_completions(Document(text), CompleteEvent(completion_requested=True))
    return [c.text for c in found]


def test_tab_completes_commands_then_events() -> None:
    catalog = ("news", "furniture_created", "furniture_updated")
    assert completions("su", catalog, ()) == ["subscribe"]
    assert completions("subscribe furn", catalog, ()) == ["furniture_created", "furniture_updated"]
    # Not what I already have, nor what is already on the line.
    assert completions("subscribe news ", catalog, ("furniture_updated",)) == [
        "furniture_created", "*",
    ]  # fmt: skip
    assert completions("unsubscribe ", catalog, ("news",)) == ["news"]
    assert completions("events ", catalog, ()) == []


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    step = Backoff.INITIAL
    for delay in delays:
        assert step / 2 <= delay <= step
        step = min(step * Backoff.FACTOR, Backoff.CAP)
    assert max(delays) > Backoff.CAP / 2
    backoff.reset()
    assert backoff.next_delay() <= Backoff.INITIAL


def test_ipv6_addresses_are_bracketed() -> None:
    assert address("::1", 8888) == "[::1]:8888"
    assert address("localhost", 8888) == "localhost:8888"
