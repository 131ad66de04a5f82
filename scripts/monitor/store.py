"""The monitor's own state, in one SQLite file: its mirror of the log, the rules' state, the
checkpoints it saw, its findings, its alert outbox and the supervisors' decisions.

Everything one step of the monitor changes is written in one transaction (:meth:`Store.step`):
a ``kill -9`` loses the step, which the next run does again, and never half of it. Findings
are kept once each (by a key of what they say): a step done again finds them again and
reports nothing twice. The rules' state (:class:`ledger.logstate.LogState`, the seen event
fingerprints, each supervision rule's memory) lives in tables read and written through
mappings (:class:`TableMap`), so that the monitor's memory does not grow with the log.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sqlite3
from collections.abc import Iterator, MutableMapping, MutableSet
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from ledger.logstate import LogState
from ledger.verify import Finding

__all__ = ["Alert", "Store", "StoredFinding", "TableMap", "TableSet", "finding_key"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    pos INTEGER PRIMARY KEY,
    leaf INTEGER NOT NULL,
    event_id BLOB,
    event_type TEXT,
    institution TEXT,
    patient TEXT,
    record_ref BLOB,
    occurred_at INTEGER,
    received_at INTEGER NOT NULL,
    digest BLOB NOT NULL,
    leaf_hash BLOB NOT NULL,
    keys BLOB NOT NULL,
    raw TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_leaf ON entries (leaf);
CREATE INDEX IF NOT EXISTS entries_record ON entries (record_ref);
CREATE INDEX IF NOT EXISTS entries_patient ON entries (patient);
CREATE INDEX IF NOT EXISTS entries_event ON entries (event_id);
CREATE TABLE IF NOT EXISTS kv (
    space TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (space, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    index_root BLOB NOT NULL,
    block INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    code TEXT NOT NULL,
    severity TEXT NOT NULL,
    detail TEXT NOT NULL,
    event_id BLOB,
    context TEXT NOT NULL,
    found_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_event ON findings (event_id);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    webhook_done INTEGER NOT NULL DEFAULT 0,
    webhook_attempts INTEGER NOT NULL DEFAULT 0,
    webhook_next REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    event_id BLOB NOT NULL,
    decision TEXT NOT NULL,
    note TEXT NOT NULL,
    supervisor TEXT NOT NULL,
    decided_at INTEGER NOT NULL
);
"""

K = TypeVar("K")
V = TypeVar("V")


def finding_key(finding: Finding) -> str:
    """What makes a finding the same finding when found again (code, event, context)."""
    text = json.dumps(
        [str(finding.code), finding.event_id.hex() if finding.event_id else None, finding.context],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class StoredFinding:
    """A finding as the monitor keeps it."""

    id: int
    finding: Finding
    found_at: int


@dataclass(frozen=True)
class Alert:
    """One alert of the outbox: a finding or a status change, as sent (``body``)."""

    id: int
    body: dict[str, Any]


_DELETED: Any = object()


class TableMap(MutableMapping[K, V], Generic[K, V]):
    """A mapping kept in the ``kv`` table, in its own key space (values pickled: the file is
    the monitor's own, never read from elsewhere).

    Reads and writes go through the store's cache of the open transaction: a key read twice
    in a step is read (and unpickled) once, and writes are written all at once when the step
    commits (:meth:`Store.step`); the cache is dropped after each step, so that it holds only
    what one step touched."""

    def __init__(self, store: Store, space: str) -> None:
        self._store = store
        self._space = space
        self._cache = store._cache.setdefault(space, {})

    @staticmethod
    def _key(key: Any) -> bytes:
        return key if isinstance(key, bytes) else str(key).encode()

    def _load(self, raw: bytes) -> Any:
        if raw in self._cache:
            return self._cache[raw]
        row = self._store.db.execute(
            "SELECT value FROM kv WHERE space = ? AND key = ?", (self._space, raw)
        ).fetchone()
        # The file is the monitor's own (written by it alone, in its own directory): whoever can
        # write it can as well replace the monitor's code.
        value = _DELETED if row is None else pickle.loads(row[0])  # noqa: S301
        self._cache[raw] = value
        return value

    def __getitem__(self, key: K) -> V:
        value = self._load(self._key(key))
        if value is _DELETED:
            raise KeyError(key)
        result: V = value
        return result

    def __setitem__(self, key: K, value: V) -> None:
        raw = self._key(key)
        self._cache[raw] = value
        self._store._dirty.add((self._space, raw))

    def __delitem__(self, key: K) -> None:
        raw = self._key(key)
        if self._load(raw) is _DELETED:
            raise KeyError(key)
        self._cache[raw] = _DELETED
        self._store._dirty.add((self._space, raw))

    def __iter__(self) -> Iterator[K]:
        self._store.flush()
        rows = self._store.db.execute(
            "SELECT key FROM kv WHERE space = ?", (self._space,)
        ).fetchall()
        for (key,) in rows:
            yield key

    def __len__(self) -> int:
        self._store.flush()
        (count,) = self._store.db.execute(
            "SELECT COUNT(*) FROM kv WHERE space = ?", (self._space,)
        ).fetchone()
        return int(count)

    def __contains__(self, key: object) -> bool:
        return self._load(self._key(key)) is not _DELETED


class TableSet(MutableSet[bytes]):
    """A set of byte strings kept in the ``kv`` table."""

    def __init__(self, store: Store, space: str) -> None:
        self._map: TableMap[bytes, bool] = TableMap(store, space)

    def __contains__(self, value: object) -> bool:
        return value in self._map

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def add(self, value: bytes) -> None:
        self._map[value] = True

    def discard(self, value: bytes) -> None:
        self._map.pop(value, None)


class Store:
    """The monitor's SQLite file (WAL: the console reads while the monitor writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = connect(path)
        self.db.executescript(_SCHEMA)
        #: The open step's cache of the ``kv`` table: per space, raw key → value (or
        #: deleted); and which of them were written.
        self._cache: dict[str, dict[bytes, Any]] = {}
        self._dirty: set[tuple[str, bytes]] = set()
        version = self.get("schema")
        if version is None:
            self.put("schema", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise ValueError(f"{path} is a monitor state of format {version}, not {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def step(self) -> Iterator[None]:
        """One transaction: everything in it is kept, or nothing (an exception rolls back)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.flush()
        except BaseException:
            self.db.execute("ROLLBACK")
            self._cache.clear()
            self._dirty.clear()
            raise
        self.db.execute("COMMIT")
        self._cache.clear()

    def flush(self) -> None:
        """Write the cached writes of the ``kv`` table (inside the open transaction)."""
        if not self._dirty:
            return
        puts: list[tuple[str, bytes, bytes]] = []
        deletes: list[tuple[str, bytes]] = []
        for space, raw in self._dirty:
            value = self._cache[space][raw]
            if value is _DELETED:
                deletes.append((space, raw))
            else:
                puts.append((space, raw, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)))
        self.db.executemany("INSERT OR REPLACE INTO kv (space, key, value) VALUES (?, ?, ?)", puts)
        self.db.executemany("DELETE FROM kv WHERE space = ? AND key = ?", deletes)
        self._dirty.clear()

    # -- meta -----------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value))
        )

    # -- the rules' state -----------------------------------------------------------------

    def log_state(self) -> LogState:
        """The ledger rules' state, on disk."""
        return LogState(
            events=TableMap(self, "events"),
            records=TableMap(self, "records"),
            fills=TableMap(self, "fills"),
            claimed=TableSet(self, "claimed"),
            paid=TableMap(self, "paid"),
        )

    def seen(self) -> TableMap[bytes, int]:
        """Each eventId's content fingerprint (the Auditor's duplicate check)."""
        return TableMap(self, "seen")

    def memory(self, code: str) -> TableMap[str, Any]:
        """A supervision rule's memory."""
        return TableMap(self, f"rule:{code}")

    # -- findings and alerts --------------------------------------------------------------

    def add_finding(self, finding: Finding, now: int) -> int | None:
        """Keep ``finding`` and queue its alert; None (nothing queued) when it was found
        before."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO findings (key, code, severity, detail, event_id, context, "
            "found_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                finding_key(finding),
                str(finding.code),
                finding.severity,
                finding.detail,
                finding.event_id,
                json.dumps(finding.context, sort_keys=True, default=str),
                now,
            ),
        )
        if cursor.rowcount == 0:
            return None
        finding_id = int(cursor.lastrowid or 0)
        self.add_alert(
            {"kind": "finding", "findingId": finding_id, **finding.to_json(), "at": now}, now
        )
        return finding_id

    def add_alert(self, body: dict[str, Any], now: int) -> int:
        cursor = self.db.execute(
            "INSERT INTO alerts (body, created_at) VALUES (?, ?)",
            (json.dumps(body, sort_keys=True, default=str), now),
        )
        alert_id = int(cursor.lastrowid or 0)
        self.db.execute(
            "UPDATE alerts SET body = json_set(body, '$.id', ?) WHERE id = ?", (alert_id, alert_id)
        )
        return alert_id

    def alerts_after(self, alert_id: int, limit: int = 1000) -> list[Alert]:
        rows = self.db.execute(
            "SELECT id, body FROM alerts WHERE id > ? ORDER BY id LIMIT ?", (alert_id, limit)
        ).fetchall()
        return [Alert(int(i), json.loads(body)) for i, body in rows]

    def findings(self, limit: int = 1000) -> list[StoredFinding]:
        rows = self.db.execute(
            "SELECT id, code, severity, detail, event_id, context, found_at FROM findings "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [_stored(row) for row in rows]

    def finding_counts(self) -> dict[tuple[str, str], int]:
        rows = self.db.execute(
            "SELECT code, severity, COUNT(*) FROM findings GROUP BY code, severity"
        ).fetchall()
        return {(code, severity): int(n) for code, severity, n in rows}


def _stored(row: tuple[Any, ...]) -> StoredFinding:
    finding_id, code, severity, detail, event_id, context, found_at = row
    return StoredFinding(
        int(finding_id),
        Finding(code, severity, detail, event_id, json.loads(context)),
        int(found_at),
    )


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the monitor's file: autocommit (transactions are explicit), WAL, every
    commit synced."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA busy_timeout = 30000")
    return db
