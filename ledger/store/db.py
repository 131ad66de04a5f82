"""Engine set-up, migrations and transactions for the store.

SQLite (the default) runs in WAL mode with ``synchronous=FULL`` so that an acknowledged
event survives a crash or power loss; write transactions start with ``BEGIN IMMEDIATE`` so
writers queue for the lock instead of failing half-way. Within one process, writers to one
SQLite file first queue on a :class:`threading.Lock` of that file (woken in turn as each
commits), so that SQLite's busy handler — which sleeps and polls — only arbitrates between
processes. A SQLite write transaction runs with a page cache of its own size
(``write_cache_mib``, put back to SQLite's default when it ends): a batch's inserts touch a
page of each index whose keys are random (eventId, patient, record), thousands of pages, which
SQLite's default cache of about 2 MiB would spill to the WAL and read back within the one
transaction. The WAL is checkpointed into the database every ``wal_autocheckpoint`` pages
rather than SQLite's 1,000 (4 MiB, less than one batch of 1,000 events writes), so that a page
written by several batches is copied into the database once per checkpoint, not once per
batch. Neither changes durability: each commit is still synced (``synchronous=FULL``).
PostgreSQL is used as it is; schema
changes run under an advisory lock so several API processes may start at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Dialect,
    Engine,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    create_engine,
    event,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeEngine

from ledger.errors import LedgerError
from ledger.settings import SQLITE_WAL_AUTOCHECKPOINT, SQLITE_WRITE_CACHE_MIB
from ledger.sqlparams import blob_rows, blobs
from ledger.store.models import MetaRow

#: Advisory lock ids (PostgreSQL) — arbitrary constants, unique to medtrail.
MIGRATION_LOCK_ID = 0x6D7472_01
SEQUENCER_LOCK_ID = 0x6D7472_02

_META = MetaRow.__table__  # type: ignore[attr-defined]

#: How long a writer waits for its turn in this process before the store counts as busy (the
#: busy handler's own bound, ``busy_timeout``, then applies between processes).
WRITE_QUEUE_TIMEOUT = 30.0

#: SQLite: the page cache of a write transaction (MiB; one writer at a time per process)...
WRITE_CACHE_MIB = SQLITE_WRITE_CACHE_MIB
#: ...and SQLite's own default, which readers keep (``PRAGMA cache_size = -2000``: KiB).
_DEFAULT_CACHE_KIB = 2000
#: SQLite: WAL pages written before the committing writer checkpoints them into the database
#: (64 MiB of 4 KiB pages; SQLite's default is 1,000).
WAL_AUTOCHECKPOINT = SQLITE_WAL_AUTOCHECKPOINT

_write_locks: dict[str, threading.RLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(database: str) -> threading.RLock:
    """The one lock of this process's writers to the SQLite file ``database``."""
    key = str(Path(database).resolve()) if database not in ("", ":memory:") else database
    with _write_locks_guard:
        return _write_locks.setdefault(key, threading.RLock())


class StoreError(LedgerError):
    code = "store-unavailable"


class Store:
    """A SQL store reachable at ``url`` (``sqlite:///path`` or ``postgresql+psycopg://…``)."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        write_cache_mib: int = WRITE_CACHE_MIB,
        wal_autocheckpoint: int = WAL_AUTOCHECKPOINT,
    ) -> None:
        """:param write_cache_mib: SQLite: the page cache of a write transaction (MiB).
        :param wal_autocheckpoint: SQLite: WAL pages between checkpoints."""
        if write_cache_mib < 1 or wal_autocheckpoint < 1:
            raise ValueError("write_cache_mib and wal_autocheckpoint must be at least 1")
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self._write_cache_kib = write_cache_mib * 1024
        self._wal_autocheckpoint = wal_autocheckpoint
        self.engine: Engine = self._create_engine(echo)
        #: SQLite: writers of this process queue here (see the module's docstring).
        self._write_queue = _write_lock(self.url.database or "") if self.is_sqlite else None

    def _create_engine(self, echo: bool) -> Engine:
        # Statement errors (logged with their traceback when they become a 500) must not carry
        # the statement's parameters: key hashes, patients' addresses, record references.
        if not self.is_sqlite:
            return create_engine(
                self.url, echo=echo, pool_pre_ping=True, pool_size=10, hide_parameters=True
            )
        database = self.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            self.url,
            echo=echo,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": 30},
            poolclass=NullPool if database in (None, "", ":memory:") else None,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy (not pysqlite) decide when transactions begin.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute(f"PRAGMA wal_autocheckpoint={self._wal_autocheckpoint:d}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
            connection.exec_driver_sql(f"BEGIN {mode}")

        return engine

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot)."""
        try:
            with self.engine.connect() as connection, connection.begin():
                yield connection
        except OperationalError as exc:
            raise StoreError(f"store unavailable: {exc.orig}") from exc

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: committed when the block ends, rolled back on any error."""
        queue = self._write_queue
        if queue is not None and not queue.acquire(timeout=WRITE_QUEUE_TIMEOUT):
            raise StoreError(
                f"store unavailable: busy (no turn to write in {WRITE_QUEUE_TIMEOUT:g} s)"
            )
        try:
            with self.engine.connect() as connection:
                if not self.is_sqlite:
                    with connection.begin():
                        yield connection
                    return
                # Outside the transaction, on the driver's connection (SQLAlchemy would begin
                # one for a statement of its own): the cache grows for this writer only.
                driver = connection.connection.driver_connection
                assert driver is not None
                driver.execute(f"PRAGMA cache_size=-{self._write_cache_kib:d}")
                try:
                    connection = connection.execution_options(sqlite_begin="IMMEDIATE")
                    with connection.begin():
                        yield connection
                finally:
                    # A connection the failure closed goes back to no pool: nothing to put back.
                    with suppress(sqlite3.Error):
                        driver.execute(f"PRAGMA cache_size=-{_DEFAULT_CACHE_KIB:d}")
        except OperationalError as exc:
            raise StoreError(f"store unavailable: {exc.orig}") from exc
        finally:
            if queue is not None:
                queue.release()

    def ping(self) -> bool:
        """Whether the store answers a trivial query."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return True
        except SQLAlchemyError:
            return False

    # -- schema ---------------------------------------------------------------------------

    def migrate(self) -> None:
        """Bring the schema to the latest Alembic revision (idempotent; concurrent-safe)."""
        config = Config()
        config.set_main_option("script_location", "ledger:migrations")
        try:
            with self.engine.connect() as connection:
                if not self.is_sqlite:
                    connection.execute(
                        text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID}
                    )
                    connection.commit()
                try:
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                    connection.commit()
                finally:
                    if not self.is_sqlite:
                        connection.execute(
                            text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID}
                        )
                        connection.commit()
        except OperationalError as exc:
            raise StoreError(f"store unavailable: {exc.orig}") from exc

    # -- meta -----------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.read() as connection:
            return connection.execute(select(_META.c.value).where(_META.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as connection:
            connection.execute(_META.delete().where(_META.c.key == key))
            connection.execute(_META.insert().values(key=key, value=value))

    def dispose(self) -> None:
        self.engine.dispose()


#: Values per ``IN (…)`` list in plain SQL (SQLite's limit is 999 bound parameters in old
#: builds).
IN_CHUNK = 900

#: Runs one plain SQL statement with positional parameters and returns its rows.
RunSql = Callable[[str, tuple[Any, ...]], Iterable[Sequence[Any]]]


def placeholder(dialect: Dialect) -> str:
    """The DB-API driver's positional placeholder: ``?`` (sqlite3) or ``%s`` (psycopg)."""
    return "?" if dialect.paramstyle == "qmark" else "%s"


def select_in(run: RunSql, sql: str, values: Sequence[Any], mark: str) -> list[tuple[Any, ...]]:
    """The rows of plain ``sql`` over ``values``, in ``IN`` lists of at most :data:`IN_CHUNK`:
    ``{marks}`` in ``sql`` becomes a chunk's placeholders (``mark``: :func:`placeholder`).

    The hot paths (ingest, proofs) send their statements to the driver this way: building
    them through SQLAlchemy cost more than running them."""
    rows: list[tuple[Any, ...]] = []
    for first in range(0, len(values), IN_CHUNK):
        chunk = tuple(values[first : first + IN_CHUNK])
        rows += [tuple(row) for row in run(sql.format(marks=",".join([mark] * len(chunk))), chunk)]
    return rows


def select_any(connection: Connection, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
    """The rows of plain ``sql`` in which ``{any}``, written after a column, matches any of
    ``values`` (no rows when there are none).

    PostgreSQL gets ``= ANY(%b)`` over one array sent in binary: a short statement psycopg
    parses once and prepares, where ``IN`` lists of a thousand placeholders were parsed again,
    in Python, on every call; and binary, because psycopg writes a ``bytea`` array in text
    format value by value in Python (0.26 µs per value in binary, 2.35 in text, 1.8 to 2.6 as
    ``IN`` lists: issue 15). SQLite gets ``IN (?, …)`` lists (:func:`select_in`), blobs as
    ``bytearray`` (:mod:`ledger.sqlparams`)."""
    if not values:
        return []
    if connection.dialect.name == "postgresql":
        rows = connection.exec_driver_sql(sql.format(any="= ANY(%b)"), (list(values),))
        return [tuple(row) for row in rows]
    mark = placeholder(connection.dialect)
    found = sql.format(any="IN ({marks})")
    return select_in(connection.exec_driver_sql, found, blobs(values), mark)


#: The PostgreSQL type of each SQLAlchemy column type a binary ``COPY`` writes.
_COPY_TYPES: tuple[tuple[type[TypeEngine[Any]], str], ...] = (
    (BigInteger, "int8"),
    (Integer, "int4"),
    (LargeBinary, "bytea"),
    (Text, "text"),
    (String, "varchar"),
)


def _copy_type(column: Column[Any]) -> str:
    for kind, name in _COPY_TYPES:
        if isinstance(column.type, kind):
            return name
    raise TypeError(f"no COPY type for column {column.name} ({column.type})")


_INSERT = "INSERT INTO {table} ({columns}) VALUES ({marks})"
_COPY = "COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"


def insert_rows(
    connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` (values in the order of ``columns``) into ``table``, inside the
    connection's transaction, in one statement.

    PostgreSQL gets a binary ``COPY`` (a quarter of the client CPU of psycopg's pipelined
    ``executemany``, issue 15); its errors are raised as SQLAlchemy's, as a statement's
    would be (``IntegrityError`` for a broken constraint). SQLite gets ``executemany``, its
    blobs as ``bytearray`` (:mod:`ledger.sqlparams`: 1 to 2 µs less per blob)."""
    if not rows:
        return
    names = ", ".join(columns)
    if connection.dialect.name != "postgresql":
        marks = ", ".join([placeholder(connection.dialect)] * len(columns))
        insert = _INSERT.format(table=table.name, columns=names, marks=marks)
        blobs_at = [
            i for i, name in enumerate(columns) if isinstance(table.c[name].type, LargeBinary)
        ]
        connection.exec_driver_sql(insert, blob_rows(rows, blobs_at))  # blobs bound at C speed
        return
    statement = _COPY.format(table=table.name, columns=names)
    types = [_copy_type(table.c[name]) for name in columns]
    dbapi = connection.dialect.loaded_dbapi
    driver = connection.connection.driver_connection
    assert driver is not None
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)
    except dbapi.Error as exc:
        raise DBAPIError.instance(
            statement,
            None,
            exc,
            dbapi.Error,
            hide_parameters=True,
            dialect=connection.dialect,
        ) from exc


def now() -> int:
    """Current unix time in seconds (the one clock the store uses)."""
    return int(time.time())
