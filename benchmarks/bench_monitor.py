"""The regulator's monitor catching up with a log served over HTTP, against anvil.

A log of custodian reads by four hospitals is built through the ledger, anchored in two
checkpoints, and served by the API (a separate process). A fresh ``medtrail-monitor``
(in this process, no console) then follows it from the start, page by page, as it would
follow ingest: each page fetched, verified (digests, signatures, the rules over the state
kept in SQLite, the supervision rules) and committed with its findings in one transaction;
then each checkpoint verified (root, consistency, index root).

Reported: verification throughput (the time inside the page's verification and commit,
fetching apart) and the whole catch-up's, with the digests and signatures recomputed in the
monitor's process and then by two worker processes (``--jobs 2``); CPU per event (the
monitor's process and its workers); its RSS after a quarter, half and all of the log (flat
memory: the same figure at each).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from api.app import bootstrap_admin_key
from benchmarks._common import Config, Goal, Section, Table, log
from benchmarks._serve import Server, children, cpu_seconds
from benchmarks._world import Chain, Institution, custodian_accesses, deploy
from benchmarks.bench_verify import anchor
from ledger.chain.reader import ChainReader, DeploymentSpec
from ledger.events import InstitutionKind
from ledger.supervision import RuleSet, builtin_rules
from scripts._api import ApiClient
from scripts.monitor.core import Monitor, MonitorSettings
from scripts.monitor.store import Store
from tests.support.anvil import Anvil

GOAL_RATE = 10_000


def run(cfg: Config, anvil: Anvil) -> Section:
    """The catch-up with the monitor's verification in one process, then in two."""
    section = Section("The monitor: following the log as it grows, against anvil")
    world = _world(cfg, anvil)
    rows = [_catch_up(cfg, anvil, world, jobs) for jobs in (1, 2)]
    table = Table(["Monitor", "one process (--jobs 1)", "two processes (--jobs 2)"])
    for label in rows[0]:
        if not label.startswith("_"):
            table.add(label, *(row[label] for row in rows))
    section.table(table)
    best = max(float(row["_rate"]) for row in rows)
    section.goals.append(
        Goal(
            "monitor verification throughput",
            f"≥ {GOAL_RATE:,} events/s on 2 cores",
            f"{best:,.0f} events/s (verification and commit; best of --jobs 1 and 2)",
            best >= GOAL_RATE,
            "each event: its signature recovered (secp256k1), its chain facts fetched in one "
            "JSON-RPC batch per page, the rules' state read and written in SQLite, the page "
            "committed (synced) with its findings",
        )
    )
    return section


def _rss_now_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass(frozen=True)
class _World:
    chain: Chain
    url: str
    regulator: str
    total: int
    hospitals: list[Institution]


def _world(cfg: Config, anvil: Anvil) -> _World:
    chain = deploy(anvil, cfg.workdir, "monitor")
    url = f"sqlite:///{cfg.workdir / 'monitor-ledger.db'}"
    ledger = chain.open(url)
    size = cfg.pick(20_000, 2_000)
    hospitals = [
        Institution(f"Monitored Hospital {i}", InstitutionKind.HOSPITAL, chain.domain)
        for i in range(4)
    ]
    for inst in hospitals:
        ledger.register_institution(inst.address, inst.kind, inst.name)
    log(f"monitor: ingesting {size:,} events")
    after = ledger.chain.latest_timestamp() + 1
    events = [
        e
        for n, inst in enumerate(hospitals)
        for e in custodian_accesses(inst, size // len(hospitals), seed=70 + n, occurred_at=after)
    ]
    half = len(events) // 2
    for i in range(0, half, 1000):
        ledger.submit(events[i : min(i + 1000, half)])
    anchor(ledger)
    for i in range(half, len(events), 1000):
        ledger.submit(events[i : i + 1000])
    total = anchor(ledger)
    regulator = bootstrap_admin_key(ledger)
    ledger.close()
    return _World(chain, url, regulator, total, hospitals)


def _catch_up(cfg: Config, anvil: Anvil, world: _World, jobs: int) -> dict[str, str]:
    total = world.total
    with Server(
        world.chain.environment(world.url),
        workers=1,
        log_path=cfg.workdir / f"monitor-api-{jobs}.log",
    ) as server:
        reader = ChainReader.connect(anvil.url, DeploymentSpec.read(world.chain.deployment_file))
        api = ApiClient(server.url, world.regulator)
        monitor = Monitor(
            Store(cfg.workdir / f"monitor-{jobs}.db"),
            api,
            reader,
            RuleSet(builtin_rules()),
            MonitorSettings(recheck=0, jobs=jobs),
        )
        served = set(server.pids())

        def own_cpu() -> float:
            workers = [p for p in children(os.getpid()) if p not in served]
            return cpu_seconds(workers)

        verify_page = monitor._verify_page
        spent = {"wall": 0.0, "cpu": 0.0, "events": 0}
        rss: dict[str, float] = {}
        marks = {"a quarter": total // 4, "half": total // 2, "all": total}

        def timed(*args: Any) -> int:
            wall, cpu = time.perf_counter(), own_cpu()
            done = verify_page(*args)
            spent["wall"] += time.perf_counter() - wall
            spent["cpu"] += own_cpu() - cpu
            spent["events"] += done
            for label, mark in marks.items():
                if label not in rss and monitor.served.size >= mark:
                    rss[label] = _rss_now_mib()
            return done

        monitor._verify_page = timed  # type: ignore[method-assign,assignment]
        log(f"monitor: catching up with {total:,} entries, --jobs {jobs}")
        started_cpu, started = own_cpu(), time.perf_counter()
        report = monitor.step()
        while report.verified or report.checkpoints:
            report = monitor.step()
        seconds = time.perf_counter() - started
        cpu = own_cpu() - started_cpu
        latency = _latency(world, monitor) if jobs == 1 else None
        findings = monitor.store.finding_counts()
        monitor.close()
        api.close()
        reader.close()
        monitor.store.close()

    verified = spent["events"]
    rate = verified / spent["wall"] if spent["wall"] else 0.0
    return {
        "entries verified": f"{verified:,} (2 checkpoints)",
        "catch-up, fetching included": f"{seconds:.1f} s, {total / seconds:,.0f} events/s",
        "verification and commit alone": f"{spent['wall']:.1f} s, {rate:,.0f} events/s",
        "CPU per event, verification (monitor and its workers)": (
            f"{spent['cpu'] / max(verified, 1) * 1e6:.0f} µs"
        ),
        "CPU per event, whole catch-up": f"{cpu / max(total, 1) * 1e6:.0f} µs",
        "RSS after a quarter / half / all of the log": " / ".join(
            f"{rss.get(k, 0):.0f} MiB" for k in marks
        ),
        "alert after an emergency access is served; after its checkpoint is mined": (
            "—" if latency is None else f"{latency[0]:.2f} s; {latency[1]:.2f} s"
        ),
        "findings": ", ".join(f"{n} x {c}" for (c, _s), n in sorted(findings.items())) or "none",
        "_rate": f"{rate:.0f}",
    }


def _latency(world: _World, monitor: Monitor, interval: float = 0.2) -> tuple[float, float]:
    """Seconds from an emergency access being accepted by the service to its alert in the
    monitor's outbox, and from its checkpoint being mined to the checkpoint verified, the
    monitor stepping every ``interval`` seconds (as ``--interval 0.2``)."""
    ledger = world.chain.open(world.url)
    try:
        custodian, other = world.hospitals[0], world.hospitals[1]
        record = custodian.record("mrn-latency")
        at = ledger.chain.latest_timestamp()
        event = other.access(
            record,
            "0x" + "11" * 20,
            at,
            custodian=custodian.address,
            reasonHash=bytes([7]) * 32,
        )
        before = monitor._last_alert()
        ledger.submit([other.sign(event)])
        ledger.log.integrate_all()  # what the service's worker does: now the API serves it
        served = time.perf_counter()
        deadline = served + 120
        while monitor._last_alert() == before:
            _wait(interval, deadline, "the emergency access's alert")
            monitor.step()
        alerted = time.perf_counter() - served
        size = ledger.anchor_now().tree_size
        while (latest := ledger.chain.latest_checkpoint()) is None or latest.tree_size < size:
            _wait(0.01, deadline, "the checkpoint mined")
        mined = time.perf_counter()
        verified = 0
        while not verified:
            _wait(interval, deadline, "the checkpoint verified")
            verified = monitor.step().checkpoints
        return alerted, time.perf_counter() - mined
    finally:
        ledger.close()


def _wait(seconds: float, deadline: float, what: str) -> None:
    if time.perf_counter() > deadline:
        raise TimeoutError(f"monitor benchmark: {what} not seen in time")
    time.sleep(seconds)
