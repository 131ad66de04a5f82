"""The registered institutions, listed in registration order, from the chain.

The InstitutionRegistry keeps no list of its institutions: it emits ``InstitutionRegistered``
when one is registered. :class:`Registrations` follows those logs from the deployment's
block on, keeping only ``(address, kind)`` in chain order (kinds are permanent), and catches
up incrementally before each read (at most once every ``ttl`` seconds), so a registration
made by a regulator straight on chain, not through this service, is listed too. What may
change — name, whether it is active, when — is read from the chain for each page, in one
batch (:meth:`ledger.chain.reader.ChainReader.institutions`): the page says what the chain
says now.

A page is keyed by the address of its last institution (``after``), in registration order:
institutions registered meanwhile are appended, so none is skipped or served twice. A
registration undone by a reorg reads as unregistered and is left out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Protocol

from ledger.chain.model import InstitutionInfo
from ledger.errors import LedgerError
from ledger.events import InstitutionKind

__all__ = ["RegistrationSource", "Registrations", "UnknownCursor"]


class UnknownCursor(LedgerError):
    """``after`` names no institution of the list (422, like any malformed query)."""

    code = "validation-error"
    status = 422


class RegistrationSource(Protocol):
    """What :class:`Registrations` reads (:class:`ledger.chain.reader.ChainReader`)."""

    def block_number(self) -> int: ...

    def registrations(
        self, from_block: int, to_block: int
    ) -> list[tuple[str, InstitutionKind]]: ...

    def institutions(self, addresses: Sequence[str]) -> list[InstitutionInfo]: ...


class Registrations:
    """Registered institutions in registration order (thread-safe).

    :param source: the chain.
    :param from_block: the deployment's block (no registration before it).
    :param ttl: seconds a catch-up stands before the next read asks the chain again.
    """

    def __init__(self, source: RegistrationSource, from_block: int, ttl: float = 2.0) -> None:
        self._source = source
        self._next_block = from_block
        self._ttl = ttl
        self._checked = float("-inf")
        self._order: list[tuple[str, InstitutionKind]] = []
        self._position: dict[str, int] = {}
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        """The next read asks the chain (after a registration made here)."""
        self._checked = float("-inf")

    def refresh(self, *, force: bool = False) -> None:
        """Read the registrations made since the last read."""
        with self._lock:
            now = time.monotonic()
            if not force and now - self._checked < self._ttl:
                return
            latest = self._source.block_number()
            if latest >= self._next_block:
                for address, kind in self._source.registrations(self._next_block, latest):
                    if address not in self._position:
                        self._position[address] = len(self._order)
                        self._order.append((address, kind))
                self._next_block = latest + 1
            self._checked = now

    def page(
        self,
        after: str | None,
        limit: int,
        kind: InstitutionKind | None = None,
    ) -> list[InstitutionInfo]:
        """At most ``limit`` registered institutions after the one at ``after`` (None: from the
        first), of ``kind`` (None: any), as the chain holds them now.

        :raises UnknownCursor: ``after`` is no institution of the list.
        """
        self.refresh()
        with self._lock:
            start = 0
            if after is not None:
                position = self._position.get(after)
                if position is None:
                    raise UnknownCursor(
                        f"after={after} is not a registered institution: pass the `next` of "
                        "the previous page"
                    )
                start = position + 1
            candidates = [
                address
                for address, registered_kind in self._order[start:]
                if kind is None or registered_kind == kind
            ]
        page: list[InstitutionInfo] = []
        # Read in slices of the page's size: a reorged-away registration (kind NONE) is
        # skipped, and the next slice fills its place.
        for offset in range(0, len(candidates), max(limit, 1)):
            chunk = candidates[offset : offset + limit]
            page += [info for info in self._source.institutions(chunk) if info.registered]
            if len(page) >= limit:
                break
        return page[:limit]
