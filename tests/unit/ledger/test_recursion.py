"""The recursion limit stays within what the stacks hold, and the embedded chain still works."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from ledger.recursion import (
    MAX_RECURSION_LIMIT,
    MIN_RECURSION_LIMIT,
    cap_recursion_limit,
    safe_recursion_limit,
)

REPO = Path(__file__).resolve().parents[3]


def test_the_limit_follows_the_stack_within_bounds() -> None:
    assert safe_recursion_limit(8 * 1024 * 1024) == MAX_RECURSION_LIMIT == 4000
    assert safe_recursion_limit(4 * 1024 * 1024) == 2048
    assert safe_recursion_limit(512 * 1024) == MIN_RECURSION_LIMIT
    assert safe_recursion_limit(1 << 40) == MAX_RECURSION_LIMIT


def test_cap_never_raises_the_limit() -> None:
    before = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(1500)
        assert cap_recursion_limit() == 1500
        assert sys.getrecursionlimit() == 1500
    finally:
        sys.setrecursionlimit(before)


#: Runs in a fresh interpreter: the chain libraries raise the limit at import; a ledger opened
#: on the embedded chain brings it down, still works end to end, and C recursion past the
#: limit is a RecursionError in the main thread and in a worker thread (it was a SIGSEGV).
_SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile, threading
    from pathlib import Path

    import ledger.service
    assert sys.getrecursionlimit() >= 100_000, sys.getrecursionlimit()

    from tests.support.ledgers import open_env, relay_grant

    with tempfile.TemporaryDirectory() as directory:
        with open_env("embedded", "sqlite", Path(directory)) as env:
            limit = sys.getrecursionlimit()
            assert limit <= 4000, limit
            ledger = env.ledger
            hospital = env.hospital
            record = hospital.record("mrn-1")
            at = ledger.chain.latest_timestamp()
            ledger.submit([hospital.sign(hospital.access(record, env.patient.address,
                                                         occurredAt=at))])
            grant = relay_grant(env, env.pharmacy.address, record)
            assert ledger.grant(grant).grantee == env.pharmacy.address
            ledger.anchor_now()
            ledger.anchor_now()
            assert ledger.chain.latest_checkpoint().tree_size == 1

    outcomes = []

    def bomb():
        try:
            json.loads("[" * 200_000 + "]" * 200_000)
        except RecursionError:
            outcomes.append("recursion-error")
        deep = []
        for _ in range(200_000):
            deep = [deep]
        try:
            repr(deep)
        except RecursionError:
            outcomes.append("recursion-error")

    bomb()
    worker = threading.Thread(target=bomb)
    worker.start()
    worker.join()
    print(limit, outcomes)
    assert outcomes == ["recursion-error"] * 4, outcomes
    """
)


def test_a_ledger_on_the_embedded_chain_runs_with_a_stack_safe_limit() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "recursion-error" in result.stdout
