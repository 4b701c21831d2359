"""TLS on both listeners (``--tls-cert`` and ``--tls-key``).

:func:`server_context` builds the :class:`ssl.SSLContext` once, at start-up,
and turns every problem with the files into one
:class:`~livenotify.settings.SettingError` naming the flag. :func:`accept`
wraps an accepted connection in a :class:`trio.SSLStream` and completes the
handshake under ``--handshake-timeout``.

A client speaking plain text to a TLS port is told so in plain text: the
first byte of a TLS connection is a handshake record (0x16), so the first
byte is peeked at before the handshake starts, and anything else gets the
``tls_required`` error (a JSON line on the TCP port, an HTTP 400 on the
front door) instead of a TLS alert it cannot read.

Under TLS the hub's direct writes (:mod:`.transports.sockets`) do not
apply: the transports find no raw socket under an ``SSLStream``, so every
write goes through the connection's writer task and ``send_all``.
"""

from __future__ import annotations

import logging
import socket as _socket
import ssl
from pathlib import Path
from typing import Final

import trio

from . import protocol
from .config import Config
from .payload import Payload
from .settings import SettingError

log = logging.getLogger(__name__)

#: The first byte of every TLS connection: a handshake record.
TLS_HANDSHAKE_RECORD: Final = 0x16
#: The error code a plain-text client on a TLS port gets.
TLS_REQUIRED: Final = protocol.TLS_REQUIRED
#: How long the plain-text refusal may take to write.
REFUSAL_WRITE_TIMEOUT: Final = 1.0


def _check_cert(path: str) -> None:
    from cryptography import x509

    try:
        x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not a valid PEM certificate"
        raise SettingError(f"--tls-cert {path}: {why}") from None


def _check_key(path: str) -> None:
    from cryptography.hazmat.primitives import serialization

    try:
        serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as exc:
        raise SettingError(f"--tls-key {path}: {exc.strerror}") from None
    except TypeError:
        raise SettingError(
            f"--tls-key {path}: the key is encrypted; give an unencrypted key"
        ) from None
    except ValueError:
        raise SettingError(f"--tls-key {path}: not a valid PEM private key") from None
    except Exception as exc:  # cryptography's UnsupportedAlgorithm and kin
        raise SettingError(f"--tls-key {path}: {exc}") from None


def server_context(config: Config) -> ssl.SSLContext | None:
    """The server's TLS context, None without TLS; ``SettingError`` for a
    missing, unreadable or bad file, or a key that is not the certificate's."""
    cert, key = config.tls_cert, config.tls_key
    if cert is None and key is None:
        return None
    if cert is None:
        raise SettingError("--tls-key needs --tls-cert")
    if key is None:
        raise SettingError("--tls-cert needs --tls-key")
    _check_cert(cert)
    _check_key(key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise SettingError(
                f"--tls-key {key}: does not match the certificate in {cert}"
            ) from None
        raise SettingError(f"--tls-cert {cert} / --tls-key {key}: {exc.reason or exc}") from None
    return context


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, or ``cafile``'s."""
    return ssl.create_default_context(cafile=cafile)


async def _first_byte(stream: trio.SocketStream) -> int | None:
    """The first byte the client sent, left unread; None if it closed."""
    try:
        data = await stream.socket.recv(1, _socket.MSG_PEEK)
    except OSError:
        return None
    return data[0] if data else None


async def _refuse(stream: trio.SocketStream, http: bool) -> None:
    error = protocol.Error(TLS_REQUIRED, "this port speaks TLS")
    line = Payload(protocol.encode_server(error)).line()
    data = line
    if http:
        data = (
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(line), line)
        )
    with trio.move_on_after(REFUSAL_WRITE_TIMEOUT):
        try:
            await stream.send_all(data)
            await stream.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def accept(
    stream: trio.SocketStream, context: ssl.SSLContext, timeout: float, peer: str, *, http: bool
) -> trio.SSLStream[trio.SocketStream] | None:
    """``stream`` with its TLS handshake done, or None (the caller closes
    ``stream``): a plain-text client (told ``tls_required``), a failed
    handshake, or one not done within ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        first = await _first_byte(stream)
        if first is None:
            return None
        if first != TLS_HANDSHAKE_RECORD:
            log.info("refuse %s: plain text on a TLS port", peer)
            await _refuse(stream, http)
            return None
        tls = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
        try:
            await tls.do_handshake()
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("tls handshake with %s failed: %s", peer, exc.__cause__ or exc)
            return None
        return tls
    log.info("tls handshake with %s timed out", peer)
    return None
