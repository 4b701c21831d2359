"""The front door's scenarios of ``python -m benchmarks``: HTTP publishing
and Server-Sent Events fan-out (livenotify only: the peer has neither).

Each runs ``Plan.repeat`` times on a fresh server; the median run is shown,
with its ratio to livenotify's own WebSocket fan-out at the same size when
that ran too (``fanout`` scenario), so the cost of the front door shows
apart from the machine's noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.run import Plan, Row, _median_run

#: Keep-alive HTTP connections publishing at once (each waits for its answer).
PUBLISHERS = 8


def _own_fanout(rows: list[Row], n: int) -> Row | None:
    return next(
        (r for r in rows if r.scenario == "fanout" and r.server == "livenotify"
         and r.subscribers == n),
        None,
    )  # fmt: skip


def _vs_ws(f: dict[str, Any], rows: list[Row], n: int) -> str:
    own = _own_fanout(rows, n)
    if own is None or not own.figures["deliveries_per_s"]:
        return ""
    base = own.figures["deliveries_per_s"]
    return (
        f"; deliv/s {f['deliveries_per_s']:,.0f} vs {base:,.0f} for the WebSocket fan-out "
        f"in this run ({f['deliveries_per_s'] / base:.2f}x)"
    )


def http_publish(
    start: Callable[..., Any], gen_cores: Any, n: int, plan: Plan, rows: list[Row],
    fanout: Callable[..., dict[str, Any]],
) -> Row:  # fmt: skip
    """Publishes per second (acknowledged) over keep-alive HTTP, ``n`` WebSocket subscribers."""
    runs = []
    for _ in range(plan.repeat):
        with start("livenotify") as srv:
            http = {"pub_transport": "http", "publishers": PUBLISHERS}
            runs.append(fanout(srv, gen_cores, n, plan.messages, **http))
    f = dict(_median_run(runs, "publishes_per_s"))
    f["runs"] = [r["publishes_per_s"] for r in runs]
    shown = ", ".join(f"{v:,.0f}" for v in f["runs"])
    f["note"] = (
        f"HTTP publishes/s (acked, {PUBLISHERS} keep-alive connections), median of "
        f"{len(runs)}: {f['publishes_per_s']:,.0f} (runs: {shown})" + _vs_ws(f, rows, n)
    )
    if f["pub_errors"]:
        f["note"] += f"; {f['pub_errors']} publish errors, first: {f['first_pub_error']}"
    return Row("http", "livenotify", n, "http-pub", f)


def sse_fanout(
    start: Callable[..., Any], gen_cores: Any, n: int, plan: Plan, rows: list[Row],
    fanout: Callable[..., dict[str, Any]],
) -> Row:  # fmt: skip
    """Deliveries per second to ``n`` SSE subscribers (one WebSocket publisher)."""
    runs = []
    for _ in range(plan.repeat):
        with start("livenotify") as srv:
            runs.append(fanout(srv, gen_cores, n, plan.messages, transport="sse"))
    f = dict(_median_run(runs, "deliveries_per_s"))
    f["runs"] = [r["deliveries_per_s"] for r in runs]
    shown = ", ".join(f"{v:,.0f}" for v in f["runs"])
    f["note"] = f"SSE deliv/s, median of {len(runs)} (runs: {shown})" + _vs_ws(f, rows, n)
    return Row("sse", "livenotify", n, "sse", f)
