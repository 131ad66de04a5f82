"""Helpers for the anchoring and scale-out tests: a fake clock, event batches, and the one
soundness check every scenario ends with (DESIGN §6.3: nothing lost, nothing anchored twice,
the chain and the store agree)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select

from ledger import index, merkle
from ledger.anchor import ANCHORED, CONFIRMED
from ledger.chain.client import AnchorChain, OnChainCheckpoint
from ledger.ingest import Receipt
from ledger.log import MerkleLog
from ledger.store import Store
from ledger.store.models import CheckpointRow, CheckpointTx, EventRow
from tests.support.ledgers import Env

EVENTS = EventRow.__table__  # type: ignore[attr-defined]
CHECKPOINTS = CheckpointRow.__table__  # type: ignore[attr-defined]
TXS = CheckpointTx.__table__  # type: ignore[attr-defined]


class FakeClock:
    """A clock the test moves by hand (``AnchorWorker(clock=...)``)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def submit_accesses(env: Env, count: int, record: str = "mrn-1") -> list[Receipt]:
    """Ingest ``count`` accesses by the hospital to one of its records, in one batch."""
    hospital = env.hospital
    ref = hospital.record(record)
    batch = [
        hospital.sign(hospital.access(ref, env.patient.address, action=1 + i % 3))
        for i in range(count)
    ]
    return env.ledger.submit(batch)


def checkpoint_rows(store: Store) -> list[CheckpointRow]:
    with store.read() as connection:
        rows = connection.execute(select(CHECKPOINTS).order_by(CHECKPOINTS.c.tree_size)).mappings()
        return [CheckpointRow.model_validate(dict(r)) for r in rows]


def checkpoint_txs(store: Store, size: int | None = None) -> list[CheckpointTx]:
    """Recorded checkpoint transactions, in the order they were recorded (nonce, fee bump)."""
    query = select(TXS).order_by(TXS.c.nonce, TXS.c.fee_bump)
    if size is not None:
        query = query.where(TXS.c.tree_size == size)
    with store.read() as connection:
        return [CheckpointTx.model_validate(dict(r)) for r in connection.execute(query).mappings()]


@dataclass(frozen=True)
class Soundness:
    """What :func:`assert_sound` found, for further assertions."""

    events: int
    latest: OnChainCheckpoint
    sizes: list[int]


def assert_sound(
    store: Store,
    log_: MerkleLog,
    chain: AnchorChain,
    receipts: Iterable[Receipt],
    *,
    require_all_anchored: bool = True,
) -> Soundness:
    """Every acknowledged event is in the log exactly once at the leaf its receipt names; the
    tree is exactly those events in order; each checkpoint size is on chain once, each root
    the tree's; the chain's latest checkpoint is the store's latest anchored one (and, by
    default, covers every event)."""
    acknowledged: dict[bytes, tuple[int, bytes]] = {}
    for receipt in receipts:
        previous = acknowledged.setdefault(
            receipt.event_id, (receipt.leaf_index, receipt.event_digest)
        )
        assert previous == (receipt.leaf_index, receipt.event_digest), "two receipts disagree"
    with store.read() as connection:
        rows = connection.execute(
            select(
                EVENTS.c.leaf_index,
                EVENTS.c.event_id,
                EVENTS.c.digest,
                EVENTS.c.patient,
                EVENTS.c.record_ref,
            ).order_by(EVENTS.c.leaf_index)
        ).all()
        best = (
            connection.execute(
                select(CHECKPOINTS)
                .where(CHECKPOINTS.c.status.in_((ANCHORED, CONFIRMED)))
                .order_by(CHECKPOINTS.c.tree_size.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    assert [r.leaf_index for r in rows] == list(range(len(rows))), "gaps in the leaf indexes"
    stored = {bytes(r.event_id): (r.leaf_index, bytes(r.digest)) for r in rows}
    assert len(stored) == len(rows), "an event id appears twice in the log"
    assert stored == acknowledged, "the log is not exactly the acknowledged events"

    tree = merkle.MemoryTree(merkle.leaf_hash(bytes(r.digest)) for r in rows)
    head = log_.head()
    assert (head.size, head.root) == (tree.size, tree.root()), "the stored tree is not the log"

    events = chain.checkpoint_events()
    sizes = [checkpoint.tree_size for checkpoint, _tx in events]
    twice = [size for size, n in Counter(sizes).items() if n > 1]
    assert not twice, f"checkpoints committed more than once: {twice}"
    assert sizes == sorted(sizes)
    for checkpoint, _tx in events:
        assert checkpoint.root_hash == tree.root(checkpoint.tree_size)
    # Each checkpoint commits the index of the log at exactly its size.
    keys = [index.keys_of(r.patient, bytes(r.record_ref) if r.record_ref else None) for r in rows]
    rebuilt = index.MemoryIndex()
    for checkpoint, _tx in events:
        rebuilt.extend(keys[rebuilt.size : checkpoint.tree_size])
        assert checkpoint.index_root == rebuilt.root(), f"index root at {checkpoint.tree_size}"

    latest = chain.latest_checkpoint()
    assert latest is not None, "nothing on chain"
    assert best is not None, "nothing anchored in the store"
    assert (best["tree_size"], bytes(best["root"])) == (latest.tree_size, latest.root_hash)
    assert best["index_root"] is not None
    assert bytes(best["index_root"]) == latest.index_root
    assert bytes(best["tx_hash"]) == events[-1][1], "the store names another transaction"
    if require_all_anchored:
        assert latest.tree_size == len(rows), "events left unanchored"
    return Soundness(len(rows), latest, sizes)
