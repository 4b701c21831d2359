"""The bridge's backlog, in memory: sequence numbers, acks, the bound,
chunks toward the writer, read-your-writes."""

from __future__ import annotations

import pytest

from livenotify.storage import StorageBusy
from livenotify.storage.backlog import Backlog
from storage_proc.ops import (
    LogNotification,
    MarkQueued,
    RegisterWrite,
    SubscribeWrite,
    UnsubscribeWrite,
    unpack,
)


def test_sequence_acks_and_the_bound() -> None:
    backlog = Backlog(limit=3)
    assert [backlog.push(RegisterWrite(f"u{i}", "t")) for i in range(3)] == [1, 2, 3]
    assert backlog.full
    with pytest.raises(StorageBusy):
        backlog.push(RegisterWrite("x", "t"))
    assert backlog.seq == 3  # a refused write takes no number
    assert backlog.acknowledge(2) is False
    assert len(backlog) == 1 and not backlog.full
    assert backlog.push(RegisterWrite("y", "t")) == 4
    backlog.acknowledge(99)  # beyond what was accepted: capped
    assert backlog.acked == 4 and len(backlog) == 0


def test_chunks_respect_the_window_and_restart_resends() -> None:
    backlog = Backlog(limit=100)
    for i in range(10):
        backlog.push(RegisterWrite(f"u{i}", "t"))
    first = backlog.next_chunk(in_flight_limit=4, max_writes=3, max_bytes=1 << 20)
    assert first is not None and first[0] == 1 and len(first[1]) == 3
    second = backlog.next_chunk(4, 3, 1 << 20)
    assert second is not None and second[0] == 4 and len(second[1]) == 1  # window full
    assert backlog.next_chunk(4, 3, 1 << 20) is None
    assert unpack(second[1][0]) == RegisterWrite("u3", "t")
    backlog.acknowledge(2)
    backlog.restart()  # a new writer gets everything after the ack again
    again = backlog.next_chunk(4, 10, 1 << 20)
    assert again is not None and again[0] == 3 and len(again[1]) == 4


def test_chunk_stops_at_the_byte_bound() -> None:
    backlog = Backlog(limit=100)
    for i in range(5):
        backlog.push(LogNotification(f"n{i}", "e", "x" * 400, "t"))
    chunk = backlog.next_chunk(100, 100, 1000)
    assert chunk is not None and len(chunk[1]) == 3  # 1,200 bytes reached at the third


def test_pending_subscriptions_apply_in_order_until_acknowledged() -> None:
    backlog = Backlog(limit=100)
    backlog.push(SubscribeWrite("a", ("x", "y"), "t"))
    backlog.push(UnsubscribeWrite("a", ("x",)))
    backlog.push(SubscribeWrite("b", ("z",), "t"))
    pending = backlog.pending_subscriptions("a")
    assert Backlog.apply_subscriptions(["x", "w"], pending) == ["w", "y"]
    assert backlog.acknowledge(2) is False
    assert backlog.pending_subscriptions("a") == []
    assert len(backlog.pending_subscriptions("b")) == 1


def test_marked_rows_and_logged_notifications() -> None:
    backlog = Backlog(limit=100)
    backlog.push(MarkQueued((1, 2), "t"))
    backlog.push(MarkQueued((2,), "t"))
    assert set(backlog.pending_queued) == {1, 2}
    backlog.acknowledge(1)
    assert set(backlog.pending_queued) == {2}  # still being marked by write 2
    backlog.push(LogNotification("n", "e", "{}", "t"))
    assert backlog.acknowledge(3) is True  # a commit that logged a notification
    assert not backlog.pending_queued
