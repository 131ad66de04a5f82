"""Large synthetic logs, fast: event rows bulk-inserted, then the real sequencer.

The rows are shaped like real ones (a 32-byte id, digest and record reference, 65-byte
signatures, a body of a real event's length) but are not signed events: only the Merkle log
reads them here (its leaves are the rows' digests). The tree itself is built by
:meth:`ledger.log.MerkleLog.integrate_all`, the production sequencer, never by a shortcut.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

from sqlalchemy import update

from ledger.log import MerkleLog
from ledger.store import Store
from ledger.store.models import IngestCounter

_COUNTER = IngestCounter.__table__  # type: ignore[attr-defined]
#: The length of a real RecordAccess event's canonical JSON.
_BODY = '{"synthetic":"' + "x" * 560 + '"}'
_INSERT = (
    "INSERT INTO events (leaf_index, event_id, event_type, institution, patient, record_ref, "
    "digest, signature, body, occurred_at, received_at, anchor_by, consent_status, "
    "receipt_signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_CHUNK = 20_000


def digest_of(index: int) -> bytes:
    """The synthetic event digest of leaf ``index`` (so proofs can be checked)."""
    return hashlib.sha256(b"medtrail synthetic event %d" % index).digest()


@dataclass(frozen=True)
class Growth:
    events: int
    insert_seconds: float
    integrate_seconds: float


def grow(store: Store, log: MerkleLog, start: int, end: int) -> Growth:
    """Append synthetic events ``[start, end)`` to a SQLite store and integrate them."""
    assert store.is_sqlite, "the synthetic bulk insert is SQLite's"
    institutions = [f"0x{i:040x}" for i in range(1, 51)]
    now = int(time.time())
    began = time.perf_counter()
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        for first in range(start, end, _CHUNK):
            rows = [
                (
                    i,
                    os.urandom(32),
                    "RecordAccess",
                    institutions[i % 50],
                    institutions[(i * 7) % 50],
                    hashlib.sha256(b"record %d" % (i % 100_000)).digest(),
                    digest_of(i),
                    os.urandom(65),
                    _BODY,
                    now,
                    now,
                    now + 3600,
                    "not-applicable",
                    os.urandom(65),
                )
                for i in range(first, min(end, first + _CHUNK))
            ]
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(_INSERT, rows)
            cursor.execute("COMMIT")
        cursor.close()
    finally:
        raw.close()
    inserted = time.perf_counter()
    with store.write() as connection:
        connection.execute(update(_COUNTER).where(_COUNTER.c.id == 1).values(next_index=end))
    head = log.integrate_all()
    assert head.size == end, (head.size, end)
    return Growth(end - start, inserted - began, time.perf_counter() - inserted)


def database_bytes(path: str) -> int:
    return sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
