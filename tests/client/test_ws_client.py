"""The clients over WebSocket against a real server: ``livenotify client
--url ws://...`` (trio-websocket) and ``Publisher("ws://...")`` (wsproto on
a blocking socket), plain and over TLS (``wss://``, trustme certificates).

Every wait is a pexpect/subprocess/socket timeout or a log line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pexpect
import pytest
import trustme

from livenotify import Publisher, PublishError
from livenotify.publisher_ws import WsPublisher
from livenotify.wsurl import unsubscribed_url
from tests.client.test_client import (
    EVENTS,
    IDLE,
    TIMEOUT,
    client_argv,
    client_env,
    finish,
    pipe_client,
    terminal_client,
)
from tests.client.test_publisher import subscriber
from tests.helpers import ROOT, free_port, running_server


def test_unsubscribed_url_replaces_any_events_parameter() -> None:
    assert unsubscribed_url("ws://h:1") == "ws://h:1/?events="
    assert unsubscribed_url("wss://h/x?events=a,b&token=t") == "wss://h/x?token=t&events="


def test_client_over_ws_registers_subscribes_and_receives() -> None:
    # A short idle timeout: the server probes the idle client, which answers.
    with running_server(*EVENTS, "--idle-timeout", str(IDLE)) as srv:
        url = f"ws://127.0.0.1:{srv.ws_port}/"
        c = pipe_client("--url", url, "--email", "wa@ex.org", "--json", "--stay")
        c.send("subscribe news\n")
        c.sendeof()
        c.expect(r'\{"type":"registered","email":"wa@ex\.org".*\}')
        # Connected with ?events= : subscribed to nothing until it asked.
        c.expect(r'\{"type":"subscribed","events":\["news"\]\}')
        srv.wait_log(r"connect ws 127\.0\.0\.1:\d+ #\d+")
        time.sleep(4 * IDLE)  # the idleness under test, not a synchronisation
        srv.command("send news over websocket", r"sent news .* delivered=1")
        c.expect(r'\{"type":"news",.*\}\r?\n')
        note = json.loads(c.after.strip())
        assert note["message"] == "over websocket"
        srv.command("send furniture_created not for us", r"delivered=0")
        srv.stop()
        assert finish(c) == 0  # the goodbye: a normal end
        assert "shut down (shutting_down)" in c.before
        assert "furniture_created" not in c.before
        assert not [line for line in srv.lines if "reason=idle_timeout" in line]


def test_client_over_ws_reconnects_after_server_restart() -> None:
    ws_port = free_port()
    with tempfile.TemporaryDirectory(prefix="livenotify-wsclient-") as tmp, ExitStack() as stack:
        db, data = str(Path(tmp) / "s.db"), str(Path(tmp) / "data")
        url = f"ws://127.0.0.1:{ws_port}/"
        with running_server(*EVENTS, ws_port=ws_port, db=db, data_dir=data):
            c = stack.enter_context(terminal_client("--url", url, "--email", "wb@example.com"))
            c.expect(r"registered as wb@example\.com")
            c.expect("livenotify> ")
            c.sendline("subscribe news")
            c.expect("subscribed to: news")
            c.expect("livenotify> ")
        c.expect(r"shut down \(shutting_down\); reconnecting")
        with running_server(*EVENTS, ws_port=ws_port, db=db, data_dir=data) as srv:
            c.expect(
                r"reconnected to ws://127\.0\.0\.1:\d+/ as wb@example\.com; subscribed to: news"
            )
            srv.wait_log(r"connect ws ")
            srv.command("send news back again", r"sent news .* delivered=1")
            c.expect(r"news: back again")
            c.expect("livenotify> ")
            c.sendline("exit")
            c.expect(pexpect.EOF)
            c.close()
            assert c.exitstatus == 0
            srv.wait_log(r"disconnect ws .* reason=exit")


def test_client_bad_and_unreachable_urls_are_one_line() -> None:
    port = free_port()  # nothing listens there

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *client_argv(*args)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env=client_env(), cwd=str(ROOT), timeout=TIMEOUT,
        )  # fmt: skip

    proc = run("--url", f"ws://127.0.0.1:{port}/")
    assert proc.returncode == 1
    assert proc.stderr == (
        f"livenotify client: cannot connect to ws://127.0.0.1:{port}/: connection refused\n"
    )
    proc = run("--url", "http://127.0.0.1/")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1].endswith(
        "--url http://127.0.0.1/: not a ws:// or wss:// URL"
    )
    proc = run("--url", "ws://127.0.0.1/", "--tls")
    assert proc.returncode == 2
    assert "--tls needs a wss:// URL" in proc.stderr


def test_publisher_over_ws_in_order_to_a_tcp_subscriber_and_clean_close() -> None:
    with running_server(*EVENTS, "--rate-limit", "0") as srv:
        sub = subscriber(srv.tcp_port, "news")
        pub = Publisher(f"ws://127.0.0.1:{srv.ws_port}")
        assert isinstance(pub, WsPublisher)
        ids = [pub.publish("news", n=n).id for n in range(200)]
        got = [sub.recv() for _ in range(200)]
        assert [m["n"] for m in got] == list(range(200))
        assert [m["id"] for m in got] == ids
        with pytest.raises(PublishError) as err:
            pub.publish("no_such_event", 1)
        assert err.value.code == "unknown_event"
        pub.close()
        # One connection for all of them, subscribed to nothing (no
        # notification came back to it), ended by its close frame: the
        # server saw an orderly end, not a reset.
        line = srv.wait_log(r"disconnect ws \S+ #\d+ reason=\S+ delivered=\d+").group(0)
        assert line.endswith("reason=eof delivered=0"), line
        assert len([x for x in srv.lines if "connect ws " in x and "disconnect" not in x]) == 1
        # A later call opens a new connection.
        assert pub.publish("news", n=200).delivered == 1
        assert sub.recv()["n"] == 200
        pub.close()
        sub.close()


def test_publisher_over_ws_token_reconnect_and_unreachable() -> None:
    ws_port = free_port()
    pub = Publisher(host=f"ws://127.0.0.1:{ws_port}/", token="t0k", timeout=5)
    with running_server("--publish-token", "t0k", ws_port=ws_port) as srv:
        assert pub.publish("furniture_created", 1).event == "furniture_created"
        with pytest.raises(PublishError) as err:
            Publisher(f"ws://127.0.0.1:{ws_port}").publish("furniture_created", 1)
        assert err.value.code == "forbidden"
        assert srv.stop() == 0
    # The reused connection is gone: reopened once, within the same call.
    with running_server("--publish-token", "t0k", ws_port=ws_port):
        assert pub.publish("furniture_updated", 2).event == "furniture_updated"
        proc = subprocess.run(
            [sys.executable, "-m", "livenotify", "publish", "--url", f"ws://127.0.0.1:{ws_port}",
             "--token", "t0k", "furniture_created", '{"a": 1}'],
            capture_output=True, text=True, cwd=str(ROOT), timeout=TIMEOUT,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("published furniture_created id=")
    pub.close()
    with pytest.raises(PublishError) as err:
        Publisher(f"ws://127.0.0.1:{free_port()}", timeout=2).publish("furniture_created", 1)
    assert err.value.code == "unreachable"


def test_wss_client_and_publisher_with_a_private_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_pem, cert_pem, key_pem = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    with running_server(*EVENTS, "--tls-cert", str(cert_pem), "--tls-key", str(key_pem)) as srv:
        url = f"wss://localhost:{srv.ws_port}/"
        c = pipe_client("--url", url, "--cafile", str(ca_pem), "--email", "wc@ex.org", "--stay")
        c.send("subscribe news\n")
        c.sendeof()
        c.expect("subscribed to: news")
        with Publisher(url, cafile=str(ca_pem)) as pub:
            assert pub.publish("news", message="sealed").delivered == 1
        c.expect(r"news: sealed")
        # Without the CA the certificate is not trusted: one line, exit 1.
        proc = subprocess.run(
            [sys.executable, *client_argv("--url", url)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True,
            env=client_env(), cwd=str(ROOT), timeout=TIMEOUT,
        )  # fmt: skip
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"livenotify client: cannot connect to {url}: TLS")
        assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr and proc.stderr.count("\n") == 1
        with pytest.raises(PublishError) as err:
            Publisher(url, timeout=5).publish("news", 1)
        assert err.value.code == "unreachable"
        srv.stop()
        assert finish(c) == 0
