"""JWT access against a real ``livenotify serve``: grants on TCP, WebSocket
and HTTP publish, private events (also through ``*``), expiry and refresh,
HS256 and ES256, and ``livenotify token``."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from livenotify import Publisher, PublishError
from livenotify.access import make_token
from tests.helpers import ROOT, LineClient, ServerProcess, running_server

SECRET = "a-test-secret-of-at-least-32-bytes!"
PRIVATE = "furniture_deleted"
PUBLIC = "furniture_created"


def token(**kw: Any) -> str:
    return make_token(SECRET, **kw)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with running_server("--jwt-secret", SECRET, "--private-events", PRIVATE) as srv:
        yield srv


def publish(server: ServerProcess, event: str, **fields: Any) -> int:
    with Publisher("127.0.0.1", server.tcp_port, token=token(publish=["*"])) as pub:
        return pub.publish(event, **fields).delivered


def tcp(server: ServerProcess) -> LineClient:
    client = LineClient("127.0.0.1", server.tcp_port)
    assert client.recv()["type"] == "welcome"
    return client


def ws(server: ServerProcess, query: str = "", headers: dict[str, str] | None = None) -> Any:
    conn = ws_connect(
        f"ws://127.0.0.1:{server.ws_port}/{query}", additional_headers=headers, open_timeout=10
    )
    assert json.loads(conn.recv(timeout=10))["type"] == "welcome"
    return conn


def next_note(conn: ClientConnection) -> dict[str, Any]:
    while True:
        msg: dict[str, Any] = json.loads(conn.recv(timeout=10))
        if msg["type"] not in ("subscribed", "authenticated", "error"):
            return msg


def test_private_subscription_needs_a_grant_and_is_all_or_nothing(server: ServerProcess) -> None:
    with tcp(server) as c:
        c.send({"type": "subscribe", "events": [PUBLIC, PRIVATE]})
        assert c.recv()["code"] == "forbidden"
        c.send({"type": "subscriptions"})
        assert c.recv() == {"type": "subscriptions", "events": []}
        c.send_line(f"auth {token(subscribe=[PRIVATE], sub='alice', ttl=60)}")
        reply = c.recv()
        assert (reply["type"], reply["sub"]) == ("authenticated", "alice")
        assert reply["expires"] > time.time()
        c.send({"type": "subscribe", "events": [PUBLIC, PRIVATE]})
        assert c.recv() == {"type": "subscribed", "events": sorted([PUBLIC, PRIVATE])}
        assert publish(server, PRIVATE, n=1) == 1
        assert c.recv_type(PRIVATE)["n"] == 1


def test_refused_tokens_are_forbidden(server: ServerProcess) -> None:
    bad = [
        "not-a-jwt",
        make_token("another-secret-that-is-32-bytes-long", subscribe=["*"]),
        jwt.encode({"subscribe": ["*"], "exp": int(time.time()) - 10}, SECRET, algorithm="HS256"),
        jwt.encode({"subscribe": "x" * 3 and 5}, SECRET, algorithm="HS256"),
    ]
    with tcp(server) as c:
        for t in bad:
            c.send({"type": "auth", "token": t})
            assert c.recv()["code"] == "forbidden", t
        c.send({"type": "ping"})
        assert c.recv()["type"] == "pong"  # still connected


def test_star_never_includes_an_ungranted_private_event(server: ServerProcess) -> None:
    with (
        tcp(server) as c,
        ws(server) as plain,
        ws(server, f"?token={token(subscribe=[PRIVATE])}") as granted,
    ):
        c.send({"type": "subscribe", "events": ["*"]})
        c.recv_type("subscribed")
        # Private first, then public: the ungranted see the public one first.
        assert publish(server, PRIVATE, n=1) == 1  # only the granted WebSocket
        publish(server, PUBLIC, n=2)
        assert c.recv_type(PUBLIC)["n"] == 2
        assert next_note(plain)["type"] == PUBLIC
        first, second = next_note(granted), next_note(granted)
        assert (first["type"], second["type"]) == (PRIVATE, PUBLIC)


def test_ws_bearer_header_and_private_query_events(server: ServerProcess) -> None:
    auth = {"Authorization": f"Bearer {token(subscribe=['*'])}"}
    with (
        ws(server, f"?events={PRIVATE}", auth) as granted,
        ws(server, f"?events={PRIVATE},{PUBLIC}") as plain,
    ):
        err = json.loads(plain.recv(timeout=10))
        assert (err["type"], err["code"]) == ("error", "forbidden")
        publish(server, PRIVATE, n=3)
        publish(server, PUBLIC, n=4)
        assert next_note(granted)["n"] == 3
        assert next_note(plain)["n"] == 4  # its public event still subscribed


def test_ws_upgrade_with_a_bad_token_is_refused(server: ServerProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        ws_connect(f"ws://127.0.0.1:{server.ws_port}/?token=garbage", open_timeout=10)
    assert info.value.response.status_code == 403
    assert json.loads(info.value.response.body or b"{}")["code"] == "forbidden"


def test_publishing_needs_a_granting_token(server: ServerProcess) -> None:
    with Publisher("127.0.0.1", server.tcp_port) as pub, pytest.raises(PublishError) as info:
        pub.publish(PUBLIC, n=1)
    assert info.value.code == "forbidden"
    only_updates = token(publish=["furniture_updated"])
    with Publisher("127.0.0.1", server.tcp_port, token=only_updates) as pub:
        with pytest.raises(PublishError) as info:
            pub.publish(PUBLIC, n=1)
        assert info.value.code == "forbidden"
        assert pub.publish("furniture_updated", n=1).event == "furniture_updated"
    # A grant from auth covers the connection's publishes.
    with tcp(server) as c:
        c.send({"type": "auth", "token": token(publish=[PUBLIC])})
        c.recv_type("authenticated")
        c.send({"type": "publish", "event": PUBLIC, "message": "hi"})
        assert c.recv_type("published")["event"] == PUBLIC
        c.send({"type": "publish", "event": PRIVATE, "message": "hi"})
        assert c.recv()["code"] == "forbidden"


def http_publish(server: ServerProcess, event: str, headers: dict[str, str]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.ws_port, timeout=10)
    try:
        conn.request("POST", f"/publish/{event}", body=b"hello", headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_http_publish_with_bearer_jwt(server: ServerProcess) -> None:
    grant = {"Authorization": f"Bearer {token(publish=[PUBLIC])}"}
    status, body = http_publish(server, PUBLIC, grant)
    assert (status, body["type"]) == (200, "published")
    status, body = http_publish(server, "furniture_updated", grant)
    assert (status, body["code"]) == (403, "forbidden")
    status, body = http_publish(server, PUBLIC, {})
    assert (status, body["code"]) == (401, "forbidden")
    status, body = http_publish(server, PUBLIC, {"Authorization": "Bearer nope"})
    assert (status, body["code"]) == (403, "forbidden")


def test_expiry_closes_and_auth_refreshes(server: ServerProcess) -> None:
    with tcp(server) as expiring, tcp(server) as refreshed, ws(server) as ws_expiring:
        short = token(subscribe=[PRIVATE], ttl=2)
        for c in (expiring, refreshed):
            c.send({"type": "auth", "token": short})
            deadline = c.recv_type("authenticated")["expires"]
        ws_expiring.send(json.dumps({"type": "auth", "token": short}))
        assert json.loads(ws_expiring.recv(timeout=10))["type"] == "authenticated"
        refreshed.send({"type": "auth", "token": token(subscribe=[PRIVATE], ttl=60)})
        assert refreshed.recv_type("authenticated")["expires"] > deadline
        err = expiring.recv()
        assert (err["type"], err["code"]) == ("error", "token_expired")
        with pytest.raises(EOFError):
            expiring.recv()
        with pytest.raises(ConnectionClosed) as closed:
            ws_expiring.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token_expired")
        # Past the first token's expiry, the refreshed one is still served.
        time.sleep(max(0.0, deadline + 0.5 - time.time()))
        refreshed.send({"type": "ping"})
        assert refreshed.recv()["type"] == "pong"


def test_es256_public_key_and_token_command(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / "private.pem"
    public = tmp_path / "public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    made = subprocess.run(
        [sys.executable, "-m", "livenotify", "token", "--private-key", str(private),
         "--publish", PUBLIC, "--subscribe", PRIVATE, "--sub", "bob", "--ttl", "5m"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    signed = made.stdout.strip()
    assert jwt.get_unverified_header(signed)["alg"] == "ES256"
    with running_server("--jwt-public-key", str(public), "--private-events", PRIVATE) as srv:
        with tcp(srv) as c:
            c.send({"type": "auth", "token": signed})
            assert c.recv_type("authenticated")["sub"] == "bob"
            c.send({"type": "subscribe", "events": [PRIVATE]})
            assert c.recv()["type"] == "subscribed"
            # An HS256 token is not accepted by a public-key server.
            c.send({"type": "auth", "token": token(subscribe=["*"])})
            assert c.recv()["code"] == "forbidden"
        with Publisher("127.0.0.1", srv.tcp_port, token=signed) as pub:
            assert pub.publish(PUBLIC, n=1).event == PUBLIC


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--secret", SECRET, "--ttl", "forever"], "--ttl"),
        (["--secret", SECRET, "--publish", "bad name!"], "--publish"),
        (["--secret", " "], "--secret"),
        (["--private-key", "/nonexistent.pem"], "--private-key"),
        (["--publish", "a"], "--secret"),
    ],
)
def test_token_command_bad_input_is_one_line(args: list[str], flag: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livenotify", "token", *args],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and flag in lines[0], lines


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--jwt-secret", SECRET, "--jwt-public-key", "/nonexistent.pem"], "--jwt-public-key"),
        (["--private-events", PRIVATE], "--private-events needs"),
        (["--jwt-secret", SECRET, "--private-events", "nope"], "not in --events"),
    ],
)
def test_bad_access_settings_are_one_line(args: list[str], words: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "livenotify", "serve", *args],
        capture_output=True, text=True, timeout=30, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and words in lines[0], lines


def test_terminal_client_token(server: ServerProcess) -> None:
    def run(*extra: str) -> list[dict[str, Any]]:
        result = subprocess.run(
            [sys.executable, "-m", "livenotify", "client", "--host", "127.0.0.1",
             "--port", str(server.tcp_port), "--email", "jwt@example.org", "--json", *extra],
            input=f"subscribe {PRIVATE}\n", capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    granted = run("--token", token(subscribe=[PRIVATE], sub="carol"))
    assert {"type": "subscribed", "events": [PRIVATE]} in granted, granted
    refused = run()
    assert any(m.get("code") == "forbidden" for m in refused), refused


def test_a_replay_never_carries_a_private_event_the_connection_was_not_granted(
    server: ServerProcess,
) -> None:
    # History knows no grants: a resume on "*" must filter as live delivery does.
    with ws_connect(f"ws://127.0.0.1:{server.ws_port}/", open_timeout=10) as first:
        head = json.loads(first.recv(timeout=10))["position"]  # E:N before these
    publish(server, PUBLIC, n=1)
    publish(server, PRIVATE, secret=1)
    publish(server, PUBLIC, n=2)
    with ws_connect(f"ws://127.0.0.1:{server.ws_port}/?since={head}", open_timeout=10) as anonymous:
        assert json.loads(anonymous.recv(timeout=10))["type"] == "welcome"
        subscribed = json.loads(anonymous.recv(timeout=10))
        assert subscribed["type"] == "subscribed" and subscribed["replayed"] == 2, subscribed
        got = [json.loads(anonymous.recv(timeout=10)) for _ in range(2)]
        assert [(n["type"], n.get("n")) for n in got] == [(PUBLIC, 1), (PUBLIC, 2)]
    granted = token(subscribe=[PRIVATE], ttl=60)
    with ws_connect(
        f"ws://127.0.0.1:{server.ws_port}/?since={head}&token={granted}", open_timeout=10
    ) as allowed:
        assert json.loads(allowed.recv(timeout=10))["type"] == "welcome"
        assert json.loads(allowed.recv(timeout=10))["replayed"] == 3
        types = [json.loads(allowed.recv(timeout=10))["type"] for _ in range(3)]
        assert types == [PUBLIC, PRIVATE, PUBLIC]


def test_a_stored_private_subscription_comes_back_only_with_a_grant(server: ServerProcess) -> None:
    # Anyone may register any address: what it restores is checked again.
    with tcp(server) as owner:
        owner.send_line(f"auth {token(subscribe=[PRIVATE], ttl=60)}")
        owner.recv_type("authenticated")
        owner.send_line("register boss@example.com")
        owner.recv_type("registered")
        owner.send({"type": "subscribe", "events": [PUBLIC, PRIVATE]})
        assert owner.recv_type("subscribed")["events"] == sorted([PUBLIC, PRIVATE])
    with tcp(server) as stranger:
        stranger.send_line("register boss@example.com")
        assert stranger.recv_type("registered")["events"] == [PUBLIC]
        stranger.send({"type": "subscriptions"})
        assert stranger.recv_type("subscriptions")["events"] == [PUBLIC]
