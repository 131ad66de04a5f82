"""The event log's Merkle tree, kept in the store.

The sequencer (:meth:`MerkleLog.integrate`) is the tree's single writer: it appends stored
events in leaf-index order, persists every new perfect-subtree node, and moves the tree head.
Proofs are planned by the pure :mod:`ledger.merkle` and cost one indexed query for their
O(log n) nodes, at any log size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, select

from ledger import merkle
from ledger.errors import LedgerError
from ledger.merkle import NodeId
from ledger.store import Store
from ledger.store.db import now
from ledger.store.models import NODE_LEVEL_SHIFT, EventRow, TreeHead, TreeNode, node_key

_EVENTS = EventRow.__table__  # type: ignore[attr-defined]
_HEAD = TreeHead.__table__  # type: ignore[attr-defined]
_NODES = TreeNode.__table__  # type: ignore[attr-defined]
_INDEX_MASK = (1 << NODE_LEVEL_SHIFT) - 1


class TreeSizeError(LedgerError):
    """A proof was asked for a tree size the log has not reached (or an index outside it)."""

    code = "tree-size-out-of-range"
    status = 400


@dataclass(frozen=True)
class Head:
    """The integrated tree: its size and RFC 9162 root."""

    size: int
    root: bytes
    updated_at: int


def leaf_hash_of_digest(digest: bytes) -> bytes:
    """The tree leaf of an event: RFC 9162 leaf hash of its 32-byte EIP-712 digest."""
    return merkle.leaf_hash(digest)


class MerkleLog:
    """The store-backed RFC 9162 tree over the events table."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reads ----------------------------------------------------------------------------

    def head(self, connection: Connection | None = None) -> Head:
        """The latest integrated tree head."""
        if connection is None:
            with self.store.read() as conn:
                return self.head(conn)
        row = connection.execute(select(_HEAD).where(_HEAD.c.id == 1)).one()
        return Head(size=row.size, root=bytes(row.root), updated_at=row.updated_at)

    @staticmethod
    def get_nodes(connection: Connection, ids: Iterable[NodeId]) -> dict[NodeId, bytes]:
        """Fetch the given perfect-subtree nodes in one query."""
        keys = [node_key(level, index) for level, index in ids]
        if not keys:
            return {}
        rows = connection.execute(select(_NODES.c.key, _NODES.c.hash).where(_NODES.c.key.in_(keys)))
        return {(key >> NODE_LEVEL_SHIFT, key & _INDEX_MASK): bytes(value) for key, value in rows}

    def _checked_size(self, connection: Connection, size: int | None) -> int:
        head = self.head(connection)
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
        with self.store.read() as connection:
            size = self._checked_size(connection, size)
            ids = merkle.root_plan(size)
            return merkle.fold(ids, self.get_nodes(connection, ids))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        with self.store.read() as connection:
            size = self._checked_size(connection, size)
            if not 0 <= index < size:
                raise TreeSizeError(
                    f"leaf {index} is not in the tree of size {size}", index=index, size=size
                )
            plan = merkle.inclusion_plan(index, size)
            return merkle.assemble(plan, self.get_nodes(connection, plan.node_ids()))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof from the tree of ``old_size`` to that of ``new_size``."""
        with self.store.read() as connection:
            new_size = self._checked_size(connection, new_size)
            if not 0 <= old_size <= new_size:
                raise TreeSizeError(
                    f"old size {old_size} must be between 0 and {new_size}",
                    old_size=old_size,
                    new_size=new_size,
                )
            plan = merkle.consistency_plan(old_size, new_size)
            return merkle.assemble(plan, self.get_nodes(connection, plan.node_ids()))

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
