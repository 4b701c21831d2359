"""Drive the web page in a real headless Chromium against a real server.

The server under test is pluggable: when ``livenotify serve`` answers
``GET /`` on its WebSocket port with the page, the browser opens it there
(same origin, the server's own Content-Security-Policy). Until then a small
stdlib HTTP server in the test process serves the page's files and the page
is pointed at the real server with ``?server=127.0.0.1:PORT``; its policy
allows that target. Publishing goes through ``POST /publish/<event>`` when the
server has it, else over TCP.

Every wait is bounded: ``WebDriverWait`` with a timeout, sockets with one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from livenotify import web
from tests.helpers import LineClient, ServerProcess

#: Bound on any one wait for the page (a cold Chromium on a loaded machine).
WAIT = 30.0
#: Bound on a reconnect: the server's restart plus the page's backoff cap.
RECONNECT_WAIT = 60.0
#: Bound on one HTTP probe or publish.
HTTP_TIMEOUT = 10.0

#: Sources the stdlib page server's policy allows: any local port, so one
#: page server serves tests whose servers listen on different ports.
LOCAL_CONNECT = ("http://127.0.0.1:*", "ws://127.0.0.1:*")


def browser_paths() -> tuple[str, str] | None:
    """Paths of Debian's ``chromium`` and ``chromedriver``, or None."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


def make_driver(paths: tuple[str, str], width: int = 1280, height: int = 900) -> WebDriver:
    """A headless Chromium driven by the system chromedriver."""
    chromium, driver = paths
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests may run as root in a container
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    chrome.set_page_load_timeout(WAIT)
    chrome.set_script_timeout(WAIT)
    return chrome


class _PageHandler(BaseHTTPRequestHandler):
    """Serves the page's files with a policy that allows local targets."""

    def do_GET(self) -> None:
        item = web.asset(self.path)
        if item is None:
            self.send_error(404)
            return
        self.send_response(200)
        headers = web.response_headers(
            item, host=self.headers.get("Host"), extra_connect=LOCAL_CONNECT
        )
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(item.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: pytest shows failures, not every GET


@contextlib.contextmanager
def page_server() -> Iterator[str]:
    """A stdlib HTTP server for the page's files; yields its ``host:port``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(HTTP_TIMEOUT)


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def serves_page(ws_port: int) -> bool:
    """Whether the server answers ``GET /`` with this page (200, HTML, marker)."""
    try:
        status, headers, body = _request(ws_port, "GET", "/")
    except (OSError, http.client.HTTPException):
        return False  # today's WebSocket-only port: no HTTP answer
    return (
        status == 200
        and headers.get("content-type", "").startswith("text/html")
        and web.PAGE_MARKER.encode() in body
    )


def serves_http_publish(ws_port: int) -> bool:
    """Whether ``POST /publish/<event>`` exists: an unknown event gets the
    404 ``unknown_event`` error, or ``forbidden`` with a publish token set
    (either way the probe publishes nothing)."""
    try:
        status, _, body = _request(
            ws_port, "POST", "/publish/zz_probe_no_such_event", b"{}",
            {"Content-Type": "application/json"},
        )  # fmt: skip
        reply = json.loads(body)
    except (OSError, http.client.HTTPException, ValueError):
        return False
    expected = {404: "unknown_event", 401: "forbidden", 403: "forbidden"}
    return isinstance(reply, dict) and reply.get("code") == expected.get(status)


def page_url(ws_port: int, static_host: str) -> str:
    """Where the browser opens the page for a server on ``ws_port``."""
    if serves_page(ws_port):
        return f"http://127.0.0.1:{ws_port}/"
    return f"http://{static_host}/?server=127.0.0.1:{ws_port}"


def publish(server: ServerProcess, event: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Publish ``fields`` as ``event`` the way a producer would: an HTTP POST
    when the server has it (the fields become the notification's), else a
    TCP ``publish`` (they arrive under ``data``). Returns the reply."""
    if serves_http_publish(server.ws_port):
        status, _, body = _request(
            server.ws_port, "POST", f"/publish/{event}", json.dumps(fields).encode(),
            {"Content-Type": "application/json"},
        )  # fmt: skip
        reply: dict[str, Any] = json.loads(body)
        assert status == 200, (status, reply)
        return reply
    with LineClient("127.0.0.1", server.tcp_port) as client:
        client.recv_type("welcome")
        client.send({"type": "publish", "event": event, "data": fields})
        return client.recv_type("published")


class Page:
    """The page in a browser tab, with bounded waits on what it shows."""

    def __init__(self, driver: WebDriver) -> None:
        self.driver = driver

    def open(self, url: str) -> None:
        self.driver.get(url)

    def until(
        self, what: Callable[[WebDriver], Any], timeout: float = WAIT, message: str = ""
    ) -> Any:
        """``what(driver)`` once it is truthy, within ``timeout`` seconds."""
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            what, message or f"page did not get there; state={self.state()!r}"
        )

    def state(self) -> str:
        element = self.driver.find_element(By.ID, "state")
        return str(element.get_attribute("data-state"))

    def state_text(self) -> str:
        return str(self.driver.find_element(By.ID, "state").text)

    def wait_state(self, name: str, timeout: float = WAIT) -> None:
        self.until(lambda d: self.state() == name, timeout, f"state never became {name!r}")

    def items(self) -> list[WebElement]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, "#feed > li"))

    def wait_item(self, text: str, timeout: float = WAIT) -> WebElement:
        """The newest feed item whose text contains ``text``."""

        def found(_: WebDriver) -> WebElement | None:
            for item in self.items():
                if text in item.text:
                    return item
            return None

        item: WebElement = self.until(found, timeout, f"no feed item with {text!r}")
        return item

    def notice(self) -> str:
        return str(self.driver.find_element(By.ID, "notice").text)

    def csp_violations(self) -> int:
        value = self.driver.find_element(By.TAG_NAME, "body").get_attribute("data-csp-violations")
        return int(value or 0)


def supports_positions(server: ServerProcess) -> bool:
    """Whether the server gives positions (v2): its welcome has ``position``."""
    with LineClient("127.0.0.1", server.tcp_port) as client:
        return "position" in client.recv_type("welcome")


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of ``upstream_port`` that can cut
    every connection and refuse new ones (a network outage, server still up).

    It records the first bytes of each connection: the WebSocket request line,
    so a test can see the ``since=`` a reconnect asked for.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.requests: list[str] = []
        self._open = True
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                if not self._open:
                    client.close()
                    continue
                try:
                    upstream = socket.create_connection(
                        ("127.0.0.1", self.upstream_port), timeout=HTTP_TIMEOUT
                    )
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        first = record
        try:
            while data := src.recv(65536):
                if first:
                    self.requests.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
                    first = False
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection; refuse new ones until :meth:`restore`."""
        with self._lock:
            self._open = False
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()
        self._thread.join(HTTP_TIMEOUT)
