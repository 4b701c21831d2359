"""WebSocket liveness: one task pings every connection that can answer.

Owned by the server (it runs :meth:`Heartbeat.run`) and the session (it
watches its connection while it runs); the hub knows nothing of it.
"""

from __future__ import annotations

from collections import deque

import trio

from . import protocol
from .hub import Subscriber
from .transports import Transport


class Probe:
    """A connection's place in the heartbeat schedule.

    Also what the WebSocket transport files as the waiter of its ping:
    trio-websocket calls :meth:`set` when the matching pong arrives.
    """

    __slots__ = ("answered", "deadline", "sub", "transport", "waiting")

    def __init__(self, sub: Subscriber, transport: Transport, deadline: float) -> None:
        self.sub: Subscriber | None = sub
        self.transport: Transport | None = transport
        self.deadline = deadline
        #: A ping is out; ``answered`` says whether its pong came back.
        self.waiting = False
        self.answered = False

    def set(self) -> None:
        self.answered = True


class Heartbeat:
    """One task probes every WebSocket connection (none per connection).

    Each connection is pinged ``interval`` seconds after it attached and then
    every ``interval`` seconds; a ping whose pong has not arrived by the next
    turn, ``interval`` seconds later, ends the connection with
    ``idle_timeout``. Every deadline is "now + interval" when it is set, so
    the schedule is a FIFO queue, always in deadline order: no heap, no
    timer per connection. A detached connection leaves only its small
    :class:`Probe` in the queue until its turn comes.

    :meth:`run` is one task of the server's nursery; it sleeps while there
    is no connection to probe.
    """

    #: Probes handled between two checkpoints, so that a burst of due pings
    #: (10,000 connections opened at once) does not stall the loop.
    BATCH = 256

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._queue: deque[Probe] = deque()
        #: Set while :meth:`run` waits for a first connection to probe.
        self._wakeup: trio.Event | None = None

    def watch(self, sub: Subscriber, transport: Transport) -> Probe:
        """Ping ``transport`` every ``interval`` seconds; an unanswered ping
        kills ``sub`` with ``idle_timeout``. Hand the probe to :meth:`unwatch`."""
        probe = Probe(sub, transport, trio.current_time() + self.interval)
        self._queue.append(probe)
        if self._wakeup is not None:
            self._wakeup.set()
        return probe

    @staticmethod
    def unwatch(probe: Probe) -> None:
        """Stop probing; the probe leaves the queue when its turn comes."""
        probe.sub = probe.transport = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe every watched connection, forever."""
        queue, interval = self._queue, self.interval
        task_status.started()
        handled = 0
        while True:
            if not queue:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                self._wakeup = None
                continue
            probe = queue[0]
            now = trio.current_time()
            if probe.deadline > now or handled >= self.BATCH:
                handled = 0
                await trio.sleep_until(probe.deadline)
                continue
            queue.popleft()
            handled += 1
            sub, transport = probe.sub, probe.transport
            if sub is None or transport is None:
                continue  # detached
            if probe.waiting and not probe.answered:
                self.unwatch(probe)
                sub.kill(protocol.IDLE_TIMEOUT)
                continue
            # Before the ping is made: a transport whose ping needs no
            # answer (SSE's comment) sets it answered at once.
            probe.waiting, probe.answered = True, False
            frame = transport.ping_frame(probe)
            if frame is None:
                self.unwatch(probe)  # closing: the session ends on its own
                continue
            try:
                sub.push_control(frame)
            except trio.ClosedResourceError:
                self.unwatch(probe)
                continue
            probe.deadline = now + interval
            queue.append(probe)
