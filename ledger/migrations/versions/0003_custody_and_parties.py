"""Custody fixed by a record's first event, and each event's counterparty.

* ``events.counterparty``: the other institution an event names (an access's custodian, a
  claim's insurer, a payment's payee), so that "the events an institution took part in" is a
  query (:mod:`ledger.visibility`). Filled in for the events already stored.
* ``records.custodian``: fixed by the record's first event — an access's ``custodian``, or
  the hospital that issued a prescription (issue 12, item 2). Records first seen in a
  prescription had none, and a later access could name any institution; every record's
  custodian is recomputed from its first event.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 5000


def _counterparty(event_type: str, body: dict[str, object]) -> str | None:
    if event_type == "RecordAccess":
        custodian = body.get("custodian")
        return None if custodian == body.get("institution") else str(custodian)
    if event_type == "InsuranceClaim":
        return str(body["insurer"])
    if event_type == "InsurancePayment":
        return str(body["payee"])
    return None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("counterparty", sa.String(length=42), nullable=True))

    bind = op.get_bind()
    events = sa.table(
        "events",
        sa.column("leaf_index", sa.BigInteger),
        sa.column("event_type", sa.String),
        sa.column("institution", sa.String),
        sa.column("record_ref", sa.LargeBinary),
        sa.column("body", sa.Text),
        sa.column("counterparty", sa.String),
    )
    records = sa.table(
        "records",
        sa.column("record_ref", sa.LargeBinary),
        sa.column("custodian", sa.String),
    )
    first_custodian: dict[bytes, str] = {}
    last = -1
    while True:
        rows = bind.execute(
            sa.select(
                events.c.leaf_index,
                events.c.event_type,
                events.c.institution,
                events.c.record_ref,
                events.c.body,
            )
            .where(events.c.leaf_index > last)
            .order_by(events.c.leaf_index)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        updates = []
        for leaf, event_type, institution, record_ref, body_text in rows:
            body = json.loads(body_text)
            other = _counterparty(event_type, body)
            if other is not None:
                updates.append({"leaf": leaf, "other": other})
            if record_ref is not None and bytes(record_ref) not in first_custodian:
                if event_type == "RecordAccess":
                    first_custodian[bytes(record_ref)] = str(body["custodian"])
                elif event_type == "PrescriptionIssued":
                    first_custodian[bytes(record_ref)] = institution
        if updates:
            bind.execute(
                events.update()
                .where(events.c.leaf_index == sa.bindparam("leaf"))
                .values(counterparty=sa.bindparam("other")),
                updates,
            )
        last = rows[-1][0]
    for ref, custodian in first_custodian.items():
        bind.execute(
            records.update().where(records.c.record_ref == ref).values(custodian=custodian)
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("counterparty")
