"""SQLite writers of one process queue on the store's lock (issue 15), and the collector is
tuned for batches (``ledger.gc_tuning``)."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

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
