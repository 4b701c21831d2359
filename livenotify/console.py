"""The admin console on the server's stdin.

Commands: ``send <event> <message>``, ``clients``, ``stats``, ``events``,
``help``, ``exit``. Replies go to stdout, one line each (``clients`` one line
per connection); logs stay on stderr. End of stdin ends the console, not the
server. stdin is read and stdout written in worker threads: a blocking read
or a full pipe never touches the Trio thread, and unlike an ``FdStream`` this
leaves the terminal's file flags alone. When stdin is a terminal, a
``livenotify> `` prompt precedes each command.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

import trio

from . import protocol
from .backplane import BackendUnavailable
from .history import HistoryBusy

if TYPE_CHECKING:
    from .hub import Hub
    from .stats import Snapshot

log = logging.getLogger(__name__)

#: Shown before each command when stdin is a terminal (not to a pipe, where
#: it would only clutter what a script reads).
PROMPT = "livenotify> "

HELP = """\
commands:
  send <event> <message>   publish {"type":<event>,"message":<message>} to its subscribers
  clients                  list connections: address, transport, e-mail, subscriptions, queue
  stats                    counters: connections, subscribers, messages, drops, disconnects
  events                   the event catalog
  help                     this text
  exit                     shut down gracefully (also SIGINT / SIGTERM)"""


class Console:
    """Reads admin commands from a text stream and acts on the server.

    It is handed what it acts on, not the server: the ``hub`` (clients,
    events, ``send``), a ``stats`` callable returning one counters snapshot,
    and a ``shutdown`` callable taking the reason to log.
    """

    def __init__(
        self,
        hub: Hub,
        stats: Callable[[], Snapshot],
        shutdown: Callable[[str], None],
        stdin: TextIO | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.hub = hub
        self._stats = stats
        self._shutdown = shutdown
        self._in = stdin or sys.stdin
        self._out = out or sys.stdout
        self._prompt = _is_terminal(self._in)
        #: Replies of the command being run, written by the console's thread.
        self._pending: list[str] = []

    def _print(self, text: str) -> None:
        self._pending.append(text)

    def _readline(self) -> str:
        if self._prompt:
            self._out.write(PROMPT)
            self._out.flush()
        # Bytes, decoded leniently: a stray non-UTF-8 byte must not end the
        # console (or, in a strict locale, the server).
        buffer = getattr(self._in, "buffer", None)
        if buffer is not None:
            return bytes(buffer.readline()).decode("utf-8", "replace")
        return self._in.readline()

    def _write(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    async def run(self) -> None:
        while True:
            line = await trio.to_thread.run_sync(self._readline, abandon_on_cancel=True)
            if not line:
                log.info("console: end of input; server keeps running")
                return
            try:
                await self.execute(line.strip())
            except Exception:
                log.exception("console: command %r failed", line.strip()[:80])
            if self._pending:
                # In a thread: a stdout pipe nobody drains blocks the console,
                # never the server.
                text, self._pending = "\n".join(self._pending), []
                await trio.to_thread.run_sync(self._write, text, abandon_on_cancel=True)

    async def execute(self, line: str) -> None:
        """Run one console command line."""
        if not line:
            return
        verb, _, rest = line.partition(" ")
        verb = verb.lower()
        if verb == "send":
            await self._send(rest.strip())
        elif verb == "exit":
            self._print("shutting down")
            self._shutdown("console exit")
        elif verb == "clients":
            subs = list(self.hub.connections.values())
            for sub in subs:
                self._print(sub.describe())
            self._print(f"{len(subs)} connection(s)")
        elif verb == "stats":
            self._print(self._stats().line())
        elif verb == "events":
            self._print(" ".join(self.hub.catalog))
        elif verb == "help":
            self._print(HELP)
        else:
            self._print(f"unknown command {verb!r}; type 'help'")

    async def _send(self, rest: str) -> None:
        event, _, message = rest.partition(" ")
        if not event or not message.strip():
            self._print("usage: send <event> <message>")
            return
        hub = self.hub
        if not hub.is_known(event) or event == protocol.ALL_EVENTS:
            self._print(f"unknown event {event!r}; events: {' '.join(hub.catalog)}")
            return
        try:
            sent = await hub.publish(event, {"message": message.strip()})
        except (HistoryBusy, BackendUnavailable) as exc:
            self._print(f"not sent: {exc}")
            return
        self._print(f"sent {event} id={sent.id} delivered={sent.delivered} offset={sent.offset}")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):  # closed or detached
        return False
