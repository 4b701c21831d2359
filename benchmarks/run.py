"""Run every benchmark scenario against livenotify and the ``websockets`` peer.

``python -m benchmarks`` (or ``python benchmarks/run.py``) runs, in one go:

- fan-out: N WebSocket subscribers, M messages of 200 bytes at maximum rate;
- latency: the same subscribers at a fixed publish rate well under capacity;
- tcp: the fan-out over livenotify's NDJSON/TCP transport (vs the peer's WS);
- idle: 10,000 idle WebSocket connections: server RSS per connection and
  connection rate;
- slow: 5% of the subscribers stop reading (livenotify with
  ``--slow-policy disconnect`` and ``drop``; the peer as it is);
- http: the fan-out to WebSocket subscribers, published by keep-alive HTTP
  publishers (``POST /publish/<event>``): publishes per second, acknowledged;
- sse: the fan-out to Server-Sent Events subscribers (``GET /sse``).
  (livenotify only: the peer has neither; ratios are against its WebSocket
  fan-out, and against livenotify's own in the same run.)
- replay: one subscriber catches up on 10,000 notifications it missed
  (``subscribe bench since E:N``, from memory), timed (livenotify only).

Every fan-out row also gives deliveries per second of the server's own CPU
time (psutil user + system, first publish to last delivery), the fair
figure on a machine where the generator's core saturates first; the idle
rows give server CPU per accepted connection.

The load generator is ``benchmarks/loadgen/loadgen.js`` (node + ``ws``,
installed with npm into the gitignored ``benchmarks/loadgen/node_modules``
on first use). Server and generator are pinned to different cores. Results:
a table on stdout, ``benchmarks/results/<stamp>.json`` and ``.png``; a full
(non ``--quick``) run also refreshes ``benchmarks/chart.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOADGEN = HERE / "loadgen"
RESULTS = HERE / "results"
CHART = HERE / "chart.png"
PYTHON = sys.executable

#: Payload size of every published message, bytes (the issue's 200).
MESSAGE_BYTES = 200
#: Seconds a server gets to start listening.
START_TIMEOUT = 30.0
#: Seconds without any delivery after which a fan-out run is over (loss).
QUIET_S = 5.0
#: Hard cap on one generator run, seconds.
RUN_TIMEOUT_S = 900.0
#: The latency scenario publishes at this fraction of the lower of the two
#: servers' measured fan-out capacity: "well under capacity".
LATENCY_LOAD = 0.25
#: Share of subscribers that stop reading in the slow scenario.
SLOW_SHARE = 0.05
#: livenotify's default --queue-size (notifications queued per subscriber).
DEFAULT_QUEUE = 1024
#: File descriptors wanted by server and generator (10,000 connections each
#: side plus slack); capped by the hard limit.
NOFILE = 30_000


@dataclass(frozen=True)
class Plan:
    """Sizes of one run; ``--quick`` shrinks them to a smoke test."""

    subscribers: tuple[int, ...] = (1000, 5000)
    messages: int = 2000
    latency_seconds: float = 10.0
    idle_connections: int = 10_000
    slow_subscribers: int = 1000
    #: Runs per server of the latency scenario, and slow-reader runs (and
    #: as many baseline runs) per server variant; medians are shown.
    repeat: int = 3

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            subscribers=(100, 300),
            messages=200,
            latency_seconds=2.0,
            idle_connections=1000,
            slow_subscribers=300,
            repeat=1,
        )


@dataclass
class Row:
    """One measured line of the results table."""

    scenario: str
    server: str
    subscribers: int
    transport: str = "ws"
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "server": self.server,
            "subscribers": self.subscribers,
            "transport": self.transport,
            **self.figures,
        }


# -- processes ----------------------------------------------------------------


def _cores() -> tuple[set[int] | None, set[int] | None]:
    """(server cores, generator cores): the last CPU for the server, the rest
    for the generator; no pinning on a single-core machine."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def _preexec(cores: set[int] | None) -> Callable[[], None]:
    def setup() -> None:
        if cores:
            os.sched_setaffinity(0, cores)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

    return setup


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Server:
    """A server under test, started fresh for every measurement."""

    def __init__(
        self, name: str, argv: list[str], ws_port: int, tcp_port: int | None, cores: set[int] | None
    ) -> None:
        self.name = name
        self.ws_port = ws_port
        self.tcp_port = tcp_port
        self.log: list[str] = []
        self.out: list[str] = []
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_preexec(cores),
        )
        assert self.proc.stderr is not None and self.proc.stdout is not None
        threading.Thread(target=self._drain, args=(self.proc.stderr, self.log), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.out), daemon=True).start()
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        # livenotify logs "ready" at INFO only; at WARNING we poll the ports.
        while not all(_port_open(p) for p in (ws_port, tcp_port) if p):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} did not start:\n" + "\n".join(self.log[-20:]))
            time.sleep(0.05)

    @staticmethod
    def _drain(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip())

    def stats(self) -> dict[str, str]:
        """livenotify's console ``stats`` counters; {} for the peer."""
        if self.name != "livenotify" or self.proc.stdin is None:
            return {}
        seen = len(self.out)
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            for line in self.out[seen:]:
                if "dropped=" in line:
                    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            time.sleep(0.05)
        return {}

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def cpu_system(self) -> float:
        """Kernel-side CPU seconds only (syscalls: the per-delivery send())."""
        return float(self.ps.cpu_times().system)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def livenotify(
    cores: set[int] | None,
    slow_policy: str = "disconnect",
    queue_size: int = 1024,
    extra: Sequence[str] = (),
    ports: tuple[int, int] | None = None,
) -> Iterator[Server]:
    """A livenotify server; ``extra`` flags, and (ws, tcp) ``ports`` to
    share with another process (``--reuse-port``)."""
    with tempfile.TemporaryDirectory(prefix="lnbench-") as tmp:
        ws_port, tcp_port = ports or (_free_port(), _free_port())
        argv = [
            PYTHON,
            "-m",
            "livenotify",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(tcp_port),
            "--ws-port",
            str(ws_port),
            "--db",
            f"{tmp}/s.db",
            "--data-dir",
            tmp,
            "--no-worker",
            "--events",
            "bench,ctl",
            "--queue-size",
            str(queue_size),
            "--slow-policy",
            slow_policy,
            "--rate-limit",
            "0",
            "--max-connections",
            "30000",
            "--max-connections-per-ip",
            "30000",
            "--log-level",
            "WARNING",
            *extra,
        ]
        server = Server("livenotify", argv, ws_port, tcp_port, cores)
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def peer(cores: set[int] | None) -> Iterator[Server]:
    port = _free_port()
    argv = [PYTHON, str(HERE / "peers" / "websockets_peer.py"), "--port", str(port)]
    server = Server("websockets", argv, port, None, cores)
    try:
        yield server
    finally:
        server.stop()


def ensure_loadgen() -> None:
    """Install node's ``ws`` into benchmarks/loadgen/node_modules if missing."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("the load generator needs node and npm (apt-get install nodejs npm)")
    if not (LOADGEN / "node_modules" / "ws" / "package.json").exists():
        print("installing node ws into benchmarks/loadgen/node_modules ...", flush=True)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=LOADGEN, check=True
        )


_src_base = 0


def run_loadgen(
    cfg: dict[str, Any],
    cores: set[int] | None,
    server: Server,
    hold: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the generator once; measure the server's CPU while it publishes.

    ``hold`` is called with the ``open`` line of an idle run, while the
    connections are still up.
    """
    global _src_base
    cfg = {
        "event": "bench",
        "size": MESSAGE_BYTES,
        "quiet_s": QUIET_S,
        "timeout_s": RUN_TIMEOUT_S,
        "src_base": _src_base,
        **cfg,
    }
    _src_base += 97  # each run starts on other source addresses
    proc = subprocess.Popen(
        ["node", str(LOADGEN / "loadgen.js"), json.dumps(cfg)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_preexec(cores),
    )
    assert proc.stdout is not None and proc.stdin is not None
    result: dict[str, Any] = {}
    cpu0 = t0 = sys0 = 0.0
    try:
        for line in proc.stdout:
            msg = json.loads(line)
            if msg.get("phase") == "publishing":
                cpu0, t0 = server.cpu(), time.monotonic()
                sys0 = server.cpu_system()
            elif msg.get("phase") == "open":
                result = msg
                if hold:
                    hold(msg)
                proc.stdin.write("close\n")
                proc.stdin.flush()
            elif msg.get("phase") == "closed":
                result["closed_by_server"] = msg["closed_by_server"]
            else:
                result = msg
                if t0:
                    cpu_s = server.cpu() - cpu0
                    result["server_cpu_s"] = cpu_s
                    result["server_sys_share"] = (server.cpu_system() - sys0) / max(cpu_s, 1e-9)
                    result["server_cpu_pct"] = 100 * cpu_s / max(time.monotonic() - t0, 1e-9)
        proc.wait(RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or not result:
        raise RuntimeError(f"load generator failed (exit {proc.returncode})")
    return result


# -- scenarios ----------------------------------------------------------------


def _fanout_figures(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "deliveries_per_s": r["deliveries_per_s"],
        "deliveries": r["deliveries"],
        "expected": r["expected_deliveries"],
        "lost": r["lost"],
        "duplicates": r["duplicates"],
        "reordered": r["reordered"],
        "closed_by_server": r["closed_by_server"],
        "p50_ms": r["latency_ms"]["p50"],
        "p99_ms": r["latency_ms"]["p99"],
        "max_ms": r["latency_ms"]["max"],
        "rate": r["rate"],
        "messages": r["messages"],
        "wall_s": r["wall_s"],
        "gen_cpu_pct": r["cpu_pct"],
        "server_cpu_pct": r.get("server_cpu_pct"),
        "server_cpu_s": r.get("server_cpu_s"),
        "server_sys_share": r.get("server_sys_share"),
        # Deliveries per second of the server's own CPU time (user + system,
        # psutil) from the first publish to the last delivery: what the
        # server can do per core, whatever the generator's core allows.
        "deliveries_per_cpu_s": (
            r["deliveries"] / r["server_cpu_s"] if r.get("server_cpu_s") else None
        ),
        "connected": r["connected"],
        "pub_errors": r["pub_errors"],
        "first_pub_error": r.get("first_pub_error"),
        "pub_transport": r.get("pub_transport", "ws"),
        "publishes_per_s": r.get("publishes_per_s"),
    }


def _urls(server: Server) -> dict[str, Any]:
    base = f"ws://127.0.0.1:{server.ws_port}/"
    if server.name == "livenotify":
        # The publisher listens to "ctl" only, so it is not one of the receivers.
        return {
            "sub_url": base + "?events=bench",
            "pub_url": base + "?events=ctl",
            "expect_welcome": True,
            "host": "127.0.0.1",
            "tcp_port": server.tcp_port,
            "sse_url": f"http://127.0.0.1:{server.ws_port}/sse?events=bench",
            "http_pub_url": f"http://127.0.0.1:{server.ws_port}/publish/bench",
        }
    return {"sub_url": base, "pub_url": base, "expect_welcome": False}


def fanout(
    server: Server,
    cores: set[int] | None,
    subscribers: int,
    messages: int,
    rate: float = 0.0,
    transport: str = "ws",
    pub_transport: str = "ws",
    publishers: int = 1,
) -> dict[str, Any]:
    r = run_loadgen(
        {
            "mode": "fanout",
            "subscribers": subscribers,
            "messages": messages,
            "rate": rate,
            "transport": transport,
            "pub_transport": pub_transport,
            "publishers": publishers,
            **_urls(server),
        },
        cores,
        server,
    )
    return _fanout_figures(r)


def idle(server: Server, cores: set[int] | None, connections: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    time.sleep(0.5)
    before = server.rss()
    cpu0 = server.cpu()

    def measure(opened: dict[str, Any]) -> None:
        figures["server_cpu_s"] = server.cpu() - cpu0
        time.sleep(1.0)  # let the server finish per-connection setup
        figures["rss_delta_bytes"] = server.rss() - before

    r = run_loadgen(
        {"mode": "idle", "connections": connections, **_urls(server)}, cores, server, hold=measure
    )
    n = max(r["connected"], 1)
    figures.update(
        {
            "connected": r["connected"],
            "connections_per_s": r["connections_per_s"],
            "rss_before_mib": before / 2**20,
            "kib_per_connection": figures["rss_delta_bytes"] / n / 1024,
            # Server CPU per accepted connection (handshake, welcome, setup).
            "cpu_ms_per_connection": 1000 * figures["server_cpu_s"] / n,
            "gen_cpu_pct": r["cpu_pct"],
            "closed_by_server": r.get("closed_by_server", 0),
        }
    )
    return figures


@contextlib.contextmanager
def slow_clients(server: Server, count: int) -> Iterator[None]:
    path = "/?events=bench" if server.name == "livenotify" else "/"
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "benchmarks.slow_clients",
            "127.0.0.1",
            str(server.ws_port),
            path,
            str(count),
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError("slow clients failed to connect")
        yield
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- report -------------------------------------------------------------------


def _fmt(v: Any, nd: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _peer_of(rows: list[Row], row: Row) -> Row | None:
    scenario = "fanout" if row.scenario in ("tcp", "http", "sse") else row.scenario
    for r in rows:
        if (
            r.server == "websockets"
            and r.scenario == scenario
            and r.subscribers == row.subscribers
            and r is not row
        ):
            return r
    return None


def _server_counters(srv: Any) -> dict[str, Any]:
    st = srv.stats()
    return {"server_dropped": st.get("dropped"), "server_disconnects": st.get("disconnects")}


def _median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose ``key`` is the median (the lower one of an even count)."""
    ordered = sorted(runs, key=lambda r: float(r[key]))
    return ordered[(len(ordered) - 1) // 2]


def table(rows: list[Row]) -> str:
    """The results as a fixed-width text table, ratios against the peer."""
    out = []
    head = (
        f"{'scenario':<16}{'server':<24}{'subs':>6}  {'deliv/s':>9}{'x peer':>8}"
        f"{'lost':>7}{'dup':>5}{'reord':>6}{'p50 ms':>9}{'p99 ms':>9}{'x peer':>8}{'max ms':>9}"
        f"{'srv cpu':>8}{'gen cpu':>8}{'deliv/cpu-s':>12}{'x peer':>8}"
    )
    out.append(head)
    out.append("-" * len(head))
    for r in rows:
        f = r.figures
        if r.scenario in ("idle", "replay"):
            continue
        p = _peer_of(rows, r)
        ratio = (
            f["deliveries_per_s"] / p.figures["deliveries_per_s"]
            if p and p.figures["deliveries_per_s"]
            else None
        )
        p99_ratio = (
            f["p99_ms"] / p.figures["p99_ms"] if p and f["p99_ms"] and p.figures["p99_ms"] else None
        )
        per_cpu = f.get("deliveries_per_cpu_s")
        peer_cpu = p.figures.get("deliveries_per_cpu_s") if p else None
        cpu_ratio = per_cpu / peer_cpu if per_cpu and peer_cpu else None
        label = r.server + ("/" + r.transport if r.transport != "ws" else "")
        scen = r.scenario + (f"@{f['rate']:g}/s" if f["rate"] else "")
        out.append(
            f"{scen:<16}{label:<24}{r.subscribers:>6}  {_fmt(f['deliveries_per_s']):>9}"
            f"{_fmt(ratio, 2) if ratio else '':>8}{_fmt(f['lost']):>7}{_fmt(f['duplicates']):>5}"
            f"{_fmt(f['reordered']):>6}{_fmt(f['p50_ms'], 1):>9}{_fmt(f['p99_ms'], 1):>9}"
            f"{_fmt(p99_ratio, 2) if p99_ratio else '':>8}{_fmt(f['max_ms'], 1):>9}"
            f"{_fmt(f['server_cpu_pct']):>7}%{_fmt(f['gen_cpu_pct']):>7}%"
            f"{_fmt(per_cpu):>12}{_fmt(cpu_ratio, 2) if cpu_ratio else '':>8}"
        )
        if r.scenario in ("http", "sse") and f.get("note"):
            out.append(f"{'':<16}  {f['note']}")
        if r.scenario == "latency" and len(f.get("runs", ())) > 1:
            runs = ", ".join(_fmt(v, 1) for v in f["runs"])
            out.append(f"{'':<16}  p99 ms of {len(f['runs'])} runs: {runs}; the median run shown")
        if r.scenario.startswith("slow"):
            extra = ""
            if f.get("server_dropped") is not None:
                extra = (
                    f"; server: dropped={f['server_dropped']} disconnects={f['server_disconnects']}"
                )
            out.append(
                f"{'':<16}  {f['slow_clients']} slow readers; fast ones closed by server: "
                f"{f['closed_by_server']}{extra}"
            )
            if "base_deliveries_per_s" in f:
                now, before, what = f["deliveries_per_s"], f["base_deliveries_per_s"], "deliv/s"
            elif "base_p99_ms" in f:
                now, before, what = f["p99_ms"], f["base_p99_ms"], "p99 ms"
            else:
                continue
            out.append(
                f"{'':<16}  {what} of the {r.subscribers - f['slow_clients']} others, median of "
                f"{len(f.get('runs', [now]))}: {_fmt(now, 1)} vs {_fmt(before, 1)} with no slow "
                f"readers: {(now / before - 1) * 100:+.1f}%"
            )
    idle_rows = [r for r in rows if r.scenario == "idle"]
    if idle_rows:
        out.append("")
        out.append(
            f"{'idle':<16}{'server':<24}{'conns':>6}  {'KiB/conn':>9}{'x peer':>8}"
            f"{'conn/s':>9}{'x peer':>8}{'RSS0 MiB':>10}{'cpu ms/conn':>12}{'x peer':>8}"
            f"{'gen cpu':>8}"
        )
        peer_row = next((r for r in idle_rows if r.server == "websockets"), None)
        for r in idle_rows:
            f = r.figures
            mem_ratio = rate_ratio = cpu_ratio = ""
            if peer_row and r is not peer_row:
                base = peer_row.figures
                mem_ratio = _fmt(f["kib_per_connection"] / base["kib_per_connection"], 2)
                rate_ratio = _fmt(f["connections_per_s"] / base["connections_per_s"], 2)
                if base.get("cpu_ms_per_connection") and f.get("cpu_ms_per_connection"):
                    cpu_ratio = _fmt(f["cpu_ms_per_connection"] / base["cpu_ms_per_connection"], 2)
            out.append(
                f"{'idle':<16}{r.server:<24}{f['connected']:>6}  "
                f"{_fmt(f['kib_per_connection'], 1):>9}{mem_ratio:>8}"
                f"{_fmt(f['connections_per_s']):>9}{rate_ratio:>8}"
                f"{_fmt(f['rss_before_mib'], 1):>10}"
                f"{_fmt(f.get('cpu_ms_per_connection'), 3):>12}{cpu_ratio:>8}"
                f"{_fmt(f.get('gen_cpu_pct')):>7}%"
            )
    return "\n".join(out)


def chart(rows: list[Row], path: Path) -> None:
    """Deliveries/s and p99 latency against subscriber count, per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, c, b) = plt.subplots(1, 3, figsize=(16, 4.2))
    series = [
        ("livenotify", "fanout", "ws", "livenotify (WebSocket)", "o-C0"),
        ("livenotify", "tcp", "tcp", "livenotify (TCP)", "s--C1"),
        ("websockets", "fanout", "ws", "websockets peer", "^-C2"),
    ]
    for server, scen, transport, label, style in series:
        pts = sorted(
            (r.subscribers, r.figures["deliveries_per_s"])
            for r in rows
            if r.server == server and r.scenario == scen and r.transport == transport
        )
        if pts:
            a.plot(*zip(*pts, strict=True), style, label=label)
        pts = sorted(
            (r.subscribers, r.figures.get("deliveries_per_cpu_s") or 0)
            for r in rows
            if r.server == server and r.scenario == scen and r.transport == transport
        )
        if pts:
            c.plot(*zip(*pts, strict=True), style, label=label)
    for server, label, style in [
        ("livenotify", "livenotify", "o-C0"),
        ("websockets", "websockets peer", "^-C2"),
    ]:
        pts = sorted(
            (r.subscribers, r.figures["p99_ms"])
            for r in rows
            if r.server == server and r.scenario == "latency"
        )
        if pts:
            b.plot(*zip(*pts, strict=True), style, label=label)
    rates = sorted({round(r.figures["rate"]) for r in rows if r.scenario == "latency"})
    a.set(
        title=f"Fan-out, {MESSAGE_BYTES}-byte messages at max rate",
        xlabel="subscribers",
        ylabel="deliveries / s",
    )
    c.set(
        title="Fan-out per second of server CPU time",
        xlabel="subscribers",
        ylabel="deliveries / server CPU-s",
    )
    shown = "/".join(map(str, rates))
    b.set(
        title=f"p99 publish-to-receive latency at a fixed rate ({shown} msg/s)",
        xlabel="subscribers",
        ylabel="ms",
    )
    for ax in (a, c, b):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.set_ylim(bottom=0)
    b.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    import websockets

    return {
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "websockets": websockets.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


# -- main ---------------------------------------------------------------------


SCENARIOS = ("fanout", "latency", "tcp", "idle", "slow", "http", "sse", "replay", "scaleout")
#: Notifications the replay scenario has one subscriber catch up on.
REPLAY_COUNT = 10_000


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="short smoke version")
    ap.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)}",
    )
    ap.add_argument(
        "--servers",
        default="websockets,livenotify",
        help="comma-separated subset of websockets,livenotify",
    )
    ap.add_argument("--subscribers", help="override the subscriber counts, e.g. 1000,5000")
    ap.add_argument("--messages", type=int, help="override the message count")
    args = ap.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.subscribers:
        subs = tuple(int(n) for n in args.subscribers.split(","))
        plan = Plan(
            subs,
            plan.messages,
            plan.latency_seconds,
            plan.idle_connections,
            min(plan.slow_subscribers, max(subs)),
        )
    if args.messages:
        plan = Plan(
            plan.subscribers,
            args.messages,
            plan.latency_seconds,
            plan.idle_connections,
            plan.slow_subscribers,
        )
    only = set(args.only.split(","))
    unknown = only - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    servers = [s for s in ("websockets", "livenotify") if s in args.servers.split(",")]
    server_cores, gen_cores = _cores()
    ensure_loadgen()

    def start(name: str, **kw: Any) -> contextlib.AbstractContextManager[Server]:
        if name == "websockets":
            return peer(server_cores)
        # The peer queues without limit; livenotify's per-subscriber queue must
        # hold the whole burst, or a publisher that outruns the fan-out gets
        # every subscriber disconnected as slow (seen with 5,000 subscribers
        # and the default 1,024). The slow scenario keeps the default.
        kw.setdefault("queue_size", max(DEFAULT_QUEUE, 2 * plan.messages))
        return livenotify(server_cores, **kw)

    rows: list[Row] = []

    def note(row: Row) -> None:
        rows.append(row)
        f = row.figures
        brief = {
            k: (round(v, 1) if isinstance(v, float) else v)
            for k, v in f.items()
            if k
            in (
                "deliveries_per_s",
                "lost",
                "p99_ms",
                "kib_per_connection",
                "connections_per_s",
                "cpu_ms_per_connection",
                "closed_by_server",
                "gen_cpu_pct",
                "server_cpu_pct",
                "deliveries_per_cpu_s",
            )
        }
        print(
            f"  {row.scenario:<8} {row.server:<24} {row.transport:<4} n={row.subscribers:<6}"
            f" {brief}",
            flush=True,
        )

    started = time.time()
    info = machine()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; server on cores {server_cores}, "
        f"generator on cores {gen_cores}",
        flush=True,
    )
    if "fanout" in only:
        for n in plan.subscribers:
            for name in servers:
                with start(name) as srv:
                    note(Row("fanout", name, n, "ws", fanout(srv, gen_cores, n, plan.messages)))
    if "tcp" in only and "livenotify" in servers:
        for n in plan.subscribers:
            with start("livenotify") as srv:
                note(
                    Row(
                        "tcp",
                        "livenotify",
                        n,
                        "tcp",
                        fanout(srv, gen_cores, n, plan.messages, transport="tcp"),
                    )
                )

    def latency_rate(n: int) -> tuple[float, int]:
        capacity = [
            r.figures["deliveries_per_s"]
            for r in rows
            if r.scenario == "fanout" and r.subscribers == n
        ]
        # Same fixed rate for both servers: a quarter of the slower one's
        # capacity (or a conservative 5,000 deliveries/s if not measured).
        per_s = LATENCY_LOAD * min(capacity) if capacity else 5000.0
        rate = max(1.0, round(per_s / n, 1))
        return rate, max(20, min(plan.messages, int(rate * plan.latency_seconds)))

    if "latency" in only:
        for n in plan.subscribers:
            rate, count = latency_rate(n)
            # p99 of one run moves by +-25% between runs here: the servers
            # take turns, plan.repeat times, and the median run is shown.
            by_server: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
            for _ in range(plan.repeat):
                for name in servers:
                    with start(name) as srv:
                        by_server[name].append(fanout(srv, gen_cores, n, count, rate))
            for name, runs in by_server.items():
                f = dict(_median_run(runs, "p99_ms"))
                f["runs"] = [r["p99_ms"] for r in runs]
                note(Row("latency", name, n, "ws", f))
    if "idle" in only:
        for name in servers:
            with start(name) as srv:
                note(
                    Row(
                        "idle",
                        name,
                        plan.idle_connections,
                        "ws",
                        idle(srv, gen_cores, plan.idle_connections),
                    )
                )
    if "slow" in only:
        n = plan.slow_subscribers
        slow = max(1, round(n * SLOW_SHARE))
        variants: list[tuple[str, dict[str, Any]]] = []
        if "websockets" in servers:
            variants.append(("websockets", {}))
        if "livenotify" in servers:
            variants += [
                ("livenotify", {"slow_policy": "disconnect", "queue_size": DEFAULT_QUEUE}),
                ("livenotify", {"slow_policy": "drop", "queue_size": DEFAULT_QUEUE}),
            ]
        rate, count = latency_rate(n)
        for name, kw in variants:
            label = name + (f" ({kw['slow_policy']})" if "slow_policy" in kw else "")
            # Baseline: the same runs on the same server settings with no
            # slow readers, alternated with the slow runs, plan.repeat times
            # each; medians are compared (one pair apart by minutes moved
            # by +-15% on a shared machine).
            base: list[dict[str, Any]] = []
            base_lat: list[dict[str, Any]] = []
            with_slow: list[dict[str, Any]] = []
            with_slow_lat: list[dict[str, Any]] = []
            for _ in range(plan.repeat):
                with start(name, **kw) as srv:
                    base.append(fanout(srv, gen_cores, n - slow, plan.messages))
                    base_lat.append(fanout(srv, gen_cores, n - slow, count, rate))
                with start(name, **kw) as srv, slow_clients(srv, slow):
                    f = fanout(srv, gen_cores, n - slow, plan.messages)
                    f.update(_server_counters(srv))
                    with_slow.append(f)
                    # Then latency at the fixed rate while the slow readers'
                    # queues are full (drop) or they are gone (disconnect).
                    f = fanout(srv, gen_cores, n - slow, count, rate)
                    f.update(_server_counters(srv))
                    with_slow_lat.append(f)
            for scenario, runs, bases, key in (
                ("slow", with_slow, base, "deliveries_per_s"),
                ("slow-lat", with_slow_lat, base_lat, "p99_ms"),
            ):
                f = dict(_median_run(runs, key))
                f["slow_clients"] = slow
                f["runs"] = [r[key] for r in runs]
                f["base_runs"] = [r[key] for r in bases]
                f["base_" + key] = _median_run(bases, key)[key]
                note(Row(scenario, label, n, "ws", f))

    if "livenotify" in servers:
        from benchmarks.http_scenarios import http_publish, sse_fanout

        n = plan.subscribers[0]
        if "http" in only:
            note(http_publish(start, gen_cores, n, plan, rows, fanout))
        if "sse" in only:
            note(sse_fanout(start, gen_cores, n, plan, rows, fanout))
    if "replay" in only and "livenotify" in servers:
        with start("livenotify", queue_size=2 * REPLAY_COUNT) as srv:
            # Imported here: run.py also runs as a script (sys.path set below).
            from benchmarks.replay import replay

            note(Row("replay", "livenotify", 1, "tcp", replay(srv, REPLAY_COUNT)))
    scale_rows: list[dict[str, Any]] = []
    if "scaleout" in only:
        from benchmarks import scaleout  # it imports this module

        size = (200, 200) if args.quick else (scaleout.SUBSCRIBERS, scaleout.MESSAGES)
        scale_rows = scaleout.scenario(server_cores, gen_cores, *size)
        print()
        print(scaleout.table(scale_rows))

    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = table(rows) if rows else ""
    print()
    print(text)
    info["loadavg_at_end"] = os.getloadavg()
    doc = {
        "started": started,
        "duration_s": time.time() - started,
        "quick": args.quick,
        "plan": plan.__dict__,
        "machine": info,
        "server_cores": sorted(server_cores or []),
        "generator_cores": sorted(gen_cores or []),
        "rows": [r.to_json() for r in rows],
        "scaleout": scale_rows,
    }
    out = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(doc, indent=2))
    png = out.with_suffix(".png")
    if rows:
        chart(rows, png)
    if not args.quick and {"fanout", "latency"} <= only and len(servers) == 2:
        shutil.copyfile(png, CHART)
    for r in rows:
        if r.scenario == "replay":
            f = r.figures
            print(
                f"replay: {f['replayed']:,} notifications to one subscriber in "
                f"{f['seconds'] * 1000:,.0f} ms ({f['replayed_per_s']:,.0f}/s; "
                f"subscribed reply after {f['reply_ms']:.1f} ms)"
            )
    print(
        f"\nresults: {out.relative_to(ROOT)}, chart: {png.relative_to(ROOT) if rows else '-'}"
        f"  ({time.time() - started:.0f}s)"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
