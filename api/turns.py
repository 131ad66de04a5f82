"""Batches of events take turns computing: one at a time in each server process.

Checking a batch is CPU work, most of it in Python (parsing, the rules, the rows) around each
signature recovery, which the recovery library runs with the GIL released. Two batches
computing in one process therefore hand the GIL to each other at every event, each hand-over
a wake-up through the kernel: in a loop of one recovery and some JSON parsing per event, two
threads cost 73 µs of CPU per event where one costs 56, for almost no gain in time (issue 15;
over HTTP, one batch at a time per process took 12 to 15 µs of CPU off each event on SQLite,
1 to 3 on PostgreSQL). A server uses more cores with more processes (``medtrail serve
--workers N``), not more threads.

So a batch waits for its turn on the event loop (no thread is held while it waits; turns are
given in the order asked), and gives the turn on to the next batch as soon as it has been
checked and written, before its commit: the commit waits for the disk (SQLite's ``fsync``) or
the database server, and the next batch computes meanwhile
(:meth:`ledger.ingest.Ingestor.submit`'s ``before_commit``). A batch that fails gives its turn
on when it fails. A batch that has waited :data:`MAX_WAIT` seconds for its turn is answered 503
``server-busy`` (retry shortly). Requests other than submissions do not take turns.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio

from api.problems import ServerBusy

__all__ = ["MAX_WAIT", "Turns"]


#: How long a batch may wait for its turn, seconds, before it is answered 503 ``server-busy``
#: (the store's own bound on a writer's wait is the same: ``ledger.store.db``).
MAX_WAIT = 30.0


class Turns:
    """One turn at a time, in the order asked (FIFO), for the tasks of one process."""

    def __init__(self, max_wait: float = MAX_WAIT) -> None:
        # anyio's semaphore binds to no event loop until a task waits on it (an app may be
        # served by several loops in turn: the test clients).
        self._semaphore = anyio.Semaphore(1)
        self.max_wait = max_wait

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[Callable[[], None]]:
        """Wait for the turn; yields ``give_on``, which a worker thread started from this task
        (``run_in_threadpool``) may call to give the turn on before the block ends. The turn is
        given on once: by ``give_on``, or else when the block ends, however it ends.

        ``give_on`` never waits and never raises: it is called inside the batch's write
        transaction, which must not wait for the event loop, nor fail for it."""
        with anyio.move_on_after(self.max_wait) as waiting:
            await self._semaphore.acquire()
        if waiting.cancelled_caught:  # not acquired: anyio passes a late permit on
            raise ServerBusy(
                f"this server process has had batches ahead of this one for "
                f"{self.max_wait:g} s: retry shortly",
                retryAfter=1,
            )
        loop = asyncio.get_running_loop()  # the service runs on asyncio (uvicorn)
        given = threading.Lock()  # held once the turn is given on

        def give_on() -> None:  # from the worker thread, inside the batch's transaction
            if not given.acquire(blocking=False):
                return
            try:
                loop.call_soon_threadsafe(self._semaphore.release)
            except RuntimeError:  # the loop is closed: nothing waits for a turn any more
                given.release()

        try:
            yield give_on
        finally:
            if given.acquire(blocking=False):
                self._semaphore.release()
