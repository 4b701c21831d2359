"""``livenotify client``: the interactive terminal client.

At a terminal it shows the server's events, asks for an e-mail, and gives a
prompt (``subscribe``, ``unsubscribe``, ``events``, ``list``, ``help``,
``exit``, with Tab completion) above which notifications appear as they
arrive. It answers the server's liveness pings, and when the server goes away
it reconnects with backoff and restores its registration and subscriptions.

With stdin or stdout not a terminal it is a quiet filter for scripts: input
lines are commands (the first one the e-mail unless ``--email`` is given),
output is one reply or notification per line (``--json``: the raw objects),
and it ends at end of input (``--stay``: when the server goes).

Modules: :mod:`.app` (the conversation and reconnection), :mod:`.connection`
(one TCP connection, backoff), :mod:`.terminal` (prompt and pipe front-ends),
:mod:`.ws` (one WebSocket connection, for ``--url ws://...``),
:mod:`.render` (messages as text), :mod:`.commands` (what may be typed).

Exit status: 0 on a normal exit (``exit``, Ctrl-D, Ctrl-C at the prompt, the
server's goodbye in a pipe), 1 when the server cannot be reached or (in a
pipe) is lost or refuses a command, 2 for bad arguments, 130 on SIGINT,
128+N on SIGTERM/SIGHUP (which still leave in order).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import trio

from ..config import Limits
from ..protocol import ProtocolError, check_email
from ..wsurl import check_url
from .app import Client, Options
from .commands import HELP
from .terminal import OutputClosed

__all__ = ["Client", "Options", "add_arguments", "main", "options_from_args", "run"]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8888
EPILOG = f"""\
{HELP}

With stdin not a terminal, input lines are these commands (the first line is
the e-mail unless --email is given); replies and notifications go to stdout,
one per line. Exit status: 0 normal, 1 server unreachable, or lost or a
command refused in a pipe, 2 bad arguments, 130 SIGINT, 143 SIGTERM.

example:
  printf 'subscribe furniture_created\\n' | livenotify client --email me@ex.org --json --stay"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``livenotify client`` flags."""
    parser.add_argument(
        "--host",
        default=os.environ.get("LIVENOTIFY_HOST", DEFAULT_HOST),
        help="server address: IPv4, IPv6 or a name (default %(default)s; env LIVENOTIFY_HOST)",
    )
    parser.add_argument(
        "--port",
        type=int,
        # A string default goes through type=int too: a bad variable is a
        # usage error, not a traceback.
        default=os.environ.get("LIVENOTIFY_PORT", str(DEFAULT_PORT)),
        help="server TCP port (default %(default)s; env LIVENOTIFY_PORT)",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("LIVENOTIFY_URL"),
        help="connect over WebSocket instead of TCP: ws://HOST:PORT/ or wss://... "
        "(through a proxy that only passes HTTP; env LIVENOTIFY_URL)",
    )
    parser.add_argument(
        "--tls", action="store_true", help="connect with TLS (the server's --tls-cert)"
    )
    parser.add_argument(
        "--cafile", metavar="PEM", help="CA to trust for --tls instead of the system's"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("LIVENOTIFY_TOKEN"),
        help="access token (JWT) sent on every connection (env LIVENOTIFY_TOKEN)",
    )
    parser.add_argument("--email", help="register with this address instead of asking for one")
    parser.add_argument(
        "--json", action="store_true", help="print the server's objects raw, one per line"
    )
    parser.add_argument(
        "--stay",
        action="store_true",
        help="when stdin is not a terminal: after end of input, keep printing "
        "notifications until the server goes",
    )


def options_from_args(args: argparse.Namespace) -> Options:
    """The typed :class:`Options` from parsed arguments."""
    # "[::1]" as in a URL is "::1".
    host = args.host[1:-1] if args.host.startswith("[") and args.host.endswith("]") else args.host
    port, tls = args.port, args.tls
    if args.url is not None:  # checked by main()
        host, port, tls = check_url(args.url)
    return Options(
        host=host, port=port, email=args.email, json=args.json, stay=args.stay,
        tls=tls, cafile=args.cafile, token=args.token, url=args.url,
    )  # fmt: skip


async def run(args: argparse.Namespace) -> int:
    """Run the client under an already running Trio loop; the exit status."""
    client = Client(options_from_args(args))
    try:
        return await client.run()
    finally:
        client.ui.close()


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def main(argv: Sequence[str] | None = None) -> int:
    """``livenotify client ...``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="livenotify client",
        description="Subscribe to events on a livenotify server and watch notifications arrive.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: not a TCP port")
    if args.cafile is not None and not os.access(args.cafile, os.R_OK):
        parser.error(f"--cafile {args.cafile}: cannot read it")
    if args.url is not None:
        try:
            _host, _port, secure = check_url(args.url)
        except ValueError as exc:
            parser.error(f"--url {args.url}: {exc}")
        if args.tls and not secure:
            parser.error(f"--url {args.url}: --tls needs a wss:// URL")
    if args.email is not None:
        try:
            check_email(args.email, Limits())
        except ProtocolError as exc:
            parser.error(f"--email: {exc.message}")
    try:
        return trio.run(run, args)
    except BaseException as exc:
        leaves = _leaves(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            return 130
        if leaves and all(isinstance(leaf, OutputClosed) for leaf in leaves):
            return 0
        raise
