"""Exactly one active sequencer/anchor worker per log, with fail-over.

Several API processes may ingest at once, but the tree and the checkpoints have one writer.
On PostgreSQL the active worker holds a session-level advisory lock on a dedicated
connection: if its process dies, the server drops the session and the lock with it, and a
standby worker takes over. On SQLite (one host) an exclusive ``flock`` on a file beside the
database plays the same role and is released by the kernel when the process dies.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, text
from sqlalchemy.exc import SQLAlchemyError

from ledger.anchor import AnchorWorker
from ledger.chain.tx import ChainError, ContractReverted
from ledger.errors import LedgerError
from ledger.store import Store
from ledger.store.db import SEQUENCER_LOCK_ID

log = logging.getLogger("medtrail.worker")


class WorkerLease:
    """The right to be the active worker: :meth:`acquire` (non-blocking), :meth:`held`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._connection: Connection | None = None
        self._file: IO[bytes] | None = None

    def _lock_path(self) -> Path:
        database = self.store.url.database or ""
        if database in ("", ":memory:"):
            return Path(f"/tmp/medtrail-memory-{os.getpid()}.worker.lock")  # noqa: S108
        return Path(database + ".worker.lock")

    def acquire(self) -> bool:
        """Try to become the active worker; ``False`` if another one is."""
        if self.store.is_sqlite:
            handle = self._lock_path().open("ab")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                return False
            self._file = handle
            return True
        try:
            connection = self.store.engine.connect()
            got = connection.execute(
                text("SELECT pg_try_advisory_lock(:id)"), {"id": SEQUENCER_LOCK_ID}
            ).scalar()
            connection.commit()
        except SQLAlchemyError as exc:
            log.warning("cannot reach the store to take the worker lease: %s", exc)
            return False
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def held(self) -> bool:
        """Whether the lease is still ours (the lock's connection is alive)."""
        if self._file is not None:
            return True
        if self._connection is None:
            return False
        try:
            self._connection.execute(text("SELECT 1"))
            self._connection.commit()
            return True
        except SQLAlchemyError:
            self._connection = None
            return False

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._connection is not None:
            try:
                self._connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": SEQUENCER_LOCK_ID}
                )
                self._connection.commit()
                self._connection.close()
            except SQLAlchemyError:
                pass
            self._connection = None


def run_worker(
    worker: AnchorWorker,
    stop: threading.Event,
    *,
    poll: float = 1.0,
    max_backoff: float = 30.0,
    also: Sequence[tuple[str, Callable[[], object]]] = (),
) -> None:
    """Stand by until the lease is ours, then run anchor passes until ``stop`` or lease loss.

    ``also``: other passes the active worker runs beside the anchor pass, by name (consent
    version 2's grant committer). Each pass backs off on its own: one failing again and again
    (a commit transaction the chain refuses) never delays the others (anchoring keeps its
    promised time).
    """
    lease = WorkerLease(worker.store)
    passes = (("anchor", worker.step), *also)
    try:
        while not stop.is_set():
            if not lease.acquire():
                stop.wait(poll)
                continue
            log.info("this process is now the active sequencer/anchor worker")
            backoff = {name: poll for name, _ in passes}
            due = dict.fromkeys(backoff, 0.0)
            while not stop.is_set() and lease.held():
                for name, step in passes:
                    if time.monotonic() < due[name]:
                        continue
                    failed = True
                    try:
                        step()
                        failed = False
                    except (ChainError, ContractReverted, LedgerError) as exc:
                        log.warning(
                            "%s pass failed (%s); retrying in %.1f s", name, exc, backoff[name]
                        )
                    except Exception:  # a bug must not silently stop a pass: log, back off
                        log.exception("%s pass crashed; retrying in %.1f s", name, backoff[name])
                    delay = backoff[name] if failed else poll
                    backoff[name] = min(max_backoff, backoff[name] * 2) if failed else poll
                    due[name] = time.monotonic() + delay
                stop.wait(max(0.0, min(due.values()) - time.monotonic()))
            lease.release()
    finally:
        lease.release()
