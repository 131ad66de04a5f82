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
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import ledger.ingest
import ledger.merkle
from benchmarks._common import SHARED, Config, Goal, Section, Table, log, us
from benchmarks._pg import throwaway_database
from benchmarks._world import Institution, custodian_accesses, deploy
from ledger import gc_tuning
from ledger.eip712 import Domain, recover
from ledger.events import InstitutionKind, SignedEvent
from tests.support.anvil import Anvil

BATCHES = (1, 100, 1000)


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
    for backend in backends:
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
