"""ledger.audit: each finding produced from plain chain facts, and a clean log producing none."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import merkle
from ledger.audit import (
    RULE_CODES,
    Anchor,
    AuditCode,
    Auditor,
    FactTable,
    GrantQuery,
    InstitutionStatus,
    MissingFact,
    Revocation,
    audit_events,
    check_anchoring,
    check_checkpoints,
    check_leaf_sequence,
    check_trail_shape,
    count_findings,
    needed_facts,
    signature_findings,
)
from ledger.eip712 import Domain, address_of, to_checksum_address
from ledger.events import (
    EventBase,
    InstitutionKind,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    sign_event,
)
from ledger.rules import GrantStatus
from ledger.verify import Finding, FindingCode
from tests.unit.ledger.test_rules import (
    CUSTODIAN,
    HOSPITAL,
    INSURER,
    NOW,
    PATIENT,
    PHARMACY,
    STRANGER,
    access,
    claim,
    dispense,
    payment,
    prescription,
)

KINDS = {
    HOSPITAL: InstitutionKind.HOSPITAL,
    CUSTODIAN: InstitutionKind.HOSPITAL,
    PHARMACY: InstitutionKind.PHARMACY,
    INSURER: InstitutionKind.INSURER,
}


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@dataclass
class Facts:
    """Chain facts as plain data: kinds, registration and suspension times, grant statuses."""

    kinds: dict[str, InstitutionKind] = field(default_factory=lambda: dict(KINDS))
    registered_at: dict[str, int] = field(default_factory=dict)
    suspended_at: dict[str, int] = field(default_factory=dict)
    grants: dict[int, GrantStatus] = field(default_factory=lambda: {7: GrantStatus.VALID})
    asked: list[Any] = field(default_factory=list)

    def institution_at(self, address: str, at: int) -> InstitutionStatus:
        self.asked.append((address, at))
        kind = self.kinds.get(address, InstitutionKind.NONE)
        if at < self.registered_at.get(address, 0):
            return InstitutionStatus(InstitutionKind.NONE, False)
        return InstitutionStatus(kind, at < self.suspended_at.get(address, 2**64))

    def grant_status(self, query: GrantQuery) -> GrantStatus:
        self.asked.append(query)
        return self.grants.get(query.grant_id, GrantStatus.NOT_FOUND)


def clean_log() -> list[EventBase]:
    """A custodian's read, a grant-covered read, a prescription, its dispense, a claim on the
    dispense and its payment."""
    return [
        access(eventId=h("own"), institution=CUSTODIAN, grantId=0),
        access(),
        prescription(),
        dispense(),
        claim(),
        payment(),
    ]


def codes(findings: list[Finding]) -> list[str]:
    return [str(f.code) for f in findings]


def test_a_clean_log_has_no_findings() -> None:
    assert audit_events(clean_log(), Facts()) == []


def test_the_facts_asked_are_exactly_the_needed_facts() -> None:
    events = clean_log()
    facts = Facts()
    audit_events(events, facts)
    needs = needed_facts(events)
    assert set(facts.asked) == set(needs.institutions) | set(needs.grants)
    assert len(needs) == len(set(facts.asked))


def test_a_fact_table_answers_the_needed_facts_and_refuses_others() -> None:
    events = clean_log()
    oracle = Facts()
    needs = needed_facts(events)
    table = FactTable(
        {key: oracle.institution_at(*key) for key in needs.institutions},
        {q: oracle.grant_status(q) for q in needs.grants},
    )
    assert audit_events(events, table) == []
    with pytest.raises(MissingFact):
        table.institution_at(STRANGER, NOW)
    with pytest.raises(MissingFact):
        table.grant_status(GrantQuery(8, PATIENT, HOSPITAL, h("record"), 0, NOW))


# --------------------------------------------------------------------------- signers


def test_a_signer_unregistered_at_occurred_at_is_found() -> None:
    later = Facts(registered_at={HOSPITAL: NOW + 1})
    findings = audit_events([access()], later)
    assert codes(findings) == ["institution-unregistered"]
    assert findings[0].context["occurredAt"] == NOW
    never = audit_events([prescription(institution=STRANGER)], Facts())
    assert codes(never) == ["institution-unregistered"]


def test_a_signer_suspended_at_occurred_at_is_found_and_not_before() -> None:
    facts = Facts(suspended_at={HOSPITAL: NOW})
    assert codes(audit_events([access()], facts)) == ["institution-suspended"]
    assert audit_events([access(occurredAt=NOW - 1)], facts) == []


def test_a_signer_of_the_wrong_kind_is_found() -> None:
    findings = audit_events([prescription(institution=PHARMACY)], Facts())
    assert codes(findings) == ["institution-wrong-kind"]


# --------------------------------------------------------------------------- consent


@pytest.mark.parametrize(
    "status",
    [s for s in GrantStatus if s is not GrantStatus.VALID],
    ids=lambda s: s.label,
)
def test_an_access_under_a_grant_that_did_not_cover_it_is_an_error(status: GrantStatus) -> None:
    findings = audit_events([access()], Facts(grants={7: status}))
    assert codes(findings) == [AuditCode.CONSENT_NOT_COVERED]
    assert findings[0].severity == "error"
    assert findings[0].context["grantStatus"] == status.label


def test_an_emergency_access_is_for_review_not_an_error() -> None:
    emergency = access(grantId=0, reasonHash=h("unconscious"))
    findings = audit_events([emergency], Facts())
    assert codes(findings) == [AuditCode.EMERGENCY_ACCESS]
    assert findings[0].severity == "review"


def test_an_emergency_access_without_a_reason_is_an_error_too() -> None:
    findings = audit_events([access(grantId=0)], Facts())
    assert codes(findings) == ["reason-required", AuditCode.EMERGENCY_ACCESS]


def test_a_custodian_claimed_by_another_institution_is_found() -> None:
    first = access(eventId=h("own"), institution=CUSTODIAN, grantId=0)
    usurper = access(eventId=h("usurper"), custodian=HOSPITAL, grantId=0)  # "my own record"
    assert codes(audit_events([first, usurper], Facts())) == ["custodian-mismatch"]


def test_the_operators_consent_label_is_compared_with_the_chains() -> None:
    findings = audit_events(
        [access()], Facts(grants={7: GrantStatus.REVOKED}), consent_labels={h("access"): "covered"}
    )
    assert codes(findings) == [AuditCode.CONSENT_NOT_COVERED, AuditCode.CONSENT_LABEL_MISMATCH]
    assert findings[1].severity == "warning"
    honest = {h("access"): "not-covered:revoked"}
    findings = audit_events(
        [access()], Facts(grants={7: GrantStatus.REVOKED}), consent_labels=honest
    )
    assert codes(findings) == [AuditCode.CONSENT_NOT_COVERED]


def test_without_chain_facts_only_the_chain_free_rules_run() -> None:
    log = [access(), prescription(institution=PHARMACY), dispense(fillNumber=3)]
    assert codes(audit_events(log, None)) == ["fills-exceeded"]


# --------------------------------------------------------------------------- prescriptions


def test_a_dispense_without_a_prescription_is_found() -> None:
    assert codes(audit_events([dispense()], Facts())) == ["prescription-unknown"]


def test_a_dispense_beyond_the_fills_by_number_is_found() -> None:
    log = [prescription(fills=1), dispense(fillNumber=2)]
    assert codes(audit_events(log, Facts())) == ["fills-exceeded"]


def test_a_dispense_beyond_the_fills_by_count_is_found() -> None:
    log = [
        prescription(fills=1),
        dispense(eventId=h("d1")),
        dispense(eventId=h("d2")),  # fill 1 again: a second box on a one-fill prescription
    ]
    assert codes(audit_events(log, Facts())) == ["fill-already-dispensed", "fills-exceeded"]
    assert audit_events(log, Facts())[1].context["dispenses"] == 2


def test_a_dispense_after_valid_until_is_found() -> None:
    log = [prescription(validUntil=NOW + 10), dispense(occurredAt=NOW + 11)]
    assert codes(audit_events(log, Facts())) == ["prescription-expired"]


def test_an_expired_dispense_beyond_the_fills_reports_both() -> None:
    log = [prescription(fills=1, validUntil=NOW + 10), dispense(fillNumber=2, occurredAt=NOW + 11)]
    assert codes(audit_events(log, Facts())) == ["prescription-expired", "fills-exceeded"]


# --------------------------------------------------------------------------- money


def test_a_claim_without_a_service_is_found() -> None:
    assert codes(audit_events([claim()], Facts())) == ["service-unknown"]


def test_a_claim_to_an_insurer_not_registered_then_is_found() -> None:
    log = [prescription(), dispense(), claim()]
    facts = Facts(suspended_at={INSURER: NOW})
    assert codes(audit_events(log, facts)) == ["insurer-not-registered"]


def test_a_service_claimed_twice_is_found() -> None:
    log = [prescription(), dispense(), claim(), claim(eventId=h("claim again"))]
    assert codes(audit_events(log, Facts())) == ["service-already-claimed"]


def test_a_double_payment_is_found() -> None:
    log = [*clean_log()[:-1], payment(amount=5_00), payment(eventId=h("again"), amount=5_00)]
    assert codes(audit_events(log, Facts())) == ["claim-already-paid"]


def test_a_double_payment_above_the_claim_reports_both() -> None:
    log = [*clean_log(), payment(eventId=h("again"))]
    findings = audit_events(log, Facts())
    assert codes(findings) == ["claim-already-paid", "payment-exceeds-claim"]
    assert findings[1].context == {"paid": 2 * 12_50, "claimed": 12_50}


def test_a_payment_above_the_claim_is_found() -> None:
    log = [*clean_log()[:-1], payment(amount=12_51)]
    assert codes(audit_events(log, Facts())) == ["payment-exceeds-claim"]


def test_a_payment_of_an_unknown_claim_is_found() -> None:
    assert codes(audit_events([payment()], Facts())) == ["claim-unknown"]


def test_an_event_logged_twice_is_found_once() -> None:
    log = [*clean_log(), payment()]
    findings = audit_events(log, Facts())
    assert codes(findings) == [AuditCode.EVENT_ID_DUPLICATE]
    assert findings[0].context == {"sameContent": True}


def test_the_rule_codes_are_listed() -> None:
    assert "fills-exceeded" in RULE_CODES
    assert "claim-already-paid" in RULE_CODES
    assert "rule-violation" not in RULE_CODES


# --------------------------------------------------------------------------- signatures

DOMAIN = Domain("medtrail", "1", 31337, to_checksum_address(bytes([9]) * 20))


def test_signatures_are_recovered() -> None:
    key = bytes([1]) * 32
    signer = address_of(key)
    event = access(institution=signer)
    signed = sign_event(event, DOMAIN, key)
    assert signature_findings(signed, signed.digest(DOMAIN)) == []
    forged = sign_event(event, DOMAIN, bytes([2]) * 32)
    assert codes(signature_findings(forged, forged.digest(DOMAIN))) == ["signer-mismatch"]
    garbage = forged.model_copy(update={"signature": bytes(64) + b"\x1b"})
    assert codes(signature_findings(garbage, garbage.digest(DOMAIN))) == ["signature-invalid"]


# --------------------------------------------------------------------------- the log's shape


def test_missing_and_out_of_order_leaves_are_found() -> None:
    assert check_leaf_sequence([0, 1, 2]) == []
    missing = check_leaf_sequence([0, 1, 4, 5])
    assert codes(missing) == [AuditCode.ENTRY_MISSING]
    assert missing[0].context["from"] == 2
    assert missing[0].context["to"] == 3
    assert codes(check_leaf_sequence([0, 2, 1])) == [
        AuditCode.ENTRY_MISSING,
        AuditCode.ENTRY_OUT_OF_ORDER,
    ]


def _tree(n: int) -> merkle.MemoryTree:
    return merkle.MemoryTree(merkle.leaf_hash(h(f"leaf {i}")) for i in range(n))


def test_checkpoints_are_checked_against_the_recomputed_tree() -> None:
    tree = _tree(10)
    good = [Anchor(4, tree.root(4)), Anchor(10, tree.root(10))]
    assert check_checkpoints(tree, good) == []
    bad = [Anchor(4, tree.root(4)), Anchor(10, h("another root"))]
    findings = check_checkpoints(tree, bad)
    assert codes(findings) == [AuditCode.CHECKPOINT_ROOT_MISMATCH]
    assert findings[0].context["suspectFrom"] == 4
    beyond = check_checkpoints(tree, [Anchor(12, h("root of 12"))])
    assert codes(beyond) == [AuditCode.CHECKPOINT_BEYOND_LOG]


def test_anchoring_deadlines_are_checked() -> None:
    anchors = [Anchor(2, h("r"), timestamp=NOW + 100)]
    received = [NOW, NOW + 50, NOW + 60]
    findings = check_anchoring(received, anchors, now=NOW + 200, max_merge_delay=90)
    # leaf 0: anchored at +100, deadline +90 (late); leaf 1: in time; leaf 2: never, overdue.
    assert codes(findings) == [AuditCode.ANCHORED_LATE, FindingCode.NOT_ANCHORED_IN_TIME]
    assert [f.context["leafIndex"] for f in findings] == [0, 2]
    assert check_anchoring(received, anchors, now=NOW + 100, max_merge_delay=1000) == []


def test_a_trail_with_another_records_event_or_out_of_order_is_found() -> None:
    record = h("record")
    own = access()
    other = access(eventId=h("other"), recordRef=h("other record"))
    assert check_trail_shape(record, [(0, own, record), (3, prescription(), record)]) == []
    findings = check_trail_shape(record, [(0, own, record), (1, other, h("other record"))])
    assert codes(findings) == [AuditCode.TRAIL_RECORD_MISMATCH]
    findings = check_trail_shape(record, [(5, own, record), (1, prescription(), record)])
    assert codes(findings) == [AuditCode.TRAIL_ORDER]
    findings = check_trail_shape(record, [(1, own, record), (2, own, record)])
    assert codes(findings) == [AuditCode.EVENT_ID_DUPLICATE]


def test_findings_are_counted_per_severity_and_code() -> None:
    findings = [
        Finding("b", "error", ""),
        Finding("a", "error", ""),
        Finding("a", "error", ""),
        Finding("e", "review", ""),
    ]
    assert count_findings(findings) == {
        "error": {"a": 2, "b": 1},
        "review": {"e": 1},
        "warning": {},
    }


# --------------------------------------------------------------------------- properties


@st.composite
def lawful_logs(draw: st.DrawFn) -> list[EventBase]:
    """Prescriptions, dispenses within their fills, claims of some dispenses and payments of
    some claims up to their amount, interleaved in any order that keeps references backwards."""
    chains: list[list[EventBase]] = []
    for n in range(draw(st.integers(1, 4))):
        fills = draw(st.integers(1, 3))
        rx = prescription(eventId=h(f"rx{n}"), fills=fills)
        chain: list[EventBase] = [rx]
        numbers = draw(st.permutations(range(1, fills + 1)))[: draw(st.integers(0, fills))]
        for fill in numbers:
            d = dispense(eventId=h(f"d{n}.{fill}"), prescriptionId=rx.eventId, fillNumber=fill)
            chain.append(d)
            if draw(st.booleans()):
                amount = draw(st.integers(1, 10_000))
                c = claim(eventId=h(f"c{n}.{fill}"), serviceRef=d.eventId, amount=amount)
                chain.append(c)
                if draw(st.booleans()):
                    paid = draw(st.integers(1, amount))
                    chain.append(payment(eventId=h(f"p{n}.{fill}"), claimId=c.eventId, amount=paid))
        chains.append(chain)
    log: list[EventBase] = []
    while any(chains):
        chain = draw(st.sampled_from([c for c in chains if c]))
        log.append(chain.pop(0))
    return log


@given(lawful_logs())
def test_a_lawful_log_has_no_findings(log: list[EventBase]) -> None:
    assert audit_events(log, Facts()) == []


@given(lawful_logs(), st.data())
def test_one_more_dispense_than_the_fills_is_always_found(
    log: list[EventBase], data: st.DataObject
) -> None:
    prescriptions = [e for e in log if isinstance(e, PrescriptionIssued)]
    rx = data.draw(st.sampled_from(prescriptions))
    done = sum(
        1 for e in log if isinstance(e, PrescriptionDispensed) and e.prescriptionId == rx.eventId
    )
    extra = [
        dispense(eventId=h(f"extra{i}"), prescriptionId=rx.eventId, fillNumber=1 + i % rx.fills)
        for i in range(rx.fills - done + 1)
    ]
    found = codes(audit_events([*log, *extra], Facts()))
    assert "fills-exceeded" in found
    assert all(c in {"fills-exceeded", "fill-already-dispensed"} for c in found)


@given(lawful_logs(), st.data())
def test_a_second_payment_of_a_claim_is_always_found(
    log: list[EventBase], data: st.DataObject
) -> None:
    claims = [e for e in log if isinstance(e, InsuranceClaim)]
    if not claims:
        return
    c = data.draw(st.sampled_from(claims))
    first = payment(eventId=h("first"), claimId=c.eventId, amount=1)
    second = payment(eventId=h("second"), claimId=c.eventId, amount=1)
    lawful = [e for e in log if not (isinstance(e, InsurancePayment) and e.claimId == c.eventId)]
    found = codes(audit_events([*lawful, first, second], Facts()))
    assert found[0] == "claim-already-paid"


# --------------------------------------------------------------------------- custody and time
# Issue 12: the regulator's tools apply ingest's own custody and time rules (one rule, both).


def test_custody_is_fixed_by_the_prescribing_hospital() -> None:
    rx = prescription(institution=CUSTODIAN)
    taken = access(institution=PHARMACY, custodian=PHARMACY, grantId=0, reasonHash=h("why"))
    findings = audit_events([rx, taken], Facts())
    assert "custodian-not-hospital" in codes(findings)
    assert "custodian-mismatch" in codes(findings)
    by_hospital = access(institution=HOSPITAL, custodian=HOSPITAL, grantId=0)
    assert codes(audit_events([rx, by_hospital], Facts())) == ["custodian-mismatch"]
    assert audit_events([rx, access(institution=CUSTODIAN, grantId=0)], Facts()) == []


def test_an_access_naming_a_custodian_that_is_no_hospital_is_found() -> None:
    for custodian in (PHARMACY, INSURER, STRANGER):
        event = access(custodian=custodian, grantId=0, reasonHash=h("why"))
        assert "custodian-not-hospital" in codes(audit_events([event], Facts()))


def test_the_custodian_is_judged_at_occurred_at() -> None:
    event = access()
    late = Facts(registered_at={CUSTODIAN: NOW + 1})
    assert codes(audit_events([event], late)) == ["custodian-not-hospital"]
    assert (CUSTODIAN, NOW) in needed_facts([event]).institutions


def auditor_with_limits(facts: Facts) -> Any:
    from ledger.audit import Auditor

    return Auditor(facts, max_backdate=86_400, max_merge_delay=3600)


def test_an_event_anchored_later_than_the_window_allows_is_backdated() -> None:
    auditor = auditor_with_limits(Facts())
    event = prescription()
    bound = event.occurredAt + 86_400 + 3600
    findings = auditor.check(event, logged_by=bound + 1)
    assert codes(findings) == [AuditCode.BACKDATED]
    assert findings[0].severity == "error"
    assert findings[0].context["anchoredAt"] == bound + 1
    assert auditor_with_limits(Facts()).check(event, logged_by=bound) == []
    assert auditor_with_limits(Facts()).check(event, logged_by=None) == []


@dataclass
class GrantEndsAt(Facts):
    """Grant 7 covers accesses until ``ends`` (revoked then), as the chain answers."""

    ends: int = NOW + 10

    def grant_status(self, query: GrantQuery) -> GrantStatus:
        self.asked.append(query)
        return GrantStatus.VALID if query.at < self.ends else GrantStatus.REVOKED


def test_an_access_anchored_after_its_grant_was_revoked_is_listed_for_review() -> None:
    event = access()  # dated NOW, covered then
    facts = GrantEndsAt()
    findings = auditor_with_limits(facts).check(event, logged_by=NOW + 60)
    assert codes(findings) == [AuditCode.ACCESS_LOGGED_AFTER_GRANT_END]
    assert findings[0].severity == "review"
    assert findings[0].context["grantStatusWhenAnchored"] == "revoked"
    needs = needed_facts([event], {event.eventId: NOW + 60})
    assert {q.at for q in needs.grants} == {NOW, NOW + 60}
    # Anchored before the revocation: nothing to review.
    assert auditor_with_limits(GrantEndsAt()).check(access(), logged_by=NOW + 5) == []


class GrantNotObtained(GrantEndsAt):
    """A verifier holding no signed grant for a version-2 grant committed on chain."""

    def grant_status(self, query: GrantQuery) -> GrantStatus:
        from ledger.audit import GrantUnavailable

        self.asked.append(query)
        raise GrantUnavailable(f"grant {query.grant_id} was not obtained", grantId=query.grant_id)


def test_an_access_under_a_grant_that_cannot_be_obtained_is_said_so_not_judged() -> None:
    from ledger.audit import Auditor

    event = access()
    auditor = Auditor(GrantNotObtained(), max_backdate=86_400, max_merge_delay=3600)
    findings = auditor.check(event, consent_label="covered", logged_by=NOW + 60)
    assert codes(findings) == [AuditCode.CONSENT_GRANT_UNAVAILABLE]  # no label mismatch
    (finding,) = findings
    assert finding.severity == "error"
    assert finding.event_id == event.eventId
    assert finding.context == {
        "grantId": event.grantId,
        "occurredAt": event.occurredAt,
        "consentLabel": "covered",
    }
    assert "was not obtained" in finding.detail
    # Judged again once anchored (the monitor): reported once, not again.
    assert auditor.check_anchored(event, NOW + 60) == []


def test_a_trusted_consent_registry_v2_the_api_does_not_name_is_a_mismatch() -> None:
    from ledger.chain.model import TrustedDeployment
    from ledger.trail import deployment_findings

    def contract(n: int) -> str:
        return to_checksum_address(bytes([n]) * 20)

    base = (1, contract(1), contract(2), contract(3), 0)
    v1 = TrustedDeployment(*base)
    v2 = TrustedDeployment(*base, contract(4))
    other = TrustedDeployment(*base, contract(5))
    assert deployment_findings(v1, v2) == []  # a file written before version 2 names none
    assert deployment_findings(v2, v2) == []
    for served in (v1, other):
        (finding,) = deployment_findings(v2, served)
        assert finding.code == AuditCode.DEPLOYMENT_MISMATCH
        assert finding.context == {
            "consentRegistryV2": {"trusted": contract(4), "api": served.consent_registry_v2}
        }


# --------------------------------------------------------------------------- incremental
# Issue 18: the monitor judges an event when it is served and again when it is anchored, over
# a state it keeps on disk.


@given(lawful_logs(), st.integers(0, 200_000))
def test_judging_before_and_after_anchoring_finds_what_judging_once_finds(
    log: list[EventBase], delay: int
) -> None:
    from ledger.audit import Auditor

    dated = [access(), access(eventId=h("late"), occurredAt=NOW + 30), *log]
    once = Auditor(GrantEndsAt(), max_backdate=86_400, max_merge_delay=3600)
    twice = Auditor(GrantEndsAt(), max_backdate=86_400, max_merge_delay=3600)
    for event in dated:
        anchored = event.occurredAt + delay
        expected = once.check(event, logged_by=anchored)
        found = twice.check(event, logged_by=None) + twice.check_anchored(event, anchored)
        assert sorted(map(repr, found)) == sorted(map(repr, expected))


def test_check_anchored_finds_backdating_and_accesses_logged_after_their_grant() -> None:
    from ledger.audit import Auditor, backdated_finding

    auditor = Auditor(GrantEndsAt(), max_backdate=100, max_merge_delay=10)
    event = access()
    assert auditor.check(event) == []
    assert codes(auditor.check_anchored(event, NOW + 5)) == []
    assert codes(auditor.check_anchored(event, NOW + 60)) == [
        AuditCode.ACCESS_LOGGED_AFTER_GRANT_END
    ]
    assert codes(auditor.check_anchored(event, NOW + 111)) == [
        AuditCode.BACKDATED,
        AuditCode.ACCESS_LOGGED_AFTER_GRANT_END,
    ]
    finding = backdated_finding(h("e"), 1000, 1111, max_backdate=100, max_merge_delay=10)
    assert finding is not None
    assert finding.context["anchoredAt"] == 1111
    assert backdated_finding(h("e"), 1000, 1110, max_backdate=100, max_merge_delay=10) is None
    # Without the chain, only backdating is judged.
    blind = Auditor(None, max_backdate=100, max_merge_delay=10)
    assert codes(blind.check_anchored(event, NOW + 60)) == []
    # Without the windows, backdating is not judged.
    assert Auditor(Facts()).check_anchored(prescription(), NOW + 10**6) == []


def test_the_auditor_keeps_its_state_where_it_is_given() -> None:
    from ledger.audit import Auditor
    from ledger.logstate import LogState

    state, seen = LogState(), {}
    auditor = Auditor(Facts(), state=state, seen=seen)
    for event in clean_log():
        assert auditor.check(event, content=7) == []
    assert auditor.state is state
    assert set(seen) == {e.eventId for e in clean_log()}
    assert set(seen.values()) == {7}
    # A second auditor over the same state goes on where the first stopped.
    resumed = Auditor(Facts(), state=state, seen=seen)
    again = resumed.check(payment(eventId=h("p2")), content=8)
    assert codes(again)[0] == "claim-already-paid"
    same = resumed.check(clean_log()[0], content=7)
    different = resumed.check(clean_log()[0], content=9)
    assert [f.context["sameContent"] for f in same + different] == [True, False]


def test_apply_replaces_what_it_changes_and_never_mutates_a_value_in_place() -> None:
    from ledger.logstate import LogState, apply

    rx = prescription(fills=2)
    state = LogState()
    apply(state, rx)
    apply(state, dispense(fillNumber=1))
    first = state.fills[rx.eventId]
    apply(state, dispense(eventId=h("d2"), fillNumber=2))
    assert tuple(first) == (1,)
    assert tuple(state.fills[rx.eventId]) == (1, 2)


# --------------------------------------------------------------------------- revoked in flight


@dataclass
class RevokedFacts(Facts):
    """Grant 7 revoked at the accesses' time, with ``revocation`` (asked only when needed)."""

    grants: dict[int, GrantStatus] = field(default_factory=lambda: {7: GrantStatus.REVOKED})
    revocation: Revocation | None = None

    def grant_revocation(self, grant_id: int) -> Revocation | None:
        self.asked.append(("revocation", grant_id))
        if self.revocation is None:
            raise MissingFact("not given")
        return self.revocation


def _judged_revoked(
    revocation: Revocation, *, received_at: int, label: str | None = "covered"
) -> list[Finding]:
    """An access at NOW under grant 7, which the chain shows revoked at NOW (``revocation``)."""
    facts = RevokedFacts(revocation=revocation)
    return Auditor(facts).check(access(), consent_label=label, received_at=received_at)


@pytest.mark.parametrize(
    ("revoked_at", "received_at"),
    [(NOW, NOW), (NOW, NOW - 5), (NOW - 5, NOW - 5)],
    ids=["same-second", "dated-ahead", "revoked-in-the-receipt-second"],
)
def test_a_revocation_mined_at_or_after_the_receipt_is_for_review(
    revoked_at: int, received_at: int
) -> None:
    revocation = Revocation(revoked_at, not_before=NOW - 60, expires_at=NOW + 60)
    (finding,) = _judged_revoked(revocation, received_at=received_at)
    assert (finding.code, finding.severity) == (AuditCode.CONSENT_REVOKED_IN_FLIGHT, "review")
    assert finding.context == {
        "grantId": 7,
        "grantStatus": "revoked",
        "occurredAt": NOW,
        "receivedAt": received_at,
        "revokedAt": revoked_at,
    }


@pytest.mark.parametrize(
    ("revocation", "received_at", "label", "expected"),
    [
        # Mined before the receipt: the chain held it; the label "covered" was wrong.
        (
            Revocation(NOW - 1, NOW - 60, NOW + 60),
            NOW,
            "covered",
            ["consent-not-covered", "consent-label-mismatch"],
        ),
        # Ingest saw the revocation itself.
        (Revocation(NOW, NOW - 60, NOW + 60), NOW, "not-covered:revoked", ["consent-not-covered"]),
        # Without the revocation the access was still outside the grant's window.
        (
            Revocation(NOW, NOW - 60, NOW),
            NOW,
            "covered",
            ["consent-not-covered", "consent-label-mismatch"],
        ),
        (
            Revocation(NOW, NOW + 1, NOW + 60),
            NOW,
            "covered",
            ["consent-not-covered", "consent-label-mismatch"],
        ),
    ],
    ids=["revoked-before-receipt", "ingest-saw-it", "expired-too", "not-yet-valid-too"],
)
def test_otherwise_the_access_is_not_covered(
    revocation: Revocation, received_at: int, label: str, expected: list[str]
) -> None:
    findings = _judged_revoked(revocation, received_at=received_at, label=label)
    assert codes(findings) == expected
    assert findings[0].severity == "error"


def test_without_the_receipt_time_a_revocation_is_not_covered() -> None:
    facts = RevokedFacts()  # no revocation fact: it must not be asked
    findings = Auditor(facts).check(access(), consent_label="covered")
    assert codes(findings) == ["consent-not-covered", "consent-label-mismatch"]
    assert ("revocation", 7) not in facts.asked


def test_a_fact_table_answers_revocations_it_holds_and_refuses_others() -> None:
    revocation = Revocation(NOW, NOW - 60, NOW + 60)
    table = FactTable(revocations={7: revocation})
    assert table.grant_revocation(7) == revocation
    with pytest.raises(MissingFact, match="no revocation fact for grant 8"):
        table.grant_revocation(8)
