"""The writer process's life: start, the restart backoff, and reaping.

The writer is ``python -m storage_proc`` in a fresh interpreter, holding its
end of a socket pair: it imports the standard library only (never trio or
the server), starts fast, and shares no memory with the server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Final

import trio

import storage_proc
from storage_proc import wire
from storage_proc.pg import display
from storage_proc.writer import WriterOptions

from .errors import StorageError

log = logging.getLogger("livenotify.storage")

#: Restart backoff: first retry after 0.1 s, doubling to 5 s. A writer that
#: ran for STABLE_AFTER seconds resets it; a crash loop settles at 5 s.
BACKOFF_INITIAL: Final = 0.1
BACKOFF_MAX: Final = 5.0
STABLE_AFTER: Final = 10.0
#: A writer that has not said Ready by then is hung: a cold interpreter on
#: a loaded machine takes about a second, a big quick_check a few more.
START_TIMEOUT: Final = 60.0
#: How long a writer gets to exit after its socket closed, before SIGKILL.
EXIT_TIMEOUT: Final = 5.0


_PYTHONPATH: Final = os.environ.get("PYTHONPATH", "")


def backoff(failures: int) -> float:
    """Seconds before restart number ``failures + 1``."""
    return float(min(BACKOFF_MAX, BACKOFF_INITIAL * 2**failures))


class WriterProcess:
    """One incarnation of the writer process and our end of its socket."""

    def __init__(self, process: trio.Process, sock: socket.socket) -> None:
        self.process = process
        self.pid = process.pid
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.frames = wire.FrameBuffer()
        self.started_at = time.monotonic()
        self.reaped = False
        self.exitcode: int | None = None
        #: The first message, wire.Ready, once started.
        self.ready: wire.Ready | None = None

    async def send(self, message: wire.ToWriter) -> None:
        """Send one message (only ever from the bridge's feeder task)."""
        await self.stream.send_all(wire.encode(message))

    async def receive(self) -> object | None:
        """The next message from the writer; None once its end is closed."""
        while True:
            message = self.frames.next()
            if message is not None:
                return message
            try:
                data = await self.stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            self.frames.feed(data)

    def exit_text(self) -> str:
        """How it ended, for the log."""
        code = self.exitcode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    async def reap(self) -> None:
        """Close our end, wait for the process to exit (killing it if it
        lingers: a stopped or wedged writer), and record its status."""
        if self.reaped:
            return
        self.reaped = True
        await self.stream.aclose()  # a live writer reads EOF: commits, exits
        with trio.move_on_after(EXIT_TIMEOUT) as waited:
            await self.process.wait()
        if waited.cancelled_caught:
            log.warning("storage writer pid=%d did not exit; killing it", self.pid)
            self.process.kill()
            with trio.CancelScope(shield=True):
                await self.process.wait()
        self.exitcode = self.process.returncode


async def start_writer(options: WriterOptions) -> WriterProcess:
    """Start a writer and wait for its Ready; StorageError if it cannot."""
    ours, theirs = socket.socketpair()
    command = [
        sys.executable,
        "-m",
        "storage_proc",
        str(theirs.fileno()),
        json.dumps(dataclasses.asdict(options)),
    ]
    # The child finds storage_proc where we did, installed or not.
    root = os.path.dirname(os.path.dirname(os.path.abspath(storage_proc.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, _PYTHONPATH]))}
    try:
        process = await trio.lowlevel.open_process(
            command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()  # the child has its own copy now
    writer = WriterProcess(process, ours)
    try:
        with trio.fail_after(START_TIMEOUT):
            first = await writer.receive()
    except trio.TooSlowError:
        first = wire.Fatal(f"storage writer did not start within {START_TIMEOUT:.0f}s")
    if not isinstance(first, wire.Ready):
        with trio.CancelScope(shield=True):
            await writer.reap()
        if isinstance(first, wire.Fatal):
            raise StorageError(first.message)
        raise StorageError(f"storage writer exited during start-up ({writer.exit_text()})")
    writer.ready = first
    log.info("storage writer started pid=%d db=%s", writer.pid, display(options.path))
    if first.schema_before == 0:
        log.info("storage schema created (version %d)", first.schema_after)
    elif first.schema_before != first.schema_after:
        log.info(
            "storage schema upgraded from version %d to %d", first.schema_before, first.schema_after
        )
    if first.log:
        state = (
            "kept from the last run"
            if first.log.get("kept")
            else "new: the last stop was not clean"
            if first.log.get("previous")
            else "new database"
        )
        log.info("history epoch %s head=%s: %s", first.log["epoch"], first.log["head"], state)
    return writer


async def restart_writer(
    dead: WriterProcess,
    start: Callable[[], Awaitable[WriterProcess]],
    failures: int,
    backlog: int,
    *,
    quiet: bool,
) -> tuple[WriterProcess, int]:
    """Log ``dead``'s end and start a successor with ``start`` after the
    backoff, retrying until one starts; the new writer and the failure count."""
    delay = backoff(failures)
    failures += 1
    log.log(
        logging.WARNING if quiet else logging.ERROR,
        "storage writer pid=%d died (%s); restarting in %.1fs, %d writes to replay",
        dead.pid,
        dead.exit_text(),
        delay,
        backlog,
    )
    while True:
        await trio.sleep(delay)
        try:
            return await start(), failures
        except StorageError as exc:
            delay = backoff(failures)
            failures += 1
            log.error("storage writer failed to start: %s; retrying in %.1fs", exc, delay)
