"""The verifiable index (ledger.index, docs/index.md): upkeep per event, lookup proofs, sizes.

In process and pure first (no store, no chain): a synthetic log of 10^6 events over 10^5
records of 2 x 10^4 patients, each event touching its record's key and its patient's key
(record chosen uniformly: the most distinct keys per checkpoint, the worst case for the trie).
Timed side by side in the same run: the RFC 9162 log's own per-event work (a leaf appended to
an in-memory tree of 10^6 leaves), one SHA-256 call, and one signature recovery (DESIGN §9's
floor), so that the figures can be read against the machine's load. With
``MEDTRAIL_BENCH_INDEX_BEFORE`` naming an earlier ``ledger/index.py``, its upkeep is timed beside
today's on the same batches. Then the anchor worker's upkeep, store-backed: the same log as rows
of a SQLite store, advanced checkpoint by checkpoint by ``IndexSequencer``, and its load when
the worker starts (``benchmarks/_indexprobe.py``) at two log sizes.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from benchmarks._common import (
    REPO,
    Config,
    Goal,
    Section,
    Table,
    count,
    load_average,
    log,
    ms,
    percentile,
    us,
)
from ledger import index, merkle
from ledger.eip712 import recover, sign_digest
from ledger.index import LookupProof, MemoryIndex
from ledger.index_store import IndexSequencer
from ledger.store import Store

T = TypeVar("T")

GOAL_UPKEEP_US = 50.0
GOAL_LOOKUP_MS = 2.0
BATCH = 10_000


@dataclass(frozen=True)
class Shape:
    """The synthetic log: its size, its records and their patients."""

    events: int
    records: int
    patients: int


def shape(cfg: Config) -> Shape:
    return cfg.pick(Shape(10**6, 10**5, 2 * 10**4), Shape(10**5, 10**4, 2 * 10**3))


@dataclass
class Log:
    """Records (their refs and patients) and a generator of events over them."""

    refs: list[bytes]
    owners: list[bytes]
    rng: random.Random = field(default_factory=lambda: random.Random(16))

    @classmethod
    def of(cls, s: Shape) -> Log:
        rng = random.Random(9162)
        patients = [rng.randbytes(20) for _ in range(s.patients)]
        return cls(
            [rng.randbytes(32) for _ in range(s.records)],
            [patients[rng.randrange(s.patients)] for _ in range(s.records)],
        )

    def events(self, n: int) -> list[tuple[bytes, bytes]]:
        """``n`` events, each as (patient address, record it belongs to)."""
        return list(self.stream(n))

    def stream(self, n: int) -> Iterator[tuple[bytes, bytes]]:
        """The same, one at a time (a mirror read in order, not held in memory)."""
        pick = self.rng.randrange
        records = len(self.refs)
        for _ in range(n):
            r = pick(records)
            yield self.owners[r], self.refs[r]


def keys_of(events: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, ...]]:
    """The index keys of each event (what the sequencer derives per event)."""
    return [index.keys_of(patient, ref) for patient, ref in events]


def record_keys_of(events: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, ...]]:
    """What-if: the record's key only (a patient key updated on a record's first event only,
    which a log whose records all exist never has)."""
    return [(index.record_key(ref),) for _, ref in events]


class GcClock:
    """CPU time the garbage collector takes while it is installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._start = 0.0

    def __call__(self, phase: str, _: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._start

    def __enter__(self) -> GcClock:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_: object) -> None:
        gc.callbacks.remove(self)


def _keys_with(module: Any, events: Sequence[tuple[bytes, bytes]]) -> list[Any]:
    """Each event's index keys by ``module``'s ``keys_of`` (today's or the earlier one)."""
    return [module.keys_of(patient, record) for patient, record in events]


def cpu(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.thread_time()
    result = fn()
    return result, time.thread_time() - start


# --------------------------------------------------------------------------- baselines


def sha256_cost() -> float:
    """CPU seconds of one SHA-256 call on a node's 86 bytes, from Python."""
    data, n = os.urandom(86), 200_000
    start = time.thread_time()
    for _ in range(n):
        hashlib.sha256(data).digest()
    return (time.thread_time() - start) / n


def recover_cost() -> float:
    """CPU seconds of one signature recovery (the floor per event, DESIGN §9)."""
    key = os.urandom(32)
    pairs = [(d, sign_digest(d, key)) for d in (os.urandom(32) for _ in range(500))]
    start = time.thread_time()
    for _ in range(4):
        for digest, signature in pairs:
            recover(digest, signature)
    return (time.thread_time() - start) / (4 * len(pairs))


def compression_cost() -> float:
    """CPU seconds of SHA-256's compression of a node's 86 bytes (two 64-byte blocks) without
    any per-call overhead: one call over 64 MiB. What a compiled index would pay per hash."""
    data = os.urandom(64 * 2**20)
    start = time.thread_time()
    hashlib.sha256(data).digest()
    return (time.thread_time() - start) / (len(data) // 64) * 2


def hash_calls(built: MemoryIndex, source: Log, size: int) -> float:
    """SHA-256 calls per event of one batch's upkeep (counted, not timed)."""
    calls = 0
    real = index._sha256

    def counting(data: bytes = b"") -> Any:
        nonlocal calls
        calls += 1
        return real(data)

    index._sha256 = counting  # type: ignore[assignment]
    try:
        upkeep(built, source, size)
    finally:
        index._sha256 = real
    return calls / size


def log_append_cost(size: int) -> float:
    """CPU seconds per event of appending its leaf to an RFC 9162 tree already of ``size``."""
    tree = merkle.MemoryTree(merkle.leaf_hash(i.to_bytes(32, "big")) for i in range(size))
    leaves = [merkle.leaf_hash(os.urandom(32)) for _ in range(BATCH)]
    start = time.thread_time()
    for leaf in leaves:
        tree.append(leaf)
    return (time.thread_time() - start) / BATCH


# --------------------------------------------------------------------------- upkeep


@dataclass
class Upkeep:
    """CPU seconds per event of each stage of one batch."""

    keys: float
    group: float
    apply: float
    gc: float
    nodes: int
    node_bytes: int
    distinct_keys: int

    @property
    def total(self) -> float:
        return self.keys + self.group + self.apply


def upkeep(
    built: MemoryIndex,
    source: Log,
    size: int,
    derive: Callable[[Sequence[tuple[bytes, bytes]]], list[tuple[bytes, ...]]] = keys_of,
) -> Upkeep:
    """Apply one batch of ``size`` events; time each stage (CPU per event)."""
    events = source.events(size)
    keys, t_keys = cpu(lambda: derive(events))
    (batch, n), t_group = cpu(lambda: index.batch_of(built.size, keys))
    with GcClock() as clock:
        result, t_apply = cpu(lambda: built.apply(batch, built.size + n))
    return Upkeep(
        t_keys / n,
        t_group / n,
        t_apply / n,
        clock.seconds / n,
        len(result.nodes),
        sum(len(node) for node in result.nodes.values()),
        len(batch),
    )


#: Set to the path of an earlier ``ledger/index.py`` (e.g. ``git show REV:ledger/index.py >
#: /tmp/index_before.py``) to time its upkeep side by side with today's, on the same batches.
BEFORE_ENV = "MEDTRAIL_BENCH_INDEX_BEFORE"


def reference() -> ModuleType | None:
    """The earlier ``ledger.index`` named by :data:`BEFORE_ENV`, loaded beside today's."""
    path = os.environ.get(BEFORE_ENV)
    return _load(path, "_index_before") if path else None


@dataclass
class Versus:
    """CPU seconds per event of the earlier implementation's stages and today's, each batch:
    ``(keys, group, update)``."""

    before: list[tuple[float, float, float]] = field(default_factory=list)
    today: list[tuple[float, float, float]] = field(default_factory=list)


def versus(built: MemoryIndex, source: Log, before: ModuleType, batches: int) -> Versus:
    """Both implementations' keys, grouping and update on the same batches, from the same
    index (``update`` only computes: the index is left as it is), which one goes first
    alternating from batch to batch; their results must be identical."""
    found = Versus()
    nodes, frontiers, start = built.nodes(), built.frontiers, built.size
    for turn in range(batches):
        events = source.events(BATCH)
        results = {}
        order = [(before, found.before), (index, found.today)]
        for module, into in order if turn % 2 == 0 else order[::-1]:
            gc.collect()
            keys, t_keys = cpu(partial(_keys_with, module, events))
            (batch, n), t_group = cpu(partial(module.batch_of, start, keys))
            result, t_update = cpu(
                partial(module.update, nodes, frontiers, batch, start, start + n)
            )
            results[module.__name__] = (result.root, result.nodes, result.frontiers)
            into.append((t_keys / n, t_group / n, t_update / n))
            del result
        assert results[before.__name__] == results[index.__name__], "the results differ"
    return found


# --------------------------------------------------------------------------- the store

_EVENT_ROW = (
    "INSERT INTO events (leaf_index, event_id, event_type, institution, patient, record_ref, "
    "digest, signature, body, occurred_at, received_at, anchor_by, consent_status, "
    "receipt_signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def insert_events(store: Store, events: Sequence[tuple[bytes, bytes]], start: int) -> None:
    """Bulk-insert event rows for ``events`` from leaf ``start``: synthetic rows whose
    ``patient`` and ``record_ref``, the columns the index reads, are the events'."""
    now = int(time.time())
    filler = bytes(65)
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        for first in range(0, len(events), 20_000):
            rows = [
                (
                    start + i,
                    (start + i).to_bytes(32, "big"),
                    "RecordAccess",
                    "0x" + "11" * 20,
                    "0x" + patient.hex(),
                    ref,
                    hashlib.sha256((start + i).to_bytes(8, "big")).digest(),
                    filler,
                    "{}",
                    now,
                    now,
                    now + 3600,
                    "not-applicable",
                    filler,
                )
                for i, (patient, ref) in enumerate(events[first : first + 20_000], start=first)
            ]
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany(_EVENT_ROW, rows)
            cursor.execute("COMMIT")
        cursor.close()
    finally:
        raw.close()


@dataclass
class StoreUpkeep:
    """The anchor worker's upkeep (``IndexSequencer.advance``) over a SQLite store, per event
    of each checkpoint: the thread's CPU time of each stage and of the whole advance, its wall
    time, and the rows it wrote."""

    name: str
    build_seconds: float = 0.0
    keys: list[float] = field(default_factory=list)
    update: list[float] = field(default_factory=list)
    store: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    rows: list[float] = field(default_factory=list)


#: Set to the path of an earlier ``ledger/index_store.py`` (``git show
#: REV:ledger/index_store.py > /tmp/index_store_before.py``) to run its sequencer beside
#: today's, over a store at the migration it was written for (:data:`BEFORE_STORE_REVISION`).
BEFORE_STORE_ENV = "MEDTRAIL_BENCH_INDEX_STORE_BEFORE"
BEFORE_STORE_REVISION = "0006"  # a node row per trie node, frontiers stored


def _load(path: str, name: str) -> ModuleType:
    """The module at ``path``, loaded as ``name`` beside the installed one."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _fresh_store(cfg: Config, name: str, revision: str | None) -> Store:
    """An empty SQLite store in the run's directory, migrated to ``revision`` (None: head)."""
    path = cfg.workdir / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{suffix}"):
            os.remove(f"{path}{suffix}")
    store = Store(f"sqlite:///{path}")
    if revision is None:
        store.migrate()
    else:
        from alembic import command
        from alembic.config import Config as AlembicConfig

        config = AlembicConfig()
        config.set_main_option("script_location", "ledger:migrations")
        with store.engine.connect() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            connection.commit()
    return store


def _rows_written(store: Store) -> int:
    """Rows in the index's tables (either layout): what the updates wrote, net of pruning."""
    with store.read() as connection:
        names = {
            row[0]
            for row in connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
            )
        }
        return sum(
            int(connection.exec_driver_sql(f"SELECT COUNT(*) FROM {name}").scalar_one())
            for name in ("index_nodes", "index_frontiers", "index_tiles", "index_versions")
            if name in names
        )


def store_upkeep(cfg: Config, s: Shape, batches: int) -> list[StoreUpkeep]:
    """The same log in a SQLite store (rows bulk-inserted), indexed by ``IndexSequencer`` in one
    advance, then ``batches`` checkpoints of ``BATCH`` events each advanced as the anchor worker
    does (events read back from the table, the update, what it wrote stored). With
    :data:`BEFORE_STORE_ENV` set, the earlier sequencer does the same over a store of its own,
    on the same events, the two alternating which goes first from checkpoint to checkpoint."""
    variants: list[tuple[StoreUpkeep, Store, Any]] = []
    before = os.environ.get(BEFORE_STORE_ENV)
    if before:
        module = _load(before, "_index_store_before")
        store = _fresh_store(cfg, "index-store-before", BEFORE_STORE_REVISION)
        variants.append((StoreUpkeep("before"), store, module.IndexSequencer(store)))
    store = _fresh_store(cfg, "index-store", None)
    variants.append((StoreUpkeep("today"), store, IndexSequencer(store)))
    source = Log.of(s)  # the same events as the in-memory index's
    events = source.events(s.events)
    for found, store, sequencer in variants:
        insert_events(store, events, 0)
        start = time.perf_counter()
        sequencer.advance(s.events)
        found.build_seconds = time.perf_counter() - start
    del events
    for turn in range(batches):
        size = s.events + turn * BATCH
        batch = source.events(BATCH)
        order = variants if turn % 2 == 0 else variants[::-1]
        for found, store, sequencer in order:
            insert_events(store, batch, size)
            times = sequencer.times
            keys, update, stored = times.keys_cpu, times.update_cpu, times.store_cpu
            rows = _rows_written(store)
            gc.collect()
            began, began_wall = time.thread_time(), time.perf_counter()
            sequencer.advance(size + BATCH)
            found.cpu.append((time.thread_time() - began) / BATCH)
            found.wall.append((time.perf_counter() - began_wall) / BATCH)
            found.keys.append((times.keys_cpu - keys) / BATCH)
            found.update.append((times.update_cpu - update) / BATCH)
            found.store.append((times.store_cpu - stored) / BATCH)
            found.rows.append((_rows_written(store) - rows) / BATCH)
    for _, store, _ in variants:
        store.dispose()
    return [found for found, _, _ in variants]


@dataclass
class WorkerLoad:
    """The anchor worker's index load (``IndexSequencer.reload``) in a process of its own
    (``benchmarks/_indexprobe.py``): wall and CPU seconds, and MiB of RSS above the imports at
    the peak and after it (what the worker keeps)."""

    size: int
    keys: int
    nodes: int
    wall: float
    cpu: float
    peak: float
    kept: float


def worker_load(path: Path) -> WorkerLoad:
    """Load the index of the SQLite store at ``path`` as the anchor worker does when it starts."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._indexprobe", f"sqlite:///{path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(done.stdout)
    stages = found["stages"]
    return WorkerLoad(
        found["size"],
        found["keys"],
        found["nodes"],
        found["wall"],
        found["cpu"],
        stages["load"] - stages["imports"],
        stages["after"] - stages["imports"],
    )


def worker_loads(cfg: Config, s: Shape) -> list[WorkerLoad]:
    """The load at a tenth of the log (a store of its own, over the same records, indexed in
    one advance) and over the store :func:`store_upkeep` left (the whole log and its
    checkpoints): whether the load's CPU and memory grow with the log."""
    small = Shape(s.events // 10, s.records, s.patients)
    store = _fresh_store(cfg, "index-load-small", None)
    insert_events(store, Log.of(small).events(small.events), 0)
    IndexSequencer(store).advance(small.events)
    store.dispose()
    return [worker_load(cfg.workdir / f"{name}.db") for name in ("index-load-small", "index-store")]


# --------------------------------------------------------------------------- lookups


@dataclass
class Lookups:
    generate: list[float] = field(default_factory=list)
    verify: list[float] = field(default_factory=list)
    #: CPU seconds of each lookup, generated and verified.
    cpu: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    entries: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)


def lookups(built: MemoryIndex, keys: Sequence[bytes]) -> Lookups:
    """Proofs as a server makes them (plan, one fetch, assemble, encode) and as a client
    checks them (decode, check the served list against the root at the checkpoint)."""
    found = Lookups()
    nodes, depth, size, root = built.nodes(), built.depth(), built.size, built.root()
    for key in keys:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        plan = index.lookup_plan(key, depth)
        fetched = {node: nodes[node] for node in plan if node in nodes}
        entries = built.indexes(key)
        encoded = index.assemble_lookup(key, fetched).to_bytes()
        t1 = time.perf_counter()
        proof = LookupProof.from_bytes(encoded)
        index.verify_list_lookup(key, entries, size, proof, root)
        t2 = time.perf_counter()
        found.cpu.append(time.thread_time() - c0)
        found.generate.append(t1 - t0)
        found.verify.append(t2 - t1)
        found.sizes.append(len(encoded))
        found.entries.append(len(entries))
        found.depths.append(proof.depth)
    return found


def proof_sizes(keys: int, samples: int) -> tuple[float, int, float, float, float]:
    """An index of ``keys`` keys of one entry each: build seconds, depth, mean proof bytes of a
    present and an absent key, mean depth of a present key's path."""
    rng = random.Random(keys)
    present = [rng.randbytes(32) for _ in range(keys)]
    start = time.perf_counter()
    built = MemoryIndex.build((key,) for key in present)
    seconds = time.perf_counter() - start
    here = lookups(built, rng.sample(present, samples))
    absent = lookups(built, [rng.randbytes(32) for _ in range(samples)])
    return (
        seconds,
        built.depth(),
        statistics.mean(here.sizes),
        statistics.mean(absent.sizes),
        statistics.mean(here.depths),
    )


# --------------------------------------------------------------------------- the run


def run(cfg: Config) -> Section:
    s = shape(cfg)
    section = Section(
        "The verifiable index: upkeep (in process, and in the anchor worker), lookup proofs, "
        "proof sizes"
    )
    source = Log.of(s)

    log(f"index: baselines (SHA-256, recovery, RFC 9162 append onto {s.events:,} leaves)")
    hash_cost = sha256_cost()
    compression = compression_cost()
    floor = recover_cost()
    append = log_append_cost(s.events)

    log(f"index: rebuilding the index over {s.events:,} events (as the audit does)")
    gc.collect()
    start = time.perf_counter()
    built = MemoryIndex.build(index.keys_of(p, r) for p, r in source.stream(s.events))
    rebuild = time.perf_counter() - start
    log(f"index: {len(built):,} keys, depth {built.depth()}, rebuilt in {rebuild:.1f} s")

    batches = cfg.pick(5, 3)
    log(f"index: {batches} checkpoints of {BATCH:,} events")
    runs = [upkeep(built, source, BATCH) for _ in range(batches)]
    best = min(runs, key=lambda r: r.total)
    median = sorted(runs, key=lambda r: r.total)[len(runs) // 2]
    calls = hash_calls(built, source, BATCH)

    stages = Table(
        [
            "Stage (per event)",
            "CPU, median batch (µs)",
            "CPU, best batch (µs)",
            "x SHA-256 call",
            "x RFC 9162 append",
        ],
        align="lrrrr",
    )

    def stage_row(name: str, pick: Callable[[Upkeep], float]) -> None:
        stages.add(
            name,
            us(pick(median)),
            us(pick(best)),
            f"{pick(median) / hash_cost:,.1f}",
            f"{pick(median) / append:,.2f}",
        )

    stage_row("keys (2 SHA-256 per event)", lambda r: r.keys)
    stage_row("group into key → new leaf indexes", lambda r: r.group)
    stage_row("apply (lists, trie, keep the nodes)", lambda r: r.apply)
    stage_row("… of which garbage collection", lambda r: r.gc)
    stage_row("**index upkeep** (keys + group + apply)", lambda r: r.total)
    stages.add("RFC 9162 log append (today's sequencer, in memory)", us(append), "", "", "1.00")
    stages.add("one SHA-256 call (86 bytes)", us(hash_cost), "", "1.0", "")
    stages.add(
        f"SHA-256 calls per event of the upkeep: {calls:,.1f}, at the cost of one call",
        us(calls * hash_cost),
        "",
        f"{calls:,.1f}",
        f"{calls * hash_cost / append:,.2f}",
    )
    stages.add(
        f"… at the cost of SHA-256's compression alone ({compression * 1e9:,.0f} ns per 86 bytes)",
        us(calls * compression),
        "",
        "",
        f"{calls * compression / append:,.2f}",
    )
    stages.add("one signature recovery (DESIGN §9's floor)", us(floor), "", "", "")

    log("index: batch sizes")
    scan = Table(
        [
            "Events per update",
            "Updates",
            "Upkeep CPU per event (µs)",
            "Trie nodes written per event",
        ],
        align="rrrr",
    )
    for size, repeat in cfg.pick(
        [(1, 300), (10, 100), (100, 30), (1_000, 10)], [(1, 100), (10, 30), (100, 10), (1_000, 3)]
    ):
        trials = [upkeep(built, source, size) for _ in range(repeat)]
        scan.add(
            count(size),
            count(repeat),
            us(statistics.median(r.total for r in trials)),
            f"{statistics.mean(r.nodes for r in trials) / size:,.1f}",
        )
    scan.add(count(BATCH), count(batches), us(median.total), f"{median.nodes / BATCH:,.1f}")
    if not cfg.quick:
        large = upkeep(built, source, 10 * BATCH)
        scan.add(count(10 * BATCH), "1", us(large.total), f"{large.nodes / (10 * BATCH):,.1f}")
    log("index: what-if, one key per event")
    single = [upkeep(built, source, BATCH, record_keys_of) for _ in range(batches)]
    one_key = sorted(single, key=lambda r: r.total)[len(single) // 2]
    before = reference()
    compared = None
    if before is not None:
        log(f"index: the earlier implementation ({os.environ[BEFORE_ENV]}) side by side")
        compared = versus(built, source, before, cfg.pick(6, 4))

    log("index: lookup proofs")
    rng = random.Random(7)
    samples = cfg.pick(1000, 300)
    records = [index.record_key(ref) for ref in rng.sample(source.refs, samples)]
    patients = list({index.patient_key(p) for p in rng.sample(source.owners, samples)})
    absent = [rng.randbytes(32) for _ in range(samples)]
    kinds = {
        "a record's trail": lookups(built, records),
        "a patient's history": lookups(built, patients),
        "a key with no entries (absence)": lookups(built, absent),
    }
    proofs = Table(
        [
            "Lookup",
            "Entries (mean)",
            "Generate p50 / p99 (ms)",
            "Verify p50 / p99 (ms)",
            "Both, p99 (ms)",
            "CPU, p50 / p99 (ms)",
            "Proof bytes mean / max",
        ],
        align="lrrrrrr",
    )
    worst = worst_wall = 0.0
    for name, found in kinds.items():
        both = [g + v for g, v in zip(found.generate, found.verify, strict=True)]
        worst = max(worst, percentile(found.cpu, 99))
        worst_wall = max(worst_wall, percentile(both, 99))
        proofs.add(
            name,
            f"{statistics.mean(found.entries):,.1f}",
            f"{ms(percentile(found.generate, 50))} / {ms(percentile(found.generate, 99))}",
            f"{ms(percentile(found.verify, 50))} / {ms(percentile(found.verify, 99))}",
            ms(percentile(both, 99)),
            f"{ms(percentile(found.cpu, 50))} / {ms(percentile(found.cpu, 99))}",
            f"{statistics.mean(found.sizes):,.0f} / {max(found.sizes):,}",
        )

    log("index: proof sizes against the number of keys")
    sizes = Table(
        [
            "Keys",
            "Built in (s)",
            "Deepest leaf",
            "Mean path depth",
            "Proof bytes, present (mean)",
            "Proof bytes, absent (mean)",
        ],
        align="rrrrrr",
    )
    key_counts = cfg.pick([10**4, 10**5, 10**6], [10**4, 10**5])
    for keys in key_counts:
        seconds, deepest, present, missing, mean_depth = proof_sizes(keys, 500)
        sizes.add(
            count(keys),
            f"{seconds:,.1f}",
            str(deepest),
            f"{mean_depth:.1f}",
            f"{present:,.0f}",
            f"{missing:,.0f}",
        )

    section.text(
        f"""A synthetic log of {s.events:,} events over {s.records:,} records of {s.patients:,}
        patients; each event has two keys (its record's, its patient's), its record chosen
        uniformly (so a checkpoint touches as many distinct keys as it can: the trie's worst
        case). The index over the whole log is rebuilt in memory with `MemoryIndex.build` —
        what the regulator's audit does from its mirror — in {rebuild:,.1f} s
        ({s.events / rebuild:,.0f} events/s, keys derived included): {len(built):,} keys,
        deepest leaf at depth {built.depth()}. Then {batches} checkpoints of {BATCH:,} events
        are applied as the sequencer would (`keys_of` per event, `batch_of`,
        `MemoryIndex.apply`), each touching about {median.distinct_keys:,} distinct keys and
        writing {median.nodes:,} trie nodes ({median.node_bytes / BATCH:,.0f} bytes of node
        payload per event, to be kept per version by a store). CPU is the thread's own
        (`time.thread_time`); side by side, in the same run: one SHA-256 call, the RFC 9162
        log's own append of a leaf onto a tree of {s.events:,} leaves, one signature
        recovery."""
    )
    section.table(stages)
    section.text(
        """Batching per checkpoint is what makes the upkeep affordable: the trie's upper levels
        are shared by all the keys of a batch and hashed once per batch; an update per event
        rewrites the whole path of its two keys each time."""
    )
    section.table(scan)
    if compared is not None:
        versus_table = Table(
            [
                "Stage (per event)",
                "Before, CPU median (µs)",
                "Today, CPU median (µs)",
                "Today / before (median of the batches' ratios)",
                "Before, x SHA-256 call",
                "Today, x SHA-256 call",
            ],
            align="lrrrrr",
        )
        stage_names = ["keys (`keys_of` per event)", "group (`batch_of`)", "update (`update`)"]
        for at, name in enumerate([*stage_names, "**keys + group + update**"]):

            def pick(row: tuple[float, float, float], at: int = at) -> float:
                return sum(row) if at == 3 else row[at]

            old_cpu = statistics.median(pick(r) for r in compared.before)
            new_cpu = statistics.median(pick(r) for r in compared.today)
            ratio = statistics.median(
                pick(n) / pick(o) for o, n in zip(compared.before, compared.today, strict=True)
            )
            versus_table.add(
                name,
                us(old_cpu),
                us(new_cpu),
                f"{ratio:.2f}",
                f"{old_cpu / hash_cost:,.1f}",
                f"{new_cpu / hash_cost:,.1f}",
            )
        section.text(
            f"""Before and after, in the same process: the earlier `ledger/index.py` (named by
            `{BEFORE_ENV}`) loaded beside today's, both computing the same
            {len(compared.today)} checkpoints of {BATCH:,} events from the same index (the update
            only computes; which goes first alternates from batch to batch; their roots, nodes
            and frontiers are checked identical). The thread's CPU time per event."""
        )
        section.table(versus_table)
    section.text(
        f"""What if an event had one key, its record's — a patient's key then listing the
        first event of each of their records, updated only when a record appears (none does in
        this log, whose records all exist): {us(one_key.total)} µs per event, touching
        {one_key.distinct_keys:,} keys and writing {one_key.nodes / BATCH:,.1f} nodes per event
        per checkpoint of {BATCH:,}. A patient's history would then be proven by one lookup
        of their key and one per record."""
    )
    section.text(
        f"""Lookup proofs on the same index (latest version): generated as a store-backed
        server would (`lookup_plan`, the {2 * built.depth() + 1} planned positions fetched from
        the node mapping in one pass, `assemble_lookup`, encoded) and verified as a client
        would (decoded, the served list checked — strictly increasing, below the log size,
        its RFC 9162 head recomputed — and the trie path hashed up to the root). Wall time
        and the thread's CPU time per lookup; {samples:,} keys of each kind."""
    )
    section.table(proofs)
    section.text(
        """Proof size against the number of keys (indexes of that many keys, one entry each;
        500 lookups each): a proof is 2 bytes of depth, a bitmap of the empty siblings, 32
        bytes per non-empty sibling and a terminal byte (64 bytes more for an absence proof
        ending at another key's leaf); it grows with log2 of the number of keys."""
    )
    section.table(sizes)
    key_count = len(built)
    record_sizes = kinds["a record's trail"].sizes
    del built, kinds
    gc.collect()

    log(f"index: the anchor worker's upkeep over SQLite ({s.events:,} events, then checkpoints)")
    compared_stores = store_upkeep(cfg, s, batches)
    stored = compared_stores[-1]
    earlier = compared_stores[0] if len(compared_stores) > 1 else None
    headers = ["Stage (per event)"]
    if earlier is not None:
        headers += ["Before, CPU median (µs)", "Today / before (median of ratios)"]
    headers += [
        "CPU, median checkpoint (µs)",
        "CPU, best checkpoint (µs)",
        "x SHA-256 call",
        "x RFC 9162 append",
    ]
    worker = Table(headers, align="l" + "r" * (len(headers) - 1))
    worker_stages: tuple[tuple[str, Callable[[StoreUpkeep], list[float]]], ...] = (
        ("keys (the checkpoint's events read back, their keys)", lambda f: f.keys),
        ("update (`index.update` over the trie and frontiers in memory)", lambda f: f.update),
        (
            "store (the tiles it changed and the version written in one transaction)",
            lambda f: f.store,
        ),
        ("**the whole advance**", lambda f: f.cpu),
        ("the whole advance, wall time (the commit's `fsync`, the load)", lambda f: f.wall),
    )
    for name, pick_values in worker_stages:
        values = pick_values(stored)
        mid = statistics.median(values)
        row = [name]
        if earlier is not None:
            old = pick_values(earlier)
            ratio = statistics.median(n / o for o, n in zip(old, values, strict=True) if o)
            row += [us(statistics.median(old)), f"{ratio:.2f}"]
        row += [us(mid), us(min(values)), f"{mid / hash_cost:,.1f}", f"{mid / append:,.2f}"]
        worker.add(*row)
    rows_row = ["rows written per event"]
    if earlier is not None:
        rows_row += [f"{statistics.median(earlier.rows):,.2f}", ""]
    rows_row += [f"{statistics.median(stored.rows):,.2f}", "", "", ""]
    worker.add(*rows_row)
    compared_text = (
        ""
        if earlier is None
        else f""" Beside it, in the same run, the earlier sequencer (`{BEFORE_STORE_ENV}`, a
        row per trie node and a frontier row per key, over a store at migration
        {BEFORE_STORE_REVISION}; built in {earlier.build_seconds:,.1f} s) advanced over the same
        events in a store of its own, the two alternating which goes first."""
    )
    section.text(
        f"""The anchor worker's upkeep, store-backed: the same {s.events:,} events as rows of a
        SQLite store (bulk-inserted; only `patient` and `record_ref` matter here), indexed by
        `IndexSequencer.advance` in one batch ({stored.build_seconds:,.1f} s, wall), then
        {batches} checkpoints of {BATCH:,} events, each advanced as the worker does: the events
        read back from the table and their keys derived, `update`, and what it wrote stored
        in one transaction (WAL, `synchronous=FULL`). The thread's CPU time per event of each
        stage (SQLite runs in the thread: its work is counted).{compared_text}"""
    )
    section.table(worker)
    log("index: the anchor worker's load at start, at two log sizes")
    loads = worker_loads(cfg, s)
    load_table = Table(
        [
            "Log (events)",
            "Keys",
            "Trie nodes",
            "Load, wall (s)",
            "Load, CPU (s)",
            "CPU per event (µs)",
            "Peak RSS above the imports (MiB)",
            "RSS kept (MiB)",
        ],
        align="rrrrrrrr",
    )
    for load in loads:
        load_table.add(
            count(load.size),
            count(load.keys),
            count(load.nodes),
            f"{load.wall:,.2f}",
            f"{load.cpu:,.2f}",
            us(load.cpu / load.size),
            f"{load.peak:,.0f}",
            f"{load.kept:,.0f}",
        )
    section.text(
        """The anchor worker's load when it starts (`IndexSequencer.reload`, in a process of its
        own: `benchmarks/_indexprobe.py`): the trie read from its tiles, and every key's list
        frontier rebuilt from the events table — streamed key by key over the events'
        `(record_ref, leaf_index)` and `(patient, leaf_index)` indexes — and checked against
        the key's leaf. Over a store of a tenth of the log (same records, indexed in one
        advance) and over the store above. CPU is the process's; RSS from /proc (`VmHWM`,
        `VmRSS`)."""
    )
    section.table(load_table)
    worker_cpu = statistics.median(stored.cpu)
    total = median.total
    cause = (
        ""
        if total <= GOAL_UPKEEP_US / 1e6
        else (
            f"pure Python: {total / hash_cost:,.0f} SHA-256 calls' worth of CPU per event, for "
            f"{median.nodes / BATCH:,.1f} trie nodes and the lists of "
            f"{median.distinct_keys / BATCH:,.1f} keys; the interpreter and the trie's cache "
            "misses cost more than the hashing (see docs/index.md)"
        )
    )
    section.goals.append(
        Goal(
            f"Index upkeep per event, checkpoints of {BATCH:,} over a {s.events:,}-event log",
            f"≤ {GOAL_UPKEEP_US:g} µs",
            f"{us(total)} µs median, {us(best.total)} µs best "
            f"({total / append:,.1f}x the RFC 9162 append, {total / floor:,.2f}x a recovery)",
            total <= GOAL_UPKEEP_US / 1e6,
            ("" if s.events == 10**6 else "quick run: the goal's log is 10^6 events. ") + cause,
        )
    )
    section.goals.append(
        Goal(
            "Index upkeep per event in the anchor worker (`IndexSequencer`, SQLite), "
            f"checkpoints of {BATCH:,} over a {s.events:,}-event log",
            f"≤ {GOAL_UPKEEP_US:g} µs",
            f"{us(worker_cpu)} µs CPU median, of which the store "
            f"{us(statistics.median(stored.store))} µs",
            worker_cpu <= GOAL_UPKEEP_US / 1e6,
            ("" if s.events == 10**6 else "quick run: the goal's log is 10^6 events. ")
            + (
                ""
                if worker_cpu <= GOAL_UPKEEP_US / 1e6
                else (
                    f"the SQL writes: {statistics.median(stored.rows):,.2f} rows per event into "
                    "a table of millions (see the index section)"
                )
            ),
        )
    )
    largest = loads[-1]
    section.goals.append(
        Goal(
            f"The anchor worker's index load at start, {largest.size:,}-event log",
            "report",
            f"{largest.cpu:,.1f} s CPU ({us(largest.cpu / largest.size)} µs per event), "
            f"{largest.wall:,.1f} s wall, peak {largest.peak:,.0f} MiB above the imports",
            None,
            "frontiers rebuilt from the events, key by key (see the index section)",
        )
    )
    section.goals.append(
        Goal(
            f"Index lookup proof generated and verified, {s.events:,}-event log",
            f"≤ {GOAL_LOOKUP_MS:g} ms",
            f"wall p99 {ms(worst_wall)} ms (CPU p99 {ms(worst)} ms), the worst kind of lookup",
            worst_wall <= GOAL_LOOKUP_MS / 1e3,
            (
                ""
                if worst_wall <= GOAL_LOOKUP_MS / 1e3
                else (
                    "the tail is the machine's load: wall time includes time given to other "
                    f"processes (load average {load_average():.1f}; compare the CPU time)"
                )
            ),
        )
    )
    section.goals.append(
        Goal(
            f"Index lookup proof size, {key_count:,} keys",
            "report",
            f"{statistics.mean(record_sizes):,.0f} bytes mean, {max(record_sizes):,} max",
            None,
            "grows with log2 of the number of keys (see the index section)",
        )
    )
    return section
