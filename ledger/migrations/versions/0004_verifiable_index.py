"""The verifiable index (issue 16, docs/index.md): its versions, trie nodes and list frontiers,
and each checkpoint's index root.

* ``index_versions``: the index at each checkpoint size (root, deepest leaf);
* ``index_nodes``: the trie's nodes by position and version;
* ``index_frontiers``: each key's list frontier at the index's head;
* ``checkpoints.index_root``: the index root a checkpoint commits with the log's root (null
  for the rows of a store made before: its log was anchored on a version-1 AuditLog, which
  cannot take index roots — see the README's upgrade note).

The tables start empty: the anchor worker builds the index from the events table before the
next checkpoint.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "index_versions",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("size"),
    )
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
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("index_root", sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_column("index_root")
    op.drop_table("index_frontiers")
    with op.batch_alter_table("index_nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_index_nodes_version"))
    op.drop_table("index_nodes")
    op.drop_table("index_versions")
