"""``livenotify token``: print a signed access token, for scripts and tests.

::

    livenotify token --secret S --publish a,b --subscribe c --sub alice --ttl 1h

signs with HS256 (``--secret``, as the server's ``--jwt-secret``) or with
a PEM private key (``--private-key``: RS256 for RSA, ES256 for EC; the
server gets the public key as ``--jwt-public-key``). Every bad input is one
line and exit status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .access import make_token

#: ``--ttl`` units.
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_TTL = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
#: Longest ``--ttl`` accepted: a year.
MAX_TTL = 366 * 86400


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"livenotify token: error: {message.removeprefix('argument ')}\n")


def parse_ttl(text: str) -> float:
    """``90``, ``30s``, ``5m``, ``1h``, ``2d`` in seconds; ``ValueError`` otherwise."""
    match = _TTL.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration (like 90, 30s, 5m, 1h, 2d)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 1 <= seconds <= MAX_TTL:
        raise ValueError(f"{text!r} is out of range 1s..366d")
    return seconds


def _names(text: str) -> list[str]:
    from .config import Limits
    from .protocol import ALL_EVENTS, ProtocolError, check_event_name

    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        try:
            check_event_name(name, Limits())
        except ProtocolError as exc:
            raise ValueError(exc.message) from None
        if name == ALL_EVENTS and len(names) > 1:
            raise ValueError("'*' already means every event")
    return names


def _private_key(path: str) -> tuple[Any, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except (ValueError, TypeError):
        raise ValueError(f"{path}: not an unencrypted PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key, "ES256"
    raise ValueError(f"{path}: only RSA (RS256) and EC (ES256) keys are supported")


def main(argv: Sequence[str]) -> int:
    p = _Parser(prog="livenotify token", description="print a signed access token (JWT)")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--secret", help="HS256 secret (the server's --jwt-secret)")
    key.add_argument("--private-key", metavar="PEM", help="RSA or EC private key (RS256/ES256)")
    p.add_argument("--publish", default="", metavar="A,B", help="events it may publish ('*': all)")
    p.add_argument(
        "--subscribe", default="", metavar="A,B", help="private events it may subscribe to ('*')"
    )
    p.add_argument("--sub", help="the user (logged by the server)")
    p.add_argument("--ttl", default="1h", help="lifetime: 90, 30s, 5m, 1h, 2d (default 1h)")
    args = p.parse_args(argv)
    flag = "--ttl"
    try:
        ttl = parse_ttl(args.ttl)
        flag = "--publish"
        publish = _names(args.publish)
        flag = "--subscribe"
        subscribe = _names(args.subscribe)
        if args.secret is not None:
            flag = "--secret"
            if not args.secret.strip():
                raise ValueError("empty secret")
            signing: Any = args.secret
            algorithm = "HS256"
        else:
            flag = "--private-key"
            signing, algorithm = _private_key(args.private_key)
    except ValueError as exc:
        print(f"livenotify token: error: {flag}: {exc}", file=sys.stderr)
        return 2
    token = make_token(
        signing, publish=publish, subscribe=subscribe, sub=args.sub, ttl=ttl, algorithm=algorithm
    )
    print(token)
    return 0
