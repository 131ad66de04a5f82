"""The regulator's monitor catching up with a log served over HTTP, against anvil: the
monitor as it was at :data:`BASELINE` and as it is now, side by side.

A log of custodian reads by four hospitals is built through the ledger, anchored in four
checkpoints, and served by the API (a separate process). Fresh monitors then follow it from the
start, page by page, as they would follow ingest: each page fetched, verified (digests,
signatures, the rules over the state kept in SQLite, the supervision rules) and committed
with its findings (a run of pages per transaction while behind, this tree; one page per
transaction, the baseline); then each checkpoint verified (root, consistency, index
root). Each catch-up runs in a process of its own (:mod:`benchmarks.bench_monitor_catchup`):
the baseline's code (revision :data:`BASELINE`, extracted with ``git archive``) or this tree's,
in one process (``--jobs 1``) and with two worker processes (``--jobs 2``), and once more
with a cache smaller than the log (so that its memory is seen flat past the cache's bound).

Reported per catch-up: verification throughput (the time inside the page's verification and
commit, fetching apart) and the whole catch-up's; CPU per event (the monitor's process, its
workers), of the pages' verification and of the whole catch-up; what each allows on two idle
cores; RSS after each checkpoint is verified (the
log at a quarter, half, three quarters and all of its size). Then the latency of a finding
(this tree's monitor, in this process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from api.app import bootstrap_admin_key
from benchmarks._common import REPO, Config, Goal, Section, Table, log
from benchmarks._serve import Server
from benchmarks._world import Chain, Institution, custodian_accesses, deploy, registered_hospitals
from benchmarks.bench_verify import anchor
from ledger.chain.reader import ChainReader, DeploymentSpec
from ledger.supervision import RuleSet, builtin_rules
from scripts._api import ApiClient
from scripts.monitor.core import Monitor, MonitorSettings
from scripts.monitor.store import Store
from tests.support.anvil import Anvil

GOAL_RATE = 10_000
#: The log's size when set (else 40,000; 2,000 with --quick): memory at larger sizes.
EVENTS_VARIABLE = "MEDTRAIL_BENCH_MONITOR_EVENTS"
#: Checkpoints over the log (the RSS is read after each).
CHECKPOINTS = 4
#: The monitor compared with (main when issue 18's third round of throughput work began).
BASELINE = "e4ec959"
#: The cache of the last run: smaller than the log's key spaces.
SMALL_CACHE = 2_000


@dataclass(frozen=True)
class _Variant:
    label: str
    #: The baseline's tree (first on PYTHONPATH), or None: this tree.
    code: Path | None
    jobs: int
    cache: int | None = None
    tune_gc: bool = False


def run(cfg: Config, anvil: Anvil) -> Section:
    """The catch-up by the baseline's monitor and this tree's, with one and two processes."""
    section = Section("The monitor: following the log as it grows, against anvil")
    world = _world(cfg, anvil)
    baseline = _baseline(cfg)
    variants: list[_Variant] = []
    if baseline is not None:
        variants += [
            _Variant(f"before ({BASELINE}), --jobs 1", baseline, 1, tune_gc=True),
            _Variant("before, --jobs 2", baseline, 2, tune_gc=True),
        ]
    variants += [
        _Variant("after, --jobs 1", None, 1, tune_gc=True),
        _Variant("after, --jobs 2", None, 2, tune_gc=True),
        _Variant(f"after, --jobs 2 --cache {SMALL_CACHE:,}", None, 2, SMALL_CACHE, True),
    ]
    with Server(
        world.chain.environment(world.url), workers=1, log_path=cfg.workdir / "monitor-api.log"
    ) as server:
        rows = [_catch_up(cfg, anvil, world, server.url, v, n) for n, v in enumerate(variants)]
        latency = _latency_after(cfg, anvil, world, server.url, len(variants) - 3)
    table = Table(["Monitor", *(v.label for v in variants)])
    for label in rows[0]:
        if not label.startswith("_"):
            table.add(label, *(row[label] for row in rows))
    section.table(table)
    if baseline is None:
        section.text(f"The baseline ({BASELINE}) could not be extracted with git: not shown.")
    section.text(
        "Alert after an emergency access is served; after its checkpoint is mined (this "
        f"tree, --jobs 1, stepping every 0.2 s): {latency[0]:.2f} s; {latency[1]:.2f} s."
    )
    after = [row for row, v in zip(rows, variants, strict=True) if v.code is None]
    best = max(float(row["_capacity"]) for row in after)
    measured = max(float(row["_rate"]) for row in after)
    section.goals.append(
        Goal(
            "monitor verification throughput",
            f"≥ {GOAL_RATE:,} events/s on 2 cores",
            f"{best:,.0f} events/s the CPU allows on 2 idle cores; {measured:,.0f} measured "
            "on this shared machine (verification and commit)",
            best >= GOAL_RATE,
            "each event: its signature recovered (secp256k1), its chain facts fetched in one "
            "JSON-RPC batch per page, the rules' state read and written in SQLite behind a "
            "cache, the run of pages committed (synced) with its findings; each checkpoint: the "
            "index updated in SQLite",
        )
    )
    small = rows[-1]  # this tree, --jobs 2, the small cache: what it keeps is bounded
    kept = [float(x) for x in small["_rss"].split()]
    # Flat: the last reading no higher than any of the first half's (the first checkpoints
    # are the warm-up: the cache filling, the allocators' first arenas), ±1 MiB.
    half = kept[: max(1, len(kept) // 2)]
    section.goals.append(
        Goal(
            "monitor memory, flat in the log's size",
            "RSS after the last checkpoint no higher than after the first half of the log",
            f"{' / '.join(f'{x:.0f}' for x in kept)} MiB after each checkpoint "
            f"({small['_events']} events, --cache {SMALL_CACHE:,}); peak {small['_peak']}",
            kept[-1] <= max(half) + 1.0 if len(kept) > 1 else None,
            "the mirror, the rules' state and the index are on disk; a checkpoint is verified "
            "10,000 entries at a time and its freed memory handed back to the system (over "
            "10^6 events: benchmarks/ANALYSIS.md, issue 18's last round)",
        )
    )
    return section


def _baseline(cfg: Config) -> Path | None:
    """The baseline's ``ledger`` and ``scripts`` packages, extracted from git (None: no git or
    no such revision here)."""
    where = cfg.workdir / f"monitor-baseline-{BASELINE}"
    if (where / "scripts" / "monitor").is_dir():
        return where
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", BASELINE, "ledger", "scripts"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    return where


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
    size = int(os.environ.get(EVENTS_VARIABLE, 0)) or cfg.pick(40_000, 2_000)
    hospitals = registered_hospitals(ledger, "Monitored Hospital")
    log(f"monitor: ingesting {size:,} events")
    after = ledger.chain.latest_timestamp() + 1
    events = [
        e
        for n, inst in enumerate(hospitals)
        for e in custodian_accesses(inst, size // len(hospitals), seed=70 + n, occurred_at=after)
    ]
    part = -(-len(events) // CHECKPOINTS)
    for start in range(0, len(events), part):
        batch = events[start : start + part]
        for i in range(0, len(batch), 1000):
            ledger.submit(batch[i : i + 1000])
        if start + part < len(events):
            anchor(ledger)
    total = anchor(ledger)
    regulator = bootstrap_admin_key(ledger)
    ledger.close()
    return _World(chain, url, regulator, total, hospitals)


def run_catch_up(
    args: dict[str, Any], code: Path | None, label: str, workdir: Path
) -> dict[str, Any]:
    """``benchmarks.bench_monitor_catchup`` with ``args`` in a process of its own, importing
    medtrail from ``code`` (another checkout, for an A/B; None: this one); its JSON answer."""
    path = [str(REPO)] if code is None or code == REPO else [str(code), str(REPO)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_monitor_catchup", json.dumps(args)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the catch-up of {label} failed: {last}")
    got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return got


def _catch_up(
    cfg: Config, anvil: Anvil, world: _World, api_url: str, variant: _Variant, n: int
) -> dict[str, str]:
    total = world.total
    args = {
        "state": str(cfg.workdir / f"monitor-{n}.db"),
        "api": api_url,
        "key": world.regulator,
        "rpc": anvil.url,
        "deployment": str(world.chain.deployment_file),
        "jobs": variant.jobs,
        "cache": variant.cache,
        "tune_gc": variant.tune_gc,
    }
    log(f"monitor: catching up with {total:,} entries, {variant.label}")
    got = run_catch_up(args, variant.code, variant.label, cfg.workdir)
    verified = max(int(got["verified"]), 1)
    main_cpu, workers = float(got["pageCpuMain"]), float(got["pageCpuWorkers"])
    capacity = _capacity(verified, main_cpu, workers, variant.jobs)
    whole_workers = float(got["workersCpu"])
    whole_main = float(got["cpu"]) - whole_workers
    whole = _capacity(total, whole_main, whole_workers, variant.jobs)
    rate = verified / max(float(got["pageWall"]), 1e-9)
    rss = got["rss"]
    return {
        "entries verified": f"{verified:,} ({CHECKPOINTS} checkpoints)",
        "catch-up, fetching included": f"{got['wall']:.1f} s, {total / got['wall']:,.0f} events/s",
        "verification and commit alone": f"{got['pageWall']:.1f} s, {rate:,.0f} events/s",
        "CPU per event, verification: monitor + its workers": (
            f"{main_cpu / verified * 1e6:.0f} + {workers / verified * 1e6:.0f} µs"
        ),
        "events/s that CPU allows on 2 idle cores": f"{capacity:,.0f}",
        "CPU per event, whole catch-up (fetching, checkpoints): monitor + its workers": (
            f"{whole_main / max(total, 1) * 1e6:.0f} + {whole_workers / max(total, 1) * 1e6:.0f} µs"
        ),
        "events/s that CPU allows on 2 idle cores, whole catch-up": f"{whole:,.0f}",
        "RSS after each checkpoint (a quarter, half, three quarters, all of the log; after a "
        "full collection)": " / ".join(f"{v:.0f}" for _k, v in sorted(_checkpoints(rss), key=_size))
        + " MiB",
        "peak RSS of the catch-up (VmHWM)": f"{got['peak']:.0f} MiB" if "peak" in got else "-",
        "findings": ", ".join(f"{v} x {k}" for k, v in sorted(got["findings"].items())) or "none",
        "_rate": f"{rate:.0f}",
        "_rss": " ".join(f"{v:.1f}" for _k, v in sorted(_checkpoints(rss), key=_size)),
        "_peak": f"{got['peak']:.0f} MiB" if "peak" in got else "-",
        "_events": f"{total:,}",
        "_capacity": f"{capacity:.0f}",
    }


def _capacity(events: int, main: float, workers: float, jobs: int) -> float:
    """Events/s that CPU allows on two idle cores: the monitor's own process is one core's
    worth at most, and all of the work two cores' worth (one process: one core)."""
    if jobs == 1:
        return events / max(main + workers, 1e-9)
    return min(events / max(main, 1e-9), 2 * events / max(main + workers, 1e-9))


def _checkpoints(rss: dict[str, float]) -> list[tuple[str, float]]:
    return [(k, v) for k, v in rss.items() if k.startswith("checkpoint ")]


def _size(item: tuple[str, float]) -> int:
    return int(item[0].rpartition(" ")[2])


def _latency_after(
    cfg: Config, anvil: Anvil, world: _World, api_url: str, n: int
) -> tuple[float, float]:
    """:func:`_latency` with this tree's monitor over the state of catch-up ``n``."""
    reader = ChainReader.connect(anvil.url, DeploymentSpec.read(world.chain.deployment_file))
    api = ApiClient(api_url, world.regulator)
    store = Store(cfg.workdir / f"monitor-{n}.db")
    monitor = Monitor(store, api, reader, RuleSet(builtin_rules()), MonitorSettings(recheck=0))
    try:
        return _latency(world, monitor)
    finally:
        monitor.close()
        api.close()
        reader.close()
        store.close()


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
