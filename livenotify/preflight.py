"""Checks ``livenotify serve`` makes before it starts anything.

Each failure is a :class:`~livenotify.settings.SettingError`: one line
naming the setting and saying what is actually wrong, so that a bad path is
refused up front instead of surfacing later as a crash-looping worker.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .config import Config
from .settings import SettingError


def _probe(directory: Path) -> str | None:
    """Why files cannot be created in ``directory``, or None if they can."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".livenotify-probe-"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)


def check_data_dir(path: str) -> None:
    """``--data-dir`` is (or can be made) a writable directory."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise SettingError(f"--data-dir {path}: exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingError(
            f"--data-dir {path}: cannot create it in {p.absolute().parent}: {exc.strerror or exc}"
        ) from None
    why = _probe(p)
    if why is not None:
        raise SettingError(f"--data-dir {path}: cannot create files in it: {why}")


def check_db(path: str) -> None:
    """``--db`` in an existing directory where we cannot create files.

    The storage process explains every other problem with the file itself;
    this case it would describe as a missing directory (``/proc/x.db``).
    """
    p = Path(path)
    parent = p.absolute().parent
    if p.exists() or not parent.is_dir():
        return
    why = _probe(parent)
    if why is not None:
        raise SettingError(f"--db {path}: cannot create files in {parent}: {why}")


def check_ports(config: Config) -> None:
    """The two listeners need two ports (0 picks a free one for each)."""
    if config.port and config.port == config.ws_port:
        raise SettingError(
            f"--port and --ws-port are both {config.port}: the TCP and WebSocket "
            "listeners need different ports"
        )


def check_access(config: Config) -> None:
    """TLS files that load and match; one JWT key; private events that exist
    and that a token can open."""
    from .tls import server_context

    server_context(config)
    if config.jwt_secret is not None and config.jwt_public_key is not None:
        raise SettingError("--jwt-secret and --jwt-public-key: give one of them, not both")
    if config.private_events:
        unknown = [e for e in config.private_events if e not in config.events]
        if unknown:
            raise SettingError(f"--private-events: {', '.join(unknown)} not in --events")
        if config.jwt_secret is None and config.jwt_public_key is None:
            raise SettingError(
                "--private-events needs --jwt-secret or --jwt-public-key (tokens grant them)"
            )


def check(config: Config) -> None:
    """Every start-up check, in the order an operator would fix them."""
    check_ports(config)
    check_access(config)
    check_db(config.db)
    check_data_dir(config.data_dir)
