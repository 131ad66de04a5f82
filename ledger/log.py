"""The event log's Merkle tree, kept in the store.

The sequencer (:meth:`MerkleLog.integrate`) is the tree's single writer: it appends stored
events in leaf-index order, persists every new perfect-subtree node, and moves the tree head.
Proofs are planned by the pure :mod:`ledger.merkle` and cost one indexed query for their
O(log n) nodes, at any log size.

Proofs are the service's hottest read, so their path is lean: the node query goes to the
driver as plain SQL (no statement is built per proof), and the tree head is not read again
when the size asked for is within one already seen. That is safe because the tree only
grows and its nodes never change: a head's nodes are written in the transaction that moves
the head, so every node of a tree of any size up to a head once read is there to be read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import OperationalError

from ledger import merkle
from ledger.errors import LedgerError
from ledger.merkle import NodeId
from ledger.store import Store
from ledger.store.db import StoreError, now, placeholder, select_in
from ledger.store.models import NODE_LEVEL_SHIFT, EventRow, TreeHead, TreeNode, node_key

_EVENTS = EventRow.__table__  # type: ignore[attr-defined]
_HEAD = TreeHead.__table__  # type: ignore[attr-defined]
_NODES = TreeNode.__table__  # type: ignore[attr-defined]
_INDEX_MASK = (1 << NODE_LEVEL_SHIFT) - 1
#: The node query, for the DB-API driver: its placeholders are appended per call.
_SELECT_NODES = 'SELECT "key", hash FROM tree_nodes WHERE "key" IN ({marks})'


class TreeSizeError(LedgerError):
    code = "tree-size-out-of-range"


@dataclass(frozen=True)
class Head:
    """The integrated tree: its size and RFC 9162 root."""

    size: int
    root: bytes
    updated_at: int


def _node_map(rows: Iterable[Sequence[Any]]) -> dict[NodeId, bytes]:
    return {(key >> NODE_LEVEL_SHIFT, key & _INDEX_MASK): bytes(value) for key, value in rows}


def leaf_hash_of_digest(digest: bytes) -> bytes:
    """The tree leaf of an event: RFC 9162 leaf hash of its 32-byte EIP-712 digest."""
    return merkle.leaf_hash(digest)


class MerkleLog:
    """The store-backed RFC 9162 tree over the events table."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # The largest head size seen: heads only grow (see the module's docstring).
        self._known_size = 0
        self._placeholder = placeholder(store.engine.dialect)
        self._driver_error: type[Exception] = store.engine.dialect.loaded_dbapi.Error

    # -- reads ----------------------------------------------------------------------------

    def head(self, connection: Connection | None = None) -> Head:
        """The latest integrated tree head."""
        if connection is None:
            with self.store.read() as conn:
                return self.head(conn)
        row = connection.execute(select(_HEAD).where(_HEAD.c.id == 1)).one()
        head = Head(size=row.size, root=bytes(row.root), updated_at=row.updated_at)
        self._known_size = max(self._known_size, head.size)
        return head

    @staticmethod
    def get_nodes(connection: Connection, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        """Fetch the given perfect-subtree nodes within ``connection``'s transaction."""
        keys = [node_key(level, index) for level, index in ids]
        mark = placeholder(connection.dialect)
        return _node_map(select_in(connection.exec_driver_sql, _SELECT_NODES, keys, mark))

    def _fetch_nodes(self, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        """Fetch nodes of a tree no larger than a head already seen, on a DB-API cursor straight
        from the engine's pool: one statement (for a proof) needs no transaction of its own,
        and the driver's implicit one (psycopg) ends when the pool resets the connection."""
        keys = [node_key(level, index) for level, index in ids]
        if not keys:
            return {}
        try:  # (the pool may raise the driver's error unwrapped when it reconnects)
            raw = self.store.engine.raw_connection()
        except (OperationalError, self._driver_error) as exc:
            raise StoreError(f"store unavailable: {getattr(exc, 'orig', exc)}") from exc
        try:
            cursor = raw.cursor()

            def run(sql: str, params: tuple[Any, ...]) -> list[Any]:
                cursor.execute(sql, params)
                return list(cursor.fetchall())

            return _node_map(select_in(run, _SELECT_NODES, keys, self._placeholder))
        except self._driver_error as exc:  # (the driver's own: no SQLAlchemy on this path)
            raise StoreError(f"store unavailable: {exc}") from exc
        finally:
            raw.close()

    def _checked_size(self, size: int | None) -> int:
        """``size``, or the head's, after checking the log has reached it."""
        if size is not None and 0 <= size <= self._known_size:
            return size
        head = self.head()
        if size is None:
            return head.size
        if size < 0 or size > head.size:
            raise TreeSizeError(
                f"tree size {size} is not available: the log has integrated {head.size} events",
                size=size,
                tree_size=head.size,
            )
        return size

    def root_at(self, size: int | None = None) -> bytes:
        """The root of the tree of the first ``size`` leaves (default: the head)."""
        size = self._checked_size(size)
        ids = merkle.root_plan(size)
        return merkle.fold(ids, self._fetch_nodes(ids))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        return self.inclusion_proofs([index], size)[0]

    def inclusion_proofs(
        self, indexes: Sequence[int], size: int | None = None
    ) -> list[list[bytes]]:
        """Inclusion proofs of several leaves in one tree, their nodes fetched together.

        A record's trail asks for hundreds of proofs in one tree; their paths share most of
        their upper nodes, so this reads each node once instead of once per proof.
        """
        size = self._checked_size(size)
        for index in indexes:
            if not 0 <= index < size:
                raise TreeSizeError(
                    f"leaf {index} is not in the tree of size {size}", index=index, size=size
                )
        plans = [merkle.inclusion_plan(index, size) for index in indexes]
        wanted: set[NodeId] = set()
        for plan in plans:
            wanted.update(plan.node_ids())
        nodes = self._fetch_nodes(wanted)
        return [merkle.assemble(plan, nodes) for plan in plans]

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from the tree of ``old_size`` to that of ``new_size``."""
        new_size = self._checked_size(new_size)
        if not 0 <= old_size <= new_size:
            raise TreeSizeError(
                f"old size {old_size} must be between 0 and {new_size}",
                old_size=old_size,
                new_size=new_size,
            )
        plan = merkle.consistency_plan(old_size, new_size)
        return merkle.assemble(plan, self._fetch_nodes(plan.node_ids()))

    # -- the sequencer --------------------------------------------------------------------

    def integrate(self, max_batch: int = 10_000) -> Head:
        """Append up to ``max_batch`` stored events to the tree, in leaf order, atomically.

        Safe to call from several processes: the tree head row is locked for the duration
        (``SELECT … FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so the tree
        has exactly one writer at a time. Stops early at a gap in the leaf indexes.
        """
        with self.store.write() as connection:
            row = connection.execute(select(_HEAD).where(_HEAD.c.id == 1).with_for_update()).one()
            size = int(row.size)
            digests = connection.execute(
                select(_EVENTS.c.leaf_index, _EVENTS.c.digest)
                .where(_EVENTS.c.leaf_index >= size)
                .order_by(_EVENTS.c.leaf_index)
                .limit(max_batch)
            ).all()
            if not digests or digests[0].leaf_index != size:
                return Head(size=size, root=bytes(row.root), updated_at=row.updated_at)
            frontier = merkle.CompactRange.load(
                size, self.get_nodes(connection, merkle.subtree_nodes(0, size))
            )
            new_nodes: list[dict[str, object]] = []
            for expected, (leaf_index, digest) in enumerate(digests, start=size):
                if leaf_index != expected:
                    break  # a gap: integrate what is contiguous
                for (level, index), value in frontier.append(leaf_hash_of_digest(bytes(digest))):
                    new_nodes.append({"key": node_key(level, index), "hash": value})
            connection.execute(_NODES.insert(), new_nodes)
            head = Head(size=frontier.size, root=frontier.root(), updated_at=now())
            connection.execute(
                _HEAD.update()
                .where(_HEAD.c.id == 1)
                .values(size=head.size, root=head.root, updated_at=head.updated_at)
            )
            return head

    def integrate_all(self, max_batch: int = 10_000) -> Head:
        """Integrate until every stored event is in the tree."""
        while True:
            before = self.head().size
            head = self.integrate(max_batch)
            if head.size == before:
                return head
