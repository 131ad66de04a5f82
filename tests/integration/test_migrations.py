"""The Alembic migrations build exactly the schema the table models describe.

A fresh database is migrated to ``head`` and compared with ``SQLModel.metadata`` by
alembic's own autogenerate comparison (:func:`alembic.autogenerate.compare_metadata`): any
table, column, type, nullability, index or unique constraint that differs is a failure, on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import ledger.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from ledger.store.db import Store
from tests.support.ledgers import store_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with ExitStack() as stack:
        store = Store(store_url(request.param, tmp_path, stack))
        stack.callback(store.dispose)
        store.migrate()
        yield store


def _schema_diff(store: Store) -> list[Any]:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": False}
        )
        return list(compare_metadata(context, SQLModel.metadata))


def test_migrations_build_the_models_schema(migrated: Store) -> None:
    assert _schema_diff(migrated) == []


def _kinds(diffs: list[Any]) -> set[str]:
    """The kinds of difference (``add_column``, ``modify_type``…); column changes come as lists."""
    flat = [d for diff in diffs for d in (diff if isinstance(diff, list) else [diff])]
    return {str(d[0]) for d in flat}


def test_the_comparison_sees_drift(migrated: Store) -> None:
    """The check would fail on drift: a missing column, an extra index, and on PostgreSQL a
    column of another type or nullability and a missing unique constraint."""
    with migrated.engine.begin() as connection:
        connection.execute(sa.text("CREATE INDEX ix_drift ON events (body)"))
        if migrated.is_sqlite:
            connection.execute(sa.text("ALTER TABLE meta RENAME COLUMN value TO value_old"))
        else:
            connection.execute(sa.text("ALTER TABLE meta DROP COLUMN value"))
            connection.execute(
                sa.text("ALTER TABLE events ALTER COLUMN counterparty TYPE varchar(50)")
            )
            connection.execute(sa.text("ALTER TABLE events ALTER COLUMN patient DROP NOT NULL"))
            connection.execute(sa.text("ALTER TABLE events DROP CONSTRAINT events_claim_key_key"))
    expected = {"add_column", "remove_index"}
    if not migrated.is_sqlite:
        expected |= {"modify_type", "modify_nullable", "add_constraint"}
    assert expected <= _kinds(_schema_diff(migrated))
