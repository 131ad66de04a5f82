"""A patient's trail on the monitor's console, against anvil: how long the console takes to
answer it, and that the monitor's catch-up costs what it cost before the console could.

    python -m benchmarks.bench_patient_trail [--quick] [--baseline DIR] [--workdir DIR]
    python -m benchmarks --only patients      # in the report, this tree alone

A log of custodian reads by four hospitals (each record with its own patient, ~10 events a
patient) with one **busy patient** among them (``BUSY`` events over ten records, spread
through the log) is built through the ledger and anchored in four checkpoints, then a tail of
events not anchored yet (some of the busy patient's among them) is added, and the API serves it
(a process of its own). Monitors catch up with it from the start in processes of their own
(:mod:`benchmarks.bench_monitor_catchup`, ``--jobs 1``): this tree's once, or with
``--baseline`` this tree's and another checkout's (its ``ledger`` and ``scripts`` first on
``PYTHONPATH``) twice each, in turns: the console adds no write per event, so their cost per
event should be the same.

Then the console (this tree, in this process) over this tree's monitor state answers
``GET /api/patients/{address}/trail`` over HTTP: the busy patient (JSON, CSV, FHIR), a patient
of ~10 events, one with none (404); and the same answers from a console without the operator
(the mirror scanned instead of the operator's list: what a patient index's absence would cost
without the verifiable index). Each is asked ``REPEAT`` times; the median wall time and this
process's CPU per answer are shown (the operator's own work is in its process, not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from api.app import bootstrap_admin_key
from benchmarks._common import REPO, Config, Section, Table, log
from benchmarks._serve import Server
from benchmarks._world import Institution, custodian_accesses, deploy, patients
from benchmarks.bench_verify import anchor
from ledger.events import InstitutionKind, SignedEvent
from scripts._api import ApiClient
from scripts.monitor.console import Console
from tests.support.anvil import Anvil

#: The busy patient's events (over ten records of the first hospital).
BUSY = 300
#: Events after the last checkpoint (mirrored, not anchored), and the busy patient's among them.
TAIL, BUSY_TAIL = 500, 20
CHECKPOINTS = 4
REPEAT = 20
TOKEN = "benchmark-console-token"


def _world(cfg: Config, anvil: Anvil) -> dict[str, Any]:
    chain = deploy(anvil, cfg.workdir, "patients")
    url = f"sqlite:///{cfg.workdir / 'patients-ledger.db'}"
    ledger = chain.open(url)
    size = cfg.pick(40_000, 2_000)
    hospitals = [
        Institution(f"Patients' Hospital {i}", InstitutionKind.HOSPITAL, chain.domain)
        for i in range(4)
    ]
    for inst in hospitals:
        ledger.register_institution(inst.address, inst.kind, inst.name)
    after = ledger.chain.latest_timestamp() + 1
    log(f"patients: ingesting {size:,} events, {BUSY} of them about one patient")
    crowd = [
        e
        for n, inst in enumerate(hospitals)
        for e in custodian_accesses(inst, size // len(hospitals), seed=90 + n, occurred_at=after)
    ]
    busy = patients(1, seed=99)[0]
    first = hospitals[0]
    records = [first.record(f"busy-{i}") for i in range(10)]
    rng = random.Random(98)

    def busy_events(count: int) -> list[SignedEvent]:
        return [first.sign(first.access(rng.choice(records), busy, after)) for _ in range(count)]

    anchored = busy_events(BUSY - BUSY_TAIL)
    step = len(crowd) // len(anchored)
    log_events: list[SignedEvent] = []
    for n, event in enumerate(crowd):
        log_events.append(event)
        if n % step == 0 and anchored:
            log_events.append(anchored.pop())
    log_events += anchored
    part = -(-len(log_events) // CHECKPOINTS)
    for start in range(0, len(log_events), part):
        batch = log_events[start : start + part]
        for i in range(0, len(batch), 1000):
            ledger.submit(batch[i : i + 1000])
        anchor(ledger)
    tail = custodian_accesses(first, TAIL - BUSY_TAIL, seed=97, occurred_at=after)
    ledger.submit(tail + busy_events(BUSY_TAIL))
    ledger.log.integrate_all()
    regulator = bootstrap_admin_key(ledger)
    # Another patient (about ten events at full size), and a record of the busy patient's.
    some = next(e.event.patient for e in crowd)
    ledger.close()
    return {
        "chain": chain,
        "url": url,
        "regulator": regulator,
        "total": len(log_events) + TAIL,
        "busy": busy,
        "some": some,
        "record": records[0],
    }


def _catch_up(
    cfg: Config, anvil: Anvil, world: dict[str, Any], api: str, code: Path, name: str
) -> dict[str, Any]:
    args = {
        "state": str(cfg.workdir / f"patients-{name}.db"),
        "api": api,
        "key": world["regulator"],
        "rpc": anvil.url,
        "deployment": str(world["chain"].deployment_file),
        "jobs": 1,
        "cache": None,
        "tune_gc": True,
    }
    path = [str(code)] if code == REPO else [str(code), str(REPO)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "PYTHONDONTWRITEBYTECODE": "1"}
    log(f"patients: monitor catch-up, {name}")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_monitor_catchup", json.dumps(args)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        cwd=cfg.workdir,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the catch-up {name} failed: {done.stderr.strip()[-2000:]}")
    got: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    got["state"] = args["state"]
    return got


def _timed(call: Callable[[], httpx.Response], expect: int) -> tuple[float, float, int]:
    """Median wall and CPU (this process) of ``REPEAT`` answers, after one to warm up; the
    size of the last answer."""
    answer = call()
    if answer.status_code != expect:
        raise RuntimeError(f"expected {expect}, got {answer.status_code}: {answer.text[:300]}")
    walls, cpus = [], []
    for _ in range(REPEAT):
        wall, cpu = time.perf_counter(), time.process_time()
        answer = call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus), len(answer.content)


def run(cfg: Config, anvil: Anvil, baseline: Path | None = None) -> Section:
    section = Section("A patient's trail on the monitor's console, against anvil")
    world = _world(cfg, anvil)
    with Server(
        world["chain"].environment(world["url"]),
        workers=1,
        log_path=cfg.workdir / "patients-api.log",
    ) as server:
        codes = [("this tree", REPO)] + ([("baseline", baseline)] if baseline else [])
        runs: list[tuple[str, dict[str, Any]]] = []
        for turn in range(2 if baseline else 1):  # in turns, when compared
            for label, code in codes:
                runs.append(
                    (label, _catch_up(cfg, anvil, world, server.url, code, f"{label}-{turn}"))
                )
        total = world["total"]
        table = Table(
            [
                "Monitor catch-up, --jobs 1",
                *(f"{label}, run {n // len(codes) + 1}" for n, (label, _) in enumerate(runs)),
            ]
        )
        table.add(
            "CPU per event, pages (verification and commit)",
            *(f"{r['pageCpuMain'] / max(r['verified'], 1) * 1e6:.1f} µs" for _, r in runs),
        )
        table.add(
            "CPU per event, whole catch-up (fetching, checkpoints)",
            *(f"{r['cpu'] / total * 1e6:.1f} µs" for _, r in runs),
        )
        table.add("entries verified", *(f"{r['verified']:,}" for _, r in runs))
        section.table(table)

        state = Path(next(r["state"] for label, r in runs if label == "this tree"))
        answers = Table(["Console answer (median of 20)", "wall", "CPU (console)", "bytes"])
        with ExitStack() as stack:
            operator = stack.enter_context(ApiClient(server.url, world["regulator"]))
            for label, api in (("", operator), (", no operator: the mirror scanned", None)):
                console = Console(state, TOKEN, port=0, api=api)
                console.start()
                stack.callback(console.stop)
                office = stack.enter_context(
                    httpx.Client(
                        base_url=console.url,
                        headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=120,
                    )
                )

                def ask(
                    who: str, form: str = "json", client: httpx.Client = office
                ) -> httpx.Response:
                    return client.get(f"/api/patients/{who}/trail", params={"format": form})

                busy = ask(world["busy"]).json()
                some = len(ask(world["some"]).json()["events"])
                log(f"patients: {busy['subject']['completeness']} ({busy['subject']['source']})")
                if len(busy["events"]) != BUSY or not busy["ok"]:
                    raise RuntimeError(f"the busy patient's trail: {len(busy['events'])} events")
                for what, call, expect in (
                    (f"busy patient ({BUSY} events), JSON", lambda: ask(world["busy"]), 200),
                    ("busy patient, CSV", lambda: ask(world["busy"], "csv"), 200),
                    ("busy patient, FHIR Bundle", lambda: ask(world["busy"], "fhir"), 200),
                    (f"a patient of {some} event(s), JSON", lambda: ask(world["some"]), 200),
                    ("a patient with no event (404)", lambda: ask("0x" + "ab" * 20), 404),
                ):
                    wall, cpu, size = _timed(call, expect)
                    answers.add(
                        f"{what}{label}", f"{wall * 1e3:.1f} ms", f"{cpu * 1e3:.1f} ms", f"{size:,}"
                    )
            record = f"/api/trail/0x{world['record'].hex()}"
            wall, cpu, size = _timed(lambda: office.get(record), 200)
            answers.add(
                "a record's trail (the mirror's record index), JSON, for comparison",
                f"{wall * 1e3:.1f} ms",
                f"{cpu * 1e3:.1f} ms",
                f"{size:,}",
            )
        section.table(answers)
    section.text(
        f"Log of {total:,} events ({CHECKPOINTS} checkpoints, then {TAIL} not anchored); the busy "
        f"patient has {BUSY} events over ten records, {BUSY_TAIL} of them in the tail."
    )
    return section


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a log of 2,000 events")
    parser.add_argument(
        "--baseline", type=Path, help="a checkout whose monitor's catch-up is compared with"
    )
    parser.add_argument("--workdir", type=Path, help="keep the run's files here")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        workdir = args.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="mtpatients-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        anvil = stack.enter_context(Anvil(accounts=5, balance=1_000_000))
        cfg = Config(quick=args.quick, postgres_url=None, workdir=workdir)
        section = run(cfg, anvil, args.baseline)
        print(section.markdown(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
