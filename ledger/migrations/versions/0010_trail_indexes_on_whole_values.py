"""The trail indexes keyed by the whole value again: 0009 undone (issue 15).

0009 keyed the record and patient indexes of ``events`` by a prefix of the value
(``substr(record_ref, 1, 8)``, ``substr(patient, 3, 16)``). A submitter chooses both values: an
institution can give any number of its own records a reference that starts as another record's
does, and name patients whose addresses start as another patient's. Every page of the other
record's or patient's trail then walks all of those rows through the shared prefix (measured: a
page 0.03 ms with the whole-value index, 16 ms behind 200,000 such rows). The whole-value
indexes, which no submitter can crowd, are built back; 0009's saving (1.6 to 3 µs of CPU per
event ingested on SQLite, the two indexes at half their bytes) is not worth a slowdown one party
can aim at another's trail (benchmarks/ANALYSIS.md, issue 15, part 6).

Nothing is lost: the indexes are built from the rows; the downgrade builds 0009's back.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 23:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PREFIXED = (
    ("ix_events_record_prefix_leaf_index", "substr(record_ref, 1, 8)"),
    ("ix_events_patient_prefix_leaf_index", "substr(patient, 3, 16)"),
)
_WHOLE = (
    ("ix_events_record_ref_leaf_index", "record_ref"),
    ("ix_events_patient_leaf_index", "patient"),
)


def upgrade() -> None:
    for name, _expression in _PREFIXED:
        op.drop_index(name, table_name="events")
    for name, column in _WHOLE:
        op.create_index(name, "events", [column, "leaf_index"], unique=False)


def downgrade() -> None:
    for name, _column in _WHOLE:
        op.drop_index(name, table_name="events")
    for name, expression in _PREFIXED:
        op.create_index(name, "events", [sa.text(expression), "leaf_index"], unique=False)
