"""Fixtures for the wallet tests: a fast scrypt work factor, no passphrase in the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from wallets.keystore import PASSPHRASE_ENV

#: scrypt N for keystores written by the tests (production: 2**18). Reading always uses
#: the keystore's own parameters, so the code paths are the same.
FAST_N = 1 << 4
PASSPHRASE = "correct horse battery staple"
OTHER_PASSPHRASE = "Tr0ub4dor&3 is not it"


@pytest.fixture(autouse=True)
def _no_passphrase_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


@pytest.fixture
def wallet_dir(tmp_path: Path) -> Path:
    """Where a test's wallet goes (does not exist yet)."""
    return tmp_path / "wallet"
