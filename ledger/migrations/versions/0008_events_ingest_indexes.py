"""Only the indexes of ``events`` a query needs (issue 15: each index is work for every event
ingested):

* ``ix_events_institution`` is dropped: no query can use it. Every filter on ``institution``
  is "signed **or** named in" (``institution = ? OR counterparty = ?``: the search's
  ``institution`` filter, an institution's view of the log, ``ledger.visibility``), and an
  ``OR`` one arm of which has no index is answered by another plan on SQLite and PostgreSQL
  alike (``EXPLAIN`` says so; the page query walks the primary key);
* ``ix_events_ref_event_id`` keeps only the rows that refer to an event (dispenses, claims,
  payments): a partial index ``WHERE ref_event_id IS NOT NULL``. The record accesses that are
  the bulk of the log held a null key each in it, for nothing: the two queries on the column
  (``ref_event_id IN (…)`` / ``= ANY(…)`` in ingest, and the refs of a page's events in
  ``ledger.service``) can never match a null, and both databases use the partial index for
  them (a comparison implies ``IS NOT NULL``).

Nothing is lost: the downgrade builds both indexes back as they were.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REFERS = sa.text("ref_event_id IS NOT NULL")


def upgrade() -> None:
    op.drop_index("ix_events_institution", table_name="events")
    op.drop_index("ix_events_ref_event_id", table_name="events")
    op.create_index(
        "ix_events_ref_event_id",
        "events",
        ["ref_event_id"],
        unique=False,
        sqlite_where=_REFERS,
        postgresql_where=_REFERS,
    )


def downgrade() -> None:
    op.drop_index("ix_events_ref_event_id", table_name="events")
    op.create_index("ix_events_ref_event_id", "events", ["ref_event_id"], unique=False)
    op.create_index("ix_events_institution", "events", ["institution"], unique=False)
