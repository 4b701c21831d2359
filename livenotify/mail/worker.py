"""The embedded e-mail worker and its log relay.

:class:`EmbeddedWorker` runs ``celery -A tasks worker`` as a child process
when no broker is configured (the embedded filesystem broker under
``<data_dir>/broker``), relays its log lines, restarts it if it dies, and
stops it with a warm shutdown (SIGTERM) when the server stops.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
from collections import deque
from functools import partial
from pathlib import Path

import trio

from ..config import Config

# Supervision lines as "livenotify.mail", the worker's own lines as
# "livenotify.mail.worker": the names operators know (docs/email.md).
log = logging.getLogger("livenotify.mail")
worker_log = logging.getLogger("livenotify.mail.worker")

#: Seconds the embedded worker gets for a warm shutdown (finish or put back
#: the message in hand) before it is killed; a killed worker's message is
#: put back by the next worker (see ``tasks.fsbroker``).
WORKER_STOP_TIMEOUT = 10.0
#: Backoff between restarts of an embedded worker that keeps dying.
WORKER_RESTART_MIN = 1.0
WORKER_RESTART_MAX = 60.0
#: A worker that ran this many seconds counts as healthy: the next restart
#: starts again from the minimum delay.
WORKER_HEALTHY_AFTER = 60.0
#: Unformatted worker output lines (banner, tracebacks) kept to show when the
#: worker exits with an error.
WORKER_TAIL_LINES = 40
#: A worker log line longer than this is cut (a runaway traceback line must
#: not make us buffer without bound).
WORKER_MAX_LINE = 16 * 1024

_LEVELS: dict[str, int] = {
    name: getattr(logging, name) for name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
}
_CELERY_LINE = re.compile(r"^\[[^\]]*?: (DEBUG|INFO|WARNING|ERROR|CRITICAL)/[^\]]*\] ?(.*)$")


def worker_command(config: Config) -> list[str]:
    """``celery -A tasks worker`` for the embedded broker, one process, one task at a time."""
    level = config.log_level if config.log_level in ("DEBUG", "INFO", "WARNING") else "INFO"
    return [
        # -P: no current directory on sys.path, so a "tasks" module that
        # happens to lie there cannot stand in for ours (PYTHONPATH has ours).
        sys.executable, "-P", "-m", "celery", "-A", "tasks", "worker",
        # solo: one mail at a time is plenty for a first run, and it is the
        # smallest worker (no pool processes).
        "--pool=solo", "--concurrency=1",
        # Gossip, mingle and heartbeats talk to other workers over broadcast
        # queues; an embedded worker has none.
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        f"--hostname=livenotify-mail-{os.getpid()}@%h",
        f"--loglevel={level}",
    ]  # fmt: skip


def worker_environment(config: Config) -> dict[str, str]:
    """The environment of the embedded worker: our own, plus where its data lives."""
    env = dict(os.environ)
    env.pop("LIVENOTIFY_BROKER", None)  # embedded: no broker URL
    env["LIVENOTIFY_DATA_DIR"] = str(Path(config.data_dir).absolute())
    env["LIVENOTIFY_PARENT_PID"] = str(os.getpid())
    env["PYTHONUNBUFFERED"] = "1"
    # The worker imports ``tasks`` from where we would, installed or not
    # (found without importing it: that would load Celery on the Trio thread).
    spec = importlib.util.find_spec("tasks")
    if spec is None or not spec.submodule_search_locations:
        where = spec.origin if spec is not None else "nowhere"
        raise RuntimeError(
            f"'tasks' (the e-mail worker package) resolves to {where}: "
            "is a tasks.py in the current folder hiding it?"
        )
    root = str(Path(next(iter(spec.submodule_search_locations))).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class EmbeddedWorker:
    """Runs and supervises the e-mail worker of the embedded broker."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.pid: int | None = None
        self.starts = 0
        self._tail: deque[str] = deque(maxlen=WORKER_TAIL_LINES)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the worker; restart it with backoff when it dies; stop it on cancel."""
        delay = WORKER_RESTART_MIN
        command, env = worker_command(self.config), worker_environment(self.config)
        while True:
            started_at = trio.current_time()
            code = await self._run_once(command, env, task_status)
            task_status = trio.TASK_STATUS_IGNORED
            if trio.current_time() - started_at >= WORKER_HEALTHY_AFTER:
                delay = WORKER_RESTART_MIN
            log.warning("mail worker exited with status %s; restarting in %.0fs", code, delay)
            for line in self._tail:
                worker_log.warning("%s", line)
            self._tail.clear()
            await trio.sleep(delay)
            delay = min(delay * 2, WORKER_RESTART_MAX)

    async def _run_once(
        self, command: list[str], env: dict[str, str], task_status: trio.TaskStatus[None]
    ) -> int:
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    env=env,
                    check=False,
                    deliver_cancel=self._stop,
                )
            )
            self.pid = proc.pid
            self.starts += 1
            log.info("mail worker started (pid %d)", proc.pid)
            task_status.started()
            assert proc.stdout is not None
            nursery.start_soon(self._relay, proc.stdout)
        self.pid = None
        return proc.returncode if proc.returncode is not None else -1

    async def _stop(self, proc: trio.Process) -> None:
        proc.terminate()  # Celery: warm shutdown
        with trio.move_on_after(WORKER_STOP_TIMEOUT):
            await proc.wait()
            log.info("mail worker stopped")
            return
        log.warning("mail worker did not stop within %.0fs; killing it", WORKER_STOP_TIMEOUT)
        proc.kill()

    async def _relay(self, stream: trio.abc.ReceiveStream) -> None:
        """Re-log the worker's output, one line at a time, at its own level."""
        buffer = bytearray()
        async for chunk in stream:
            buffer += chunk
            *lines, rest = buffer.split(b"\n")
            if len(rest) > WORKER_MAX_LINE:
                lines.append(rest[:WORKER_MAX_LINE])
                rest = bytearray()
            buffer = bytearray(rest)
            for raw in lines:
                self._relay_line(raw.decode(errors="replace").rstrip())
        if buffer:
            self._relay_line(buffer.decode(errors="replace").rstrip())

    def _relay_line(self, line: str) -> None:
        if not line.strip():
            return
        m = _CELERY_LINE.match(line)
        if m is None:
            # Banner and traceback lines: shown if the worker dies.
            self._tail.append(line)
            worker_log.debug("%s", line)
            return
        worker_log.log(_LEVELS[m.group(1)], "%s", m.group(2))
