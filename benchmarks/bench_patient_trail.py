"""A patient's and a record's trails on the monitor's console, against anvil: how long the
console takes to answer them, and that the monitor's catch-up costs what it cost before the
console could.

    python -m benchmarks.bench_patient_trail [--quick] [--baseline DIR] [--workdir DIR]
    python -m benchmarks --only patients      # in the report, this tree alone

A log of custodian reads by four hospitals (each record with its own patient, ~10 events a
patient) with one **busy patient** among them (``BUSY`` events over ten records, spread through
the log) and one **busy record** (``HOT`` events, of another patient, spread the same way) is
built through the ledger and anchored in four checkpoints, then a tail of events not anchored
yet (some of the busy patient's and record's among them) is added, and the API serves it (a
process of its own). Monitors catch up with it from the start in processes of their own
(:mod:`benchmarks.bench_monitor_catchup`, ``--jobs 1``): this tree's once, or with
``--baseline`` this tree's and another checkout's (its ``ledger`` and ``scripts`` first on
``PYTHONPATH``) twice each, in turns: the console adds no write per event, so their cost per
event should be the same.

Then the console (this tree, in this process) over this tree's monitor state answers
``GET /api/patients/{address}/trail`` over HTTP: the busy patient (JSON, CSV, FHIR), a patient
of ~10 events, one with none (404); and the same answers from a console without the operator
(the mirror scanned instead of the operator's list: what a patient index's absence would cost
without the verifiable index); then ``GET /api/trail/{recordRef}`` the same way: the busy
record, a record of ~10 events, one with none (404); and the mirror's scan for a record alone
(the query the console falls back on, which uses no index), beside the same query through the
mirror's record index. Each is asked ``REPEAT`` times; the median wall time and this process's
CPU per answer are shown (the operator's own work is in its process, not counted).

With ``--baseline``, a console of each checkout (a process of its own, over this tree's state,
with the operator) answers the busy record's trail in turns: the baseline's from the mirror's
record index, this tree's from the operator's list checked against the monitor's own index. Its
CPU is the console process's (``/proc``), a mean over the ``REPEAT`` answers.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
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
from benchmarks._world import (
    custodian_accesses,
    deploy,
    patients,
    registered_hospitals,
)
from benchmarks.bench_monitor import run_catch_up
from benchmarks.bench_verify import anchor
from ledger.events import RecordAccess, SignedEvent
from scripts._api import ApiClient
from scripts.monitor.console import Console
from tests.support.anvil import Anvil

#: The busy patient's events (over ten records of the first hospital).
BUSY = 300
#: The busy record's events (of another patient).
HOT = 300
#: Events after the last checkpoint (mirrored, not anchored), and the busy patient's and the
#: busy record's among them.
TAIL, BUSY_TAIL, HOT_TAIL = 500, 20, 20
CHECKPOINTS = 4
REPEAT = 20
TOKEN = "benchmark-console-token"


def _world(cfg: Config, anvil: Anvil) -> dict[str, Any]:
    chain = deploy(anvil, cfg.workdir, "patients")
    url = f"sqlite:///{cfg.workdir / 'patients-ledger.db'}"
    ledger = chain.open(url)
    size = cfg.pick(40_000, 2_000)
    hospitals = registered_hospitals(ledger, "Patients' Hospital")
    after = ledger.chain.latest_timestamp() + 1
    log(f"patients: ingesting {size:,} events, {BUSY} about one patient, {HOT} of one record")
    crowd = [
        e
        for n, inst in enumerate(hospitals)
        for e in custodian_accesses(inst, size // len(hospitals), seed=90 + n, occurred_at=after)
    ]
    busy = patients(1, seed=99)[0]
    first = hospitals[0]
    records = [first.record(f"busy-{i}") for i in range(10)]
    hot, hot_patient = first.record("hot"), patients(1, seed=96)[0]
    rng = random.Random(98)

    def busy_events(count: int) -> list[SignedEvent]:
        return [first.sign(first.access(rng.choice(records), busy, after)) for _ in range(count)]

    def hot_events(count: int) -> list[SignedEvent]:
        return [first.sign(first.access(hot, hot_patient, after)) for _ in range(count)]

    anchored = busy_events(BUSY - BUSY_TAIL) + hot_events(HOT - HOT_TAIL)
    rng.shuffle(anchored)
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
    ledger.submit(tail + busy_events(BUSY_TAIL) + hot_events(HOT_TAIL))
    ledger.log.integrate_all()
    regulator = bootstrap_admin_key(ledger)
    # Another patient and another record (about ten events each at full size).
    some = next(e.event.patient for e in crowd)
    record = next(e.event.recordRef for e in crowd if isinstance(e.event, RecordAccess))
    ledger.close()
    return {
        "chain": chain,
        "url": url,
        "regulator": regulator,
        "total": len(log_events) + TAIL,
        "busy": busy,
        "some": some,
        "hot": hot,
        "record": record,
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
    log(f"patients: monitor catch-up, {name}")
    got = run_catch_up(args, code, name, cfg.workdir)
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


def _scans(state: Path, record: bytes) -> list[tuple[str, float]]:
    """The console's fallback for a record (the mirror scanned, no index) and the same query
    through an index on records such as the mirror kept before state format 3 (made here for
    the comparison, then dropped): median milliseconds of CPU (the query runs in this thread;
    its wall time is the same)."""
    db = sqlite3.connect(state)
    try:
        (size,) = db.execute("SELECT MAX(size) FROM checkpoints WHERE verified = 1").fetchone()
        db.execute("CREATE INDEX bench_record ON entries (record_ref)")
        found = []
        for what, table in (
            ("the mirror scanned for the busy record (the fallback's query)", "NOT INDEXED"),
            (
                "the same query through an index on records (format 2's, dropped in 3)",
                "INDEXED BY bench_record",
            ),
        ):
            query = f"SELECT pos FROM entries {table} WHERE record_ref = ? AND pos < ?"
            cpus = []
            for _ in range(REPEAT + 1):
                cpu = time.process_time()
                db.execute(query, (record, size)).fetchall()
                cpus.append(time.process_time() - cpu)
            found.append((what, statistics.median(cpus[1:]) * 1e3))
        db.execute("DROP INDEX bench_record")
        return found
    finally:
        db.close()


#: A console of another checkout (its ``ledger`` and ``scripts`` first on ``PYTHONPATH``),
#: with the operator: ``python -c _SERVE state token api key``; it prints its URL, and stops
#: when its standard input closes.
_SERVE = (
    "import sys; from pathlib import Path; from scripts._api import ApiClient; "
    "from scripts.monitor.console import Console; "
    "api = ApiClient(sys.argv[3], sys.argv[4]); "
    "c = Console(Path(sys.argv[1]), sys.argv[2], port=0, api=api); c.start(); "
    "print(c.url, flush=True); sys.stdin.read(); c.stop()"
)


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _record_ab(
    codes: list[tuple[str, Path]], state: Path, api: str, world: dict[str, Any]
) -> Table:
    """The busy record's trail from each checkout's console (a process each), in turns."""
    table = Table(["Busy record's trail, JSON (console process)", "wall (median)", "CPU (mean)"])
    hot = f"/api/trail/0x{world['hot'].hex()}"
    for turn in range(2):
        for label, code in codes:
            path = [str(code)] if code == REPO else [str(code), str(REPO)]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
            with subprocess.Popen(
                [sys.executable, "-c", _SERVE, str(state), TOKEN, api, world["regulator"]],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            ) as console:
                assert console.stdin is not None
                assert console.stdout is not None
                url = console.stdout.readline().strip()
                try:
                    with httpx.Client(
                        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120
                    ) as office:
                        office.get(hot)  # warm up
                        before = _cpu_of(console.pid)
                        wall, _cpu, _size = _timed(lambda: office.get(hot), 200)
                        cpu = (_cpu_of(console.pid) - before) / (REPEAT + 1)  # with _timed's first
                finally:
                    console.stdin.close()
                    console.wait(timeout=30)
            table.add(f"{label}, run {turn + 1}", f"{wall * 1e3:.1f} ms", f"{cpu * 1e3:.1f} ms")
    return table


def run(cfg: Config, anvil: Anvil, baseline: Path | None = None) -> Section:
    section = Section("A patient's and a record's trails on the monitor's console, against anvil")
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

                def trail(
                    record: bytes, form: str = "json", client: httpx.Client = office
                ) -> httpx.Response:
                    return client.get(f"/api/trail/0x{record.hex()}", params={"format": form})

                hot = trail(world["hot"]).json()
                if len(hot["events"]) != HOT or not hot["ok"]:
                    raise RuntimeError(f"the busy record's trail: {len(hot['events'])} events")
                said = hot["subject"]
                log(f"patients: busy record: {said['completeness']} ({said['source']})")
                other = len(trail(world["record"]).json()["events"])
                for what, call, expect in (
                    (f"busy patient ({BUSY} events), JSON", lambda: ask(world["busy"]), 200),
                    ("busy patient, CSV", lambda: ask(world["busy"], "csv"), 200),
                    ("busy patient, FHIR Bundle", lambda: ask(world["busy"], "fhir"), 200),
                    (f"a patient of {some} event(s), JSON", lambda: ask(world["some"]), 200),
                    ("a patient with no event (404)", lambda: ask("0x" + "ab" * 20), 404),
                    (f"busy record ({HOT} events), JSON", lambda: trail(world["hot"]), 200),
                    ("busy record, CSV", lambda: trail(world["hot"], "csv"), 200),
                    (f"a record of {other} event(s), JSON", lambda: trail(world["record"]), 200),
                    ("a record with no event (404)", lambda: trail(b"\xab" * 32), 404),
                ):
                    wall, cpu, size = _timed(call, expect)
                    answers.add(
                        f"{what}{label}", f"{wall * 1e3:.1f} ms", f"{cpu * 1e3:.1f} ms", f"{size:,}"
                    )
            for what, ms in _scans(state, world["hot"]):
                answers.add(what, f"{ms:.1f} ms", f"{ms:.1f} ms", "")
        section.table(answers)
        if baseline is not None:
            section.table(_record_ab(codes, state, server.url, world))
    section.text(
        f"Log of {total:,} events ({CHECKPOINTS} checkpoints, then {TAIL} not anchored); the busy "
        f"patient has {BUSY} events over ten records, {BUSY_TAIL} of them in the tail; the busy "
        f"record {HOT}, {HOT_TAIL} of them in the tail."
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
