"""The hospital quickstart (docs/examples/hospital_quickstart.py) fails as a newcomer needs it
to (issue 14): one clear line and a non-zero exit — never a traceback, never a silent exit 0
with an unconfirmed proof."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.auth import Credentials
from tests.support.ledgers import Env, open_env
from tests.support.server import serving

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "docs" / "examples" / "hospital_quickstart.py"


def quickstart(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MEDTRAIL_", "QUICKSTART"))}
    return subprocess.run(
        [sys.executable, str(QUICKSTART)],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_clear_line(result: subprocess.CompletedProcess[str], status: int, words: str) -> None:
    assert result.returncode == status, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert words in errors[0], errors[0]


@pytest.fixture(scope="module")
def never_confirming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, str, str]]:
    """A service whose checkpoints are anchored but never confirmed (more confirmations
    than blocks will ever come: the embedded chain mines only on a transaction, as anvil
    does without --block-time)."""
    with (
        open_env(
            "embedded",
            "sqlite",
            tmp_path_factory.mktemp("quickstart"),
            anchor_interval=0.2,
            confirmations=50,
            embedded_clock_sync=True,
        ) as env,
        serving(env.ledger) as (url, key),
    ):
        yield env, url, key


def test_a_missing_key_is_a_clear_message() -> None:
    one_clear_line(quickstart(MEDTRAIL_URL="http://127.0.0.1:9"), 2, "MEDTRAIL_API_KEY is not set")


def test_no_service_at_the_url_is_a_clear_message() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = quickstart(MEDTRAIL_URL=f"http://127.0.0.1:{port}", MEDTRAIL_API_KEY="mtk_x")
    one_clear_line(result, 2, "no medtrail service answers at")


def test_an_unknown_key_is_a_clear_message(never_confirming: tuple[Env, str, str]) -> None:
    _env, url, _key = never_confirming
    result = quickstart(MEDTRAIL_URL=url, MEDTRAIL_API_KEY="mtk_0000000000000000.nope")
    one_clear_line(result, 2, "is not a key this service")


def test_an_institution_key_is_a_clear_message(never_confirming: tuple[Env, str, str]) -> None:
    env, url, _key = never_confirming
    _info, token = Credentials(env.ledger.store).issue_key(
        "institution", env.hospital.address, "ehr"
    )
    result = quickstart(MEDTRAIL_URL=url, MEDTRAIL_API_KEY=token)
    one_clear_line(result, 2, "is an institution's key")
    assert "takes a regulator's key" in result.stderr


def test_a_proof_never_confirmed_is_a_timeout_and_exit_1(
    never_confirming: tuple[Env, str, str],
) -> None:
    _env, url, key = never_confirming
    result = quickstart(MEDTRAIL_URL=url, MEDTRAIL_API_KEY=key, QUICKSTART_TIMEOUT="4")
    one_clear_line(result, 1, "timed out after 4 s: the event is still")
    assert "--block-time" in result.stderr
    assert "status confirmed" not in result.stdout
