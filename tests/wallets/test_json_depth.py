"""The wallet refuses JSON nested deeper than it accepts, from its files and from the API,
with its own clear errors (a deep document once overflowed the parser's stack)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.recursion import cap_recursion_limit
from tests.support.hostile import BOMB, answering
from wallets.client import ApiError, MedtrailClient
from wallets.errors import CorruptKeystore, CorruptWallet
from wallets.keystore import load_keystore, write_private_file
from wallets.wallet import INDEX_FILE, Wallet

from .test_wallet import create

# Today's parser must fail with RecursionError here, not crash the test process.
cap_recursion_limit()


def test_a_nested_wallet_index_is_a_corrupt_wallet(wallet_dir: Path) -> None:
    create(wallet_dir)
    (wallet_dir / INDEX_FILE).write_bytes(BOMB)
    with pytest.raises(CorruptWallet, match="nests deeper"):
        Wallet.open(wallet_dir)


def test_a_nested_keystore_is_a_corrupt_keystore(tmp_path: Path) -> None:
    path = tmp_path / "keystore.json"
    write_private_file(path, b'{"crypto": ' + BOMB)
    with pytest.raises(CorruptKeystore, match="nests deeper"):
        load_keystore(path)


@pytest.mark.parametrize("status", [200, 500])
def test_a_nested_answer_from_the_api_is_refused(status: int) -> None:
    with answering(BOMB, status) as url, MedtrailClient(url) as client, pytest.raises(ApiError):
        client.typed_data()
