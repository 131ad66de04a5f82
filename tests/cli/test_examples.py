"""The README's walkthroughs run as written, against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.ledgers import open_env
from tests.support.server import serving

ROOT = Path(__file__).resolve().parents[2]


def test_the_hospital_quickstart_logs_an_event_and_gets_its_confirmed_proof(
    tmp_path: Path,
) -> None:
    with (
        open_env(
            "embedded", "sqlite", tmp_path, anchor_interval=0.2, embedded_clock_sync=True
        ) as env,
        serving(env.ledger) as (url, key),
    ):
        result = subprocess.run(
            [sys.executable, str(ROOT / "docs" / "examples" / "hospital_quickstart.py")],
            env={**os.environ, "MEDTRAIL_URL": url, "MEDTRAIL_API_KEY": key},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr
    assert "logged at leaf 0" in result.stdout
    assert "status confirmed" in result.stdout
    assert "the record's trail: 3 events" in result.stdout  # two pages, followed to the end
