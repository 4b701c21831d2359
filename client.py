"""``python client.py --host ::1 --port 8888``, as the first seed document starts
the client: the same as ``livenotify client`` with the same flags."""

import sys

from livenotify.cli import main

if __name__ == "__main__":
    sys.exit(main(["client", *sys.argv[1:]]))
