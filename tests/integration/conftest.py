"""Fixtures running one test on both chain backends: embedded (eth-tester) and anvil (JSON-RPC).

``chain_client`` is parametrised over ``["embedded", "anvil"]`` and gives a :class:`Harness`:
a :class:`~ledger.chain.client.Chain` with medtrail deployed, plus what tests need around it
(funded keys, time travel, a chain that mines only when told). Each backend is one chain for
the whole session, snapshotted before each test and reverted after it, so tests are
independent. The anvil backend is skipped, with the reason, when the binary is not installed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester

from ledger.chain.client import Chain, deploy_to_rpc, embedded_chain, rpc_chain
from ledger.chain.deploy import Deployment
from ledger.chain.embedded import funded_account
from tests.support.anvil import ANVIL, Anvil, anvil_available

#: Ether given to each fresh key on anvil.
FUNDING_WEI = 100 * 10**18

ANVIL_MISSING = f"anvil is not installed at {ANVIL} (run `make node`)"

#: For tests that start anvil nodes of their own.
requires_anvil = pytest.mark.skipif(not anvil_available(), reason=ANVIL_MISSING)


@dataclass(frozen=True)
class ManualChain:
    """A chain that mines only when :attr:`mine` is called (for stuck-transaction tests)."""

    chain: Chain
    mine: Callable[[], None]


@dataclass
class Harness:
    """A chain backend with medtrail deployed and the keys that run it."""

    backend: str
    chain: Chain
    admin: LocalAccount
    operator: LocalAccount
    registrar: LocalAccount
    _fresh: Callable[[], LocalAccount]
    _travel: Callable[[int], None]
    _manual: Callable[[], AbstractContextManager[ManualChain]]
    _snapshot: Callable[[], object]
    _revert: Callable[[object], None]
    _snapshots: list[object] = field(default_factory=list)

    def fresh_account(self) -> LocalAccount:
        """A new key with ether (an institution, a stranger)."""
        return self._fresh()

    def now(self) -> int:
        """The latest block's timestamp."""
        return self.chain.latest_timestamp()

    def travel(self, timestamp: int) -> None:
        """Mine one block at ``timestamp`` (after the latest block's)."""
        self._travel(timestamp)

    def manual_chain(self) -> AbstractContextManager[ManualChain]:
        """A separate chain of this backend, medtrail deployed, that mines only on demand."""
        return self._manual()

    def _enter(self) -> None:
        self._snapshots.append(self._snapshot())

    def _leave(self) -> None:
        self._revert(self._snapshots.pop())


# --------------------------------------------------------------------------- embedded


@contextmanager
def _embedded_manual() -> Iterator[ManualChain]:
    operator, registrar = Account.create(), Account.create()
    chain, tester = embedded_chain(operator, registrar)
    tester.disable_auto_mine_transactions()
    yield ManualChain(chain, lambda: tester.mine_blocks(1))


def _embedded_harness() -> Harness:
    admin, operator, registrar = Account.create(), Account.create(), Account.create()
    chain, tester = embedded_chain(operator, registrar, admin)
    embedded: EthereumTester = tester

    def revert(snapshot: object) -> None:
        embedded.revert_to_snapshot(snapshot)

    return Harness(
        backend="embedded",
        chain=chain,
        admin=admin,
        operator=operator,
        registrar=registrar,
        _fresh=lambda: funded_account(chain.w3),
        _travel=embedded.time_travel,
        _manual=_embedded_manual,
        _snapshot=embedded.take_snapshot,
        _revert=revert,
    )


# --------------------------------------------------------------------------- anvil


def deploy_on_anvil(node: Anvil) -> tuple[Deployment, LocalAccount, LocalAccount, LocalAccount]:
    """Deploy medtrail on ``node`` with its dev accounts 0 (admin), 1 (operator), 2 (registrar)."""
    admin, operator, registrar = node.accounts[:3]
    deployment = deploy_to_rpc(
        node.url,
        admin,
        admin=admin.address,
        log_operator=operator.address,
        registrars=[registrar.address],
    )
    return deployment, admin, operator, registrar


@contextmanager
def _anvil_manual() -> Iterator[ManualChain]:
    with Anvil(no_mining=True) as node:
        node.set_automine(True)  # deploying waits for receipts
        deployment, _admin, operator, registrar = deploy_on_anvil(node)
        node.set_automine(False)
        yield ManualChain(rpc_chain(node.url, deployment, operator, registrar), node.mine)


def _anvil_harness(node: Anvil) -> Harness:
    deployment, admin, operator, registrar = deploy_on_anvil(node)
    chain = rpc_chain(node.url, deployment, operator, registrar)

    def fresh() -> LocalAccount:
        account: LocalAccount = Account.create()
        node.set_balance(account.address, FUNDING_WEI)
        return account

    def revert(snapshot: object) -> None:
        if not node.revert(str(snapshot)):
            raise RuntimeError(f"anvil could not revert to snapshot {snapshot}")

    return Harness(
        backend="anvil",
        chain=chain,
        admin=admin,
        operator=operator,
        registrar=registrar,
        _fresh=fresh,
        _travel=node.time_travel,
        _manual=_anvil_manual,
        _snapshot=node.snapshot,
        _revert=revert,
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[Anvil]:
    """One anvil for the session (auto-mining, chain id 31337)."""
    if not anvil_available():
        pytest.skip(ANVIL_MISSING)
    with Anvil() as node:
        yield node


@pytest.fixture(scope="session")
def _harnesses() -> dict[str, Harness]:
    """The backends built so far (each once per session, on first use)."""
    return {}


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def chain_client(
    request: pytest.FixtureRequest, _harnesses: dict[str, Harness]
) -> Iterator[Harness]:
    """A :class:`Harness` on each backend, reverted to a clean chain after the test."""
    backend: str = request.param
    if backend not in _harnesses:
        if backend == "embedded":
            _harnesses[backend] = _embedded_harness()
        else:
            _harnesses[backend] = _anvil_harness(request.getfixturevalue("anvil_node"))
    harness = _harnesses[backend]
    harness._enter()
    try:
        yield harness
    finally:
        harness._leave()
