"""``medtrail demo`` tells the whole story and its checks come out as the story says."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from api.cli import cli


def test_the_demo_runs_end_to_end_and_shows_refusals_flags_and_tampering() -> None:
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "commits only a salted hash" in out
    assert "ConsentRegistryV2   0x" in out
    assert "consent: covered" in out
    assert "consent: emergency" in out
    assert "[log-conflict]" in out  # nothing of the hospital's prescription is disclosed
    assert "[claim-already-paid]" in out
    assert "[institution-wrong-kind]" in out
    assert "consent: not-covered:revoked" in out
    assert "status confirmed" in out
    # Every event of the trail verifies against the chain's root before the tampering...
    assert out.count("proof ok") == 8
    # ...and the edited row is caught after it.
    assert "detected: [digest-mismatch]" in out
    assert "detected: [inclusion-invalid]" in out


def test_a_bad_configuration_is_a_message_and_a_non_zero_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MEDTRAIL_MAX_BATCH", "0")
    result = CliRunner().invoke(cli, ["demo"])
    assert result.exit_code == 2
    assert "invalid configuration" in result.output
    assert "Traceback" not in result.output
