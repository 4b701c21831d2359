"""Run ``livenotify serve`` as users do, and talk to it over real sockets.

Every wait here is bounded: a helper that gives up raises with the server's
log attached, so a failing test says what the server was doing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The server's start-up line: ``ready — ws://HOST:WS_PORT  tcp HOST:TCP_PORT``
#: (``wss://`` with TLS).
READY = re.compile(r"ready — wss?://\S+:(\d+)\s+tcp \S+:(\d+)")
#: Generous liveness bound for start-up: a cold interpreter plus the
#: storage writer process on a loaded 2-core machine.
START_TIMEOUT = 30.0


class LogLines:
    """Lines of a subprocess's output, captured by a thread, waitable."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def mark(self) -> int:
        """Index of the next line, to wait only for lines after now."""
        with self._cond:
            return len(self.lines)

    def text(self, last: int = 60) -> str:
        with self._cond:
            return "\n".join(self.lines[-last:])

    def count(self, regex: str, start: int = 0) -> int:
        pattern = re.compile(regex)
        with self._cond:
            return sum(1 for line in self.lines[start:] if pattern.search(line))

    def wait(self, regex: str, timeout: float = 20.0, *, start: int = 0) -> re.Match[str]:
        """The first line from index ``start`` matching ``regex``; bounded by ``timeout``."""
        pattern = re.compile(regex)
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    m = pattern.search(self.lines[index])
                    index += 1
                    if m:
                        return m
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._done:
                    break
                self._cond.wait(min(remaining, 0.5))
        raise AssertionError(f"no line matching {regex!r} within {timeout}s; log:\n{self.text()}")


class ServerProcess:
    """A ``livenotify serve`` subprocess with its log captured line by line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.log = LogLines(proc.stdout)
        self.lines = self.log.lines
        self.tcp_port = 0
        self.ws_port = 0

    def log_text(self) -> str:
        return self.log.text(80)

    def wait_log(self, regex: str, timeout: float = 10.0, *, start: int = 0) -> re.Match[str]:
        """The first log/console line from index ``start`` matching ``regex``."""
        return self.log.wait(regex, timeout, start=start)

    def mark(self) -> int:
        """Index of the next log line, to wait only for lines after now."""
        return self.log.mark()

    def console(self, line: str) -> None:
        """Type a line on the admin console."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def command(self, line: str, expect: str, timeout: float = 10.0) -> re.Match[str]:
        """Type a console command and wait for its answer."""
        start = self.mark()
        self.console(line)
        return self.wait_log(expect, timeout, start=start)

    def stop(self, timeout: float = 15.0) -> int:
        """``exit`` on the console, then SIGTERM, then SIGKILL; the exit status."""
        if self.proc.poll() is None:
            try:
                self.console("exit")
            except (BrokenPipeError, OSError):
                pass
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(5)


def serve_command(*args: str, script: str | None = None) -> list[str]:
    """``python -m livenotify serve ARGS``, or ``python ROOT/SCRIPT ARGS``."""
    if script is not None:
        return [sys.executable, str(ROOT / script), *args]
    return [sys.executable, "-m", "livenotify", "serve", *args]


#: The flags that turn double opt-in and the registration limits off.
NO_OPTIN = (
    "--no-confirm",
    "--max-registrations",
    "1000000",
    "--max-registrations-per-ip",
    "1000000",
)


@contextmanager
def running_server(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    db: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    ws_port: int = 0,
    data_dir: str | None = None,
    worker: bool = False,
    script: str | None = None,
    confirm: bool = False,
) -> Iterator[ServerProcess]:
    """Start ``livenotify serve`` (or the seed's ``script``) on free ports; stop it after.

    The embedded e-mail worker is off unless ``worker`` is set: it is a
    Celery process that costs seconds per server, and only mail tests need it.
    Double opt-in is off (``--no-confirm``) unless ``confirm`` is set: the
    tests that are not about it register and expect mail at once.
    """
    tmp = tempfile.mkdtemp(prefix="livenotify-test-")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    full_env.pop("LIVENOTIFY_BROKER", None)
    full_env.update(env or {})
    argv = serve_command(
        "--host", host, "--port", str(port), "--ws-port", str(ws_port),
        "--db", db or os.path.join(tmp, "subscriptions.db"),
        "--data-dir", data_dir or os.path.join(tmp, "data"),
        *([] if worker else ["--no-worker"]),
        # Tests that are not about double opt-in or its limits register many
        # addresses and expect mail at once.
        *([] if confirm or script else NO_OPTIN),
        *args,
        script=script,
    )  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        env=full_env,
        cwd=str(cwd or ROOT),
    )
    server = ServerProcess(proc)
    try:
        m = server.wait_log(READY.pattern, START_TIMEOUT)
        server.ws_port, server.tcp_port = int(m.group(1)), int(m.group(2))
        yield server
    finally:
        if proc.poll() is None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def free_port() -> int:
    """A port that was free a moment ago (for tests that restart on the same port)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind(("::", 0))
        return int(s.getsockname()[1])


class LineClient:
    """A blocking NDJSON TCP client with a timeout on every read."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send_line(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def send(self, obj: dict[str, Any]) -> None:
        self.send_line(json.dumps(obj))

    def recv(self) -> dict[str, Any]:
        raw = self.file.readline()
        if not raw:
            raise EOFError("server closed the connection")
        obj: dict[str, Any] = json.loads(raw)
        return obj

    def recv_type(self, kind: str, limit: int = 1000) -> dict[str, Any]:
        """Read until a message of ``kind`` arrives (skipping others)."""
        for _ in range(limit):
            obj = self.recv()
            if obj.get("type") == kind:
                return obj
        raise AssertionError(f"no {kind!r} message in {limit} messages")

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> LineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def send_burst(client: LineClient, event: str, count: int) -> None:
    """Send ``count`` publishes of ``event`` (``data: {"seq": N}``) in one
    write, from a thread: the test reads meanwhile. A server that stops
    reading (shutdown) makes the rest fail quietly."""
    burst = "".join(
        json.dumps({"type": "publish", "event": event, "data": {"seq": s}}) + "\n"
        for s in range(count)
    ).encode()

    def send() -> None:
        with contextlib.suppress(OSError):
            client.sock.sendall(burst)

    threading.Thread(target=send, daemon=True).start()
