"""The terminal client resumes by itself: after a lost connection it
replays what it missed since the last notification it saw, and says so."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.client.test_client import EVENTS, terminal_client
from tests.helpers import LineClient, running_server


class Cutter:
    """A TCP proxy in front of the server whose links can be cut: the
    client sees a lost connection, then refused reconnections, until
    :meth:`mend`."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self._links: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._serve()

    def _serve(self) -> None:
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                down, _ = listener.accept()
                up = socket.create_connection(("127.0.0.1", self.upstream))
                with self._lock:
                    self._links += [down, up]
                for a, b in ((down, up), (up, down)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    def cut(self) -> None:
        # shutdown wakes the thread blocked in accept(): the port is free then.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            links, self._links = self._links, []
        for s in links:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def mend(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._serve()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


@contextmanager
def cutter(upstream: int) -> Iterator[Cutter]:
    c = Cutter(upstream)
    try:
        yield c
    finally:
        c.cut()


def publish(port: int, *messages: str) -> None:
    with LineClient("127.0.0.1", port) as c:
        c.recv_type("welcome")
        for text in messages:
            c.send({"type": "publish", "event": "news", "message": text})
            c.recv_type("published")


def test_client_catches_up_after_a_lost_connection() -> None:
    with (
        running_server(*EVENTS) as srv,
        cutter(srv.tcp_port) as proxy,
        terminal_client("--port", str(proxy.port), "--email", "cy@example.com") as c,
    ):
        c.expect(r"registered as cy@example\.com")
        c.expect("livenotify> ")
        c.sendline("subscribe news")
        c.expect("subscribed to: news")
        publish(srv.tcp_port, "one")
        c.expect("news: one")
        proxy.cut()
        c.expect("reconnecting")
        publish(srv.tcp_port, "two", "three", "four")  # missed while away
        proxy.mend()
        c.expect(r"caught up: 3 missed notifications")
        text = c.before or ""
        # Replayed in order, before the note that says it is done.
        assert text.index("news: two") < text.index("news: three") < text.index("news: four")
        publish(srv.tcp_port, "five")
        c.expect("news: five")
        assert "news: one" not in (c.before or "")  # nothing twice
