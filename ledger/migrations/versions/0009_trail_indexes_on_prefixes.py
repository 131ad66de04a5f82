"""The trail indexes keyed by a prefix of the value (issue 15: ``ledger.store.models.Prefix``).

``ix_events_record_ref_leaf_index`` (``record_ref``, 32 random bytes) and
``ix_events_patient_leaf_index`` (``patient``, a 42-character address) become indexes on an
expression: the reference's first 8 bytes and the address's first 16 hex digits, each with
``leaf_index``. Every event put a long random key into each of them; the short key is as
selective (64 bits), the indexes take about half the bytes, and a batch of random inserts
dirties fewer pages, which SQLite writes whole to its WAL at each commit. The queries match
the prefix, then the whole value.

Nothing is lost: the indexes are built from the rows, and the downgrade builds the old ones
back as they were.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 22:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelt out, not imported: a migration keeps the schema of its day.
_PREFIXED = (
    ("ix_events_record_prefix_leaf_index", "substr(record_ref, 1, 8)"),
    ("ix_events_patient_prefix_leaf_index", "substr(patient, 3, 16)"),
)
_WHOLE = (
    ("ix_events_record_ref_leaf_index", "record_ref"),
    ("ix_events_patient_leaf_index", "patient"),
)


def upgrade() -> None:
    for name, _column in _WHOLE:
        op.drop_index(name, table_name="events")
    for name, expression in _PREFIXED:
        op.create_index(name, "events", [sa.text(expression), "leaf_index"], unique=False)


def downgrade() -> None:
    for name, _expression in _PREFIXED:
        op.drop_index(name, table_name="events")
    for name, column in _WHOLE:
        op.create_index(name, "events", [column, "leaf_index"], unique=False)
