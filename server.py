"""``python server.py --host :: --port 8888``, as the first seed document starts
the server: the same as ``livenotify serve`` with the same flags."""

import sys

from livenotify.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
