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
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

import ledger.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from ledger.store.db import Store
from tests.support.ledgers import store_url
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A new, empty database migrated from scratch (not a copy of the tests' template)."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'empty.db'}"
        else:
            url = stack.enter_context(fresh_database())
        store = Store(url)
        stack.callback(store.dispose)
        assert inspect(store.engine).get_table_names() == []
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


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_tests_stores_are_migrated_copies_of_their_own(backend: str, tmp_path: Path) -> None:
    """What tests get from tests.support (a copy of a migrated template) is at head, has the
    models' schema, and is a database of its own: what one test writes, another never sees."""
    with ExitStack() as stack:
        urls = [store_url(backend, tmp_path / name, stack) for name in ("one", "two")]
        assert urls[0] != urls[1]
        stores = [Store(url) for url in urls]
        for store in stores:
            stack.callback(store.dispose)
            assert _schema_diff(store) == []
            with store.engine.connect() as connection:
                head = MigrationContext.configure(connection).get_current_revision()
            assert head == ScriptDirectory.from_config(_alembic_config()).get_current_head()
        stores[0].set_meta("written-by", "one")
        assert (stores[0].get_meta("written-by"), stores[1].get_meta("written-by")) == ("one", None)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "ledger:migrations")
    return config


# --------------------------------------------------------------------------- 0008


def _event_indexes(store: Store) -> dict[str, str]:
    """The indexes of ``events`` by name, with their definition as the database holds it."""
    with store.engine.connect() as connection:
        if store.is_sqlite:
            rows = connection.execute(
                sa.text(
                    "SELECT name, COALESCE(sql, '') FROM sqlite_master "
                    "WHERE type = 'index' AND tbl_name = 'events'"
                )
            )
        else:
            rows = connection.execute(
                sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'events'")
            )
        return {str(name): str(definition) for name, definition in rows}


def _to(store: Store, revision: str, *, down: bool = False) -> None:
    config = _alembic_config()
    with store.engine.connect() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)
        connection.commit()


_ROW = (
    "INSERT INTO events (leaf_index, event_id, event_type, institution, patient, record_ref, "
    "ref_event_id, claim_key, digest, signature, body, occurred_at, received_at, anchor_by, "
    "consent_status, receipt_signature) VALUES (:leaf, :id, 'T', 'I', 'P', NULL, :ref, :key, "
    ":id, :id, '{}', 1, 1, 1, 'c', :id)"
)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_0008_keeps_only_the_event_indexes_queries_use_both_ways(
    backend: str, tmp_path: Path
) -> None:
    """0008 drops the institution index and keeps in the ref_event_id index only the events
    that refer to one; the rows stay, the ingest's lookup still finds them through the index,
    and the downgrade builds the indexes of 0007 back exactly."""
    with ExitStack() as stack:
        stores = []
        for name in ("upgraded", "reference"):
            if backend == "sqlite":
                url = f"sqlite:///{tmp_path / name}.db"
            else:
                url = stack.enter_context(fresh_database())
            store = Store(url)
            stack.callback(store.dispose)
            _to(store, "0007")
            stores.append(store)
        store, reference = stores
        before = _event_indexes(store)
        assert {"ix_events_institution", "ix_events_ref_event_id"} <= set(before)
        referred = bytes(range(32))
        with store.engine.begin() as connection:
            connection.execute(
                sa.text(_ROW), {"leaf": 0, "id": b"\x01" * 32, "ref": None, "key": None}
            )
            connection.execute(
                sa.text(_ROW), {"leaf": 1, "id": b"\x02" * 32, "ref": referred, "key": "k"}
            )

        _to(store, "head")
        after = _event_indexes(store)
        assert "ix_events_institution" not in after
        assert "ref_event_id IS NOT NULL" in after["ix_events_ref_event_id"].replace(
            "(", ""
        ).replace(")", "")
        assert set(before) - set(after) == {"ix_events_institution"}
        assert _schema_diff(store) == []
        lookup = (
            "SELECT leaf_index FROM events WHERE ref_event_id IN (:a, :b) AND claim_key IS NOT NULL"
        )
        with store.engine.connect() as connection:
            found = connection.execute(sa.text(lookup), {"a": referred, "b": b"\x09" * 32}).all()
            assert [tuple(row) for row in found] == [(1,)]
            if store.is_sqlite:
                plan = " ".join(
                    str(row[-1])
                    for row in connection.execute(
                        sa.text("EXPLAIN QUERY PLAN " + lookup), {"a": referred, "b": b"\x09" * 32}
                    )
                )
            else:
                connection.execute(sa.text("SET enable_seqscan = off"))
                plan = " ".join(
                    str(row[0])
                    for row in connection.execute(
                        sa.text("EXPLAIN " + lookup), {"a": referred, "b": b"\x09" * 32}
                    )
                )
            assert "ix_events_ref_event_id" in plan
            count = connection.execute(sa.text("SELECT COUNT(*) FROM events")).scalar_one()
            assert count == 2

        _to(store, "0007", down=True)
        assert _event_indexes(store) == _event_indexes(reference) == before
