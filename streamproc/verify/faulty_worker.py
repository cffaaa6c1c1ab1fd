"""A worker with a fault armed in its store: the chaos harness's way into the runtime.

``python -m streamproc.verify.faulty_worker --crash-before-checkpoint N`` runs the ordinary worker
(settings from ``STREAMPROC_*``, as ``streamproc worker``), handing ``run_worker`` a store whose N-th
flush exits the process right after its window rows and before its checkpoint: the narrowest point of
the flush protocol (docs/ARCHITECTURE.md, "Restore"). The runtime knows nothing of it; it only takes
the store it is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from streamproc.runtime.worker import run_worker
from streamproc.settings import Settings
from streamproc.store import open_sink

log = logging.getLogger(__name__)

CRASH_EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL


def arm_crash_before_checkpoint(sink: Any, nth_flush: int) -> None:
    """Make this store object's ``nth_flush``-th flush exit the process (as SIGKILL would) between its
    window rows and its checkpoint. ``Sink.write`` inserts the window rows, then the checkpoints."""
    insert = sink.insert
    count = 0

    def insert_then_maybe_crash(table: str, columns: Any, rows: Any, settings: Any = None) -> None:
        nonlocal count
        if table == "checkpoints":
            count += 1
            if count == nth_flush:
                log.warning("fault injection: exiting before the checkpoint of flush %d", count)
                logging.shutdown()
                os._exit(CRASH_EXIT_CODE)
        insert(table, columns, rows, settings)

    sink.insert = insert_then_maybe_crash


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streamproc.verify.faulty_worker", description=__doc__)
    parser.add_argument("--crash-before-checkpoint", type=int, required=True, metavar="N",
                        help="exit with 137 on the N-th flush, after its window rows, before its checkpoint")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    sink = open_sink(settings)
    arm_crash_before_checkpoint(sink, args.crash_before_checkpoint)
    sys.exit(run_worker(settings, sink))


if __name__ == "__main__":
    main()
