"""ledger.events.grant_refusal: the ConsentRegistry's own grant checks, pure (boundaries
against the contract itself: tests/contracts/test_grant_rules.py)."""

from __future__ import annotations

from ledger.codes import REVERTS
from ledger.events import GrantRefusal, grant_refusal

NOW = 1_800_000_000


def refusal(**changes: int) -> GrantRefusal | None:
    values = {"purposes": 1, "not_before": NOW, "expires_at": NOW + 60, "deadline": NOW}
    return grant_refusal(**{**values, **changes}, now=NOW)


def test_a_valid_grant_passes() -> None:
    assert refusal() is None
    assert refusal(not_before=NOW + 59) is None  # a one-second window
    assert refusal(not_before=0, expires_at=NOW + 1) is None


def test_each_refusal_with_the_contracts_arguments() -> None:
    assert refusal(deadline=NOW - 1) == GrantRefusal("SignatureExpired", (NOW - 1,))
    assert refusal(purposes=0) == GrantRefusal("EmptyPurposes", ())
    assert refusal(not_before=NOW + 60) == GrantRefusal(
        "InvalidValidityWindow", (NOW + 60, NOW + 60)
    )
    assert refusal(not_before=0, expires_at=NOW) == GrantRefusal("GrantAlreadyExpired", (NOW,))


def test_the_contracts_order() -> None:
    expired = GrantRefusal("SignatureExpired", (NOW - 1,))
    assert refusal(deadline=NOW - 1, purposes=0) == expired
    assert refusal(purposes=0, not_before=NOW + 60) == GrantRefusal("EmptyPurposes", ())
    window = GrantRefusal("InvalidValidityWindow", (NOW, NOW))
    assert refusal(not_before=NOW, expires_at=NOW) == window  # before GrantAlreadyExpired


def test_detail_tells_the_patient_what_the_chain_would_say() -> None:
    window = GrantRefusal("InvalidValidityWindow", (5, 5))
    assert window.detail == (
        f"{REVERTS['InvalidValidityWindow'].description} (notBefore, expiresAt = 5, 5)"
    )
    assert GrantRefusal("EmptyPurposes", ()).detail == REVERTS["EmptyPurposes"].description
    assert GrantRefusal("SignatureExpired", (7,)).detail.endswith("(deadline = 7)")
