"""Batch receipts (issue 15, docs/wire.md "Receipts"): the operator signs one
``ReceiptBatch`` per ingested batch over the RFC 9162 root of the batch's receipts, and each
event keeps its place in that batch.

* ``events.receipt_batch_first`` / ``receipt_batch_count``: the batch's leaves;
* ``events.receipt_batch_root``: the root the operator signed;
* ``events.receipt_path``: the receipt's path to the batch's root (32-byte hashes, joined);
  ``events.receipt_signature`` then holds the batch's signature.

The four are null for the rows stored before: their ``receipt_signature`` is the per-event
``Receipt`` signature, which stays valid (docs/upgrading.md).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("receipt_batch_first", sa.BigInteger(), nullable=True))
    op.add_column("events", sa.Column("receipt_batch_count", sa.Integer(), nullable=True))
    op.add_column("events", sa.Column("receipt_batch_root", sa.LargeBinary(32), nullable=True))
    op.add_column("events", sa.Column("receipt_path", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("receipt_path")
        batch.drop_column("receipt_batch_root")
        batch.drop_column("receipt_batch_count")
        batch.drop_column("receipt_batch_first")
