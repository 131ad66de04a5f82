"""The verifiable index stored as tiles (issue 16's upkeep budget, ledger/index_store.py), and
the events indexed for paging a trail:

* ``index_tiles`` replaces ``index_nodes``: a row per tile of 8 trie levels that an update
  changed, not per node (about one row per event at checkpoints of 10^4 events, where a row
  per node was nine), holding the nodes it wrote (a delta) or, every few rows, the whole
  tile; ``WITHOUT ROWID`` on SQLite, clustered on ``(version, tile)`` (an update's rows appended
  together), indexed on ``(tile, version)``;
* ``index_frontiers`` is dropped: the anchor worker rebuilds each key's list frontier from
  the events table when it loads the index, and keeps it in memory;
* ``events``: ``(record_ref, leaf_index)`` and ``(patient, leaf_index)`` replace the indexes on
  ``record_ref`` and ``patient`` alone: a page of a trail (``record_ref = ? AND leaf_index > ?
  ORDER BY leaf_index LIMIT n``) is one range of the index, not every event of the record
  read and sorted again for each page.

The existing index is kept: each stored version's node rows are replayed in version order
and every tile they changed is written, whole, at that version — the trie at each retained
version reads the same. The downgrade writes each tile row's nodes back as node rows at its
version and rebuilds the frontiers from the events.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import groupby

import sqlalchemy as sa
from alembic import op

from ledger import index

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TILES = sa.table(
    "index_tiles",
    sa.column("tile", sa.LargeBinary()),
    sa.column("version", sa.BigInteger()),
    sa.column("whole", sa.Boolean()),
    sa.column("nodes", sa.LargeBinary()),
)
_NODES = sa.table(
    "index_nodes",
    sa.column("position", sa.LargeBinary()),
    sa.column("version", sa.BigInteger()),
    sa.column("node", sa.LargeBinary()),
)
_FRONTIERS = sa.table(
    "index_frontiers",
    sa.column("key", sa.LargeBinary()),
    sa.column("frontier", sa.LargeBinary()),
)


#: Node rows fetched at a time while the old index is replayed.
_STREAM_ROWS = 10_000

_TRAIL_INDEXES = (
    ("ix_events_record_ref", "ix_events_record_ref_leaf_index", "record_ref"),
    ("ix_events_patient", "ix_events_patient_leaf_index", "patient"),
)


# --------------------------------------------------------------------------- the tile format
# The stored form of the index's tiles as this revision writes and reads them, frozen here
# rather than imported from ``ledger.index_store``: a later change of the live codec must come
# with a migration of its own, not change what this one does (a test holds the two equal
# while they are). ``ledger.index``'s keys and frontiers are the index's protocol
# (docs/index.md, pinned by its test vectors) and are imported.

_TILE_HEIGHT = 8
_LEAF_FLAG = 0x8000
_LEAF_BIT = 1 << (_TILE_HEIGHT + 1)
_HEADERS = [
    (local & (_LEAF_BIT - 1) | (_LEAF_FLAG if local & _LEAF_BIT else 0)).to_bytes(2, "big")
    for local in range(2 * _LEAF_BIT)
]
_HASH_SIZE = 32
_LEAF_SIZE = 3 * 32 + 8


def encode_position(node: int) -> bytes:
    """A trie position as stored: its heap number, big-endian, in as few bytes as it needs."""
    return node.to_bytes((node.bit_length() + 7) // 8, "big")


def decode_position(data: bytes) -> int:
    return int.from_bytes(data, "big")


def _tile_of(node: int) -> int:
    depth = node.bit_length() - 1
    return node >> ((depth - 1) % _TILE_HEIGHT + 1) if depth else 1


def _encode_tile(tile: int, nodes: Mapping[int, bytes]) -> bytes:
    """Every node of ``nodes`` in ``tile``: a 2-byte header (its position relative to the
    tile's root, bit 15 set for a leaf) and the node, walking down from the tile's root."""
    parts: list[bytes] = []
    stack = [(1, 1)] if tile == 1 else [(tile << 1, 2), (tile << 1 | 1, 3)]
    bottom = 1 << _TILE_HEIGHT
    while stack:
        position, local = stack.pop()
        node = nodes.get(position)
        if node is None:
            continue
        if len(node) == _HASH_SIZE:
            parts += (_HEADERS[local], node)
            if local < bottom:
                stack.append((position << 1 | 1, local << 1 | 1))
                stack.append((position << 1, local << 1))
        else:
            parts += (_HEADERS[local | _LEAF_BIT], node)
    return b"".join(parts)


def decode_tile(tile: int, data: bytes) -> dict[int, bytes]:
    """The nodes of a stored tile, by position."""
    found: dict[int, bytes] = {}
    at, end = 0, len(data)
    while at < end:
        if at + 2 > end:
            raise ValueError("a stored index tile is cut short")
        header = int.from_bytes(data[at : at + 2], "big")
        local = header & 0x7FFF
        width = _LEAF_SIZE if header & _LEAF_FLAG else _HASH_SIZE
        if not 0 < local < 2 << _TILE_HEIGHT or (local == 1 and tile != 1):
            raise ValueError("a stored index tile names a position outside it")
        level = local.bit_length() - 1
        node = data[at + 2 : at + 2 + width]
        if len(node) != width:
            raise ValueError("a stored index tile is cut short")
        found[(tile << level) | (local ^ (1 << level))] = node
        at += 2 + width
    return found


def tile_rows(nodes: Mapping[int, bytes], written: Iterable[int]) -> list[tuple[int, bytes]]:
    """The tiles the positions ``written`` fall in, each encoded whole from ``nodes``."""
    return [(tile, _encode_tile(tile, nodes)) for tile in sorted({_tile_of(p) for p in written})]


# --------------------------------------------------------------------------- the migration


def upgrade() -> None:
    for single, composite, column in _TRAIL_INDEXES:
        op.create_index(composite, "events", [column, "leaf_index"], unique=False)
        op.drop_index(single, table_name="events")
    op.create_table(
        "index_tiles",
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tile", sa.LargeBinary(length=33), nullable=False),
        sa.Column("whole", sa.Boolean(), nullable=False),
        sa.Column("nodes", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("version", "tile"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_index_tiles_tile_version", "index_tiles", ["tile", "version"])
    connection = op.get_bind()
    trie: dict[int, bytes] = {}  # the latest node at each position: the trie, not its history
    # Streamed (a server-side cursor on PostgreSQL): one version's rows held at a time.
    rows = connection.execute(
        sa.select(_NODES.c.version, _NODES.c.position, _NODES.c.node)
        .order_by(_NODES.c.version, _NODES.c.position)
        .execution_options(yield_per=_STREAM_ROWS)
    )
    for version, group in groupby(rows, key=lambda row: int(row[0])):
        written = []
        for _, position, node in group:
            at = decode_position(bytes(position))
            trie[at] = bytes(node)
            written.append(at)
        tiles = [
            {"tile": encode_position(tile), "version": version, "whole": True, "nodes": data}
            for tile, data in tile_rows(trie, written)
        ]
        connection.execute(_TILES.insert(), tiles)
    with op.batch_alter_table("index_nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_index_nodes_version"))
    op.drop_table("index_nodes")
    op.drop_table("index_frontiers")


def downgrade() -> None:
    op.create_table(
        "index_nodes",
        sa.Column("position", sa.LargeBinary(length=33), nullable=False),
        sa.Column("version", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node", sa.LargeBinary(length=104), nullable=False),
        sa.PrimaryKeyConstraint("position", "version"),
    )
    with op.batch_alter_table("index_nodes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_index_nodes_version"), ["version"], unique=False)
    op.create_table(
        "index_frontiers",
        sa.Column("key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    connection = op.get_bind()
    for tile, version, data in connection.execute(
        sa.select(_TILES.c.tile, _TILES.c.version, _TILES.c.nodes)
    ):
        nodes = decode_tile(decode_position(bytes(tile)), bytes(data))
        if nodes:
            connection.execute(
                _NODES.insert(),
                [
                    {"position": encode_position(p), "version": int(version), "node": node}
                    for p, node in nodes.items()
                ],
            )
    head = connection.execute(sa.text("SELECT MAX(size) FROM index_versions")).scalar()
    if head:
        events = connection.execute(
            sa.text(
                "SELECT patient, record_ref FROM events WHERE leaf_index < :size "
                "ORDER BY leaf_index"
            ),
            {"size": int(head)},
        )
        keys = (
            index.keys_of(patient, None if ref is None else bytes(ref)) for patient, ref in events
        )
        lists, _ = index.batch_of(0, keys)
        frontiers = index.frontiers_of(lists)
        if frontiers:
            connection.execute(
                _FRONTIERS.insert(), [{"key": k, "frontier": f} for k, f in frontiers.items()]
            )
    op.drop_index("ix_index_tiles_tile_version", table_name="index_tiles")
    op.drop_table("index_tiles")
    for single, composite, column in _TRAIL_INDEXES:
        op.create_index(single, "events", [column], unique=False)
        op.drop_index(composite, table_name="events")
