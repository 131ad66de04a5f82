"""A short-lived cache of institutions' on-chain registration, for the ingest hot path.

Ingest checks every event's signer against the InstitutionRegistry; asking the chain each time
would cost a JSON-RPC round trip per event. Entries live ``ttl`` seconds (a suspension takes
effect at ingest within that time; regulators' verification always asks the chain at the
event's ``occurredAt``). If the chain is unreachable, a stale entry is served rather than
refusing events — ingest keeps working while the chain is down — and an address never seen
before is refused with the chain error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ledger.chain.tx import ChainError

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


class _Source(Protocol[T_co]):
    def institution(self, address: str) -> T_co: ...


class InstitutionDirectory(Generic[T]):
    """``institution(address)`` through a TTL cache with stale-if-error."""

    def __init__(
        self, source: _Source[T], ttl: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._source = source
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, T]] = {}
        self._lock = threading.Lock()

    def institution(self, address: str) -> T:
        now = self._clock()
        with self._lock:
            cached = self._entries.get(address)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        try:
            value = self._source.institution(address)
        except ChainError:
            if cached is not None:
                return cached[1]
            raise
        with self._lock:
            self._entries[address] = (now, value)
        return value

    def invalidate(self, address: str | None = None) -> None:
        """Forget one address (after registering or suspending it), or everything."""
        with self._lock:
            if address is None:
                self._entries.clear()
            else:
                self._entries.pop(address, None)
