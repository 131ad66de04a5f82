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
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from eth_account import Account

import ledger.ingest
import ledger.merkle
from benchmarks._common import SHARED, Config, Goal, Section, Table, log, us
from benchmarks._pg import throwaway_database
from benchmarks._world import Institution, custodian_accesses, deploy, keep_grant
from ledger import gc_tuning
from ledger.chain.consent import CommittedConsent
from ledger.eip712 import Domain, recover
from ledger.events import InstitutionKind, Purpose, SignedEvent
from ledger.rules import GrantSource, GrantStatus
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
        section = _run(cfg, anvil)
        _grant_rows(cfg, anvil, section)
        return section


class _OneAtATime:
    """A grant source that answers one question at a time (no ``grant_statuses``): ingest
    then asks each access's grant on its own, as it did before issue 15's batch."""

    def __init__(self, source: GrantSource) -> None:
        self._source = source

    def grant_status_at(
        self, grant_id: int, patient: str, grantee: str, record_ref: bytes, purpose: int, t: int
    ) -> GrantStatus | int:
        return self._source.grant_status_at(grant_id, patient, grantee, record_ref, purpose, t)


def _grant_rows(cfg: Config, anvil: Anvil, section: Section) -> None:
    """Accesses by another institution under a consent grant against a custodian's own, in
    batches of 1,000 on SQLite: the grant questions asked in one batch through the service's
    reader (as served) under one patient's grant and under many patients' (a grant each), and,
    the A/B row, one access at a time through web3 (before)."""
    chain = deploy(anvil, cfg.workdir, "ingest-grants")
    ledger_ = chain.open(f"sqlite:///{cfg.workdir / 'ingest-grants.db'}", max_future_skew=3600)
    try:
        hospital = Institution("Grant Hospital", InstitutionKind.HOSPITAL, chain.domain)
        pharmacy = Institution("Grant Pharmacy", InstitutionKind.PHARMACY, chain.domain)
        for inst in (hospital, pharmacy):
            ledger_.register_institution(inst.address, inst.kind, inst.name)
        assert ledger_.consent_v2_domain is not None
        assert ledger_.chain.consent_v2 is not None
        domain = ledger_.consent_v2_domain
        patients = cfg.pick(300, 20)
        log(f"ingest: {patients} patients each granting the pharmacy one of their records")
        granted: list[tuple[str, bytes, int]] = []  # (patient, record, grant id)
        for k in range(patients):
            patient_key = os.urandom(32)
            record = hospital.record(f"mrn-granted-{k}")
            grant = keep_grant(ledger_, patient_key, pharmacy.address, record, Purpose.TREATMENT)
            granted.append(
                (str(Account.from_key(patient_key).address), record, grant.grant_id(domain))
            )
        patient, record, grant_id = granted[0]
        served = ledger_.ingestor.grants
        assert ledger_.stored_grants is not None
        web3_one_by_one = _OneAtATime(
            CommittedConsent(ledger_.chain.consent_v2, ledger_.stored_grants, ledger_.chain)
        )
        t0 = ledger_.chain.latest_timestamp() + 1
        rounds, size = cfg.pick(3, 1), cfg.pick(1000, 200)
        log(f"ingest: accesses under a grant, {rounds} round(s) of {size:,} events per row")
        one = [(patient, record, grant_id)]
        variants: list[tuple[str, Institution, list[tuple[str, bytes, int]], GrantSource]] = [
            ("custodian accesses (no grant)", hospital, [(patient, record, 0)], served),
            ("accesses under one grant, asked in one batch (as served)", pharmacy, one, served),
            (
                f"accesses under {patients} patients' grants (one each), asked in one batch "
                "(as served)",
                pharmacy,
                granted,
                served,
            ),
            (
                "accesses under one grant, asked one at a time through web3 (before, A/B)",
                pharmacy,
                one,
                web3_one_by_one,
            ),
        ]
        cpu: dict[str, list[float]] = {label: [] for label, *_ in variants}
        wall: dict[str, list[float]] = {label: [] for label, *_ in variants}
        labels: dict[str, set[str]] = {label: set() for label, *_ in variants}
        for n in range(rounds):
            turn = n % len(variants)
            for label, inst, cases, source in variants[turn:] + variants[:turn]:
                batch = [
                    inst.sign(
                        inst.access(
                            cases[i % len(cases)][1],
                            cases[i % len(cases)][0],
                            t0 + i,  # each at its own second, as a real log's
                            custodian=hospital.address,
                            grantId=cases[i % len(cases)][2],
                        )
                    )
                    for i in range(size)
                ]
                ledger_.ingestor.grants = source
                try:
                    wall0, cpu0 = time.perf_counter(), time.thread_time()
                    receipts = ledger_.submit(batch)
                    cpu[label].append((time.thread_time() - cpu0) / size)
                    wall[label].append((time.perf_counter() - wall0) / size)
                finally:
                    ledger_.ingestor.grants = served
                labels[label].update(r.consent for r in receipts)
    finally:
        ledger_.close()
    base = statistics.median(cpu[variants[0][0]])
    table = Table(
        [
            "Accesses, SQLite, batches of " + f"{size:,}",
            "Consent",
            "CPU per event",
            "x custodian's",
            "Wall per event",
        ]
    )
    for label, *_ in variants:
        median = statistics.median(cpu[label])
        table.add(
            label,
            ", ".join(sorted(labels[label])),
            f"{us(median)} µs",
            f"{median / base:.1f}x",
            f"{us(statistics.median(wall[label]))} µs",
        )
    section.text(
        f"""Accesses by a pharmacy to a hospital's records under their patients' version-2
        grants (grants the service keeps and committed on the run's anvil): one patient's, or
        {patients} patients' in turn; each access dated at its own second, against the
        hospital's own accesses: {rounds} round(s), the rows in turn, the
        median batch's CPU time of this thread per event (the node's work is anvil's). Ingest
        asks the chain whether the grant covered each access at its `occurredAt`: now every
        question of a batch in one JSON-RPC batch through the service's own reader; before
        (the A/B row), one web3 contract call per access. The HTTP benchmark's traffic is
        custodian accesses only, so it does not show this."""
    )
    section.table(table)


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
