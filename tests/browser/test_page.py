"""The web page in real headless Chromium against a real ``livenotify serve``."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from websockets.sync.client import connect

from tests.browser import harness
from tests.browser.harness import Page
from tests.helpers import LineClient, ServerProcess, free_port, running_server

CATALOG = ["furniture_created", "furniture_updated", "furniture_deleted"]


def test_page_connects_and_shows_the_catalog(
    page: Page, server: ServerProcess, static_host: str
) -> None:
    page.open(harness.page_url(server.ws_port, static_host))
    page.wait_state("live")
    assert page.state_text() == "live"
    boxes = page.driver.find_elements(By.CSS_SELECTOR, "#events input[type=checkbox]")
    assert [b.get_attribute("value") for b in boxes] == CATALOG
    assert all(b.is_selected() for b in boxes)  # a WebSocket starts on "*"
    options = Select(page.driver.find_element(By.ID, "pub-event")).options
    assert [o.get_attribute("value") for o in options] == CATALOG
    assert page.csp_violations() == 0


def test_a_publish_appears_in_the_feed_with_its_fields(
    page: Page, server: ServerProcess, static_host: str
) -> None:
    page.open(harness.page_url(server.ws_port, static_host))
    page.wait_state("live")
    harness.publish(
        server, "furniture_created", {"furniture": {"furniture_id": "f42", "nombre": "Silla Test"}}
    )
    item = page.wait_item("Silla Test")
    assert item.find_element(By.CSS_SELECTOR, ".event").text == "furniture_created"
    assert item.find_element(By.CSS_SELECTOR, ".time").text  # hh:mm:ss.mmm from the timestamp
    fields = item.find_element(By.CSS_SELECTOR, ".fields").text
    assert '"furniture_id": "f42"' in fields  # pretty JSON, one field a line
    assert page.driver.find_element(By.ID, "count").text == "1 notification"
    assert page.csp_violations() == 0


def test_unfollowed_events_stop_arriving(
    page: Page, server: ServerProcess, static_host: str
) -> None:
    page.open(harness.page_url(server.ws_port, static_host))
    page.wait_state("live")
    box = page.driver.find_element(By.CSS_SELECTOR, "#events input[value=furniture_deleted]")
    box.click()
    # The page leaves "*" for the two others by name: the server confirms.
    page.until(
        lambda d: (
            not d.find_element(
                By.CSS_SELECTOR, "#events input[value=furniture_deleted]"
            ).is_selected()
        )
    )
    harness.publish(server, "furniture_deleted", {"n": "gone-unseen"})
    harness.publish(server, "furniture_updated", {"n": "seen-after"})
    page.wait_item("seen-after")
    assert not any("gone-unseen" in item.text for item in page.items())
    assert page.notice() == ""  # no error reply from the server


def test_markup_in_a_notification_shows_as_text(
    page: Page, server: ServerProcess, static_host: str
) -> None:
    page.open(harness.page_url(server.ws_port, static_host))
    page.wait_state("live")
    evil = "<img src=x onerror=alert(1)>"
    harness.publish(server, "furniture_created", {"message": evil})
    item = page.wait_item(evil)  # the visible text holds the markup verbatim
    assert evil in item.find_element(By.CSS_SELECTOR, ".fields").text
    assert page.driver.find_elements(By.CSS_SELECTOR, "#feed img") == []
    with pytest.raises(NoAlertPresentException):
        page.driver.switch_to.alert.text  # noqa: B018 - raises when no alert is open


def test_the_page_reconnects_after_a_server_restart(page: Page, static_host: str) -> None:
    tcp_port, ws_port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="livenotify-browser-") as tmp:
        db, data = str(Path(tmp, "subs.db")), str(Path(tmp, "data"))
        with running_server(port=tcp_port, ws_port=ws_port, db=db, data_dir=data) as first:
            page.open(harness.page_url(ws_port, static_host))
            page.wait_state("live")
            harness.publish(first, "furniture_created", {"n": "before-restart"})
            page.wait_item("before-restart")
            assert first.stop() == 0
        page.wait_state("reconnecting")
        assert page.state_text().startswith("reconnecting in ")
        with running_server(port=tcp_port, ws_port=ws_port, db=db, data_dir=data) as second:
            page.wait_state("live", harness.RECONNECT_WAIT)
            harness.publish(second, "furniture_updated", {"n": "after-restart"})
            item = page.wait_item("after-restart")
            assert item.find_element(By.CSS_SELECTOR, ".event").text == "furniture_updated"
            assert len(page.items()) == 2  # nothing shown twice
            # Without positions it says what it could not get; with them, what it did.
            assert re.search(r"reconnected: notifications published while|caught up", page.notice())


def test_the_form_publishes_to_a_websocket_client(
    page: Page, server: ServerProcess, static_host: str
) -> None:
    if not (harness.serves_page(server.ws_port) and harness.serves_http_publish(server.ws_port)):
        pytest.skip("the server does not serve GET / and POST /publish/<event> yet (front door)")
    page.open(harness.page_url(server.ws_port, static_host))
    page.wait_state("live")
    uri = f"ws://127.0.0.1:{server.ws_port}/?events=furniture_updated"
    with connect(uri, open_timeout=harness.HTTP_TIMEOUT) as client:
        assert json.loads(client.recv(timeout=harness.HTTP_TIMEOUT))["type"] == "welcome"
        Select(page.driver.find_element(By.ID, "pub-event")).select_by_value("furniture_updated")
        body = page.driver.find_element(By.ID, "pub-body")
        body.clear()
        body.send_keys('{"furniture": {"furniture_id": "f7", "nombre": "Mesa"}}')
        page.driver.find_element(By.ID, "pub-send").click()
        got = json.loads(client.recv(timeout=harness.WAIT))
        assert got["type"] == "furniture_updated"
        assert got["furniture"] == {"furniture_id": "f7", "nombre": "Mesa"}
    result = page.until(lambda d: d.find_element(By.ID, "pub-result").text)
    assert result.startswith("200") and '"published"' in result
    page.wait_item('"nombre": "Mesa"')


def test_a_page_pointed_at_another_host_is_blocked_by_its_policy(
    page: Page, server: ServerProcess, static_host: str
) -> None:
    # 127.0.0.2 is not in any policy's connect-src: the browser refuses,
    # and the page says so instead of failing silently.
    url = harness.page_url(server.ws_port, static_host).split("?")[0]
    page.open(f"{url}?server=127.0.0.2:{server.ws_port}")
    page.until(lambda d: page.csp_violations() > 0, message="no CSP violation reported")
    assert "Content-Security-Policy" in page.notice()
    assert page.state() != "live"


def test_a_reconnect_resumes_and_says_what_it_caught_up(
    page: Page, server: ServerProcess, static_host: str
) -> None:
    if not harness.supports_positions(server):
        pytest.skip("the server does not give positions yet (welcome has no 'position')")
    proxy = harness.CuttableProxy(server.ws_port)
    try:
        page.open(f"http://{static_host}/?server=127.0.0.1:{proxy.port}")
        page.wait_state("live")
        harness.publish(server, "furniture_created", {"n": "seen-live"})
        page.wait_item("seen-live")
        proxy.cut()
        page.wait_state("reconnecting")
        harness.publish(server, "furniture_updated", {"n": "missed-one"})
        harness.publish(server, "furniture_deleted", {"n": "missed-two"})
        proxy.restore()
        page.wait_state("live", harness.RECONNECT_WAIT)
        page.wait_item("missed-two")
        page.wait_item("missed-one")
        page.until(lambda d: "caught up: 2 missed notifications" in page.notice())
        assert "since=" in proxy.requests[-1]
        texts = [item.text for item in page.items()]
        assert len(texts) == 3, texts  # replayed once each, nothing twice
    finally:
        proxy.close()


def test_a_new_epoch_says_notifications_may_be_missing(page: Page, static_host: str) -> None:
    tcp_port, ws_port = free_port(), free_port()
    with running_server(port=tcp_port, ws_port=ws_port) as first:
        if not harness.supports_positions(first):
            pytest.skip("the server does not give positions yet (welcome has no 'position')")
        page.open(harness.page_url(ws_port, static_host))
        page.wait_state("live")
        harness.publish(first, "furniture_created", {"n": "old-epoch"})
        page.wait_item("old-epoch")
    page.wait_state("reconnecting")
    # A fresh database: the log's continuity cannot be proven, a new epoch.
    with running_server(port=tcp_port, ws_port=ws_port):
        page.wait_state("live", harness.RECONNECT_WAIT)
        page.until(lambda d: "some notifications may be missing" in page.notice())


def test_the_feed_keeps_the_newest_500(page: Page, server: ServerProcess, static_host: str) -> None:
    page.open(harness.page_url(server.ws_port, static_host))
    page.wait_state("live")
    # Two producers of 260: each stays inside the per-connection burst allowance.
    for first in (0, 260):
        with LineClient("127.0.0.1", server.tcp_port) as producer:
            producer.recv_type("welcome")
            producer.send_line(
                "\n".join(
                    json.dumps({"type": "publish", "event": "furniture_created",
                                "data": {"seq": seq}})
                    for seq in range(first, first + 260)
                )
            )  # fmt: skip
            for _ in range(260):
                producer.recv_type("published", limit=1)
    page.wait_item('"seq": 519')
    page.until(lambda d: d.find_element(By.ID, "count").text == "500 notifications")
    items = page.items()
    assert len(items) == 500
    assert '"seq": 519' in items[0].text and '"seq": 20' in items[-1].text


def test_the_form_shows_a_refusal_and_a_reply(page: Page, static_host: str) -> None:
    with running_server("--publish-token", "s3cret") as server:
        if not (
            harness.serves_page(server.ws_port) and harness.serves_http_publish(server.ws_port)
        ):
            pytest.skip("the server does not serve GET / and POST /publish/<event> yet")
        page.open(harness.page_url(server.ws_port, static_host))
        page.wait_state("live")
        result = page.driver.find_element(By.ID, "pub-result")
        body = page.driver.find_element(By.ID, "pub-body")
        body.send_keys("plain text, not JSON")
        page.driver.find_element(By.ID, "pub-token").send_keys("wrong")
        page.driver.find_element(By.ID, "pub-send").click()
        page.until(lambda d: "forbidden" in result.text)
        assert result.text.split()[0] in ("401", "403")
        token = page.driver.find_element(By.ID, "pub-token")
        token.clear()
        token.send_keys("s3cret")
        page.driver.find_element(By.ID, "pub-send").click()
        page.until(lambda d: result.text.startswith("200"))
        assert '"published"' in result.text
        page.wait_item('"message": "plain text, not JSON"')  # text becomes ``message``
