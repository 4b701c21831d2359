"""``livenotify serve`` under a descriptor limit: soft and hard set to
``LIVENOTIFY_TEST_NOFILE`` before the server starts (as ``ulimit -n`` in a
shell would), for the descriptor tests."""

from __future__ import annotations

import os
import resource
import sys

from livenotify.cli import main

if __name__ == "__main__":  # not again in the storage writer (spawned)
    limit = int(os.environ["LIVENOTIFY_TEST_NOFILE"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    sys.exit(main(["serve", *sys.argv[1:]]))
