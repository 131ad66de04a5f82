"""Consent version 2 (issue 17, docs/upgrading.md): the signed grants the service keeps off
chain and commits on chain (``consent_grants``), keyed by their commitment.

The table starts empty: a store made before holds version-1 grants only, which stay on the
version-1 ConsentRegistry (the ``grants`` cache is unchanged).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_grants",
        sa.Column("commitment", sa.LargeBinary(length=32), nullable=False),
        sa.Column("patient", sa.String(length=42), nullable=False),
        sa.Column("grantee", sa.String(length=42), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("committed_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("commitment"),
    )
    with op.batch_alter_table("consent_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_grants_patient"), ["patient"], unique=False)
        batch_op.create_index(batch_op.f("ix_consent_grants_grantee"), ["grantee"], unique=False)
        batch_op.create_index(batch_op.f("ix_consent_grants_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("consent_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_grants_state"))
        batch_op.drop_index(batch_op.f("ix_consent_grants_grantee"))
        batch_op.drop_index(batch_op.f("ix_consent_grants_patient"))
    op.drop_table("consent_grants")
