"""The peer: a minimal ``websockets`` (asyncio) broadcast server.

Every client connects to ``ws://HOST:PORT/``; any text message a connection
sends is broadcast with :func:`websockets.broadcast` to all *other*
connections. It does the same job as livenotify's fan-out and nothing more
(no parsing, no subscriptions), so it is the yardstick the benchmarks divide by.

Run: ``python benchmarks/peers/websockets_peer.py --port 0``; it prints
``ready ws=<port>`` on stderr once listening and stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import websockets
from websockets.asyncio.server import ServerConnection, broadcast, serve

#: Listen backlog: the benchmarks open connections 100 at a time; asyncio's
#: default of 100 would make a burst of SYNs wait for a retransmit.
BACKLOG = 4096

CLIENTS: set[ServerConnection] = set()


async def handler(ws: ServerConnection) -> None:
    """Register the connection and broadcast every text message it sends."""
    CLIENTS.add(ws)
    try:
        async for message in ws:
            if isinstance(message, str):
                broadcast(CLIENTS - {ws}, message)
    except websockets.ConnectionClosed:
        pass
    finally:
        CLIENTS.discard(ws)


async def main(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # compression=None: the benchmark measures fan-out, not zlib; the
    # load generator does not offer permessage-deflate either.
    async with serve(
        handler,
        host,
        port,
        compression=None,
        backlog=BACKLOG,
        ping_interval=None,
        max_queue=None,
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"ready ws={bound}", file=sys.stderr, flush=True)
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
