"""Blobs bound as ``bytearray`` (``ledger.sqlparams``, issues 15 and 18): the same values
stored, matched and refused as duplicates as when bound as ``bytes``."""

from __future__ import annotations

import sqlite3

import pytest

from ledger.sqlparams import blob_rows, blobs


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, key BLOB UNIQUE, note TEXT, n INTEGER)")
    return db


def test_only_bytes_become_bytearrays() -> None:
    row = (1, b"\x00\x01", "text", None, 2.5, bytearray(b"x"))
    (converted,) = blob_rows([row])
    assert [type(v) for v in converted] == [int, bytearray, str, type(None), float, bytearray]
    assert converted == (1, bytearray(b"\x00\x01"), "text", None, 2.5, bytearray(b"x"))
    assert blobs([b"a", "a", 1]) == [bytearray(b"a"), "a", 1]


def test_a_blob_bound_as_bytearray_is_stored_and_read_back_as_bytes() -> None:
    db = _db()
    db.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", blob_rows([(1, b"\xff" * 32, "a", 7)]))
    assert db.execute("SELECT typeof(key), key, note, n FROM t").fetchone() == (
        "blob",
        b"\xff" * 32,
        "a",
        7,
    )
    (found,) = db.execute("SELECT id FROM t WHERE key = ?", (b"\xff" * 32,)).fetchone()
    assert found == 1
    (found,) = db.execute("SELECT id FROM t WHERE key IN (?)", blobs([b"\xff" * 32])).fetchone()
    assert found == 1


def test_a_duplicate_is_refused_whichever_way_each_was_bound() -> None:
    db = _db()
    db.execute("INSERT INTO t VALUES (1, ?, 'a', 1)", (b"k",))
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.execute("INSERT INTO t VALUES (2, ?, 'b', 2)", blobs([b"k"]))


def test_only_the_positions_given_are_converted() -> None:
    rows = [(1, b"a", b"b", None), (2, b"c", b"d", b"e")]
    converted = blob_rows(rows, at=[1, 3])
    assert [[type(v) for v in row] for row in converted] == [
        [int, bytearray, bytes, type(None)],
        [int, bytearray, bytes, bytearray],
    ]
    assert converted == rows  # tuples, equal value by value
