"""The bridge's limits, each a module constant with why it has that value."""

from __future__ import annotations

from typing import Final

#: Writes per transaction at most. One commit (one fsync with
#: ``synchronous=FULL``) per 2,000 writes keeps the disk far from being the
#: bottleneck while a batch stays a few hundred kilobytes of WAL.
BATCH_SIZE: Final = 2000
#: A batch commits at the latest this long after its first write: the bound
#: on how long an acknowledged-to-be write waits under light load.
BATCH_MS: Final = 20.0
#: Writes sent to the writer and not yet acknowledged (the bounded queue
#: toward the process). Four full batches: the writer never waits for us.
IN_FLIGHT_LIMIT: Final = 4 * BATCH_SIZE
#: Un-acknowledged writes the bridge keeps before refusing more with
#: StorageBusy: five seconds at 20,000 writes/s, enough to ride out the
#: longest restart backoff; at ~300 bytes a write, ~30 MB at worst.
BACKLOG_LIMIT: Final = 100_000
#: Writes per frame, and a rough byte bound (notification payloads may be
#: 64 KiB each): keeps each frame and its pickle small.
CHUNK_WRITES: Final = 512
CHUNK_BYTES: Final = 1 << 20
