"""``medtrail api-key create``: a deployment's first regulator credential."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from api.auth import Credentials
from api.cli import cli
from ledger.store import Store


def test_creates_a_regulator_key_that_authenticates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("MEDTRAIL_DATABASE_URL", url)
    result = CliRunner().invoke(cli, ["api-key", "create", "--label", "provincial regulator"])
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    store = Store(url)
    try:
        principal = Credentials(store).authenticate(token)
    finally:
        store.dispose()
    assert principal.is_regulator


def test_an_institution_key_needs_its_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDTRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    result = CliRunner().invoke(
        cli, ["api-key", "create", "--role", "institution", "--label", "ehr"]
    )
    assert result.exit_code == 2
    assert "--institution is required" in result.output
