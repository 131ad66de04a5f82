"""The embedded chain: eth-tester with py-evm, in process, for demos and tests."""

from __future__ import annotations

import threading
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse, Wei

from ledger.chain.tx import ChainError

#: Ether given to each key funded on the embedded chain.
FUNDING_WEI = 1000 * 10**18


class LockedEthereumTesterProvider(EthereumTesterProvider):
    """eth-tester's provider, one request at a time.

    py-evm is not thread-safe, and the service calls the chain from the API's worker
    threads and from the anchor worker's thread at once: every request takes one lock.
    """

    def __init__(self, tester: EthereumTester) -> None:
        super().__init__(tester)
        self._lock = threading.RLock()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self._lock:
            return super().make_request(method, params)


def embedded_web3() -> tuple[Web3, EthereumTester]:
    """A fresh in-process chain (genesis block, ten funded test accounts)."""
    tester = EthereumTester(PyEVMBackend())
    return Web3(LockedEthereumTesterProvider(tester)), tester


def fund(w3: Web3, *addresses: str, amount: int = FUNDING_WEI) -> None:
    """Send ``amount`` wei from the embedded chain's first test account to each address."""
    source = w3.eth.accounts[0]
    for address in addresses:
        tx_hash = w3.eth.send_transaction({"from": source, "to": address, "value": Wei(amount)})
        if w3.eth.wait_for_transaction_receipt(tx_hash)["status"] != 1:
            raise ChainError(f"funding {address} failed")


def funded_account(w3: Web3, private_key: bytes | None = None) -> LocalAccount:
    """A local account (new random key unless given), funded on the embedded chain."""
    account: LocalAccount = Account.from_key(private_key) if private_key else Account.create()
    fund(w3, account.address)
    return account
