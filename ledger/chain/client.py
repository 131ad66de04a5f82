"""The service's chain client: medtrail's contracts read and written, on any EVM chain.

:class:`Chain` is a :class:`~ledger.chain.reader.ChainReader` (every read, over JSON-RPC: the
reader the wallet and the regulator's tools use too) that also writes: checkpoints,
institutions and relayed consent, signed locally and sent through web3. It runs over the
embedded eth-tester chain (:func:`embedded_chain`; reads through
:class:`~ledger.chain.embedded.EmbeddedNode`) or a JSON-RPC node such as anvil, geth or Besu
(:func:`rpc_chain`). Callers depend on the narrow protocol of what they use (the anchor
worker's :class:`AnchorChain`, ingest's institution and grant sources), not on this class.

Conventions:

* every failure of the node or of the connection raises :class:`~ledger.chain.tx.ChainError`;
  a contract revert raises :class:`~ledger.chain.tx.ContractReverted` carrying the decoded
  custom error (``error.error == "CheckpointNotLarger"``, ``error.args_ == (3, 2)``); a write
  without the key it needs raises :class:`SignerNotConfigured`;
* every transaction is signed locally (the log operator's key for checkpoints and relayed
  consent, a registrar's key for institutions) and sent raw, with EIP-1559 fees;
* reads are not cached here (the service caches what it needs);
* times are unix seconds (block time), as the contracts store them.

Checkpoint writes are split for a crash-safe anchor worker: :meth:`Chain.sign_checkpoint`
returns a :class:`SignedTx` the worker records *before* :meth:`Chain.broadcast`, which is
idempotent, so a restart can re-broadcast whatever it recorded; a stuck transaction is replaced
by signing again with the same nonce and a ``fee_bump``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, runtime_checkable

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import TimeExhausted, TransactionNotFound
from web3.logs import DISCARD
from web3.middleware import ExtraDataToPOAMiddleware
from web3.types import Nonce, TxParams, TxReceipt, Wei

from ledger.chain.consent import CONTRACT as CONSENT_V2
from ledger.chain.consent_client import ConsentV2, check_signature
from ledger.chain.deploy import Contracts, Deployment, bind
from ledger.chain.deploy import deploy as deploy_contracts
from ledger.chain.model import CheckpointRoots as CheckpointRoots
from ledger.chain.model import InstitutionInfo as InstitutionInfo  # (re-exported)
from ledger.chain.model import OnChainCheckpoint as OnChainCheckpoint
from ledger.chain.model import hash32
from ledger.chain.reader import (
    DEFAULT_LOG_PAGE,
    ChainReader,
    CheckpointCommit,
    DeploymentSpec,
)
from ledger.chain.reader import GrantInfo as GrantInfo  # (re-exported: its old home)
from ledger.chain.rpc import JsonRpc
from ledger.chain.tx import (
    ChainError,
    ContractReverted,
    Fees,
    Rejection,
    estimate_gas,
    gas_with_margin,
    is_chain_failure,
    rejection_of,
    revert_of,
    suggest_fees,
)
from ledger.errors import LedgerError, MalformedEventError
from ledger.events import InstitutionKind
from ledger.rules import GrantStatus

if TYPE_CHECKING:
    from eth_tester import EthereumTester

__all__ = [
    "AnchorChain",
    "Broadcast",
    "BroadcastOutcome",
    "Chain",
    "CheckpointRoots",
    "GrantInfo",
    "GrantRequest",
    "GrantStatus",
    "InstitutionInfo",
    "InstitutionKind",
    "MinedTx",
    "OnChainCheckpoint",
    "SignedTx",
    "SignerNotConfigured",
    "deploy_to_rpc",
    "embedded_chain",
    "http_web3",
    "rpc_chain",
    "rpc_of",
]

log = logging.getLogger(__name__)

_UINT64_MAX = 2**64 - 1

#: Attempts of a relayed/registrar write whose nonce was taken by a concurrent sender.
_WRITE_ATTEMPTS = 3


class SignerNotConfigured(LedgerError):
    """A write needs a key (log operator or registrar) this client was not given."""

    code = "signer-not-configured"
    status = 500


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True)
class GrantRequest:
    """What a patient grants (``IConsentRegistry.GrantRequest``). ``record_ref`` of 32 zero
    bytes covers all the patient's records; ``purposes`` is a bitmask of ``1 << purpose``."""

    grantee: str
    record_ref: bytes
    purposes: int
    not_before: int
    expires_at: int

    def __post_init__(self) -> None:
        if not isinstance(self.record_ref, bytes) or len(self.record_ref) != 32:
            raise MalformedEventError("recordRef must be 32 bytes", field="recordRef")
        for field in ("purposes", "not_before", "expires_at"):
            value = getattr(self, field)
            limit = 2**256 - 1 if field == "purposes" else _UINT64_MAX
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
                raise MalformedEventError(f"{field} is out of range", field=field)

    def as_abi(self) -> tuple[ChecksumAddress, bytes, int, int, int]:
        """The struct as a tuple in ABI field order."""
        return (
            _address(self.grantee, "grantee"),
            self.record_ref,
            self.purposes,
            self.not_before,
            self.expires_at,
        )


@dataclass(frozen=True)
class SignedTx:
    """A signed EIP-1559 transaction, ready to (re-)broadcast. Store ``raw``; the rest is
    derived from it (:meth:`from_raw`)."""

    tx_hash: bytes
    raw: bytes
    nonce: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    @property
    def fees(self) -> Fees:
        return Fees(self.max_fee_per_gas, self.max_priority_fee_per_gas)

    @classmethod
    def from_raw(cls, raw: bytes) -> SignedTx:
        """Decode a raw EIP-1559 transaction (as recorded by the anchor worker)."""
        try:
            fields = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
            return cls(
                tx_hash=keccak(bytes(raw)),
                raw=bytes(raw),
                nonce=int(fields["nonce"]),
                max_fee_per_gas=int(fields["maxFeePerGas"]),
                max_priority_fee_per_gas=int(fields["maxPriorityFeePerGas"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedEventError(f"not a raw EIP-1559 transaction: {exc}") from exc


@dataclass(frozen=True)
class MinedTx:
    """A transaction's receipt: where it was mined and whether it succeeded (status 1)."""

    tx_hash: bytes
    block_number: int
    block_hash: bytes
    status: int

    @property
    def succeeded(self) -> bool:
        return self.status == 1


class BroadcastOutcome(StrEnum):
    """What happened when a signed transaction was broadcast."""

    #: The node accepted it now.
    SENT = "sent"
    #: The node had it already (pending in its pool).
    ALREADY_KNOWN = "already-known"
    #: Its nonce is used, by this very transaction: it is mined.
    ALREADY_MINED = "already-mined"
    #: Its nonce is used by another mined transaction (a replacement, or another write of the
    #: same key): this one can never be mined.
    NONCE_CONSUMED = "nonce-consumed"
    #: Another transaction with the same nonce, paying at least as much, is pending: this one
    #: was not accepted (bump the fees to replace it).
    UNDERPRICED = "underpriced"


@dataclass(frozen=True)
class Broadcast:
    """The result of :meth:`Chain.submit`."""

    tx_hash: bytes
    outcome: BroadcastOutcome


# --------------------------------------------------------------------------- the protocol


@runtime_checkable
class AnchorChain(Protocol):
    """What the anchor worker does with the chain (:class:`Chain` implements it)."""

    def block_number(self) -> int: ...

    def block_hash(self, number: int) -> bytes | None: ...

    def latest_checkpoint(self) -> OnChainCheckpoint | None: ...

    def checkpoint_at(self, size: int) -> CheckpointRoots | None: ...

    def checkpoint_commit(
        self, size: int, from_block: int | None = None
    ) -> CheckpointCommit | None: ...

    def find_checkpoint_tx(self, size: int, from_block: int | None = None) -> bytes | None: ...

    def sign_checkpoint(
        self,
        size: int,
        root: bytes,
        index_root: bytes,
        proof: Sequence[bytes],
        *,
        nonce: int | None = None,
        fee_bump: int = 0,
        replacing: SignedTx | None = None,
    ) -> SignedTx: ...

    def submit(self, signed: SignedTx) -> Broadcast: ...

    def mined(self, tx_hash: bytes) -> MinedTx | None: ...


# --------------------------------------------------------------------------- helpers


def _address(value: str, field: str = "address") -> ChecksumAddress:
    try:
        return to_checksum_address(value)
    except (ValueError, TypeError) as exc:
        raise MalformedEventError(f"{field} is not an address: {value!r}", field=field) from exc


@contextmanager
def _chain_call(what: str) -> Iterator[None]:
    """Turn node failures into ChainError and reverts into ContractReverted."""
    try:
        yield
    except LedgerError:
        raise
    except Exception as exc:
        reverted = revert_of(exc)
        if reverted is not None:
            raise reverted from exc
        if isinstance(exc, TimeExhausted) or is_chain_failure(exc):
            raise ChainError(f"{what} failed: {exc}") from exc
        raise


def rpc_of(w3: Web3, *, timeout: float = 10.0) -> JsonRpc:
    """The JSON-RPC client the reads of a web3 connection go through: the embedded chain's
    :class:`~ledger.chain.embedded.EmbeddedNode`, or the HTTP node ``w3`` talks to."""
    from ledger.chain.embedded import LockedEthereumTesterProvider, embedded_rpc

    provider = w3.provider
    if isinstance(provider, LockedEthereumTesterProvider):
        return embedded_rpc(provider)
    if isinstance(provider, HTTPProvider):
        return JsonRpc(str(provider.endpoint_uri), timeout=timeout)
    raise TypeError(f"no JSON-RPC reader for a web3 connection over {type(provider).__name__}")


# --------------------------------------------------------------------------- the client


class Chain(ChainReader):
    """Every read (:class:`~ledger.chain.reader.ChainReader`) and every write medtrail makes.

    :param w3: the connection writes are sent through (embedded or JSON-RPC).
    :param deployment: where the contracts are (checked by :func:`rpc_chain`, not here).
    :param operator: the log operator's key: commits checkpoints and pays for relayed consent
        transactions. None for a client that only reads.
    :param registrar: a REGISTRAR key, for registering, suspending and reinstating institutions.
    :param rpc: the JSON-RPC client reads go through (by default :func:`rpc_of` ``w3``).
    :param receipt_timeout: seconds to wait for a relayed or registrar transaction to be mined.
    :param log_page_size: blocks per ``eth_getLogs`` request.
    """

    def __init__(
        self,
        w3: Web3,
        deployment: Deployment,
        operator: LocalAccount | None,
        registrar: LocalAccount | None = None,
        *,
        rpc: JsonRpc | None = None,
        receipt_timeout: float = 120.0,
        log_page_size: int = DEFAULT_LOG_PAGE,
    ) -> None:
        trusted = DeploymentSpec.from_deployment(deployment).resolve(deployment.chain_id)
        super().__init__(rpc or rpc_of(w3), trusted, log_page_size=log_page_size)
        self.w3 = w3
        self._deployment = deployment
        self.contracts: Contracts = bind(w3, deployment)
        #: The deployment's ConsentRegistryV2 (None: a version-1-only deployment).
        self.consent_v2: ConsentV2 | None = (
            ConsentV2(w3, deployment.consent_registry_v2)
            if deployment.consent_registry_v2 is not None
            else None
        )
        self.operator = operator
        self.registrar = registrar
        self.receipt_timeout = receipt_timeout
        # One sender at a time per key in this process: nonce allocation, signing, sending.
        self._send_lock = threading.Lock()

    def __repr__(self) -> str:
        operator = self.operator.address if self.operator else None
        return f"<Chain {self.chain_id} audit_log={self._deployment.audit_log} operator={operator}>"

    @property
    def deployment(self) -> Deployment:
        return self._deployment

    # ------------------------------------------------------------------ checkpoints

    def sign_checkpoint(
        self,
        size: int,
        root: bytes,
        index_root: bytes,
        proof: Sequence[bytes],
        *,
        nonce: int | None = None,
        fee_bump: int = 0,
        replacing: SignedTx | None = None,
    ) -> SignedTx:
        """Sign ``commitCheckpoint(size, root, index_root, proof)`` with the operator key,
        without sending: the log's checkpoint, with the root of its verifiable index at the
        same size (docs/index.md).

        The call is simulated first on the latest block, so a checkpoint the contract would
        refuse raises :class:`ContractReverted` (``CheckpointNotLarger``,
        ``InvalidConsistencyProof``…) and nothing is signed. Because the simulation runs on
        the latest *mined* state, sign a checkpoint only once the previous one is mined.

        :param nonce: the operator nonce to use; the next pending nonce by default. Give the
            nonce of a stuck transaction to replace it.
        :param fee_bump: raise the node's suggested fees this many times by 12.5%.
        :param replacing: the pending transaction this one replaces: its nonce is reused (unless
            ``nonce`` is given) and both fees are at least 12.5% above its own, whatever the
            node suggests now, so that nodes accept the replacement.
        """
        operator = self._signer(self.operator, "the log operator")
        root = hash32(root, "root")
        index_root = hash32(index_root, "index root")
        nodes = [hash32(node, "consistency proof element") for node in proof]
        if fee_bump < 0:
            raise ValueError("fee_bump must be >= 0")
        fn = self.contracts.audit_log.functions.commitCheckpoint(size, root, index_root, nodes)
        with _chain_call(f"signing checkpoint {size}"):
            gas = gas_with_margin(estimate_gas(self.w3, fn, operator.address))
            if nonce is None:
                nonce = (
                    replacing.nonce
                    if replacing is not None
                    else int(self.w3.eth.get_transaction_count(operator.address, "pending"))
                )
            fees = suggest_fees(self.w3).bumped(fee_bump)
            if replacing is not None and replacing.nonce == nonce:
                fees = fees.at_least(replacing.fees.bumped(1))
            signed = self._sign(operator, fn, nonce=nonce, gas=gas, fees=fees)
        log.debug("signed checkpoint %d: nonce %d, tx %s", size, nonce, signed.tx_hash.hex())
        return signed

    def submit(self, signed: SignedTx) -> Broadcast:
        """Broadcast ``signed`` and say what happened. Idempotent: a node answering that it
        knows the transaction already, that its nonce is used, or that a pending transaction
        with the same nonce pays more, is reported as such, not raised."""
        tx_hash = signed.tx_hash
        with _chain_call(f"broadcasting {tx_hash.hex()}"):
            try:
                self.w3.eth.send_raw_transaction(signed.raw)
                outcome = BroadcastOutcome.SENT
            except Exception as exc:
                rejection = None if isinstance(exc, OSError) else rejection_of(exc)
                if rejection is None:
                    raise
                outcome = self._outcome_of(rejection, tx_hash)
        log.info("broadcast %s (nonce %d): %s", tx_hash.hex(), signed.nonce, outcome.value)
        return Broadcast(tx_hash, outcome)

    def _outcome_of(self, rejection: Rejection, tx_hash: bytes) -> BroadcastOutcome:
        if rejection is Rejection.ALREADY_KNOWN:
            return BroadcastOutcome.ALREADY_KNOWN
        if rejection is Rejection.NONCE_TOO_LOW:
            if self.mined(tx_hash) is not None:
                return BroadcastOutcome.ALREADY_MINED
            return BroadcastOutcome.NONCE_CONSUMED
        # Some nodes answer "underpriced" to the same transaction again: is it the one pending?
        try:
            self.w3.eth.get_transaction(HexBytes(tx_hash))
        except TransactionNotFound:
            return BroadcastOutcome.UNDERPRICED
        return BroadcastOutcome.ALREADY_KNOWN

    def broadcast(self, signed: SignedTx) -> bytes:
        """:meth:`submit` ``signed`` and return its hash (the outcome is logged)."""
        return self.submit(signed).tx_hash

    def broadcast_raw(self, raw: bytes) -> bytes:
        """:meth:`broadcast` a recorded raw transaction."""
        return self.broadcast(SignedTx.from_raw(raw))

    def mined(self, tx_hash: bytes) -> MinedTx | None:
        """The receipt of ``tx_hash``; None while it is not mined (pending, dropped, replaced,
        or its block was reorganised away)."""
        with _chain_call(f"reading the receipt of {tx_hash.hex()}"):
            try:
                receipt = self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
            except TransactionNotFound:
                return None
        if receipt.get("blockNumber") is None:
            return None
        return MinedTx(
            tx_hash=bytes(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            block_hash=bytes(receipt["blockHash"]),
            status=int(receipt["status"]),
        )

    def wait_mined(
        self, tx_hash: bytes, timeout: float = 30.0, poll: float = 0.05
    ) -> MinedTx | None:
        """Poll :meth:`mined` until ``tx_hash`` is mined or ``timeout`` seconds have passed.

        Even an auto-mining node may answer ``eth_sendRawTransaction`` before it has mined the
        block (anvil does), so a receipt is not there at once.
        """
        deadline = time.monotonic() + timeout
        while True:
            mined = self.mined(tx_hash)
            if mined is not None or time.monotonic() >= deadline:
                return mined
            time.sleep(poll)

    def operator_nonce(self, block: Literal["pending", "latest"] = "pending") -> int:
        """The operator's next nonce, counting pending transactions or only mined ones."""
        operator = self._signer(self.operator, "the log operator")
        with _chain_call("reading the operator nonce"):
            return int(self.w3.eth.get_transaction_count(operator.address, block))

    # ------------------------------------------------------------------ institutions

    def register_institution(self, address: str, kind: InstitutionKind | int, name: str) -> bytes:
        """Register ``address`` as an active institution (registrar key). Returns the tx hash."""
        fn = self.contracts.institutions.functions.register(_address(address), int(kind), name)
        return bytes(
            self._transact(self._signer(self.registrar, "a registrar"), fn)["transactionHash"]
        )

    def suspend_institution(self, address: str) -> bytes:
        """Suspend a registered institution (registrar key). Returns the tx hash."""
        fn = self.contracts.institutions.functions.suspend(_address(address))
        return bytes(
            self._transact(self._signer(self.registrar, "a registrar"), fn)["transactionHash"]
        )

    def reinstate_institution(self, address: str) -> bytes:
        """Reinstate a suspended institution (registrar key). Returns the tx hash."""
        fn = self.contracts.institutions.functions.reinstate(_address(address))
        return bytes(
            self._transact(self._signer(self.registrar, "a registrar"), fn)["transactionHash"]
        )

    # ------------------------------------------------------------------ consent

    def relay_grant(
        self, patient: str, request: GrantRequest, deadline: int, signature: bytes
    ) -> tuple[int, bytes]:
        """Relay a patient-signed grant (operator pays). Returns (grant id, tx hash)."""
        fn = self.contracts.consent.functions.grantBySig(
            _address(patient, "patient"), request.as_abi(), deadline, bytes(signature)
        )
        receipt = self._transact(self._signer(self.operator, "the log operator"), fn)
        created = self.contracts.consent.events.GrantCreated().process_receipt(
            receipt, errors=DISCARD
        )
        ids = [
            int(e["args"]["grantId"])
            for e in created
            if e["address"] == self.contracts.consent.address
        ]
        if not ids:
            raise ChainError(
                f"grant transaction {receipt['transactionHash'].hex()} emitted no GrantCreated"
            )
        return ids[0], bytes(receipt["transactionHash"])

    def relay_revoke(self, patient: str, grant_id: int, deadline: int, signature: bytes) -> bytes:
        """Relay a patient-signed revocation (operator pays). Returns the tx hash."""
        fn = self.contracts.consent.functions.revokeBySig(
            _address(patient, "patient"), grant_id, deadline, bytes(signature)
        )
        receipt = self._transact(self._signer(self.operator, "the log operator"), fn)
        return bytes(receipt["transactionHash"])

    def relay_increase_nonce(
        self, patient: str, new_nonce: int, deadline: int, signature: bytes
    ) -> bytes:
        """Relay a patient-signed nonce increase, cancelling every outstanding signature."""
        fn = self.contracts.consent.functions.increaseNonceBySig(
            _address(patient, "patient"), new_nonce, deadline, bytes(signature)
        )
        receipt = self._transact(self._signer(self.operator, "the log operator"), fn)
        return bytes(receipt["transactionHash"])

    # ------------------------------------------------------------------ consent version 2

    def _v2(self) -> ConsentV2:
        if self.consent_v2 is None:
            raise ChainError("this deployment has no ConsentRegistryV2")
        return self.consent_v2

    def commit_grants(self, commitments: Sequence[bytes]) -> bytes:
        """Put version-2 grant commitments on chain in one ``commit`` (operator pays);
        commitments already there are left as they are. Returns the tx hash."""
        fn = self._v2().commit_call(commitments)
        receipt = self._transact(self._signer(self.operator, "the log operator"), fn)
        return bytes(receipt["transactionHash"])

    def relay_revoke_v2(self, secret: bytes) -> bytes:
        """Present a version-2 revocation secret (operator pays). Returns the tx hash."""
        fn = self._v2().revoke_call(secret)
        receipt = self._transact(self._signer(self.operator, "the log operator"), fn)
        return bytes(receipt["transactionHash"])

    def grant_v2_times(self, keys: Sequence[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
        """For each ``(commitment, revocation hash)``, the block times of the commitment and
        of the revocation on chain (0: none), read in JSON-RPC batches."""
        if not keys:
            return []
        at = self._v2().address
        committed = self.call_many(CONSENT_V2, "committedAt", [(c,) for c, _ in keys], at=at)
        revoked = self.call_many(CONSENT_V2, "revokedAt", [(r,) for _, r in keys], at=at)
        return [(int(c), int(r)) for c, r in zip(committed, revoked, strict=True)]

    def check_grant_signature(self, signer: str, grant_digest: bytes, signature: bytes) -> None:
        """:func:`ledger.chain.consent_client.check_signature` (a key's or an ERC-1271
        wallet's) on this chain: :class:`~ledger.errors.SignatureError` if not ``signer``'s."""
        with _chain_call("checking a grant's signature"):
            check_signature(self.w3, signer, grant_digest, signature)

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _signer(account: LocalAccount | None, role: str) -> LocalAccount:
        if account is None:
            raise SignerNotConfigured(
                f"this chain client has no key for {role}; configure it to send this transaction"
            )
        return account

    def _sign(
        self, account: LocalAccount, fn: ContractFunction, *, nonce: int, gas: int, fees: Fees
    ) -> SignedTx:
        max_fee = max(fees.max_fee_per_gas, fees.max_priority_fee_per_gas)
        params: TxParams = {
            "from": account.address,
            "nonce": Nonce(nonce),
            "gas": gas,
            "maxFeePerGas": Wei(max_fee),
            "maxPriorityFeePerGas": Wei(fees.max_priority_fee_per_gas),
            "chainId": self.chain_id,
            "type": 2,
        }
        tx = fn.build_transaction(params)
        signed = account.sign_transaction(cast("dict[str, Any]", tx))
        return SignedTx(
            tx_hash=bytes(signed.hash),
            raw=bytes(signed.raw_transaction),
            nonce=nonce,
            max_fee_per_gas=max_fee,
            max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
        )

    def _transact(self, account: LocalAccount, fn: ContractFunction) -> TxReceipt:
        """Simulate, sign, send and wait for ``fn`` from ``account``; raise on revert.

        Another process writing with the same key may take the nonce between reading and
        sending: the node then refuses ours as "nonce too low" or "underpriced", and it is
        signed again with the next nonce.
        """
        what = fn.fn_name
        for attempt in range(_WRITE_ATTEMPTS):
            with self._send_lock, _chain_call(f"sending {what}"):
                gas = gas_with_margin(estimate_gas(self.w3, fn, account.address))
                nonce = int(self.w3.eth.get_transaction_count(account.address, "pending"))
                signed = self._sign(account, fn, nonce=nonce, gas=gas, fees=suggest_fees(self.w3))
                try:
                    self.w3.eth.send_raw_transaction(signed.raw)
                except Exception as exc:
                    rejection = None if isinstance(exc, OSError) else rejection_of(exc)
                    if rejection is None:
                        raise
                    if rejection is not Rejection.ALREADY_KNOWN:
                        if attempt + 1 < _WRITE_ATTEMPTS:
                            log.info("%s: nonce %d taken (%s), retrying", what, nonce, rejection)
                            continue
                        raise
            break
        with _chain_call(f"waiting for {what} ({signed.tx_hash.hex()})"):
            receipt = self.w3.eth.wait_for_transaction_receipt(
                HexBytes(signed.tx_hash), timeout=self.receipt_timeout, poll_latency=0.05
            )
        if receipt["status"] != 1:
            raise self._failure_of(account, fn, receipt)
        return receipt

    def _failure_of(
        self, account: LocalAccount, fn: ContractFunction, receipt: TxReceipt
    ) -> ContractReverted:
        """Why a mined transaction failed: replay it on the state before its block."""
        tx_hash = bytes(receipt["transactionHash"]).hex()
        block = int(receipt["blockNumber"])
        try:
            fn.call({"from": account.address}, block_identifier=max(block - 1, 0))
        except Exception as exc:
            reverted = revert_of(exc)
            if reverted is not None:
                return ContractReverted(
                    reverted.error,
                    reverted.args_,
                    f"transaction {tx_hash} reverted with {reverted.error}{reverted.args_!r}",
                )
        return ContractReverted("Revert", (), f"transaction {tx_hash} reverted (out of gas?)")


# --------------------------------------------------------------------------- factories


def http_web3(url: str, *, timeout: float = 10.0) -> Web3:
    """A web3 connection to a JSON-RPC node at ``url`` with a per-request ``timeout``.

    Blocks of proof-of-authority chains (Besu QBFT, Clique) carry long ``extraData``, which
    the PoA middleware accepts. web3's validation middleware is removed: it asks the node for
    its chain id before every call and estimate, while :func:`rpc_chain` checks the chain id
    once and every transaction is signed locally with the deployment's chain id.
    """
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    w3.middleware_onion.remove("validation")
    return w3


def _connect(url: str, timeout: float) -> Web3:
    w3 = http_web3(url, timeout=timeout)
    try:
        w3.eth.chain_id  # noqa: B018 - the request is the point
    except Exception as exc:
        if is_chain_failure(exc):
            raise ChainError(f"the chain at {url} is unreachable: {exc}", url=url) from exc
        raise
    return w3


def rpc_chain(
    url: str,
    deployment: Deployment,
    operator: LocalAccount | None,
    registrar: LocalAccount | None = None,
    *,
    timeout: float = 10.0,
    receipt_timeout: float = 120.0,
) -> Chain:
    """A :class:`Chain` over JSON-RPC at ``url``, after checking that the chain holds
    ``deployment``'s contracts (else :class:`~ledger.chain.deploy.DeploymentMismatch`) and
    answers at all (else :class:`ChainError`, naming the endpoint by its origin only).

    :param timeout: seconds for each JSON-RPC request.
    :param receipt_timeout: seconds relayed and registrar writes wait to be mined.
    """
    rpc = JsonRpc(url, timeout=timeout)
    ChainReader.connect(rpc, DeploymentSpec.from_deployment(deployment))  # v2's code too
    return Chain(
        http_web3(url, timeout=timeout),
        deployment,
        operator,
        registrar,
        rpc=rpc,
        receipt_timeout=receipt_timeout,
    )


def deploy_to_rpc(
    url: str,
    deployer: LocalAccount,
    *,
    admin: str,
    log_operator: str,
    registrars: Sequence[str],
    timeout: float = 10.0,
    consent_v2: bool = True,
) -> Deployment:
    """Deploy medtrail's contracts at ``url`` (see :func:`ledger.chain.deploy.deploy`)."""
    w3 = _connect(url, timeout)
    with _chain_call(f"deploying to {url}"):
        return deploy_contracts(
            w3,
            deployer,
            admin=admin,
            log_operator=log_operator,
            registrars=registrars,
            consent_v2=consent_v2,
        )


def embedded_chain(
    operator: LocalAccount,
    registrar: LocalAccount,
    admin: LocalAccount | None = None,
    *,
    consent_v2: bool = True,
) -> tuple[Chain, EthereumTester]:
    """A fresh in-process chain with medtrail deployed, the keys funded, and its tester (for
    time travel, snapshots and manual mining). ``admin`` defaults to a new random key;
    ``consent_v2`` False deploys no ConsentRegistryV2 (a version-1-only deployment)."""
    from ledger.chain.embedded import embedded_web3, fund

    w3, tester = embedded_web3()
    deployer: LocalAccount = admin if admin is not None else Account.create()
    fund(w3, *dict.fromkeys([deployer.address, operator.address, registrar.address]))
    deployment = deploy_contracts(
        w3,
        deployer,
        admin=deployer.address,
        log_operator=operator.address,
        registrars=[registrar.address],
        consent_v2=consent_v2,
    )
    return Chain(w3, deployment, operator, registrar), tester
