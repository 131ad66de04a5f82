"""medtrail-monitor as the office runs it: a subprocess following a real service (uvicorn,
HTTP) on anvil (JSON-RPC). A clean stream raises only its emergency access for review; a
forged event raises its alert live; a kill -9 of the monitor in the middle of a burst loses and
repeats no alert. The other tamperings, each live: :mod:`test_live_tampering`."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from ledger.events import InstitutionKind
from tests.integration.conftest import ANVIL_MISSING
from tests.scripts.support import anchor, chain_now, insert_event, tell_story
from tests.support.actors import Institution
from tests.support.anvil import Anvil, anvil_available
from tests.support.ledgers import Env, open_env
from tests.support.server import serving


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str, str, Path]]:
    if not anvil_available():
        pytest.skip(ANVIL_MISSING)
    path = tmp_path_factory.mktemp("live")
    with (
        Anvil() as node,
        open_env("anvil", "sqlite", path, node, institution_cache_ttl=60.0) as env,
        serving(env.ledger, worker=False) as (url, key),
    ):
        yield env, url, key, path


def start(env: Env, url: str, key: str, path: Path) -> subprocess.Popen[bytes]:
    assert env.ledger.settings.rpc_url is not None
    variables = {k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scripts.monitor.cli",
            "--api",
            url,
            "--api-key",
            key,
            "--rpc-url",
            env.ledger.settings.rpc_url,
            "--deployment-file",
            str(path / "deployment.json"),
            "--state",
            str(path / "monitor.db"),
            "--alerts",
            str(path / "alerts.jsonl"),
            "--console",
            "off",
            "--interval",
            "0.2",
        ],
        env=variables,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(path / "monitor.err").open("ab"),
    )


def alerts(path: Path) -> list[dict[str, Any]]:
    file = path / "alerts.jsonl"
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text().splitlines()]


def wait_until(what: str, probe: Callable[[], bool], path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            errors = (path / "monitor.err").read_text()
            pytest.fail(f"{what}: not seen; alerts {alerts(path)}; stderr {errors}")
        time.sleep(0.1)


def codes(path: Path) -> list[str]:
    return [a["code"] for a in alerts(path)]


def test_the_monitor_follows_a_live_service_and_survives_kill_9(
    live: tuple[Env, str, str, Path],
) -> None:
    env, url, key, path = live
    story = tell_story(env)
    monitor = start(env, url, key, path)
    try:
        # A clean stream: only the emergency access, for review.
        wait_until("the clean story", lambda: "emergency-access" in codes(path), path)
        time.sleep(1.0)
        assert codes(path) == ["emergency-access"]

        # A forged event, written behind the service's back: alerted live.
        forger = Institution("Forger", InstitutionKind.HOSPITAL, env.ledger.domain)
        fake = env.hospital.access(story.record, env.patient.address, occurredAt=chain_now(env))
        insert_event(env.ledger, forger.sign(fake), consent="custodian")
        anchor(env.ledger)
        wait_until("the forged event", lambda: "signer-mismatch" in codes(path), path)

        # A burst; the monitor is killed -9 while it follows it, then started again.
        t = chain_now(env)
        burst = [
            env.hospital.sign(env.hospital.access(story.record, env.patient.address, occurredAt=t))
            for _ in range(300)
        ]
        for n in range(0, len(burst), 100):
            env.ledger.submit(burst[n : n + 100])
        time.sleep(0.3)
        monitor.send_signal(signal.SIGKILL)
        monitor.wait(timeout=10)
        anchor(env.ledger)
        monitor = start(env, url, key, path)
        size = len(story.events) + 1 + len(burst)

        def caught_up() -> bool:
            with closing(sqlite3.connect(path / "monitor.db", timeout=30)) as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'served'").fetchone()
            return row is not None and json.loads(row[0])[0] == size

        wait_until("the burst verified", caught_up, path)
        time.sleep(1.0)
    finally:
        monitor.send_signal(signal.SIGTERM)
        monitor.wait(timeout=20)
    seen = alerts(path)
    ids = [a["id"] for a in seen]
    assert ids == list(range(1, len(ids) + 1))  # none lost, none repeated
    assert [a["code"] for a in seen if a.get("severity") == "error"] == ["signer-mismatch"]
    finding_ids = [a["findingId"] for a in seen if a["kind"] == "finding"]
    assert len(finding_ids) == len(set(finding_ids))
