"""Sending transactions signed by local keys, and decoding the contracts' custom errors.

Every transaction medtrail sends is signed locally (operator, registrar or test keys) and sent
raw, so the same code path runs on the embedded chain, on anvil and on a production network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from eth_utils.exceptions import ValidationError as EthValidationError
from web3 import Web3
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import (
    ContractLogicError,
    ExtraDataLengthError,
    InvalidAddress,
    MismatchedABI,
    Web3Exception,
    Web3TypeError,
    Web3ValidationError,
)
from web3.types import BlockIdentifier, TxParams, TxReceipt

from ledger.chain.abi import ContractReverted as ContractReverted  # (re-exported)
from ledger.chain.abi import decode_revert as decode_revert
from ledger.chain.abi import revert_data_of_tester
from ledger.chain.model import ChainError as ChainError  # (re-exported: its old home)


def revert_of(exc: BaseException) -> ContractReverted | None:
    """The decoded revert if ``exc`` reports one (JSON-RPC nodes or eth-tester), else None."""
    if isinstance(exc, ContractReverted):
        return exc
    if isinstance(exc, ContractLogicError):
        return decode_revert(exc.data)
    data = revert_data_of_tester(exc)
    if data is not None:
        return decode_revert(data)
    return None


def is_chain_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of the node or of the connection to it (not a bug of ours).

    JSON-RPC providers raise web3's exceptions or ``requests``' (``OSError``); the embedded
    chain also raises eth-tester's, py-evm's and eth-utils' own exception types.
    """
    if isinstance(exc, ExtraDataLengthError):
        return True  # a proof-of-authority chain reached without the PoA middleware
    if isinstance(exc, MismatchedABI | InvalidAddress | Web3TypeError | Web3ValidationError):
        return False  # arguments that do not fit the ABI: the caller's bug, not the chain's
    if isinstance(exc, Web3Exception | OSError | EthValidationError):
        return True
    module = type(exc).__module__
    return module.startswith(("eth_tester.", "eth.")) or module == "eth"


def call_or_raise(fn: ContractFunction, tx: TxParams | None = None) -> Any:
    """``fn.call()``, with custom errors raised as :class:`ContractReverted`."""
    try:
        return fn.call(tx or {})
    except Exception as exc:
        reverted = revert_of(exc)
        if reverted is not None:
            raise reverted from exc
        if is_chain_failure(exc):
            raise ChainError(f"chain call {fn.fn_name} failed: {exc}") from exc
        raise


def fn_label(fn: ContractFunction | ContractConstructor) -> str:
    """A contract function's name for messages (``constructor`` for a deployment)."""
    return str(getattr(fn, "fn_name", None) or "constructor")


def send(
    w3: Web3,
    fn: ContractFunction | ContractConstructor,
    account: LocalAccount,
    *,
    gas: int | None = None,
    timeout: float = 120.0,
) -> TxReceipt:
    """Sign ``fn`` as a transaction from ``account``, send it and wait for its receipt.

    The call is simulated first (gas estimation), so a revert raises :class:`ContractReverted`
    with the decoded custom error before anything is sent.
    """
    name = fn_label(fn)
    try:
        params: TxParams = {
            "from": account.address,
            "nonce": w3.eth.get_transaction_count(account.address, "pending"),
            "chainId": w3.eth.chain_id,
        }
        if gas is not None:
            params["gas"] = gas
        tx = fn.build_transaction(params)
    except Exception as exc:
        reverted = revert_of(exc)
        if reverted is not None:
            raise reverted from exc
        if is_chain_failure(exc):
            raise ChainError(f"could not prepare {name}: {exc}") from exc
        raise
    signed = account.sign_transaction(cast("dict[str, Any]", tx))
    try:
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    except Exception as exc:
        reverted = revert_of(exc)
        if reverted is not None:
            raise reverted from exc
        if is_chain_failure(exc):
            raise ChainError(f"transaction {name} failed: {exc}") from exc
        raise
    if receipt["status"] != 1:
        raise ContractReverted("Revert", (), f"transaction {tx_hash.hex()} reverted")
    return receipt


# --------------------------------------------------------------------------- fees and nonces

#: Each fee bump multiplies both fees by 9/8 (+12.5%), rounding up: geth needs +10% to replace
#: a pending transaction of the same nonce, some clients +12.5%; anvil takes any increase.
FEE_BUMP = (9, 8)


def bump_fee(value: int, steps: int = 1) -> int:
    """``value`` raised ``steps`` times by 12.5% (rounded up, and by at least 1 wei each time)."""
    if steps < 0:
        raise ValueError("fee bump steps must be >= 0")
    num, den = FEE_BUMP
    for _ in range(steps):
        value = max(-(-value * num // den), value + 1)
    return value


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fees of one transaction, in wei per gas."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    def bumped(self, steps: int = 1) -> Fees:
        """Both fees raised by :func:`bump_fee` ``steps`` times."""
        return Fees(
            bump_fee(self.max_fee_per_gas, steps), bump_fee(self.max_priority_fee_per_gas, steps)
        )

    def at_least(self, other: Fees) -> Fees:
        """The larger of each fee."""
        return Fees(
            max(self.max_fee_per_gas, other.max_fee_per_gas),
            max(self.max_priority_fee_per_gas, other.max_priority_fee_per_gas),
        )


def suggest_fees(w3: Web3) -> Fees:
    """EIP-1559 fees from the node: tip from ``eth_maxPriorityFeePerGas``, cap 2 x base + tip.

    Twice the base fee keeps the transaction includable through six full blocks in a row
    (each may raise the base fee by 12.5%). A chain without a base fee (free-gas consortium
    chains) gets a base fee of 0.
    """
    try:
        block = w3.eth.get_block("latest")
        priority = int(w3.eth.max_priority_fee)
    except Exception as exc:
        if is_chain_failure(exc):
            raise ChainError(f"could not read fees from the chain: {exc}") from exc
        raise
    base = int(block.get("baseFeePerGas", 0) or 0)
    return Fees(max_fee_per_gas=2 * base + priority, max_priority_fee_per_gas=priority)


def gas_with_margin(estimate: int, margin: float = 0.25, extra: int = 10_000) -> int:
    """A gas limit for an estimated transaction: the estimate plus ``margin`` and ``extra``."""
    return math.ceil(estimate * (1 + margin)) + extra


def estimate_gas(
    w3: Web3, fn: ContractFunction, sender: str, block: BlockIdentifier = "latest"
) -> int:
    """Simulate ``fn`` from ``sender`` on ``block`` and return its gas estimate.

    A revert raises :class:`ContractReverted` with the decoded custom error. The default block
    is ``latest`` (not the node's default, which for some nodes is ``pending``): a replacement
    of a pending transaction must be simulated without it. eth-tester knows no ``pending``.
    """
    try:
        return int(fn.estimate_gas({"from": Web3.to_checksum_address(sender)}, block))
    except Exception as exc:
        reverted = revert_of(exc)
        if reverted is not None:
            raise reverted from exc
        if is_chain_failure(exc):
            raise ChainError(f"could not simulate {fn.fn_name}: {exc}") from exc
        raise


class Rejection(StrEnum):
    """Why a node refused a raw transaction, when the refusal says something about its nonce."""

    #: The very same transaction is in the node's pool already.
    ALREADY_KNOWN = "already-known"
    #: The nonce has been used by a mined transaction (this one or another).
    NONCE_TOO_LOW = "nonce-too-low"
    #: Another transaction with the same nonce, paying as much or more, is in the pool.
    UNDERPRICED = "underpriced"


_REJECTIONS: tuple[tuple[Rejection, tuple[str, ...]], ...] = (
    # geth/erigon "already known", anvil "transaction already imported", besu "Known transaction"
    # / TRANSACTION_ALREADY_KNOWN, nethermind "AlreadyKnown".
    (
        Rejection.ALREADY_KNOWN,
        ("already known", "already imported", "known transaction", "alreadyknown"),
    ),
    # geth/anvil/besu "nonce too low" / NONCE_TOO_LOW, nethermind "OldNonce", eth-tester
    # "Invalid transaction nonce: Expected N, but got M" (only when M < N, checked below).
    (Rejection.NONCE_TOO_LOW, ("nonce too low", "oldnonce", "invalid transaction nonce")),
    # geth/anvil "replacement transaction underpriced", besu REPLACEMENT_UNDERPRICED,
    # nethermind "ReplacementNotAllowed".
    (
        Rejection.UNDERPRICED,
        ("replacement transaction underpriced", "replacement underpriced", "replacementnotallowed"),
    ),
)


def rejection_of(exc: BaseException) -> Rejection | None:
    """Classify a node's refusal of ``eth_sendRawTransaction`` (None: some other failure)."""
    message = str(getattr(exc, "message", None) or exc).lower().replace("_", " ")
    for rejection, needles in _REJECTIONS:
        if not any(needle in message for needle in needles):
            continue
        if "invalid transaction nonce" in message:
            numbers = [
                int(word.strip(",.")) for word in message.split() if word.strip(",.").isdigit()
            ]
            if len(numbers) == 2 and numbers[1] > numbers[0]:
                return None  # a nonce *above* the expected one: eth-tester has no queue
        return rejection
    return None
