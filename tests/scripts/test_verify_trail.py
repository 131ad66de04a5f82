"""scripts/verify_trail.py in process, on the embedded chain: a clean trail verifies with no
findings, and each tampering of issue 6's list is found from the chain and the bundles alone.

Accesses under bad grants go through ingest (it records them with their consent status);
what ingest refuses is written straight into the store, as a malicious operator would.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ledger.events import InstitutionKind
from ledger.verify import FindingCode
from scripts import verify_trail
from scripts._api import TrailOut
from scripts._common import Report, ToolError
from tests.scripts.support import (
    Story,
    advance_chain,
    anchor,
    api_of,
    chain_now,
    delete_event,
    export_trail,
    granted_read,
    h,
    insert_event,
    regulator_chain,
    rewrite_body,
    swap_leaves,
)
from tests.support.actors import Institution
from tests.support.ledgers import Env, relay_grant, revoke_grant


def verify(env: Env, record: bytes, **kw: Any) -> Report:
    trail = TrailOut.model_validate(export_trail(env.ledger, record))
    options: dict[str, Any] = {"now": int(time.time()), "operator": env.ledger.operator.address}
    return verify_trail.verify(record, trail, regulator_chain(env), **{**options, **kw})


def errors(report: Report) -> list[str]:
    return sorted({str(f.code) for f in report.errors})


def test_a_clean_trail_verifies_with_nothing_wrong(storied: tuple[Env, Story]) -> None:
    env, story = storied
    report = verify(env, story.record)
    assert report.ok
    assert report.exit_status == 0
    assert len(report.events) == len(story.events)
    assert all(line.anchored_in == len(story.events) for line in report.events)
    # The only finding: the emergency access, listed for review.
    assert [(str(f.code), f.severity) for f in report.findings] == [("emergency-access", "review")]
    assert report.findings[0].event_id == story.events[-1].event_id


def test_a_row_changed_in_the_database_is_found(storied: tuple[Env, Story]) -> None:
    env, story = storied
    claim = story.events[4].event
    rewrite_body(env.ledger, claim, amount=99_00)  # inflate the claim behind the service's back
    report = verify(env, story.record)
    assert not report.ok
    line = next(line for line in report.events if line.event_id == claim.eventId)
    assert {str(f.code) for f in line.findings} >= {
        FindingCode.DIGEST_MISMATCH,
        FindingCode.SIGNER_MISMATCH,
        FindingCode.INCLUSION_INVALID,
    }
    inclusion = next(f for f in line.findings if f.code == FindingCode.INCLUSION_INVALID)
    assert "changed after it was logged" in inclusion.detail
    others = [line for line in report.events if line.event_id != claim.eventId]
    assert not [f for line in others for f in line.findings if f.severity == "error"]


def test_an_exported_trail_is_complete_as_of_its_checkpoint(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    """Verified later, after another checkpoint: an archived file is proven complete as of
    its own checkpoint (a warning says the chain moved on); the same answer served now by the
    API would be a trail from an older copy of the log (an error)."""
    env, story = storied
    exported = export_trail(env.ledger, story.record)
    other = env.hospital.record("mrn-later")
    env.ledger.submit([env.hospital.sign(env.hospital.access(other, env.patient.address))])
    anchor(env.ledger)
    trail = TrailOut.model_validate(exported)
    options: dict[str, Any] = {"now": int(time.time()), "operator": env.ledger.operator.address}
    kept = verify_trail.verify(story.record, trail, regulator_chain(env), archived=True, **options)
    assert kept.ok
    assert [f.severity for f in kept.findings_of("trail-as-of")] == ["warning"]
    served = verify_trail.verify(story.record, trail, regulator_chain(env), **options)
    assert errors(served) == ["trail-outdated"]


def test_one_page_of_a_trail_is_not_taken_for_the_trail(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    page = {**export_trail(env.ledger, story.record), "next": 3}
    path = tmp_path / "page.json"
    path.write_text(json.dumps(page))
    with pytest.raises(ToolError, match="holds one page of the trail"):
        verify_trail.load_bundle_file(path)


def test_an_event_deleted_from_the_trail_breaks_what_refers_to_it(
    storied: tuple[Env, Story],
) -> None:
    env, story = storied
    delete_event(env.ledger, story.prescription.eventId)
    report = verify(env, story.record)
    # The dispense names a prescription the trail lacks, and the index on chain lists it.
    assert errors(report) == ["prescription-unknown", "trail-incomplete"]


def test_an_event_never_signed_by_its_institution_is_found(storied: tuple[Env, Story]) -> None:
    env, story = storied
    forger = Institution("Forger", InstitutionKind.HOSPITAL, env.ledger.domain)
    fake = env.hospital.access(
        story.record, env.patient.address, action=3, occurredAt=chain_now(env)
    )  # an "export" the hospital never did, signed with another key
    signed = forger.sign(fake)
    insert_event(env.ledger, signed, consent="custodian")
    anchor(env.ledger)
    report = verify(env, story.record)
    assert errors(report) == [FindingCode.SIGNER_MISMATCH]
    assert report.errors[0].event_id == fake.eventId
    assert report.errors[0].context["institution"] == env.hospital.address


def test_a_signature_by_an_unregistered_institution_is_found(storied: tuple[Env, Story]) -> None:
    env, story = storied
    rogue = Institution("Rogue", InstitutionKind.HOSPITAL, env.ledger.domain)  # not registered
    event = rogue.access(story.record, env.patient.address, custodian=env.hospital.address)
    event = event.model_copy(update={"reasonHash": h("curious"), "occurredAt": chain_now(env)})
    insert_event(env.ledger, rogue.sign(event), consent="emergency")
    anchor(env.ledger)
    report = verify(env, story.record)
    assert errors(report) == ["institution-unregistered"]
    assert report.errors[0].event_id == event.eventId


def test_a_signature_by_a_suspended_institution_is_found(storied: tuple[Env, Story]) -> None:
    env, story = storied
    env.ledger.suspend_institution(env.pharmacy.address)
    suspended_at = env.ledger.chain.institution(env.pharmacy.address)  # the registry's view
    assert not suspended_at.active
    fill = env.pharmacy.dispense(story.prescription, fill=2, occurredAt=chain_now(env) + 1)
    insert_event(env.ledger, env.pharmacy.sign(fill), record_ref=story.record)
    anchor(env.ledger)
    report = verify(env, story.record)
    assert errors(report) == ["institution-suspended"]
    assert report.errors[0].event_id == fill.eventId
    # The pharmacy's events from before its suspension stay good.
    before = [line for line in report.events if line.event.occurredAt < fill.occurredAt]
    assert not [f for line in before for f in line.findings if f.severity == "error"]


def _access_under(env: Env, story: Story, grant_id: int, **kw: Any) -> bytes:
    """The pharmacy reads (through ingest) under ``grant_id``; returns the event id."""
    fields: dict[str, Any] = {
        "custodian": env.hospital.address,
        "grantId": grant_id,
        "occurredAt": chain_now(env) + 1,
    }
    event = env.pharmacy.access(story.record, env.patient.address, **{**fields, **kw})
    receipt = env.ledger.submit([env.pharmacy.sign(event)])[0]
    assert receipt.consent.startswith("not-covered")  # ingest records it, flagged
    anchor(env.ledger)
    return event.eventId


@pytest.mark.parametrize("reason", ["revoked", "expired", "wrong-grantee", "out-of-scope"])
def test_an_access_under_a_grant_that_did_not_cover_it_is_found(
    storied: tuple[Env, Story], reason: str
) -> None:
    env, story = storied
    if reason == "revoked":
        grant_id = relay_grant(env, env.pharmacy.address, story.record)
        revoke_grant(env, grant_id)
        event_id = _access_under(env, story, grant_id)
    elif reason == "expired":
        # Dated after the expiry: no race with the block time the grant is created at.
        grant_id = relay_grant(env, env.pharmacy.address, story.record, lifetime=60)
        expires_at = env.ledger.grant(grant_id).expires_at
        event_id = _access_under(env, story, grant_id, occurredAt=expires_at)
    elif reason == "wrong-grantee":
        grant_id = relay_grant(env, env.insurer.address, story.record)  # not the pharmacy's
        event_id = _access_under(env, story, grant_id)
    else:
        other_record = env.hospital.record("mrn-other")
        grant_id = relay_grant(env, env.pharmacy.address, other_record)  # another record
        event_id = _access_under(env, story, grant_id)
    report = verify(env, story.record)
    assert errors(report) == ["consent-not-covered"]
    (finding,) = report.errors
    assert finding.event_id == event_id
    assert finding.context["grantStatus"] == reason
    assert finding.context["grantId"] == grant_id


def test_an_event_anchored_long_after_its_date_is_backdated(storied: tuple[Env, Story]) -> None:
    env, story = storied
    # An access dated 100 s before it reaches the log (the operator lets it in, unchecked).
    advance_chain(env, chain_now(env) + 200)
    old = env.hospital.access(story.record, env.patient.address, occurredAt=chain_now(env) - 100)
    insert_event(env.ledger, env.hospital.sign(old), consent="custodian")
    anchor(env.ledger)
    report = verify(env, story.record, max_backdate=30, max_merge_delay=30)
    assert errors(report) == ["backdated"]
    (finding,) = report.errors
    assert finding.event_id == old.eventId
    assert finding.context["occurredAt"] == old.occurredAt
    # Within the windows the service runs with (a day, an hour), nothing is wrong.
    assert verify(env, story.record).ok


def test_an_access_anchored_after_its_grant_was_revoked_is_for_review(
    storied: tuple[Env, Story],
) -> None:
    env, story = storied
    grant_id = relay_grant(env, env.pharmacy.address, story.record)
    read = granted_read(env, story.record, grant_id, chain_now(env) + 1)
    assert env.ledger.submit([env.pharmacy.sign(read)])[0].consent == "covered"
    advance_chain(env, read.occurredAt + 5)
    revoke_grant(env, grant_id)  # after the access happened, before it is anchored
    anchor(env.ledger)
    report = verify(env, story.record)
    assert report.ok, [(f.code, f.detail) for f in report.errors]  # covered at occurredAt...
    review = [f for f in report.findings if f.code == "access-logged-after-grant-end"]
    assert [(f.event_id, f.severity) for f in review] == [(read.eventId, "review")]  # ...but seen
    assert review[0].context["grantStatusWhenAnchored"] == "revoked"


def test_custody_taken_behind_the_services_back_is_found(storied: tuple[Env, Story]) -> None:
    env, story = storied
    # The pharmacy names itself the custodian of the hospital's record.
    taken = env.pharmacy.access(
        story.record,
        env.patient.address,
        custodian=env.pharmacy.address,
        reasonHash=h("mine now"),
        occurredAt=chain_now(env) + 1,
    )
    insert_event(env.ledger, env.pharmacy.sign(taken), consent="custodian")
    anchor(env.ledger)
    report = verify(env, story.record)
    assert errors(report) == ["custodian-mismatch", "custodian-not-hospital"]
    assert {f.event_id for f in report.errors} == {taken.eventId}


def test_a_dispense_beyond_the_fills_is_found(storied: tuple[Env, Story]) -> None:
    env, story = storied  # fills=2, fill 1 dispensed
    now = chain_now(env)
    second = env.pharmacy.dispense(story.prescription, fill=2, occurredAt=now + 1)
    third = env.pharmacy.dispense(story.prescription, fill=3, occurredAt=now + 2)
    env.ledger.submit([env.pharmacy.sign(second)])
    insert_event(env.ledger, env.pharmacy.sign(third), record_ref=story.record)  # ingest refuses
    anchor(env.ledger)
    report = verify(env, story.record)
    assert errors(report) == ["fills-exceeded"]
    assert report.errors[0].event_id == third.eventId


def test_a_double_payment_is_found(storied: tuple[Env, Story]) -> None:
    env, story = storied
    claim = story.events[4].event
    again = env.insurer.payment(claim, amount=5_00, occurredAt=chain_now(env) + 1)  # type: ignore[arg-type]
    insert_event(env.ledger, env.insurer.sign(again), record_ref=story.record)
    anchor(env.ledger)
    report = verify(env, story.record)
    assert errors(report) == ["claim-already-paid"]
    assert report.errors[0].event_id == again.eventId


def test_served_events_that_do_not_match_the_anchored_root_are_found(
    storied: tuple[Env, Story],
) -> None:
    env, story = storied
    swap_leaves(env.ledger, 1, 3)  # genuine events, served at each other's place
    report = verify(env, story.record)
    # Neither is where the chain's root has it; the operator's receipts name other leaves;
    # and served in that order, the dispense comes before its prescription.
    assert errors(report) == [
        FindingCode.INCLUSION_INVALID,
        "prescription-unknown",
        FindingCode.RECEIPT_INVALID,
    ]
    inclusion = report.findings_of(FindingCode.INCLUSION_INVALID)
    assert {f.event_id for f in inclusion} == {
        story.events[1].event_id,
        story.events[3].event_id,
    }


def test_a_bundle_proved_against_a_checkpoint_the_chain_lacks_is_found(
    storied: tuple[Env, Story],
) -> None:
    env, story = storied
    exported = export_trail(env.ledger, story.record)
    bogus = exported["events"][0]["bundle"]
    bogus["checkpoint"]["treeSize"] = 3  # the chain only has size 7
    bogus["treeSize"] = 3
    trail = TrailOut.model_validate(exported)
    report = verify_trail.verify(story.record, trail, regulator_chain(env), now=int(time.time()))
    assert errors(report) == ["checkpoint-not-on-chain"]


def test_the_bundles_root_is_never_trusted(storied: tuple[Env, Story]) -> None:
    env, story = storied
    exported = export_trail(env.ledger, story.record)
    # A bundle carrying a root of its own making, for a proof that verifies against it.
    bundle = exported["events"][0]["bundle"]
    bundle["checkpoint"]["rootHash"] = "0x" + h("made up").hex()
    report = verify_trail.verify(
        story.record, TrailOut.model_validate(exported), regulator_chain(env), now=int(time.time())
    )
    assert errors(report) == [FindingCode.CHECKPOINT_MISMATCH]


def test_an_event_not_anchored_past_the_merge_delay_is_found(storied: tuple[Env, Story]) -> None:
    env, story = storied
    late = env.hospital.access(story.record, env.patient.address, occurredAt=chain_now(env))
    env.ledger.submit([env.hospital.sign(late)])  # never anchored
    in_time = verify(env, story.record)
    assert in_time.ok
    assert "pending" in in_time.codes
    overdue = verify(env, story.record, now=int(time.time()) + 7200, max_merge_delay=3600)
    assert errors(overdue) == [FindingCode.NOT_ANCHORED_IN_TIME]


def test_the_trail_of_another_record_is_found(storied: tuple[Env, Story]) -> None:
    env, story = storied
    other = env.hospital.record("mrn-elsewhere")
    env.ledger.submit(
        [
            env.hospital.sign(
                env.hospital.access(other, env.patient.address, occurredAt=chain_now(env))
            )
        ]
    )
    anchor(env.ledger)
    trail = TrailOut.model_validate(export_trail(env.ledger, other))
    report = verify_trail.verify(story.record, trail, regulator_chain(env), now=int(time.time()))
    assert "trail-record-mismatch" in errors(report)


def test_the_trail_served_by_the_api_verifies(storied: tuple[Env, Story]) -> None:
    env, story = storied
    with api_of(env) as api:
        report = verify_trail.verify_from_api(
            story.record, api, regulator_chain(env), now=int(time.time())
        )
    assert report.ok
    assert len(report.events) == len(story.events)
    assert report.subject["source"] == "http://testserver"


def test_an_api_naming_other_contracts_is_found(storied: tuple[Env, Story]) -> None:
    env, story = storied
    deployment = env.ledger.deployment
    # not the AuditLog the regulator trusts
    elsewhere = deployment.model_copy(update={"audit_log": env.hospital.address})
    trail = TrailOut.model_validate(export_trail(env.ledger, story.record))
    report = verify_trail.verify(
        story.record, trail, regulator_chain(env), now=int(time.time()), served_deployment=elsewhere
    )
    assert errors(report) == ["deployment-mismatch"]
    assert report.errors[0].context["auditLog"]["api"] == env.hospital.address
