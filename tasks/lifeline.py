"""End the worker when the server that started it is gone.

``livenotify serve`` starts the embedded worker as a child process and stops
it on shutdown. If the server is killed outright, nothing would stop the
worker, and the next server would start a second one on the same folder.
With ``LIVENOTIFY_PARENT_PID`` set, a daemon thread notices the parent's death
(we are re-parented) and asks this process for a warm shutdown (SIGTERM), so
the message in hand is finished or put back.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

#: Seconds between looks at our parent pid: how long an orphaned worker
#: outlives its server, against a wake-up per interval.
CHECK_INTERVAL = 1.0


def watch_parent(parent_pid: int, interval: float = CHECK_INTERVAL) -> threading.Thread:
    """Start the watcher thread; SIGTERM ourselves once ``parent_pid`` is gone."""

    def run() -> None:
        stop = threading.Event()
        while not stop.wait(interval):
            if os.getppid() != parent_pid:
                log.warning("server (pid %d) is gone; worker shutting down", parent_pid)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    thread = threading.Thread(target=run, name="livenotify-lifeline", daemon=True)
    thread.start()
    return thread


def watch_parent_from_env() -> threading.Thread | None:
    """Start the watcher if ``LIVENOTIFY_PARENT_PID`` names our parent."""
    raw = os.environ.get("LIVENOTIFY_PARENT_PID", "")
    if not raw.isdigit():
        return None
    pid = int(raw)
    if os.getppid() != pid:  # already orphaned before we looked
        os.kill(os.getpid(), signal.SIGTERM)
        return None
    return watch_parent(pid)
