"""SMTP delivery options against a real aiosmtpd server: STARTTLS with a
verified certificate, and login."""

from __future__ import annotations

import email
import email.policy
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tasks.compose import compose
from tasks.delivery import PermanentFailure, TransientFailure, send_smtp
from tasks.settings import MailSettings
from tests.mailtools import free_tcp_port


class Capture:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"alerts", b"s3cret")
    # handled=False: let aiosmtpd answer 535 itself.
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[Controller, Capture]]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    capture = Capture()
    controller = Controller(
        capture, hostname="127.0.0.1", port=free_tcp_port(), tls_context=context,
        require_starttls=True, authenticator=authenticate, auth_required=True,
    )  # fmt: skip
    controller.start()
    try:
        yield controller, capture
    finally:
        controller.stop()


def settings(port: int, **kw: Any) -> MailSettings:
    return MailSettings(smtp_host="127.0.0.1", smtp_port=port, smtp_timeout=5,
                        mail_from="alerts@livenotify.test", **kw)  # fmt: skip


def message() -> Any:
    return compose(event="ev", payload='{"type":"ev","message":"hola"}',
                   recipient="ana@example.com", sender="alerts@livenotify.test",
                   notification_id="n1")  # fmt: skip


def test_starttls_and_login(
    tls_server: tuple[Controller, Capture], certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    controller, capture = tls_server
    # Trust our self-signed certificate the way an operator would trust a
    # private CA: through OpenSSL's SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    s = settings(controller.port, smtp_starttls=True, smtp_user="alerts", smtp_password="s3cret")
    send_smtp(message(), "ana@example.com", s)
    [(rcpt, raw)] = capture.messages
    assert rcpt == ["ana@example.com"]
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == "[ev] hola"


def test_wrong_password_is_transient_and_nothing_sent(
    tls_server: tuple[Controller, Capture], certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    controller, capture = tls_server
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    s = settings(controller.port, smtp_starttls=True, smtp_user="alerts", smtp_password="nope")
    with pytest.raises(TransientFailure, match="535"):
        send_smtp(message(), "ana@example.com", s)
    assert capture.messages == []


def test_untrusted_certificate_is_refused(tls_server: tuple[Controller, Capture]) -> None:
    controller, capture = tls_server
    s = settings(controller.port, smtp_starttls=True, smtp_user="alerts", smtp_password="s3cret")
    with pytest.raises(TransientFailure, match="CERTIFICATE_VERIFY_FAILED"):
        send_smtp(message(), "ana@example.com", s)
    assert capture.messages == []


def test_without_starttls_the_server_refuses(tls_server: tuple[Controller, Capture]) -> None:
    controller, capture = tls_server
    with pytest.raises((TransientFailure, PermanentFailure)):
        send_smtp(message(), "ana@example.com", settings(controller.port))
    assert capture.messages == []


def test_connection_refused_is_transient() -> None:
    with pytest.raises(TransientFailure, match=r"127\.0\.0\.1"):
        send_smtp(message(), "ana@example.com", settings(free_tcp_port()))
