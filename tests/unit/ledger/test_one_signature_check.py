"""One signature check (``ledger.eip712.check_signature``) behind every verdict on a signature:
a bundle's (``ledger.verify``), the audit's (``ledger.audit`` and the whole-log audit's worker
processes, ``scripts._recompute``) and a sign-in message's (``ledger.siwe``). They used to be
four functions, each with its own idea of a malformed signature; fed the same signatures here,
they give the same verdicts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from coincurve import PrivateKey

from ledger.audit import signature_findings as audit_signature_findings
from ledger.eip712 import SECP256K1_N, address_of, check_signature, sign_digest
from ledger.errors import SignatureError
from ledger.events import InstitutionKind, SignedEvent, audit_log_domain
from ledger.siwe import SiweSignatureError, _check_personal_sign, personal_sign_digest
from ledger.verify import signature_findings
from scripts._recompute import recompute_chunk
from tests.support.actors import Institution

DOMAIN = audit_log_domain(31337, "0x" + "22" * 20)
OTHER_KEY = PrivateKey().secret

Mutation = Callable[[bytes], bytes]


def _high_s(signature: bytes) -> bytes:
    s = int.from_bytes(signature[32:64], "big")
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - signature[64],))


MUTATIONS: dict[str, Mutation] = {
    "valid": lambda sig: sig,
    "high s (malleable twin)": _high_s,
    "v 0/1": lambda sig: sig[:64] + bytes((sig[64] - 27,)),
    "v 29": lambda sig: sig[:64] + b"\x1d",
    "r zero": lambda sig: bytes(32) + sig[32:],
    "s zero": lambda sig: sig[:32] + bytes(32) + sig[64:],
    "r = n": lambda sig: SECP256K1_N.to_bytes(32, "big") + sig[32:],
    "64 bytes": lambda sig: sig[:64],
    "66 bytes": lambda sig: sig + b"\x00",
    "no key recovers": lambda sig: (5).to_bytes(32, "big") + sig[32:],
}


def _verdict(digest: bytes, signature: bytes, signer: str) -> str:
    """``ok``, ``mismatch`` or ``invalid``, by the one check."""
    try:
        found = check_signature(digest, signature, signer)
    except SignatureError:
        return "invalid"
    return "ok" if found is None else "mismatch"


@pytest.mark.parametrize("forged", [False, True], ids=["by its institution", "by another key"])
@pytest.mark.parametrize("mutation", list(MUTATIONS), ids=list(MUTATIONS))
def test_events_are_judged_alike_by_the_bundle_the_audit_and_its_workers(
    mutation: str, forged: bool
) -> None:
    hospital = Institution("H", InstitutionKind.HOSPITAL, DOMAIN)
    event = hospital.access(hospital.record("mrn"), "0x" + "33" * 20, occurredAt=1_700_000_000)
    digest = hospital.sign(event).digest(DOMAIN)
    key = OTHER_KEY if forged else bytes(hospital.account.key)
    signature = MUTATIONS[mutation](sign_digest(digest, key))
    verdict = _verdict(digest, signature, event.institution)
    expected_codes = {"ok": [], "mismatch": ["signer-mismatch"], "invalid": ["signature-invalid"]}

    if len(signature) == 65:  # a SignedEvent carries 65 bytes exactly (its model checks that)
        signed = SignedEvent(type=event.event_type, event=event, signature=signature)
        for judge in (signature_findings, audit_signature_findings):
            assert [f.code for f in judge(signed, digest)] == expected_codes[verdict], judge
    item = (event.event_type.value, event.struct_values(), signature)
    [(recomputed, by_institution)] = recompute_chunk(DOMAIN.separator, [item])
    assert recomputed == digest
    assert by_institution is (verdict == "ok")
    if mutation == "valid":
        assert verdict == ("mismatch" if forged else "ok")


@pytest.mark.parametrize("mutation", list(MUTATIONS), ids=list(MUTATIONS))
def test_sign_in_messages_are_judged_by_the_same_check(mutation: str) -> None:
    key = PrivateKey().secret
    address = address_of(key)
    text = "medtrail.example wants you to sign in with your Ethereum account"
    digest = personal_sign_digest(text)
    signature = MUTATIONS[mutation](sign_digest(digest, key))
    # personal_sign wallets may give v as 0/1: the one normalisation sign-in makes.
    normalised = (
        signature[:64] + bytes((signature[64] + 27,))
        if len(signature) == 65 and signature[64] in (0, 1)
        else signature
    )
    verdict = _verdict(digest, normalised, address)
    if verdict == "ok":
        _check_personal_sign(text, signature, address)
    else:
        with pytest.raises(SiweSignatureError):
            _check_personal_sign(text, signature, address)
    with pytest.raises(SiweSignatureError, match="not by the message's address"):
        _check_personal_sign(text, sign_digest(digest, OTHER_KEY), address)
