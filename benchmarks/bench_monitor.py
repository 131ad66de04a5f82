"""The regulator's monitor catching up with a log served over HTTP, against anvil.

A log of custodian reads by four hospitals is built through the ledger, anchored in two
checkpoints, and served by the API (a separate process). A fresh ``medtrail-monitor``
(in this process, no console) then follows it from the start, page by page, as it would
follow ingest: each page fetched, verified (digests, signatures, the rules over the state
kept in SQLite, the supervision rules) and committed with its findings in one transaction;
then each checkpoint verified (root, consistency, index root).

Reported: verification throughput (the time inside the page's verification and commit,
fetching apart) and the whole catch-up's; CPU per event; the process's peak RSS after a
quarter, half and all of the log (flat memory: the same figure at each).
"""

from __future__ import annotations

import resource
import time
from typing import Any

from api.app import bootstrap_admin_key
from benchmarks._common import Config, Goal, Section, Table, log
from benchmarks._serve import Server
from benchmarks._world import Institution, custodian_accesses, deploy
from benchmarks.bench_verify import anchor
from ledger.chain.reader import ChainReader, DeploymentSpec
from ledger.events import InstitutionKind
from ledger.supervision import RuleSet, builtin_rules
from scripts._api import ApiClient
from scripts.monitor.core import Monitor, MonitorSettings
from scripts.monitor.store import Store
from tests.support.anvil import Anvil

GOAL_RATE = 10_000


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(cfg: Config, anvil: Anvil) -> Section:
    section = Section("The monitor: following the log as it grows, against anvil")
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

    with Server(
        chain.environment(url),
        workers=1,
        log_path=cfg.workdir / "monitor-api.log",
    ) as server:
        reader = ChainReader.connect(anvil.url, DeploymentSpec.read(chain.deployment_file))
        api = ApiClient(server.url, regulator)
        monitor = Monitor(
            Store(cfg.workdir / "monitor.db"),
            api,
            reader,
            RuleSet(builtin_rules()),
            MonitorSettings(recheck=0),
        )
        verify_page = monitor._verify_page
        spent = {"wall": 0.0, "cpu": 0.0, "events": 0}
        rss: dict[str, float] = {}
        marks = {"a quarter": total // 4, "half": total // 2, "all": total}

        def timed(*args: Any) -> int:
            wall, cpu = time.perf_counter(), time.process_time()
            done = verify_page(*args)
            spent["wall"] += time.perf_counter() - wall
            spent["cpu"] += time.process_time() - cpu
            spent["events"] += done
            for label, mark in marks.items():
                if label not in rss and monitor.served.size >= mark:
                    rss[label] = _rss_mib()
            return done

        monitor._verify_page = timed  # type: ignore[method-assign]
        log(f"monitor: catching up with {total:,} entries")
        started_cpu, started = time.process_time(), time.perf_counter()
        report = monitor.step()
        while report.verified or report.checkpoints:
            report = monitor.step()
        seconds = time.perf_counter() - started
        cpu = time.process_time() - started_cpu
        findings = monitor.store.finding_counts()
        api.close()
        reader.close()
        monitor.store.close()

    verified = spent["events"]
    rate = verified / spent["wall"] if spent["wall"] else 0.0
    table = Table(["Monitor", "Figure"])
    table.add("entries verified", f"{verified:,} (2 checkpoints)")
    table.add(
        "catch-up, fetching included (one process)",
        f"{seconds:.1f} s, {total / seconds:,.0f} events/s",
    )
    table.add("verification and commit alone", f"{spent['wall']:.1f} s, {rate:,.0f} events/s")
    table.add("CPU per event, verification", f"{spent['cpu'] / max(verified, 1) * 1e6:.0f} µs")
    table.add(
        "CPU per event, whole catch-up (monitor's process)", f"{cpu / max(total, 1) * 1e6:.0f} µs"
    )
    table.add(
        "peak RSS after a quarter / half / all of the log",
        " / ".join(f"{rss.get(k, 0):.0f} MiB" for k in marks),
    )
    table.add(
        "findings", ", ".join(f"{n} x {c}" for (c, _s), n in sorted(findings.items())) or "none"
    )
    section.table(table)
    section.goals.append(
        Goal(
            "monitor verification throughput",
            f"≥ {GOAL_RATE:,} events/s on 2 cores",
            f"{rate:,.0f} events/s (one process)",
            rate >= GOAL_RATE,
            "in one process: each event's signature recovery (secp256k1) and the rules' state "
            "read and written in SQLite; pages are not yet spread over worker processes",
        )
    )
    return section
