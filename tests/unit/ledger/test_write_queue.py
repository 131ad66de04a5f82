"""SQLite writers of one process queue on the store's lock (issue 15), and the collector is
tuned for batches (``ledger.gc_tuning``)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from ledger import gc_tuning
from ledger.store import db as store_db
from ledger.store.db import Store, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'queue.db'}")
    with s.write() as connection:
        connection.execute(text("CREATE TABLE t (n INTEGER)"))
    yield s
    s.engine.dispose()


def test_a_second_writer_waits_its_turn_then_commits(store: Store) -> None:
    first_in = threading.Event()
    release = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        with store.write() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
            first_in.set()
            release.wait(10)

    def second() -> None:
        try:
            with store.write() as connection:
                connection.execute(text("INSERT INTO t VALUES (2)"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    a = threading.Thread(target=first)
    a.start()
    assert first_in.wait(10)
    b = threading.Thread(target=second)
    b.start()
    release.set()
    a.join(10)
    b.join(30)
    assert errors == []
    with store.read() as connection:
        rows = [r[0] for r in connection.execute(text("SELECT n FROM t ORDER BY rowid"))]
    assert rows == [1, 2]


def test_stores_on_one_file_share_the_queue(store: Store) -> None:
    other = Store(str(store.url))
    try:
        assert other._write_queue is store._write_queue
    finally:
        other.engine.dispose()


def test_a_writer_that_gets_no_turn_is_told_the_store_is_busy(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "WRITE_QUEUE_TIMEOUT", 0.05)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with store.write():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with pytest.raises(StoreError, match="busy"), store.write():
            pass  # pragma: no cover - never entered
    finally:
        release.set()
        holder.join(10)


def test_a_write_inside_a_write_of_the_same_thread_does_not_deadlock_on_the_queue(
    store: Store,
) -> None:
    queue = store._write_queue
    assert queue is not None
    with store.write():
        # The same thread takes the queue again (re-entrant) rather than waiting for ever.
        assert queue.acquire(timeout=0.01)
        queue.release()


def test_gc_tuning_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        gc_tuning.tune()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == gc_tuning.GEN0_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


# -- the writer's page cache and the WAL's checkpoints (issue 15) ---------------------------


def _pragma(connection: Any, name: str) -> int:
    return int(connection.exec_driver_sql(f"PRAGMA {name}").scalar())


def test_a_write_transaction_has_its_own_page_cache_and_gives_it_back(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'cache.db'}", write_cache_mib=48)
    try:
        with s.write() as connection:
            assert _pragma(connection, "cache_size") == -48 * 1024
            connection.execute(text("CREATE TABLE t (n INTEGER)"))
            writer: Any = connection.connection.driver_connection
        # The connection goes back to the pool (and to readers) with SQLite's default.
        assert writer.execute("PRAGMA cache_size").fetchone()[0] == -2000
        with s.read() as connection:
            assert _pragma(connection, "cache_size") == -2000
    finally:
        s.engine.dispose()


def test_a_failed_write_gives_the_cache_back_and_stores_nothing(store: Store) -> None:
    writers: list[Any] = []

    def refused_half_way() -> None:
        with store.write() as connection:
            connection.execute(text("INSERT INTO t VALUES (7)"))
            writers.append(connection.connection.driver_connection)
            raise RuntimeError("refused half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        refused_half_way()
    assert writers[0].execute("PRAGMA cache_size").fetchone()[0] == -2000
    with store.read() as connection:
        assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 0


def test_every_connection_checkpoints_the_wal_at_the_configured_size(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'wal.db'}", wal_autocheckpoint=5000)
    try:
        with s.read() as reader, s.write() as writer:
            assert _pragma(reader, "wal_autocheckpoint") == 5000
            assert _pragma(writer, "wal_autocheckpoint") == 5000
            assert str(writer.exec_driver_sql("PRAGMA journal_mode").scalar()) == "wal"
            assert _pragma(writer, "synchronous") == 2  # FULL: durability unchanged
    finally:
        s.engine.dispose()


def test_the_default_store_uses_the_service_defaults(store: Store) -> None:
    with store.write() as connection:
        assert _pragma(connection, "cache_size") == -store_db.WRITE_CACHE_MIB * 1024
        assert _pragma(connection, "wal_autocheckpoint") == store_db.WAL_AUTOCHECKPOINT


@pytest.mark.parametrize(("cache", "checkpoint"), [(0, 1000), (64, 0)])
def test_a_store_refuses_sizes_below_one(tmp_path: Path, cache: int, checkpoint: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Store(
            f"sqlite:///{tmp_path / 'bad.db'}", write_cache_mib=cache, wal_autocheckpoint=checkpoint
        )


@pytest.mark.parametrize(
    ("variable", "value"),
    [("MEDTRAIL_SQLITE_WRITE_CACHE_MIB", "0"), ("MEDTRAIL_SQLITE_WAL_AUTOCHECKPOINT", "-5")],
)
def test_settings_refuse_a_cache_or_checkpoint_below_one(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    from pydantic import ValidationError

    from ledger.settings import Settings

    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("MEDTRAIL_").lower()):
        Settings()
