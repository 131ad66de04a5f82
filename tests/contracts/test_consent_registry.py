"""ConsentRegistry: grants and revocations, direct and relayed (EIP-712, ERC-1271), nonces,
refusals, and the time-aware validity view.

Typed data is built here from the struct strings in ConsentRegistry.sol and signed with
eth-account (``Account.sign_typed_data``), independently of ``ledger.eip712``.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3.contract import Contract

from ledger.chain.artifacts import load_artifact
from tests.conftest import EmbeddedChain
from tests.contracts.conftest import (
    GRANT_TYPE,
    INCREASE_NONCE_TYPE,
    REVOKE_TYPE,
    ZERO_ADDRESS,
    ZERO_BYTES32,
    Kind,
    Request,
    Signer,
    Status,
    block_time,
    deploy_test_contract,
    events,
    high_s_twin,
    keccak_text,
    reverts,
    tx,
    view,
)

DAY = 86_400
TREATMENT, RESEARCH, BILLING = 0, 1, 2


def purposes(*bits: int) -> int:
    return sum(1 << b for b in set(bits))


def record_ref() -> bytes:
    """An opaque 32-byte record reference (what ledger.refs derives with an HMAC)."""
    return os.urandom(32)


def request_for(chain: EmbeddedChain, grantee: str, **overrides: Any) -> Request:
    """A grant request valid from now for 30 days, treatment + billing, one record."""
    now = chain.now()
    fields: dict[str, Any] = {
        "grantee": grantee,
        "recordRef": record_ref(),
        "purposes": purposes(TREATMENT, BILLING),
        "notBefore": now,
        "expiresAt": now + 30 * DAY,
    }
    fields.update(overrides)
    return Request(**fields)


def deadline(chain: EmbeddedChain) -> int:
    return chain.now() + 3600


def grant_tuple(consent: Contract, grant_id: int) -> tuple[Any, ...]:
    return tuple(consent.functions.getGrant(grant_id).call())


# --------------------------------------------------------------------------- domain


def test_domain_separator_and_type_hashes(
    chain: EmbeddedChain, consent: Contract, signer: Signer
) -> None:
    message = signer.message(
        REVOKE_TYPE, {"patient": ZERO_ADDRESS, "grantId": 0, "nonce": 0, "deadline": 0}
    )
    assert (
        consent.functions.DOMAIN_SEPARATOR().call()
        == encode_typed_data(full_message=message).header
    )
    fields, name, version, chain_id, contract, salt, extensions = (
        consent.functions.eip712Domain().call()
    )
    assert (name, version, chain_id, contract) == (
        "medtrail",
        "1",
        chain.w3.eth.chain_id,
        consent.address,
    )
    assert (fields, salt, extensions) == (b"\x0f", ZERO_BYTES32, [])
    assert consent.functions.GRANT_TYPEHASH().call() == keccak_text(GRANT_TYPE)
    assert consent.functions.REVOKE_TYPEHASH().call() == keccak_text(REVOKE_TYPE)
    assert consent.functions.INCREASE_NONCE_TYPEHASH().call() == keccak_text(INCREASE_NONCE_TYPE)
    assert consent.functions.institutions().call() == chain.contracts.institutions.address


# --------------------------------------------------------------------------- direct grant


def test_grant_by_patient_stores_grant_and_emits_event(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, patient: LocalAccount
) -> None:
    assert consent.functions.grantCount().call() == 0
    request = request_for(chain, hospital.address, notBefore=chain.now() + DAY)
    receipt = tx(chain, consent.functions.grant(request.abi()), patient)
    created = block_time(chain, receipt)
    assert events(consent, "GrantCreated", receipt) == [
        {
            "grantId": 1,
            "patient": patient.address,
            "grantee": hospital.address,
            "recordRef": request.recordRef,
            "purposes": request.purposes,
            "notBefore": request.notBefore,
            "expiresAt": request.expiresAt,
        }
    ]
    assert grant_tuple(consent, 1) == (
        patient.address,
        request.notBefore,
        hospital.address,
        request.expiresAt,
        created,
        0,
        request.recordRef,
        request.purposes,
    )
    assert consent.functions.grantCount().call() == 1
    assert consent.functions.nonces(patient.address).call() == 0  # direct calls use no nonce

    second = tx(chain, consent.functions.grant(request.abi()), patient)
    assert events(consent, "GrantCreated", second)[0]["grantId"] == 2
    assert consent.functions.grantCount().call() == 2


def test_grant_with_an_empty_window_is_refused(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, patient: LocalAccount
) -> None:
    """The window [t, t) could never be valid: refused like an inverted one."""
    t = chain.now() + DAY
    request = request_for(chain, hospital.address, notBefore=t, expiresAt=t)
    with reverts("InvalidValidityWindow", t, t):
        tx(chain, consent.functions.grant(request.abi()), patient)


def test_no_personal_data_in_grant_storage_or_events(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, patient: LocalAccount
) -> None:
    """Only addresses, the opaque recordRef, purposes and times, on chain."""
    request = request_for(chain, hospital.address)
    receipt = tx(chain, consent.functions.grant(request.abi()), patient)
    (log,) = receipt["logs"]
    # Three indexed topics (id, patient, grantee) and four 32-byte words: nothing else.
    assert len(log["topics"]) == 4
    assert len(log["data"]) == 4 * 32
    (event,) = events(consent, "GrantCreated", receipt)
    assert set(event) == {
        "grantId",
        "patient",
        "grantee",
        "recordRef",
        "purposes",
        "notBefore",
        "expiresAt",
    }
    assert {event["patient"], event["grantee"]} == {patient.address, hospital.address}
    assert event["recordRef"] == request.recordRef

    abi = load_artifact("ConsentRegistry").abi
    for item in abi:
        if item["type"] == "event":
            types = {i["type"] for i in item["inputs"]}
            assert types <= {"address", "bytes32", "uint256", "uint64"}, item["name"]
    (get_grant,) = [i for i in abi if i.get("name") == "getGrant"]
    components = get_grant["outputs"][0]["components"]
    assert [(c["name"], c["type"]) for c in components] == [
        ("patient", "address"),
        ("notBefore", "uint64"),
        ("grantee", "address"),
        ("expiresAt", "uint64"),
        ("createdAt", "uint64"),
        ("revokedAt", "uint64"),
        ("recordRef", "bytes32"),
        ("purposes", "uint256"),
    ]
    # What a transaction can write: no strings, the only dynamic bytes are signatures.
    for item in abi:
        if item["type"] == "function" and item["stateMutability"] == "nonpayable":
            for arg in item["inputs"]:
                if arg["type"] == "tuple":
                    inner = {c["type"] for c in arg["components"]}
                    assert inner <= {"address", "bytes32", "uint256", "uint64"}, item["name"]
                elif arg["type"] == "bytes":
                    assert arg["name"] == "signature", item["name"]
                else:
                    assert arg["type"] in {"address", "uint256"}, (item["name"], arg)


# --------------------------------------------------------------------------- refusals


def test_grant_with_empty_purposes_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, patient: LocalAccount
) -> None:
    with reverts("EmptyPurposes"):
        tx(
            chain,
            consent.functions.grant(request_for(chain, hospital.address, purposes=0).abi()),
            patient,
        )


def test_grant_with_inverted_window_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, patient: LocalAccount
) -> None:
    t = chain.now() + DAY
    request = request_for(chain, hospital.address, notBefore=t + 1, expiresAt=t)
    with reverts("InvalidValidityWindow", t + 1, t):
        tx(chain, consent.functions.grant(request.abi()), patient)


@pytest.mark.parametrize("offset", [0, -1, -DAY])
def test_grant_already_expired_reverts(
    chain: EmbeddedChain,
    consent: Contract,
    hospital: LocalAccount,
    patient: LocalAccount,
    offset: int,
) -> None:
    """expiresAt <= block time is refused (offset 0: expiring in the very block)."""
    when = chain.now() + 100
    expires = when + offset
    request = request_for(chain, hospital.address, notBefore=expires - 2 * DAY, expiresAt=expires)
    chain.travel(when)
    with reverts("GrantAlreadyExpired", expires):
        tx(chain, consent.functions.grant(request.abi()), patient)


def test_grant_expiring_one_second_after_the_block_is_accepted(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, patient: LocalAccount
) -> None:
    when = chain.now() + 100
    request = request_for(chain, hospital.address, notBefore=0, expiresAt=when + 1)
    chain.travel(when)
    receipt = tx(chain, consent.functions.grant(request.abi()), patient)
    assert block_time(chain, receipt) == when
    assert consent.functions.grantCount().call() == 1


def test_grant_to_unregistered_grantee_reverts(
    chain: EmbeddedChain, consent: Contract, patient: LocalAccount
) -> None:
    stranger = chain.fresh_account().address
    with reverts("GranteeNotActive", stranger):
        tx(chain, consent.functions.grant(request_for(chain, stranger).abi()), patient)


def test_grant_to_suspended_grantee_reverts_and_reinstated_is_accepted(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, patient: LocalAccount
) -> None:
    institutions = chain.contracts.institutions
    tx(chain, institutions.functions.suspend(hospital.address), chain.registrar)
    with reverts("GranteeNotActive", hospital.address):
        tx(chain, consent.functions.grant(request_for(chain, hospital.address).abi()), patient)
    tx(chain, institutions.functions.reinstate(hospital.address), chain.registrar)
    tx(chain, consent.functions.grant(request_for(chain, hospital.address).abi()), patient)
    assert consent.functions.grantCount().call() == 1


# --------------------------------------------------------------------------- relayed grant


def test_grant_by_sig_relayed_by_a_third_party(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, signer: Signer
) -> None:
    """The patient holds no ether; the relayer pays; the grant's patient is the signer."""
    patient = Account.create()
    relayer = chain.fresh_account()
    request = request_for(chain, hospital.address)
    until = deadline(chain)
    signature = signer.grant(patient.key, patient.address, request, nonce=0, deadline=until)
    relayer_before = chain.w3.eth.get_balance(relayer.address)

    receipt = tx(
        chain,
        consent.functions.grantBySig(patient.address, request.abi(), until, signature),
        relayer,
    )

    (event,) = events(consent, "GrantCreated", receipt)
    assert (event["grantId"], event["patient"], event["grantee"]) == (
        1,
        patient.address,
        hospital.address,
    )
    assert grant_tuple(consent, 1)[0] == patient.address
    assert consent.functions.nonces(patient.address).call() == 1
    assert chain.w3.eth.get_balance(patient.address) == 0
    fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert fee > 0
    assert chain.w3.eth.get_balance(relayer.address) == relayer_before - fee


def test_grant_by_sig_for_another_chain_id_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount
) -> None:
    patient, relayer = Account.create(), chain.fresh_account()
    request, until = request_for(chain, hospital.address), deadline(chain)
    other = Signer(chain.w3.eth.chain_id + 1, consent.address)
    signature = other.grant(patient.key, patient.address, request, nonce=0, deadline=until)
    with reverts("InvalidSignature", patient.address):
        tx(
            chain,
            consent.functions.grantBySig(patient.address, request.abi(), until, signature),
            relayer,
        )
    assert consent.functions.nonces(patient.address).call() == 0


def test_grant_by_sig_for_another_contract_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount
) -> None:
    patient, relayer = Account.create(), chain.fresh_account()
    request, until = request_for(chain, hospital.address), deadline(chain)
    for address in (chain.contracts.audit_log.address, chain.contracts.institutions.address):
        other = Signer(chain.w3.eth.chain_id, address)
        signature = other.grant(patient.key, patient.address, request, nonce=0, deadline=until)
        with reverts("InvalidSignature", patient.address):
            tx(
                chain,
                consent.functions.grantBySig(patient.address, request.abi(), until, signature),
                relayer,
            )


def test_grant_by_sig_replay_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, signer: Signer
) -> None:
    patient, relayer = Account.create(), chain.fresh_account()
    request, until = request_for(chain, hospital.address), deadline(chain)
    signature = signer.grant(patient.key, patient.address, request, nonce=0, deadline=until)
    call = consent.functions.grantBySig(patient.address, request.abi(), until, signature)
    tx(chain, call, relayer)
    with reverts("InvalidSignature", patient.address):
        tx(chain, call, relayer)
    with reverts("InvalidSignature", patient.address):  # nor can the patient's key replay it
        tx(chain, call, chain.fresh_account())
    assert consent.functions.grantCount().call() == 1
    assert consent.functions.nonces(patient.address).call() == 1


def test_grant_by_sig_with_high_s_twin_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, signer: Signer
) -> None:
    patient, relayer = Account.create(), chain.fresh_account()
    request, until = request_for(chain, hospital.address), deadline(chain)
    signature = signer.grant(patient.key, patient.address, request, nonce=0, deadline=until)
    twin = high_s_twin(signature)
    # The twin is a valid secp256k1 signature of the same digest by the same key...
    signable = encode_typed_data(
        full_message=signer.grant_message(patient.address, request, nonce=0, deadline=until)
    )
    r, s, v = int.from_bytes(twin[:32], "big"), int.from_bytes(twin[32:64], "big"), twin[64]
    assert Account.recover_message(signable, vrs=(v, r, s)) == patient.address
    # ...which the contract refuses (OpenZeppelin's ECDSA rejects s > n/2).
    with reverts("InvalidSignature", patient.address):
        tx(
            chain,
            consent.functions.grantBySig(patient.address, request.abi(), until, twin),
            relayer,
        )
    # The low-s original is still good: the refusal used up nothing.
    tx(
        chain,
        consent.functions.grantBySig(patient.address, request.abi(), until, signature),
        relayer,
    )
    assert consent.functions.grantCount().call() == 1


@pytest.mark.parametrize("signature", [b"", b"\x01" * 64, b"\x00" * 65])
def test_grant_by_sig_with_malformed_signature_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, signature: bytes
) -> None:
    patient, relayer = Account.create(), chain.fresh_account()
    request, until = request_for(chain, hospital.address), deadline(chain)
    with reverts("InvalidSignature", patient.address):
        tx(
            chain,
            consent.functions.grantBySig(patient.address, request.abi(), until, signature),
            relayer,
        )


def test_grant_by_sig_for_zero_patient_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, signer: Signer
) -> None:
    relayer, key = chain.fresh_account(), Account.create().key
    request, until = request_for(chain, hospital.address), deadline(chain)
    signature = signer.grant(key, ZERO_ADDRESS, request, nonce=0, deadline=until)
    with reverts("InvalidSignature", ZERO_ADDRESS):
        tx(
            chain,
            consent.functions.grantBySig(ZERO_ADDRESS, request.abi(), until, signature),
            relayer,
        )


def test_grant_by_sig_signed_by_another_key_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, signer: Signer
) -> None:
    patient, mallory, relayer = Account.create(), Account.create(), chain.fresh_account()
    request, until = request_for(chain, hospital.address), deadline(chain)
    signature = signer.grant(mallory.key, patient.address, request, nonce=0, deadline=until)
    with reverts("InvalidSignature", patient.address):
        tx(
            chain,
            consent.functions.grantBySig(patient.address, request.abi(), until, signature),
            relayer,
        )


def test_grant_by_sig_with_altered_request_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, signer: Signer, register: Any
) -> None:
    """The relayer cannot change any signed field (here: grantee, scope, purposes, times)."""
    patient, relayer = Account.create(), chain.fresh_account()
    other_hospital = register(Kind.HOSPITAL, "Other")
    request, until = request_for(chain, hospital.address), deadline(chain)
    signature = signer.grant(patient.key, patient.address, request, nonce=0, deadline=until)
    altered = [
        replace(request, grantee=other_hospital.address),
        replace(request, recordRef=ZERO_BYTES32),
        replace(request, purposes=request.purposes | 2),
        replace(request, notBefore=request.notBefore - 1),
        replace(request, expiresAt=request.expiresAt + 1),
    ]
    for changed in altered:
        with reverts("InvalidSignature", patient.address):
            tx(
                chain,
                consent.functions.grantBySig(patient.address, changed.abi(), until, signature),
                relayer,
            )
    with reverts("InvalidSignature", patient.address):
        tx(
            chain,
            consent.functions.grantBySig(patient.address, request.abi(), until + 1, signature),
            relayer,
        )


def test_grant_by_sig_after_deadline_reverts(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, signer: Signer
) -> None:
    patient, relayer = Account.create(), chain.fresh_account()
    request = request_for(chain, hospital.address)
    until = chain.now() + 100
    signature = signer.grant(patient.key, patient.address, request, nonce=0, deadline=until)
    chain.travel(until + 1)
    with reverts("SignatureExpired", until):
        tx(
            chain,
            consent.functions.grantBySig(patient.address, request.abi(), until, signature),
            relayer,
        )
    assert consent.functions.nonces(patient.address).call() == 0


def test_grant_by_sig_at_the_deadline_second_is_accepted(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, signer: Signer
) -> None:
    patient, relayer = Account.create(), chain.fresh_account()
    request = request_for(chain, hospital.address)
    until = chain.now() + 100
    signature = signer.grant(patient.key, patient.address, request, nonce=0, deadline=until)
    chain.travel(until)
    receipt = tx(
        chain,
        consent.functions.grantBySig(patient.address, request.abi(), until, signature),
        relayer,
    )
    assert block_time(chain, receipt) == until


def test_grant_by_sig_refusal_keeps_the_nonce(
    chain: EmbeddedChain, consent: Contract, patient: LocalAccount, signer: Signer
) -> None:
    """A relayed request refused for its content (unregistered grantee) consumes nothing."""
    relayer, stranger = chain.fresh_account(), chain.fresh_account().address
    request, until = request_for(chain, stranger), deadline(chain)
    signature = signer.grant(patient.key, patient.address, request, nonce=0, deadline=until)
    with reverts("GranteeNotActive", stranger):
        tx(
            chain,
            consent.functions.grantBySig(patient.address, request.abi(), until, signature),
            relayer,
        )
    assert consent.functions.nonces(patient.address).call() == 0


# --------------------------------------------------------------------------- ERC-1271 wallets


@pytest.fixture
def wallet_owner(chain: EmbeddedChain) -> LocalAccount:
    return chain.fresh_account()


@pytest.fixture
def wallet(chain: EmbeddedChain, wallet_owner: LocalAccount) -> Contract:
    """A TestERC1271Wallet owned by ``wallet_owner``'s key: the patient is the wallet."""
    return deploy_test_contract(chain, "TestERC1271Wallet", wallet_owner, wallet_owner.address)


def test_grant_by_sig_from_contract_wallet_is_accepted(
    chain: EmbeddedChain,
    consent: Contract,
    hospital: LocalAccount,
    signer: Signer,
    wallet: Contract,
    wallet_owner: LocalAccount,
) -> None:
    relayer = chain.fresh_account()
    request, until = request_for(chain, hospital.address), deadline(chain)
    signature = signer.grant(wallet_owner.key, wallet.address, request, nonce=0, deadline=until)
    receipt = tx(
        chain,
        consent.functions.grantBySig(wallet.address, request.abi(), until, signature),
        relayer,
    )
    assert events(consent, "GrantCreated", receipt)[0]["patient"] == wallet.address
    assert grant_tuple(consent, 1)[0] == wallet.address
    assert consent.functions.nonces(wallet.address).call() == 1

    # The wallet revokes by signature too (ERC-1271 again).
    until = deadline(chain)
    revocation = signer.revoke(wallet_owner.key, wallet.address, 1, nonce=1, deadline=until)
    tx(chain, consent.functions.revokeBySig(wallet.address, 1, until, revocation), relayer)
    assert grant_tuple(consent, 1)[5] > 0


def test_grant_by_sig_from_contract_wallet_signed_by_another_key_reverts(
    chain: EmbeddedChain,
    consent: Contract,
    hospital: LocalAccount,
    signer: Signer,
    wallet: Contract,
) -> None:
    relayer, mallory = chain.fresh_account(), Account.create()
    request, until = request_for(chain, hospital.address), deadline(chain)
    signature = signer.grant(mallory.key, wallet.address, request, nonce=0, deadline=until)
    with reverts("InvalidSignature", wallet.address):
        tx(
            chain,
            consent.functions.grantBySig(wallet.address, request.abi(), until, signature),
            relayer,
        )


def test_contract_wallet_grants_and_revokes_directly(
    chain: EmbeddedChain,
    consent: Contract,
    hospital: LocalAccount,
    wallet: Contract,
    wallet_owner: LocalAccount,
) -> None:
    request = request_for(chain, hospital.address)
    data = consent.functions.grant(request.abi())._encode_transaction_data()
    tx(chain, wallet.functions.execute(consent.address, data), wallet_owner)
    assert grant_tuple(consent, 1)[0] == wallet.address
    data = consent.functions.revoke(1)._encode_transaction_data()
    tx(chain, wallet.functions.execute(consent.address, data), wallet_owner)
    assert grant_tuple(consent, 1)[5] > 0


# --------------------------------------------------------------------------- revoke


@pytest.fixture
def granted(
    chain: EmbeddedChain, consent: Contract, hospital: LocalAccount, patient: LocalAccount
) -> tuple[int, Request]:
    """Grant 1, by ``patient`` to ``hospital``."""
    request = request_for(chain, hospital.address)
    tx(chain, consent.functions.grant(request.abi()), patient)
    return 1, request


def test_revoke_by_patient(
    chain: EmbeddedChain, consent: Contract, patient: LocalAccount, granted: tuple[int, Request]
) -> None:
    grant_id, _ = granted
    receipt = tx(chain, consent.functions.revoke(grant_id), patient)
    assert events(consent, "GrantRevoked", receipt) == [
        {"grantId": grant_id, "patient": patient.address}
    ]
    assert grant_tuple(consent, grant_id)[5] == block_time(chain, receipt)


def test_revoke_twice_reverts(
    chain: EmbeddedChain, consent: Contract, patient: LocalAccount, granted: tuple[int, Request]
) -> None:
    grant_id, _ = granted
    tx(chain, consent.functions.revoke(grant_id), patient)
    revoked_at = grant_tuple(consent, grant_id)[5]
    with reverts("GrantAlreadyRevoked", grant_id):
        tx(chain, consent.functions.revoke(grant_id), patient)
    assert grant_tuple(consent, grant_id)[5] == revoked_at


def test_revoke_by_someone_else_reverts(
    chain: EmbeddedChain,
    consent: Contract,
    hospital: LocalAccount,
    granted: tuple[int, Request],
) -> None:
    grant_id, _ = granted
    for caller in (hospital, chain.fresh_account()):  # not even the grantee
        with reverts("NotGrantPatient", grant_id, caller.address):
            tx(chain, consent.functions.revoke(grant_id), caller)
    assert grant_tuple(consent, grant_id)[5] == 0


@pytest.mark.parametrize("grant_id", [0, 2, 2**256 - 1])
def test_unknown_grant_reverts(
    chain: EmbeddedChain,
    consent: Contract,
    patient: LocalAccount,
    granted: tuple[int, Request],
    grant_id: int,
) -> None:
    with reverts("GrantNotFound", grant_id):
        tx(chain, consent.functions.revoke(grant_id), patient)
    with reverts("GrantNotFound", grant_id):
        view(consent.functions.getGrant(grant_id))


def test_revoke_by_sig_and_no_replay(
    chain: EmbeddedChain,
    consent: Contract,
    patient: LocalAccount,
    signer: Signer,
    granted: tuple[int, Request],
) -> None:
    grant_id, _ = granted
    relayer = chain.fresh_account()
    until = deadline(chain)
    signature = signer.revoke(patient.key, patient.address, grant_id, nonce=0, deadline=until)
    call = consent.functions.revokeBySig(patient.address, grant_id, until, signature)
    receipt = tx(chain, call, relayer)
    assert events(consent, "GrantRevoked", receipt) == [
        {"grantId": grant_id, "patient": patient.address}
    ]
    assert grant_tuple(consent, grant_id)[5] == block_time(chain, receipt)
    assert consent.functions.nonces(patient.address).call() == 1
    with reverts("InvalidSignature", patient.address):
        tx(chain, call, relayer)


def test_revoke_by_sig_refusals(
    chain: EmbeddedChain,
    consent: Contract,
    patient: LocalAccount,
    signer: Signer,
    granted: tuple[int, Request],
) -> None:
    grant_id, _ = granted
    relayer, other = chain.fresh_account(), Account.create()
    until = deadline(chain)
    # Someone else's valid signature over this grant: their nonce, not their grant.
    signature = signer.revoke(other.key, other.address, grant_id, nonce=0, deadline=until)
    with reverts("NotGrantPatient", grant_id, other.address):
        tx(chain, consent.functions.revokeBySig(other.address, grant_id, until, signature), relayer)
    # The patient's signature for another grant id cannot be redirected.
    signature = signer.revoke(patient.key, patient.address, 7, nonce=0, deadline=until)
    with reverts("InvalidSignature", patient.address):
        tx(
            chain,
            consent.functions.revokeBySig(patient.address, grant_id, until, signature),
            relayer,
        )
    with reverts("GrantNotFound", 7):
        tx(chain, consent.functions.revokeBySig(patient.address, 7, until, signature), relayer)
    # Expired.
    past = chain.now() - 1
    signature = signer.revoke(patient.key, patient.address, grant_id, nonce=0, deadline=past)
    with reverts("SignatureExpired", past):
        tx(
            chain,
            consent.functions.revokeBySig(patient.address, grant_id, past, signature),
            relayer,
        )
    assert grant_tuple(consent, grant_id)[5] == 0
    assert consent.functions.nonces(patient.address).call() == 0


# --------------------------------------------------------------------------- nonces


def test_increase_nonce_cancels_outstanding_signature(
    chain: EmbeddedChain,
    consent: Contract,
    hospital: LocalAccount,
    patient: LocalAccount,
    signer: Signer,
) -> None:
    request, until = request_for(chain, hospital.address), deadline(chain)
    signature = signer.grant(patient.key, patient.address, request, nonce=0, deadline=until)
    receipt = tx(chain, consent.functions.increaseNonce(5), patient)
    assert events(consent, "NonceIncreased", receipt) == [
        {"patient": patient.address, "oldNonce": 0, "newNonce": 5}
    ]
    assert consent.functions.nonces(patient.address).call() == 5
    with reverts("InvalidSignature", patient.address):
        tx(
            chain,
            consent.functions.grantBySig(patient.address, request.abi(), until, signature),
            chain.fresh_account(),
        )
    # A signature for the new nonce works.
    signature = signer.grant(patient.key, patient.address, request, nonce=5, deadline=until)
    tx(
        chain,
        consent.functions.grantBySig(patient.address, request.abi(), until, signature),
        chain.fresh_account(),
    )
    assert consent.functions.nonces(patient.address).call() == 6


@pytest.mark.parametrize("new_nonce", [5, 4, 0])
def test_increase_nonce_must_increase(
    chain: EmbeddedChain, consent: Contract, patient: LocalAccount, new_nonce: int
) -> None:
    tx(chain, consent.functions.increaseNonce(5), patient)
    with reverts("InvalidNonce", 5, new_nonce):
        tx(chain, consent.functions.increaseNonce(new_nonce), patient)
    assert consent.functions.nonces(patient.address).call() == 5


def test_increase_nonce_by_sig_cancels_outstanding_signatures(
    chain: EmbeddedChain,
    consent: Contract,
    hospital: LocalAccount,
    signer: Signer,
) -> None:
    patient, relayer = Account.create(), chain.fresh_account()
    request, until = request_for(chain, hospital.address), deadline(chain)
    # Two signatures out there: a grant for nonce 1 and the cancellation for nonce 0.
    pending = signer.grant(patient.key, patient.address, request, nonce=1, deadline=until)
    cancel = signer.increase_nonce(patient.key, patient.address, 10, nonce=0, deadline=until)
    call = consent.functions.increaseNonceBySig(patient.address, 10, until, cancel)
    receipt = tx(chain, call, relayer)
    # The signature was made at nonce 0; the nonce jumps from there to 10.
    assert events(consent, "NonceIncreased", receipt) == [
        {"patient": patient.address, "oldNonce": 0, "newNonce": 10}
    ]
    assert consent.functions.nonces(patient.address).call() == 10
    with reverts("InvalidSignature", patient.address):
        tx(
            chain,
            consent.functions.grantBySig(patient.address, request.abi(), until, pending),
            relayer,
        )
    with reverts("InvalidSignature", patient.address):  # no replay
        tx(chain, call, relayer)


def test_increase_nonce_by_sig_refusals(
    chain: EmbeddedChain, consent: Contract, signer: Signer
) -> None:
    patient, relayer = Account.create(), chain.fresh_account()
    until = deadline(chain)
    # newNonce must be above the nonce the signature was made at: 0 at nonce 0 is refused.
    signature = signer.increase_nonce(patient.key, patient.address, 0, nonce=0, deadline=until)
    with reverts("InvalidNonce", 0, 0):
        tx(
            chain,
            consent.functions.increaseNonceBySig(patient.address, 0, until, signature),
            relayer,
        )
    signature = signer.increase_nonce(
        Account.create().key, patient.address, 9, nonce=0, deadline=until
    )
    with reverts("InvalidSignature", patient.address):
        tx(
            chain,
            consent.functions.increaseNonceBySig(patient.address, 9, until, signature),
            relayer,
        )
    past = chain.now() - 1
    signature = signer.increase_nonce(patient.key, patient.address, 9, nonce=0, deadline=past)
    with reverts("SignatureExpired", past):
        tx(
            chain,
            consent.functions.increaseNonceBySig(patient.address, 9, past, signature),
            relayer,
        )
    assert consent.functions.nonces(patient.address).call() == 0


# --------------------------------------------------------------------------- time-aware view


def test_grant_status_at_answers_every_case(
    chain: EmbeddedChain,
    consent: Contract,
    hospital: LocalAccount,
    patient: LocalAccount,
    register: Any,
) -> None:
    other_hospital = register(Kind.HOSPITAL, "Other")
    stranger = chain.fresh_account().address
    t0 = chain.now() + 1000
    created, not_before, expires, revoked = t0, t0 + 100, t0 + 1000, t0 + 500
    ref = record_ref()
    specific = Request(hospital.address, ref, purposes(TREATMENT, BILLING), not_before, expires)
    everything = Request(
        hospital.address, ZERO_BYTES32, purposes(RESEARCH, 255), not_before, expires
    )
    chain.travel(created)
    r1 = tx(chain, consent.functions.grant(specific.abi()), patient)
    r2 = tx(chain, consent.functions.grant(everything.abi()), patient)
    assert block_time(chain, r1) == created
    created_2 = block_time(chain, r2)

    def status(
        grant_id: int,
        time: int,
        *,
        who: str = patient.address,
        grantee: str = hospital.address,
        record: bytes = ref,
        purpose: int = TREATMENT,
    ) -> Status:
        args = (grant_id, who, grantee, record, purpose, time)
        value = Status(consent.functions.grantStatusAt(*args).call())
        assert consent.functions.isValidAt(*args).call() is (value == Status.VALID)
        return value

    # Grant 1: one record, treatment + billing, valid [not_before, expires).
    assert status(1, created - 1) == Status.NOT_YET_GRANTED
    assert status(1, created) == Status.NOT_YET_VALID
    assert status(1, not_before - 1) == Status.NOT_YET_VALID
    assert status(1, not_before) == Status.VALID
    assert status(1, not_before, purpose=BILLING) == Status.VALID
    assert status(1, expires - 1) == Status.VALID
    assert status(1, expires) == Status.EXPIRED
    assert status(1, expires + 10 * DAY) == Status.EXPIRED
    assert status(1, not_before, who=stranger) == Status.WRONG_PATIENT
    assert status(1, not_before, grantee=other_hospital.address) == Status.WRONG_GRANTEE
    assert status(1, not_before, grantee=patient.address) == Status.WRONG_GRANTEE
    assert status(1, not_before, record=record_ref()) == Status.OUT_OF_SCOPE
    assert status(1, not_before, record=ZERO_BYTES32) == Status.OUT_OF_SCOPE
    assert status(1, not_before, purpose=RESEARCH) == Status.PURPOSE_NOT_COVERED
    assert status(1, not_before, purpose=255) == Status.PURPOSE_NOT_COVERED
    # Grant 2: every record of the patient, research + purpose 255.
    assert status(2, created_2 - 1, purpose=RESEARCH) == Status.NOT_YET_GRANTED
    for record in (ref, record_ref(), ZERO_BYTES32):
        assert status(2, not_before, record=record, purpose=RESEARCH) == Status.VALID
    assert status(2, not_before, purpose=255) == Status.VALID
    assert status(2, not_before, purpose=TREATMENT) == Status.PURPOSE_NOT_COVERED
    # Unknown grants.
    for grant_id in (0, 3, 2**256 - 1):
        assert status(grant_id, not_before) == Status.NOT_FOUND

    # Revocation at `revoked`: accesses before it stay valid, from it on they are refused.
    chain.travel(revoked)
    receipt = tx(chain, consent.functions.revoke(1), patient)
    assert block_time(chain, receipt) == revoked
    assert status(1, revoked - 1) == Status.VALID
    assert status(1, not_before) == Status.VALID
    assert status(1, revoked) == Status.REVOKED
    assert status(1, expires - 1) == Status.REVOKED
    assert status(1, expires + 1) == Status.REVOKED
    assert status(1, created) == Status.NOT_YET_VALID  # before notBefore, before revocation
    assert status(1, created - 1) == Status.NOT_YET_GRANTED
    assert status(1, revoked, purpose=RESEARCH) == Status.PURPOSE_NOT_COVERED
    assert status(2, revoked, record=ref, purpose=RESEARCH) == Status.VALID  # grant 2 untouched


def test_grant_stays_valid_when_grantee_is_suspended_later(
    chain: EmbeddedChain,
    consent: Contract,
    hospital: LocalAccount,
    patient: LocalAccount,
    granted: tuple[int, Request],
) -> None:
    """The grant view answers about consent only; institution status is its own view."""
    grant_id, request = granted
    tx(chain, chain.contracts.institutions.functions.suspend(hospital.address), chain.registrar)
    t = chain.now()
    assert consent.functions.isValidAt(
        grant_id, patient.address, hospital.address, request.recordRef, TREATMENT, t
    ).call()
    assert not chain.contracts.institutions.functions.wasActiveAt(
        hospital.address, Kind.HOSPITAL, t
    ).call()
