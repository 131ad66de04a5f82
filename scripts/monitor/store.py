"""The monitor's own state, in one SQLite file: its mirror of the log, the rules' state, the
checkpoints it saw, its findings, its alert outbox and the supervisors' decisions.

Everything one step of the monitor changes is written in one transaction (:meth:`Store.step`):
a ``kill -9`` loses the step, which the next run does again, and never half of it. Findings
are kept once each (by a key of what they say): a step done again finds them again and
reports nothing twice. The rules' state (:class:`ledger.logstate.LogState`, the seen event
fingerprints, each supervision rule's memory) lives in tables read and written through
mappings (:class:`TableMap`), so that the monitor's memory does not grow with the log.

The two key spaces keyed by eventId (``seen`` and ``events``: both written for each event of
the log, under random keys) are not kept in a B-tree of their own, which would write a page per
new key once it outgrows a step: a step's new values are written as one **sorted run** (a table
filled in key order, a row per eventId holding both values, :class:`Runs`), runs of similar
sizes are merged into one when :data:`RUN_FAN_IN` of them accumulate (as an LSM tree does: each
row is rewritten a few times, in order, never written at a random place), and an in-memory
filter over their keys (:class:`KeyFilter`, of a fixed size, built at the first lookup after
the file is opened: the console, which opens the file per request, never builds it) answers
"never seen" for most lookups (a new eventId's) without reading SQLite.

In front of those tables is a bounded cache kept from step to step (at most ``cache`` values
per key space, the least recently used dropped first): a key read or written lately is not
read again, and the writes of a step go to the table when it commits, in its transaction
(write-behind, so a ``kill -9`` still loses the whole step or nothing). A step that fails
drops the cache. Values are stored in a compact encoding (:func:`encode`: the rules' facts as
tuples of plain values, ``marshal``); files written before it (``pickle``) are still read.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import marshal
import math
import os
import pickle
import sqlite3
from collections.abc import (
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    MutableSet,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any, Final, Generic, TypeVar, overload

from ledger import index
from ledger.errors import ProofError
from ledger.events import EventType
from ledger.logstate import EventFacts, LogState, RecordFacts
from ledger.sqlparams import blob_rows, blobs
from ledger.verify import Finding
from scripts._common import ToolError

__all__ = [
    "DEFAULT_CACHE",
    "RUN_FAN_IN",
    "Alert",
    "KeyFilter",
    "Runs",
    "Store",
    "StoredFinding",
    "StoredIndex",
    "TableMap",
    "TableSet",
    "decode",
    "encode",
    "finding_key",
    "lock_state",
]

#: Values of the rules' state each key space keeps in memory between steps.
DEFAULT_CACHE: Final = 50_000

#: The key spaces kept in sorted runs (:class:`Runs`) rather than in the ``kv`` table: keyed by
#: eventId, both written for each event of the log. A run has one row per eventId, its value
#: the pair of both spaces' values (:func:`_pair`).
RUN_SPACES: Final = ("seen", "events")
#: How many runs of a size class are merged into one (the larger, the fewer rewrites of each
#: row and the more runs a lookup that passes the filter reads).
RUN_FAN_IN: Final = 4
#: Rows of the smallest size class: runs of fewer rows are merged as soon as four are there.
RUN_BASE: Final = 1024

#: 3: the rules' state keyed by eventId (``seen``, ``events``) moved from ``kv`` to sorted runs
#: (tables ``kv_run_<n>``), and the mirror's index on records dropped (the console proves a
#: record's trail with its own verifiable index: :mod:`scripts.monitor.trails`).
#: 2: the mirror lost its indexes on eventId and patient (random keys, each insert a page of
#: the B-tree written: the monitor's cost per event grew with the log), a finding about an
#: entry names its position (``findings.pos``). Files of formats 1 and 2 are upgraded when
#: opened.
SCHEMA_VERSION = 3

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
CREATE TABLE IF NOT EXISTS kv (
    space TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, PRIMARY KEY (space, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_nodes (node BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS index_lists (key BLOB PRIMARY KEY, frontier BLOB NOT NULL)
    WITHOUT ROWID;
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
    found_at INTEGER NOT NULL,
    pos INTEGER
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

#: :func:`ledger.index.update`'s signature (nodes, frontiers, batch, old size, new size).
IndexUpdater = Callable[
    [
        Mapping[index.NodeId, index.Node],
        Mapping[bytes, bytes],
        Mapping[bytes, Sequence[int]],
        int,
        int,
    ],
    index.IndexUpdate,
]

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


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


class KeyFilter:
    """The keys of the sorted runs, as a Bloom filter of a fixed size (``2 ** bits`` bits, three
    probes): ``key in filter`` is False for a key never added, and True for one added (and, by
    chance, for a few others: about 0.06 % at 10^6 keys in the default 4 MiB, 20 % at
    10^7). It is built from Python's ``hash`` of the keys (salted per process, so that keys
    chosen to collide in one run do not in the next), at the first lookup after the store is
    opened (:attr:`Runs.filter`)."""

    def __init__(self, bits: int = 25) -> None:
        if not 3 <= bits <= 40:
            raise ValueError(f"a key filter has 2**3 to 2**40 bits, not 2**{bits}")
        self._bits = bits
        self._mask = (1 << bits) - 1
        self._array = bytearray(1 << (bits - 3))

    def add(self, key: bytes) -> None:
        code = hash(key)
        mask, array = self._mask, self._array
        first = code & mask
        step = ((code >> self._bits) & mask) | 1
        second = (first + step) & mask
        third = (second + step) & mask
        array[first >> 3] |= 1 << (first & 7)
        array[second >> 3] |= 1 << (second & 7)
        array[third >> 3] |= 1 << (third & 7)

    def __contains__(self, key: object) -> bool:
        code = hash(key)
        mask, array = self._mask, self._array
        first = code & mask
        if not array[first >> 3] >> (first & 7) & 1:
            return False
        step = ((code >> self._bits) & mask) | 1
        second = (first + step) & mask
        if not array[second >> 3] >> (second & 7) & 1:
            return False
        third = (second + step) & mask
        return bool(array[third >> 3] >> (third & 7) & 1)


class Runs:
    """Key-value rows kept as sorted runs, a table each (``kv_run_<n>``; see the module).

    A run is the rows one step wrote (:meth:`write`), in key order, in a table of its own
    (``WITHOUT ROWID``, clustered on the key: filled in key order, each page is written once).
    When ``fan_in`` runs of a size class (the runs at the end of the list with at most the
    newest run's class: a class is a power of ``fan_in`` times ``base`` rows) are there, they
    are merged into a new run: read in key order together (SQLite merges the sorted tables,
    no sort), the newest value of each key kept, a deletion (an empty value) dropped once no
    older run is left under it; the merged tables are dropped (their pages freed at once, not
    row by row). Each row is so rewritten about log4(rows / 1024) times, in order. The list
    of runs is kept in ``meta`` (``runs``), in the step's transaction.

    A lookup (:meth:`get`) asks the filter (:class:`KeyFilter`) first: a key it does not hold
    was never written, with no query; else each run, the newest first, until one has the key.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        fan_in: int = RUN_FAN_IN,
        base: int = RUN_BASE,
        filter_bits: int = 25,
    ) -> None:
        if fan_in < 2 or base < 1:
            raise ValueError(f"runs merge 2 or more at a time, of 1 row or more: {fan_in}, {base}")
        self.db = db
        #: How many runs of a size class are merged; rows of the smallest class.
        self.fan_in, self.base = fan_in, base
        self._filter_bits = filter_bits
        KeyFilter(filter_bits)  # an unusable size is refused here, not at the first lookup
        #: Built from the runs' keys at the first lookup or write (:attr:`filter`): a reader of
        #: the file that never asks the rules' state (the console, per request) never pays it.
        self._filter: KeyFilter | None = None
        #: ``[run, rows]``, oldest first.
        self.runs: list[list[int]] = []

    @staticmethod
    def table(run: int) -> str:
        """The table of run number ``run``."""
        return f"kv_run_{int(run)}"

    def load(self, *, rebuild_filter: bool = True) -> None:
        """Read the list of runs from the file (and have the filter built again from their
        keys when next needed)."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'runs'").fetchone()
        self.runs = [] if row is None else [[int(r), int(n)] for r, n in json.loads(row[0])]
        if rebuild_filter:
            self._filter = None

    @property
    def filter(self) -> KeyFilter:
        """The filter over the runs' keys, built from them the first time it is asked for."""
        if self._filter is None:
            built = KeyFilter(self._filter_bits)
            add = built.add
            for run, _rows in self.runs:
                for (key,) in self.db.execute(f"SELECT key FROM {self.table(run)}"):  # noqa: S608
                    add(key)
            self._filter = built
        return self._filter

    def get(self, key: bytes) -> bytes | None:
        """The newest value of ``key`` (None: never written, or deleted)."""
        if key not in self.filter:
            return None
        db = self.db
        for run, _rows in reversed(self.runs):
            row = db.execute(
                f"SELECT value FROM {self.table(run)} WHERE key = ?",  # noqa: S608
                (bytearray(key),),
            ).fetchone()
            if row is not None:
                return bytes(row[0]) or None
        return None

    def _newest(self, runs: Sequence[list[int]]) -> str:
        """A query of each key's rows in ``runs``, in key order, the newest run's first."""
        union = " UNION ALL ".join(
            f"SELECT key, value, {int(run)} AS run FROM {self.table(run)}"  # noqa: S608
            for run, _rows in runs
        )
        return f"SELECT key, value FROM ({union} ORDER BY key, run DESC)"  # noqa: S608

    def rows(self) -> Iterator[tuple[bytes, bytes]]:
        """Each key's newest value (not deleted), in key order."""
        if not self.runs:
            return
        last = None
        for key, value in self.db.execute(self._newest(self.runs)):  # streamed, not held
            if key != last and value:
                yield bytes(key), bytes(value)
            last = key

    def _create(self, run: int) -> str:
        table = self.table(run)
        self.db.execute(
            f"CREATE TABLE {table} (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
        )
        return table

    def write(self, rows: Sequence[tuple[bytes, bytes]]) -> None:
        """Append ``rows`` (in key order, each key once) as a new run, then merge what is due."""
        run = self.runs[-1][0] + 1 if self.runs else 1
        table = self._create(run)
        self.db.executemany(
            f"INSERT INTO {table} (key, value) VALUES (?, ?)",  # noqa: S608
            blob_rows(rows),
        )
        add = self.filter.add
        for key, _value in rows:
            add(key)
        self.runs.append([run, len(rows)])
        while self._merge_due():
            pass
        self.db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('runs', ?)", (json.dumps(self.runs),)
        )

    def size_class(self, rows: int) -> int:
        """A run's size class: 0 below ``fan_in * base`` rows, then one per power of
        ``fan_in``."""
        if rows < self.base * self.fan_in:
            return 0
        return int(math.log(rows / self.base, self.fan_in))

    def _merge_due(self) -> bool:
        """Merge the newest runs if ``fan_in`` of them are of the newest run's class or
        below; whether it did."""
        runs = self.runs
        if len(runs) < self.fan_in:
            return False
        top = self.size_class(runs[-1][1])
        first = len(runs)
        while first > 0 and self.size_class(runs[first - 1][1]) <= top:
            first -= 1
        if len(runs) - first < self.fan_in:
            return False
        new = runs[-1][0] + 1
        table = self._create(new)
        # In key order, the newest run's row first: the first inserted of each key is kept.
        cursor = self.db.execute(
            f"INSERT OR IGNORE INTO {table} (key, value) {self._newest(runs[first:])}"
        )
        rows = max(cursor.rowcount, 0)
        if first == 0:  # no older run left under them: deletions have nothing left to hide
            rows -= max(
                self.db.execute(f"DELETE FROM {table} WHERE value = x''").rowcount,  # noqa: S608
                0,
            )
        for run, _rows in runs[first:]:
            self.db.execute(f"DROP TABLE {self.table(run)}")
        del runs[first:]
        if rows:
            runs.append([new, rows])
        else:
            self.db.execute(f"DROP TABLE {table}")
        return True


_DELETED: Any = object()
_UNREAD: Any = object()


def _pair(first: bytes | None, second: bytes | None) -> bytes:
    """The value of a sorted run's row: the two spaces' encoded values (None: none); empty when
    both are none (a deletion, dropped when the runs are merged down to the oldest)."""
    if first is None and second is None:
        return b""
    return marshal.dumps((first, second), _MARSHAL_VERSION)


def _unpair(data: bytes | None) -> tuple[bytes | None, bytes | None]:
    """The two encoded values :func:`_pair` put in ``data`` (None: no row)."""
    if not data:
        return None, None
    first, second = marshal.loads(data)  # noqa: S302 - the monitor's own file (see decode)
    return first, second


class TableMap(MutableMapping[K, V], Generic[K, V]):
    """A mapping kept in the ``kv`` table, in its own key space (values in :func:`encode`'s
    form: the file is the monitor's own, never read from elsewhere).

    Reads and writes go through the store's cache (see the module): a key read once is not
    read (nor decoded) again while it is cached, and writes are written all at once when the
    step commits (:meth:`Store.step`)."""

    def __init__(self, store: Store, space: str) -> None:
        self._store = store
        self._space = space
        self._cache = store._cache.setdefault(space, {})
        #: Which half of a sorted run's value is this space's (None: kept in ``kv``).
        self._half = RUN_SPACES.index(space) if space in RUN_SPACES else None

    @staticmethod
    def _key(key: Any) -> bytes:
        return key if isinstance(key, bytes) else str(key).encode()

    def _load(self, raw: bytes) -> Any:
        cache = self._cache
        if raw in cache:
            value = cache.pop(raw)  # to the end: used lately, the last to be dropped
            cache[raw] = value
            return value
        if self._half is not None:
            data = _unpair(self._store._runs.get(raw))[self._half]
        else:
            row = self._store.db.execute(
                "SELECT value FROM kv WHERE space = ? AND key = ?", (self._space, bytearray(raw))
            ).fetchone()
            data = None if row is None else row[0]
        value = _DELETED if data is None else decode(data)
        cache[raw] = value
        return value

    def prefetch(self, keys: Iterable[K]) -> None:
        """Read the values of ``keys`` not cached yet in a few queries, rather than one per
        key as they are asked for (a page's new eventIds: mostly not there at all)."""
        cache = self._cache
        wanted = list(dict.fromkeys(raw for raw in map(self._key, keys) if raw not in cache))
        if self._half is not None:  # the filter answers most of them without a query
            for raw in wanted:
                self._load(raw)
            return
        sql = f"SELECT key, value FROM kv WHERE space = ? AND key IN ({_MARKS})"  # noqa: S608
        db = self._store.db
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            for raw in chunk:
                cache[raw] = _DELETED
            # Always _CHUNK keys (the last repeated): one prepared statement.
            padded = chunk + chunk[-1:] * (_CHUNK - len(chunk))
            for raw, value in db.execute(sql, (self._space, *blobs(padded))):
                cache[bytes(raw)] = decode(value)

    def __getitem__(self, key: K) -> V:
        value = self._load(self._key(key))
        if value is _DELETED:
            raise KeyError(key)
        result: V = value
        return result

    def __setitem__(self, key: K, value: V) -> None:
        raw = self._key(key)
        cache = self._cache
        cache.pop(raw, None)  # to the end: the last to be dropped
        cache[raw] = value
        self._store._dirty.add((self._space, raw))

    def __delitem__(self, key: K) -> None:
        raw = self._key(key)
        if self._load(raw) is _DELETED:
            raise KeyError(key)
        self._cache[raw] = _DELETED
        self._store._dirty.add((self._space, raw))

    def __iter__(self) -> Iterator[K]:
        self._store.flush()
        if self._half is not None:
            half = self._half
            for key, value in self._store._runs.rows():
                if _unpair(value)[half] is not None:
                    yield key  # type: ignore[misc]
            return
        rows = self._store.db.execute(
            "SELECT key FROM kv WHERE space = ?", (self._space,)
        ).fetchall()
        for (key,) in rows:
            yield key

    def __len__(self) -> int:
        self._store.flush()
        if self._half is not None:
            return sum(1 for _ in self)
        (count,) = self._store.db.execute(
            "SELECT COUNT(*) FROM kv WHERE space = ?", (self._space,)
        ).fetchone()
        return int(count)

    def __contains__(self, key: object) -> bool:
        return self._load(self._key(key)) is not _DELETED

    @overload
    def get(self, key: K, /) -> V | None: ...

    @overload
    def get(self, key: K, /, default: V | D) -> V | D: ...

    def get(self, key: K, /, default: Any = None) -> Any:
        """``Mapping.get`` without raising and catching ``KeyError`` on a miss (the rules look
        up each event's record and references with it, most of them new)."""
        value = self._load(self._key(key))
        return default if value is _DELETED else value


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
    """The monitor's SQLite file (WAL: the console reads while the monitor writes).

    ``cache``: values of the rules' state kept in memory per key space; ``runs``: the settings
    of the sorted runs (:class:`Runs`' keywords; the defaults but in tests)."""

    def __init__(
        self, path: Path, *, cache: int = DEFAULT_CACHE, runs: dict[str, int] | None = None
    ) -> None:
        if cache < 0:
            raise ValueError(f"the cache holds at least 0 values per key space, not {cache}")
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = connect(path)
        self.db.executescript(_SCHEMA)
        #: The cache of the ``kv`` table: per space, raw key → value (or deleted), oldest
        #: first; and which of them the open step wrote.
        self._cache: dict[str, dict[bytes, Any]] = {}
        self._cache_size = cache
        self._dirty: set[tuple[str, bytes]] = set()
        #: Each supervision rule's memory, made once (a rule asks for it at every event).
        self._memories: dict[str, TableMap[str, Any]] = {}
        #: The key spaces keyed by eventId (:data:`RUN_SPACES`).
        self._runs = Runs(self.db, **(runs or {}))
        version = self.get("schema")
        if version is None:
            self.put("schema", SCHEMA_VERSION)
        elif version in (1, 2):
            if version == 1:
                self._upgrade_from_1()
            self._upgrade_from_2()
        elif version != SCHEMA_VERSION:
            raise ValueError(f"{path} is a monitor state of format {version}, not {SCHEMA_VERSION}")
        self._runs.load()

    def _upgrade_from_1(self) -> None:
        """Format 1 → 2, in one transaction: each finding about a mirrored event given the
        event's position (found through the index on eventId, before it is dropped), then the
        indexes on eventId and patient dropped."""
        with self.step():
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(findings)")}
            if "pos" not in columns:
                self.db.execute("ALTER TABLE findings ADD COLUMN pos INTEGER")
            self.db.execute(
                "UPDATE findings SET pos = (SELECT MIN(e.pos) FROM entries e "
                "WHERE e.event_id = findings.event_id) WHERE event_id IS NOT NULL"
            )
            self.db.execute("DROP INDEX IF EXISTS entries_event")
            self.db.execute("DROP INDEX IF EXISTS entries_patient")
            self.put("schema", 2)

    def _upgrade_from_2(self) -> None:
        """Format 2 → 3, in one transaction: the ``seen`` and ``events`` rows of ``kv`` moved
        into one sorted run, a row per eventId (both values, as they were encoded), and the
        index on records dropped."""
        with self.step():
            self.db.execute("DROP INDEX IF EXISTS entries_record")
            seen, events = RUN_SPACES
            rows = self.db.execute(
                "SELECT key, MAX(CASE WHEN space = ? THEN value END), "
                "MAX(CASE WHEN space = ? THEN value END) FROM kv WHERE space IN (?, ?) "
                "GROUP BY key ORDER BY key",
                (seen, events, seen, events),
            )
            table = self._runs._create(1)
            cursor = self.db.executemany(
                f"INSERT INTO {table} (key, value) VALUES (?, ?)",  # noqa: S608
                ((bytes(key), _pair(a, b)) for key, a, b in rows),
            )
            count = max(cursor.rowcount, 0)
            if not count:
                self.db.execute(f"DROP TABLE {table}")
            self.db.execute("DELETE FROM kv WHERE space IN (?, ?)", (seen, events))
            self.put("runs", [[1, count]] if count else [])
            self.put("schema", SCHEMA_VERSION)

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
            for cache in self._cache.values():  # (each space's, as kept TableMaps hold them)
                cache.clear()  # it holds what the step wrote: no longer true
            self._dirty.clear()
            self._runs.load(rebuild_filter=False)  # (the filter may hold more keys: harmless)
            raise
        self.db.execute("COMMIT")
        self._trim()

    def _trim(self) -> None:
        """Drop the oldest cached values beyond the cache's size (nothing is dirty now)."""
        for cache in self._cache.values():
            excess = len(cache) - self._cache_size
            if excess > 0:
                for raw in list(islice(cache, excess)):
                    del cache[raw]

    def flush(self) -> None:
        """Write the cached writes of the ``kv`` table (inside the open transaction)."""
        if not self._dirty:
            return
        puts: list[tuple[str, bytes, bytes]] = []
        deletes: list[tuple[str, bytes]] = []
        paired: set[bytes] = set()
        for space, raw in self._dirty:
            if space in RUN_SPACES:
                paired.add(raw)
                continue
            value = self._cache[space][raw]
            if value is _DELETED:
                deletes.append((space, raw))
            else:
                puts.append((space, raw, encode(value)))
        if paired:
            self._runs.write(sorted((raw, self._paired(raw)) for raw in paired))
        # In the table's order: a step's keys (new eventIds: random) then go down the B-tree
        # together, each page of it read and written once, not once per key.
        puts.sort()
        self.db.executemany(
            "INSERT OR REPLACE INTO kv (space, key, value) VALUES (?, ?, ?)", blob_rows(puts)
        )
        self.db.executemany("DELETE FROM kv WHERE space = ? AND key = ?", blob_rows(deletes))
        self._dirty.clear()

    def _paired(self, raw: bytes) -> bytes:
        """The row of a sorted run for eventId ``raw``: both spaces' values, each the step's
        own if it wrote one, else the one it had (cached, or in the runs)."""
        halves: list[bytes | None] = []
        stored: tuple[bytes | None, bytes | None] | None = None
        for half, space in enumerate(RUN_SPACES):
            value = self._cache.get(space, {}).get(raw, _UNREAD)
            if (space, raw) not in self._dirty and value is _UNREAD:
                if stored is None:
                    stored = _unpair(self._runs.get(raw))
                halves.append(stored[half])
            else:
                halves.append(None if value is _DELETED else encode(value))
        return _pair(*halves)

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

    def prefetch_events(
        self, event_ids: Iterable[bytes], record_refs: Iterable[bytes] = ()
    ) -> None:
        """Read at once what the rules look up first of each new event (its fingerprint in
        :meth:`seen`, its facts in :meth:`log_state`; the facts of the record it names): a new
        eventId is in neither, and a page then costs a query per few hundred events rather
        than one per event and key space."""
        ids = list(event_ids)
        for space in ("seen", "events"):
            TableMap[bytes, Any](self, space).prefetch(ids)
        TableMap[bytes, Any](self, "records").prefetch(record_refs)

    def seen(self) -> TableMap[bytes, int]:
        """Each eventId's content fingerprint (the Auditor's duplicate check)."""
        return TableMap(self, "seen")

    def memory(self, code: str) -> TableMap[str, Any]:
        """A supervision rule's memory."""
        memory = self._memories.get(code)
        if memory is None:
            memory = self._memories[code] = TableMap(self, f"rule:{code}")
        return memory

    def receipts_kept(self) -> TableSet:
        """The receipts proven at their promised leaf (leaf index and event digest)."""
        return TableSet(self, "receipts-kept")

    def index(self, update: IndexUpdater = index.update) -> StoredIndex:
        """The verifiable index rebuilt from the mirror, at the last checkpoint verified
        (``update``: how :func:`ledger.index.update` is run)."""
        return StoredIndex(self, update)

    # -- findings and alerts --------------------------------------------------------------

    def add_finding(self, finding: Finding, now: int, pos: int | None = None) -> int | None:
        """Keep ``finding`` (about the mirrored entry at ``pos``, if given) and queue its
        alert; None (nothing queued) when it was found before."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO findings (key, code, severity, detail, event_id, context, "
            "found_at, pos) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                finding_key(finding),
                str(finding.code),
                finding.severity,
                finding.detail,
                finding.event_id,
                json.dumps(finding.context, sort_keys=True, default=str),
                now,
                pos,
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


class StoredIndex:
    """The verifiable index the monitor rebuilds (:mod:`ledger.index`), kept in its store: what
    :func:`ledger.index.update` needs (the latest trie's nodes, each key's list frontier, the
    trie's depth), not the lists. :meth:`extend` reads the nodes and frontiers a batch needs in
    a few queries and writes what it changed, in the open step's transaction: the monitor's
    memory does not grow with the log, and a restart does not rebuild the index."""

    #: Ids per ``IN (…)`` query.
    CHUNK: Final = 500

    def __init__(self, store: Store, update: IndexUpdater = index.update) -> None:
        self._store = store
        #: :func:`ledger.index.update`, or a function giving what it gives (run elsewhere).
        self._update = update

    def _state(self) -> tuple[int, bytes, int]:
        size, root, depth = self._store.get("index", [0, index.EMPTY_HASH.hex(), 0])
        return int(size), bytes.fromhex(root), int(depth)

    @property
    def size(self) -> int:
        """The log size the index covers."""
        return self._state()[0]

    def root(self, size: int | None = None) -> bytes:
        """The root at its size (the only one it keeps)."""
        at, root, _depth = self._state()
        if size is not None and size != at:
            raise ProofError(f"the monitor's index is at log size {at}, not {size}", size=size)
        return root

    def lookup(self, key: bytes) -> tuple[int, bytes, index.LookupProof]:
        """The log size and root the index is at, and ``key``'s lookup proof in it, made from
        the stored trie (read only: nothing is written; inside one read transaction, the
        three agree). Plan, fetch, assemble: the positions a proof may need at the trie's depth
        (:func:`ledger.index.lookup_plan`) in one query."""
        size, root, depth = self._state()
        plan = {_node_key(node): node for node in index.lookup_plan(key, depth)}
        nodes = {
            plan[bytes(raw)]: bytes(value)
            for raw, value in self._fetch("index_nodes", "node", plan)
        }
        return size, root, index.assemble_lookup(key, nodes)

    def extend(self, events: Iterable[Sequence[bytes]]) -> index.IndexUpdate:
        """Append events (the keys of each, in log order, the first at leaf :attr:`size`)."""
        size, _root, depth = self._state()
        batch, count = index.batch_of(size, events)
        nodes = self._paths(batch)
        frontiers = {bytes(k): bytes(v) for k, v in self._fetch("index_lists", "key", batch)}
        result = self._update(nodes, frontiers, batch, size, size + count)
        db = self._store.db
        db.executemany(
            "INSERT OR REPLACE INTO index_nodes (node, value) VALUES (?, ?)",
            blob_rows((_node_key(node), value) for node, value in result.nodes.items()),
        )
        db.executemany(
            "INSERT OR REPLACE INTO index_lists (key, frontier) VALUES (?, ?)",
            blob_rows(result.frontiers.items()),
        )
        self._store.put("index", [result.size, result.root.hex(), max(depth, result.depth)])
        return result

    def _paths(self, keys: Iterable[bytes]) -> dict[index.NodeId, bytes]:
        """The stored nodes :func:`ledger.index.update` reads for ``keys``: each key's path and
        the siblings along it, level by level, down to where its path ends (an empty position
        or a leaf) — one query per level rather than every position down to the trie's depth
        (:func:`ledger.index.update_plan`), most of which are empty."""
        nodes: dict[index.NodeId, bytes] = {}
        marked = [int.from_bytes(key, "big") | _TOP_BIT for key in keys]
        depth = 0
        while marked:
            wanted: dict[bytes, index.NodeId] = {}
            for key in marked:
                node = key >> (256 - depth)
                wanted[_node_key(node)] = node
                if depth:
                    wanted[_node_key(node ^ 1)] = node ^ 1
            for raw, value in self._fetch("index_nodes", "node", wanted):
                nodes[wanted[bytes(raw)]] = bytes(value)
            # On down where the path goes on: an internal node (a hash; a leaf is longer).
            marked = [
                key for key in marked if len(nodes.get(key >> (256 - depth), b"")) == index.KEY_SIZE
            ]
            depth += 1
        return nodes

    def _fetch(self, table: str, column: str, keys: Iterable[bytes]) -> Iterator[tuple[Any, Any]]:
        ids = list(keys)
        value = "value" if table == "index_nodes" else "frontier"
        # Always CHUNK ids (the last one repeated): one prepared statement per table, where
        # lists of every length would fill sqlite3's statement cache with large programs.
        sql = f"SELECT {column}, {value} FROM {table} WHERE {column} IN ({_MARKS})"  # noqa: S608
        for start in range(0, len(ids), self.CHUNK):
            chunk = ids[start : start + self.CHUNK]
            chunk += chunk[-1:] * (self.CHUNK - len(chunk))
            yield from self._store.db.execute(sql, blobs(chunk))


#: Ids per ``IN (…)`` query (:meth:`StoredIndex._fetch`, :meth:`TableMap.prefetch`).
_CHUNK: Final = StoredIndex.CHUNK
_MARKS: Final = ",".join("?" * _CHUNK)
#: The bit above a key's 256: ``(key | _TOP_BIT) >> (256 - d)`` is the position at depth d on
#: its path.
_TOP_BIT: Final = 1 << 256


def _node_key(node: index.NodeId) -> bytes:
    """A trie position as a blob key (big-endian, no leading zero: one per position)."""
    return node.to_bytes((node.bit_length() + 7) // 8, "big")


_EVENT_FACTS, _RECORD_FACTS, _PLAIN = b"E", b"R", b"M"
#: ``marshal``'s format version (stable since Python 3.4; older ones stay readable).
_MARSHAL_VERSION: Final = 4


def encode(value: Any) -> bytes:
    """A value of the rules' state as bytes: a tag, then ``marshal`` of plain values (the
    facts of :mod:`ledger.logstate` as tuples of their fields); ``pickle`` for any other kind
    (a supervision rule's memory is JSON values: plain)."""
    kind = type(value)
    if kind is EventFacts:
        return _EVENT_FACTS + marshal.dumps(
            (
                value.event_type.value,
                value.patient,
                value.institution,
                value.counterparty,
                value.occurredAt,
                value.record_ref,
                value.fills,
                value.validUntil,
                value.insurer,
                value.amount,
            ),
            _MARSHAL_VERSION,
        )
    if kind is RecordFacts:
        return _RECORD_FACTS + marshal.dumps((value.patient, value.custodian), _MARSHAL_VERSION)
    try:
        return _PLAIN + marshal.dumps(value, _MARSHAL_VERSION)
    except ValueError:  # not plain values only (marshal takes built-in types, exactly)
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> Any:
    """The value :func:`encode` gave ``data`` for (or ``pickle``'s, as written before it)."""
    # The file is the monitor's own (written by it alone, in its own directory): whoever can
    # write it can as well replace the monitor's code.
    tag = data[:1]
    if tag not in (_PLAIN, _EVENT_FACTS, _RECORD_FACTS):
        return pickle.loads(data)  # noqa: S301
    value = marshal.loads(data[1:])  # noqa: S302
    if tag == _EVENT_FACTS:
        return EventFacts(EventType(value[0]), *value[1:])
    if tag == _RECORD_FACTS:
        return RecordFacts(*value)
    return value


def _stored(row: tuple[Any, ...]) -> StoredFinding:
    finding_id, code, severity, detail, event_id, context, found_at = row
    return StoredFinding(
        int(finding_id),
        Finding(code, severity, detail, event_id, json.loads(context)),
        int(found_at),
    )


def lock_state(path: Path) -> IO[bytes]:
    """Make this process the only monitor of the state file ``path``: an exclusive lock on
    ``<path>.lock`` beside it, held while the returned file stays open (the process's life:
    the kernel releases it when the process ends, a ``kill -9`` included). Each monitor
    trusts its own cache of the rules' state (see the module): two on one file would
    overwrite each other's writes with stale values. A second monitor is refused
    (:class:`~scripts._common.ToolError`, naming the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(path.name + ".lock")
    handle = lock_path.open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ToolError(
            f"another monitor is using the state {path} (it holds {lock_path}): one monitor "
            "per state file; stop it, or give this one another --state"
        ) from None
    except BaseException:
        handle.close()
        raise
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    return handle


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the monitor's file: autocommit (transactions are explicit), WAL, every
    commit synced."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0, check_same_thread=False)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA busy_timeout = 30000")
    return db
