"""wallets.consent: Grant / Revoke / IncreaseNonce signed from the served typed data.

Checked three ways: against eth-account's own typed-data signing of the same document
(bit-for-bit equal signatures), against ledger.events' digests with the strict
``ledger.eip712.recover``, and on chain: the deployed ConsentRegistry accepts the
relayed signatures.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_account.signers.local import LocalAccount

from ledger.chain.tx import send
from ledger.codes import REVERTS
from ledger.eip712 import SECP256K1_HALF_N, keccak, recover
from ledger.events import (
    GRANT,
    REVOKE,
    InstitutionKind,
    Purpose,
    consent_domain,
    grant_digest,
    grant_typed_data,
    revoke_digest,
    revoke_typed_data,
    typed_data_definitions,
)
from tests.conftest import EmbeddedChain
from wallets.consent import (
    ALL_RECORDS,
    CONTRACT_TYPES,
    INCREASE_NONCE,
    INCREASE_NONCE_TYPE,
    ConsentTypedData,
    SignedConsent,
    sign_grant,
    sign_increase_nonce,
    sign_revoke,
    struct_from_type_string,
)
from wallets.errors import InvalidConsentRequest, TypedDataMismatch

CHAIN_ID = 31337
AUDIT_LOG = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CONSENT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
DOMAIN = consent_domain(CHAIN_ID, CONSENT)
PATIENT: LocalAccount = Account.from_key(b"\x42" * 32)
HOSPITAL = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
RECORD = bytes.fromhex("ab" * 32)
NOW = 1_750_000_000


@pytest.fixture
def definitions() -> dict[str, Any]:
    """What GET /v1/typed-data serves today (no IncreaseNonce yet)."""
    return typed_data_definitions(CHAIN_ID, AUDIT_LOG, CONSENT)


@pytest.fixture
def typed(definitions: dict[str, Any]) -> ConsentTypedData:
    return ConsentTypedData.from_definitions(definitions)


def grant(typed: ConsentTypedData, **changes: Any) -> SignedConsent:
    values: dict[str, Any] = {
        "grantee": HOSPITAL,
        "record_ref": RECORD,
        "purposes": [Purpose.TREATMENT, Purpose.PAYMENT],
        "not_before": NOW,
        "expires_at": NOW + 30 * 86400,
        "nonce": 3,
        "deadline": NOW + 600,
        "now": NOW,
    }
    values.update(changes)
    return sign_grant(PATIENT, typed, **values)


# ----------------------------------------------------------------------------- definitions


def test_adopts_the_served_definitions(typed: ConsentTypedData) -> None:
    assert typed.domain == DOMAIN
    assert typed.structs["Grant"].type_string == GRANT.type_string
    assert typed.structs["Revoke"].type_string == REVOKE.type_string
    # The service serves IncreaseNonce too; the wallet adopts it after checking it.
    assert typed.increase_nonce_served
    assert typed.structs["IncreaseNonce"].type_string == INCREASE_NONCE.type_string


def test_increase_nonce_matches_the_contract_type_string() -> None:
    assert INCREASE_NONCE.type_string == INCREASE_NONCE_TYPE
    assert INCREASE_NONCE.type_hash == keccak(
        b"IncreaseNonce(address patient,uint256 newNonce,uint256 nonce,uint256 deadline)"
    )
    assert set(CONTRACT_TYPES) == {"Grant", "Revoke", "IncreaseNonce"}


def test_adopts_a_served_increase_nonce(definitions: dict[str, Any]) -> None:
    definitions["types"]["IncreaseNonce"] = INCREASE_NONCE.types_json()
    definitions["primaryTypes"]["IncreaseNonce"] = {
        "domain": "consentRegistry",
        "encodeType": INCREASE_NONCE_TYPE,
        "typeHash": "0x" + INCREASE_NONCE.type_hash.hex(),
    }
    typed = ConsentTypedData.from_definitions(definitions)
    assert typed.increase_nonce_served
    assert typed.structs["IncreaseNonce"].type_string == INCREASE_NONCE_TYPE


def test_pins(definitions: dict[str, Any]) -> None:
    ConsentTypedData.from_definitions(definitions, chain_id=CHAIN_ID, consent_registry=CONSENT)
    ConsentTypedData.from_definitions(definitions, consent_registry=CONSENT.lower())
    with pytest.raises(TypedDataMismatch, match="chain 31337, expected 1"):
        ConsentTypedData.from_definitions(definitions, chain_id=1)
    with pytest.raises(TypedDataMismatch, match="ConsentRegistry"):
        ConsentTypedData.from_definitions(definitions, consent_registry=AUDIT_LOG)
    with pytest.raises(TypedDataMismatch, match="expected ConsentRegistry"):
        ConsentTypedData.from_definitions(definitions, consent_registry="0x12")


def _reorder(fields: list[dict[str, str]]) -> list[dict[str, str]]:
    return [fields[1], fields[0], *fields[2:]]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d["types"]["Grant"].pop(), "the contract verifies"),
        (lambda d: d["types"].update(Grant=_reorder(d["types"]["Grant"])), "the contract verifies"),
        (lambda d: d["types"]["Grant"][3].update(type="uint128"), "the contract verifies"),
        (lambda d: d["types"]["Revoke"][1].update(name="id"), "the contract verifies"),
        (lambda d: d["types"].update(IncreaseNonce=REVOKE.types_json()), "the contract verifies"),
        (lambda d: d["types"]["Grant"][0].update(extra="x"), "name, type"),
        (lambda d: d["types"].update(Grant=[]), "non-empty list"),
        (lambda d: d["types"]["Grant"][0].update(type="string"), "unsupported"),
        (lambda d: d["types"].pop("Revoke"), "types.Revoke is missing"),
        (lambda d: d["types"]["EIP712Domain"].pop(), "EIP712Domain"),
        (lambda d: d["domains"]["consentRegistry"].update(name="evil"), "expected 'medtrail'"),
        (lambda d: d["domains"]["consentRegistry"].update(version="2"), "version"),
        (lambda d: d["domains"]["consentRegistry"].update(chainId="31337"), "integer"),
        (lambda d: d["domains"]["consentRegistry"].update(chainId=0), "out of range"),
        (lambda d: d["domains"]["consentRegistry"].update(verifyingContract="0x12"), "40 hex"),
        (lambda d: d["domains"]["consentRegistry"].update(salt="0x00"), "four EIP-712 fields"),
        (lambda d: d["domains"].pop("consentRegistry"), "four EIP-712 fields"),
        (lambda d: d.pop("domains"), "'domains' and 'types'"),
        (lambda d: d["domainSeparators"].update(consentRegistry="0x" + "00" * 32), "separator"),
        (lambda d: d["primaryTypes"]["Grant"].update(typeHash="0x" + "00" * 32), "primaryTypes"),
        (lambda d: d["primaryTypes"]["Revoke"].update(domain="auditLog"), "primaryTypes"),
        (lambda d: d["primaryTypes"].update(Grant="x"), "primaryTypes"),
    ],
)
def test_refuses_definitions_the_contract_would_not_verify(
    definitions: dict[str, Any], change: Any, match: str
) -> None:
    changed = copy.deepcopy(definitions)
    change(changed)
    with pytest.raises(TypedDataMismatch, match=match):
        ConsentTypedData.from_definitions(changed)


def test_refuses_non_objects() -> None:
    with pytest.raises(TypedDataMismatch):
        ConsentTypedData.from_definitions([])  # type: ignore[arg-type]


def test_struct_from_type_string() -> None:
    assert struct_from_type_string(GRANT.type_string).type_string == GRANT.type_string
    for bad in ("Grant", "Grant()", "Grant(address)", "Grant(address  a)", "Grant(address a"):
        with pytest.raises(ValueError, match="encodeType"):
            struct_from_type_string(bad)


# ----------------------------------------------------------------------------- signatures


def test_grant_equals_eth_account_and_recovers_to_the_patient(typed: ConsentTypedData) -> None:
    signed = grant(typed)
    reference_document = grant_typed_data(
        DOMAIN,
        patient=PATIENT.address,
        grantee=HOSPITAL,
        record_ref=RECORD,
        purposes=[Purpose.TREATMENT, Purpose.PAYMENT],
        not_before=NOW,
        expires_at=NOW + 30 * 86400,
        nonce=3,
        deadline=NOW + 600,
    )
    assert dict(signed.typed_data) == reference_document
    reference = Account.sign_typed_data(PATIENT.key, full_message=reference_document)
    assert signed.signature == bytes(reference.signature)
    expected_digest = grant_digest(
        DOMAIN,
        patient=PATIENT.address,
        grantee=HOSPITAL,
        record_ref=RECORD,
        purposes=0b11,
        not_before=NOW,
        expires_at=NOW + 30 * 86400,
        nonce=3,
        deadline=NOW + 600,
    )
    assert signed.digest == expected_digest
    assert recover(expected_digest, signed.signature) == PATIENT.address
    assert signed.signer == PATIENT.address
    assert signed.primary_type == "Grant"
    assert len(signed.signature) == 65
    assert signed.signature[64] in (27, 28)
    assert int.from_bytes(signed.signature[32:64], "big") <= SECP256K1_HALF_N


def test_grant_json(typed: ConsentTypedData) -> None:
    data = grant(typed, record_ref=None).as_json()
    assert data["primaryType"] == "Grant"
    assert data["message"] == {
        "patient": PATIENT.address,
        "grantee": HOSPITAL,
        "recordRef": "0x" + "00" * 32,
        "purposes": 3,
        "notBefore": NOW,
        "expiresAt": NOW + 30 * 86400,
        "nonce": 3,
        "deadline": NOW + 600,
    }
    assert data["signature"].startswith("0x")
    assert len(data["signature"]) == 132
    assert data["signer"] == PATIENT.address


def test_grant_defaults_and_equivalent_inputs(typed: ConsentTypedData) -> None:
    everything = grant(typed, record_ref=None)
    assert everything.message["recordRef"] == "0x" + ALL_RECORDS.hex()
    assert grant(typed, purposes=0b11).signature == grant(typed).signature
    assert grant(typed, grantee=HOSPITAL.lower()).signature == grant(typed).signature
    assert grant(typed, record_ref="0x" + RECORD.hex()).signature == grant(typed).signature
    starts_now = grant(typed, not_before=None, now=NOW + 5)
    assert starts_now.message["notBefore"] == NOW + 5


def test_revoke_equals_eth_account_and_recovers(typed: ConsentTypedData) -> None:
    signed = sign_revoke(PATIENT, typed, grant_id=7, nonce=4, deadline=NOW + 60, now=NOW)
    document = revoke_typed_data(
        DOMAIN, patient=PATIENT.address, grant_id=7, nonce=4, deadline=NOW + 60
    )
    assert dict(signed.typed_data) == document
    assert signed.signature == bytes(
        Account.sign_typed_data(PATIENT.key, full_message=document).signature
    )
    digest = revoke_digest(DOMAIN, patient=PATIENT.address, grant_id=7, nonce=4, deadline=NOW + 60)
    assert signed.digest == digest
    assert recover(digest, signed.signature) == PATIENT.address


def test_increase_nonce_equals_eth_account_and_recovers(typed: ConsentTypedData) -> None:
    signed = sign_increase_nonce(PATIENT, typed, new_nonce=10, nonce=2, deadline=NOW + 60, now=NOW)
    document = dict(signed.typed_data)
    assert document["primaryType"] == "IncreaseNonce"
    assert document["types"]["IncreaseNonce"] == [
        {"name": "patient", "type": "address"},
        {"name": "newNonce", "type": "uint256"},
        {"name": "nonce", "type": "uint256"},
        {"name": "deadline", "type": "uint256"},
    ]
    reference = Account.sign_typed_data(PATIENT.key, full_message=document)
    assert signed.signature == bytes(reference.signature)
    # The digest through eth-account's independent EIP-712 encoder.
    assert signed.digest == _hash_eip191_message(encode_typed_data(full_message=document))
    assert recover(signed.digest, signed.signature) == PATIENT.address


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"not_before": 0, "expires_at": NOW}, "not in the future"),
        ({"not_before": 0, "expires_at": NOW - 1}, "not in the future"),
        ({"not_before": NOW + 100, "expires_at": NOW + 99}, "must be before expiresAt"),
        ({"not_before": NOW + 50, "expires_at": NOW + 50}, "must be before expiresAt"),
        ({"purposes": []}, "at least one purpose"),
        ({"purposes": 0}, "at least one purpose"),
        ({"purposes": [99]}, "unknown purpose"),
        ({"purposes": 1 << 40}, "unknown bits"),
        ({"purposes": True}, "purposes"),
        ({"grantee": "0x" + "00" * 20}, "zero address"),
        ({"grantee": PATIENT.address}, "themselves"),
        ({"grantee": "hospital"}, "grantee"),
        ({"grantee": HOSPITAL[:-1] + ("a" if HOSPITAL[-1] != "a" else "b")}, "grantee"),
        ({"deadline": NOW}, "deadline"),
        ({"deadline": -1}, "deadline"),
        ({"nonce": -1}, "nonce"),
        ({"nonce": True}, "nonce"),
        ({"nonce": 1.0}, "nonce"),
        ({"expires_at": 1 << 64}, "expiresAt"),
        ({"not_before": -5}, "notBefore"),
        ({"record_ref": b"\x01" * 31}, "bytes32"),
        ({"record_ref": "0x1234"}, "bytes32"),
    ],
)
def test_grant_refusals(typed: ConsentTypedData, changes: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidConsentRequest, match=match) as info:
        grant(typed, **changes)
    assert info.value.code == "invalid-consent-request"


def test_grant_window_boundaries(typed: ConsentTypedData) -> None:
    grant(typed, expires_at=NOW + 1)  # the contract accepts an expiry one second ahead
    grant(typed, not_before=NOW + 49, expires_at=NOW + 50)  # a window of one second
    grant(typed, deadline=NOW + 1)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"not_before": NOW + 50, "expires_at": NOW + 50}, "InvalidValidityWindow"),
        ({"not_before": NOW + 51, "expires_at": NOW + 50}, "InvalidValidityWindow"),
        ({"not_before": NOW - 10, "expires_at": NOW}, "GrantAlreadyExpired"),
        ({"expires_at": NOW}, "InvalidValidityWindow"),  # the contract checks the window first
        ({"purposes": 0}, "EmptyPurposes"),
    ],
)
def test_grant_refusals_name_what_the_chain_would_answer(
    typed: ConsentTypedData, changes: dict[str, Any], error: str
) -> None:
    """The patient is told, before signing, the refusal the ConsentRegistry would revert with
    (an empty window ``notBefore == expiresAt`` included: the contract refuses it)."""
    with pytest.raises(InvalidConsentRequest, match="the chain would refuse") as info:
        grant(typed, **changes)
    assert info.value.context == {"error": error}
    assert REVERTS[error].description in info.value.detail


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grant_id": 0}, "grant id"),
        ({"grant_id": -3}, "grant id"),
        ({"grant_id": "7"}, "grant id"),
        ({"deadline": NOW}, "deadline"),
        ({"nonce": -1}, "nonce"),
    ],
)
def test_revoke_refusals(typed: ConsentTypedData, kwargs: dict[str, Any], match: str) -> None:
    values: dict[str, Any] = {"grant_id": 7, "nonce": 0, "deadline": NOW + 60, "now": NOW}
    values.update(kwargs)
    with pytest.raises(InvalidConsentRequest, match=match):
        sign_revoke(PATIENT, typed, **values)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"new_nonce": 2}, "above the current nonce 2"),
        ({"new_nonce": 0}, "above the current nonce 2"),
        ({"deadline": NOW - 1}, "deadline"),
        ({"new_nonce": 1 << 256}, "new nonce"),
    ],
)
def test_increase_nonce_refusals(
    typed: ConsentTypedData, kwargs: dict[str, Any], match: str
) -> None:
    values: dict[str, Any] = {"new_nonce": 10, "nonce": 2, "deadline": NOW + 60, "now": NOW}
    values.update(kwargs)
    with pytest.raises(InvalidConsentRequest, match=match):
        sign_increase_nonce(PATIENT, typed, **values)


def test_unknown_primary_type(typed: ConsentTypedData) -> None:
    with pytest.raises(ValueError, match="not a consent type"):
        typed.document("RecordAccess", {})


# ----------------------------------------------------------------------------- on chain


def test_the_consent_registry_accepts_the_wallets_signatures(chain: EmbeddedChain) -> None:
    """Grant, revoke and cancel by relayed signature on the deployed contracts; the patient
    has no ether."""
    contracts = chain.contracts
    hospital = chain.fresh_account()
    send(
        chain.w3,
        contracts.institutions.functions.register(
            hospital.address, int(InstitutionKind.HOSPITAL), "St. Mary's"
        ),
        chain.registrar,
    )
    definitions = typed_data_definitions(
        chain.w3.eth.chain_id, contracts.audit_log.address, contracts.consent.address
    )
    typed = ConsentTypedData.from_definitions(
        definitions, chain_id=chain.w3.eth.chain_id, consent_registry=contracts.consent.address
    )
    patient: LocalAccount = Account.create()
    relayer = chain.fresh_account()
    consent = contracts.consent
    now = chain.now()

    signed = sign_grant(
        patient,
        typed,
        grantee=hospital.address,
        record_ref=RECORD,
        purposes=[Purpose.TREATMENT],
        expires_at=now + 86400,
        nonce=consent.functions.nonces(patient.address).call(),
        deadline=now + 3600,
        now=now,
    )
    message = signed.message
    request = (
        message["grantee"],
        RECORD,
        message["purposes"],
        message["notBefore"],
        message["expiresAt"],
    )
    send(
        chain.w3,
        consent.functions.grantBySig(
            patient.address, request, message["deadline"], signed.signature
        ),
        relayer,
    )
    grant_id = consent.functions.grantCount().call()
    stored = consent.functions.getGrant(grant_id).call()
    assert stored[0] == patient.address

    revoke = sign_revoke(
        patient,
        typed,
        grant_id=grant_id,
        nonce=consent.functions.nonces(patient.address).call(),
        deadline=now + 3600,
        now=now,
    )
    send(
        chain.w3,
        consent.functions.revokeBySig(patient.address, grant_id, now + 3600, revoke.signature),
        relayer,
    )
    assert consent.functions.nonces(patient.address).call() == 2

    cancel = sign_increase_nonce(
        patient, typed, new_nonce=50, nonce=2, deadline=now + 3600, now=now
    )
    send(
        chain.w3,
        consent.functions.increaseNonceBySig(patient.address, 50, now + 3600, cancel.signature),
        relayer,
    )
    assert consent.functions.nonces(patient.address).call() == 50
    assert chain.w3.eth.get_balance(patient.address) == 0
