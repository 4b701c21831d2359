"""The ``scaleout`` scenario: fan-out through 2 processes on ``--reuse-port``
+ a Redis backplane, against 1 process with the local backplane, in one run.

Both setups get the same subscribers and messages from the same generator
(the subscribers' connections are spread over the two processes by the
kernel; the publisher lands on one of them, and every notification goes
through Redis to both). Figures: deliveries per second, deliveries per
server CPU-second (the livenotify processes' user + system time; Redis's
own CPU is reported apart), and Redis commands per publish from ``INFO
commandstats`` of a private ``redis-server`` (nothing else talks to it):
``EVALSHA`` per publish is the round-trip count of a publish (1 by design:
one Lua script takes the offset and appends to the stream), ``XREAD`` the
reader's (amortised over batches, per process).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psutil
import redis

from benchmarks import run

#: Subscribers and messages of the scenario (``--quick`` divides them).
SUBSCRIBERS = 1000
MESSAGES = 1000


class Group:
    """Several servers measured as one (CPU summed)."""

    def __init__(self, servers: list[run.Server]) -> None:
        self.servers = servers

    def cpu(self) -> float:
        return sum(s.cpu() for s in self.servers)

    def cpu_system(self) -> float:
        return sum(s.cpu_system() for s in self.servers)


@contextlib.contextmanager
def private_redis(cores: set[int] | None) -> Iterator[tuple[str, psutil.Process]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("the scaleout scenario needs redis-server")
    port = run._free_port()
    with tempfile.TemporaryDirectory(prefix="lnbench-redis-") as tmp:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
            preexec_fn=run._preexec(cores),
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + run.START_TIMEOUT
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        try:
            yield url, psutil.Process(proc.pid)
        finally:
            client.close()
            proc.terminate()
            proc.wait(10)


def listening(server: run.Server, *ports: int) -> None:
    """Wait until this process itself listens on ``ports`` (the port is
    open as soon as the other process listens)."""
    deadline = time.monotonic() + run.START_TIMEOUT
    while True:
        bound = {
            c.laddr.port
            for c in server.ps.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        }
        if set(ports) <= bound:
            return
        if server.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("livenotify did not start:\n" + "\n".join(server.log[-20:]))
        time.sleep(0.05)


def commandstats(url: str) -> dict[str, int]:
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def scenario(
    server_cores: set[int] | None,
    gen_cores: set[int] | None,
    subscribers: int = SUBSCRIBERS,
    messages: int = MESSAGES,
) -> list[dict[str, Any]]:
    """Both setups, one after the other; a figures dict per setup."""
    queue = max(run.DEFAULT_QUEUE, 2 * messages)
    rows: list[dict[str, Any]] = []
    with run.livenotify(server_cores, queue_size=queue) as one:
        figures = run.fanout(one, gen_cores, subscribers, messages)
        rows.append({"setup": "1 process, local backplane", **figures})
    with private_redis(server_cores) as (url, redis_proc):
        ws_port, tcp_port = run._free_port(), run._free_port()
        extra = ["--backend", url, "--reuse-port"]
        with contextlib.ExitStack() as stack:
            servers = [
                stack.enter_context(
                    run.livenotify(
                        server_cores, queue_size=queue, extra=extra, ports=(ws_port, tcp_port)
                    )
                )
                for _ in range(2)
            ]
            for server in servers:
                listening(server, ws_port, tcp_port)
            group = Group(servers)
            before, redis_cpu = commandstats(url), redis_proc.cpu_times()
            r = run.run_loadgen(
                {
                    "mode": "fanout",
                    "subscribers": subscribers,
                    "messages": messages,
                    "rate": 0.0,
                    "transport": "ws",
                    **run._urls(servers[0]),
                },
                gen_cores,
                group,  # type: ignore[arg-type]
            )
            after, redis_cpu_after = commandstats(url), redis_proc.cpu_times()
            figures = run._fanout_figures(r)
            published = max(messages, 1)
            figures["evalsha_per_publish"] = (
                after.get("evalsha", 0) - before.get("evalsha", 0)
            ) / published
            figures["xread_per_publish"] = (after.get("xread", 0) - before.get("xread", 0)) / (
                published
            )
            figures["redis_cpu_s"] = (redis_cpu_after.user + redis_cpu_after.system) - (
                redis_cpu.user + redis_cpu.system
            )
            rows.append({"setup": "2 processes, --reuse-port + Redis", **figures})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'setup':<36}{'deliv/s':>10}{'deliv/CPU-s':>13}{'lost':>6}{'p99 ms':>8}"
        f"{'EVALSHA/pub':>13}{'XREAD/pub':>11}{'redis CPU s':>13}"
    )
    lines = [head, "-" * len(head)]

    def opt(r: dict[str, Any], key: str) -> str:
        return "-" if key not in r else f"{r[key]:.2f}"

    for r in rows:
        per_cpu = r.get("deliveries_per_cpu_s")
        lines.append(
            f"{r['setup']:<36}{r['deliveries_per_s']:>10,.0f}"
            f"{(per_cpu or 0):>13,.0f}{r['lost']:>6}{r['p99_ms']:>8.1f}"
            f"{opt(r, 'evalsha_per_publish'):>13}{opt(r, 'xread_per_publish'):>11}"
            f"{opt(r, 'redis_cpu_s'):>13}"
        )
    return "\n".join(lines)
