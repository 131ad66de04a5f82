"""ledger.rules: every violation produced through the public checks, and each check passing."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from itertools import product
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import rules
from ledger.eip712 import to_checksum_address
from ledger.events import (
    SIGNER_KINDS,
    Action,
    EventType,
    InstitutionKind,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    Purpose,
    RecordAccess,
)
from ledger.rules import (
    ConsentFinding,
    ConsentStatus,
    GrantStatus,
    RecordFacts,
    RuleViolation,
)

REPO = Path(__file__).resolve().parents[3]
NOW = 1_750_000_000


def address(n: int) -> str:
    return to_checksum_address(bytes([n]) * 20)


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


HOSPITAL = address(1)
CUSTODIAN = address(2)
PHARMACY = address(3)
INSURER = address(4)
OTHER_INSURER = address(5)
PATIENT = address(6)
OTHER_PATIENT = address(7)
STRANGER = address(8)


def access(**changes: Any) -> RecordAccess:
    """The hospital reads a record held by CUSTODIAN, under grant 7."""
    fields: dict[str, Any] = {
        "eventId": h("access"),
        "recordRef": h("record"),
        "custodian": CUSTODIAN,
        "patient": PATIENT,
        "institution": HOSPITAL,
        "actor": h("dr who"),
        "action": Action.READ,
        "purpose": Purpose.TREATMENT,
        "grantId": 7,
        "reasonHash": bytes(32),
        "occurredAt": NOW,
    }
    return RecordAccess(**{**fields, **changes})


def prescription(**changes: Any) -> PrescriptionIssued:
    fields: dict[str, Any] = {
        "eventId": h("prescription"),
        "recordRef": h("record"),
        "patient": PATIENT,
        "institution": HOSPITAL,
        "prescriber": h("dr who"),
        "contentHash": h("amoxicillin"),
        "fills": 2,
        "validUntil": NOW + 30 * 86400,
        "occurredAt": NOW,
    }
    return PrescriptionIssued(**{**fields, **changes})


def dispense(**changes: Any) -> PrescriptionDispensed:
    fields: dict[str, Any] = {
        "eventId": h("dispense"),
        "prescriptionId": h("prescription"),
        "patient": PATIENT,
        "institution": PHARMACY,
        "pharmacist": h("pharmacist"),
        "fillNumber": 1,
        "contentHash": h("box"),
        "occurredAt": NOW + 86400,
    }
    return PrescriptionDispensed(**{**fields, **changes})


def claim(**changes: Any) -> InsuranceClaim:
    fields: dict[str, Any] = {
        "eventId": h("claim"),
        "serviceRef": h("dispense"),
        "patient": PATIENT,
        "institution": PHARMACY,
        "insurer": INSURER,
        "amount": 12_50,
        "contentHash": h("invoice"),
        "occurredAt": NOW + 86400,
    }
    return InsuranceClaim(**{**fields, **changes})


def payment(**changes: Any) -> InsurancePayment:
    fields: dict[str, Any] = {
        "eventId": h("payment"),
        "claimId": h("claim"),
        "patient": PATIENT,
        "institution": INSURER,
        "payee": PHARMACY,
        "amount": 12_50,
        "contentHash": h("remittance"),
        "occurredAt": NOW + 2 * 86400,
    }
    return InsurancePayment(**{**fields, **changes})


# ----------------------------------------------------------------------------- every violation

#: (violation, the call that must raise it). Each check's passing cases are further down.
VIOLATIONS: list[tuple[type[RuleViolation], Callable[[], None]]] = [
    (rules.SignerMismatch, lambda: rules.check_signer(access(), STRANGER)),
    (
        rules.InstitutionUnregistered,
        lambda: rules.check_institution(
            EventType.RECORD_ACCESS, STRANGER, InstitutionKind.NONE, True
        ),
    ),
    (
        rules.InstitutionSuspended,
        lambda: rules.check_institution(
            EventType.RECORD_ACCESS, HOSPITAL, InstitutionKind.HOSPITAL, False
        ),
    ),
    (
        rules.InstitutionWrongKind,
        lambda: rules.check_institution(
            EventType.PRESCRIPTION_ISSUED, PHARMACY, InstitutionKind.PHARMACY, True
        ),
    ),
    (
        rules.OccurredInFuture,
        lambda: rules.check_not_future(access(occurredAt=NOW + 301), NOW, 300),
    ),
    (
        rules.OccurredTooLongAgo,
        lambda: rules.check_not_backdated(access(occurredAt=NOW - 86401), NOW, 86400),
    ),
    (
        rules.CustodianNotHospital,
        lambda: rules.check_custodian(access(), InstitutionKind.PHARMACY),
    ),
    (
        rules.RecordPatientMismatch,
        lambda: rules.check_record(access(), RecordFacts(OTHER_PATIENT, CUSTODIAN)),
    ),
    (
        rules.CustodianMismatch,
        lambda: rules.check_record(access(), RecordFacts(PATIENT, STRANGER)),
    ),
    (rules.ReasonRequired, lambda: rules.check_access_reason(access(grantId=0))),
    (rules.PrescriptionUnknown, lambda: rules.check_dispense(dispense(), None, ())),
    (
        rules.PrescriptionPatientMismatch,
        lambda: rules.check_dispense(dispense(), prescription(patient=OTHER_PATIENT), ()),
    ),
    (
        rules.PrescriptionExpired,
        lambda: rules.check_dispense(dispense(occurredAt=NOW + 30 * 86400 + 1), prescription(), ()),
    ),
    (
        rules.FillsExceeded,
        lambda: rules.check_dispense(dispense(fillNumber=3), prescription(), {1, 2}),
    ),
    (
        rules.FillAlreadyDispensed,
        lambda: rules.check_dispense(dispense(fillNumber=2), prescription(), {2}),
    ),
    (rules.ServiceUnknown, lambda: rules.check_claim(claim(), None, insurer_active=True)),
    (
        rules.ServiceNotClaimable,
        lambda: rules.check_claim(claim(), payment(), insurer_active=True),
    ),
    (
        rules.ServiceNotClaimant,
        lambda: rules.check_claim(claim(), dispense(institution=HOSPITAL), insurer_active=True),
    ),
    (
        rules.ServiceAlreadyClaimed,
        lambda: rules.check_claim(claim(), dispense(), insurer_active=True, already_claimed=True),
    ),
    (
        rules.DispenseBeforePrescription,
        lambda: rules.check_dispense(dispense(occurredAt=NOW - 10), prescription(), ()),
    ),
    (
        rules.ServicePatientMismatch,
        lambda: rules.check_claim(claim(), dispense(patient=OTHER_PATIENT), insurer_active=True),
    ),
    (
        rules.InsurerNotRegistered,
        lambda: rules.check_claim(claim(), dispense(), insurer_active=False),
    ),
    (rules.ClaimUnknown, lambda: rules.check_payment(payment(), None, already_paid=False)),
    (
        rules.ClaimPatientMismatch,
        lambda: rules.check_payment(payment(), claim(patient=OTHER_PATIENT), already_paid=False),
    ),
    (
        rules.PaymentWrongInsurer,
        lambda: rules.check_payment(payment(), claim(insurer=OTHER_INSURER), already_paid=False),
    ),
    (
        rules.PaymentWrongPayee,
        lambda: rules.check_payment(payment(payee=HOSPITAL), claim(), already_paid=False),
    ),
    (rules.ClaimAlreadyPaid, lambda: rules.check_payment(payment(), claim(), already_paid=True)),
    (
        rules.PaymentExceedsClaim,
        lambda: rules.check_payment(payment(amount=12_51), claim(), already_paid=False),
    ),
]

#: Violations no function of ledger.rules raises (ledger.ingest raises them itself).
RAISED_ELSEWHERE = {rules.EventIdConflict}


@pytest.mark.parametrize(("violation", "call"), VIOLATIONS, ids=[v.__name__ for v, _ in VIOLATIONS])
def test_each_violation_is_raised_by_its_check(
    violation: type[RuleViolation], call: Callable[[], None]
) -> None:
    with pytest.raises(RuleViolation) as caught:
        call()
    assert type(caught.value) is violation  # exactly this one, not a sibling
    assert caught.value.diagnostics()["code"] == violation.code
    assert caught.value.detail


def test_every_violation_has_a_test_and_a_distinct_code() -> None:
    subclasses = set(RuleViolation.__subclasses__())
    assert {v for v, _ in VIOLATIONS} | RAISED_ELSEWHERE == subclasses
    all_codes = [v.code for v in subclasses]
    assert len(set(all_codes)) == len(all_codes)
    assert RuleViolation.code not in all_codes
    assert all(400 <= v.status < 500 for v in subclasses)


# ----------------------------------------------------------------------------- signer, institution


def test_check_signer_passes_for_the_institution() -> None:
    rules.check_signer(access(), HOSPITAL)


ALLOWED: list[tuple[EventType, InstitutionKind]] = [
    (t, k) for t, kinds in SIGNER_KINDS.items() for k in sorted(kinds)
]
REAL_KINDS: list[InstitutionKind] = [k for k in InstitutionKind if k is not InstitutionKind.NONE]
WRONG: list[tuple[EventType, InstitutionKind]] = [
    (t, k) for t, k in product(EventType, REAL_KINDS) if k not in SIGNER_KINDS[t]
]


def pair_ids(pairs: list[tuple[EventType, InstitutionKind]]) -> list[str]:
    return [f"{t.value}-{k.name.lower()}" for t, k in pairs]


def test_the_signer_kinds_table_has_allowed_and_wrong_pairs_for_every_type() -> None:
    assert len(ALLOWED) + len(WRONG) == len(EventType) * len(REAL_KINDS)
    assert {t for t, _ in ALLOWED} == set(EventType)
    # Every type but RecordAccess (signed by whoever accessed) refuses some kind.
    assert {t for t, _ in WRONG} == set(EventType) - {EventType.RECORD_ACCESS}


@pytest.mark.parametrize(("event_type", "kind"), ALLOWED, ids=pair_ids(ALLOWED))
def test_check_institution_passes_for_an_active_institution_of_an_allowed_kind(
    event_type: EventType, kind: InstitutionKind
) -> None:
    rules.check_institution(event_type, HOSPITAL, kind, True)


@pytest.mark.parametrize(("event_type", "kind"), WRONG, ids=pair_ids(WRONG))
def test_check_institution_refuses_every_wrong_kind(
    event_type: EventType, kind: InstitutionKind
) -> None:
    with pytest.raises(rules.InstitutionWrongKind) as caught:
        rules.check_institution(event_type, HOSPITAL, kind, True)
    assert caught.value.context == {"institution": HOSPITAL, "kind": kind.name.lower()}
    assert kind.name.lower() in caught.value.detail
    assert event_type.value in caught.value.detail


@pytest.mark.parametrize("event_type", list(EventType))
@pytest.mark.parametrize("active", [True, False])
def test_check_institution_refuses_an_unregistered_signer(
    event_type: EventType, active: bool
) -> None:
    with pytest.raises(rules.InstitutionUnregistered):
        rules.check_institution(event_type, STRANGER, InstitutionKind.NONE, active)


@pytest.mark.parametrize(("event_type", "kind"), ALLOWED + WRONG, ids=pair_ids(ALLOWED + WRONG))
def test_check_institution_refuses_a_suspended_signer_of_any_kind(
    event_type: EventType, kind: InstitutionKind
) -> None:
    with pytest.raises(rules.InstitutionSuspended):
        rules.check_institution(event_type, HOSPITAL, kind, False)


# ----------------------------------------------------------------------------- clock


@pytest.mark.parametrize("occurred_at", [1, NOW - 86400, NOW, NOW + 300])
def test_check_not_future_passes_up_to_the_skew(occurred_at: int) -> None:
    rules.check_not_future(access(occurredAt=occurred_at), NOW, 300)


def test_check_not_future_refuses_one_second_beyond_the_skew() -> None:
    with pytest.raises(rules.OccurredInFuture) as caught:
        rules.check_not_future(prescription(occurredAt=NOW + 1), NOW, 0)
    assert caught.value.context == {"occurred_at": NOW + 1, "now": NOW}


@pytest.mark.parametrize("occurred_at", [NOW - 86400, NOW, NOW + 300])
def test_check_not_backdated_passes_within_the_window(occurred_at: int) -> None:
    rules.check_not_backdated(access(occurredAt=occurred_at), NOW, 86400)


def test_check_not_backdated_refuses_one_second_beyond_the_window() -> None:
    with pytest.raises(rules.OccurredTooLongAgo) as caught:
        rules.check_not_backdated(prescription(occurredAt=NOW - 61), NOW, 60)
    assert caught.value.context == {"occurred_at": NOW - 61, "now": NOW}


# ----------------------------------------------------------------------------- records


def test_a_prescription_never_checks_the_custodian_an_access_would() -> None:
    # Another hospital may prescribe on a record the custodian holds (same patient).
    rules.check_record(prescription(institution=STRANGER), RecordFacts(PATIENT, CUSTODIAN))


@pytest.mark.parametrize("kind", [k for k in InstitutionKind if k is not InstitutionKind.HOSPITAL])
def test_only_a_hospital_may_be_named_custodian(kind: InstitutionKind) -> None:
    with pytest.raises(rules.CustodianNotHospital) as caught:
        rules.check_custodian(access(), kind)
    assert caught.value.context == {"custodian": CUSTODIAN}


def test_a_hospital_may_be_named_custodian() -> None:
    rules.check_custodian(access(), InstitutionKind.HOSPITAL)


@pytest.mark.parametrize(
    ("event", "facts"),
    [
        pytest.param(access(), None, id="new-record"),
        pytest.param(access(), RecordFacts(PATIENT, CUSTODIAN), id="same-custodian"),
        pytest.param(prescription(), RecordFacts(PATIENT, CUSTODIAN), id="prescription"),
        pytest.param(prescription(), None, id="new-record-prescription"),
    ],
)
def test_check_record_passes_when_the_record_agrees(
    event: RecordAccess | PrescriptionIssued, facts: RecordFacts | None
) -> None:
    rules.check_record(event, facts)


def test_check_record_refuses_a_prescription_for_another_patient() -> None:
    with pytest.raises(rules.RecordPatientMismatch) as caught:
        rules.check_record(prescription(), RecordFacts(OTHER_PATIENT, HOSPITAL))
    assert caught.value.context == {"record_ref": "0x" + h("record").hex()}


def test_check_record_checks_the_patient_before_the_custodian() -> None:
    with pytest.raises(rules.RecordPatientMismatch):
        rules.check_record(access(), RecordFacts(OTHER_PATIENT, STRANGER))


# ----------------------------------------------------------------------------- access reason


@pytest.mark.parametrize(
    "event",
    [
        pytest.param(access(grantId=0, reasonHash=h("cardiac arrest")), id="emergency-with-reason"),
        pytest.param(access(grantId=7), id="under-a-grant"),
        pytest.param(access(institution=CUSTODIAN, grantId=0), id="custodian"),
    ],
)
def test_check_access_reason_passes(event: RecordAccess) -> None:
    rules.check_access_reason(event)


# ----------------------------------------------------------------------------- consent


def test_consent_of_the_custodian_needs_no_grant() -> None:
    own = access(institution=CUSTODIAN, grantId=0)
    assert rules.consent_of(own, None) == ConsentFinding(ConsentStatus.CUSTODIAN)
    assert not rules.needs_grant_check(own)
    # Even naming a grant, the custodian's own access is judged as the custodian's.
    with_grant = access(institution=CUSTODIAN, grantId=7)
    assert rules.consent_of(with_grant, GrantStatus.REVOKED).status is ConsentStatus.CUSTODIAN
    assert not rules.needs_grant_check(with_grant)


def test_consent_of_an_access_without_a_grant_is_an_emergency() -> None:
    emergency = access(grantId=0, reasonHash=h("unconscious"))
    finding = rules.consent_of(emergency, None)
    assert finding == ConsentFinding(ConsentStatus.EMERGENCY)
    assert finding.label == "emergency"
    assert not rules.needs_grant_check(emergency)


def test_consent_of_an_access_under_a_valid_grant_is_covered() -> None:
    finding = rules.consent_of(access(), GrantStatus.VALID)
    assert finding.status is ConsentStatus.COVERED
    assert finding.label == "covered"
    assert rules.needs_grant_check(access())


NOT_COVERED = [s for s in GrantStatus if s is not GrantStatus.VALID]


@pytest.mark.parametrize("status", NOT_COVERED, ids=lambda s: s.label)
def test_consent_of_an_access_under_a_failing_grant_is_not_covered(status: GrantStatus) -> None:
    finding = rules.consent_of(access(), status)
    assert finding == ConsentFinding(ConsentStatus.NOT_COVERED, status)
    assert finding.label == f"not-covered:{status.label}"


def test_consent_of_a_grant_based_access_needs_the_grant_status() -> None:
    with pytest.raises(ValueError, match="grant's status"):
        rules.consent_of(access(), None)


def _solidity_enum(path: str) -> list[str]:
    source = (REPO / path).read_text()
    body = re.search(r"enum GrantStatus \{([^}]*)\}", source)
    assert body is not None
    names = [n.strip() for n in body.group(1).split(",")]
    return [re.sub(r"(?<!^)(?=[A-Z])", "_", n).upper() for n in names]


def test_grant_status_matches_the_consent_registry_enums() -> None:
    """Version 2's enum is version 1's with two more reasons at the end: one GrantStatus
    reads both contracts' answers."""
    v1 = _solidity_enum("contracts/src/interfaces/IConsentRegistry.sol")
    v2 = _solidity_enum("contracts/src/interfaces/IConsentRegistryV2.sol")
    assert v2[: len(v1)] == v1
    assert [s.name for s in GrantStatus] == v2
    assert [s.value for s in GrantStatus] == list(range(len(v2)))


#: Every finding consent_of (and ingest) can return.
CANONICAL = [
    ConsentFinding(ConsentStatus.NOT_APPLICABLE),
    ConsentFinding(ConsentStatus.CUSTODIAN),
    ConsentFinding(ConsentStatus.COVERED),
    ConsentFinding(ConsentStatus.EMERGENCY),
    *(ConsentFinding(ConsentStatus.NOT_COVERED, s) for s in NOT_COVERED),
]


@given(finding=st.sampled_from(CANONICAL))
def test_canonical_consent_findings_round_trip_through_their_label(
    finding: ConsentFinding,
) -> None:
    assert ConsentFinding.parse(finding.label) == finding


def test_a_covered_finding_round_trips_through_its_label() -> None:
    finding = rules.consent_of(access(), GrantStatus.VALID)
    assert ConsentFinding.parse(finding.label) == finding


@pytest.mark.parametrize(
    "label",
    [
        "",
        "fine",
        "covered:nope",
        "not-covered:nope",
        "not-covered",
        "not-covered:",
        "not-covered:valid",
        "custodian:revoked",
        "not-covered:REVOKED",
    ],
)
def test_parse_refuses_labels_it_would_not_produce(label: str) -> None:
    with pytest.raises(ValueError, match=r"consent|reason"):
        ConsentFinding.parse(label)


# ----------------------------------------------------------------------------- prescriptions


@pytest.mark.parametrize(
    ("event", "dispensed"),
    [
        pytest.param(dispense(fillNumber=1), set(), id="first-fill"),
        pytest.param(dispense(fillNumber=2), {1}, id="last-fill"),
        pytest.param(dispense(occurredAt=NOW + 30 * 86400), set(), id="on-valid-until"),
    ],
)
def test_check_dispense_passes(event: PrescriptionDispensed, dispensed: set[int]) -> None:
    rules.check_dispense(event, prescription(), dispensed)


def test_check_dispense_refuses_a_reference_to_an_event_that_is_not_a_prescription() -> None:
    with pytest.raises(rules.PrescriptionUnknown):
        rules.check_dispense(dispense(), access(), ())


# ----------------------------------------------------------------------------- claims, payments


@pytest.mark.parametrize(
    ("service", "claimant"),
    [
        pytest.param(dispense(), PHARMACY, id="dispense"),
        pytest.param(access(), HOSPITAL, id="access"),
        pytest.param(prescription(), HOSPITAL, id="prescription"),
    ],
)
def test_check_claim_passes_for_the_institution_that_gave_the_service(
    service: Any, claimant: str
) -> None:
    rules.check_claim(claim(institution=claimant), service, insurer_active=True)


@pytest.mark.parametrize("amount", [1, 12_49, 12_50])
def test_check_payment_passes_up_to_the_claimed_amount(amount: int) -> None:
    rules.check_payment(payment(amount=amount), claim(), already_paid=False)


def test_check_payment_refuses_a_reference_to_an_event_that_is_not_a_claim() -> None:
    with pytest.raises(rules.ClaimUnknown):
        rules.check_payment(payment(), dispense(), already_paid=False)


@pytest.mark.parametrize(
    "event",
    [access(), access(custodian=address(9)), prescription(), dispense(), claim(), payment()],
    ids=["access", "access-other-custodian", "prescription", "dispense", "claim", "payment"],
)
@pytest.mark.parametrize("record_ref", [None, h("record")])
def test_event_facts_are_what_the_dataclass_makes_of_the_event(
    event: Any, record_ref: bytes | None
) -> None:
    """``EventFacts.of`` builds the frozen dataclass without its ``__init__`` (issue 15): every
    field set, as the constructor sets them."""
    from dataclasses import fields

    from ledger.visibility import counterparty

    facts = rules.EventFacts.of(event, record_ref)
    expected = rules.EventFacts(
        event_type=event.event_type,
        patient=event.patient,
        institution=event.institution,
        counterparty=counterparty(event),
        occurredAt=event.occurredAt,
        record_ref=record_ref,
        fills=getattr(event, "fills", 0) if isinstance(event, PrescriptionIssued) else 0,
        validUntil=event.validUntil if isinstance(event, PrescriptionIssued) else 0,
        insurer=event.insurer if isinstance(event, InsuranceClaim) else None,
        amount=event.amount if isinstance(event, InsuranceClaim) else 0,
    )
    assert facts == expected
    assert hash(facts) == hash(expected)
    for field in fields(rules.EventFacts):  # every slot set (none left unset)
        assert getattr(facts, field.name) == getattr(expected, field.name)
    with pytest.raises(AttributeError):
        facts.patient = address(7)  # type: ignore[misc]  # still frozen
