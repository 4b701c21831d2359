"""The admin console and the start-up line: what an operator sees."""

from __future__ import annotations

import io
import re

import pytest

from livenotify.config import Config
from livenotify.console import PROMPT, Console
from livenotify.hub import Hub
from livenotify.listeners import ready_line
from livenotify.stats import collect
from tests.helpers import READY, LineClient, running_server


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _console(stdin: io.StringIO, out: io.StringIO) -> tuple[Console, list[str]]:
    hub = Hub(Config(events=("a", "b")))
    shutdowns: list[str] = []
    return Console(hub, lambda: collect(hub), shutdowns.append, stdin, out), shutdowns


async def test_prompt_on_a_terminal() -> None:
    out = io.StringIO()
    console, shutdowns = _console(_Terminal("events\nexit\n"), out)
    await console.run()
    # One prompt per line read, the last one before end of input.
    assert out.getvalue().count(PROMPT) == 3
    assert out.getvalue().startswith(PROMPT + "a b\n")
    assert shutdowns == ["console exit"]


async def test_no_prompt_on_a_pipe() -> None:
    out = io.StringIO()
    console, _ = _console(io.StringIO("stats\n"), out)
    await console.run()
    assert PROMPT not in out.getvalue()
    assert re.match(r"connections=0 subscribers=0 .* transports=- disconnects=-$", out.getvalue())


@pytest.mark.parametrize(
    ("host", "shown"),
    [("::", "localhost"), ("0.0.0.0", "localhost"), ("", "localhost"),
     ("127.0.0.1", "127.0.0.1"), ("::1", "[::1]"), ("[::1]", "[::1]"),
     ("example.org", "example.org")],
)  # fmt: skip
def test_ready_line(host: str, shown: str) -> None:
    line = ready_line(host, 8765, 8888, console=True)
    assert line == f"ready — ws://{shown}:8765  tcp {shown}:8888  (type help for commands)"
    m = READY.search(line)
    assert m is not None and m.groups() == ("8765", "8888")
    assert "help" not in ready_line(host, 1, 2, console=False)


def test_ready_line_is_shown_at_log_level_warning_and_messages_are_debug() -> None:
    with running_server("--log-level", "warning") as srv:
        # running_server found the ready line (ws port first, then tcp).
        client = LineClient("127.0.0.1", srv.tcp_port)
        client.recv()
        client.send_line("ping")
        client.recv_type("pong")
        client.close()
        srv.command("stats", r"connections_total=1 ")
        # The ready line is the one INFO line at this level.
        info = [line for line in srv.lines if " INFO " in line]
        assert len(info) == 1 and "livenotify.ready: ready — ws://" in info[0], info
    with running_server() as srv:
        mark = srv.mark()
        client = LineClient("127.0.0.1", srv.tcp_port)
        client.recv()
        client.send_line("ping")
        client.recv_type("pong")
        client.close()
        srv.wait_log(r"disconnect tcp .* reason=eof", start=mark)
        assert srv.log.count(r"INFO livenotify\.ready: ready — ws://127\.0\.0\.1:\d+  tcp ") == 1
        assert srv.log.count(r"recv #") == 0  # per-message lines are DEBUG
