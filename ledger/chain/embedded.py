"""The embedded chain: eth-tester with py-evm, in process, for demos and tests.

Writes go through web3 (:class:`LockedEthereumTesterProvider`); reads go through the same
:class:`~ledger.chain.reader.ChainReader` as on any node, spoken to in JSON-RPC by
:class:`EmbeddedNode`, under the same lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import RPCEndpoint, RPCResponse, Wei

from ledger.chain.abi import revert_data_of_tester
from ledger.chain.rpc import InProcessTransport, JsonRpc
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
        #: Held by every request, through web3 or :class:`EmbeddedNode`.
        self.lock = threading.RLock()

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        with self.lock:
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


class EmbeddedNode:
    """The embedded chain as a JSON-RPC node, in process: a handler of JSON-RPC payloads (one
    request or a batch) for :class:`~ledger.chain.rpc.InProcessTransport`.

    It answers the read methods :class:`~ledger.chain.reader.ChainReader` sends
    (``eth_chainId``, ``eth_blockNumber``, ``eth_getBlockByNumber``, ``eth_getCode``,
    ``eth_call``, ``eth_getLogs``) as anvil does: hex quantities and data, ``null`` for a
    block that does not exist, a revert as error code 3 with the revert data. It asks
    eth-tester directly: web3's provider speaks eth-tester's Python dialect (integer block
    numbers, snake_case keys, exceptions for reverts), which web3's formatting middleware
    translates. Hold the provider's lock around each payload (the transport does).
    """

    def __init__(self, provider: LockedEthereumTesterProvider) -> None:
        tester = provider.ethereum_tester
        if tester is None:  # pragma: no cover - the provider always has one
            raise ChainError("the embedded chain's provider has no eth-tester")
        self.tester: EthereumTester = tester
        self.lock = provider.lock
        self.chain_id = int(provider.make_request(RPCEndpoint("eth_chainId"), [])["result"])
        #: The sender of ``eth_call`` s (eth-tester wants one with funds for the gas).
        self._caller = self.tester.get_accounts()[0]
        self._methods: dict[str, Callable[[list[Any]], Any]] = {
            "eth_chainId": lambda _params: hex(self.chain_id),
            "eth_blockNumber": lambda _params: hex(self._latest()),
            "eth_getBlockByNumber": self._block,
            "eth_getCode": lambda params: self.tester.get_code(params[0]),
            "eth_call": self._call,
            "eth_getLogs": self._logs,
        }

    def __call__(self, payload: Any) -> Any:
        if isinstance(payload, list):
            return [self._answer(request) for request in payload]
        return self._answer(payload)

    def _answer(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or not isinstance(request.get("params"), list):
            return _error(None, -32600, "invalid request")
        method = self._methods.get(str(request.get("method")))
        if method is None:
            return _error(request.get("id"), -32601, f"method {request.get('method')!r} not found")
        try:
            result = method(request["params"])
        except _Reverted as reverted:
            return _error(request.get("id"), 3, "execution reverted", "0x" + reverted.data.hex())
        except (ValueError, TypeError, KeyError, IndexError, LookupError) as exc:
            return _error(request.get("id"), -32602, f"invalid params: {exc}")
        except Exception as exc:
            if type(exc).__module__.startswith(("eth_tester.", "eth.", "eth_utils.")):
                return _error(request.get("id"), -32602, f"invalid params: {exc}")
            raise
        return {"jsonrpc": "2.0", "id": request.get("id"), "result": result}

    def _latest(self) -> int:
        return int(self.tester.get_block_by_number("latest")["number"])

    def _block(self, params: list[Any]) -> dict[str, Any] | None:
        tag = params[0]
        number: int | str = tag if tag == "latest" else int(tag, 16)
        try:
            block = self.tester.get_block_by_number(number)
        except Exception as exc:
            if type(exc).__name__ == "BlockNotFound":
                return None
            raise
        return {
            "number": hex(block["number"]),
            "hash": block["hash"],
            "parentHash": block["parent_hash"],
            "timestamp": hex(block["timestamp"]),
        }

    def _call(self, params: list[Any]) -> str:
        call = params[0]
        transaction = {"from": self._caller, "to": call["to"], "data": call.get("data", "0x")}
        try:
            return str(self.tester.call(transaction, "latest"))
        except Exception as exc:
            data = revert_data_of_tester(exc)
            if data is None:
                raise
            raise _Reverted(data) from exc

    def _logs(self, params: list[Any]) -> list[dict[str, Any]]:
        query = params[0]
        latest = self._latest()
        start = int(query.get("fromBlock", "0x0"), 16)
        stop = query.get("toBlock", "latest")
        end = latest if stop == "latest" else min(int(stop, 16), latest)
        if start > end:
            return []
        logs = self.tester.get_logs(
            from_block=start, to_block=end, address=query.get("address"), topics=query.get("topics")
        )
        return [
            {
                "address": log["address"],
                "topics": list(log["topics"]),
                "data": log["data"],
                "blockNumber": hex(log["block_number"]),
                "blockHash": log["block_hash"],
                "transactionHash": log["transaction_hash"],
                "logIndex": hex(log["log_index"]),
            }
            for log in logs
        ]


class _Reverted(Exception):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.data = data


def _error(request_id: Any, code: int, message: str, data: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


def embedded_rpc(provider: LockedEthereumTesterProvider) -> JsonRpc:
    """A JSON-RPC client of the embedded chain behind ``provider``, in process (its reads
    take the provider's lock, as web3's requests do)."""
    return JsonRpc(
        InProcessTransport(EmbeddedNode(provider), name="the embedded chain", lock=provider.lock)
    )
