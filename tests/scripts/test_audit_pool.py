"""scripts/audit_log.py recomputes digests and signatures in worker processes (``--jobs``):
the report is the same as in one process, findings included; a dead worker, an interrupt or
a bad ``--jobs`` end the audit with status 2 and one clear message, never a traceback."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.events import InstitutionKind
from scripts import _recompute, audit_log
from scripts._common import Report
from scripts._recompute import Recomputer, WorkerFailed
from scripts.audit_log import CHUNK_SIZE, LogIdentity, Mirror, StateFile, audit
from tests.scripts.support import (
    SYNTHETIC_AUDIT_LOG,
    Story,
    anchor,
    chain_now,
    edit_mirror_line,
    insert_event,
    regulator_chain,
    rewrite_body,
    synthetic_mirror,
    write_mirror,
)
from tests.support.actors import Institution
from tests.support.ledgers import Env

#: Stats that differ from run to run (timings, and how many processes did the work).
_RUN_STATS = (
    "secondsFetching",
    "secondsRecomputing",
    "secondsIndex",
    "secondsTotal",
    "recomputedPerSecond",
)


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    stats = {k: v for k, v in report["stats"].items() if k not in (*_RUN_STATS, "recomputeJobs")}
    return {**report, "stats": stats, "checkedAt": None}


def _bad_v(entry: dict[str, Any]) -> None:
    signature = entry["event"]["signature"]
    entry["event"]["signature"] = signature[:-2] + "1d"  # v = 29


def _bad_hex(entry: dict[str, Any]) -> None:
    entry["event"]["event"]["actor"] = "0x12"


# --------------------------------------------------------------------------- same report


def test_the_pool_reports_a_tampered_log_as_one_process_does(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    ledger = env.ledger
    rewrite_body(ledger, story.events[1].event, fills=9)  # digest and signer mismatch
    forger = Institution("Forger", InstitutionKind.HOSPITAL, ledger.domain)
    fake = env.hospital.access(story.record, env.patient.address, occurredAt=chain_now(env))
    insert_event(ledger, forger.sign(fake), consent="custodian")  # never signed by its hospital
    anchor(ledger)
    mirror = write_mirror(ledger, tmp_path / "mirror.jsonl")
    edit_mirror_line(mirror, 3, _bad_hex)  # malformed: reported, its served digest kept
    edit_mirror_line(mirror, 5, _bad_v)  # a signature no one made

    ident = LogIdentity(ledger.deployment.chain_id, ledger.deployment.audit_log)
    now = int(time.time())

    def run(name: str, jobs: int, chunk_size: int) -> Report:
        return audit(
            Mirror(mirror, ident),
            api=None,
            chain=regulator_chain(env),
            state=StateFile(tmp_path / f"{name}.json", ident),
            now=now,
            jobs=jobs,
            chunk_size=chunk_size,
        )

    alone = run("alone", 1, CHUNK_SIZE)
    pooled = run("pooled", 2, 2)
    singles = run("singles", 3, 1)  # one chunk holds only the malformed entry
    assert (alone.stats["recomputeJobs"], pooled.stats["recomputeJobs"]) == (1, 2)
    assert singles.stats["recomputeJobs"] == 3
    assert alone.stats["events"] == 8
    by_event = {(f.event_id, str(f.code)) for f in alone.errors}
    assert (story.events[1].event_id, "digest-mismatch") in by_event
    assert (story.events[1].event_id, "signer-mismatch") in by_event
    assert (fake.eventId, "signer-mismatch") in by_event
    assert (story.events[3].event_id, "entry-malformed") in by_event
    assert (story.events[5].event_id, "signature-invalid") in by_event
    assert comparable(pooled.to_json()) == comparable(alone.to_json())
    assert comparable(singles.to_json()) == comparable(alone.to_json())


def test_a_log_of_one_chunk_starts_no_worker(tmp_path: Path) -> None:
    mirror = synthetic_mirror(tmp_path / "mirror.jsonl", 5)
    ident = LogIdentity(31337, SYNTHETIC_AUDIT_LOG)
    leaves, jobs = audit_log.recompute_leaves(Mirror(mirror, ident).entries, ident.domain, jobs=4)
    assert jobs == 1
    assert len(leaves) == 5
    assert not [f for leaf in leaves for f in leaf.findings]


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def big_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mirror longer than one chunk, with a malformed entry, a bad signature and an event
    changed after it was logged."""
    path = synthetic_mirror(tmp_path_factory.mktemp("big") / "mirror.jsonl", CHUNK_SIZE + 150)
    edit_mirror_line(path, 10, _bad_hex)
    edit_mirror_line(path, CHUNK_SIZE + 1, _bad_v)

    def changed(entry: dict[str, Any]) -> None:
        entry["event"]["event"]["action"] = 4

    edit_mirror_line(path, CHUNK_SIZE + 149, changed)
    return path


def audit_command(mirror: Path, tmp_path: Path, *args: str, **env: str) -> Any:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MEDTRAIL_")}
    options = [
        "--offline",
        "--no-chain",
        "--chain-id",
        "31337",
        "--audit-log",
        SYNTHETIC_AUDIT_LOG,
        "--mirror",
        str(mirror),
        "--state",
        str(tmp_path / f"state-{len(list(tmp_path.iterdir()))}.json"),
        "--json",
        *args,
    ]
    return CliRunner().invoke(audit_log.main, options, env={**unset, **env})


def test_the_command_reports_the_same_with_any_number_of_jobs(
    big_mirror: Path, tmp_path: Path
) -> None:
    runs = {
        jobs: audit_command(big_mirror, tmp_path, *(["--jobs", jobs] if jobs else []))
        for jobs in ("1", "2", "")
    }
    reports = {jobs: json.loads(result.stdout) for jobs, result in runs.items()}
    for jobs, result in runs.items():
        assert result.exit_code == 1, (jobs, result.stderr)
    assert reports["1"]["stats"]["recomputeJobs"] == 1
    assert reports["2"]["stats"]["recomputeJobs"] == 2
    assert reports[""]["stats"]["recomputeJobs"] == _recompute.default_jobs()
    assert reports["1"]["summary"]["counts"]["error"] == {
        "digest-mismatch": 1,
        "entry-malformed": 1,
        "signature-invalid": 1,
        "signer-mismatch": 1,
    }
    assert comparable(reports["2"]) == comparable(reports["1"])
    assert comparable(reports[""]) == comparable(reports["1"])
    env_jobs = audit_command(big_mirror, tmp_path, MEDTRAIL_AUDIT_JOBS="2")
    assert json.loads(env_jobs.stdout)["stats"]["recomputeJobs"] == 2


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--jobs", "0"], {}),
        (["--jobs", "-2"], {}),
        (["--jobs", "two"], {}),
        (["--jobs", str(_recompute.MAX_JOBS + 1)], {}),
        (["-j", "0"], {}),
        ([], {"MEDTRAIL_AUDIT_JOBS": "0"}),
    ],
)
def test_a_bad_number_of_jobs_is_refused(
    args: list[str], env: dict[str, str], tmp_path: Path
) -> None:
    mirror = synthetic_mirror(tmp_path / "mirror.jsonl", 2)
    result = audit_command(mirror, tmp_path, *args, **env)
    assert result.exit_code == 2
    assert "Invalid value for '--jobs' / '-j'" in result.stderr
    assert result.stdout == ""


def _die(separator: bytes, chunk: Any) -> Any:
    os._exit(3)  # a worker killed (out of memory, a signal): no answer, no exception


def _boom(separator: bytes, chunk: Any) -> Any:
    raise ArithmeticError("a bug in the worker")


def test_a_worker_that_dies_ends_the_audit_with_status_2(
    big_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_recompute, "recompute_chunk", _die)
    result = audit_command(big_mirror, tmp_path, "--jobs", "2")
    assert result.exit_code == 2
    assert "a worker process of the audit died" in result.stderr
    assert "--jobs 1" in result.stderr
    assert "NOT VERIFIED" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    assert not list(tmp_path.glob("state-*.json"))  # nothing remembered as verified


def test_a_worker_that_fails_ends_the_audit_with_status_2(
    big_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_recompute, "recompute_chunk", _boom)
    result = audit_command(big_mirror, tmp_path, "--jobs", "2")
    assert result.exit_code == 2
    assert "unexpected failure, nothing was verified: ArithmeticError: a bug" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_interrupted_audit_exits_2_not_1(
    big_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: Any, **_kw: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(audit_log, "recompute_leaves", interrupted)
    result = audit_command(big_mirror, tmp_path)
    assert result.exit_code == 2
    assert "interrupted: nothing was verified" in result.stderr


# --------------------------------------------------------------------------- the pool


def _pid(separator: bytes, chunk: Any) -> Any:
    return [(separator, os.getpid())] * len(chunk)


def _chunks(count: int) -> Iterator[Any]:
    return iter([[("RecordAccess", (), b"")] for _ in range(count)])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _interrupt_after(answered: int, pids: set[int]) -> None:
    """Read ``answered`` chunks' answers from a pool of 2, then be interrupted (Ctrl-C)."""
    with Recomputer(2, function=_pid) as pool:
        answers = pool.map(b"x" * 32, _chunks(50))
        for _ in range(answered):
            ((separator, pid),) = next(answers)
            assert separator == b"x" * 32
            pids.add(pid)
        raise KeyboardInterrupt


def test_the_pool_answers_in_order_and_is_gone_after_an_interrupt() -> None:
    pids: set[int] = set()
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after(3, pids)
    assert pids
    assert os.getpid() not in pids
    assert not [pid for pid in pids if _alive(pid)]  # shut down, not left running


def test_a_dead_worker_is_a_clear_error() -> None:
    pool = Recomputer(2, function=_die)
    with pytest.raises(WorkerFailed, match="a worker process of the audit died"), pool:
        list(pool.map(b"", _chunks(5)))


def test_one_job_runs_in_this_process() -> None:
    with Recomputer(1, function=_pid) as pool:
        answers = list(pool.map(b"y" * 32, _chunks(3)))
    assert answers == [[(b"y" * 32, os.getpid())]] * 3
    for jobs in (0, _recompute.MAX_JOBS + 1):
        with pytest.raises(ValueError, match="jobs must be in"):
            Recomputer(jobs)
