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


def _two_stores_at(
    revision: str, backend: str, tmp_path: Path, stack: ExitStack
) -> tuple[Store, Store]:
    """Two new databases migrated to ``revision``: one to move on from it, one to compare with."""
    stores = []
    for name in ("upgraded", "reference"):
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / name}.db"
        else:
            url = stack.enter_context(fresh_database())
        store = Store(url)
        stack.callback(store.dispose)
        _to(store, revision)
        stores.append(store)
    return stores[0], stores[1]


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
        store, reference = _two_stores_at("0007", backend, tmp_path, stack)
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

        _to(store, "0008")
        after = _event_indexes(store)
        assert "ix_events_institution" not in after
        assert "ref_event_id IS NOT NULL" in after["ix_events_ref_event_id"].replace(
            "(", ""
        ).replace(")", "")
        assert set(before) - set(after) == {"ix_events_institution"}
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


# --------------------------------------------------------------------------- 0009 and 0010


def _plan(store: Store, query: sa.Select[Any]) -> str:
    """What the database says it will do for ``query``, its values bound as the application
    binds them (PostgreSQL told to avoid scanning the table, so that a usable index shows
    even in a table of a few rows)."""
    compiled = query.compile(store.engine)
    with store.engine.connect() as connection:
        if store.is_sqlite:
            positional = tuple(compiled.params[name] for name in compiled.positiontup or ())
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), positional)
            return " ".join(str(row[-1]) for row in rows)
        connection.execute(sa.text("SET enable_seqscan = off"))
        rows = connection.exec_driver_sql("EXPLAIN " + str(compiled), dict(compiled.params))
        return " ".join(str(row[0]) for row in rows)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_0009_and_its_undoing_0010_keep_the_rows_both_ways(backend: str, tmp_path: Path) -> None:
    """0009 keyed the trail indexes by a prefix of the value; 0010 builds 0008's whole-value
    indexes back, exactly, and a trail query uses them again; the rows stay throughout, and
    the downgrades go back through 0009's indexes to 0008's."""
    from ledger.store.models import EventRow

    prefixed = {"ix_events_record_prefix_leaf_index", "ix_events_patient_prefix_leaf_index"}
    whole = {"ix_events_record_ref_leaf_index", "ix_events_patient_leaf_index"}
    with ExitStack() as stack:
        store, reference = _two_stores_at("0008", backend, tmp_path, stack)
        at_0008 = _event_indexes(store)
        assert whole <= set(at_0008)
        record, patient = b"\x07" * 32, "0x" + "ab" * 20
        row = _ROW.replace("'P', NULL", ":patient, :record")
        with store.engine.begin() as connection:
            for leaf in range(3):
                connection.execute(
                    sa.text(row),
                    {
                        "leaf": leaf,
                        "id": bytes([leaf + 1]) * 32,
                        "ref": None,
                        "key": None,
                        "patient": patient,
                        "record": record if leaf != 1 else b"\x08" * 32,
                    },
                )

        _to(store, "0009")
        assert set(at_0008) - set(_event_indexes(store)) == whole
        assert set(_event_indexes(store)) - set(at_0008) == prefixed

        _to(store, "head")
        assert _event_indexes(store) == at_0008
        assert _schema_diff(store) == []
        events = EventRow.__table__  # type: ignore[attr-defined]
        for column, value, index_name in (
            (events.c.record_ref, record, "ix_events_record_ref_leaf_index"),
            (events.c.patient, patient, "ix_events_patient_leaf_index"),
        ):
            query = (
                sa.select(events.c.leaf_index)
                .where(column == value, events.c.leaf_index > -1)
                .order_by(events.c.leaf_index)
            )
            with store.engine.connect() as connection:
                found = connection.execute(query).scalars().all()
            assert found == ([0, 2] if column is events.c.record_ref else [0, 1, 2])
            assert index_name in _plan(store, query)

        _to(store, "0009", down=True)
        assert set(_event_indexes(store)) - set(at_0008) == prefixed
        _to(store, "0008", down=True)
        assert _event_indexes(store) == _event_indexes(reference) == at_0008
        with store.engine.connect() as connection:
            assert connection.execute(sa.text("SELECT COUNT(*) FROM events")).scalar_one() == 3
