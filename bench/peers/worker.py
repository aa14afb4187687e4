"""Worker process entry point: ``python -m bench.peers.worker SETTINGS_JSON``.

Started by ``WorkerProcess``. File descriptor 1 becomes the control stream (the READY
line); everything the worker itself prints goes to stderr, which the parent sends to a
log file.
"""

from __future__ import annotations

import os
import sys

from bench.peers import load_adapter
from bench.peers.base import Gate, Settings


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.peers.worker SETTINGS_JSON", file=sys.stderr)
        return 2
    settings = Settings.from_json(argv[1])
    control = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    adapter = load_adapter(settings.system)
    adapter.run_worker(settings, Gate(control))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
