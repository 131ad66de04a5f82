"""Sending transactions signed by local keys, and decoding the contracts' custom errors.

Every transaction medtrail sends is signed locally (operator, registrar or test keys) and sent
raw, so the same code path runs on the embedded chain, on anvil and on a production network.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from eth_utils import function_signature_to_4byte_selector
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, Web3Exception
from web3.types import TxParams, TxReceipt

from ledger.chain.artifacts import CONTRACT_NAMES, load_artifact
from ledger.errors import LedgerError


class ChainError(LedgerError):
    """The chain could not be reached or did not answer as expected."""

    code = "chain-unavailable"
    status = 503


class ContractReverted(LedgerError):
    """A contract call reverted; ``error`` is the custom error's name, ``args`` its arguments."""

    code = "contract-reverted"
    status = 409

    def __init__(self, error: str, args: tuple[Any, ...], detail: str | None = None) -> None:
        super().__init__(detail or f"contract reverted with {error}{args!r}", error=error)
        self.error = error
        self.args_ = args


@dataclass(frozen=True)
class _ErrorAbi:
    name: str
    types: tuple[str, ...]


def _canonical_type(item: dict[str, Any]) -> str:
    kind = str(item["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in item["components"])
        return f"({inner}){kind[5:]}"
    return kind


@cache
def _error_table() -> dict[bytes, _ErrorAbi]:
    """Selector → custom error, over every medtrail contract and OpenZeppelin's errors."""
    table: dict[bytes, _ErrorAbi] = {}
    for name in CONTRACT_NAMES:
        for item in load_artifact(name).abi:
            if item.get("type") != "error":
                continue
            types = tuple(_canonical_type(i) for i in item["inputs"])
            signature = f"{item['name']}({','.join(types)})"
            table[function_signature_to_4byte_selector(signature)] = _ErrorAbi(item["name"], types)
    table[function_signature_to_4byte_selector("Error(string)")] = _ErrorAbi("Error", ("string",))
    table[function_signature_to_4byte_selector("Panic(uint256)")] = _ErrorAbi("Panic", ("uint256",))
    return table


def decode_revert(data: str | bytes | dict[str, Any] | None) -> ContractReverted:
    """Turn revert data (as web3 reports it) into a :class:`ContractReverted`."""
    if isinstance(data, dict):
        data = data.get("data")
    raw = (
        bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if isinstance(data, str)
        else data
    )
    if not raw or len(raw) < 4:
        return ContractReverted("Revert", ())
    abi = _error_table().get(raw[:4])
    if abi is None:
        return ContractReverted("UnknownError", ("0x" + raw.hex(),))
    try:
        args = tuple(abi_decode(list(abi.types), raw[4:]))
    except Exception:  # malformed revert payload: report it rather than crash
        return ContractReverted(abi.name, ("0x" + raw[4:].hex(),))
    return ContractReverted(abi.name, args)


def call_or_raise(fn: ContractFunction, tx: TxParams | None = None) -> Any:
    """``fn.call()``, with custom errors raised as :class:`ContractReverted`."""
    try:
        return fn.call(tx or {})
    except ContractLogicError as exc:
        raise decode_revert(exc.data) from exc
    except (Web3Exception, OSError) as exc:
        raise ChainError(f"chain call {fn.fn_name} failed: {exc}") from exc


def send(
    w3: Web3,
    fn: ContractFunction,
    account: LocalAccount,
    *,
    gas: int | None = None,
    timeout: float = 120.0,
) -> TxReceipt:
    """Sign ``fn`` as a transaction from ``account``, send it and wait for its receipt.

    The call is simulated first (gas estimation), so a revert raises :class:`ContractReverted`
    with the decoded custom error before anything is sent.
    """
    params: TxParams = {
        "from": account.address,
        "nonce": w3.eth.get_transaction_count(account.address, "pending"),
        "chainId": w3.eth.chain_id,
    }
    if gas is not None:
        params["gas"] = gas
    try:
        tx = fn.build_transaction(params)
    except ContractLogicError as exc:
        raise decode_revert(exc.data) from exc
    except (Web3Exception, OSError) as exc:
        raise ChainError(f"could not prepare {fn.fn_name}: {exc}") from exc
    signed = account.sign_transaction(tx)
    try:
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    except ContractLogicError as exc:
        raise decode_revert(exc.data) from exc
    except (Web3Exception, OSError) as exc:
        raise ChainError(f"transaction {fn.fn_name} failed: {exc}") from exc
    if receipt["status"] != 1:
        raise ContractReverted("Revert", (), f"transaction {tx_hash.hex()} reverted")
    return receipt
