"""``--log-format json``: one JSON object per line, extra fields included."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from livenotify import logs
from tests.helpers import ROOT


def test_json_formatter_carries_extra_fields() -> None:
    stream = io.StringIO()
    logs.setup("DEBUG", "json", stream)
    try:
        log = logging.getLogger("livenotify.test")
        log.debug("closed %s", "x", extra={"peer": "[::1]:5", "event": "e", "reason": "slow"})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        logs.setup("WARNING", "text")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "DEBUG" and first["logger"] == "livenotify.test"
    assert first["message"] == "closed x"
    assert (first["peer"], first["event"], first["reason"]) == ("[::1]:5", "e", "slow")
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


def test_server_logs_json_lines(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVENOTIFY_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "livenotify", "serve", "--host", "127.0.0.1", "--port", "0",
         "--ws-port", "0", "--db", str(tmp_path / "s.db"), "--data-dir", str(tmp_path / "d"),
         "--no-worker", "--log-format", "json", "--log-level", "debug"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env=env, cwd=str(ROOT),
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[dict[str, object]] = []
    watchdog = threading.Timer(30, proc.kill)  # bounds the blocking reads below
    watchdog.start()
    try:
        for raw in proc.stderr:
            lines.append(json.loads(raw))
            if "ready" in str(lines[-1]["message"]):
                break
        proc.send_signal(signal.SIGTERM)
        _, out = proc.communicate(timeout=30)
        lines.extend(json.loads(raw) for raw in out.splitlines() if raw.strip())
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert any("ready" in str(line["message"]) for line in lines)
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys()
