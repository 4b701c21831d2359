"""``livenotify client`` end to end: a real server, the client in a real
pseudo-terminal (pexpect) or behind real pipes, as a person or a script uses it.

Every wait is a pexpect or subprocess timeout; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pexpect
import pytest
from pexpect.popen_spawn import PopenSpawn

from tests.helpers import ROOT, free_port, running_server

EVENTS = ("--events", "news,furniture_created,furniture_updated", "--no-worker")
#: Bound on any single expectation: a cold interpreter on a loaded 2-core box.
TIMEOUT = 15
#: Seconds of the server's idle timeout where a test wants liveness probes.
IDLE = 0.5
# Terminal escape sequences prompt_toolkit draws between characters.
ESC = r"(?:\x1b\[[0-9;?]*[A-Za-z])*"


def client_env() -> dict[str, str]:
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONUNBUFFERED": "1"}
    # A pty under pexpect never answers cursor-position requests; a real
    # terminal does. Without this prompt_toolkit waits for the answer.
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"
    for name in ("LIVENOTIFY_HOST", "LIVENOTIFY_PORT"):
        env.pop(name, None)
    return env


def client_argv(*args: str) -> list[str]:
    return ["-m", "livenotify", "client", *args]


@contextmanager
def terminal_client(*args: str) -> Iterator[pexpect.spawn]:
    """The client in a pseudo-terminal, killed if the test did not end it."""
    child = pexpect.spawn(
        sys.executable,
        client_argv(*args),
        env=client_env(),
        cwd=str(ROOT),
        dimensions=(40, 160),
        timeout=TIMEOUT,
        encoding="utf-8",
    )
    try:
        yield child
    finally:
        if child.isalive():
            child.terminate(force=True)


def pipe_client(*args: str) -> PopenSpawn:
    """The client with stdin and stdout (and stderr) on pipes."""
    return PopenSpawn(
        [sys.executable, *client_argv(*args)],
        env=client_env(),
        cwd=str(ROOT),
        timeout=TIMEOUT,
        encoding="utf-8",
    )


def finish(child: PopenSpawn) -> int:
    """Wait for a piped client to exit; its status."""
    child.expect(pexpect.EOF)
    status = child.proc.wait(TIMEOUT)
    return int(status)


def test_interactive_session_prompt_completion_and_notifications() -> None:
    with running_server(*EVENTS) as srv, terminal_client("--port", str(srv.tcp_port)) as c:
        c.expect("available events: news, furniture_created, furniture_updated")
        c.expect("e-mail: ")
        c.sendline("not-an-address")
        c.expect("not an e-mail address: 'not-an-address'")
        c.expect("e-mail: ")  # asked again
        c.sendline("ana@example.com")
        c.expect("registered as ana@example.com; subscribed to: none")
        c.expect("livenotify> ")

        # Tab completes the command word and the event name.
        c.send("subsc\t")
        c.expect("subscribe")
        c.send(" ne\t")
        c.expect("news")
        c.send("\r")
        c.expect("subscribed to: news")
        c.expect("livenotify> ")

        # A notification arrives while a command is half typed: it is
        # printed above, and the half-typed text is drawn again below it.
        c.send("subscribe furn")
        c.expect("furn")
        srv.command("send news hello there", r"sent news .* delivered=1")
        c.expect(r"\[\d\d:\d\d:\d\d\] news: hello there")
        c.expect("livenotify> " + ESC + "subscribe furn")
        c.send("iture_created\r")
        c.expect("subscribed to: furniture_created, news")

        c.sendline("list")
        c.expect("subscribed to: furniture_created, news")
        c.sendline("frobnicate")
        c.expect("unknown command 'frobnicate'")
        c.sendline("subscribe nope")
        c.expect(r"unknown events: nope.*\[unknown_event\]")
        c.sendline("exit")
        c.expect(pexpect.EOF)
        c.close()
        assert c.exitstatus == 0, c.before
        srv.wait_log(r"disconnect tcp .* reason=exit")


def test_reconnects_after_server_restart_and_restores_subscriptions() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="livenotify-client-") as tmp, ExitStack() as stack:
        first_db = str(Path(tmp) / "first.db")
        data = str(Path(tmp) / "data")
        with running_server(*EVENTS, port=port, db=first_db, data_dir=data):
            # The client outlives this first server (it is on the outer stack).
            c = stack.enter_context(
                terminal_client("--port", str(port), "--email", "bo@example.com")
            )
            c.expect(r"registered as bo@example\.com")
            c.expect("livenotify> ")
            c.sendline("subscribe news")
            c.expect("subscribed to: news")
            c.expect("livenotify> ")

        def restart(db: str, restored: int) -> None:
            # The server exited gracefully (it said goodbye first); the
            # client says so, shows it is offline, and comes back by itself.
            c.expect(r"shut down \(shutting_down\); reconnecting")
            c.expect(r"\(offline\) livenotify> ")
            with running_server(*EVENTS, port=port, db=db, data_dir=data) as srv:
                c.expect(r"reconnected to localhost:\d+ as bo@example\.com; subscribed to: news")
                srv.wait_log(rf"register #\d+ bo@example\.com restored={restored}")
                srv.command("send news back again", r"sent news .* delivered=1")
                c.expect(r"news: back again")
                c.expect("livenotify> ")
                if db == first_db:
                    # Ctrl-D leaves. Pressed right as a notification is
                    # printed: the key must not be lost while the prompt is
                    # redrawn.
                    c.sendcontrol("d")
                    c.expect(pexpect.EOF)
                    c.close()
                    assert c.exitstatus == 0

        # A server without our subscriptions (a fresh database): the client
        # subscribes again to what it had.
        restart(str(Path(tmp) / "fresh.db"), restored=0)
        # The first database, which remembers us: the server restores them.
        restart(first_db, restored=1)


def test_piped_commands_print_replies_only_and_exit_at_end_of_input() -> None:
    with running_server(*EVENTS) as srv:
        proc = subprocess.run(
            [sys.executable, *client_argv("--port", str(srv.tcp_port), "--email", "cy@ex.org")],
            input="subscribe news furniture_created\nunsubscribe furniture_created\nlist\n",
            capture_output=True,
            text=True,
            env=client_env(),
            cwd=str(ROOT),
            timeout=TIMEOUT,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""
        assert proc.stdout.splitlines() == [
            "available events: news, furniture_created, furniture_updated",
            "registered as cy@ex.org; subscribed to: none",
            "subscribed to: furniture_created, news",
            "subscribed to: news",
            "subscribed to: news",
        ]
        srv.wait_log(r"disconnect tcp .* reason=exit")


def test_piped_without_email_reads_it_first_and_fails_on_refused_command() -> None:
    with running_server(*EVENTS) as srv:
        proc = subprocess.run(
            [sys.executable, *client_argv("--port", str(srv.tcp_port))],
            input="bad address\ndi@ex.org\nsubscribe nope\n",
            capture_output=True,
            text=True,
            env=client_env(),
            cwd=str(ROOT),
            timeout=TIMEOUT,
        )
        # A refused command makes a script's exit status say so.
        assert proc.returncode == 1
        assert "not an e-mail address: 'bad address'" in proc.stderr
        assert "registered as di@ex.org" in proc.stdout
        assert "[unknown_event]" in proc.stdout
        assert "Traceback" not in proc.stdout + proc.stderr


def test_piped_json_stay_prints_raw_notifications_until_the_server_goes() -> None:
    # A short idle timeout: the server probes the idle client, which answers.
    with running_server(*EVENTS, "--idle-timeout", str(IDLE)) as srv:
        c = pipe_client("--port", str(srv.tcp_port), "--email", "ed@ex.org", "--json", "--stay")
        c.send("subscribe news\n")
        c.sendeof()  # end of input: --stay keeps it running
        c.expect(r'\{"type":"subscribed","events":\["news"\]\}')
        time.sleep(4 * IDLE)  # the idleness under test, not a synchronisation
        srv.command("send news from the console", r"sent news .* delivered=1")
        c.expect(r'\{"type":"news",.*\}\r?\n')
        note = json.loads(c.after.strip())
        assert note["message"] == "from the console"
        assert {"id", "timestamp"} <= note.keys()
        srv.stop()
        assert finish(c) == 0  # the server said goodbye: a normal end
        assert "shut down (shutting_down)" in c.before
        assert not [line for line in srv.lines if "reason=idle_timeout" in line]


def test_sigint_in_a_pipe_ends_quietly() -> None:
    with running_server(*EVENTS) as srv:
        c = pipe_client("--port", str(srv.tcp_port), "--email", "fi@ex.org", "--stay")
        c.expect("registered as fi@ex.org")
        c.kill(signal.SIGINT)
        assert finish(c) == 130
        assert "Traceback" not in c.before


def test_refused_connection_is_one_line_and_a_failure() -> None:
    port = free_port()  # nothing listens there
    proc = subprocess.run(
        [sys.executable, *client_argv("--host", "127.0.0.1", "--port", str(port))],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=client_env(),
        cwd=str(ROOT),
        timeout=TIMEOUT,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"livenotify client: cannot connect to 127.0.0.1:{port}: connection refused\n"
    )


def test_refused_connection_at_a_terminal() -> None:
    port = free_port()
    with terminal_client("--port", str(port)) as c:
        c.expect(pexpect.EOF)
        c.close()
        assert c.exitstatus == 1
        text = re.sub(ESC, "", c.before)
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines == [
            f"livenotify client: cannot connect to localhost:{port}: connection refused"
        ]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_host_and_ctrl_c_leaves_cleanly() -> None:
    with (
        running_server(*EVENTS, host="::1") as srv,
        terminal_client("--host", "::1", "--port", str(srv.tcp_port)) as c,
    ):
        c.expect(r"connected to \[::1\]:\d+")
        c.expect("e-mail: ")
        c.sendline("gu@ex.org")
        c.expect("livenotify> ")
        c.sendline("subscribe furniture_updated")
        c.expect("subscribed to: furniture_updated")
        srv.command("send furniture_updated over six", r"delivered=1")
        c.expect("furniture_updated: over six")
        c.expect("livenotify> ")
        c.sendcontrol("c")
        c.expect(pexpect.EOF)
        c.close()
        assert c.exitstatus == 0
        srv.wait_log(r"disconnect tcp \[?::1.* reason=exit")


def test_sigterm_at_the_prompt_leaves_in_order_and_restores_the_terminal() -> None:
    with (
        running_server(*EVENTS) as srv,
        terminal_client("--port", str(srv.tcp_port), "--email", "ho@ex.org", "--json") as c,
    ):
        c.expect(r'\{"type":"registered","email":"ho@ex.org","events":\[\],"confirmed":true\}')
        c.expect("livenotify> ")
        c.send("half typed")
        c.expect("typed")
        c.kill(signal.SIGTERM)
        c.expect(pexpect.EOF)
        c.close()
        assert c.exitstatus == 128 + signal.SIGTERM
        # prompt_toolkit switched bracketed paste on for the prompt; it is
        # off again at the end: the terminal was given back.
        assert c.before.rfind("\x1b[?2004l") > c.before.rfind("\x1b[?2004h")
        srv.wait_log(r"disconnect tcp .* reason=exit")


def test_server_that_hangs_up_at_once_is_one_reconnecting_line() -> None:
    """A full server accepts and closes (``too_many_connections``) at every
    retry: the terminal says "reconnecting" once for the outage, not once
    per retry, and "reconnected" when a connection takes."""
    refusals = 3
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(TIMEOUT)
        port = server.getsockname()[1]
        with terminal_client("--host", "127.0.0.1", "--port", str(port),
                             "--email", "bo@example.com") as c:  # fmt: skip

            def converse(conn: socket.socket) -> None:
                conn.sendall(b'{"type":"welcome","events":["news"]}\n')
                request = conn.makefile("rb").readline()
                assert json.loads(request) == {"type": "register", "email": "bo@example.com"}
                conn.sendall(b'{"type":"registered","email":"bo@example.com","events":[]}\n')

            first, _ = server.accept()
            with first:
                converse(first)
                c.expect("livenotify> ")
            for _ in range(refusals):
                conn, _ = server.accept()
                with conn:
                    conn.sendall(b'{"type":"error","code":"too_many_connections",'
                                 b'"message":"connection limit reached"}\n')  # fmt: skip
            last, _ = server.accept()
            with last:
                converse(last)
                c.expect(r"reconnected to 127\.0\.0\.1:\d+ as bo@example\.com")
                text = re.sub(ESC, "", c.before)
                assert text.count("reconnecting...") == 1, text
                c.sendline("exit")
                c.expect(pexpect.EOF)


def test_help_examples_work_on_the_default_catalog() -> None:
    """Issue 12.7: the examples in the help subscribe to events that exist."""
    from livenotify.client import EPILOG
    from livenotify.config import DEFAULT_EVENTS

    [example] = re.findall(r"subscribe (\S+?)\\n", EPILOG)
    assert example in DEFAULT_EVENTS
    with running_server("--no-worker") as srv:
        c = pipe_client("--port", str(srv.tcp_port), "--email", "gu@ex.org", "--stay")
        c.expect("registered as gu@ex.org")
        c.sendline("help")
        c.expect(r"example: subscribe (\S+)")
        event = c.match.group(1)
        assert event in DEFAULT_EVENTS
        c.sendline(f"subscribe {event}")
        c.expect(f"subscribed to: {event}")
        c.kill(signal.SIGINT)
        assert finish(c) == 130
