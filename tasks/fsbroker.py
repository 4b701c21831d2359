"""The embedded broker: kombu's filesystem transport, made safe to crash.

kombu's own filesystem transport moves a message out of the queue folder the
moment a worker fetches it, so a worker killed before it acknowledged the
message loses it, and a reader can pick up a file that is still being
written. Here:

* a message is written to ``tmp/``, fsynced, and renamed into ``queue/``, so
  a reader only ever sees complete files and an accepted publish survives a
  power cut;
* fetching renames it into ``unacked/<pid>.<name>``; acknowledging deletes
  it, rejecting or a warm shutdown puts a fresh copy back first;
* the first fetch of a consumer process moves back every ``unacked/`` file
  whose process is gone, so a message held by a worker that was killed is
  delivered again (and the idempotency key keeps it from being mailed twice).

Layout under the broker folder::

    queue/     messages ready for delivery, one file each
    unacked/   messages a consumer holds, prefixed with its pid
    tmp/       messages being written
    control/   exchange tables (kombu)

The folder is meant for one host: the pid check cannot see other machines.
"""

from __future__ import annotations

import errno
import logging
import os
import time
import uuid
from pathlib import Path
from queue import Empty
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem, virtual
from kombu.utils import json as kombu_json

log = logging.getLogger(__name__)

# kombu's JSON (it also encodes the datetimes and UUIDs kombu puts in
# message properties); untyped, hence Any.
_dumps: Any = kombu_json.dumps
_loads: Any = kombu_json.loads

#: ``broker_transport`` value that selects this transport.
TRANSPORT = "tasks.fsbroker:Transport"


def folders(root: str | os.PathLike[str]) -> dict[str, str]:
    """kombu transport options for a broker living in ``root``."""
    base = Path(root)
    return {
        "data_folder_in": str(base / "queue"),
        "data_folder_out": str(base / "queue"),
        "control_folder": str(base / "control"),
        "unacked_folder": str(base / "unacked"),
        "tmp_folder": str(base / "tmp"),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    return True


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Channel(filesystem.Channel):
    """A filesystem channel whose fetched messages are parked until acked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        #: delivery tag -> our file in ``unacked/``
        self._held: dict[str, str] = {}
        self._recovered = False
        for key in ("data_folder_in", "control_folder", "unacked_folder", "tmp_folder"):
            folder = self.transport_options.get(key)
            if folder:
                os.makedirs(folder, exist_ok=True)

    @property
    def unacked_folder(self) -> str:
        return str(self.transport_options.get("unacked_folder", "unacked"))

    @property
    def tmp_folder(self) -> str:
        return str(self.transport_options.get("tmp_folder", "tmp"))

    # kombu names the second parameter "message" in one base, "payload" in the
    # other; callers pass it positionally.
    def _put(self, queue: Any, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # Nanosecond wall-clock prefix: names sort in publish order, also
        # across reboots (kombu uses the monotonic clock, which restarts).
        name = f"{time.time_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        tmp = os.path.join(self.tmp_folder, name)
        try:
            with open(tmp, "wb") as f:
                f.write(_dumps(message).encode())
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(self.data_folder_out, name))
            _fsync_dir(self.data_folder_out)
        except OSError as exc:
            raise ChannelError(f"cannot add message {name!r}: {exc}") from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        if not self._recovered:
            self._recovered = True
            self._recover_orphans()
        suffix = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != suffix:
                continue
            held = os.path.join(self.unacked_folder, f"{os.getpid()}.{name}")
            try:
                os.rename(os.path.join(self.data_folder_in, name), held)
            except FileNotFoundError:
                continue  # another consumer took it first
            with open(held, "rb") as f:
                payload = _loads(f.read())
            tag = payload.get("properties", {}).get("delivery_tag")
            if tag is not None:
                self._held[str(tag)] = held
            return payload
        raise Empty()

    def _recover_orphans(self) -> None:
        """Requeue messages held by consumer processes that no longer exist."""
        try:
            names = os.listdir(self.unacked_folder)
        except FileNotFoundError:
            return
        restored = 0
        for name in names:
            pid_text, _, original = name.partition(".")
            if not pid_text.isdigit() or not original:
                continue
            pid = int(pid_text)
            if pid == os.getpid() or _pid_alive(pid):
                continue
            try:
                os.rename(
                    os.path.join(self.unacked_folder, name),
                    os.path.join(self.data_folder_in, original),
                )
                restored += 1
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise
        if restored:
            log.warning("embedded broker: requeued %d message(s) of a stopped worker", restored)

    def _release(self, delivery_tag: Any) -> None:
        held = self._held.pop(str(delivery_tag), None)
        if held is not None:
            try:
                os.unlink(held)
            except FileNotFoundError:
                pass

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple=multiple)  # type: ignore[no-untyped-call]
        self._release(delivery_tag)

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        # With requeue the QoS puts a fresh copy back (our _restore) first.
        super().basic_reject(delivery_tag, requeue=requeue)  # type: ignore[no-untyped-call]
        self._release(delivery_tag)

    def _restore(self, message: Any) -> None:
        super()._restore(message)  # type: ignore[no-untyped-call]
        self._release(message.delivery_tag)

    def _size(self, queue: Any) -> int:
        suffix = f"{queue}.msg"
        return sum(1 for n in os.listdir(self.data_folder_in) if n.partition(".")[2] == suffix)


class Transport(filesystem.Transport):
    """The embedded broker transport (see the module docstring)."""

    Channel = Channel
    driver_name = "livenotify-filesystem"

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)  # type: ignore[no-untyped-call]
        # kombu shares one in-memory binding table among all filesystem
        # connections of a process; a binding remembered there is not
        # written to *this* broker's control folder, and a publish through it
        # would silently reach no queue. Each connection declares its own.
        self.state = virtual.BrokerState()  # type: ignore[no-untyped-call]

    def drain_events(self, connection: Any, timeout: Any = None, **kwargs: Any) -> Any:
        # One poll round per call when the caller gave a deadline: Celery's
        # loop checks for a shutdown request only between calls, and its 2 s
        # deadline would make every warm shutdown wait up to 2 s.
        if timeout is not None:
            timeout = min(timeout, self.polling_interval)
        return super().drain_events(connection, timeout=timeout, **kwargs)  # type: ignore[no-untyped-call]

    @property
    def default_connection_params(self) -> dict[str, Any]:
        # No host to speak of; without this kombu warns "No hostname was
        # supplied" on every connection.
        return {"port": self.default_port}
