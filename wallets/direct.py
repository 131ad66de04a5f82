"""The patient's own line to the ConsentRegistryV2: read a grant's marks and send ``revoke``
through any JSON-RPC node, without the medtrail service (no web3: :mod:`ledger.chain.rpc`).

Anyone may present a revocation secret; the sender pays the gas. Sent from the patient's own
address, the transaction tells the chain that this address revoked *some* grant (never which,
nor to whom): a patient who minds that sends it from another funded account.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

from eth_account.signers.local import LocalAccount

from ledger.chain.abi import ContractReverted, decode_revert, function
from ledger.chain.consent import CONTRACT
from ledger.chain.model import ChainError
from ledger.chain.reader import check_contract_code
from ledger.chain.rpc import JsonRpc, RpcError, hex_data, quantity
from ledger.eip712 import Domain
from ledger.errors import LedgerError
from ledger.redact import url_origin
from wallets.errors import WalletError

__all__ = ["RECEIPT_TIMEOUT", "DirectConsent", "DirectRevocation", "node_chain_id"]

#: How long to wait for the revocation to be mined (seconds).
RECEIPT_TIMEOUT: Final = 120.0
_POLL: Final = 0.25


@dataclass(frozen=True)
class DirectRevocation:
    """A revocation mined: its transaction, block and block time (when it takes effect)."""

    transaction_hash: str
    block_number: int
    revoked_at: int
    sender: str

    def as_json(self) -> dict[str, Any]:
        return {
            "transactionHash": self.transaction_hash,
            "blockNumber": self.block_number,
            "revokedAt": self.revoked_at,
            "sender": self.sender,
        }


class DirectConsent:
    """The ConsentRegistryV2 of ``domain`` through the node at ``rpc_url``: the node's chain
    must be the domain's and the code at the address ConsentRegistryV2's (else a
    :class:`WalletError` before anything is signed)."""

    def __init__(self, rpc_url: str, domain: Domain, *, timeout: float = 10.0) -> None:
        self.domain = domain
        self.address = domain.verifying_contract
        self.rpc = JsonRpc(rpc_url, timeout=timeout)
        self.node = url_origin(rpc_url)
        try:
            chain_id = quantity(self.rpc.call("eth_chainId", []), "eth_chainId")
            if chain_id != domain.chain_id:
                raise WalletError(
                    f"the node at {self.node} is on chain {chain_id}, the grant's registry on "
                    f"chain {domain.chain_id}: pass a node of chain {domain.chain_id}",
                    rpc_url=self.node,
                )
            check_contract_code(self.rpc, CONTRACT, self.address)
        except ChainError as exc:
            self.rpc.close()
            raise self._failure(exc) from None
        except (WalletError, LedgerError):  # not this chain; not a ConsentRegistryV2
            self.rpc.close()
            raise

    def close(self) -> None:
        self.rpc.close()

    def __enter__(self) -> DirectConsent:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _failure(self, exc: ChainError) -> WalletError:
        return _chain_failure(exc, self.node)

    def _call(self, name: str, *args: Any) -> tuple[Any, ...]:
        fn = function(CONTRACT, name)
        data = "0x" + fn.encode(*args).hex()
        try:
            answer = self.rpc.call("eth_call", [{"to": self.address, "data": data}, "latest"])
            return fn.decode(hex_data(answer, name), name)
        except ChainError as exc:
            raise self._failure(exc) from None

    def committed_at(self, commitment: bytes) -> int:
        """Block time the commitment went on chain; 0 if it is not on chain."""
        return int(self._call("committedAt", commitment)[0])

    def revoked_at(self, revocation_hash: bytes) -> int:
        """Block time of the revocation; 0 if none."""
        return int(self._call("revokedAt", revocation_hash)[0])

    def revoke(self, secret: bytes, sender: LocalAccount) -> DirectRevocation:
        """Send ``revoke(secret)`` from ``sender`` and wait until it is mined. The call is
        simulated first: a revert (``AlreadyRevoked``) is refused before anything is sent."""
        data = "0x" + function(CONTRACT, "revoke").encode(secret).hex()
        call = {"from": sender.address, "to": self.address, "data": data}
        try:
            gas = quantity(self.rpc.call("eth_estimateGas", [call]), "eth_estimateGas")
            nonce = quantity(
                self.rpc.call("eth_getTransactionCount", [sender.address, "pending"]),
                "eth_getTransactionCount",
            )
            price = quantity(self.rpc.call("eth_gasPrice", []), "eth_gasPrice")
            tx: dict[str, Any] = {
                "to": self.address,
                "data": data,
                "gas": gas + gas // 5,
                "gasPrice": price,
                "nonce": nonce,
                "chainId": self.domain.chain_id,
                "value": 0,
            }
            raw = sender.sign_transaction(tx).raw_transaction
            tx_hash = str(self.rpc.call("eth_sendRawTransaction", ["0x" + bytes(raw).hex()]))
            receipt = self._receipt(tx_hash)
            if quantity(receipt.get("status"), "the receipt's status") != 1:
                raise WalletError(f"the revocation {tx_hash} was mined but failed (reverted)")
            number = quantity(receipt.get("blockNumber"), "the receipt's blockNumber")
            block = self.rpc.call("eth_getBlockByNumber", [hex(number), False])
            revoked_at = quantity(block.get("timestamp"), "the block's timestamp")
        except RpcError as exc:
            revert = exc.revert_data()
            if revert is not None:
                raise _refused(decode_revert(revert)) from None
            raise self._failure(exc) from None
        except ChainError as exc:
            raise self._failure(exc) from None
        return DirectRevocation(tx_hash, number, revoked_at, sender.address)

    def _receipt(self, tx_hash: str) -> dict[str, Any]:
        deadline = time.monotonic() + RECEIPT_TIMEOUT
        while True:
            receipt = self.rpc.call("eth_getTransactionReceipt", [tx_hash])
            if isinstance(receipt, dict):
                return receipt
            if time.monotonic() > deadline:
                raise WalletError(
                    f"the revocation {tx_hash} was sent to {self.node} but not mined within "
                    f"{RECEIPT_TIMEOUT:.0f} s: check it later (it takes effect once mined)"
                )
            time.sleep(_POLL)


def node_chain_id(rpc_url: str) -> int:
    """The chain id of the node at ``rpc_url`` (:class:`WalletError` if it does not answer)."""
    try:
        with JsonRpc(rpc_url) as rpc:
            return quantity(rpc.call("eth_chainId", []), "eth_chainId")
    except ChainError as exc:
        raise _chain_failure(exc, url_origin(rpc_url)) from None


def _chain_failure(exc: ChainError, node: str) -> WalletError:
    """``exc`` as one message naming the node once."""
    detail = exc.detail if node in exc.detail else f"the chain at {node}: {exc.detail}"
    return WalletError(detail, rpc_url=node)


def _refused(reverted: ContractReverted) -> WalletError:
    if reverted.error == "AlreadyRevoked":
        return WalletError("the grant is revoked on chain already: nothing was sent")
    return WalletError(f"the ConsentRegistryV2 refuses the revocation ({reverted.error})")
