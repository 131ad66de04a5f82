"""Fresh, already migrated stores for tests: a copy of a template per test.

Running the Alembic migrations costs a few hundred milliseconds per database (more on
PostgreSQL, with the database's creation and removal); most tests need a migrated store and
nothing else. Each process migrates one template per backend, once, and every test gets its
own copy of it:

* SQLite: a migrated file, copied to the test's directory (the WAL checkpointed first, so the
  file is the whole database);
* PostgreSQL: a migrated template database, copied by the server
  (``CREATE DATABASE … TEMPLATE …``); the copies are dropped in the background and waited
  for at exit, the template last.

A copy is still migrated by :meth:`Ledger.open <ledger.service.Ledger.open>` as usual (a
no-op at head). Tests of the migrations themselves must start from an empty database
(:func:`tests.support.postgres.fresh_database`, a new SQLite path).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from ledger.store.db import Store
from tests.support.postgres import SKIP_REASON, postgres_url

_lock = threading.Lock()
_sqlite_template: Path | None = None
_pg_template: str | None = None
_pg_admin: Engine | None = None
_dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-test-db")
_drops: list[Future[None]] = []


def _migrate(url: str) -> None:
    store = Store(url)
    try:
        store.migrate()
        if store.is_sqlite:
            with store.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.dispose()


# --------------------------------------------------------------------------- SQLite


def _sqlite_template_file() -> Path:
    global _sqlite_template
    with _lock:
        if _sqlite_template is None:
            directory = Path(tempfile.mkdtemp(prefix="medtrail-template-"))
            atexit.register(shutil.rmtree, directory, True)
            path = directory / "template.db"
            _migrate(f"sqlite:///{path}")
            _sqlite_template = path
        return _sqlite_template


def migrated_sqlite(path: Path) -> str:
    """A migrated SQLite database at ``path`` (a copy of the template); its URL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_sqlite_template_file(), path)
    return f"sqlite:///{path}"


# --------------------------------------------------------------------------- PostgreSQL


def _admin() -> Engine:
    global _pg_admin
    if _pg_admin is None:
        base = postgres_url()
        assert base is not None
        _pg_admin = create_engine(make_url(base), isolation_level="AUTOCOMMIT")
    return _pg_admin


def _drop(name: str) -> None:
    with _admin().connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _pg_template_name() -> str:
    global _pg_template
    with _lock:
        if _pg_template is None:
            base = postgres_url()
            assert base is not None
            name = f"medtrail_template_{uuid.uuid4().hex[:12]}"
            with _admin().connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            atexit.register(_drop_all, name)
            _migrate(make_url(base).set(database=name).render_as_string(hide_password=False))
            _pg_template = name
        return _pg_template


def _drop_all(template: str) -> None:
    for future in _drops:
        future.exception()  # wait; a failed drop leaves a database behind, nothing worse
    _drop(template)
    if _pg_admin is not None:
        _pg_admin.dispose()


@contextmanager
def migrated_postgres() -> Iterator[str]:
    """A new migrated PostgreSQL database (a copy of the template); its URL. Skips the test
    when PostgreSQL is not configured."""
    base = postgres_url()
    if base is None:
        pytest.skip(SKIP_REASON)
    template = _pg_template_name()
    name = f"medtrail_test_{uuid.uuid4().hex[:12]}"
    with _admin().connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        _drops.append(_dropper.submit(_drop, name))
