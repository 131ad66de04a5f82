"""Ingest's consent labels with consent version 2 (issue 17), through ``Ledger.submit``.

The ledger's grant source is swapped for :class:`ledger.chain.consent.CommittedConsent` over a
ConsentRegistryV2 on the same embedded chain: the grants are signed off chain by the patient
and only their commitments are on chain. Every time-aware case of version 1 gives the same
label (``test_ingest``'s consent tests), and a revocation the patient sent straight to the
chain — never through the service — is honoured from its block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from ledger.audit import audit_events
from ledger.chain.consent import CommittedConsent, CommittedConsentFacts
from ledger.events import InstitutionKind, Purpose, RecordAccess
from tests.scripts.support import regulator_chain
from tests.support.consent_v2 import V2
from tests.support.ledgers import Env, open_env, relay_grant, revoke_grant

DAY = 86_400


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Env]:
    with open_env("embedded", "sqlite", tmp_path) as environment:
        yield environment


def test_every_time_aware_case_keeps_its_label(lite: Env) -> None:
    env = lite
    ledger, hospital, pharmacy = env.ledger, env.hospital, env.pharmacy
    patient = env.patient.address
    record, other_record = hospital.record("mrn-1"), hospital.record("mrn-2")
    clinic = env.institution("Other Hospital", InstitutionKind.HOSPITAL)
    v2 = V2(env)
    now = v2.now()
    grants = {
        "valid": v2.grant(pharmacy.address, record, [Purpose.TREATMENT]),
        "revoked": v2.grant(pharmacy.address, record, [Purpose.TREATMENT]),
        "for clinic": v2.grant(clinic.address, record, [Purpose.TREATMENT]),
        "other scope": v2.grant(pharmacy.address, other_record, [Purpose.TREATMENT]),
        "every record": v2.grant(pharmacy.address, bytes(32), [Purpose.TREATMENT]),
        "later": v2.grant(
            pharmacy.address,
            record,
            [Purpose.TREATMENT],
            not_before=now + DAY,
            expires_at=now + 2 * DAY,
        ),
        "forged": v2.grant(pharmacy.address, record, [Purpose.TREATMENT], signer=Account.create()),
    }
    ids = dict(zip(grants, v2.commit(*grants.values()), strict=True))
    v2.revoke_on_chain(grants["revoked"])

    def by_pharmacy(name: str | int, **kw: Any) -> RecordAccess:
        grant_id = ids[name] if isinstance(name, str) else name
        return pharmacy.access(
            record,
            patient,
            custodian=hospital.address,
            grantId=grant_id,
            occurredAt=ledger.chain.latest_timestamp(),
            **kw,
        )

    cases = [
        (by_pharmacy("valid"), "covered"),
        (by_pharmacy("every record"), "covered"),
        (by_pharmacy("revoked"), "not-covered:revoked"),
        (by_pharmacy("for clinic"), "not-covered:wrong-grantee"),
        (by_pharmacy("other scope"), "not-covered:out-of-scope"),
        (by_pharmacy("valid", purpose=Purpose.RESEARCH), "not-covered:purpose-not-covered"),
        (by_pharmacy("later"), "not-covered:not-yet-valid"),
        (by_pharmacy("forged"), "not-covered:invalid-signature"),
        (by_pharmacy(10_000), "not-covered:not-found"),
        (hospital.access(record, patient, grantId=ids["for clinic"]), "custodian"),
    ]
    signed = [
        hospital.sign(event) if event.institution == hospital.address else pharmacy.sign(event)
        for event, _ in cases
    ]
    receipts = ledger.submit(signed)
    assert [r.consent for r in receipts] == [label for _, label in cases]
    for event, label in cases:
        assert ledger.event(event.eventId).consent == label

    # The regulator's rules, judging the same events from the chain (its own reader; version-1
    # grant ids, such as 10,000, by the deployment's ConsentRegistry) and the signed grants,
    # report each access ingest did not call covered, with the same reason, and agree with
    # every label the operator stored.
    assert isinstance(ledger.ingestor.grants, CommittedConsent)
    facts = CommittedConsentFacts(regulator_chain(env), ledger.ingestor.grants)
    labels = {event.eventId: ledger.event(event.eventId).consent for event, _ in cases}
    findings = audit_events([event for event, _ in cases], facts, consent_labels=labels)
    assert [(f.event_id, f.code, f.context.get("grantStatus")) for f in findings] == [
        (event.eventId, "consent-not-covered", label.split(":")[1])
        for event, label in cases
        if label.startswith("not-covered:")
    ]


def test_an_access_after_its_grant_expired_is_not_covered(lite: Env) -> None:
    env = lite
    ledger, hospital, pharmacy = env.ledger, env.hospital, env.pharmacy
    record = hospital.record("mrn-1")
    v2 = V2(env)
    grant = v2.grant(pharmacy.address, record, [Purpose.TREATMENT], expires_at=v2.now() + 30)
    [grant_id] = v2.commit(grant)

    def access() -> RecordAccess:
        return pharmacy.access(
            record,
            env.patient.address,
            custodian=hospital.address,
            grantId=grant_id,
            occurredAt=ledger.chain.latest_timestamp(),
        )

    before = access()
    assert ledger.tester is not None
    ledger.tester.time_travel(grant.expires_at + 5)
    after = access()
    receipts = ledger.submit([pharmacy.sign(before), pharmacy.sign(after)])
    assert [r.consent for r in receipts] == ["covered", "not-covered:expired"]


def test_a_grant_not_yet_committed_covers_nothing(lite: Env) -> None:
    env = lite
    ledger, hospital, pharmacy = env.ledger, env.hospital, env.pharmacy
    record = hospital.record("mrn-1")
    v2 = V2(env)
    grant = v2.grant(pharmacy.address, record, [Purpose.TREATMENT])
    grant_id = v2.book.add(grant)  # the service holds it; the chain does not (yet)
    event = pharmacy.access(
        record,
        env.patient.address,
        custodian=hospital.address,
        grantId=grant_id,
        occurredAt=ledger.chain.latest_timestamp(),
    )
    assert ledger.submit([pharmacy.sign(event)])[0].consent == "not-covered:not-found"


def test_a_version_1_grant_is_still_judged_by_version_1(lite: Env) -> None:
    """Migration: the deployment's existing grants (small counters) stay judged where they
    are, while new grants are version 2's."""
    env = lite
    ledger, hospital, pharmacy = env.ledger, env.hospital, env.pharmacy
    record = hospital.record("mrn-1")
    old = relay_grant(env, pharmacy.address, record, [Purpose.TREATMENT])
    revoked_old = relay_grant(env, pharmacy.address, record, [Purpose.TREATMENT])
    revoke_grant(env, revoked_old)
    v2 = V2(env)
    [new] = v2.commit(v2.grant(pharmacy.address, record, [Purpose.TREATMENT]))
    events = [
        pharmacy.access(
            record,
            env.patient.address,
            custodian=hospital.address,
            grantId=grant_id,
            occurredAt=ledger.chain.latest_timestamp(),
        )
        for grant_id in (old, revoked_old, new)
    ]
    receipts = ledger.submit([pharmacy.sign(e) for e in events])
    assert [r.consent for r in receipts] == ["covered", "not-covered:revoked", "covered"]
