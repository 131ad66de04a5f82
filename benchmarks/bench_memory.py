"""Memory: the peak RSS of a process holding a Ledger over the large log and serving proofs.

Two views: a bare process opening the ledger and answering proofs in process
(``benchmarks/_memprobe.py``, ``getrusage``), and the API server process answering proofs over
HTTP (VmHWM from /proc). Both use the synthetic log of the proofs benchmark.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks import bench_proofs
from benchmarks._common import REPO, Config, Goal, Section, Table, log
from benchmarks._serve import Server, peak_rss_mib
from benchmarks._synthetic import grow
from benchmarks._world import Chain, deploy
from ledger.log import MerkleLog
from ledger.store import Store
from tests.support.anvil import Anvil

SMALL = 1_000


@dataclass(frozen=True)
class HttpProofs:
    size: int
    inclusion: list[float]
    consistency: list[float]
    peak_rss_mib: float
    proofs_served: int


_HTTP: dict[str, HttpProofs] = {}
_CHAIN: dict[str, Chain] = {}


def proofs_chain(cfg: Config, anvil: Anvil) -> Chain:
    """The deployment the synthetic log is bound to (one per run)."""
    if "chain" not in _CHAIN:
        _CHAIN["chain"] = deploy(anvil, cfg.workdir, "proofs")
    return _CHAIN["chain"]


def http_proofs(cfg: Config, anvil: Anvil) -> HttpProofs:
    """Serve proofs of the synthetic log over HTTP (once per run) and time them."""
    if "result" in _HTTP:
        return _HTTP["result"]
    path, size = bench_proofs.ensure_log(cfg)
    chain = proofs_chain(cfg, anvil)
    samples = cfg.pick(2000, 200)
    rng = random.Random(6962)
    log(f"memory: serving {2 * samples:,} proofs over HTTP from a log of {size:,} events")
    with (
        Server(
            chain.environment(f"sqlite:///{path}"), workers=1, log_path=cfg.workdir / "proofs.log"
        ) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        inclusion: list[float] = []
        consistency: list[float] = []
        for _ in range(50):
            client.get("/v1/log/inclusion", params={"leafIndex": 0, "treeSize": size})
        for _ in range(samples):
            params = {"leafIndex": rng.randrange(size), "treeSize": size}
            started = time.perf_counter()
            response = client.get("/v1/log/inclusion", params=params)
            inclusion.append(time.perf_counter() - started)
            response.raise_for_status()
        for _ in range(samples):
            params = {"from": rng.randrange(1, size), "to": size}
            started = time.perf_counter()
            response = client.get("/v1/log/consistency", params=params)
            consistency.append(time.perf_counter() - started)
            response.raise_for_status()
        rss = peak_rss_mib(server.worker_pids()[0])
    _HTTP["result"] = HttpProofs(size, inclusion, consistency, rss, 2 * samples + 50)
    return _HTTP["result"]


def probe(cfg: Config, chain: Chain, database: Path, proofs: int) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks._memprobe", "--proofs", str(proofs)],
        cwd=REPO,
        env=chain.environment(f"sqlite:///{database}"),
        capture_output=True,
        text=True,
        check=True,
    )
    stages: dict[str, float] = json.loads(done.stdout)["stages"]
    return stages


def small_log_peak(cfg: Config, chain: Chain, proofs: int) -> float:
    """The probe's peak RSS over a small log (to see whether memory grows with the log)."""
    path = cfg.workdir / "small.db"
    store = Store(f"sqlite:///{path}")
    store.migrate()
    grow(store, MerkleLog(store), 0, SMALL)
    store.dispose()
    return probe(cfg, chain, path, proofs)["proofs"]


def run(cfg: Config, anvil: Anvil) -> Section:
    section = Section("Memory: a ledger over the large log, serving proofs")
    path, size = bench_proofs.ensure_log(cfg)
    chain = proofs_chain(cfg, anvil)
    proofs = cfg.pick(10_000, 1_000)
    log(f"memory: a process holding a ledger over {size:,} events, {2 * proofs:,} proofs")
    stages = probe(cfg, chain, path, proofs)
    small = small_log_peak(cfg, chain, proofs)
    served = http_proofs(cfg, anvil)
    table = Table(["Process", "Peak RSS"])
    table.add("Python interpreter alone", f"{stages['python']:,.0f} MiB")
    table.add("... after importing the ledger and the API", f"{stages['imports']:,.0f} MiB")
    table.add(f"... after opening a Ledger over {size:,} events", f"{stages['open']:,.0f} MiB")
    table.add(
        f"... after {2 * proofs:,} inclusion and consistency proofs", f"{stages['proofs']:,.0f} MiB"
    )
    table.add(f"The same over a log of {SMALL:,} events, after the proofs", f"{small:,.0f} MiB")
    table.add(
        f"API server (uvicorn, one worker) after {served.proofs_served:,} proofs over HTTP",
        f"{served.peak_rss_mib:,.0f} MiB",
    )
    section.text(
        f"""Peak resident set size (`VmHWM` from /proc) of a process holding a `Ledger` in `rpc`
        mode over the synthetic log of the proofs benchmark ({size:,} events) and answering
        proofs at the head, and, for comparison, the same over a log of {SMALL:,} events. The
        tree lives in the store and the process keeps no per-event state (SQLite's page cache is
        bounded, about 2 MiB by default; the operating system's file cache is not counted in
        RSS)."""
    )
    section.table(table)
    section.goals.append(
        Goal(
            f"Service peak RSS holding a {size:,}-event log",
            "report (no target in §9)",
            f"{max(stages['proofs'], served.peak_rss_mib):,.0f} MiB",
            None,
            f"{small:,.0f} MiB over a log of {SMALL:,} events: the tree is in the store",
        )
    )
    return section
