"""Who may publish and subscribe: JWT grants and private events.

A token is a JWT signed with ``--jwt-secret`` (HS256) or the private key
of ``--jwt-public-key`` (RS256 or ES256, from the key's type). Its claims:
``publish`` and ``subscribe`` (lists of event names, ``"*"`` for all),
``sub`` (the user, logged) and ``exp`` (honoured: a connection whose token
expires is closed with ``token_expired``). Events named by
``--private-events`` may only be subscribed to (or received through
``*``) with a token whose ``subscribe`` claim grants them; every other
event is open to anyone. With JWT configured, publishing needs a token
granting the event (or the shared ``--publish-token``, when set).

:meth:`Authority.authorize` is the one place an HTTP request's token
(``Authorization: Bearer`` or ``?token=``) is read, for every route.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import jwt

from . import protocol
from .config import Config, load_public_key
from .protocol import ProtocolError


class Request(Protocol):
    """What :meth:`Authority.authorize` reads of an HTTP request
    (:class:`~livenotify.transports.routes.Request` has it)."""

    def header(self, name: bytes) -> str | None: ...

    @property
    def query(self) -> dict[str, list[str]]: ...


#: The close reason and error code of a connection whose token expired.
TOKEN_EXPIRED: Final = protocol.TOKEN_EXPIRED
#: Seconds of clock skew allowed when checking ``exp``.
LEEWAY: Final = 0.0


@dataclass(frozen=True, slots=True)
class Grant:
    """What one token allows; :data:`ANONYMOUS` when no token was given."""

    sub: str | None = None
    publish: frozenset[str] = frozenset()
    subscribe: frozenset[str] = frozenset()
    #: Unix time the token expires at (None: it does not).
    expires: float | None = None

    def may_publish(self, event: str) -> bool:
        return protocol.ALL_EVENTS in self.publish or event in self.publish

    def may_subscribe(self, event: str) -> bool:
        """Whether the grant covers ``event`` (only asked for private events)."""
        return protocol.ALL_EVENTS in self.subscribe or event in self.subscribe

    @property
    def authenticated(self) -> bool:
        return (
            self.sub is not None or self.expires is not None or bool(self.publish or self.subscribe)
        )


ANONYMOUS: Final = Grant()


def _forbidden(message: str) -> ProtocolError:
    return ProtocolError(protocol.FORBIDDEN, message)


def _claim_list(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _forbidden(f"token claim {name!r} must be a list of event names")
    return frozenset(value)


class Authority:
    """Checks tokens against the server's configuration."""

    def __init__(self, config: Config) -> None:
        self.publish_token = config.publish_token
        self.private: frozenset[str] = frozenset(config.private_events)
        self._key: Any = None
        self._algorithms: list[str] = []
        if config.jwt_secret is not None:
            self._key, self._algorithms = config.jwt_secret, ["HS256"]
        elif config.jwt_public_key is not None:
            key, algorithm = load_public_key(config.jwt_public_key)
            self._key, self._algorithms = key, [algorithm]

    @property
    def jwt(self) -> bool:
        """Whether JWT is configured."""
        return self._key is not None

    def verify(self, token: str) -> Grant:
        """The grant of ``token``; ``forbidden`` if it is refused."""
        if not self.jwt:
            raise _forbidden("tokens are not enabled on this server")
        try:
            claims = jwt.decode(
                token, self._key, algorithms=self._algorithms, leeway=LEEWAY,
                options={"verify_aud": False},
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise _forbidden("the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise _forbidden(f"invalid token: {str(exc)[:100]}") from None
        sub = claims.get("sub")
        exp = claims.get("exp")
        return Grant(
            sub=str(sub) if sub is not None else None,
            publish=_claim_list(claims, "publish"),
            subscribe=_claim_list(claims, "subscribe"),
            expires=float(exp) if isinstance(exp, int | float) else None,
        )

    def check_publish(self, event: str, grant: Grant, token: str | None = None) -> None:
        """Raise ``forbidden`` unless publishing ``event`` is allowed.

        ``token`` is one given with the message itself: the shared
        ``--publish-token``, or (with JWT) a JWT granting the event.
        """
        if self.publish_token is not None and token == self.publish_token:
            return
        if not self.jwt:
            if self.publish_token is not None:
                raise _forbidden("publishing needs a valid token")
            return
        if token is not None:
            grant = self.verify(token)
        if not grant.may_publish(event):
            who = "a token" if grant is ANONYMOUS else "a token granting it"
            raise _forbidden(f"publishing {event!r} needs {who}")

    def check_subscribe(self, events: Iterable[str], grant: Grant) -> None:
        """Raise ``forbidden`` if one of ``events`` is private and not granted."""
        refused = [e for e in events if e in self.private and not grant.may_subscribe(e)]
        if refused:
            raise _forbidden(f"private event(s) {', '.join(refused)} need a token granting them")

    def authorize(self, request: Request) -> Grant:
        """The grant of an HTTP request's token (``Authorization: Bearer``,
        else ``?token=``); :data:`ANONYMOUS` without one; ``forbidden`` for
        a token that is refused. A shared ``--publish-token`` given as the
        bearer token (or any token, without JWT) is not a JWT: it is left
        to :meth:`check_publish`."""
        token = request_token(request)
        if token is None or token == self.publish_token or not self.jwt:
            return ANONYMOUS
        return self.verify(token)


def request_token(request: Request) -> str | None:
    """The token of an HTTP request: ``Authorization: Bearer T`` or ``?token=T``."""
    auth = request.header(b"authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise _forbidden("use 'Authorization: Bearer <token>'")
    values = request.query.get("token")
    return values[0] if values else None


def seconds_left(grant: Grant) -> float | None:
    """Seconds until ``grant`` expires (None: never)."""
    if grant.expires is None:
        return None
    return grant.expires - time.time()


def make_token(
    key: Any,
    *,
    publish: Iterable[str] = (),
    subscribe: Iterable[str] = (),
    sub: str | None = None,
    ttl: float | None = None,
    algorithm: str = "HS256",
) -> str:
    """A signed token (``livenotify token``, scripts and tests)."""
    claims: dict[str, Any] = {"publish": list(publish), "subscribe": list(subscribe)}
    if sub is not None:
        claims["sub"] = sub
    now = int(time.time())
    claims["iat"] = now
    if ttl is not None:
        claims["exp"] = now + max(1, round(ttl))
    return jwt.encode(claims, key, algorithm=algorithm)
