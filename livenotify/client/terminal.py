"""The two faces of the client: a prompt for people, plain lines for pipes.

:class:`PromptUi` runs prompt_toolkit on an asyncio loop in its own thread,
for as long as the client runs; the Trio side hands it work with
``call_soon_threadsafe`` and gets typed lines back through its Trio token.
Everything printed goes through that loop too: while a prompt is up, the
prompt is erased, the text printed, and the prompt redrawn with the
half-typed text and cursor intact, so a notification never garbles the line
being typed (see :meth:`PromptUi._flush`). One long-lived loop (rather than ``prompt()`` in a fresh
thread per line) means there is no window between two prompts in which a
print could race an event loop being torn down.

:class:`PipeUi` reads stdin lines in a worker thread and prints plain lines:
server output on stdout, the client's own remarks on stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Literal, Protocol, TextIO

import trio
from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.renderer import print_formatted_text as render_fragments
from prompt_toolkit.styles import Style

from .commands import VERBS

__all__ = ["Interrupted", "OutputClosed", "PipeUi", "PromptUi", "Ui"]

Kind = Literal["reply", "notification", "note", "warning"]

#: Seconds to wait for the terminal thread to put the terminal back as it
#: was (cooked mode, cursor shown) when the client ends.
CLOSE_TIMEOUT = 3.0
PROMPT = "livenotify> "
OFFLINE_PROMPT = "(offline) livenotify> "

_STYLE = Style.from_dict(
    {
        "note": "ansibrightblack",
        "warning": "ansired",
        "header": "bold",
        "prompt": "ansicyan",
        "offline": "ansired",
    }
)


class Interrupted(Exception):
    """Ctrl-C at the prompt: the user wants to leave."""


class OutputClosed(Exception):
    """stdout is a pipe whose reader went away (``| head``)."""


class Ui(Protocol):
    """What the client needs from a terminal or a pipe."""

    #: True for a person at a terminal (prompts, colours, reconnection).
    interactive: bool

    def show(self, text: str, kind: Kind = "reply") -> None:
        """Print something the server said (a reply, a notification, raw JSON)."""
        ...

    def note(self, text: str) -> None:
        """The client's own remark (connected, reconnecting...); quiet in a pipe."""
        ...

    def warn(self, text: str) -> None:
        """Something the user must know (bad input, lost connection)."""
        ...

    def error(self, text: str) -> None:
        """A fatal error, the last words before a failing exit: one plain line on stderr."""
        ...

    async def read_line(self, prompt: str, *, commands: bool) -> str | None:
        """The next input line; None at end of input (Ctrl-D); raises :class:`Interrupted`."""
        ...

    def set_connected(self, connected: bool) -> None:
        """Show whether the server is reachable (the prompt says "offline")."""
        ...

    def close(self) -> None:
        """Give the terminal back as it was."""
        ...


class PipeUi:
    """Plain lines: stdin read in a thread, no prompts, no colours."""

    interactive = False

    def __init__(
        self,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._err = stderr or sys.stderr

    def show(self, text: str, kind: Kind = "reply") -> None:
        try:
            print(text, file=self._out, flush=True)
        except BrokenPipeError:
            # Point stdout at /dev/null so the interpreter's final flush
            # does not complain a second time.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._out.fileno())
            raise OutputClosed from None

    def note(self, text: str) -> None:
        pass  # a script wants data on stdout and silence elsewhere

    def warn(self, text: str) -> None:
        print(text, file=self._err, flush=True)

    def error(self, text: str) -> None:
        self.warn(text)

    async def read_line(self, prompt: str, *, commands: bool) -> str | None:
        line = await trio.to_thread.run_sync(self._in.readline, abandon_on_cancel=True)
        return line.rstrip("\r\n") if line else None

    def set_connected(self, connected: bool) -> None:
        pass

    def close(self) -> None:
        pass


class CommandCompleter(Completer):
    """Completes command words, then event names: the catalog for
    ``subscribe``, my subscriptions for ``unsubscribe``."""

    def __init__(self, source: Callable[[], tuple[Sequence[str], Collection[str]]]) -> None:
        #: Returns (catalog, my subscriptions); read from the terminal
        #: thread, so it must only read attributes (tuples swap atomically).
        self._source = source

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        before = document.text_before_cursor
        words = before.replace(",", " ").split()
        current = words[-1] if words and not before[-1].isspace() and before[-1] != "," else ""
        if len(words) == 0 or (len(words) == 1 and current):
            candidates: Sequence[str] = VERBS
        else:
            verb = words[0].lower()
            typed = set(words[1:-1] if current else words[1:])
            catalog, mine = self._source()
            if verb == "subscribe":
                candidates = [e for e in (*catalog, "*") if e not in mine]
            elif verb == "unsubscribe":
                candidates = sorted(mine)
            else:
                return
            candidates = [e for e in candidates if e not in typed]
        for word in candidates:
            if word.startswith(current):
                yield Completion(word, start_position=-len(current))


_Result = tuple[Literal["line", "eof", "interrupt"], str]


class PromptUi:
    """A prompt_toolkit prompt in a terminal thread; see the module docstring."""

    interactive = True

    def __init__(self, source: Callable[[], tuple[Sequence[str], Collection[str]]]) -> None:
        self._connected = True
        self._closed = False
        self._completer = CommandCompleter(source)
        self._session: PromptSession[str] = PromptSession(style=_STYLE)
        self._prompt_task: asyncio.Task[None] | None = None
        self._pending: list[tuple[str, str]] = []
        self._pending_lock = threading.Lock()
        self._flush_scheduled = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run_loop, name="livenotify-terminal", daemon=True
        )
        self._thread.start()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    # -- output (any thread) ------------------------------------------------

    def _call(self, fn: Callable[[], None]) -> None:
        if self._closed:
            fn()
            return
        try:
            self._loop.call_soon_threadsafe(fn)
        except RuntimeError:  # the loop is gone: we are shutting down
            fn()

    def show(self, text: str, kind: Kind = "reply") -> None:
        if kind == "notification":
            header, _, rest = text.partition("\n")
            self._emit([("class:header", header)] + ([("", "\n" + rest)] if rest else []))
        else:
            self._emit([("", text)])

    def note(self, text: str) -> None:
        self._emit([("class:note", text)])

    def warn(self, text: str) -> None:
        self._emit([("class:warning", text)])

    def error(self, text: str) -> None:
        # Only said before any prompt is up (or after): stderr, uncoloured,
        # so it can be redirected like any command's error.
        print(text, file=sys.stderr, flush=True)

    def _emit(self, fragments: list[tuple[str, str]]) -> None:
        # Lines queue up and the terminal thread prints all that are waiting
        # in one go: a burst of notifications costs one redraw of the
        # prompt, not one each.
        with self._pending_lock:
            self._pending.extend([*fragments, ("", "\n")])
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self._call(self._flush)

    def _flush(self) -> None:
        # In the terminal thread.
        with self._pending_lock:
            fragments, self._pending = self._pending, []
            self._flush_scheduled = False
        if not fragments:
            return
        app = self._session.app
        if not app.is_running:
            print_formatted_text(FormattedText(fragments), style=_STYLE, end="")
            return
        # Print above the prompt in one synchronous step: erase it, write,
        # redraw it with the half-typed text. prompt_toolkit's own
        # run_in_terminal would switch the terminal to cooked mode while it
        # prints, and a key pressed in that moment is lost to the line
        # discipline (Ctrl-D vanishes, Ctrl-C becomes SIGINT). Input stays
        # attached, so a cursor-position answer still in flight is read as
        # input as usual rather than echoed; answers come in request order,
        # so the last one, for the request below, is what stays.
        output = app.output
        app.renderer.erase(leave_alternate_screen=False)
        render_fragments(output, FormattedText(fragments), _STYLE)
        output.flush()
        app.renderer.request_absolute_cursor_position()
        app.invalidate()

    def set_connected(self, connected: bool) -> None:
        self._connected = connected

        def refresh() -> None:
            if self._session.app.is_running:
                self._session.app.invalidate()

        self._call(refresh)

    def _message(self) -> FormattedText:
        if self._connected:
            return FormattedText([("class:prompt", PROMPT)])
        return FormattedText([("class:offline", OFFLINE_PROMPT)])

    # -- input ---------------------------------------------------------------

    async def read_line(self, prompt: str, *, commands: bool) -> str | None:
        token = trio.lowlevel.current_trio_token()
        send, receive = trio.open_memory_channel[_Result](1)

        def deliver(result: _Result) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(send.send_nowait, result)

        def start() -> None:
            self._prompt_task = self._loop.create_task(self._prompt(prompt, commands, deliver))

        self._call(start)
        try:
            kind, text = await receive.receive()
        except BaseException:
            self._call(self._cancel_prompt)
            raise
        if kind == "interrupt":
            raise Interrupted
        return None if kind == "eof" else text

    async def _prompt(
        self, prompt: str, commands: bool, deliver: Callable[[_Result], None]
    ) -> None:
        # KeyboardInterrupt must not escape an asyncio task (it would stop
        # the loop), so every way out becomes a result.
        result: _Result
        try:
            text = await self._session.prompt_async(
                self._message if commands else prompt,
                completer=self._completer if commands else None,
                complete_while_typing=False,
                enable_history_search=False,
            )
            result = ("line", text)
        except KeyboardInterrupt:
            result = ("interrupt", "")
        except EOFError:
            result = ("eof", "")
        deliver(result)

    def _cancel_prompt(self) -> None:
        if self._prompt_task is not None and not self._prompt_task.done():
            self._prompt_task.cancel()

    # -- end -------------------------------------------------------------------

    def close(self) -> None:
        if self._closed or not self._thread.is_alive():
            self._closed = True
            return

        async def finish() -> None:
            self._cancel_prompt()
            # Let the cancelled prompt restore the terminal and pending
            # prints reach it before the loop stops.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if others:
                await asyncio.wait(others, timeout=CLOSE_TIMEOUT)

        future = asyncio.run_coroutine_threadsafe(finish(), self._loop)
        with contextlib.suppress(Exception):
            future.result(CLOSE_TIMEOUT + 1)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT)
