"""The page's side of resuming (Wire v2), against a scripted v2 peer.

Until the server gives positions, a small ``websockets`` server plays the v2
side of the contract exactly as DESIGN.md words it (welcome with the head,
notifications with ``offset``/``epoch``, ``subscribed`` with ``recovered`` and
``replayed`` after ``?since=``), so the page's resume logic runs in a real
browser today. The same flows against the real server are in test_page.py
(skipped until positions exist).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from websockets.sync.server import Server, ServerConnection, serve

from tests.browser import harness
from tests.browser.harness import Page

CATALOG = ["furniture_created", "furniture_updated", "furniture_deleted"]
#: Bound on how long a scripted connection stays open for the test.
HOLD = 60.0


def note(event: str, epoch: str, offset: int, n: str) -> dict[str, object]:
    return {
        "type": event, "n": n, "id": f"id{offset}", "timestamp": "2026-01-15T14:30:00.000Z",
        "epoch": epoch, "offset": offset,
    }  # fmt: skip


class ScriptedPeer:
    """Connection ``i`` sends ``scripts[i]``, then stays open until
    ``release(i)``; the request path of each connection is recorded."""

    def __init__(self, scripts: list[list[dict[str, object]]]) -> None:
        self.scripts = scripts
        self.paths: list[str] = []
        self._released = [threading.Event() for _ in scripts]
        self._lock = threading.Lock()
        self.server: Server = serve(self._handle, "127.0.0.1", 0)
        self.port = int(self.server.socket.getsockname()[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, ws: ServerConnection) -> None:
        with self._lock:
            index = len(self.paths)
            self.paths.append(urllib.parse.unquote(ws.request.path if ws.request else ""))
        if index >= len(self.scripts):
            ws.close()
            return
        for message in self.scripts[index]:
            ws.send(json.dumps(message))
        self._released[index].wait(HOLD)
        ws.close()

    def release(self, index: int) -> None:
        """End connection ``index`` (the page sees the server go away)."""
        self._released[index].set()

    def close(self) -> None:
        for event in self._released:
            event.set()
        self.server.shutdown()
        self._thread.join(harness.HTTP_TIMEOUT)


@pytest.fixture
def peer() -> Iterator[ScriptedPeer]:
    scripts: list[list[dict[str, object]]] = [
        # 1: a fresh page, at head 0; one notification.
        [
            {"type": "welcome", "events": CATALOG, "position": "e1:0"},
            note("furniture_created", "e1", 1, "first"),
        ],
        # 2: resumed from e1:1; two missed, replayed, with a duplicate of
        # offset 1 racing in (the page must not show it twice).
        [
            {"type": "welcome", "events": CATALOG, "position": "e1:3"},
            {"type": "subscribed", "events": ["*"], "recovered": True, "replayed": 2,
             "position": "e1:3"},
            note("furniture_created", "e1", 1, "first"),
            note("furniture_updated", "e1", 2, "second"),
            note("furniture_deleted", "e1", 3, "third"),
        ],
        # 3: the log lost continuity: a new epoch, nothing replayed.
        [
            {"type": "welcome", "events": CATALOG, "position": "e2:7"},
            {"type": "subscribed", "events": ["*"], "recovered": False, "replayed": 0,
             "position": "e2:7"},
        ],
        # 4: resumed from the new epoch's head.
        [
            {"type": "welcome", "events": CATALOG, "position": "e2:7"},
            {"type": "subscribed", "events": ["*"], "recovered": True, "replayed": 0,
             "position": "e2:7"},
        ],
    ]  # fmt: skip
    scripted = ScriptedPeer(scripts)
    try:
        yield scripted
    finally:
        scripted.close()


def test_the_page_resumes_from_its_last_position(
    page: Page, peer: ScriptedPeer, static_host: str
) -> None:
    page.open(f"http://{static_host}/?server=127.0.0.1:{peer.port}")
    page.wait_state("live")
    page.wait_item('"first"')
    assert peer.paths[0] == "/?events=*"  # a fresh page: no position yet
    peer.release(0)
    page.wait_state("reconnecting")
    page.wait_state("live", harness.RECONNECT_WAIT)
    page.wait_item('"third"')
    assert peer.paths[1] == "/?events=*&since=e1:1"
    page.until(lambda d: "caught up: 2 missed notifications" in page.notice())
    texts = [item.text for item in page.items()]
    assert len(texts) == 3 and '"third"' in texts[0] and '"first"' in texts[2], texts
    assert page.driver.find_element(By.ID, "position").text == "e1:3"

    peer.release(1)
    page.wait_state("reconnecting")
    page.wait_state("live", harness.RECONNECT_WAIT)
    assert peer.paths[2] == "/?events=*&since=e1:3"
    page.until(lambda d: "some notifications may be missing" in page.notice())
    # Not recoverable: the next resume starts from the new epoch's head.
    peer.release(2)
    page.wait_state("reconnecting")
    page.wait_state("live", harness.RECONNECT_WAIT)
    assert peer.paths[3] == "/?events=*&since=e2:7"
    page.until(lambda d: "caught up: 0 missed notifications" in page.notice())
    assert page.csp_violations() == 0
