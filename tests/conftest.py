"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester
from web3 import Web3

from ledger.chain.deploy import Contracts, Deployment, bind, deploy
from ledger.chain.embedded import embedded_web3, funded_account
from tests.support import gas

# Every embedded chain of the test process estimates gas in two runs instead of a binary
# search of a dozen (tests/support/gas.py): the same outcomes, a larger gas limit.
gas.install()


@dataclass(frozen=True)
class EmbeddedChain:
    """A fresh embedded chain with medtrail's contracts and the keys that run them."""

    w3: Web3
    tester: EthereumTester
    admin: LocalAccount
    operator: LocalAccount
    registrar: LocalAccount
    deployment: Deployment
    contracts: Contracts

    def fresh_account(self) -> LocalAccount:
        """A new funded key (a patient, an institution, a stranger)."""
        return funded_account(self.w3)

    def now(self) -> int:
        """Timestamp of the latest block."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def travel(self, timestamp: int) -> None:
        """Mine a block at ``timestamp`` (must be in the future of the latest block)."""
        self.tester.time_travel(timestamp)


@pytest.fixture(scope="session")
def _embedded_chain_session() -> EmbeddedChain:
    w3, tester = embedded_web3()
    admin, operator, registrar = (funded_account(w3) for _ in range(3))
    deployment = deploy(
        w3,
        admin,
        admin=admin.address,
        log_operator=operator.address,
        registrars=[registrar.address],
    )
    return EmbeddedChain(w3, tester, admin, operator, registrar, deployment, bind(w3, deployment))


@pytest.fixture
def chain(_embedded_chain_session: EmbeddedChain) -> Iterator[EmbeddedChain]:
    """The embedded chain with contracts deployed, reverted to a clean state after each test."""
    snapshot = _embedded_chain_session.tester.take_snapshot()
    yield _embedded_chain_session
    _embedded_chain_session.tester.revert_to_snapshot(snapshot)
