"""What one idle WebSocket connection costs livenotify, and where.

Runs a livenotify server *in this process* (so its heap can be inspected),
opens N idle WebSocket connections with the node load generator
(``benchmarks/loadgen``, idle mode: 100 handshakes in flight, each waits for
the welcome) and prints, per connection:

- RSS delta (psutil) and the accept rate the generator saw;
- Trio tasks and cancel scopes alive (walking the task tree);
- with ``--tracemalloc``: live Python bytes, grouped by allocating line;
- with ``--cprofile``: where the server's CPU went during the connect storm.

``--tracemalloc`` and ``--cprofile`` slow the server down; take the RSS and
rate figures from a plain run.

    .venv/bin/python -m benchmarks.profile_conn -n 5000
    .venv/bin/python -m benchmarks.profile_conn -n 2000 --tracemalloc
    .venv/bin/python -m benchmarks.profile_conn -n 5000 --cprofile
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import logging
import pstats
import tempfile
import time
import tracemalloc
from collections import Counter
from typing import Any

import psutil
import trio

from livenotify.config import Config, Limits
from livenotify.server import Server

from .run import LOADGEN, NOFILE, ensure_loadgen


def _walk(task: trio.lowlevel.Task, tasks: list[trio.lowlevel.Task]) -> None:
    tasks.append(task)
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            _walk(child, tasks)


def _task_census() -> Counter[str]:
    tasks: list[trio.lowlevel.Task] = []
    _walk(trio.lowlevel.current_root_task(), tasks)
    return Counter(t.name.rsplit(".", 1)[-1] for t in tasks)


def _types() -> Counter[str]:
    return Counter(type(o).__name__ for o in gc.get_objects())


async def profile(args: argparse.Namespace) -> None:
    ps = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="lnprof-") as tmp:
        config = Config(
            host="127.0.0.1",
            port=0,
            ws_port=0,
            db=f"{tmp}/s.db",
            data_dir=tmp,
            events=("bench", "ctl"),
            worker=False,
            queue_size=4000,
            log_level="WARNING",
            limits=Limits(max_connections=30_000, max_connections_per_ip=30_000, rate_per_second=0),
        )
        async with trio.open_nursery() as nursery:
            srv = Server(config, console=False)
            server: Server = await nursery.start(srv.run)
            await trio.sleep(0.5)
            gc.collect()
            if args.gc_freeze:
                gc.freeze()
            if args.gc_threshold:
                gc.set_threshold(*map(int, args.gc_threshold.split(",")))
            tasks0, types0 = _task_census(), _types()
            rss0 = ps.memory_info().rss
            if args.tracemalloc:
                tracemalloc.start(args.frames)
                snap0 = tracemalloc.take_snapshot()
            prof = cProfile.Profile() if args.cprofile else None
            gc_time = [0.0, 0.0]
            gc_counts: Counter[int] = Counter()

            def on_gc(phase: str, info: dict[str, int]) -> None:
                if phase == "start":
                    gc_time[1] = time.perf_counter()
                else:
                    gc_time[0] += time.perf_counter() - gc_time[1]
                    gc_counts[info["generation"]] += 1

            if args.gc_stats:
                gc.callbacks.append(on_gc)
            cpu0 = ps.cpu_times()
            cfg = {
                "mode": "idle",
                "connections": args.n,
                "sub_url": f"ws://127.0.0.1:{server.ws_port}/?events=bench",
                "expect_welcome": True,
                "src_base": 0,
                "event": "bench",
                "size": 200,
                "quiet_s": 5,
                "timeout_s": 600,
            }
            proc = await trio.lowlevel.open_process(
                ["node", str(LOADGEN / "loadgen.js"), json.dumps(cfg)],
                stdin=-1,  # subprocess.PIPE
                stdout=-1,
            )
            assert proc.stdout is not None and proc.stdin is not None
            if prof:
                prof.enable()
            buf = b""
            while b"\n" not in buf:
                chunk = await proc.stdout.receive_some()
                if not chunk:
                    raise RuntimeError("load generator exited")
                buf += chunk
            if prof:
                prof.disable()
            cpu1 = ps.cpu_times()
            if args.gc_stats:
                gc.callbacks.remove(on_gc)
            opened: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
            await trio.sleep(1.0)
            gc.collect()
            n = max(opened["connected"], 1)
            rss = ps.memory_info().rss - rss0
            tasks = _task_census() - tasks0
            types = _types() - types0
            print(
                f"connections {opened['connected']}  rate {opened['connections_per_s']:,.0f}/s  "
                f"RSS delta {rss / n / 1024:.1f} KiB/conn  "
                f"sessions {len(server.sessions)}  "
                f"CPU {(cpu1.user + cpu1.system - cpu0.user - cpu0.system) / n * 1e3:.2f} ms/conn"
            )
            if args.gc_stats:
                print(f"GC during the storm: {gc_time[0]:.2f}s, passes {dict(gc_counts)}")
            print(f"trio tasks per connection: {sum(tasks.values()) / n:.2f}  {dict(tasks)}")
            print("objects per connection (top 25):")
            for name, count in types.most_common(25):
                print(f"  {count / n:6.2f}  {name}")
            if args.tracemalloc:
                snap = tracemalloc.take_snapshot()
                tracemalloc.stop()
                by_file = snap.compare_to(snap0, "filename")
                print("tracemalloc by file (B/conn):")
                for s in by_file[: args.top_files]:
                    print(f"  {s.size_diff / n:8.0f}  {s.traceback[0].filename}")
                stats = snap.compare_to(snap0, "traceback" if args.frames > 1 else "lineno")
                total = sum(s.size_diff for s in stats)
                print(f"tracemalloc: {total / n / 1024:.2f} KiB/conn live Python heap; top lines:")
                for s in stats[: args.top]:
                    print(f"  {s.size_diff / n:8.0f} B/conn  {s.count_diff / n:5.1f} blocks")
                    for line in s.traceback.format()[-2 * args.frames :]:
                        print("      " + line.strip())
            if prof:
                print("cProfile of the connect storm (cumulative, top 40):")
                pstats.Stats(prof).sort_stats(args.sort).print_stats(40)
            await proc.stdin.send_all(b"close\n")
            await proc.wait()
            await trio.sleep(0.5)
            server.request_shutdown("done")


def main() -> None:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(NOFILE, hard), hard))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=5000, help="idle connections")
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--frames", type=int, default=1, help="tracemalloc traceback depth")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--top-files", type=int, default=12)
    ap.add_argument("--cprofile", action="store_true")
    ap.add_argument("--sort", default="tottime")
    ap.add_argument("--gc-stats", action="store_true", help="count and time GC passes")
    ap.add_argument(
        "--gc-freeze",
        action="store_true",
        help="experiment: gc.freeze() once the server is up, as serve() could",
    )
    ap.add_argument("--gc-threshold", help="experiment: gc.set_threshold(...), e.g. 50000,20,10")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ensure_loadgen()
    t0 = time.monotonic()
    trio.run(profile, args)
    print(f"({time.monotonic() - t0:.0f}s)")


if __name__ == "__main__":
    main()
