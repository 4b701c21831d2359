"""Reads waiting for the writer: queued for the feeder, matched to answers.

A read goes over the writer's socket after the writes sent before it, so it
sees them. If the writer dies, its reads are asked again of the next one;
each caller waits no longer than its own timeout.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

import trio

from storage_proc import wire

from .errors import StorageBusy


class _Pending:
    __slots__ = ("answer", "done", "message")

    def __init__(self, message: wire.Query) -> None:
        self.message = message
        self.done = trio.Event()
        self.answer: wire.Answer | None = None


class Reads:
    """Queries in flight toward the writer."""

    def __init__(self, wake: Callable[[], None]) -> None:
        #: Tells the feeder there is something to send.
        self._wake = wake
        self._waiting: dict[int, _Pending] = {}
        self._unsent: deque[_Pending] = deque()
        self._qids = itertools.count(1)

    async def ask(self, name: str, args: tuple[object, ...], timeout: float) -> wire.Answer:
        """Queue a query and wait for its answer; StorageBusy after ``timeout``
        or if storage stopped meanwhile."""
        pending = _Pending(wire.Query(next(self._qids), name, args))
        self._waiting[pending.message.qid] = pending
        self._unsent.append(pending)
        self._wake()
        try:
            with trio.move_on_after(timeout):
                await pending.done.wait()
        finally:
            self._waiting.pop(pending.message.qid, None)
        if pending.answer is None:
            raise StorageBusy(f"storage did not answer within {timeout:g}s")
        return pending.answer

    def next_unsent(self) -> wire.Query | None:
        """The next query for the feeder to send, if any."""
        while self._unsent:
            pending = self._unsent.popleft()
            if pending.message.qid in self._waiting:  # its caller still waits
                return pending.message
        return None

    def answered(self, answer: wire.Answer) -> None:
        """Hand an answer to its caller (ignored if that one gave up)."""
        pending = self._waiting.get(answer.qid)
        if pending is not None:
            pending.answer = answer
            pending.done.set()

    def requeue(self) -> None:
        """The writer died: ask its successor every query still waited for."""
        self._unsent = deque(sorted(self._waiting.values(), key=lambda p: p.message.qid))

    def fail_all(self) -> None:
        """Storage stopped: every waiting caller gets StorageBusy."""
        for pending in self._waiting.values():
            pending.done.set()
        self._waiting.clear()
        self._unsent.clear()
