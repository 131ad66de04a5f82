"""The verifiable index in the store: kept up by the sequencer, read for lookup proofs.

The index (:mod:`ledger.index`, docs/index.md) maps each record and each patient to the leaf
indexes of their events; its root at each checkpoint's size is committed on chain with the
log's root. Three tables hold it (:mod:`ledger.store.models`):

* ``index_versions``: one row per size the index was computed at (each checkpoint's), with
  its root and the deepest leaf of its trie; the largest is the index's **head**;
* ``index_nodes``: every trie node an update wrote, by position and version, so that the trie
  at a size is, at each position, the node of the largest version at or below it — a lookup at
  any retained checkpoint is one query for the ``2D + 1`` positions of its plan;
* ``index_frontiers``: each key's list frontier at the head (what the next update resumes
  from).

:class:`IndexSequencer` is the anchor worker's: it holds the trie and the frontiers at the head
in memory (bytes, as :mod:`ledger.index` keeps them) and advances them one checkpoint batch at
a time (:func:`ledger.index.update` over the events ``[head, size)``, whose keys come from the
events table: its ``record_ref`` is :attr:`ledger.logstate.Links.record_ref`, as ingest
computed it, and its ``patient``). What the update wrote — nodes, frontiers, the new version —
is stored in **one** transaction, which also checks that the head it started from is still the
stored one: a crash leaves either the old head or the new one, never a part, and a root that is
stored is a root of the log at its size. :class:`IndexStore` is what everyone else reads:
versions and lookup proofs.

Old versions are pruned: the anchor worker prunes below the second-newest confirmed checkpoint
(lookups are served at the newest anchored one; an API process may still be reading at the
newest confirmed one), deleting each node superseded at or below it (:meth:`IndexStore.prune`);
what is kept is the trie at that checkpoint and the writes since.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, text

from ledger import index
from ledger.errors import LedgerError
from ledger.index import EMPTY_HASH, IndexUpdate, LookupProof, Node, NodeId
from ledger.store import Store
from ledger.store.db import now, placeholder, select_in
from ledger.store.models import IndexVersionRow, MetaRow

__all__ = [
    "IndexDiverged",
    "IndexHead",
    "IndexSequencer",
    "IndexStore",
    "UpkeepTimes",
    "decode_position",
    "encode_position",
]

log = logging.getLogger("medtrail.index")

_VERSIONS = IndexVersionRow.__table__  # type: ignore[attr-defined]
_META = MetaRow.__table__  # type: ignore[attr-defined]
#: The size below which superseded nodes were pruned (a ``meta`` row).
_PRUNED_META = "index_pruned_upto"

#: The PostgreSQL transaction lock taken while a version is stored ("mtidx").
_STORE_LOCK = 0x6D74696478
_INSERT_NODES = 'INSERT INTO index_nodes ("position", version, node) VALUES ({m}, {m}, {m})'
_UPSERT_FRONTIERS = (
    'INSERT INTO index_frontiers ("key", frontier) VALUES ({m}, {m}) '
    'ON CONFLICT ("key") DO UPDATE SET frontier = excluded.frontier'
)
#: Each position's node at a version: the largest version at or below it (one index seek per
#: position, on the primary key).
_NODES_AT = (
    'SELECT n."position", n.node FROM index_nodes n WHERE n."position" IN ({marks}) AND '
    'n.version = (SELECT MAX(m.version) FROM index_nodes m WHERE m."position" = n."position" '
    "AND m.version <= {v})"
)
#: Delete the nodes the update to a version superseded.
_PRUNE = (
    'DELETE FROM index_nodes WHERE version < {m} AND "position" IN '
    '(SELECT "position" FROM index_nodes WHERE version = {m})'
)
_EVENT_KEYS = (
    "SELECT leaf_index, patient, record_ref FROM events WHERE leaf_index >= {m} "
    "AND leaf_index < {m} ORDER BY leaf_index"
)


class IndexDiverged(LedgerError):
    """The stored index is not the one this process expected (another worker moved it, or the
    store does not hold the events it should)."""

    code = "log-diverged"


@dataclass(frozen=True)
class IndexHead:
    """The index at one log size: its root and the deepest leaf of its trie."""

    size: int
    root: bytes
    depth: int


#: The index of the empty log.
EMPTY_HEAD = IndexHead(0, EMPTY_HASH, 0)


def encode_position(node: NodeId) -> bytes:
    """A trie position as stored: its heap number, big-endian, in as few bytes as it needs (the
    leading 1 bit of a heap number makes the encoding unique)."""
    return node.to_bytes((node.bit_length() + 7) // 8, "big")


def decode_position(data: bytes) -> NodeId:
    """The heap number of a stored position."""
    return int.from_bytes(data, "big")


def _head(row: Any) -> IndexHead:
    return IndexHead(int(row.size), bytes(row.root), int(row.depth))


# --------------------------------------------------------------------------- reads


class IndexStore:
    """The stored index: its versions, lookup proofs at any retained version, pruning."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._mark = placeholder(store.engine.dialect)

    def head(self, connection: Connection | None = None) -> IndexHead:
        """The index's head (the largest size it was computed at; the empty index if none)."""
        if connection is None:
            with self.store.read() as conn:
                return self.head(conn)
        row = connection.execute(
            select(_VERSIONS).order_by(_VERSIONS.c.size.desc()).limit(1)
        ).first()
        return EMPTY_HEAD if row is None else _head(row)

    def version(self, size: int, connection: Connection | None = None) -> IndexHead | None:
        """The index at log size ``size``; None if it was not computed at that size."""
        if connection is None:
            with self.store.read() as conn:
                return self.version(size, conn)
        if size == 0:
            return EMPTY_HEAD
        row = connection.execute(select(_VERSIONS).where(_VERSIONS.c.size == size)).first()
        return None if row is None else _head(row)

    def nodes_at(
        self, connection: Connection, positions: Iterable[NodeId], size: int
    ) -> dict[NodeId, Node]:
        """The trie's nodes at ``positions`` at log size ``size`` (absent: empty subtree)."""
        keys = [encode_position(p) for p in positions]
        mark = self._mark
        sql = _NODES_AT.replace("{v}", mark)

        def run(statement: str, params: tuple[Any, ...]) -> list[Any]:
            return list(connection.exec_driver_sql(statement, (*params, size)).all())

        return {
            decode_position(bytes(pos)): bytes(node)
            for pos, node in select_in(run, sql, keys, mark)
        }

    def lookup(
        self, key: bytes, version: IndexHead, connection: Connection | None = None
    ) -> LookupProof:
        """The lookup proof of ``key`` in the index at ``version`` (one query for its plan's
        nodes). Raises :class:`ledger.merkle.MissingNodeError` if the store lost a node."""
        if connection is None:
            with self.store.read() as conn:
                return self.lookup(key, version, conn)
        plan = index.lookup_plan(key, version.depth)
        return index.assemble_lookup(key, self.nodes_at(connection, plan, version.size))

    def prune(self, upto: int) -> int:
        """Delete every node superseded at or below log size ``upto`` (lookups are not served
        below it any more); return how many. Idempotent, and safe at any moment: the trie at
        every version from ``upto`` on is unchanged."""
        deleted = 0
        with self.store.write() as connection:
            done = connection.execute(
                select(_META.c.value).where(_META.c.key == _PRUNED_META)
            ).scalar()
            start = int(done) if done is not None else 0
            if upto <= start:
                return 0
            sizes = connection.execute(
                select(_VERSIONS.c.size)
                .where(_VERSIONS.c.size > start, _VERSIONS.c.size <= upto)
                .order_by(_VERSIONS.c.size)
            ).scalars()
            mark = self._mark
            for size in sizes:
                result = connection.exec_driver_sql(_PRUNE.format(m=mark), (size, size))
                deleted += max(result.rowcount, 0)
            connection.execute(_META.delete().where(_META.c.key == _PRUNED_META))
            connection.execute(_META.insert().values(key=_PRUNED_META, value=str(upto)))
        return deleted

    def load(self) -> tuple[IndexHead, dict[NodeId, Node], dict[bytes, bytes]]:
        """The head, its whole trie and every frontier (what the sequencer resumes from)."""
        with self.store.read() as connection:
            head = self.head(connection)
            nodes: dict[NodeId, Node] = {}
            rows = connection.exec_driver_sql(
                'SELECT "position", node FROM index_nodes ORDER BY "position", version'
            )
            for position, node in rows:  # the last version of each position wins
                nodes[decode_position(bytes(position))] = bytes(node)
            frontiers = {
                bytes(key): bytes(frontier)
                for key, frontier in connection.exec_driver_sql(
                    'SELECT "key", frontier FROM index_frontiers'
                )
            }
        return head, nodes, frontiers


# --------------------------------------------------------------------------- upkeep


@dataclass
class UpkeepTimes:
    """Where the sequencer's index upkeep went (seconds, cumulated), for the benchmarks: wall
    time of each stage, and the thread's CPU time of each (``*_cpu``)."""

    events: int = 0
    keys: float = 0.0
    update: float = 0.0
    store: float = 0.0
    keys_cpu: float = 0.0
    update_cpu: float = 0.0
    store_cpu: float = 0.0

    @property
    def total(self) -> float:
        return self.keys + self.update + self.store


class IndexSequencer:
    """The anchor worker's index: the trie and frontiers at the head, in memory, advanced one
    checkpoint batch at a time and stored as it goes (see the module's docstring)."""

    def __init__(self, store: Store) -> None:
        self.index = IndexStore(store)
        self.store = store
        self._mark = placeholder(store.engine.dialect)
        self._head: IndexHead | None = None
        self._nodes: dict[NodeId, Node] = {}
        self._frontiers: dict[bytes, bytes] = {}
        self.times = UpkeepTimes()

    @property
    def head(self) -> IndexHead:
        """The head this process holds (loaded from the store on first use)."""
        if self._head is None:
            self.reload()
        assert self._head is not None
        return self._head

    def reload(self) -> None:
        """Load the stored head, its trie and frontiers (at start, or when another process
        moved the stored index)."""
        head, nodes, frontiers = self.index.load()
        if head.size and (1 not in nodes or index.node_hash_of(nodes[1]) != head.root):
            raise IndexDiverged(
                f"the stored index's trie does not hash to the root of its head (size "
                f"{head.size}): the index tables were altered",
                size=head.size,
            )
        self._head, self._nodes, self._frontiers = head, nodes, frontiers

    def advance(self, size: int) -> IndexHead:
        """The index at log size ``size`` (events ``[0, size)`` all integrated in the tree):
        the stored version if there is one, else the head advanced to it by one batch, stored
        before it is returned. Raises :class:`IndexDiverged` for a size below the head that was
        never a version."""
        stored = self.index.head()
        if self._head is None or stored != self._head:
            self.reload()
        head = self.head
        if size == head.size:
            return head
        if size < head.size:
            found = self.index.version(size)
            if found is None:
                raise IndexDiverged(
                    f"the index was never computed at log size {size} and its head is at "
                    f"{head.size}: it cannot go back",
                    size=size,
                    head=head.size,
                )
            return found
        started, started_cpu = time.perf_counter(), time.thread_time()
        batch, count = index.batch_of(head.size, self._event_keys(head.size, size))
        if count != size - head.size:
            raise IndexDiverged(
                f"the store holds {count} of the events [{head.size}, {size}) the index needs",
                size=size,
                head=head.size,
            )
        keyed, keyed_cpu = time.perf_counter(), time.thread_time()
        update = index.update(self._nodes, self._frontiers, batch, head.size, size)
        updated, updated_cpu = time.perf_counter(), time.thread_time()
        new_head = IndexHead(size, update.root, max(head.depth, update.depth))
        self._store(head, new_head, update)
        self._nodes.update(update.nodes)
        self._frontiers.update(update.frontiers)
        self._head = new_head
        stored_at, stored_cpu = time.perf_counter(), time.thread_time()
        times = self.times
        times.events += count
        times.keys += keyed - started
        times.update += updated - keyed
        times.store += stored_at - updated
        times.keys_cpu += keyed_cpu - started_cpu
        times.update_cpu += updated_cpu - keyed_cpu
        times.store_cpu += stored_cpu - updated_cpu
        return new_head

    def _event_keys(self, start: int, stop: int) -> list[tuple[bytes, ...]]:
        """The index keys of the events ``[start, stop)`` from the events table, in log order
        (docs/index.md §1: the record's key, then the patient's)."""
        record_tag, patient_tag = index.RECORD_TAG, index.PATIENT_TAG
        sha256 = hashlib.sha256
        patients: dict[str, bytes] = {}
        records: dict[bytes, bytes] = {}
        keys: list[tuple[bytes, ...]] = []
        with self.store.read() as connection:
            rows = connection.exec_driver_sql(_EVENT_KEYS.format(m=self._mark), (start, stop)).all()
        expected = start
        for leaf_index, patient, record_ref in rows:
            if leaf_index != expected:
                break  # a gap: the caller finds the count short
            expected += 1
            patient_key = patients.get(patient)
            if patient_key is None:
                # The store holds EIP-55 addresses, checked at ingest: the key is over its bytes.
                patient_key = patients[patient] = sha256(
                    patient_tag + bytes.fromhex(patient[2:])
                ).digest()
            if record_ref is None:
                keys.append((patient_key,))
                continue
            ref = bytes(record_ref)
            record_key = records.get(ref)
            if record_key is None:
                record_key = records[ref] = sha256(record_tag + ref).digest()
            keys.append((record_key, patient_key))
        return keys

    def _store(self, old: IndexHead, new: IndexHead, update: IndexUpdate) -> None:
        """Store one update in one transaction, after checking the stored head is ``old``."""
        mark = self._mark
        with self.store.write() as connection:
            if connection.dialect.name == "postgresql":
                # READ COMMITTED: without it, two writers could both read ``old`` as the head
                # and both store a version (SQLite's BEGIN IMMEDIATE serialises them already).
                connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _STORE_LOCK})
            current = self.index.head(connection)
            if current != old:
                raise IndexDiverged(
                    f"the stored index moved to size {current.size} while this process "
                    f"advanced it from {old.size}: another worker is keeping it",
                    size=current.size,
                )
            version = new.size
            # In position order (by depth, then left to right; by key for the frontiers): each
            # insert lands next to the previous one in the tables' B-trees, not at random.
            written, changed = update.nodes, update.frontiers
            nodes = [
                (
                    position.to_bytes((position.bit_length() + 7) // 8, "big"),
                    version,
                    written[position],
                )
                for position in sorted(written)
            ]
            if nodes:
                connection.exec_driver_sql(_INSERT_NODES.format(m=mark), nodes)
            frontiers = [(key, changed[key]) for key in sorted(changed)]
            if frontiers:
                connection.exec_driver_sql(_UPSERT_FRONTIERS.format(m=mark), frontiers)
            connection.execute(
                _VERSIONS.insert().values(
                    size=new.size, root=new.root, depth=new.depth, created_at=now()
                )
            )
