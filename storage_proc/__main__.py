"""``python -m storage_proc FD OPTIONS_JSON``: run one writer process.

The bridge starts the writer as a fresh interpreter (not a multiprocessing
child, which would re-import the server's main module and with it trio):
the writer loads the standard library and this package only. ``FD`` is its
end of the socket pair (inherited), ``OPTIONS_JSON`` the
:class:`~storage_proc.writer.WriterOptions` fields.
"""

from __future__ import annotations

import json
import socket
import sys

from .writer import WriterOptions, writer_main


def main(argv: list[str]) -> None:
    """Parse the two arguments and run the writer until its socket closes."""
    fd, options = int(argv[0]), WriterOptions(**json.loads(argv[1]))
    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    writer_main(sock, options)


if __name__ == "__main__":
    main(sys.argv[1:])
