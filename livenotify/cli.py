"""``livenotify serve | client | publish``.

Every ``serve`` flag can also be set as ``LIVENOTIFY_<FLAG>`` in the
environment (``--ws-port`` is ``LIVENOTIFY_WS_PORT``; switches take 1/0,
true/false). A flag on the command line wins over the environment.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import trio

from .config import Config, Limits, SlowPolicy
from .protocol import ProtocolError, check_catalog_name

_DEFAULTS = Config()
_LIMITS = Limits()


def _env_name(flag: str) -> str:
    return "LIVENOTIFY_" + flag.lstrip("-").replace("-", "_").upper()


def _truthy(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


class _EnvParser:
    """Adds flags whose default comes from the environment."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser

    def add(
        self, flag: str, default: Any, help: str, type: Callable[[str], Any] = str, **kw: Any
    ) -> None:
        env = _env_name(flag)
        raw = os.environ.get(env)
        value = default
        if raw is not None:
            try:
                value = type(raw)
            except argparse.ArgumentTypeError as exc:
                self.parser.error(f"{env}={raw!r}: {exc}")
            except ValueError:
                self.parser.error(f"{env}={raw!r}: not a valid {type.__name__}")
        shown = "none" if default is None else default
        self.parser.add_argument(
            flag, default=value, type=type, help=f"{help} (default {shown}; env {env})", **kw
        )

    def switch(self, flag: str, help: str) -> None:
        env = _env_name(flag)
        value = _truthy(os.environ.get(env, "0"))
        self.parser.add_argument(
            flag, action="store_true", default=value, help=f"{help} (env {env}=1)"
        )


def _events(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise argparse.ArgumentTypeError("empty event list")
    for name in names:
        try:
            check_catalog_name(name, _LIMITS)
        except ProtocolError as exc:
            # ArgumentTypeError: argparse shows our reason, not just "invalid".
            raise argparse.ArgumentTypeError(exc.message) from None
    return names


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the notification server (stdin is the admin console)")
    e = _EnvParser(p)
    d, lim = _DEFAULTS, _LIMITS
    e.add("--host", d.host, "address to listen on; '::' is dual-stack IPv6+IPv4")
    e.add("--port", d.port, "TCP port", int)
    e.add("--ws-port", d.ws_port, "WebSocket port", int)
    e.add("--db", d.db, "SQLite database of subscriptions")
    e.add("--data-dir", d.data_dir, "folder for the embedded broker and the mail outbox")
    e.add("--events", ",".join(d.events), "comma-separated event catalog", _events)
    e.add("--idle-timeout", d.idle_timeout, "seconds between liveness probes", float)
    e.add("--handshake-timeout", d.handshake_timeout, "WebSocket handshake deadline", float)
    e.add("--write-timeout", d.write_timeout, "seconds a write to a client may take", float)
    e.add("--queue-size", d.queue_size, "notifications queued per subscriber", int)
    e.add("--slow-policy", d.slow_policy.value, "full queue: disconnect or drop", SlowPolicy)
    e.add("--broker", d.broker, "Celery broker URL (embedded filesystem broker if unset)")
    e.switch("--no-worker", "do not start the e-mail worker for the embedded broker")
    e.add("--publish-token", d.publish_token, "token required to publish")
    e.add("--grace-period", d.grace_period, "seconds to drain on shutdown", float)
    e.add("--log-level", d.log_level, "DEBUG, INFO, WARNING or ERROR", str.upper)
    e.add("--max-message-bytes", lim.max_message_bytes, "largest line or frame", int)
    e.add("--max-json-depth", lim.max_json_depth, "deepest JSON nesting", int)
    e.add("--max-events-per-message", lim.max_events_per_message, "events in one message", int)
    e.add("--max-subscriptions", lim.max_subscriptions, "subscriptions per connection", int)
    e.add("--max-connections", lim.max_connections, "connections in total", int)
    e.add("--max-connections-per-ip", lim.max_connections_per_ip, "connections per IP", int)
    e.add("--rate-limit", lim.rate_per_second, "messages/s per connection (0: off)", float)
    e.add("--rate-burst", lim.rate_burst, "burst allowance of the rate limit", int)


def config_from_args(args: argparse.Namespace) -> Config:
    """Build the typed :class:`Config` from parsed ``serve`` arguments."""
    limits = Limits(
        max_message_bytes=args.max_message_bytes,
        max_json_depth=args.max_json_depth,
        max_events_per_message=args.max_events_per_message,
        max_subscriptions=args.max_subscriptions,
        max_connections=args.max_connections,
        max_connections_per_ip=args.max_connections_per_ip,
        rate_per_second=args.rate_limit,
        rate_burst=args.rate_burst,
    )
    return Config(
        host=args.host,
        port=args.port,
        ws_port=args.ws_port,
        db=args.db,
        data_dir=args.data_dir,
        events=args.events,
        idle_timeout=args.idle_timeout,
        handshake_timeout=args.handshake_timeout,
        write_timeout=args.write_timeout,
        queue_size=args.queue_size,
        slow_policy=SlowPolicy(args.slow_policy),
        broker=args.broker or None,
        worker=not args.no_worker,
        publish_token=args.publish_token or None,
        grace_period=args.grace_period,
        log_level=args.log_level,
        limits=limits,
    )


def _leaf_errors(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaf_errors(inner)]
    return [exc]


def _run_serve(args: argparse.Namespace) -> int:
    from .server import serve
    from .storage import StorageError

    config = config_from_args(args)
    logging.basicConfig(
        level=config.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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
            if isinstance(leaf, OSError) and leaf.strerror:
                print(f"livenotify: cannot start: {leaf.strerror}", file=sys.stderr)
                return 2
        raise
    return 0


def _run_publish(argv: Sequence[str]) -> int:
    from .publisher import Publisher, PublishError, parse_message

    p = argparse.ArgumentParser(
        prog="livenotify publish", description="publish one notification and wait for the ack"
    )
    p.add_argument("--host", default=os.environ.get("LIVENOTIFY_HOST", "localhost"))
    p.add_argument("--port", type=int, default=int(os.environ.get("LIVENOTIFY_PORT", "8888")))
    p.add_argument("--token", default=os.environ.get("LIVENOTIFY_PUBLISH_TOKEN"))
    p.add_argument("event")
    p.add_argument("message", help="text (sent as 'message') or a JSON object (sent as 'data')")
    args = p.parse_args(argv)
    data, message = parse_message(args.message)
    try:
        with Publisher(args.host, args.port, token=args.token) as publisher:
            ack = publisher.publish(args.event, data, message=message)
    except PublishError as exc:
        print(f"livenotify publish: {exc}", file=sys.stderr)
        return 1
    print(f"published {ack.event} id={ack.id} delivered={ack.delivered}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``livenotify`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "client":
        from .client import main as client_main

        return client_main(argv[1:])
    if argv and argv[0] == "publish":
        return _run_publish(argv[1:])
    parser = argparse.ArgumentParser(
        prog="livenotify",
        description="Live notification server: TCP and WebSocket subscribers, one hub.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{serve,client,publish}")
    _serve_parser(sub)
    sub.add_parser("client", help="interactive terminal client (livenotify client --help)")
    sub.add_parser("publish", help="publish one notification (livenotify publish --help)")
    args = parser.parse_args(argv)
    return _run_serve(args)


if __name__ == "__main__":
    sys.exit(main())
