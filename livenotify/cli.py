"""``livenotify serve | client | publish | token``.

Every ``serve`` setting is a flag, a ``LIVENOTIFY_<FLAG>`` environment
variable (``--ws-port`` is ``LIVENOTIFY_WS_PORT``; switches take 1/0,
true/false) and a key of the ``--config`` TOML file, all generated from the
declaration in :mod:`livenotify.config` by :mod:`livenotify.settings`.
Flags win over the environment, which wins over the file.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio

from . import logs, preflight, settings
from .settings import SettingError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"livenotify: error: {message.removeprefix('argument ')}\n")


def _serve_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("serve", help="run the notification server (stdin is the admin console)")
    settings.add_arguments(p)


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaf_errors(inner)]
    return [exc]


def _run_serve(args: argparse.Namespace) -> int:
    try:
        config, origins = settings.load(args)
        if args.print_config:
            print("\n".join(settings.describe(config, origins)))
            return 0
        preflight.check(config)
    except SettingError as exc:
        print(f"livenotify: error: {exc}", file=sys.stderr)
        return 2
    from .server import serve
    from .storage import StorageError

    logs.setup(config.log_level, config.log_format)
    # Every connection keeps a few hundred long-lived objects; with the
    # default thresholds, full collections re-walk all of them again and
    # again while connections arrive (most of the accept CPU under a connect
    # storm, see BENCHMARKS.md). Rarer full collections keep that in check.
    gc.set_threshold(700, 10, 100)
    try:
        trio.run(serve, config)
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        for leaf in _leaf_errors(exc):
            if isinstance(leaf, StorageError):
                print(f"livenotify: {leaf}", file=sys.stderr)
                return 2
            if isinstance(leaf, OSError) and (leaf.strerror or leaf.args):
                print(f"livenotify: cannot start: {leaf.strerror or leaf}", file=sys.stderr)
                return 2
        raise
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is out of range 1..65535")
    return port


def _run_publish(argv: Sequence[str]) -> int:
    from .publisher import Publisher, PublishError, parse_message

    p = _Parser(
        prog="livenotify publish",
        description="publish one notification and wait for the ack",
        epilog="A JSON object's keys become the notification's fields (seed form: "
        "'{\"furniture\": {...}}' reaches subscribers as msg.furniture); "
        "any other text is sent as 'message'.",
    )
    p.add_argument("--host", default=os.environ.get("LIVENOTIFY_HOST", "localhost"))
    p.add_argument("--port", type=_port, default=os.environ.get("LIVENOTIFY_PORT", "8888"))
    p.add_argument(
        "--token",
        default=os.environ.get("LIVENOTIFY_PUBLISH_TOKEN"),
        help="the shared publish token, or a JWT granting the event",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS (verified)")
    p.add_argument("--cafile", metavar="PEM", help="CA to trust for --tls instead of the system's")
    p.add_argument(
        "--url",
        default=os.environ.get("LIVENOTIFY_URL"),
        help="publish to the WebSocket port instead of TCP: http(s)://HOST:PORT over HTTP, "
        "ws(s)://HOST:PORT over WebSocket (--host/--port ignored)",
    )
    p.add_argument("event")
    p.add_argument("message", help="a JSON object (its keys are the fields) or text")
    args = p.parse_args(argv)
    if args.url and not args.url.startswith(("http://", "https://", "ws://", "wss://")):
        p.error(f"--url: expected an http(s):// or ws(s):// URL, got {args.url[:80]!r}")
    fields, message = parse_message(args.message)
    if args.cafile is not None and not os.access(args.cafile, os.R_OK):
        print(f"livenotify publish: error: --cafile {args.cafile}: cannot read it", file=sys.stderr)
        return 2
    if args.url is not None and args.url.startswith(("ws://", "wss://")):
        from .wsurl import check_url

        try:
            check_url(args.url)
        except ValueError as exc:
            print(f"livenotify publish: error: --url {args.url}: {exc}", file=sys.stderr)
            return 2
    try:
        target = args.url if args.url else args.host
        with Publisher(
            target, args.port, token=args.token, tls=args.tls, cafile=args.cafile
        ) as publisher:
            # "data" and "message" in the object are those fields, as in v1.
            data, text = fields.pop("data", None), fields.pop("message", message)
            ack = publisher.publish(args.event, data, message=text, **fields)
    except PublishError as exc:
        print(f"livenotify publish: {exc}", file=sys.stderr)
        return 1
    offset = "" if ack.offset is None else f" offset={ack.offset}"
    print(f"published {ack.event} id={ack.id} delivered={ack.delivered}{offset}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``livenotify`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "client":
        from .client import main as client_main

        return client_main(argv[1:])
    if argv and argv[0] == "publish":
        return _run_publish(argv[1:])
    if argv and argv[0] == "token":
        from .tokens import main as token_main

        return token_main(argv[1:])
    parser = _Parser(
        prog="livenotify",
        description="Live notification server: TCP and WebSocket subscribers, one hub.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{serve,client,publish,token}"
    )
    _serve_parser(sub)
    sub.add_parser("client", help="interactive terminal client (livenotify client --help)")
    sub.add_parser("publish", help="publish one notification (livenotify publish --help)")
    sub.add_parser("token", help="print a signed access token (livenotify token --help)")
    args = parser.parse_args(argv)
    return _run_serve(args)


if __name__ == "__main__":
    sys.exit(main())
