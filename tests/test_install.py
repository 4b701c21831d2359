"""A plain ``pip install .`` runs what the README shows (issue 12.1).

Builds a fresh virtual environment with the project alone (no test extras;
pip's cache is allowed), then checks the command, the Python API, and a
``celery -A tasks worker`` against Redis started from another folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.celery_app import describe_broker
from tests.helpers import ROOT, LogLines
from tests.mailtools import MAIL_REDIS_URL, WORKER_START_TIMEOUT

pytestmark = pytest.mark.slow

#: Building a venv and installing Celery on a loaded 2-core machine.
INSTALL_TIMEOUT = 600


def _copy_sources(dest: Path) -> None:
    # The files git knows about (committed or not), without virtualenvs and
    # caches: the build must not see the test environment.
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=60,
    ).stdout.splitlines()  # fmt: skip
    for name in names:
        src = ROOT / name
        if name.startswith(".tools/") or not src.is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plain-install")
    src = root / "src"
    src.mkdir()
    _copy_sources(src)
    env = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=120)
    proc = subprocess.run(
        [str(env / "bin" / "pip"), "install", "-q", str(src)],
        capture_output=True, text=True, timeout=INSTALL_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LIVENOTIFY_", "PYTHON"))}
    env.update(extra)
    return env


def test_command_and_api(venv: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(venv / "bin" / "livenotify"), "serve", "--help"],
        capture_output=True, text=True, timeout=60, env=_clean_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0 and "--ws-port" in proc.stdout, proc.stderr
    code = (
        "import livenotify, tasks, kombu.transport.redis, redis; "
        "assert livenotify.Publisher.publish; print(livenotify.__file__)"
    )
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        capture_output=True, text=True, timeout=60, env=_clean_env(), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(venv) in proc.stdout  # the installed copy, not the work tree


def test_redis_worker_starts_from_another_folder(venv: Path, tmp_path: Path) -> None:
    worker = subprocess.Popen(
        [str(venv / "bin" / "celery"), "-A", "tasks", "worker", "--pool=solo",
         "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1, cwd=tmp_path,
        env=_clean_env(LIVENOTIFY_BROKER=MAIL_REDIS_URL, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    try:
        log = LogLines(worker.stdout)
        line = log.wait(r"mail worker ready: .*; broker (\S+)$", WORKER_START_TIMEOUT)
        assert line.group(1) == MAIL_REDIS_URL
        log.wait(r"\bready\.$", WORKER_START_TIMEOUT)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(10)


def test_broker_is_described_with_its_password_masked(tmp_path: Path) -> None:
    assert describe_broker("redis://:s3cret@db:6379/0", tmp_path) == "redis://:***@db:6379/0"
    assert describe_broker("redis://u:s3cret@db/0", tmp_path) == "redis://u:***@db/0"
    assert "LIVENOTIFY_BROKER unset" in describe_broker(None, tmp_path)
    assert str(tmp_path / "broker") in describe_broker(None, tmp_path)
