"""Consent version 2 in the service: the signed grants it keeps, and their commitment on chain.

:class:`StoredGrants` keeps each signed grant (:class:`ledger.consent.SignedGrant`) by its
commitment in the ``consent_grants`` table; it is the
:class:`ledger.chain.consent.SignedGrants` book ingest's
:class:`~ledger.chain.consent.CommittedConsent` finds the grant an access cites in.
:class:`GrantCommitter` puts the commitments of the pending grants on chain, all in one
``commit(bytes32[])`` per tick. It is crash-safe without recording its transactions: a
commitment is idempotent on chain, so each tick first reads which pending commitments the
chain holds already (a transaction mined before a crash, or sent by anyone) and marks them,
then sends one transaction for the rest; whatever is still pending after a restart is simply
committed by the next tick.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from ledger.consent import SignedGrant
from ledger.eip712 import Domain
from ledger.store import Store
from ledger.store.db import select_any
from ledger.store.models import ConsentGrantRow

log = logging.getLogger("medtrail.consent")

_TABLE = ConsentGrantRow.__table__  # type: ignore[attr-defined]
#: ``{any}`` is :func:`ledger.store.db.select_any`'s.
_SELECT_BODIES = "SELECT commitment, body FROM {table} WHERE commitment {{any}}"

PENDING: Final = "pending"
COMMITTED: Final = "committed"
#: Not committed by its deadline: it can never cover an access.
LAPSED: Final = "lapsed"

#: At most this many commitments in one ``commit`` transaction (24,414 gas each: docs/gas.md).
MAX_COMMIT_BATCH: Final = 500


@dataclass(frozen=True)
class StoredGrant:
    """A kept version-2 grant: the signed grant, its commitment, and its commit state."""

    grant: SignedGrant
    commitment: bytes
    received_at: int
    state: str
    committed_at: int | None

    @property
    def grant_id(self) -> int:
        return int.from_bytes(self.commitment, "big")


def _stored(row: Any) -> StoredGrant:
    return StoredGrant(
        grant=SignedGrant.from_json(json.loads(row.body)),
        commitment=bytes(row.commitment),
        received_at=int(row.received_at),
        state=str(row.state),
        committed_at=None if row.committed_at is None else int(row.committed_at),
    )


def commitment_key(grant_id: int) -> bytes | None:
    """The commitment a grant id names; None for an id no commitment can have."""
    if not 0 < grant_id < 2**256:
        return None
    return grant_id.to_bytes(32, "big")


class StoredGrants:
    """The service's signed version-2 grants (:class:`ledger.chain.consent.SignedGrants`)."""

    def __init__(self, store: Store, domain: Domain) -> None:
        self.store = store
        self.domain = domain

    def add(self, grant: SignedGrant, now: int) -> tuple[StoredGrant, bool]:
        """Keep ``grant`` (checked already) as pending; ``(kept, new)``: ``new`` False when it
        was kept before (the same signed grant: answered as it is)."""
        commitment = grant.commitment(self.domain)
        existing = self.get(commitment)
        if existing is not None:
            return existing, False
        try:
            with self.store.write() as connection:
                connection.execute(
                    _TABLE.insert().values(
                        commitment=commitment,
                        patient=grant.patient,
                        grantee=grant.grantee,
                        body=json.dumps(grant.as_json(), separators=(",", ":")),
                        received_at=now,
                        state=PENDING,
                        committed_at=None,
                    )
                )
            new = True
        except IntegrityError:  # the same grant, posted twice at once
            new = False
        kept = self.get(commitment)
        assert kept is not None
        return kept, new

    def get(self, commitment: bytes) -> StoredGrant | None:
        with self.store.read() as connection:
            query = select(_TABLE).where(_TABLE.c.commitment == commitment)
            row = connection.execute(query).first()
        return None if row is None else _stored(row)

    def by_id(self, grant_id: int) -> StoredGrant | None:
        key = commitment_key(grant_id)
        return None if key is None else self.get(key)

    def signed_grant(self, grant_id: int) -> SignedGrant | None:
        stored = self.by_id(grant_id)
        return None if stored is None else stored.grant

    def signed_grants(self, grant_ids: Collection[int]) -> dict[int, SignedGrant]:
        """:meth:`signed_grant` of each id that names a kept grant, in one query (the grants a
        batch's accesses cite: one read each cost ~0.1 ms, issue 15)."""
        keys = {key: i for i in grant_ids if (key := commitment_key(i)) is not None}
        with self.store.read() as connection:
            rows = select_any(connection, _SELECT_BODIES.format(table=_TABLE.name), list(keys))
        return {keys[bytes(key)]: SignedGrant.from_json(json.loads(body)) for key, body in rows}

    def of_patient(
        self,
        patient: str,
        grantee: str | None = None,
        after: int = 0,
        limit: int | None = None,
    ) -> list[StoredGrant]:
        """The patient's grants (to ``grantee``; None: to anyone) with an id above ``after``,
        by id, at most ``limit`` (None: all)."""
        query = select(_TABLE).where(_TABLE.c.patient == patient)
        if grantee is not None:
            query = query.where(_TABLE.c.grantee == grantee)
        key = commitment_key(after)
        if key is not None:
            query = query.where(_TABLE.c.commitment > key)
        query = query.order_by(_TABLE.c.commitment)
        if limit is not None:
            query = query.limit(limit)
        with self.store.read() as connection:
            return [_stored(row) for row in connection.execute(query)]

    def pending(self, limit: int = MAX_COMMIT_BATCH) -> list[StoredGrant]:
        """Grants not yet seen committed, oldest first."""
        query = (
            select(_TABLE)
            .where(_TABLE.c.state == PENDING)
            .order_by(_TABLE.c.received_at, _TABLE.c.commitment)
            .limit(limit)
        )
        with self.store.read() as connection:
            return [_stored(row) for row in connection.execute(query)]

    def mark(self, commitment: bytes, state: str, committed_at: int | None = None) -> None:
        with self.store.write() as connection:
            connection.execute(
                update(_TABLE)
                .where(_TABLE.c.commitment == commitment, _TABLE.c.state == PENDING)
                .values(state=state, committed_at=committed_at)
            )


class CommitChain(Protocol):
    """What the committer does with the chain (:class:`ledger.chain.client.Chain`)."""

    def latest_timestamp(self) -> int: ...

    def grant_v2_times(self, keys: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]: ...

    def commit_grants(self, commitments: Sequence[bytes]) -> bytes: ...


class GrantCommitter:
    """Commits the pending grants' commitments, one transaction per :meth:`step`."""

    def __init__(
        self, grants: StoredGrants, chain: CommitChain, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.grants = grants
        self.chain = chain
        self.clock = clock

    def _settle(self, pending: Sequence[StoredGrant]) -> list[StoredGrant]:
        """Mark those the chain holds already (committed), those revoked before being
        committed or that it can no longer take in time (lapsed); the rest, still to commit."""
        keys = [(p.commitment, p.grant.revocation_hash) for p in pending]
        times = self.chain.grant_v2_times(keys)
        now = self.chain.latest_timestamp()
        left: list[StoredGrant] = []
        for stored, (committed_at, revoked_at) in zip(pending, times, strict=True):
            if committed_at:
                self.grants.mark(stored.commitment, COMMITTED, committed_at)
            elif revoked_at:
                # Revoked before it was committed (the wallet's cancel-signatures): it can
                # never cover an access, so its commitment is not worth the gas.
                log.info(
                    "grant %s was revoked before it was committed: not committed",
                    "0x" + stored.commitment.hex(),
                )
                self.grants.mark(stored.commitment, LAPSED)
            elif stored.grant.deadline < now:
                log.warning(
                    "grant %s lapsed: its deadline passed before it was committed",
                    "0x" + stored.commitment.hex(),
                )
                self.grants.mark(stored.commitment, LAPSED)
            else:
                left.append(stored)
        return left

    def step(self) -> int:
        """One tick: the number of commitments sent (0: nothing pending)."""
        pending = self.grants.pending()
        if not pending:
            return 0
        left = self._settle(pending)
        if not left:
            return 0
        tx_hash = self.chain.commit_grants([p.commitment for p in left])
        log.info("committed %d grant(s) in %s", len(left), "0x" + tx_hash.hex())
        self._settle(left)
        return len(left)
