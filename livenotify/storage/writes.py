"""What the bridge hands out and checks: mail jobs, argument checks, time stamps."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MailJob:
    """One pending e-mail: a notification for one registered subscriber."""

    outbox_id: int
    notification_id: str
    email: str
    event: str
    #: The notification's JSON text, as it was published.
    payload: str


def check_text(name: str, value: object) -> str:
    """``value`` if it is a str; TypeError naming ``name`` otherwise."""
    # Fail at the call site: a bad value reaching the writer would crash it
    # on every replay.
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    return value


def check_events(events: Sequence[str]) -> tuple[str, ...]:
    """``events`` as a tuple of str; TypeError otherwise (a bare str too)."""
    if isinstance(events, str):
        raise TypeError("events must be a sequence of str, not a str")
    checked = tuple(events)
    for event in checked:
        if type(event) is not str:
            check_text("event", event)
    return checked


class Clock:
    """ISO 8601 UTC with milliseconds, formatted once per millisecond."""

    def __init__(self) -> None:
        self._ms = -1
        self._text = ""

    def now(self) -> str:
        """The current time stamp."""
        ms = time.time_ns() // 1_000_000
        if ms != self._ms:
            seconds, millis = divmod(ms, 1000)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            self._ms, self._text = ms, f"{stamp}.{millis:03d}Z"
        return self._text
