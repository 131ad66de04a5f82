"""The anchor worker: commits the log's checkpoints on chain, crash-safely.

One pass (:meth:`AnchorWorker.step`) integrates new events into the tree, follows the
checkpoint in flight, and starts a new one when enough time or events have passed. The
worker is written as a write-ahead state machine over the ``checkpoints`` and
``checkpoint_txs`` tables, so that a crash at any point is recovered by the next pass:

* a signed transaction is stored *before* it is broadcast, and re-broadcast until mined;
* a transaction not mined within ``tx_timeout`` is replaced (same nonce, higher fees);
* a checkpoint on chain that the store does not know (a crash between the transaction and
  the store's commit) is adopted after checking it against the store's own tree;
* a mined checkpoint whose block left the canonical chain (a reorg) goes back to pending;
* a checkpoint is confirmed only after ``confirmations`` blocks.

Each checkpoint commits, with the log's root, the root of the log's verifiable index at exactly
its size (docs/index.md): before a checkpoint is signed, the worker's
:class:`~ledger.index_store.IndexSequencer` advances the index over the checkpoint's new events
as one batch and stores the new version (one transaction), and the checkpoint row records its
root. A crash before that leaves the old version (the next pass computes it again); a crash
after it leaves a stored version that the next checkpoint, of the same size or larger, uses or
extends. A checkpoint on chain whose index root is not the store's is a divergence, as a log
root is.

The contract refuses a checkpoint that is not larger than the latest, so a checkpoint can
never be committed twice; the worker keeps one checkpoint in flight at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from ledger.chain.client import (
    AnchorChain,
    BroadcastOutcome,
    MinedTx,
    OnChainCheckpoint,
    SignedTx,
)
from ledger.chain.tx import ContractReverted
from ledger.errors import LedgerError
from ledger.index_store import IndexHead, IndexSequencer
from ledger.log import Head, MerkleLog
from ledger.store import Store
from ledger.store.models import CheckpointRow, CheckpointTx

log = logging.getLogger("medtrail.anchor")

_CHECKPOINTS = CheckpointRow.__table__  # type: ignore[attr-defined]
_TXS = CheckpointTx.__table__  # type: ignore[attr-defined]

PENDING, SENT, ANCHORED, CONFIRMED, SUPERSEDED = (
    "pending",
    "sent",
    "anchored",
    "confirmed",
    "superseded",
)


class LogDivergedError(LedgerError):
    code = "log-diverged"


@dataclass(frozen=True)
class AnchorStatus:
    """What one pass saw and did."""

    tree_size: int
    chain_size: int
    in_flight: int | None
    confirmed_size: int
    action: str


class AnchorWorker:
    """Sequencer + anchor loop. Run exactly one per log (see :mod:`ledger.worker`).

    Each step that changes the world is a method of its own, so that a crash between two of
    them is a well-defined state (the fault suite kills a real service at each):
    :meth:`_start` (tree integrated, a checkpoint due, nothing signed yet), :meth:`_broadcast`
    (the signed transaction recorded, not yet broadcast), :meth:`_adopt` and
    :meth:`_mark_anchored` (a checkpoint seen on chain or mined, the store not yet told).
    """

    def __init__(
        self,
        store: Store,
        log_: MerkleLog,
        chain: AnchorChain,
        *,
        interval: float = 10.0,
        batch_events: int = 10_000,
        confirmations: int = 1,
        tx_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.log = log_
        self.chain = chain
        self.interval = interval
        self.batch_events = batch_events
        self.confirmations = max(1, confirmations)
        self.tx_timeout = tx_timeout
        self.clock = clock
        #: The verifiable index, kept at each checkpoint's size (its head held in memory).
        self.index = IndexSequencer(store)
        self._pruned = 0

    # -- store helpers --------------------------------------------------------------------

    def _rows(self, connection: Connection, *statuses: str) -> list[CheckpointRow]:
        rows = connection.execute(
            select(_CHECKPOINTS)
            .where(_CHECKPOINTS.c.status.in_(statuses))
            .order_by(_CHECKPOINTS.c.tree_size)
        ).mappings()
        return [CheckpointRow.model_validate(dict(r)) for r in rows]

    def _update(self, size: int, **values: object) -> None:
        with self.store.write() as connection:
            connection.execute(
                _CHECKPOINTS.update().where(_CHECKPOINTS.c.tree_size == size).values(**values)
            )

    def last_anchor_time(self) -> int:
        with self.store.read() as connection:
            value = connection.execute(
                select(_CHECKPOINTS.c.created_at).order_by(_CHECKPOINTS.c.tree_size.desc()).limit(1)
            ).scalar()
        return int(value or 0)

    # -- one pass -------------------------------------------------------------------------

    def step(self, *, force: bool = False) -> AnchorStatus:
        """Integrate, follow the checkpoint in flight, start a new one if due."""
        head = self.log.integrate_all()
        latest = self.chain.latest_checkpoint()
        chain_size = latest.tree_size if latest else 0
        if latest is not None:
            self._check_and_adopt(latest)
        action = self._follow_in_flight(chain_size)
        self._confirm()
        self._prune_index()
        in_flight = self._in_flight_size()
        if in_flight is None and head.size > chain_size:
            due = (
                force
                or head.size - chain_size >= self.batch_events
                or (self.clock() - self.last_anchor_time() >= self.interval)
                or self._has_pending()
            )
            if due:
                in_flight = self._start(head, latest)
                action = (
                    f"sent checkpoint {in_flight}"
                    if in_flight is not None
                    else "chain moved on; reconciling next pass"
                )
        with self.store.read() as connection:
            confirmed = connection.execute(
                select(_CHECKPOINTS.c.tree_size)
                .where(_CHECKPOINTS.c.status == CONFIRMED)
                .order_by(_CHECKPOINTS.c.tree_size.desc())
                .limit(1)
            ).scalar()
        return AnchorStatus(head.size, chain_size, in_flight, int(confirmed or 0), action)

    def _has_pending(self) -> bool:
        """A checkpoint waits to be (re-)anchored, e.g. after a reorg: don't wait the interval."""
        with self.store.read() as connection:
            return bool(self._rows(connection, PENDING))

    def _in_flight_size(self) -> int | None:
        with self.store.read() as connection:
            rows = self._rows(connection, SENT)
        return rows[0].tree_size if rows else None

    def _check_and_adopt(self, latest: OnChainCheckpoint) -> None:
        """The chain's latest checkpoint must be our tree's; adopt it if we lost track of it."""
        head = self.log.head()
        if latest.tree_size > head.size:
            raise LogDivergedError(
                f"the chain holds a checkpoint of size {latest.tree_size} but the store's log "
                f"has only {head.size} events: events were lost or the store is another log's",
                chain_size=latest.tree_size,
                store_size=head.size,
            )
        root = self.log.root_at(latest.tree_size)
        if root != latest.root_hash:
            raise LogDivergedError(
                f"the chain's checkpoint at size {latest.tree_size} has root "
                f"{latest.root_hash.hex()}, the store's tree {root.hex()}: the store was "
                "altered, or the chain holds another log",
                size=latest.tree_size,
            )
        index_root = self._index_at(latest.tree_size).root
        if index_root != latest.index_root:
            raise LogDivergedError(
                f"the chain's checkpoint at size {latest.tree_size} commits index root "
                f"{latest.index_root.hex()}, the store's index {index_root.hex()}: the store "
                "was altered, or the chain holds another log's index",
                size=latest.tree_size,
            )
        with self.store.write() as connection:
            row = connection.execute(
                select(_CHECKPOINTS.c.status).where(_CHECKPOINTS.c.tree_size == latest.tree_size)
            ).scalar()
            if row in (ANCHORED, CONFIRMED):
                return
            tx_hash = self.chain.find_checkpoint_tx(latest.tree_size, latest.block_number)
            values = {
                "status": ANCHORED,
                "block_number": latest.block_number,
                "block_hash": self.chain.block_hash(latest.block_number),
                "anchored_at": int(self.clock()),
                "tx_hash": tx_hash,
            }
            self._adopt(connection, latest, known=row is not None, values=values)

    def _adopt(
        self,
        connection: Connection,
        latest: OnChainCheckpoint,
        *,
        known: bool,
        values: dict[str, Any],
    ) -> None:
        """Record the chain's checkpoint as anchored, in the caller's open transaction (a new
        row when the store had lost it); anything smaller still in flight was overtaken."""
        if not known:
            connection.execute(
                _CHECKPOINTS.insert().values(
                    tree_size=latest.tree_size,
                    root=latest.root_hash,
                    index_root=latest.index_root,
                    created_at=int(self.clock()),
                    **values,
                )
            )
            log.warning("adopted on-chain checkpoint %d the store had lost", latest.tree_size)
        else:
            connection.execute(
                _CHECKPOINTS.update()
                .where(_CHECKPOINTS.c.tree_size == latest.tree_size)
                .values(**values)
            )
        connection.execute(
            _CHECKPOINTS.update()
            .where(
                _CHECKPOINTS.c.tree_size < latest.tree_size,
                _CHECKPOINTS.c.status.in_((SENT, PENDING)),
            )
            .values(status=SUPERSEDED)
        )

    def _follow_in_flight(self, chain_size: int) -> str:
        with self.store.read() as connection:
            rows = self._rows(connection, SENT)
            txs = {
                row.tree_size: connection.execute(
                    select(_TXS).where(_TXS.c.tree_size == row.tree_size).order_by(_TXS.c.fee_bump)
                ).all()
                for row in rows
            }
        action = "idle"
        for row in rows:
            attempts = txs[row.tree_size]
            for attempt in attempts:
                mined = self.chain.mined(bytes(attempt.tx_hash))
                if mined is not None and mined.status == 1:
                    self._mark_anchored(row.tree_size, bytes(attempt.tx_hash), mined)
                    return f"checkpoint {row.tree_size} mined in block {mined.block_number}"
            if chain_size >= row.tree_size:  # overtaken (or mined by a tx we did not record)
                return "in-flight checkpoint settled on chain"
            # Attempts of an earlier plan of this checkpoint (its nonce lost, its block reorged
            # away) are dead: follow, re-broadcast and replace only the current plan's, whose
            # latest attempt the row names.
            current = [a for a in attempts if a.nonce == row.tx_nonce] or attempts
            if any(
                (m := self.chain.mined(bytes(a.tx_hash))) is not None and m.status != 1
                for a in current
            ):
                self._update(row.tree_size, status=PENDING)
                return f"checkpoint {row.tree_size} reverted; will re-plan"
            named = [a for a in current if row.tx_hash and bytes(a.tx_hash) == bytes(row.tx_hash)]
            last = named[-1] if named else (current[-1] if current else None)
            if last is None:
                self._update(row.tree_size, status=PENDING)
                continue
            # Re-broadcast (idempotent): heals a broadcast lost to a crash or a node restart.
            outcome = self.chain.submit(SignedTx.from_raw(bytes(last.raw))).outcome
            if outcome is BroadcastOutcome.NONCE_CONSUMED and self._mined_meanwhile(row, attempts):
                return f"checkpoint {row.tree_size} mined meanwhile"
            if outcome is BroadcastOutcome.NONCE_CONSUMED:
                # Another transaction of the operator key (e.g. a relayed grant) took the
                # nonce and none of ours was mined: plan again with a fresh nonce.
                self._update(row.tree_size, status=PENDING)
                return f"checkpoint {row.tree_size} lost its nonce; will re-plan"
            if self.clock() - last.created_at >= self.tx_timeout:
                action = self._replace(row, last)
            else:
                action = f"waiting for checkpoint {row.tree_size}"
        return action

    def _mined_meanwhile(self, row: CheckpointRow, attempts: Sequence[Any]) -> bool:
        """Re-check after "nonce consumed": our own transaction may have been mined between
        the receipt lookup and the re-broadcast (a node answers before its receipt shows)."""
        for attempt in attempts:
            mined = self.chain.mined(bytes(attempt.tx_hash))
            if mined is not None and mined.status == 1:
                self._mark_anchored(row.tree_size, bytes(attempt.tx_hash), mined)
                return True
        return self.chain.checkpoint_at(row.tree_size) is not None

    def _mark_anchored(self, size: int, tx_hash: bytes, mined: MinedTx) -> None:
        """A transaction of checkpoint ``size`` was mined (successfully): record where."""
        self._update(
            size,
            status=ANCHORED,
            tx_hash=tx_hash,
            block_number=mined.block_number,
            block_hash=mined.block_hash,
            anchored_at=int(self.clock()),
        )

    def _replace(self, row: CheckpointRow, last: Any) -> str:
        """Re-send the in-flight checkpoint with the same nonce and higher fees."""
        previous = SignedTx.from_raw(bytes(last.raw))
        fee_bump = int(last.fee_bump) + 1
        proof = self.log.consistency_proof(row.previous_size, row.tree_size)
        index_root = (
            bytes(row.index_root)
            if row.index_root is not None
            else self._index_at(row.tree_size).root
        )
        try:
            signed = self.chain.sign_checkpoint(
                row.tree_size,
                bytes(row.root),
                index_root,
                proof if row.previous_size else [],
                nonce=previous.nonce,
                fee_bump=fee_bump,
                replacing=previous,
            )
        except ContractReverted:
            self._update(row.tree_size, status=PENDING)
            return f"checkpoint {row.tree_size} no longer valid; will re-plan"
        self._record_tx(row.tree_size, signed, fee_bump)
        self.chain.submit(signed)
        log.info(
            "replaced checkpoint %d tx (nonce %d, bump %d)", row.tree_size, signed.nonce, fee_bump
        )
        return f"replaced checkpoint {row.tree_size} transaction"

    def _insert_tx(
        self, connection: Connection, size: int, signed: SignedTx, fee_bump: int
    ) -> None:
        """Record a signed attempt. Signing again on the same chain state (after a reorg back
        to the block it was first signed on) gives the very same transaction: keep one row."""
        known = connection.execute(
            select(_TXS.c.tx_hash).where(_TXS.c.tx_hash == signed.tx_hash)
        ).first()
        if known is not None:
            return
        connection.execute(
            _TXS.insert().values(
                tx_hash=signed.tx_hash,
                tree_size=size,
                nonce=signed.nonce,
                raw=signed.raw,
                fee_bump=fee_bump,
                created_at=int(self.clock()),
            )
        )

    def _record_tx(self, size: int, signed: SignedTx, fee_bump: int) -> None:
        with self.store.write() as connection:
            self._insert_tx(connection, size, signed, fee_bump)
            connection.execute(
                _CHECKPOINTS.update()
                .where(_CHECKPOINTS.c.tree_size == size)
                .values(tx_hash=signed.tx_hash, tx_nonce=signed.nonce, sent_at=int(self.clock()))
            )

    def _start(self, head: Head, latest: OnChainCheckpoint | None) -> int | None:
        """Plan, sign, record, then broadcast a checkpoint of the whole integrated tree.

        Returns its size, or ``None`` when the chain already holds a larger checkpoint than
        the one read moments ago (nothing is sent; the next pass adopts it)."""
        previous = latest.tree_size if latest else 0
        proof = self.log.consistency_proof(previous, head.size) if previous else []
        index_root = self._advance_index(head.size).root
        try:
            signed = self.chain.sign_checkpoint(head.size, head.root, index_root, proof)
        except ContractReverted as exc:
            if exc.error != "CheckpointNotLarger":
                raise
            # The chain moved on since we read it (our own earlier transaction was mined in
            # between): nothing to send now; the next pass adopts what the chain holds.
            log.info("checkpoint %d already superseded on chain; reconciling", head.size)
            return None
        now = int(self.clock())
        with self.store.write() as connection:
            connection.execute(
                _CHECKPOINTS.delete().where(
                    _CHECKPOINTS.c.tree_size == head.size,
                    _CHECKPOINTS.c.status.in_((PENDING, SUPERSEDED)),
                )
            )
            connection.execute(
                _CHECKPOINTS.insert().values(
                    tree_size=head.size,
                    root=head.root,
                    index_root=index_root,
                    status=SENT,
                    created_at=now,
                    previous_size=previous,
                    tx_hash=signed.tx_hash,
                    tx_nonce=signed.nonce,
                    sent_at=now,
                )
            )
            self._insert_tx(connection, head.size, signed, 0)
        self._broadcast(head.size, signed)
        return head.size

    def _advance_index(self, size: int) -> IndexHead:
        """Advance the verifiable index to the checkpoint's ``size`` (one batch of its new
        events) and store the new version, before anything is signed with its root."""
        return self.index.advance(size)

    def _index_at(self, size: int) -> IndexHead:
        """The index at ``size``: the stored version, or the head advanced to it (a checkpoint
        the store had lost, adopted from the chain)."""
        found = self.index.index.version(size)
        return found if found is not None else self._advance_index(size)

    def _prune_index(self) -> None:
        """Forget index nodes superseded at or below the second-newest confirmed checkpoint:
        lookups are served at the newest anchored one, and an API process may still be reading
        at the newest confirmed one."""
        with self.store.read() as connection:
            sizes = (
                connection.execute(
                    select(_CHECKPOINTS.c.tree_size)
                    .where(_CHECKPOINTS.c.status == CONFIRMED)
                    .order_by(_CHECKPOINTS.c.tree_size.desc())
                    .limit(2)
                )
                .scalars()
                .all()
            )
        if len(sizes) == 2 and sizes[1] > self._pruned:
            self.index.index.prune(sizes[1])
            self._pruned = sizes[1]

    def _broadcast(self, size: int, signed: SignedTx) -> None:
        """Broadcast the transaction of a new checkpoint. It is recorded first: if the process
        dies before (or during) this, the next pass re-broadcasts the same transaction."""
        self.chain.submit(signed)
        log.info("checkpoint %d sent (tx %s)", size, signed.tx_hash.hex())

    def _confirm(self) -> None:
        """Confirm anchored checkpoints that are deep enough; send reorged ones back."""
        with self.store.read() as connection:
            rows = self._rows(connection, ANCHORED)
        if not rows:
            return
        tip = self.chain.block_number()
        for row in rows:
            assert row.block_number is not None
            canonical = self.chain.block_hash(row.block_number)
            if canonical is None or (row.block_hash and canonical != bytes(row.block_hash)):
                self._handle_reorg(row)
                continue
            if tip - row.block_number + 1 >= self.confirmations:
                self._update(row.tree_size, status=CONFIRMED, confirmed_at=int(self.clock()))

    def _handle_reorg(self, row: CheckpointRow) -> None:
        commit = (
            self.chain.checkpoint_commit(row.tree_size)
            if self.chain.checkpoint_at(row.tree_size) is not None
            else None
        )
        if commit is not None:  # re-mined in another block
            on_chain, _tx = commit
            self._update(
                row.tree_size,
                block_number=on_chain.block_number,
                block_hash=self.chain.block_hash(on_chain.block_number),
            )
            return
        log.warning("checkpoint %d was reorged out; anchoring again", row.tree_size)
        with self.store.write() as connection:
            connection.execute(
                _CHECKPOINTS.update()
                .where(_CHECKPOINTS.c.tree_size == row.tree_size)
                .values(status=PENDING, block_number=None, block_hash=None)
            )
