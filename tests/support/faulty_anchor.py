"""A crashing anchor worker, for the fault suite (tests/faults): test code only.

:class:`FaultyAnchorWorker` is the production :class:`~ledger.anchor.AnchorWorker` with one
difference: when it reaches its armed point it ``kill -9`` s its own process, so a crash test
can stop a real service subprocess at an exact step of anchoring. The points wrap the
worker's own steps:

* ``after-sequence``: the tree integrated and a checkpoint due, nothing signed
  (entering :meth:`~ledger.anchor.AnchorWorker._start`);
* ``after-index``: the index advanced to the checkpoint's size and stored, nothing signed
  (leaving ``_advance_index``);
* ``before-send``: the signed transaction recorded, not broadcast (entering ``_broadcast``);
* ``after-send``: broadcast, its receipt not looked up (leaving ``_broadcast``);
* ``after-receipt``: a checkpoint seen on chain or a mined receipt, the store's update not
  committed (entering ``_adopt``, inside the store's open transaction, or ``_mark_anchored``).

:func:`arm` installs it in the service process (:mod:`tests.support.service_proc`) from
``MEDTRAIL_FAULT=<point>``: production code reads no such variable and has no such hook.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any, Final

from sqlalchemy import Connection

import ledger.service
from ledger.anchor import AnchorWorker
from ledger.chain.client import MinedTx, OnChainCheckpoint, SignedTx
from ledger.index_store import IndexHead
from ledger.log import Head

log = logging.getLogger("medtrail.anchor")

#: The variable that arms the fault (read by the test launcher only).
ENV: Final = "MEDTRAIL_FAULT"
POINTS: Final = ("after-sequence", "after-index", "before-send", "after-send", "after-receipt")


def _die(point: str) -> None:
    log.critical("%s=%s: killing this process (test-only)", ENV, point)
    os.kill(os.getpid(), signal.SIGKILL)


class FaultyAnchorWorker(AnchorWorker):
    """An anchor worker that kills its process at :attr:`fault` (one of :data:`POINTS`)."""

    fault: str = ""

    def _hit(self, point: str) -> None:
        if point == self.fault:
            _die(point)

    def _start(self, head: Head, latest: OnChainCheckpoint | None) -> int | None:
        self._hit("after-sequence")
        return super()._start(head, latest)

    def _advance_index(self, size: int) -> IndexHead:
        head = super()._advance_index(size)
        self._hit("after-index")
        return head

    def _broadcast(self, size: int, signed: SignedTx) -> None:
        self._hit("before-send")
        super()._broadcast(size, signed)
        self._hit("after-send")

    def _adopt(
        self,
        connection: Connection,
        latest: OnChainCheckpoint,
        *,
        known: bool,
        values: dict[str, Any],
    ) -> None:
        self._hit("after-receipt")
        super()._adopt(connection, latest, known=known, values=values)

    def _mark_anchored(self, size: int, tx_hash: bytes, mined: MinedTx) -> None:
        self._hit("after-receipt")
        super()._mark_anchored(size, tx_hash, mined)


def arm(environ: dict[str, str] | None = None) -> str | None:
    """Make the ledger this process opens use a :class:`FaultyAnchorWorker` armed at
    ``MEDTRAIL_FAULT`` (nothing when it is unset); the armed point."""
    value = (os.environ if environ is None else environ).get(ENV) or None
    if value is None:
        return None
    if value not in POINTS:
        raise SystemExit(f"{ENV}={value!r}: not one of {', '.join(POINTS)}")
    point: str = value

    class Armed(FaultyAnchorWorker):
        fault = point

    ledger.service.AnchorWorker = Armed  # type: ignore[attr-defined]
    return point
