"""The store-backed Merkle log against the in-memory reference tree, on SQLite and PostgreSQL.

:class:`ledger.merkle.MemoryTree` is checked against RFC 9162 in the unit tests; here the
store's sequencer and its proof path (plain driver queries, a remembered head size) must give
the very same roots and proofs, for every leaf and size, and must notice a head that another
process moved on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from sqlalchemy import text, update

from ledger import merkle
from ledger.log import MerkleLog, TreeSizeError
from ledger.store import Store
from ledger.store.db import StoreError
from ledger.store.models import IngestCounter
from tests.support.postgres import fresh_database

_EVENTS_COLUMNS = (
    "leaf_index, event_id, event_type, institution, patient, digest, signature, body, "
    "occurred_at, received_at, anchor_by, consent_status, receipt_signature"
)
_COUNTER = IngestCounter.__table__  # type: ignore[attr-defined]


def digest(index: int) -> bytes:
    return hashlib.sha256(b"test event %d" % index).digest()


def append_events(store: Store, start: int, end: int) -> None:
    """Store rows for leaves ``[start, end)`` (only the log reads them here)."""
    names = [name.strip() for name in _EVENTS_COLUMNS.split(",")]
    insert = text(
        f"INSERT INTO events ({_EVENTS_COLUMNS}) VALUES ({', '.join(':' + n for n in names)})"
    )
    rows = [
        {
            "leaf_index": i,
            "event_id": hashlib.sha256(b"id %d" % i).digest(),
            "event_type": "RecordAccess",
            "institution": "0x" + "11" * 20,
            "patient": "0x" + "22" * 20,
            "digest": digest(i),
            "signature": bytes(65),
            "body": "{}",
            "occurred_at": 0,
            "received_at": 0,
            "anchor_by": 0,
            "consent_status": "not-applicable",
            "receipt_signature": bytes(65),
        }
        for i in range(start, end)
    ]
    with store.write() as connection:
        connection.execute(insert, rows)
        connection.execute(update(_COUNTER).where(_COUNTER.c.id == 1).values(next_index=end))


def reference(size: int) -> merkle.MemoryTree:
    return merkle.MemoryTree(merkle.leaf_hash(digest(i)) for i in range(size))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path_factory.mktemp('log') / 'log.db'}")
        store.migrate()
        yield store
        store.dispose()
        return
    with fresh_database() as url:
        store = Store(url)
        store.migrate()
        yield store
        store.dispose()


def test_every_root_and_proof_matches_the_reference_tree(store: Store) -> None:
    log = MerkleLog(store)
    size = 37
    append_events(store, 0, size)
    # integrate in uneven steps, so the frontier is reloaded from the store between them
    for step in (1, 6, 13):
        log.integrate(max_batch=step)
    assert log.integrate_all().size == size
    tree = reference(size)
    assert log.head().root == tree.root()
    for n in range(size + 1):
        assert log.root_at(n) == tree.root(n)
        for m in range(n + 1):
            assert log.consistency_proof(m, n) == tree.consistency_proof(m, n)
        for index in range(n):
            assert log.inclusion_proof(index, n) == tree.inclusion_proof(index, n)


def test_many_proofs_at_once_match_one_by_one(store: Store) -> None:
    # 2,000 leaves: their paths' nodes need several queries (at most 900 keys each)
    log = MerkleLog(store)
    append_events(store, 0, 2000)
    log.integrate_all()
    tree = reference(2000)
    indexes = [*range(0, 2000, 3), 1999, 0, 0]  # any order, repeats allowed
    assert log.inclusion_proofs(indexes, 2000) == [
        tree.inclusion_proof(index, 2000) for index in indexes
    ]
    assert log.inclusion_proofs([], 2000) == []
    with pytest.raises(TreeSizeError):
        log.inclusion_proofs([5, 2000], 2000)


def test_proofs_default_to_the_head(store: Store) -> None:
    log = MerkleLog(store)
    append_events(store, 0, 10)
    log.integrate_all()
    tree = reference(10)
    assert log.inclusion_proof(3) == tree.inclusion_proof(3, 10)
    assert log.consistency_proof(4) == tree.consistency_proof(4, 10)
    assert log.root_at() == tree.root()


def test_a_reader_sees_a_head_another_writer_moved(store: Store) -> None:
    reader, writer = MerkleLog(store), MerkleLog(store)
    append_events(store, 0, 8)
    writer.integrate_all()
    assert reader.inclusion_proof(0, 8) == reference(8).inclusion_proof(0, 8)  # remembers 8
    append_events(store, 8, 21)
    writer.integrate_all()
    tree = reference(21)
    # sizes beyond the one it remembers make the reader read the head again
    assert reader.inclusion_proof(20, 21) == tree.inclusion_proof(20, 21)
    assert reader.consistency_proof(8, 21) == tree.consistency_proof(8, 21)
    assert reader.root_at(21) == tree.root()


@pytest.mark.parametrize(
    ("call", "fields"),
    [
        (lambda log: log.inclusion_proof(0, 6), {"size": 6, "tree_size": 5}),
        (lambda log: log.inclusion_proof(5, 5), {"index": 5, "size": 5}),
        (lambda log: log.inclusion_proof(-1, 5), {"index": -1, "size": 5}),
        (lambda log: log.consistency_proof(6, 5), {"old_size": 6, "new_size": 5}),
        (lambda log: log.consistency_proof(-1), {"old_size": -1, "new_size": 5}),
        (lambda log: log.root_at(-1), {"size": -1, "tree_size": 5}),
        (lambda log: log.root_at(9), {"size": 9, "tree_size": 5}),
    ],
)
def test_sizes_and_indexes_outside_the_log_are_refused(
    store: Store, call: object, fields: dict[str, int]
) -> None:
    log = MerkleLog(store)
    append_events(store, 0, 7)  # stored, but only 5 integrated: the head is what counts
    log.integrate(max_batch=5)
    log.head()
    with pytest.raises(TreeSizeError) as caught:
        call(log)  # type: ignore[operator]
    assert caught.value.code == "tree-size-out-of-range"
    assert caught.value.context == fields


def test_a_store_failure_on_the_proof_path_is_a_store_error(tmp_path: object) -> None:
    store = Store(f"sqlite:///{tmp_path}/broken.db")
    store.migrate()
    log = MerkleLog(store)
    append_events(store, 0, 4)
    log.integrate_all()
    assert log.inclusion_proof(1, 4)  # the head size is now remembered: no head query below
    with store.write() as connection:
        connection.execute(text("DROP TABLE tree_nodes"))
    with pytest.raises(StoreError, match="store unavailable"):
        log.inclusion_proof(1, 4)
    store.dispose()


@pytest.mark.postgres
def test_a_database_gone_on_the_proof_path_is_a_store_error() -> None:
    from sqlalchemy import create_engine

    with fresh_database() as url:
        store = Store(url)
        store.migrate()
        log = MerkleLog(store)
        append_events(store, 0, 4)
        log.integrate_all()
        assert log.inclusion_proof(1, 4)  # the head size is remembered: no head query below
        admin = create_engine(store.url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{store.url.database}" WITH (FORCE)'))
        admin.dispose()
        with pytest.raises(StoreError, match="store unavailable"):
            log.inclusion_proof(1, 4)
        store.dispose()
