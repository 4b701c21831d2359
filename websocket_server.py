"""``python websocket_server.py``, as the second seed document starts the
WebSocket broker (``ws://localhost:8765``): the same as ``livenotify serve``,
which serves that WebSocket port and the TCP port from one process."""

import sys

from livenotify.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
