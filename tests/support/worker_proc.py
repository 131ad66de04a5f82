"""A sequencer/anchor worker process for the scale-out tests.

    python -m tests.support.worker_proc --name w1 --max-seconds 90

It reads its settings from the ``MEDTRAIL_*`` environment like the service, opens the
:class:`~ledger.service.Ledger` and runs :func:`ledger.worker.run_worker` until SIGTERM or
SIGINT, or until ``--max-seconds`` have passed; it also dies with its parent process
(``PR_SET_PDEATHSIG``), so no worker outlives a test run. It logs to stderr, one line per
record: ``<unix time> <name> <pid> <logger> <level> <message>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from tests.support.lifetime import die_with_parent

#: Seconds after ``--max-seconds`` before the process exits even if the worker is stuck.
GRACE = 15.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default=f"worker-{os.getpid()}")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--poll", type=float, default=0.2)
    args = parser.parse_args(argv)
    die_with_parent()

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(created).3f {args.name} %(process)d %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    log = logging.getLogger("medtrail.worker_proc")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    deadline = threading.Timer(args.max_seconds, stop.set)
    deadline.daemon = True
    deadline.start()
    hard_deadline = threading.Timer(args.max_seconds + GRACE, os._exit, args=(3,))
    hard_deadline.daemon = True
    hard_deadline.start()

    from ledger.service import Ledger
    from ledger.settings import Settings
    from ledger.worker import run_worker

    ledger = Ledger.open(Settings())
    log.info("ledger open; standing by for the worker lease")
    try:
        run_worker(ledger.anchor, stop, poll=args.poll)
    finally:
        ledger.close()
    log.info("worker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
