"""Fixtures for the wallet tests: a fast scrypt work factor, no passphrase in the environment."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wallets.api_env import Service, running_service
from wallets.keystore import PASSPHRASE_ENV
from wallets.wallet import Wallet

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


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A real medtrail API (embedded chain) for a test module."""
    with running_service(tmp_path_factory.mktemp("service")) as running:
        yield running


@pytest.fixture
def wallet(tmp_path: Path) -> Wallet:
    """A new wallet (one account) in the test's directory."""
    wallet, _words = Wallet.create(tmp_path / "wallet", PASSPHRASE, scrypt_n=FAST_N)
    return wallet
