"""The verifiable index in the store: kept up by the sequencer, read for lookup proofs.

The index (:mod:`ledger.index`, docs/index.md) maps each record and each patient to the leaf
indexes of their events; its root at each checkpoint's size is committed on chain with the
log's root. Two tables hold it (:mod:`ledger.store.models`):

* ``index_versions``: one row per size the index was computed at (each checkpoint's), with
  its root and the deepest leaf of its trie; the largest is the index's **head**;
* ``index_tiles``: the trie cut into **tiles** of :data:`TILE_HEIGHT` levels (the root's tile
  holds depths 0..8, a tile rooted at depth ``8k`` the depths ``8k + 1 .. 8k + 8`` below it:
  a node and its sibling are always in one tile). An update stores a row per tile it changed,
  under its version: a **delta**, the nodes it wrote in the tile (:func:`tile_deltas`), or,
  at least every :data:`WHOLE_EVERY` rows of the tile, the **whole** tile
  (:func:`encode_tile`). The tile at a size is its last whole row at or below it with the
  deltas since applied in version order, so that a lookup at any retained checkpoint is one
  query for the few tiles its plan's ``2D + 1`` positions fall in. A checkpoint of 10^4
  events over 10^5 keys writes about 1.3 rows per event, where a row per node was nine, and
  about the bytes of the nodes that changed (docs/benchmarks.md, "The verifiable index").

Each key's list frontier (what the next update resumes the key's list from) is not stored:
it is a function of the events table, which holds every event's ``record_ref``
(:attr:`ledger.logstate.Links.record_ref`, as ingest computed it) and ``patient``.

:class:`IndexSequencer` is the anchor worker's: it holds the trie and the frontiers at the head
in memory (bytes, as :mod:`ledger.index` keeps them) and advances them one checkpoint batch at
a time (:func:`ledger.index.update` over the events ``[head, size)``). What the update wrote —
its tiles, the new version — is stored in **one** transaction, which also checks that the head
it started from is still the stored one: a crash leaves either the old head or the new one,
never a part, and a root that is stored is a root of the log at its size. On (re)load it
rebuilds the frontiers from the events below the head and checks each against its key's leaf
in the stored trie (count and list root), and the trie against the head's root.
:class:`IndexStore` is what everyone else reads: versions and lookup proofs.

Old versions are pruned: the anchor worker prunes below the second-newest confirmed checkpoint
(lookups are served at the newest anchored one; an API process may still be reading at the
newest confirmed one), deleting the rows of each tile older than its last whole row at or
below it (:meth:`IndexStore.prune`); what is kept is the trie at that checkpoint and the
writes since.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, select, text

from ledger import index
from ledger.errors import LedgerError
from ledger.index import EMPTY_HASH, IndexUpdate, LookupProof, Node, NodeId
from ledger.store import Store
from ledger.store.db import now, placeholder, select_in
from ledger.store.models import IndexVersionRow, MetaRow

__all__ = [
    "TILE_HEIGHT",
    "WHOLE_EVERY",
    "IndexDiverged",
    "IndexHead",
    "IndexSequencer",
    "IndexStore",
    "UpkeepTimes",
    "decode_position",
    "decode_tile",
    "encode_position",
    "encode_tile",
    "tile_deltas",
    "tile_of",
    "tile_rows",
]

log = logging.getLogger("medtrail.index")

_VERSIONS = IndexVersionRow.__table__  # type: ignore[attr-defined]
_META = MetaRow.__table__  # type: ignore[attr-defined]
#: The size below which superseded nodes were pruned (a ``meta`` row).
_PRUNED_META = "index_pruned_upto"

#: The PostgreSQL transaction lock taken while a version is stored ("mtidx").
_STORE_LOCK = 0x6D74696478
_INSERT_TILES = "INSERT INTO index_tiles (tile, version, whole, nodes) VALUES ({m}, {m}, {m}, {m})"
#: Each tile's rows at a version: its last whole row at or below it and the deltas since
#: (a few index seeks per tile, on the primary key).
_TILES_AT = (
    "SELECT t.tile, t.nodes FROM index_tiles t WHERE t.tile IN ({marks}) AND t.version <= {v} "
    "AND t.version >= (SELECT MAX(m.version) FROM index_tiles m WHERE m.tile = t.tile "
    "AND m.whole AND m.version <= {v}) ORDER BY t.tile, t.version"
)
_LOAD = "SELECT tile, whole, nodes FROM index_tiles WHERE version <= {m} ORDER BY tile, version"
#: Delete the rows a whole row written at a version made useless (those of its tile before it).
_PRUNE = (
    "DELETE FROM index_tiles WHERE version < {m} AND tile IN "
    "(SELECT tile FROM index_tiles WHERE version = {m} AND whole)"
)
_EVENT_KEYS = (
    "SELECT leaf_index, patient, record_ref FROM events WHERE leaf_index >= {m} "
    "AND leaf_index < {m} ORDER BY leaf_index"
)
#: Every list of one kind of key below a size, key by key: one range scan of the events'
#: ``(column, leaf_index)`` index (migration 0007), each key's entries in order.
_KEY_LISTS = (
    "SELECT {c}, leaf_index FROM events WHERE {c} IS NOT NULL AND leaf_index < {m} "
    "ORDER BY {c}, leaf_index"
)
_EVENT_COUNT = "SELECT COUNT(*) FROM events WHERE leaf_index >= 0 AND leaf_index < {m}"
#: Rows fetched at a time while the lists are streamed.
_STREAM_ROWS = 10_000


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


#: Levels per tile: a tile holds at most ``2**9 - 2`` nodes (``2**9 - 1`` for the root's).
TILE_HEIGHT = 8
_LEAF_FLAG = 0x8000  # in a tile entry's 2-byte header: the node is a leaf (104 bytes)
_LEAF_BIT = 1 << (TILE_HEIGHT + 1)  # the same, on a relative position (below 2**9)
#: Every entry header: ``_HEADERS[local]`` (an internal node), ``_HEADERS[local | _LEAF_BIT]``.
_HEADERS = [
    (local & (_LEAF_BIT - 1) | (_LEAF_FLAG if local & _LEAF_BIT else 0)).to_bytes(2, "big")
    for local in range(2 * _LEAF_BIT)
]
#: ``_SHIFTS[position.bit_length()]``: how far a position is below its tile's root (the
#: root's tile holds depths 0..8, the others the 8 depths below their root).
_SHIFTS = [0, 0] + [(depth - 1) % TILE_HEIGHT + 1 for depth in range(1, 257)]
#: A tile is stored whole at least once every ``WHOLE_EVERY`` rows, deltas in between: a read
#: merges at most that many rows per tile.
WHOLE_EVERY = 16
_LEAF_SIZE = index.LEAF_NODE_SIZE
_HASH_SIZE = index.KEY_SIZE


def tile_of(node: NodeId) -> NodeId:
    """The root of the tile that holds ``node``: the root's tile (1) holds depths
    0..:data:`TILE_HEIGHT`; a tile rooted at depth ``8k`` (k ≥ 1) the 8 depths below it."""
    depth = node.bit_length() - 1
    return node >> ((depth - 1) % TILE_HEIGHT + 1) if depth else 1


def encode_tile(tile: NodeId, nodes: Mapping[NodeId, Node]) -> bytes:
    """The stored form of a tile: every node of the trie ``nodes`` in it, each as a 2-byte
    header (its position relative to the tile's root, as a heap number — 1 for the root
    itself, in the root's tile only — with bit 15 set for a leaf) and the node (32 bytes, or
    104 for a leaf). Found by walking down from the tile's root: an absent node is an empty
    subtree, a leaf has nothing below it."""
    parts: list[bytes] = []
    append = parts.append
    get = nodes.get
    stack = [(1, 1)] if tile == 1 else [(tile << 1, 2), (tile << 1 | 1, 3)]
    pop, push = stack.pop, stack.append
    bottom = 1 << TILE_HEIGHT  # relative positions at the tile's last level are 256..511
    while stack:
        position, local = pop()
        node = get(position)
        if node is None:
            continue
        if len(node) == _HASH_SIZE:
            append(_HEADERS[local])
            append(node)
            if local < bottom:
                push((position << 1 | 1, local << 1 | 1))
                push((position << 1, local << 1))
        else:
            append(_HEADERS[local | _LEAF_BIT])
            append(node)
    return b"".join(parts)


def tile_deltas(written: Mapping[NodeId, Node]) -> dict[NodeId, bytes]:
    """The nodes an update wrote, grouped by tile, each group in :func:`encode_tile`'s form: a
    tile's **delta**, which replaces those of its nodes in the tile as stored before."""
    groups: dict[NodeId, list[bytes]] = {}
    get, headers, shifts = groups.get, _HEADERS, _SHIFTS
    for position, node in written.items():
        shift = shifts[position.bit_length()]  # the root's: 0, its tile's position 1
        local = position & ((1 << shift) - 1) | 1 << shift
        if len(node) != _HASH_SIZE:
            local |= _LEAF_BIT
        tile = position >> shift
        found = get(tile)
        if found is None:
            groups[tile] = [headers[local], node]
        else:
            found += (headers[local], node)
    return {tile: b"".join(parts) for tile, parts in groups.items()}


def decode_tile(tile: NodeId, data: bytes) -> dict[NodeId, Node]:
    """The nodes of a stored tile (:func:`encode_tile`), by position; raises
    :class:`IndexDiverged` on bytes that are not a tile."""
    found: dict[NodeId, Node] = {}
    at, end = 0, len(data)
    while at < end:
        if at + 2 > end:
            raise IndexDiverged("a stored index tile is cut short")
        header = int.from_bytes(data[at : at + 2], "big")
        local = header & 0x7FFF
        width = _LEAF_SIZE if header & _LEAF_FLAG else _HASH_SIZE
        if not 0 < local < 2 << TILE_HEIGHT or (local == 1 and tile != 1):
            raise IndexDiverged("a stored index tile names a position outside it")
        level = local.bit_length() - 1
        node = data[at + 2 : at + 2 + width]
        if len(node) != width:
            raise IndexDiverged("a stored index tile is cut short")
        found[(tile << level) | (local ^ (1 << level))] = node
        at += 2 + width
    return found


def tile_rows(
    nodes: Mapping[NodeId, Node], written: Iterable[NodeId]
) -> list[tuple[NodeId, bytes]]:
    """The tiles an update that wrote the positions ``written`` changed, each encoded whole
    from the trie after it (``nodes``), in position order."""
    return [(tile, encode_tile(tile, nodes)) for tile in sorted({tile_of(p) for p in written})]


def _record_key(record_ref: Any) -> bytes:
    return index.record_key(bytes(record_ref))


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
        """The trie's nodes at ``positions`` at log size ``size`` (absent: empty subtree): the
        tiles they fall in, fetched in one query."""
        wanted = set(positions)
        tiles = sorted({tile_of(p) for p in wanted})
        mark = self._mark
        sql = _TILES_AT.replace("{v}", mark)

        def run(statement: str, params: tuple[Any, ...]) -> list[Any]:
            return list(connection.exec_driver_sql(statement, (*params, size, size)).all())

        found: dict[NodeId, Node] = {}
        # In version order: a delta's nodes replace the whole row's and earlier deltas'.
        for tile, data in select_in(run, sql, [encode_position(t) for t in tiles], mark):
            for position, node in decode_tile(decode_position(bytes(tile)), bytes(data)).items():
                if position in wanted:
                    found[position] = node
        return found

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
        """Delete every tile row superseded at or below log size ``upto`` — those of a tile
        before its last whole row at or below it — (lookups are not served below it any
        more); return how many. Idempotent, and safe at any moment: the trie at
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

    def load(self) -> tuple[IndexHead, dict[NodeId, Node]]:
        """The head and its whole trie (what the sequencer resumes from)."""
        with self.store.read() as connection:
            head = self.head(connection)
            since: dict[bytes, list[bytes]] = {}  # each tile's last whole row and deltas since
            rows = connection.exec_driver_sql(_LOAD.format(m=self._mark), (head.size,))
            for tile, whole, data in rows:
                found = since.get(bytes(tile))
                if found is None or whole:
                    since[bytes(tile)] = [bytes(data)]
                else:
                    found.append(bytes(data))
        nodes: dict[NodeId, Node] = {}
        for tile, parts in since.items():
            at = decode_position(tile)
            for data in parts:
                nodes.update(decode_tile(at, data))
        return head, nodes


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
        #: Deltas this process stored of each tile since its last whole row (absent: it
        #: stored none: the tile's next row is whole).
        self._deltas: dict[NodeId, int] = {}
        self.times = UpkeepTimes()

    @property
    def head(self) -> IndexHead:
        """The head this process holds (loaded from the store on first use)."""
        if self._head is None:
            self.reload()
        assert self._head is not None
        return self._head

    def reload(self) -> None:
        """Load the stored head and its trie, and rebuild the frontiers from the events below
        the head (at start, or when another process moved the stored index). Raises
        :class:`IndexDiverged` if the trie does not hash to the head's root, or a key's leaf
        does not hold the list the events table gives it (the tables were altered)."""
        head, nodes = self.index.load()
        if head.size and (1 not in nodes or index.node_hash_of(nodes[1]) != head.root):
            raise IndexDiverged(
                f"the stored index's trie does not hash to the root of its head (size "
                f"{head.size}): the index tables were altered",
                size=head.size,
            )
        # Each key's leaf: its count and list root, to check the rebuilt frontier against.
        leaves = {
            node[32:64]: node[64:] for node in nodes.values() if len(node) == index.LEAF_NODE_SIZE
        }
        frontiers = self._rebuild_frontiers(head.size, leaves)
        if len(leaves) != len(frontiers):
            raise IndexDiverged(
                f"the events below {head.size} have {len(frontiers)} keys and the stored "
                f"index {len(leaves)}: the index or the events were altered",
                size=head.size,
            )
        self._head, self._nodes, self._frontiers = head, nodes, frontiers
        self._deltas = {}

    def _rebuild_frontiers(self, size: int, leaves: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
        """Every key's list frontier over the events ``[0, size)``, each checked against its
        leaf's ``count || list root`` in ``leaves``: the events streamed key by key (one
        query per kind of key, in the order of its index), one key's list held at a time."""
        frontiers: dict[bytes, bytes] = {}
        with self.store.read() as connection:
            events = connection.exec_driver_sql(_EVENT_COUNT.format(m=self._mark), (size,))
            found = int(events.scalar_one())
            if found != size:  # leaf indexes are unique and from 0: none is missing
                raise IndexDiverged(
                    f"the store holds {found} of the events [0, {size}) its index covers",
                    size=size,
                )
            for column, key_of in (("record_ref", _record_key), ("patient", index.patient_key)):
                rows = connection.execution_options(yield_per=_STREAM_ROWS).exec_driver_sql(
                    _KEY_LISTS.format(c=column, m=self._mark), (size,)
                )
                for value, entries in groupby(rows, key=itemgetter(0)):
                    key = key_of(value)
                    frontier, head = index.list_frontier(leaf for _, leaf in entries)
                    leaf = leaves.get(key)
                    if leaf is None or leaf[:8] != frontier[:8] or leaf[8:] != head.root:
                        raise IndexDiverged(
                            f"a key's leaf in the stored index (size {size}) does not hold "
                            "the list of its events in the store: the index or the events "
                            "were altered",
                            size=size,
                        )
                    frontiers[key] = frontier
        return frontiers

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
        nodes = self._nodes
        replaced = {node: nodes.get(node) for node in update.nodes}
        nodes.update(update.nodes)
        try:
            self._store(head, new_head, update, nodes)
        except BaseException:
            # The trie in memory put back as the store still has it (the frontiers and the
            # head were not touched yet): a failed write (the database down, a lock timeout)
            # costs no reload, which rebuilds every frontier from the events. If another
            # process moved the stored index, the next advance sees it and reloads.
            for node, value in replaced.items():
                if value is None:
                    del nodes[node]
                else:
                    nodes[node] = value
            raise
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

    def _store(
        self, old: IndexHead, new: IndexHead, update: IndexUpdate, nodes: Mapping[NodeId, Node]
    ) -> None:
        """Store one update in one transaction, after checking the stored head is ``old``:
        each tile it changed — as a delta of the nodes it wrote, or whole (encoded from
        ``nodes``, the trie after it) when the tile has :data:`WHOLE_EVERY` - 1 deltas since
        its last whole row or none this process wrote — and its version."""
        mark = self._mark
        version = new.size
        deltas: dict[NodeId, int] = {}  # the new counts of the tiles written
        tiles: list[tuple[bytes, int, bool, bytes]] = []
        # In tile order: each insert lands next to the previous one in the table's B-tree.
        for tile, delta in sorted(tile_deltas(update.nodes).items()):
            count = self._deltas.get(tile)
            if count is not None and count < WHOLE_EVERY - 1:
                tiles.append((encode_position(tile), version, False, delta))
                deltas[tile] = count + 1
            else:
                tiles.append((encode_position(tile), version, True, encode_tile(tile, nodes)))
                # A tile new to this process starts at an offset of its own: the whole rows
                # of the tiles every checkpoint touches are spread over the checkpoints.
                deltas[tile] = tile % WHOLE_EVERY if count is None else 0
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
            if tiles:
                connection.exec_driver_sql(_INSERT_TILES.format(m=mark), tiles)
            connection.execute(
                _VERSIONS.insert().values(
                    size=new.size, root=new.root, depth=new.depth, created_at=now()
                )
            )
        self._deltas.update(deltas)
