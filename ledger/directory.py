"""A short-lived cache of institutions' on-chain registration, for the ingest hot path.

Ingest checks every event's signer (and a claim's insurer, an access's custodian) against the
InstitutionRegistry, now and at the event's ``occurredAt``; asking the chain each time would
cost JSON-RPC round trips per event. An entry holds an institution's registration and its
whole status history (``historyOf``), from which its status at any time is computed
(:func:`ledger.logstate.status_at`), and lives ``ttl`` seconds (a suspension takes effect at
ingest within that time; regulators' verification always asks the chain). If the chain is
unreachable, a stale entry is served rather than refusing events — ingest keeps working while
the chain is down — for another ``ttl`` before the chain is asked again (not a timeout for
every batch: a process checks one batch at a time, ``api.turns``), and an address never seen
before is refused with the chain error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from ledger.chain.model import ChainError, InstitutionInfo
from ledger.logstate import InstitutionStatus, status_at


class _Source(Protocol):
    def institution(self, address: str) -> InstitutionInfo: ...

    def institution_history(self, address: str) -> list[tuple[int, bool]]: ...


class InstitutionDirectory:
    """``institution(address)`` and ``institution_at(address, at)`` through a TTL cache with
    stale-if-error."""

    def __init__(
        self, source: _Source, ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._source = source
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, InstitutionInfo, list[tuple[int, bool]]]] = {}
        self._lock = threading.Lock()

    def _entry(self, address: str) -> tuple[InstitutionInfo, list[tuple[int, bool]]]:
        now = self._clock()
        with self._lock:
            cached = self._entries.get(address)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1], cached[2]
        try:
            info = self._source.institution(address)
            history = self._source.institution_history(address) if info.registered else []
        except ChainError:
            if cached is None:
                raise
            with self._lock:  # served for another ttl before the chain is asked again:
                self._entries[address] = (now, cached[1], cached[2])  # not a timeout a batch
            return cached[1], cached[2]
        with self._lock:
            self._entries[address] = (now, info, history)
        return info, history

    def institution(self, address: str) -> InstitutionInfo:
        """The registration of ``address`` now (kind NONE: never registered)."""
        return self._entry(address)[0]

    def institution_at(self, address: str, at: int) -> InstitutionStatus:
        """:class:`ledger.logstate.InstitutionFacts`: the registration of ``address`` at
        ``at``, as the contract's ``wasActiveAt`` would answer."""
        info, history = self._entry(address)
        return status_at(info.kind, info.registered_at, history, at)

    def invalidate(self, address: str | None = None) -> None:
        """Forget one address (after registering or suspending it), or everything."""
        with self._lock:
            if address is None:
                self._entries.clear()
            else:
                self._entries.pop(address, None)
