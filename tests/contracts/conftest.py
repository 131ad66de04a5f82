"""Helpers and fixtures for the contract tests (tests/contracts).

Everything runs on the session's embedded chain (``chain`` in tests/conftest.py), which is
reverted to a snapshot after every test, so tests may change state freely.

The EIP-712 messages are built here from the struct strings as they appear in
``ConsentRegistry.sol``, independently of ``ledger.eip712``: the tests check that the contract
agrees with eth-account's reference implementation of EIP-712, not with our own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.types import TxParams, TxReceipt

from ledger.chain.tx import ContractReverted, call_or_raise, send
from tests.conftest import EmbeddedChain

ZERO_ADDRESS = "0x" + "00" * 20
ZERO_BYTES32 = b"\x00" * 32

#: secp256k1 group order (for building the high-s twin of a signature).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

#: The struct strings exactly as ConsentRegistry.sol hashes them into its type hashes.
GRANT_TYPE = (
    "Grant(address patient,address grantee,bytes32 recordRef,uint256 purposes,"
    "uint64 notBefore,uint64 expiresAt,uint256 nonce,uint256 deadline)"
)
REVOKE_TYPE = "Revoke(address patient,uint256 grantId,uint256 nonce,uint256 deadline)"
INCREASE_NONCE_TYPE = (
    "IncreaseNonce(address patient,uint256 newNonce,uint256 nonce,uint256 deadline)"
)

_ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


class Kind(IntEnum):
    """IInstitutionRegistry.Kind."""

    NONE = 0
    HOSPITAL = 1
    PHARMACY = 2
    INSURER = 3


class Status(IntEnum):
    """IConsentRegistry.GrantStatus."""

    VALID = 0
    NOT_FOUND = 1
    NOT_YET_GRANTED = 2
    WRONG_PATIENT = 3
    WRONG_GRANTEE = 4
    OUT_OF_SCOPE = 5
    PURPOSE_NOT_COVERED = 6
    NOT_YET_VALID = 7
    EXPIRED = 8
    REVOKED = 9


@dataclass(frozen=True)
class Request:
    """IConsentRegistry.GrantRequest, in ABI field order."""

    grantee: str
    recordRef: bytes  # noqa: N815 - the Solidity field name
    purposes: int
    notBefore: int  # noqa: N815
    expiresAt: int  # noqa: N815

    def abi(self) -> tuple[Any, ...]:
        return astuple(self)


# --------------------------------------------------------------------------- reverts


@contextmanager
def reverts(error: str, *args: Any) -> Iterator[pytest.ExceptionInfo[ContractReverted]]:
    """Expect the block to raise ``ContractReverted`` with custom error ``error(*args)``."""
    with pytest.raises(ContractReverted) as info:
        yield info
    assert info.value.error == error, f"expected {error}{args}, got {info.value}"
    assert info.value.args_ == args, f"expected {error}{args}, got {info.value}"


def unauthorized(account: str, role: bytes) -> tuple[str, str, bytes]:
    """Arguments for ``reverts`` of OpenZeppelin's AccessControlUnauthorizedAccount."""
    return ("AccessControlUnauthorizedAccount", to_checksum_address(account), role)


# --------------------------------------------------------------------------- EIP-712


def struct_fields(struct: str) -> tuple[str, list[dict[str, str]]]:
    """Parse ``Name(type a,type b)`` into the name and eth-account's field list."""
    match = re.fullmatch(r"(\w+)\((.*)\)", struct)
    assert match, struct
    fields = [dict(zip(("type", "name"), f.split(" "), strict=True)) for f in match[2].split(",")]
    return match[1], fields


def typed_data(
    struct: str, message: dict[str, Any], *, chain_id: int, contract: str
) -> dict[str, Any]:
    """The full EIP-712 message for eth-account, in medtrail's ConsentRegistry domain."""
    primary, fields = struct_fields(struct)
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            primary: fields,
        },
        "primaryType": primary,
        "domain": {
            "name": "medtrail",
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(contract),
        },
        "message": message,
    }


def sign(key: bytes, full_message: dict[str, Any]) -> bytes:
    """65-byte ``r || s || v`` signature of ``full_message`` by ``key``."""
    return bytes(Account.sign_typed_data(key, full_message=full_message).signature)


def high_s_twin(signature: bytes) -> bytes:
    """The malleable twin of a valid signature: ``s' = n - s`` and ``v`` flipped 27 <-> 28."""
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    assert s <= SECP256K1_N // 2, "eth-account signs with low s"
    return r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])


class Signer:
    """Builds and signs ConsentRegistry's EIP-712 requests for one chain and contract."""

    def __init__(self, chain_id: int, contract: str) -> None:
        self.chain_id = chain_id
        self.contract = contract

    def message(self, struct: str, values: dict[str, Any]) -> dict[str, Any]:
        return typed_data(struct, values, chain_id=self.chain_id, contract=self.contract)

    def grant_message(
        self, patient: str, request: Request, *, nonce: int, deadline: int
    ) -> dict[str, Any]:
        values = {
            "patient": patient,
            "grantee": request.grantee,
            "recordRef": request.recordRef,
            "purposes": request.purposes,
            "notBefore": request.notBefore,
            "expiresAt": request.expiresAt,
            "nonce": nonce,
            "deadline": deadline,
        }
        return self.message(GRANT_TYPE, values)

    def grant(
        self, key: bytes, patient: str, request: Request, *, nonce: int, deadline: int
    ) -> bytes:
        return sign(key, self.grant_message(patient, request, nonce=nonce, deadline=deadline))

    def revoke(
        self, key: bytes, patient: str, grant_id: int, *, nonce: int, deadline: int
    ) -> bytes:
        values = {"patient": patient, "grantId": grant_id, "nonce": nonce, "deadline": deadline}
        return sign(key, self.message(REVOKE_TYPE, values))

    def increase_nonce(
        self, key: bytes, patient: str, new_nonce: int, *, nonce: int, deadline: int
    ) -> bytes:
        values = {"patient": patient, "newNonce": new_nonce, "nonce": nonce, "deadline": deadline}
        return sign(key, self.message(INCREASE_NONCE_TYPE, values))


# --------------------------------------------------------------------------- chain helpers


def send_tx(
    w3: Web3, fn: ContractFunction | ContractConstructor, account: LocalAccount
) -> TxReceipt:
    """``ledger.chain.tx.send``: reverts raise ``ContractReverted``."""
    return send(w3, fn, account)


def tx(
    chain: EmbeddedChain, fn: ContractFunction | ContractConstructor, account: LocalAccount
) -> TxReceipt:
    """Send ``fn`` from ``account`` on ``chain`` (reverts raise ``ContractReverted``)."""
    return send(chain.w3, fn, account)


def view(fn: ContractFunction, params: TxParams | None = None) -> Any:
    """``ledger.chain.tx.call_or_raise``: reverts raise ``ContractReverted``."""
    return call_or_raise(fn, params)


def block_time(chain: EmbeddedChain, receipt: TxReceipt) -> int:
    """Timestamp of the block that holds ``receipt``."""
    return int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])


def events(contract: Contract, name: str, receipt: TxReceipt) -> list[dict[str, Any]]:
    """The ``name`` events ``contract`` emitted in ``receipt``, as plain dicts of args."""
    return [dict(e["args"]) for e in contract.events[name]().process_receipt(receipt)]


def load_test_artifact(name: str) -> dict[str, Any]:
    """A test-only contract's artifact (tests/artifacts/NAME.json)."""
    data: dict[str, Any] = json.loads((_ARTIFACTS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def deploy_test_contract(
    chain: EmbeddedChain, name: str, deployer: LocalAccount, *args: Any
) -> Contract:
    """Deploy a test-only contract and return it bound to its address."""
    artifact = load_test_artifact(name)
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = tx(chain, factory.constructor(*args), deployer)
    address = receipt["contractAddress"]
    assert address is not None
    return chain.w3.eth.contract(address=address, abi=artifact["abi"])


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def institutions(chain: EmbeddedChain) -> Contract:
    return chain.contracts.institutions


@pytest.fixture
def audit_log(chain: EmbeddedChain) -> Contract:
    return chain.contracts.audit_log


@pytest.fixture
def consent(chain: EmbeddedChain) -> Contract:
    return chain.contracts.consent


@pytest.fixture
def register(chain: EmbeddedChain) -> Any:
    """``register(kind=HOSPITAL, name=...) -> LocalAccount``: a new active institution."""

    def _register(kind: Kind = Kind.HOSPITAL, name: str = "St. Mary's Hospital") -> LocalAccount:
        institution = chain.fresh_account()
        tx(
            chain,
            chain.contracts.institutions.functions.register(institution.address, kind, name),
            chain.registrar,
        )
        return institution

    return _register


@pytest.fixture
def hospital(register: Any) -> LocalAccount:
    """A registered, active hospital."""
    account: LocalAccount = register(Kind.HOSPITAL)
    return account


@pytest.fixture
def patient(chain: EmbeddedChain) -> LocalAccount:
    """A patient key with ether (for direct transactions)."""
    return chain.fresh_account()


@pytest.fixture
def signer(chain: EmbeddedChain) -> Signer:
    """EIP-712 signer for the deployed ConsentRegistry on this chain."""
    return Signer(chain.w3.eth.chain_id, chain.contracts.consent.address)


def keccak_text(text: str) -> bytes:
    return bytes(Web3.keccak(text=text))
