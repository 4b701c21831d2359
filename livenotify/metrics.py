"""``GET /metrics``: the server's counters in the Prometheus text format.

One custom collector renders the one counters snapshot
(:func:`livenotify.stats.collect`, via ``app.stats()``) at scrape time, so
the hot path keeps its plain integer counters and pays nothing for
Prometheus. The one histogram, publish-to-write latency (a publish until
the storage writer has committed it), is sampled: one publish in
:data:`SAMPLE_EVERY` is timed, by one task, so a publish costs a counter
increment.

Each server has its own registry (never the process-global one), so
several servers in one process (tests) do not collide.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, Protocol

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .storage import StorageBridge, StorageBusy

if TYPE_CHECKING:
    from .backplane import Sent
    from .stats import Snapshot

__all__ = ["CONTENT_TYPE", "Metrics", "StatsSource"]

#: The exposition's content type.
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

#: One publish in this many is timed for the latency histogram.
SAMPLE_EVERY: Final = 16
#: Timed publishes waiting for their commit; more are not timed.
MAX_TIMING: Final = 64
#: Latency buckets, seconds (the storage writer batches for a few ms).
BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Transports always listed (0 when none is open), so dashboards find them.
TRANSPORTS: Final = ("tcp", "ws", "sse")


class StatsSource(Protocol):
    """What the metrics read of the server (:class:`~livenotify.server.Server`)."""

    @property
    def storage(self) -> StorageBridge | None: ...

    def stats(self) -> Snapshot:
        """The one snapshot of the server's counters."""
        ...


class _SnapshotCollector(Collector):
    """Renders a fresh :class:`~livenotify.stats.Snapshot` per scrape."""

    def __init__(self, app: StatsSource) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        snap: Snapshot = self._app.stats()
        by_transport = GaugeMetricFamily(
            "livenotify_connections", "Open connections, by transport", labels=["transport"]
        )
        for kind in sorted(set(TRANSPORTS) | set(snap.connections_by_transport)):
            by_transport.add_metric([kind], snap.connections_by_transport.get(kind, 0))
        yield by_transport
        yield GaugeMetricFamily(
            "livenotify_subscriptions", "Subscriptions (connection, event pairs)",
            value=snap.subscriptions,
        )  # fmt: skip
        counters = (
            ("connections", "Connections accepted", snap.connections_total),
            ("messages_in", "Messages read from clients", snap.messages_in),
            ("messages_out", "Notifications queued or written to subscribers (deliveries)",
             snap.messages_out),
            ("published", "Notifications published", snap.published),
            ("dropped", "Deliveries dropped by the slow-consumer policy", snap.dropped),
            ("refused", "Client messages refused with an error", snap.refused),
            ("throttled", "Reads held back by the rate limit", snap.throttled),
            ("refused_connections", "Connections refused at accept (too_many_connections)",
             snap.refused_connections),
        )  # fmt: skip
        for name, doc, value in counters:
            yield CounterMetricFamily(f"livenotify_{name}", doc, value=value)
        disconnects = CounterMetricFamily(
            "livenotify_disconnects", "Closed connections, by reason", labels=["reason"]
        )
        for reason, count in sorted(snap.disconnects.items()):
            disconnects.add_metric([reason], count)
        yield disconnects
        storage = snap.storage
        yield GaugeMetricFamily(
            "livenotify_storage_backlog", "Storage writes accepted, not yet committed",
            value=storage.get("pending", 0),
        )  # fmt: skip
        yield CounterMetricFamily(
            "livenotify_storage_restarts", "Storage writer restarts",
            value=storage.get("restarts", 0),
        )  # fmt: skip
        yield CounterMetricFamily(
            "livenotify_storage_commits", "Storage commits", value=storage.get("commits", 0)
        )
        mail = snap.mail
        yield CounterMetricFamily(
            "livenotify_mail_queued", "E-mails handed to the broker",
            value=mail.queued if mail is not None else 0,
        )  # fmt: skip
        yield CounterMetricFamily(
            "livenotify_mail_failed_handoffs", "Hand-offs the mail broker did not accept",
            value=mail.failed_handoffs if mail is not None else 0,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "livenotify_mail_broker_up", "1 when the mail broker is reachable",
            value=1 if mail is None or mail.broker_up else 0,
        )  # fmt: skip
        # One process: no backplane, so nothing lags.
        yield GaugeMetricFamily(
            "livenotify_backplane_lag_seconds", "How far behind the shared log this process reads",
            value=0,
        )  # fmt: skip


class Metrics:
    """A server's registry: the snapshot collector and the latency histogram."""

    def __init__(self, app: StatsSource) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(app))
        self.publish_latency = Histogram(
            "livenotify_publish_write_seconds",
            f"Seconds from a publish until storage committed it (1 in {SAMPLE_EVERY} sampled)",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._app = app
        self._publishes = 0
        self._send, self._receive = trio.open_memory_channel[tuple[int, float]](MAX_TIMING)

    def on_publish(self, event: str, sent: Sent) -> None:
        """A hub observer: time one publish in :data:`SAMPLE_EVERY`."""
        self._publishes += 1
        if self._publishes % SAMPLE_EVERY:
            return
        storage = self._app.storage
        if storage is None:
            return
        counts = storage.stats()
        # Writes are acknowledged in order: this one is the latest accepted.
        target = counts["acked"] + counts["pending"]
        try:
            self._send.send_nowait((target, time.perf_counter()))
        except trio.WouldBlock:
            pass  # enough are being timed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Observe each timed publish's commit, forever."""
        task_status.started()
        async for target, started in self._receive:
            storage: StorageBridge | None = self._app.storage
            if storage is None:
                continue
            try:
                await storage.committed(target)
            except StorageBusy:  # slow or stopping: that sample is lost
                continue
            self.publish_latency.observe(time.perf_counter() - started)

    def render(self) -> bytes:
        """The text format, as Prometheus scrapes it."""
        return generate_latest(self.registry)
