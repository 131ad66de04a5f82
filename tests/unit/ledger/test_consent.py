"""ledger.consent (issue 17): version-2 grants, their commitments and revocation secrets."""

from __future__ import annotations

import pytest
from eth_account import Account

from ledger.consent import (
    MAX_GRANT_SECONDS,
    GrantTermsError,
    SignedGrant,
    check_terms,
    consent_domain_v2,
    new_grant,
    revocation_hash,
    revocation_key_typed_data,
    revocation_root,
    revocation_secret,
)
from ledger.eip712 import recover
from ledger.events import Purpose

NOW = 1_800_000_000
DOMAIN = consent_domain_v2(31337, "0x" + "c0" * 20)
PATIENT = Account.create()
GRANTEE = "0x" + "ab" * 20
ROOT = revocation_root(b"\x01" * 65)


def grant(**terms: object) -> SignedGrant:
    values: dict[str, object] = {
        "root": ROOT,
        "patient": PATIENT.address,
        "grantee": GRANTEE,
        "record_ref": b"\x11" * 32,
        "purposes": [Purpose.TREATMENT],
        "not_before": NOW,
        "expires_at": NOW + 86_400,
        "deadline": NOW + 600,
        "now": NOW,
    }
    values.update(terms)
    return new_grant(**values)  # type: ignore[arg-type]


def test_each_grant_has_a_fresh_salt_hence_its_own_commitment_and_revocation() -> None:
    a, b = grant(), grant()
    assert a.salt != b.salt
    assert a.commitment(DOMAIN) != b.commitment(DOMAIN)
    assert a.revocation_hash != b.revocation_hash
    assert a.revocation_hash == revocation_hash(revocation_secret(ROOT, a.salt))
    assert a.grant_id(DOMAIN) == int.from_bytes(a.commitment(DOMAIN), "big")


def test_the_signature_recovers_to_the_patient_and_json_round_trips() -> None:
    signed = grant().sign(DOMAIN, bytes(PATIENT.key))
    assert recover(signed.digest(DOMAIN), signed.signature) == PATIENT.address
    assert SignedGrant.from_json(signed.as_json()) == signed
    reference = Account.sign_typed_data(PATIENT.key, full_message=signed.typed_data(DOMAIN))
    assert bytes(reference.signature) == signed.signature


def test_the_revocation_root_comes_from_one_deterministic_signature() -> None:
    message = revocation_key_typed_data(DOMAIN, PATIENT.address)
    first = Account.sign_typed_data(PATIENT.key, full_message=message).signature
    again = Account.sign_typed_data(PATIENT.key, full_message=message).signature
    assert revocation_root(bytes(first)) == revocation_root(bytes(again))


def test_a_malformed_grant_document_is_refused() -> None:
    document = grant().as_json()
    document["salt"] = "0x12"
    with pytest.raises(GrantTermsError, match="not a version-2 grant"):
        SignedGrant.from_json(document)


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"purposes": 0}, "at least one purpose"),
        ({"expires_at": NOW}, "the window is empty"),
        ({"not_before": NOW - 100, "expires_at": NOW - 1}, "expired already"),
        ({"expires_at": NOW + MAX_GRANT_SECONDS + 1}, "at most 36525 days"),
        ({"deadline": NOW - 1}, "deadline"),
    ],
)
def test_terms_that_could_never_cover_an_access_are_refused(
    terms: dict[str, int], message: str
) -> None:
    values = {
        "purposes": 1,
        "not_before": NOW,
        "expires_at": NOW + 86_400,
        "deadline": NOW + 600,
        "now": NOW,
    }
    values.update(terms)
    with pytest.raises(GrantTermsError, match=message):
        check_terms(**values)


def test_a_century_exactly_is_allowed() -> None:
    assert grant(expires_at=NOW + MAX_GRANT_SECONDS).expires_at == NOW + MAX_GRANT_SECONDS
