"""``python -m livenotify`` is the ``livenotify`` command."""

import sys

from .cli import main

sys.exit(main())
