"""The API served by uvicorn for the benchmarks, configured by ``MEDTRAIL_*`` variables.

    python -m benchmarks._server --port 8123 --workers 2

``medtrail serve`` runs one process (it owns the anchor worker); to use two cores, this runs
``uvicorn --workers N`` over an app factory, each worker opening its own
:class:`~ledger.service.Ledger` on the same store and chain (``rpc`` mode: an in-process chain
cannot be shared). No anchor worker runs here: the benchmark anchors when it needs to.
``--floor`` serves the floor instead (``benchmarks/_floor.py``), under the same uvicorn.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from fastapi import FastAPI


def app_factory() -> FastAPI:
    # Imported here: uvicorn's workers import this module again as their __main__, and the
    # floor's workers need none of it.
    from api.app import create_app
    from api.server import tune_gc
    from ledger.service import Ledger

    ledger = Ledger.open()
    app = create_app(ledger)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        try:
            async with inner(application):
                yield
        finally:
            ledger.close()

    app.router.lifespan_context = lifespan
    if os.environ.get("BENCH_TUNE_GC", "1") == "1":
        tune_gc()
    if os.environ.get("BENCH_INGEST_TURNS", "1") == "0":
        # The A/B row of api.turns: every batch computes as soon as it arrives.
        app.state.medtrail = dataclasses.replace(app.state.medtrail, ingest_turns=_AllAtOnce())
    return app


class _AllAtOnce:
    """No turns: what the service did before ``api.turns`` (its ``Turns.turn``, duck-typed:
    this module imports no part of the service, the floor's workers need none of it)."""

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[Callable[[], None]]:
        yield lambda: None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--floor", action="store_true", help="serve the floor (benchmarks/_floor.py) instead"
    )
    args = parser.parse_args()
    uvicorn.run(
        "benchmarks._floor:app_factory" if args.floor else "benchmarks._server:app_factory",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
