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


def test_the_readmes_curl_walkthrough_runs_as_written(tmp_path: Path) -> None:
    """The README's curl block, as it is written there, against a real server: the hospital
    is registered, its API key issued, an event signed by docs/examples/sign_events.py,
    submitted and read back."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("The same steps with curl") :]
    block = section[section.index("```sh\n") + 6 : section.index("\n```", section.index("```sh"))]
    work = tmp_path / "clone"  # a clone's layout, where signed-events.json may be written
    work.mkdir()
    for name in (".venv", "docs"):
        (work / name).symlink_to(ROOT / name)
    with (
        open_env("embedded", "sqlite", tmp_path, embedded_clock_sync=True) as env,
        serving(env.ledger) as (url, key),
    ):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=work,
            env={**os.environ, "MEDTRAIL_URL": url, "MEDTRAIL_API_KEY": key},
            capture_output=True,
            text=True,
            timeout=120,
        )
        # Stored once (its integration into the tree is the worker's, in its own time).
        stored = len(env.ledger.entries(0, 10))
    assert result.returncode == 0, result.stderr
    assert '"receipts"' in result.stdout
    assert '"consent":"custodian"' in result.stdout
    assert result.stdout.rstrip().endswith('"integrity":[]}')  # the event read back
    assert stored == 1
