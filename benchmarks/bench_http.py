"""Ingest over HTTP: signed events per second through ``POST /v1/events``.

The API runs under uvicorn in its own processes (``benchmarks/_server.py``: ``rpc`` mode on the
run's anvil, two workers on one store); the load generator (``benchmarks/_loadgen.py``) runs in
two other processes with four keep-alive connections each, one per institution, posting
batches signed beforehand. Each configuration runs for a bounded time; the rate is receipts
received over the elapsed time. The servers' CPU time is read from /proc, so the CPU cost per
event is known independently of what else runs on the machine.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

from api.app import bootstrap_admin_key
from benchmarks import bench_memory
from benchmarks._common import (
    REPO,
    SHARED,
    Config,
    Goal,
    Section,
    Table,
    log,
    ms,
    percentile,
    python_env,
    us,
)
from benchmarks._pg import throwaway_database
from benchmarks._serve import Server
from benchmarks._world import Chain, Institution, batch_body, custodian_accesses, deploy
from ledger.events import InstitutionKind
from tests.support.anvil import Anvil

GOAL_RATE = 10_000
LOADGEN_PROCESSES = 2
CONNECTIONS_PER_PROCESS = 4
#: Connections each load generator uses: enough batches in flight to keep two workers busy
#: (more would only queue), and more for single events, whose requests are short.
CONNECTIONS = {1: 4, 100: 2, 1000: 2}


#: The rows' servers: medtrail itself, and the floor (``benchmarks/_floor.py``) beside it.
MEDTRAIL = "medtrail"
FLOOR = "floor"
#: medtrail with the collector as Python sets it (the A/B row of ``ledger.gc_tuning``).
UNTUNED = "medtrail, collector untuned"
#: The A/B row of api.turns: batches computing at once in a process, as before it.
AT_ONCE = "medtrail, batches computing at once"
#: How many times the rows of the headline plan (two workers, batches of 1,000: medtrail, the
#: floor and the A/B rows) run in turn, the order rotated: the goal quotes the median round's
#: ratio, as one pair of rows a few seconds apart moved ±0.1x from run to run on a shared
#: machine.
ROUNDS = 3


#: Per store: CPU seconds of anchoring what the run stored (in process), and events covered
#: (the last store of the run only: see :func:`run`).
ANCHORING: dict[str, tuple[float, int]] = {}


def measure_anchoring(chain: Chain, store: str, url: str) -> None:
    """Anchor everything the rows stored, in this process, as the anchor worker does (integrate
    the tree, advance the verifiable index, sign and send the checkpoint): its CPU time per
    event counts in the server's budget."""
    ledger = chain.open(url)
    try:
        before = ledger.chain.latest_checkpoint()
        covered_before = before.tree_size if before is not None else 0
        started = time.thread_time()
        status = ledger.anchor_now()
        cpu = time.thread_time() - started
        if status.tree_size > covered_before:
            ANCHORING[store] = (cpu, status.tree_size - covered_before)
    except Exception as exc:  # a benchmark reports; the rows stand without this figure
        log(f"http: anchoring {store} failed: {exc}")
    finally:
        ledger.close()


@dataclass(frozen=True)
class Outcome:
    variant: str
    store: str
    workers: int
    batch: int
    #: Which round of its plan the row ran in (1 where the plan runs once).
    round: int
    events: int
    requests: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    loadgen_cpu: float
    errors: dict[str, int]
    first_error: str

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_event(self) -> float:
        return self.server_cpu / self.events if self.events else float("nan")


def floor_of(outcomes: list[Outcome], o: Outcome) -> Outcome | None:
    """The floor's row run beside ``o`` (same store, workers, batch and round)."""
    return next(
        (
            f
            for f in outcomes
            if f.variant == FLOOR
            and (f.store, f.workers, f.batch, f.round) == (o.store, o.workers, o.batch, o.round)
        ),
        None,
    )


@dataclass(frozen=True)
class Plan:
    """One store's medtrail rows of a (workers, batch) plan, each with the floor's beside it."""

    pairs: list[tuple[Outcome, Outcome]]

    @property
    def ratios(self) -> list[float]:
        return [o.cpu_per_event / f.cpu_per_event for o, f in self.pairs]

    @property
    def median(self) -> tuple[Outcome, Outcome]:
        """The pair whose ratio is the median round's (the lower middle one of an even count)."""
        ranked = sorted(self.pairs, key=lambda pair: pair[0].cpu_per_event / pair[1].cpu_per_event)
        return ranked[(len(ranked) - 1) // 2]


def best_plans(outcomes: list[Outcome]) -> dict[str, Plan]:
    """Per store, its fastest batched plan (by its median round's rate) with the floor beside
    each of its rounds."""
    plans: dict[tuple[str, int, int], list[tuple[Outcome, Outcome]]] = {}
    for o in outcomes:
        f = floor_of(outcomes, o)
        if o.variant == MEDTRAIL and o.batch > 1 and f is not None and f.events and o.events:
            plans.setdefault((o.store, o.workers, o.batch), []).append((o, f))
    best: dict[str, Plan] = {}
    for (store, _, _), pairs in plans.items():
        plan = Plan(pairs)
        if store not in best or plan.median[0].rate > best[store].median[0].rate:
            best[store] = plan
    return best


def _bodies(job: tuple[Institution, int, int, int]) -> list[bytes]:
    """Sign ``count`` events for one institution and cut them into request bodies."""
    institution, batch, count, seed = job
    events = custodian_accesses(institution, count, records=500, seed=seed)
    return [batch_body(events[i : i + batch]) for i in range(0, count, batch)]


def generate(
    institutions: list[Institution], batch: int, per_connection: int, workdir: Path
) -> list[Path]:
    """One work file per load-generator process: its institutions' request bodies."""
    used = [
        p * CONNECTIONS_PER_PROCESS + c
        for p in range(LOADGEN_PROCESSES)
        for c in range(CONNECTIONS[batch])
    ]
    jobs = [(institutions[i], batch, per_connection, 1000 * batch + i) for i in used]
    with get_context("fork").Pool(2) as pool:
        bodies = dict(zip(used, pool.map(_bodies, jobs), strict=True))
    paths = []
    for p in range(LOADGEN_PROCESSES):
        mine = [i for i in used if i // CONNECTIONS_PER_PROCESS == p]
        path = workdir / f"work-{batch}-{p}.pickle"
        path.write_bytes(pickle.dumps([(str(i), bodies[i]) for i in mine]))
        paths.append(path)
    return paths


def with_keys(paths: list[Path], keys: list[str], workdir: Path, tag: str) -> list[Path]:
    """The work files with each institution's API key for this server's store."""
    keyed = []
    for path in paths:
        work: list[tuple[str, list[bytes]]] = pickle.loads(path.read_bytes())
        out = workdir / f"{path.stem}-{tag}.pickle"
        out.write_bytes(pickle.dumps([(keys[int(i)], bodies) for i, bodies in work]))
        keyed.append(out)
    return keyed


def _rounds(batch: int, workers: int, rounds: int) -> int:
    """How many times a plan's rows run: ``rounds`` for the headline plan, else once."""
    return rounds if (workers, batch) == (2, 1000) else 1


def _variants(batch: int, workers: int, rounds: int) -> list[tuple[str, int]]:
    """A (workers, batch) plan's rows, in the order they run, with their round: medtrail and,
    for batches, the floor; for batches of 1,000 on two workers, also the untuned collector
    and the batches computing at once, each round starting one further along (so that no
    server always runs first or last)."""
    if (workers, batch) == (2, 1000):
        base = [MEDTRAIL, FLOOR, UNTUNED, AT_ONCE]
    else:
        base = [MEDTRAIL, FLOOR] if batch > 1 else [MEDTRAIL]
    rows: list[tuple[str, int]] = []
    for n in range(1, _rounds(batch, workers, rounds) + 1):
        turn = (n - 1) % len(base)
        rows += [(variant, n) for variant in base[turn:] + base[:turn]]
    return rows


def drive(
    server: Server, work: list[Path], duration: float, workdir: Path, part: str = "0/1"
) -> dict[str, Any]:
    start_at = time.time() + 3.0  # time for the generators to load their work
    outs = [workdir / f"result-{i}.json" for i in range(len(work))]
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks._loadgen",
                str(path),
                "--url",
                server.url,
                "--start-at",
                str(start_at),
                "--duration",
                str(duration),
                "--out",
                str(out),
                "--part",
                part,
            ],
            cwd=REPO,
            env=python_env(),
        )
        for path, out in zip(work, outs, strict=True)
    ]
    time.sleep(max(0.0, start_at - time.time() - 0.05))
    cpu_before = server.cpu_seconds()
    for process in processes:
        process.wait(timeout=600)
    cpu_after = server.cpu_seconds()
    results = [json.loads(out.read_text()) for out in outs]
    errors: dict[str, int] = {}
    for r in results:
        for status, n in r["errors"].items():
            errors[status] = errors.get(status, 0) + n
    return {
        "events": sum(r["events"] for r in results),
        "requests": sum(r["requests"] for r in results),
        "seconds": max(r["ended"] for r in results) - start_at,
        "latencies": [x for r in results for x in r["latencies"]],
        "server_cpu": cpu_after - cpu_before,
        "loadgen_cpu": sum(r["cpu"] for r in results),
        "errors": errors,
        "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
    }


def admin_post(server: Server, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        server.url + path, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60
    )
    if response.status_code >= 300:
        raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
    data: dict[str, Any] = response.json()
    return data


def issue_keys(server: Server, admin: str, institutions: list[Institution]) -> list[str]:
    """One institution API key each, on ``server``'s store."""
    keys = []
    for inst in institutions:
        key = admin_post(
            server,
            admin,
            "/v1/api-keys",
            {"role": "institution", "institution": inst.address, "label": "b"},
        )
        keys.append(str(key["key"]))
    return keys


#: The medtrail servers of the A/B rows, with the settings that make each (``ledger.gc_tuning``
#: and ``api.turns`` read them).
_AB_SETTINGS: dict[str, dict[str, str]] = {
    MEDTRAIL: {},
    UNTUNED: {"BENCH_TUNE_GC": "0"},
    AT_ONCE: {"BENCH_INGEST_TURNS": "0"},
}


def run_store(
    cfg: Config,
    chain: Chain,
    store: str,
    urls: dict[str, str],
    institutions: list[Institution],
    work: dict[int, list[Path]],
) -> list[Outcome]:
    """One store's rows. ``urls`` holds a store of its own for each medtrail server (medtrail
    and its A/B variants): each grows by the same rows in the same rounds, so that no variant
    runs on a fuller store than another (medtrail's CPU per event grows with its store)."""
    admins = {}
    for variant, url in urls.items():
        ledger = chain.open(url)  # migrates the store and binds it to the deployment
        admins[variant] = bootstrap_admin_key(ledger)
        ledger.close()
    outcomes: list[Outcome] = []
    plans = [(2, 1000), (2, 100), (2, 1), *cfg.pick([(1, 1000)], [])]
    workers_now = 0
    servers: dict[str, Server] = {}
    floor_env = chain.environment(urls[MEDTRAIL])
    floor_env.update(
        {
            "FLOOR_DATABASE_URL": (
                f"sqlite:///{cfg.workdir / f'floor-{store}.db'}"
                if urls[MEDTRAIL].startswith("sqlite")
                else urls[MEDTRAIL]
            ),
            "FLOOR_CHAIN_ID": str(chain.deployment.chain_id),
            "FLOOR_AUDIT_LOG": chain.deployment.audit_log,
        }
    )
    keyed: dict[str, dict[int, list[Path]]] = {}
    # Each row sends its own share of the signed bodies (a resend would be answered from the
    # log as a duplicate, and refused by the floor).
    rounds = cfg.pick(ROUNDS, 1)
    parts = {b: sum(len(_variants(b, w, rounds)) for w, b2 in plans if b2 == b) for _, b in plans}
    used = dict.fromkeys(parts, 0)
    try:
        for workers, batch in plans:
            if workers != workers_now:
                for running in servers.values():
                    running.stop()
                servers = {
                    variant: Server(
                        chain.environment(url, **_AB_SETTINGS[variant]),
                        workers=workers,
                        log_path=cfg.workdir / f"server-{variant.replace(' ', '-')}.log",
                    ).start()
                    for variant, url in urls.items()
                }
                # The floor's server waits beside medtrail's, idle until its own rows.
                servers[FLOOR] = Server(
                    floor_env, workers=workers, log_path=cfg.workdir / "floor.log", floor=True
                ).start()
                workers_now = workers
                if not keyed:  # each store's keys, once: the stores outlive the servers
                    for n, variant in enumerate(urls):
                        keys = issue_keys(servers[variant], admins[variant], institutions)
                        keyed[variant] = {
                            b: with_keys(paths, keys, cfg.workdir, f"{store}-{n}")
                            for b, paths in work.items()
                        }
                    keyed[FLOOR] = keyed[MEDTRAIL]  # the floor checks no API key
            duration = cfg.pick(6.0, 1.5) if batch > 1 else cfg.pick(4.0, 1.0)
            # Side by side, in turn: medtrail, the floor (batched rows) and the A/B rows.
            for variant, n in _variants(batch, workers, rounds):
                log(f"http: {variant}, {store}, {workers} worker(s), batch {batch}, round {n}")
                part = f"{used[batch]}/{parts[batch]}"
                used[batch] += 1
                r = drive(servers[variant], keyed[variant][batch], duration, cfg.workdir, part)
                outcomes.append(Outcome(variant, store, workers, batch, n, **r))
                if r["errors"]:
                    log(f"http: {variant} refused {r['errors']}: {r['first_error'][:200]}")
    finally:
        for running in servers.values():
            running.stop()
    return outcomes


def run(cfg: Config, anvil: Anvil) -> Section:
    section = Section("Ingest over HTTP")
    rounds = cfg.pick(ROUNDS, 1)
    chain = deploy(anvil, cfg.workdir, "http")
    connections = LOADGEN_PROCESSES * CONNECTIONS_PER_PROCESS
    institutions = [
        Institution(f"Hospital {i}", InstitutionKind.HOSPITAL, chain.domain)
        for i in range(connections)
    ]
    per_connection = {
        1: cfg.pick(600, 100),
        100: cfg.pick(15_000, 2_000),
        # Fourteen rows of batches of 1,000 in a full run (three rounds of medtrail, the floor
        # and the two A/B rows, then one worker's pair; four rows in a quick one), each row its
        # own share: 40,000 events a row, 3 to 4 s at the rates seen, so that a row's CPU per
        # event is not a second's sample of a noisy machine (rows of 20,000 read ±10 % run to
        # run).
        1000: cfg.pick(140_000, 4_000),
    }
    # Registered before anything is signed: ingest refuses an event dated before its signer's
    # registration on chain.
    registrar = chain.open(f"sqlite:///{cfg.workdir / 'registrar.db'}")
    try:
        for inst in institutions:
            registrar.register_institution(inst.address, inst.kind, inst.name)
    finally:
        registrar.close()
    work = {}
    for batch, n in per_connection.items():
        total = n * LOADGEN_PROCESSES * CONNECTIONS[batch]
        log(f"http: signing {total:,} events in batches of {batch}")
        work[batch] = generate(institutions, batch, n, cfg.workdir)
    outcomes: list[Outcome] = []
    variants = list(_AB_SETTINGS)
    stores = [
        (
            "SQLite",
            {v: f"sqlite:///{cfg.workdir / f'http-{n}.db'}" for n, v in enumerate(variants)},
        )
    ]
    with ExitStack() as stack:
        if cfg.postgres_url:
            postgres = cfg.postgres_url
            stores.append(
                (
                    "PostgreSQL",
                    {v: stack.enter_context(throwaway_database(postgres)) for v in variants},
                )
            )
        for store, urls in stores:
            outcomes += run_store(cfg, chain, store, urls, institutions, work)
        # Anchored once, medtrail's store of the last kind only: the stores share one AuditLog,
        # and a store whose log is not the chain's latest checkpoint refuses to open.
        store, url = stores[-1][0], stores[-1][1][MEDTRAIL]
        log(f"http: anchoring what {store} stored")
        measure_anchoring(chain, store, url)

    table = Table(
        [
            "Server",
            "Store",
            "Server workers",
            "Batch",
            "Round",
            "Events",
            "Seconds",
            "Events/s",
            "Latency p50",
            "Latency p99",
            "Server CPU per event",
            "x floor (CPU)",
            "Load generator CPU per event",
            "Refused requests",
        ]
    )
    for o in outcomes:
        beside = floor_of(outcomes, o)
        ratio = (
            f"**{o.cpu_per_event / beside.cpu_per_event:.2f}x**"
            if beside is not None and o.variant != FLOOR and beside.events
            else "-"
        )
        table.add(
            o.variant,
            o.store,
            o.workers,
            f"{o.batch:,}",
            o.round if _rounds(o.batch, o.workers, rounds) > 1 else "",
            f"{o.events:,}",
            f"{o.seconds:.1f}",
            f"**{o.rate:,.0f}**",
            f"{ms(percentile(o.latencies, 50))} ms",
            f"{ms(percentile(o.latencies, 99))} ms",
            f"{us(o.server_cpu / o.events) if o.events else '-'} µs",
            ratio,
            f"{us(o.loadgen_cpu / o.events) if o.events else '-'} µs",
            ", ".join(f"{n} x {s}" for s, n in o.errors.items()) or "0",
        )
    section.text(
        f"""Signed `RecordAccess` events (custodian reads, as in the in-process ingest benchmark)
        sent by {LOADGEN_PROCESSES} load-generator processes with {CONNECTIONS[1000]} keep-alive
        connections each for batches, {CONNECTIONS[1]} for single events (one institution and
        API key per connection, issued through `POST /v1/api-keys`; the institutions registered
        on chain before the events are signed), each connection posting its next batch as soon
        as the previous one is answered. The server is `uvicorn` over `create_app` in `rpc` mode
        against the run's anvil, with one or two worker processes sharing the store; every row
        is a bounded run ({cfg.pick(6, 1.5):g} s with batches, {cfg.pick(4, 1):g} s one by one)
        counting the receipts received. "Server CPU per event" is the user + system CPU time of
        the server's processes (from /proc) over the events stored: {GOAL_RATE:,} events/s at
        100 µs per event keep one core busy. The load generator shares the same cores (its CPU
        per event is shown too), as do anvil, PostgreSQL and whatever else the machine runs."""
    )
    section.table(table)
    plans = best_plans(outcomes)
    best = plans["SQLite"].median[0]
    cores_needed = GOAL_RATE * best.server_cpu / best.events if best.events else float("nan")
    per_event = best.server_cpu / best.events
    in_process = SHARED.get(f"ingest sqlite {best.batch}")
    compared = "The ingest benchmark splits the cost by stage."
    if in_process:
        extra = per_event - in_process
        compared = (
            f"In process, parsing and `submit` cost {us(in_process)} µs of CPU per event at the "
            f"same batch size (the ingest benchmark): HTTP itself (reading and validating the "
            f"request, authentication, rendering the receipts) adds "
            + (f"{us(extra)} µs" if extra > 0 else "nothing measurable (the runs' noise is larger)")
            + (
                ", so ingest's own stages are where the time goes."
                if extra < per_event / 4
                else "."
            )
        )
    section.text(
        f"""The best SQLite rate, {best.rate:,.0f} events/s (batches of {best.batch:,},
        {best.workers} worker(s)), costs the server {us(per_event)} µs of CPU per event:
        {GOAL_RATE:,} events/s would need {cores_needed:.1f} cores for the server alone.
        {compared}"""
    )
    in_turn = (
        f"With two workers and batches of 1,000, these servers run {rounds} times in turn "
        '("Round"; each round starts one server further along), and the goals quote the '
        "median round's ratio"
        if rounds > 1
        else f"A full run repeats the rows with two workers and batches of 1,000 {ROUNDS} times "
        "in turn, and its goals quote the median round's ratio"
    )
    section.text(
        f"""The floor (`benchmarks/_floor.py`) is a bare ASGI app under the same uvicorn, workers,
        batches and load generator, run beside each batched row: it parses the batch into the
        same event models (one `model_validate_json`), computes each digest, recovers each
        signature once, and stores the batch in one transaction on the same kind of store (the
        next leaf index read under the write lock, one `executemany` insert, the commit before
        the answer; SQLite with `synchronous=FULL`) — what any server of signed events must do,
        without authentication, rules, receipts or indexes. "x floor" is a server's CPU per
        event over the floor's in the same round (a ratio of two runs a few seconds apart, which
        the machine's load moves far less than either figure). "medtrail, collector untuned" is
        the same server without `ledger.gc_tuning.tune` at start-up, and "medtrail, batches
        computing at once" the same server without the turns in which each process computes one
        batch at a time (`api/turns.py`): the A/B rows of those changes, each on a store of its
        own that grows by the same rows as medtrail's (a server's CPU per event grows with its
        store). {in_turn}: one pair of rows moved ±0.1x from run to run on this shared
        machine."""
    )
    for store, (cpu, covered) in ANCHORING.items():
        per_event = cpu / covered
        plan = plans.get(store)
        with_anchoring = ""
        if plan is not None:
            o, f = plan.median
            anchored = o.cpu_per_event + per_event
            with_anchoring = (
                f" With it, the best batched row costs {us(anchored)} µs per event, "
                f"{anchored / f.cpu_per_event:.2f}x the floor (the floor anchors nothing)."
            )
        section.text(
            f"""Anchoring what the {store} rows stored ({covered:,} events, one checkpoint,
            in the benchmark's process as the anchor worker does it: the tree integrated, the
            verifiable index advanced, the checkpoint signed and sent) cost {us(per_event)} µs
            of CPU per event.{with_anchoring}"""
        )
    for store, plan in plans.items():
        o, f = plan.median
        over_floor = o.cpu_per_event / f.cpu_per_event
        each = (
            f"the median of {len(plan.pairs)} rounds ("
            + " / ".join(f"{r:.2f}x" for r in plan.ratios)
            + "), "
            if len(plan.pairs) > 1
            else ""
        )
        section.goals.append(
            Goal(
                f"HTTP ingest server CPU per event over the floor's, {store}, best batched row",
                "≤ 1.5x",
                f"{over_floor:.2f}x ({each}{us(o.cpu_per_event)} µs against "
                f"{us(f.cpu_per_event)} µs; {o.rate:,.0f} / s, batches of {o.batch:,}, "
                f"{o.workers} worker(s))",
                over_floor <= 1.5,
                "",
            )
        )
    proofs = bench_memory.http_proofs(cfg, anvil)
    section.text(
        f"""Proofs over HTTP, on the synthetic log of {proofs.size:,} events (one server worker, one
        keep-alive connection, {len(proofs.inclusion):,} requests each, latency as the client
        sees it):"""
    )
    proof_table = Table(["Request", "p50", "p99"])
    proof_table.add(
        "`GET /v1/log/inclusion`",
        f"{ms(percentile(proofs.inclusion, 50))} ms",
        f"{ms(percentile(proofs.inclusion, 99))} ms",
    )
    proof_table.add(
        "`GET /v1/log/consistency`",
        f"{ms(percentile(proofs.consistency, 50))} ms",
        f"{ms(percentile(proofs.consistency, 99))} ms",
    )
    section.table(proof_table)
    cause = (
        f"the server needs {us(best.server_cpu / best.events)} µs of CPU per event, i.e. "
        f"{cores_needed:.1f} cores for {GOAL_RATE:,}/s: two secp256k1 operations per event "
        "(recovery, receipt signature) and the store (see the ingest stages and the analysis)"
    )
    section.goals.append(
        Goal(
            "Signed events ingested over HTTP (batched), SQLite, 2 cores",
            f"≥ {GOAL_RATE:,} / s",
            f"{best.rate:,.0f} / s",
            best.rate >= GOAL_RATE,
            "" if best.rate >= GOAL_RATE else cause,
        )
    )
    return section
