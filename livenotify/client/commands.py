"""What a person types at the client's prompt, parsed; and the help text."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HELP", "VERBS", "Command", "CommandError", "parse_command"]

HELP = """\
commands:
  subscribe <event>...     receive notifications of these events (* means every event)
  unsubscribe <event>...   stop receiving them
  events                   the events the server offers
  list                     my subscriptions
  ping                     check that the server answers
  help                     this text
  exit                     leave (also Ctrl-D or Ctrl-C)
Tab completes commands and event names."""

#: Every command word, in the order completion offers them.
VERBS: tuple[str, ...] = (
    "subscribe", "unsubscribe", "events", "list", "ping", "help", "exit",
)  # fmt: skip
_ALIASES = {"quit": "exit", "subscriptions": "list", "?": "help", "sub": "subscribe",
            "unsub": "unsubscribe"}  # fmt: skip
_TAKE_EVENTS = frozenset({"subscribe", "unsubscribe"})


class CommandError(Exception):
    """The line is not a command; ``str()`` says why, for the user."""


@dataclass(frozen=True, slots=True)
class Command:
    """One parsed command line."""

    verb: str
    events: tuple[str, ...] = ()


def parse_command(line: str) -> Command | None:
    """The command on ``line``; None for a blank line; :class:`CommandError` otherwise.

    Event names may be separated by spaces or commas, as the server's own
    ``subscribe a,b`` command allows.
    """
    words = line.replace(",", " ").split()
    if not words:
        return None
    verb = words[0].lower()
    verb = _ALIASES.get(verb, verb)
    args = tuple(dict.fromkeys(words[1:]))  # de-duplicated, order kept
    if verb not in VERBS:
        raise CommandError(f"unknown command {words[0][:32]!r}; type 'help' for the commands")
    if verb in _TAKE_EVENTS:
        if not args:
            raise CommandError(f"usage: {verb} <event>...  (Tab shows the events)")
        return Command(verb, args)
    if args:
        raise CommandError(f"{verb!r} takes no arguments")
    return Command(verb)
