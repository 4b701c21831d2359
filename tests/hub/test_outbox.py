"""The per-connection queue (hub.delivery.Outbox) is bounded in items and in
bytes, in-process; the end-to-end attacks are in test_hostile_clients.py."""

from __future__ import annotations

import trio
import trio.testing

from livenotify.hub import Outbox
from livenotify.payload import Payload

TIMEOUT = 5.0


def payload(size: int) -> Payload:
    """A payload whose TCP line is ``size`` bytes long."""
    return Payload("x" * (size - 1))


def test_bytes_bound_refuses_before_the_item_bound() -> None:
    outbox = Outbox(100, max_bytes=1000)
    assert [outbox.offer(payload(300)) for _ in range(4)] == [True, True, True, False]
    assert (len(outbox), outbox.nbytes) == (3, 900)
    assert outbox.offer(payload(100))  # exactly at the bound still fits
    assert not outbox.has_room(1, 1)


def test_one_large_item_alone_always_fits() -> None:
    outbox = Outbox(100, max_bytes=1000)
    assert outbox.offer(payload(5000))
    assert not outbox.offer(payload(10))


def test_item_bound_still_holds() -> None:
    outbox = Outbox(2, max_bytes=1_000_000)
    assert [outbox.offer(payload(10)) for _ in range(3)] == [True, True, False]


async def test_take_frees_the_bytes_and_wakes_a_waiting_put() -> None:
    outbox = Outbox(100, max_bytes=1000)
    assert outbox.offer(payload(800))
    done = trio.Event()

    async def put() -> None:
        await outbox.put(payload(300))
        done.set()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(put)
            await trio.testing.wait_all_tasks_blocked()
            assert not done.is_set()  # 800 + 300 > 1000: it waits
            assert len(await outbox.take()) == 1
            await done.wait()
    assert (len(outbox), outbox.nbytes) == (1, 300)


def test_control_frames_and_tails_are_counted() -> None:
    outbox = Outbox(100, max_bytes=1000)
    outbox.tail(b"r" * 600)
    outbox.urgent(b"p" * 6)
    outbox.extend([payload(500)])  # past the bound: held deliveries must get out
    assert outbox.nbytes == 1106
    assert not outbox.offer(payload(1))
