"""Ingest's CPU cost per event and per stage, in process, against signature recovery.

The stages of ``POST /v1/events`` without HTTP: JSON parse (``SignedEvent.model_validate_json``),
EIP-712 digest, signature recovery (the floor: libsecp256k1 through coincurve), the rules and
the store (``Ingestor.submit`` minus the stages it shares with the others), receipt signing.
Digest, recovery and receipt signing are timed *inside* ``Ingestor.submit`` (the functions it
calls are wrapped for the run), so "rules + store" is exactly what is left; recovery is also
timed alone, in a tight loop, as the reference.
"""

from __future__ import annotations

import gc
import resource
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine

import ledger.ingest
import ledger.merkle
from benchmarks._common import SHARED, Config, Goal, Section, Table, log, us
from benchmarks._pg import throwaway_database
from benchmarks._world import Chain, Institution, custodian_accesses, deploy
from ledger import gc_tuning
from ledger.eip712 import Domain, recover
from ledger.events import InstitutionKind, SignedEvent
from tests.support.anvil import Anvil

BATCHES = (1, 100, 1000)

#: The A/B of migration 0009: the trail indexes as they were before it (whole values), put
#: back on a migrated store in SQL both databases read (the store stays at 0009's revision).
WHOLE_KEY_INDEXES = (
    "DROP INDEX ix_events_record_prefix_leaf_index",
    "DROP INDEX ix_events_patient_prefix_leaf_index",
    "CREATE INDEX ix_events_record_ref_leaf_index ON events (record_ref, leaf_index)",
    "CREATE INDEX ix_events_patient_leaf_index ON events (patient, leaf_index)",
)
#: The trail indexes of each layout, whose size the A/B reports.
TRAIL_INDEXES = {
    "prefix": ("ix_events_record_prefix_leaf_index", "ix_events_patient_prefix_leaf_index"),
    "whole": ("ix_events_record_ref_leaf_index", "ix_events_patient_leaf_index"),
}


class Probe:
    """Accumulated CPU seconds (this thread's) per stage, from wrapped functions."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        seconds = self.seconds

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[stage] += time.thread_time() - start

        return timed


#: What ``Ingestor.submit`` calls, by the name it calls it under, and the stage it belongs to.
_WRAPPED = (
    (ledger.ingest, "recover", "recover"),
    (ledger.ingest, "sign_digest", "receipt"),
    # The batch receipt: each receipt's leaf, the batch's tree and paths, its digest.
    (ledger.ingest, "receipt_leaves", "receipt"),
    (ledger.merkle, "batch_proofs", "receipt"),
    (ledger.ingest, "receipt_batch_digest", "receipt"),
    (SignedEvent, "digest", "digest"),
)


@contextmanager
def instrumented(probe: Probe) -> Iterator[None]:
    """Time digest, recovery and receipt signing where ``Ingestor.submit`` calls them."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in _WRAPPED]
    for (owner, name, stage), (_, _, original) in zip(_WRAPPED, saved, strict=True):
        setattr(owner, name, probe.wrap(stage, original))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def recover_alone(events: list[SignedEvent], domain: Domain) -> float:
    """CPU seconds per event of signature recovery alone (digests computed beforehand)."""
    pairs = [(e.digest(domain), e.signature) for e in events]
    start = time.thread_time()
    for digest, signature in pairs:
        recover(digest, signature)
    return (time.thread_time() - start) / len(pairs)


def cell(seconds: float, floor: float) -> str:
    return f"{us(seconds)} ({seconds / floor:.2f}x)"


@contextmanager
def collector_as_served() -> Iterator[None]:
    """The garbage collector tuned as ``medtrail serve`` tunes it (``ledger.gc_tuning``), then
    put back: else its collections, rarer in the server, land in whichever stage runs."""
    thresholds = gc.get_threshold()
    gc_tuning.tune()
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def run_sql(url: str, statements: Sequence[str]) -> list[Any]:
    """Run ``statements`` on the store at ``url`` in one transaction; each one's first value."""
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            results = [connection.exec_driver_sql(sql) for sql in statements]
            return [r.scalar() if r.returns_rows else None for r in results]
    finally:
        engine.dispose()


def index_bytes(url: str, names: Sequence[str]) -> int:
    """The bytes the indexes ``names`` take in the store at ``url``."""
    if url.startswith("sqlite"):
        sql = "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = '{}'"
    else:
        sql = "SELECT pg_relation_size('{}')"
    return sum(int(v) for v in run_sql(url, [sql.format(name) for name in names]))


@dataclass
class Layout:
    """One store of the A/B and the CPU its batches cost (user, system: seconds each)."""

    name: str
    url: str
    cpu: list[tuple[float, float]] = field(default_factory=list)

    def per_event(self, batch: int) -> tuple[float, float, float]:
        """Median and mean CPU per event, and the mean system time per event."""
        totals = [u + s for u, s in self.cpu]
        return (
            statistics.median(totals) / batch,
            sum(totals) / len(totals) / batch,
            sum(s for _, s in self.cpu) / len(self.cpu) / batch,
        )


def trail_index_ab(cfg: Config, chain: Chain, backend: str, stack: ExitStack) -> list[Any]:
    """Migration 0009's A/B, in process: the same batches of 1,000 submitted to a store with
    the trail indexes keyed by prefix (medtrail's) and to one keyed by whole values, batch by
    batch, the order alternated; a table row per layout."""
    batch, batches = 1000, cfg.pick(60, 8)
    layouts = []
    for name in ("prefix", "whole"):
        if backend == "sqlite":
            url = f"sqlite:///{cfg.workdir / f'ingest-{name}.db'}"
        else:
            assert cfg.postgres_url is not None
            url = stack.enter_context(throwaway_database(cfg.postgres_url))
        chain.open(url).close()  # migrated and bound to the deployment
        if name == "whole":
            run_sql(url, WHOLE_KEY_INDEXES)
        layouts.append(Layout(name, url))
    opened = [chain.open(layout.url) for layout in layouts]
    for each in opened:
        stack.callback(each.close)
    hospital = Institution("A/B Hospital", InstitutionKind.HOSPITAL, chain.domain)
    opened[0].register_institution(hospital.address, hospital.kind, hospital.name)
    log(f"ingest: {backend}, trail indexes A/B, {batch * batches:,} events a store")
    # As many records and patients as the HTTP benchmark's eight institutions use.
    events = custodian_accesses(hospital, batch * batches, records=4000, seed=9)
    for i in range(batches):
        chunk = events[i * batch : (i + 1) * batch]
        pairs = list(zip(layouts, opened, strict=True))
        for layout, ledger_ in pairs if i % 2 == 0 else pairs[::-1]:
            before = resource.getrusage(resource.RUSAGE_THREAD)
            receipts = ledger_.submit(chunk)
            after = resource.getrusage(resource.RUSAGE_THREAD)
            assert not any(r.duplicate for r in receipts)
            layout.cpu.append((after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime))
    rows = []
    for layout in layouts:
        median, mean, system = layout.per_event(batch)
        size = index_bytes(layout.url, TRAIL_INDEXES[layout.name])
        rows.append(
            (
                "SQLite" if backend == "sqlite" else "PostgreSQL",
                "prefix (medtrail)" if layout.name == "prefix" else "whole values (before 0009)",
                f"{batches * batch:,}",
                f"{us(median)} µs",
                f"{us(mean)} µs",
                f"{us(system)} µs",
                f"{size / 2**20:.1f} MiB ({size / (batches * batch):.0f} B per event)",
            )
        )
    return rows


def run(cfg: Config, anvil: Anvil) -> Section:
    with collector_as_served():
        return _run(cfg, anvil)


def _run(cfg: Config, anvil: Anvil) -> Section:
    section = Section("Ingest: CPU per event and per stage, in process")
    chain = deploy(anvil, cfg.workdir, "ingest")
    counts = {1: cfg.pick(300, 50), 100: cfg.pick(5000, 500), 1000: cfg.pick(10_000, 2000)}
    backends = ["sqlite"] + (["postgresql"] if cfg.postgres_url else [])
    table = Table(
        [
            "Store",
            "Batch",
            "Events",
            "Parse",
            "Digest",
            "Recover (in submit)",
            "Receipt signing",
            "Rules + store",
            "Submit, CPU",
            "Submit, wall",
            "Events/s per core (parse + submit CPU)",
        ]
    )
    floors: list[float] = []
    worst: list[tuple[float, str]] = []
    ab = Table(
        [
            "Store",
            "Trail indexes keyed by",
            "Events a store",
            "Submit CPU per event, median batch",
            "mean",
            "of it system",
            "Trail indexes' size",
        ]
    )
    for backend in backends:
        with ExitStack() as stack:
            for row in trail_index_ab(cfg, chain, backend, stack):
                ab.add(*row)
        with ExitStack() as stack:
            if backend == "sqlite":
                url = f"sqlite:///{cfg.workdir / 'ingest.db'}"
            else:
                assert cfg.postgres_url is not None
                url = stack.enter_context(throwaway_database(cfg.postgres_url))
            ledger_ = chain.open(url)
            stack.callback(ledger_.close)
            hospital = Institution("Bench Hospital", InstitutionKind.HOSPITAL, chain.domain)
            ledger_.register_institution(hospital.address, hospital.kind, hospital.name)
            for batch in BATCHES:
                n = counts[batch]
                log(f"ingest: {backend}, batch {batch}, {n:,} events")
                events = custodian_accesses(hospital, n, seed=batch)
                wire = [e.model_dump_json() for e in events]
                floor = recover_alone(events, chain.domain)
                floors.append(floor)
                start = time.thread_time()
                parsed = [SignedEvent.model_validate_json(w) for w in wire]
                parse = (time.thread_time() - start) / n
                ledger_.submit(parsed[:1])  # warm-up (pool, caches); not counted
                parsed = parsed[1:]
                probe = Probe()
                with instrumented(probe):
                    wall0, cpu0 = time.perf_counter(), time.thread_time()
                    for first in range(0, len(parsed), batch):
                        receipts = ledger_.submit(parsed[first : first + batch])
                        assert not any(r.duplicate for r in receipts)
                    wall = (time.perf_counter() - wall0) / len(parsed)
                    cpu = (time.thread_time() - cpu0) / len(parsed)
                stage = {k: v / len(parsed) for k, v in probe.seconds.items()}
                rest = cpu - stage["digest"] - stage["recover"] - stage["receipt"]
                where = f"{'SQLite' if backend == 'sqlite' else 'PostgreSQL'}, batch {batch}"
                if batch > 1:  # single events pay a whole transaction each: shown, not judged
                    for name, value in (
                        ("parse", parse),
                        ("digest", stage["digest"]),
                        ("receipt signing", stage["receipt"]),
                        ("rules + store", rest),
                    ):
                        worst.append((value / floor, f"{name} ({where})"))
                SHARED[f"ingest {backend} {batch}"] = parse + cpu
                table.add(
                    "SQLite" if backend == "sqlite" else "PostgreSQL",
                    f"{batch:,}",
                    f"{n:,}",
                    cell(parse, floor),
                    cell(stage["digest"], floor),
                    cell(stage["recover"], floor),
                    cell(stage["receipt"], floor),
                    cell(rest, floor),
                    us(cpu),
                    us(wall),
                    f"{1 / (parse + cpu):,.0f}",
                )
    floor = sorted(floors)[len(floors) // 2]
    section.text(
        f"""Signed `RecordAccess` events by a registered hospital to its own records (no grant to
        look up: the bulk of a hospital's traffic), submitted through `Ledger.submit` in
        batches; the ledger runs in `rpc` mode against the run's anvil (institutions cached, and
        the garbage collector tuned, as in service). Figures are microseconds of CPU time per
        event (the thread's own CPU time, so that other work on the machine does not inflate
        them); in brackets, the multiple of
        signature recovery timed alone in a tight loop on the row's own events, the floor
        (median over the rows: {us(floor)} µs per event, i.e. {1 / floor:,.0f} recoveries/s on
        one core). Digest, recovery and receipt signing are timed where `Ingestor.submit` calls
        them; "rules + store" is the CPU time of `submit` minus those three: the checks against
        the log and the chain cache, building the rows, the SQL statements (through the
        driver), the commit. "Submit, wall" is the elapsed time, which also holds the
        commit's `fsync` (SQLite, `synchronous=FULL`), PostgreSQL's own work in its server
        process, and time the scheduler gave to other processes."""
    )
    section.table(table)
    over = sorted(((r, n) for r, n in worst if r > 1.0), reverse=True)
    if over:
        section.text(
            "With batches, stages costing more than a recovery: "
            + "; ".join(f"{name} {ratio:.1f}x" for ratio, name in over)
            + ". Single events (batch 1) pay a whole write transaction each: its statements,"
            " the commit and its `fsync` dwarf every other stage."
        )
    else:
        section.text("With batches, every stage costs less than a signature recovery.")
    section.text(
        """The trail indexes, A/B (migration 0009, `ledger.store.models.Prefix`): the same
        batches of 1,000 accesses (4,000 records, each its patient's) submitted to two new
        stores, one with medtrail's record and patient indexes keyed by a prefix of the value,
        one with them keyed by the whole value as before 0009, batch by batch, the order
        alternated, the thread's user + system CPU of each `submit` read around it. The median
        batch is the steady cost; the mean also holds the batches that paid for a WAL checkpoint
        (SQLite) or a collection. The size is the two indexes' pages at the end."""
    )
    section.table(ab)
    section.goals.append(
        Goal(
            "Every ingest stage cheaper than signature recovery (per event, batched)",
            "< 1x recover",
            f"recover {us(floor)} µs; worst: {max(worst)[1]} {max(worst)[0]:.2f}x",
            not over,
            "rules + store: the checks against the log, SQLite/PostgreSQL maintaining the "
            "events table and its indexes, the commit (see the analysis below)"
            if over
            else "",
        )
    )
    return section
