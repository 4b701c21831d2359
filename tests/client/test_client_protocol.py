"""The client's side of the liveness and shutdown protocol, against a
scripted peer on a real socket: it answers ``ping`` with ``pong``, survives a
garbled line, and ends as a script expects when the server says goodbye or
just vanishes.

The peer is scripted (not ``livenotify serve``) because these are the
server's rare moves — a ping only comes after an idle timeout, a garbled line
never — and a script makes them happen at once and in a known order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.helpers import ROOT

#: Bound on the whole conversation.
TIMEOUT = 20


class Peer:
    """The server end of one client connection, line by line."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, obj: dict[str, Any] | str) -> None:
        text = obj if isinstance(obj, str) else json.dumps(obj)
        await self.stream.send_all(text.encode() + b"\n")

    async def receive(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some(4096)
            assert data, "the client closed the connection"
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        obj: dict[str, Any] = json.loads(line)
        return obj


@asynccontextmanager
async def scripted_client(
    stdin: bytes, *flags: str, stdout: int | None = None
) -> AsyncIterator[tuple[Peer, list[subprocess.CompletedProcess[bytes]]]]:
    """Run ``livenotify client --email pi@ex.org FLAGS`` against a peer we
    script; the finished process is in the list once the block has ended.
    Its stdout is captured, or goes to the file descriptor ``stdout``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    argv = [sys.executable, "-m", "livenotify", "client", "--host", "127.0.0.1",
            "--port", str(port), "--email", "pi@ex.org", *flags]  # fmt: skip
    result: list[subprocess.CompletedProcess[bytes]] = []

    async def client() -> None:
        out: dict[str, Any] = {"capture_stdout": True} if stdout is None else {"stdout": stdout}
        done = await trio.run_process(
            argv, stdin=stdin, capture_stderr=True, check=False, cwd=str(ROOT), env=env, **out,
        )  # fmt: skip
        result.append(done)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client)
        stream = await listeners[0].accept()
        yield Peer(stream), result
        await stream.aclose()
    for listener in listeners:
        await listener.aclose()


@pytest.mark.parametrize("goodbye", [True, False], ids=["goodbye", "vanished"])
async def test_pong_to_ping_and_exit_status_when_the_server_goes(goodbye: bool) -> None:
    # Empty stdin: end of input at once; --stay keeps it connected.
    with trio.fail_after(TIMEOUT):
        async with scripted_client(b"", "--stay") as (peer, result):
            await peer.send({"type": "welcome", "events": ["news"]})
            assert await peer.receive() == {"type": "register", "email": "pi@ex.org"}
            await peer.send({"type": "registered", "email": "pi@ex.org", "events": ["news"]})
            await peer.send("this is not json")
            await peer.send({"type": "ping"})
            assert await peer.receive() == {"type": "pong"}
            await peer.send({"type": "news", "message": "still here",
                             "timestamp": "2024-01-15T14:30:00.000Z"})  # fmt: skip
            await peer.send({"type": "ping"})
            assert await peer.receive() == {"type": "pong"}
            if goodbye:
                await peer.send({"type": "goodbye", "reason": "shutting_down"})

    done = result[0]
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert "registered as pi@ex.org; subscribed to: news" in stdout
    assert "news: still here" in stdout
    assert "unreadable message from the server" in stderr
    assert "Traceback" not in stderr
    if goodbye:
        assert done.returncode == 0, stderr
        assert "shut down (shutting_down)" in stderr
    else:
        assert done.returncode == 1, stderr
        assert "closed the connection" in stderr


async def test_temporary_register_error_is_retried_with_the_same_address() -> None:
    with trio.fail_after(TIMEOUT):
        async with scripted_client(b"list\n") as (peer, result):
            await peer.send({"type": "welcome", "events": ["news"]})
            assert await peer.receive() == {"type": "register", "email": "pi@ex.org"}
            await peer.send({"type": "error", "code": "storage_busy", "message": "busy"})
            # Not "enter another address": the same one again, shortly.
            assert await peer.receive() == {"type": "register", "email": "pi@ex.org"}
            await peer.send({"type": "registered", "email": "pi@ex.org", "events": []})
            assert await peer.receive() == {"type": "subscriptions"}
            await peer.send({"type": "subscriptions", "events": []})
            assert await peer.receive() == {"type": "exit"}
            await peer.send({"type": "goodbye", "reason": "exit"})

    done = result[0]
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert "registered as pi@ex.org" in done.stdout.decode()
    assert "Traceback" not in stderr


async def test_closed_stdout_ends_quietly_while_a_request_waits() -> None:
    """``| head -1``: the reader of stdout goes away while ``register``
    waits for its answer; the client exits 0 and says nothing more."""
    read_end, write_end = os.pipe()
    with trio.fail_after(TIMEOUT):
        async with scripted_client(b"", "--stay", stdout=write_end) as (peer, result):
            os.close(write_end)
            await peer.send({"type": "welcome", "events": ["news"]})
            assert await peer.receive() == {"type": "register", "email": "pi@ex.org"}
            # Like `head -1`: one line, then the pipe is closed.
            first = await trio.to_thread.run_sync(os.read, read_end, 4096)
            assert first.startswith(b"available events: news")
            os.close(read_end)
            # No answer to register; a notification is what meets the closed pipe.
            await peer.send({"type": "news", "message": "hola",
                             "timestamp": "2024-01-15T14:30:00.000Z"})  # fmt: skip
            while await peer.stream.receive_some(4096):
                pass  # until the client has gone: EOF
    done = result[0]
    stderr = done.stderr.decode()
    assert done.returncode == 0, stderr
    assert stderr == ""


async def test_ctrl_c_while_a_request_waits_still_says_exit() -> None:
    """SIGINT while ``list`` waits for its answer: the server still hears
    ``exit`` before the client goes, and the status is 130."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    argv = [sys.executable, "-m", "livenotify", "client", "--host", "127.0.0.1",
            "--port", str(port), "--email", "pi@ex.org"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await trio.lowlevel.open_process(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=str(ROOT), env=env,
    )  # fmt: skip
    assert proc.stdin is not None and proc.stderr is not None
    try:
        with trio.fail_after(TIMEOUT):
            await proc.stdin.send_all(b"list\n")
            peer = Peer(await listeners[0].accept())
            await peer.send({"type": "welcome", "events": ["news"]})
            assert await peer.receive() == {"type": "register", "email": "pi@ex.org"}
            await peer.send({"type": "registered", "email": "pi@ex.org", "events": []})
            assert await peer.receive() == {"type": "subscriptions"}
            proc.send_signal(signal.SIGINT)  # no answer to "list" is coming
            assert await peer.receive() == {"type": "exit"}
            await peer.send({"type": "goodbye", "reason": "exit"})
            assert await proc.wait() == 128 + signal.SIGINT
            stderr = await proc.stderr.receive_some(65536)
            assert b"Traceback" not in stderr, stderr
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        for listener in listeners:
            await listener.aclose()
