"""Validation at ingest (issue 3), through ``Ledger.submit``: the real store, the real chain.

Every refusal is a distinct, documented error, and a refused batch stores nothing: each
refusal below checks the error's type (hence its ``code``) *and* that the log, the record
facts and the ingest counter are exactly as they were. Accesses that consent does not cover
are recorded, never refused, and carry their exact consent label.

Checks that depend on the log (references, duplicates, batches, concurrency) run on SQLite
and PostgreSQL; checks that depend only on the event and the chain run on SQLite. The chain
is the embedded one throughout (``test_flow`` covers anvil).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select, text

from ledger import ingest as ingest_module
from ledger import merkle, rules
from ledger.chain.model import ChainError
from ledger.eip712 import SECP256K1_N, recover, sign_digest
from ledger.errors import LedgerError, ProofError, SignatureError
from ledger.events import (
    EventBase,
    InstitutionKind,
    InsuranceClaim,
    Purpose,
    SignedEvent,
    audit_log_domain,
)
from ledger.ingest import (
    BatchRejected,
    BatchTooLarge,
    EmptyBatch,
    HiddenConflict,
    Ingestor,
    Receipt,
    _Loaded,
)
from ledger.logstate import LogState
from ledger.service import Ledger
from ledger.store.models import IngestCounter, RecordRow
from ledger.verify import receipt_digest, verify_bundle
from tests.support.actors import Institution, Patient, new_event_id
from tests.support.ledgers import Env, open_env, relay_grant, revoke_grant

STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

_RECORDS = RecordRow.__table__  # type: ignore[attr-defined]
_COUNTER = IngestCounter.__table__  # type: ignore[attr-defined]


@pytest.fixture(params=STORES)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """A fresh ledger on the embedded chain, on each store backend."""
    with open_env("embedded", request.param, tmp_path) as environment:
        yield environment


@pytest.fixture(params=STORES)
def cached_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """:func:`env` whose institution look-ups are cached a minute (no registration changes in
    the test): a large batch then asks the embedded chain once per institution, not per event."""
    with open_env("embedded", request.param, tmp_path, institution_cache_ttl=60.0) as environment:
        yield environment


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Env]:
    """A fresh ledger on the embedded chain and SQLite (checks that do not depend on the store)."""
    with open_env("embedded", "sqlite", tmp_path) as environment:
        yield environment


# --------------------------------------------------------------------------- helpers


def log_state(ledger: Ledger) -> tuple[Any, ...]:
    """Everything ingest writes: the log entries, the record facts, the next leaf index."""
    entries = [tuple(row) for row in ledger.entries(0, 10_000)]
    with ledger.store.read() as connection:
        records = sorted(tuple(row) for row in connection.execute(select(_RECORDS)))
        counter = connection.execute(select(_COUNTER.c.next_index)).scalar_one()
    return entries, records, counter


def refuse(
    ledger: Ledger, batch: Sequence[SignedEvent], expected: dict[int, type[LedgerError]]
) -> BatchRejected:
    """Submit ``batch``, expect exactly the refusals ``expected`` (index -> error type), and
    check that nothing at all was stored."""
    before = log_state(ledger)
    with pytest.raises(BatchRejected) as info:
        ledger.submit(batch)
    rejected = info.value
    assert {i: type(e) for i, e in rejected.failures.items()} == expected, rejected.diagnostics()
    errors = rejected.diagnostics()["errors"]
    assert [(e["index"], e["code"]) for e in errors] == [
        (i, cls.code) for i, cls in sorted(expected.items())
    ]
    assert log_state(ledger) == before
    return rejected


def refuse_withheld(
    ledger: Ledger, batch: Sequence[SignedEvent], expected: dict[int, type[LedgerError]]
) -> HiddenConflict:
    """Submit ``batch``, expect the one uniform ``log-conflict`` refusal that names no event and
    discloses nothing of what the submitter may not see, while the real refusals (``expected``,
    index -> error type) are withheld for the operator; check that nothing was stored."""
    before = log_state(ledger)
    with pytest.raises(HiddenConflict) as info:
        ledger.submit(batch)
    rejected = info.value
    assert {i: type(e) for i, e in rejected.withheld.items()} == expected
    document = rejected.diagnostics()
    assert document["code"] == "batch-rejected"
    assert [e["code"] for e in document["errors"]] == ["log-conflict"]
    assert "index" not in document["errors"][0]
    assert rejected.status == 409
    # Nothing the withheld refusals say reaches the submitter.
    for error in rejected.withheld.values():
        assert error.detail not in str(document)
    assert log_state(ledger) == before
    return rejected


def withheld_one(ledger: Ledger, signed: SignedEvent, error: type[LedgerError]) -> LedgerError:
    """A batch of one event, refused as ``log-conflict`` for ``error`` (withheld)."""
    return refuse_withheld(ledger, [signed], {0: error}).withheld[0]


def refuse_one(ledger: Ledger, signed: SignedEvent, error: type[LedgerError]) -> LedgerError:
    """A batch of one event, refused with ``error``; returns that error."""
    rejected = refuse(ledger, [signed], {0: error})
    assert rejected.status == error.status  # a single refusal reports its own status
    return rejected.failures[0]


def accept(ledger: Ledger, *signed: SignedEvent) -> list[Receipt]:
    receipts = ledger.submit(list(signed))
    assert not any(r.duplicate for r in receipts)
    return receipts


def high_s(signature: bytes) -> bytes:
    """The malleable twin of a valid signature: (r, n - s, flipped v) recovers the same key."""
    s = int.from_bytes(signature[32:64], "big")
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((55 - signature[64],))


def with_signature(signed: SignedEvent, signature: bytes) -> SignedEvent:
    return SignedEvent(type=signed.type, event=signed.event, signature=signature)


def stored_consent(ledger: Ledger, event: EventBase) -> str:
    return ledger.event(event.eventId).consent


# --------------------------------------------------------------------------- schema


def test_unknown_types_and_malformed_fields_are_refused_by_the_model() -> None:
    domain = audit_log_domain(31337, "0x" + "11" * 20)
    hospital = Institution("H", InstitutionKind.HOSPITAL, domain)
    patient = Patient().address
    good = hospital.sign(hospital.access(hospital.record("mrn-1"), patient)).model_dump(mode="json")
    assert SignedEvent.model_validate(good).event.eventId.hex() == good["event"]["eventId"][2:]

    def event_with(**changes: Any) -> dict[str, Any]:
        return {**good, "event": {**good["event"], **changes}}

    missing = {**good, "event": {k: v for k, v in good["event"].items() if k != "occurredAt"}}
    malformed: dict[str, dict[str, Any]] = {
        "unknown type": {**good, "type": "LabResult"},
        "no type": {k: v for k, v in good.items() if k != "type"},
        "type of another event": {**good, "type": "PrescriptionIssued"},
        "missing field": missing,
        "extra field": event_with(note="hello"),
        "short bytes32": event_with(recordRef="0x1234"),
        "non-hex bytes32": event_with(actor="0x" + "zz" * 32),
        "zero eventId": event_with(eventId="0x" + "00" * 32),
        "bad address": event_with(custodian="0x1234"),
        "zero address": event_with(patient="0x" + "00" * 20),
        "integer as string": event_with(grantId="0"),
        "boolean as integer": event_with(action=True),
        "unknown action": event_with(action=9),
        "unknown purpose": event_with(purpose=42),
        "occurredAt zero": event_with(occurredAt=0),
        "occurredAt beyond uint64": event_with(occurredAt=2**64),
        "short signature": {**good, "signature": good["signature"][:-2]},
        "extra top-level field": {**good, "receivedAt": 1},
    }
    for name, document in malformed.items():
        try:
            SignedEvent.model_validate(document)
        except ValidationError:
            continue
        pytest.fail(f"{name} was accepted")


# --------------------------------------------------------------------------- signatures


def test_a_signature_by_another_key_is_a_signer_mismatch(lite: Env) -> None:
    ledger, hospital, pharmacy = lite.ledger, lite.hospital, lite.pharmacy
    access = hospital.access(hospital.record("mrn-1"), lite.patient.address)
    forged = pharmacy.sign(access)  # a registered institution signing in another's name
    error = refuse_one(ledger, forged, rules.SignerMismatch)
    assert error.context == {"signer": pharmacy.address, "institution": hospital.address}
    stranger = Institution("Nobody", InstitutionKind.HOSPITAL, ledger.domain)
    refuse_one(ledger, stranger.sign(access), rules.SignerMismatch)
    # Signed under another domain (another chain's AuditLog): recovers to someone else.
    elsewhere = Institution(
        "H",
        InstitutionKind.HOSPITAL,
        audit_log_domain(1, ledger.deployment.audit_log),
        account=hospital.account,
    )
    refuse_one(ledger, elsewhere.sign(access), rules.SignerMismatch)
    accept(ledger, hospital.sign(access))


def test_malformed_and_high_s_signatures_are_invalid_signatures(lite: Env) -> None:
    ledger, hospital = lite.ledger, lite.hospital
    signed = hospital.sign(hospital.access(hospital.record("mrn-1"), lite.patient.address))
    twin = high_s(signed.signature)
    digest = signed.digest(ledger.domain)
    with pytest.raises(SignatureError, match="upper half"):
        recover(digest, twin)
    bad = {
        "high s": twin,
        "v = 0": signed.signature[:64] + b"\x00",
        "v = 29": signed.signature[:64] + b"\x1d",
        "r = 0": bytes(32) + signed.signature[32:],
        "s = n": signed.signature[:32] + SECP256K1_N.to_bytes(32, "big") + b"\x1b",
        "all zero": bytes(65),
    }
    for name, signature in bad.items():
        error = refuse_one(ledger, with_signature(signed, signature), SignatureError)
        assert error.code == "invalid-signature", name
    accept(ledger, signed)


# --------------------------------------------------------------------------- institutions


def test_the_signer_must_be_registered_active_and_of_the_right_kind(lite: Env) -> None:
    ledger, hospital, pharmacy, insurer = lite.ledger, lite.hospital, lite.pharmacy, lite.insurer
    patient = lite.patient.address
    record = hospital.record("mrn-1")

    unknown = lite.institution("Unregistered Clinic", InstitutionKind.HOSPITAL, register=False)
    error = refuse_one(
        ledger, unknown.sign(unknown.access(record, patient)), rules.InstitutionUnregistered
    )
    assert error.status == 403

    # The wrong kind, for each event type (any registered kind may sign a RecordAccess:
    # SIGNER_KINDS lets pharmacies and insurers read records under a grant).
    rx = hospital.prescription(record, patient)
    refuse_one(
        ledger,
        pharmacy.sign(pharmacy.prescription(record, patient)),
        rules.InstitutionWrongKind,
    )
    accept(ledger, hospital.sign(rx))
    refuse_one(ledger, hospital.sign(hospital.dispense(rx)), rules.InstitutionWrongKind)
    fill = pharmacy.dispense(rx)
    accept(ledger, pharmacy.sign(fill))
    refuse_one(
        ledger, insurer.sign(insurer.claim(fill, insurer.address)), rules.InstitutionWrongKind
    )
    claim = pharmacy.claim(fill, insurer.address)
    accept(ledger, pharmacy.sign(claim))
    refuse_one(ledger, pharmacy.sign(pharmacy.payment(claim)), rules.InstitutionWrongKind)

    # Suspended: refused while suspended, accepted again once reinstated.
    ledger.suspend_institution(hospital.address)
    access = hospital.access(record, patient)
    error = refuse_one(ledger, hospital.sign(access), rules.InstitutionSuspended)
    assert error.status == 403
    ledger.reinstate_institution(hospital.address)
    accept(ledger, hospital.sign(access))


def test_occurred_at_may_not_be_beyond_the_allowed_skew(lite: Env) -> None:
    ledger, hospital = lite.ledger, lite.hospital
    record, patient = hospital.record("mrn-1"), lite.patient.address
    skew = ledger.settings.max_future_skew
    late = hospital.access(record, patient, occurredAt=int(time.time()) + skew + 120)
    error = refuse_one(ledger, hospital.sign(late), rules.OccurredInFuture)
    assert error.context["occurred_at"] == late.occurredAt
    # Within the skew (clocks differ a little) is fine.
    accept(
        ledger, hospital.sign(hospital.access(record, patient, occurredAt=int(time.time()) + 60))
    )


def test_occurred_at_may_not_be_older_than_the_backdating_window(tmp_path: Path) -> None:
    with open_env("embedded", "sqlite", tmp_path, max_backdate=600) as env:
        ledger, hospital = env.ledger, env.hospital
        record, patient = hospital.record("mrn-1"), env.patient.address
        old = hospital.access(record, patient, occurredAt=int(time.time()) - 700)
        error = refuse_one(ledger, hospital.sign(old), rules.OccurredTooLongAgo)
        assert error.context["occurred_at"] == old.occurredAt
        assert "600 s" in error.detail
        accept(ledger, hospital.sign(hospital.access(record, patient)))


def test_the_default_backdating_window_is_a_day(lite: Env) -> None:
    assert lite.ledger.settings.max_backdate == 86_400
    ledger, hospital = lite.ledger, lite.hospital
    record, patient = hospital.record("mrn-1"), lite.patient.address
    old = hospital.access(record, patient, occurredAt=int(time.time()) - 86_400 - 60)
    refuse_one(ledger, hospital.sign(old), rules.OccurredTooLongAgo)


def test_an_event_dated_before_its_signer_was_registered_is_refused(lite: Env) -> None:
    ledger, patient = lite.ledger, lite.patient.address
    newcomer = lite.institution("New Hospital", InstitutionKind.HOSPITAL)
    registered_at = ledger.institution(newcomer.address).registered_at
    record = newcomer.record("mrn-1")
    early = newcomer.access(record, patient, occurredAt=registered_at - 1)
    error = refuse_one(ledger, newcomer.sign(early), rules.InstitutionUnregistered)
    assert "at occurredAt" in error.detail
    accept(ledger, newcomer.sign(newcomer.access(record, patient, occurredAt=registered_at)))


def test_an_event_dated_while_its_signer_was_suspended_is_refused(lite: Env) -> None:
    ledger, hospital, patient = lite.ledger, lite.hospital, lite.patient.address
    ledger.suspend_institution(hospital.address)
    suspended_at = ledger.chain.latest_timestamp()
    ledger.reinstate_institution(hospital.address)
    reinstated_at = ledger.chain.latest_timestamp()
    assert reinstated_at > suspended_at
    record = hospital.record("mrn-1")
    during = hospital.access(record, patient, occurredAt=suspended_at)
    # Active now, but not when the event says it happened.
    refuse_one(ledger, hospital.sign(during), rules.InstitutionSuspended)
    accept(ledger, hospital.sign(hospital.access(record, patient, occurredAt=reinstated_at)))


def test_a_claim_to_an_insurer_registered_after_it_is_refused(lite: Env) -> None:
    ledger, hospital, patient = lite.ledger, lite.hospital, lite.patient.address
    visit = hospital.access(hospital.record("mrn-1"), patient)
    accept(ledger, hospital.sign(visit))
    late_insurer = lite.institution("Late Insurer", InstitutionKind.INSURER)
    registered_at = ledger.institution(late_insurer.address).registered_at
    early = hospital.claim(visit, late_insurer.address, occurredAt=registered_at - 1)
    refuse_one(ledger, hospital.sign(early), rules.InsurerNotRegistered)
    accept(ledger, hospital.sign(hospital.claim(visit, late_insurer.address)))


# --------------------------------------------------------------------------- duplicates


def test_resending_an_event_returns_its_original_receipt(env: Env) -> None:
    ledger, hospital = env.ledger, env.hospital
    record, patient = hospital.record("mrn-1"), env.patient.address
    first = hospital.sign(hospital.access(record, patient))
    second = hospital.sign(hospital.access(record, patient, action=2))
    [original] = accept(ledger, first)
    later = original.received_at + 100
    ledger.ingestor.clock = lambda: later  # a new receipt would carry a later receivedAt
    before = log_state(ledger)

    [again] = ledger.submit([first])
    assert again == dataclasses.replace(original, duplicate=True)
    assert log_state(ledger) == before

    # Resent alongside a new event: the new one gets the next leaf, the old its receipt.
    new, old = ledger.submit([second, first])
    assert (new.leaf_index, new.received_at, new.duplicate) == (1, later, False)
    assert old == dataclasses.replace(original, duplicate=True)
    assert [row.event_id for row in ledger.entries(0, 100)] == [
        first.event_id,
        second.event_id,
    ]

    # Same eventId, other content: a conflict (409), not a duplicate.
    changed = hospital.sign(hospital.access(record, patient, eventId=first.event_id, action=3))
    error = refuse_one(ledger, changed, rules.EventIdConflict)
    assert error.status == 409
    assert error.context == {"event_id": "0x" + first.event_id.hex()}

    # The same content resent with someone else's signature is not the institution's event.
    refuse_one(ledger, env.pharmacy.sign(first.event), rules.SignerMismatch)
    refuse_one(ledger, with_signature(first, high_s(first.signature)), SignatureError)

    # After the institution was suspended, its stored events still get their receipts...
    ledger.suspend_institution(hospital.address)
    before = log_state(ledger)
    [again] = ledger.submit([first])
    assert again == dataclasses.replace(original, duplicate=True)
    assert log_state(ledger) == before
    # ...while anything new from it is refused.
    fresh = hospital.sign(hospital.access(record, patient, action=4))
    refuse_one(ledger, fresh, rules.InstitutionSuspended)


def test_resends_the_checks_would_now_refuse_keep_their_receipts_among_new_events(
    env: Env,
) -> None:
    """A resend is looked up only once the checks outside the log refused it (issue 15): in a
    batch with new events, an old event whose occurredAt is now beyond the backdating window
    still gets its original receipt and the new event is stored; the same content under
    another key, and a new event as old, are still refused, at their index."""
    ledger, hospital, other = env.ledger, env.hospital, env.pharmacy
    record, patient = hospital.record("mrn-1"), env.patient.address
    old = hospital.sign(hospital.access(record, patient))
    [original] = accept(ledger, old)
    later = max(original.received_at, old.event.occurredAt) + ledger.ingestor.max_backdate + 600
    ledger.ingestor.clock = lambda: later
    new = hospital.sign(hospital.access(record, patient, action=2, occurredAt=later))
    first, second = ledger.submit([old, new])
    assert first == dataclasses.replace(original, duplicate=True)
    assert (second.leaf_index, second.received_at, second.duplicate) == (1, later, False)
    as_old = hospital.sign(hospital.access(record, patient, occurredAt=old.event.occurredAt))
    refuse(
        ledger,
        [old, other.sign(old.event), as_old],
        {1: rules.SignerMismatch, 2: rules.OccurredTooLongAgo},
    )


def test_a_full_batch_of_new_records_is_stored_and_resent_whole(cached_env: Env) -> None:
    """1,000 events on 1,000 records: the batch's look-ups span several ``IN`` lists."""
    env = cached_env
    ledger, hospital = env.ledger, env.hospital
    people = [Patient() for _ in range(20)]
    batch = [
        hospital.sign(hospital.access(hospital.record(f"mrn-{i}"), people[i % 20].address))
        for i in range(1000)
    ]
    receipts = ledger.submit(batch)
    assert [r.leaf_index for r in receipts] == list(range(1000))
    with ledger.store.read() as connection:
        records = connection.execute(select(_RECORDS.c.record_ref, _RECORDS.c.patient)).all()
    assert {(bytes(ref), patient) for ref, patient in records} == {
        (hospital.record(f"mrn-{i}"), people[i % 20].address) for i in range(1000)
    }
    # Resent whole (plus one new access to a known record): the originals come back.
    more = hospital.sign(hospital.access(hospital.record("mrn-999"), people[999 % 20].address))
    again = ledger.submit([*batch[:999], more])
    assert again[:999] == [dataclasses.replace(r, duplicate=True) for r in receipts[:999]]
    assert (again[999].leaf_index, again[999].duplicate) == (1000, False)
    # A record's patient is checked across the lists too.
    wrong = hospital.sign(hospital.access(hospital.record("mrn-3"), people[4].address))
    refuse(ledger, [*batch[:950], wrong], {950: rules.RecordPatientMismatch})


def test_an_event_twice_in_one_batch_is_stored_once(env: Env) -> None:
    ledger, hospital = env.ledger, env.hospital
    record, patient = hospital.record("mrn-1"), env.patient.address
    event = hospital.sign(hospital.access(record, patient))
    other = hospital.sign(hospital.access(record, patient, action=2))
    a, b, c = ledger.submit([event, other, event])
    assert (a.leaf_index, a.duplicate) == (0, False)
    assert (b.leaf_index, b.duplicate) == (1, False)
    assert c == dataclasses.replace(a, duplicate=True)
    assert [row.event_id for row in ledger.entries(0, 100)] == [event.event_id, other.event_id]
    # Twice in one batch with different content: the second is a conflict.
    third = hospital.access(record, patient)
    clash = hospital.access(record, patient, eventId=third.eventId, action=4)
    refuse(ledger, [hospital.sign(third), hospital.sign(clash)], {1: rules.EventIdConflict})


# --------------------------------------------------------------------------- references


def test_dispense_refusals(env: Env) -> None:
    ledger, hospital, pharmacy = env.ledger, env.hospital, env.pharmacy
    record, patient = hospital.record("mrn-1"), env.patient.address
    now = env.clock()
    rx = hospital.prescription(record, patient, fills=2, occurredAt=now - 100)
    stale = hospital.prescription(record, patient, validUntil=now - 60, occurredAt=now - 100)
    access = hospital.access(record, patient)
    accept(ledger, hospital.sign(rx), hospital.sign(stale), hospital.sign(access))

    # The pharmacy may not see the hospital's prescription: it is told that the dispense
    # cannot be logged, not which of the prescription's facts it contradicts.
    unknown = pharmacy.dispense(rx, prescriptionId=new_event_id())
    withheld_one(ledger, pharmacy.sign(unknown), rules.PrescriptionUnknown)
    not_a_prescription = pharmacy.dispense(rx, prescriptionId=access.eventId)
    withheld_one(ledger, pharmacy.sign(not_a_prescription), rules.PrescriptionUnknown)
    other_patient = pharmacy.dispense(rx, patient=Patient().address)
    withheld_one(ledger, pharmacy.sign(other_patient), rules.PrescriptionPatientMismatch)
    expired = pharmacy.dispense(stale)
    withheld_one(ledger, pharmacy.sign(expired), rules.PrescriptionExpired)
    too_many = pharmacy.dispense(rx, fill=3)
    error = withheld_one(ledger, pharmacy.sign(too_many), rules.FillsExceeded)
    assert error.context == {"fills": 2}
    early = pharmacy.dispense(rx, occurredAt=rx.occurredAt - 1)
    withheld_one(ledger, pharmacy.sign(early), rules.DispenseBeforePrescription)

    accept(ledger, pharmacy.sign(pharmacy.dispense(rx, fill=1)))
    again = pharmacy.dispense(rx, fill=1)
    withheld_one(ledger, pharmacy.sign(again), rules.FillAlreadyDispensed)
    # Within one batch as well.
    second, second_again = pharmacy.dispense(rx, fill=2), pharmacy.dispense(rx, fill=2)
    refuse_withheld(
        ledger,
        [pharmacy.sign(second), pharmacy.sign(second_again)],
        {1: rules.FillAlreadyDispensed},
    )
    accept(ledger, pharmacy.sign(second))
    withheld_one(ledger, pharmacy.sign(pharmacy.dispense(rx, fill=1)), rules.FillAlreadyDispensed)


def test_claim_refusals(env: Env) -> None:
    ledger, hospital, pharmacy, insurer = env.ledger, env.hospital, env.pharmacy, env.insurer
    record, patient = hospital.record("mrn-1"), env.patient.address
    visit = hospital.access(record, patient)
    visit_claim = hospital.claim(visit, insurer.address, amount=100_00)
    payment = insurer.payment(visit_claim)
    rx = hospital.prescription(record, patient)
    accept(
        ledger,
        hospital.sign(visit),
        hospital.sign(visit_claim),
        insurer.sign(payment),
        hospital.sign(rx),
    )

    # An id the log does not hold may be an event the hospital may not see: not said which.
    unknown = hospital.claim(visit, insurer.address, serviceRef=new_event_id())
    error = withheld_one(ledger, hospital.sign(unknown), rules.ServiceUnknown)
    assert error.context == {"service_ref": "0x" + unknown.serviceRef.hex()}
    # The payment names the hospital as payee: the hospital may see it, and is told why.
    of_a_payment = hospital.claim(payment, insurer.address)
    refuse_one(ledger, hospital.sign(of_a_payment), rules.ServiceNotClaimable)
    of_a_claim = hospital.claim(visit_claim, insurer.address)
    refuse_one(ledger, hospital.sign(of_a_claim), rules.ServiceNotClaimable)
    by_another = pharmacy.claim(rx, insurer.address)  # the hospital wrote the prescription
    withheld_one(ledger, pharmacy.sign(by_another), rules.ServiceNotClaimant)
    other_patient = hospital.claim(rx, insurer.address, patient=Patient().address)
    refuse_one(ledger, hospital.sign(other_patient), rules.ServicePatientMismatch)
    second = hospital.claim(visit, insurer.address)
    error = refuse_one(ledger, hospital.sign(second), rules.ServiceAlreadyClaimed)
    assert error.status == 409

    # The insurer must be a registered, active insurer.
    stranger = env.institution("Unregistered Insurer", InstitutionKind.INSURER, register=False)
    to_stranger = hospital.claim(rx, stranger.address)
    error = refuse_one(ledger, hospital.sign(to_stranger), rules.InsurerNotRegistered)
    assert error.context == {"insurer": stranger.address}
    to_a_pharmacy = hospital.claim(rx, pharmacy.address)
    refuse_one(ledger, hospital.sign(to_a_pharmacy), rules.InsurerNotRegistered)
    ledger.suspend_institution(insurer.address)
    refuse_one(
        ledger, hospital.sign(hospital.claim(rx, insurer.address)), rules.InsurerNotRegistered
    )
    ledger.reinstate_institution(insurer.address)

    # Two claims for one service in one batch: the second is refused.
    first, twin = hospital.claim(rx, insurer.address), hospital.claim(rx, insurer.address)
    refuse(ledger, [hospital.sign(first), hospital.sign(twin)], {1: rules.ServiceAlreadyClaimed})
    accept(ledger, hospital.sign(first))


def test_payment_refusals(env: Env) -> None:
    ledger, hospital, insurer = env.ledger, env.hospital, env.insurer
    record, patient = hospital.record("mrn-1"), env.patient.address
    other_insurer = env.institution("Other Insurer", InstitutionKind.INSURER)
    visit = hospital.access(record, patient)
    claim = hospital.claim(visit, insurer.address, amount=80_00)
    accept(ledger, hospital.sign(visit), hospital.sign(claim))

    unknown = insurer.payment(claim, claimId=new_event_id())
    error = withheld_one(ledger, insurer.sign(unknown), rules.ClaimUnknown)
    assert error.context == {"claim_id": "0x" + unknown.claimId.hex()}
    of_a_service = insurer.payment(claim, claimId=visit.eventId)  # not the insurer's to see
    withheld_one(ledger, insurer.sign(of_a_service), rules.ClaimUnknown)
    other_patient = insurer.payment(claim, patient=Patient().address)
    refuse_one(ledger, insurer.sign(other_patient), rules.ClaimPatientMismatch)
    too_much = insurer.payment(claim, amount=80_01)
    error = refuse_one(ledger, insurer.sign(too_much), rules.PaymentExceedsClaim)
    assert error.context == {"paid": 80_01, "claimed": 80_00}
    by_another = other_insurer.payment(claim)  # a claim made to another insurer
    withheld_one(ledger, other_insurer.sign(by_another), rules.PaymentWrongInsurer)
    to_another = insurer.payment(claim, payee=env.pharmacy.address)
    refuse_one(ledger, insurer.sign(to_another), rules.PaymentWrongPayee)

    # Two payments of one claim in one batch: the second is refused, nothing stored.
    one, two = insurer.payment(claim, amount=40_00), insurer.payment(claim, amount=40_00)
    refuse(ledger, [insurer.sign(one), insurer.sign(two)], {1: rules.ClaimAlreadyPaid})

    accept(ledger, insurer.sign(insurer.payment(claim, amount=80_00)))
    error = refuse_one(
        ledger, insurer.sign(insurer.payment(claim, amount=1)), rules.ClaimAlreadyPaid
    )
    assert error.status == 409


# --------------------------------------------------------------------------- consent


def test_accesses_outside_consent_are_recorded_with_their_consent_status(lite: Env) -> None:
    env = lite
    ledger, hospital, pharmacy = env.ledger, env.hospital, env.pharmacy
    patient = env.patient.address
    record, other_record = hospital.record("mrn-1"), hospital.record("mrn-2")
    clinic = env.institution("Other Hospital", InstitutionKind.HOSPITAL)

    def by_pharmacy(grant_id: int, **kw: Any) -> Any:
        return pharmacy.access(
            record,
            patient,
            custodian=hospital.address,
            grantId=grant_id,
            occurredAt=ledger.chain.latest_timestamp(),
            **kw,
        )

    # The custodian's own staff need no grant.
    own = hospital.access(record, patient)
    [receipt] = accept(ledger, hospital.sign(own))
    assert receipt.consent == stored_consent(ledger, own) == "custodian"

    # Another institution with no grant: break-glass, needs a reason, then recorded.
    no_reason = by_pharmacy(0)
    refuse_one(ledger, pharmacy.sign(no_reason), rules.ReasonRequired)
    emergency = by_pharmacy(0, reasonHash=b"\x07" * 32)
    [receipt] = accept(ledger, pharmacy.sign(emergency))
    assert receipt.consent == stored_consent(ledger, emergency) == "emergency"

    valid = relay_grant(env, pharmacy.address, record, [Purpose.TREATMENT])
    revoked = relay_grant(env, pharmacy.address, record, [Purpose.TREATMENT])
    revoke_grant(env, revoked)
    for_clinic = relay_grant(env, clinic.address, record, [Purpose.TREATMENT])
    other_scope = relay_grant(env, pharmacy.address, other_record, [Purpose.TREATMENT])
    every_record = relay_grant(env, pharmacy.address, bytes(32), [Purpose.TREATMENT])

    cases = [
        (by_pharmacy(valid), "covered"),
        (by_pharmacy(every_record), "covered"),
        (by_pharmacy(revoked), "not-covered:revoked"),
        (by_pharmacy(for_clinic), "not-covered:wrong-grantee"),
        (by_pharmacy(other_scope), "not-covered:out-of-scope"),
        (by_pharmacy(valid, purpose=Purpose.RESEARCH), "not-covered:purpose-not-covered"),
        (by_pharmacy(10_000), "not-covered:not-found"),
        # A grant named by the custodian's own staff is irrelevant: custodian.
        (hospital.access(record, patient, grantId=for_clinic), "custodian"),
    ]
    signed = [
        hospital.sign(event) if event.institution == hospital.address else pharmacy.sign(event)
        for event, _ in cases
    ]
    receipts = accept(ledger, *signed)
    assert [r.consent for r in receipts] == [label for _, label in cases]
    for event, label in cases:
        assert stored_consent(ledger, event) == label
        assert rules.ConsentFinding.parse(label).label == label
    # A grant with a reasonHash too is still judged by its grant.
    also_reason = by_pharmacy(revoked, reasonHash=b"\x01" * 32)
    assert accept(ledger, pharmacy.sign(also_reason))[0].consent == "not-covered:revoked"


def test_an_access_after_its_grant_expired_is_recorded_as_not_covered(lite: Env) -> None:
    env = lite
    ledger, hospital, pharmacy = env.ledger, env.hospital, env.pharmacy
    patient, record = env.patient.address, hospital.record("mrn-1")
    grant_id = relay_grant(env, pharmacy.address, record, [Purpose.TREATMENT], lifetime=30)
    expires_at = ledger.grant(grant_id).expires_at
    before = pharmacy.access(
        record,
        patient,
        custodian=hospital.address,
        grantId=grant_id,
        occurredAt=ledger.chain.latest_timestamp(),
    )
    assert ledger.tester is not None
    ledger.tester.time_travel(expires_at + 5)
    after = pharmacy.access(
        record,
        patient,
        custodian=hospital.address,
        grantId=grant_id,
        occurredAt=ledger.chain.latest_timestamp(),
    )
    assert after.occurredAt >= expires_at
    receipts = accept(ledger, pharmacy.sign(before), pharmacy.sign(after))
    assert [r.consent for r in receipts] == ["covered", "not-covered:expired"]


# --------------------------------------------------------------------------- records


def test_a_records_events_agree_on_its_custodian_and_patient(env: Env) -> None:
    ledger, hospital = env.ledger, env.hospital
    patient, someone_else = env.patient.address, Patient().address
    clinic = env.institution("Other Hospital", InstitutionKind.HOSPITAL)
    record = hospital.record("mrn-1")
    accept(ledger, hospital.sign(hospital.access(record, patient)))

    # Another hospital claiming to hold the record: refused, without being told who holds it.
    theirs = clinic.access(record, patient)  # custodian = the clinic itself
    error = withheld_one(ledger, clinic.sign(theirs), rules.CustodianMismatch)
    assert error.context["custodian"] == hospital.address
    # The record belongs to one patient, whoever names it.
    refuse_one(
        ledger,
        hospital.sign(hospital.access(record, someone_else)),
        rules.RecordPatientMismatch,
    )
    refuse_one(
        ledger,
        hospital.sign(hospital.prescription(record, someone_else)),
        rules.RecordPatientMismatch,
    )
    # Inside one batch: a new record's first access fixes its custodian for the rest.
    fresh = hospital.record("mrn-2")
    refuse(
        ledger,
        [
            hospital.sign(hospital.access(fresh, patient)),
            clinic.sign(clinic.access(fresh, patient)),
            hospital.sign(hospital.access(fresh, someone_else)),
        ],
        {1: rules.CustodianMismatch, 2: rules.RecordPatientMismatch},
    )

    # A record first seen through a prescription is held by the hospital that prescribed:
    # nobody else can name themselves custodian (issue 12: custody could be taken).
    rx_record = hospital.record("mrn-3")
    accept(ledger, hospital.sign(hospital.prescription(rx_record, patient)))
    withheld_one(ledger, clinic.sign(clinic.access(rx_record, patient)), rules.CustodianMismatch)
    for taker in (env.pharmacy, env.insurer):  # not even a hospital: refused before the log
        refuse_one(ledger, taker.sign(taker.access(rx_record, patient)), rules.CustodianNotHospital)
    accept(ledger, hospital.sign(hospital.access(rx_record, patient)))
    accept(
        ledger,
        clinic.sign(
            clinic.access(rx_record, patient, custodian=hospital.address, reasonHash=b"\x01" * 32)
        ),
    )
    assert ledger.record_parties(rx_record).custodian == hospital.address  # type: ignore[union-attr]


def test_only_a_hospital_holds_records(env: Env) -> None:
    ledger, pharmacy, insurer = env.ledger, env.pharmacy, env.insurer
    patient = env.patient.address
    for taker in (pharmacy, insurer):
        # A new record's first access would make a pharmacy or an insurer its custodian.
        own = taker.access(taker.record("mrn-1"), patient)
        error = refuse_one(ledger, taker.sign(own), rules.CustodianNotHospital)
        assert error.context == {"custodian": taker.address}
        # Naming another non-hospital as custodian is no better.
        other = env.pharmacy if taker is insurer else insurer
        named = taker.access(taker.record("mrn-2"), patient, custodian=other.address)
        refuse_one(ledger, taker.sign(named), rules.CustodianNotHospital)
    unregistered = env.institution("Ghost Hospital", InstitutionKind.HOSPITAL, register=False)
    ghost = env.hospital.access(
        env.hospital.record("mrn-3"), patient, custodian=unregistered.address
    )
    refuse_one(ledger, env.hospital.sign(ghost), rules.CustodianNotHospital)


# --------------------------------------------------------------------------- batches


def test_one_bad_event_rejects_the_whole_batch(env: Env) -> None:
    ledger, hospital, pharmacy = env.ledger, env.hospital, env.pharmacy
    record, patient = hospital.record("mrn-1"), env.patient.address
    rx = hospital.prescription(record, patient)
    good = [
        hospital.sign(hospital.access(record, patient)),
        hospital.sign(rx),
        pharmacy.sign(pharmacy.dispense(rx)),
    ]
    orphan = pharmacy.sign(pharmacy.dispense(rx, prescriptionId=new_event_id()))
    refuse_withheld(ledger, [good[0], good[1], orphan, good[2]], {2: rules.PrescriptionUnknown})
    forged = pharmacy.sign(hospital.access(record, patient))
    refuse(ledger, [forged, *good], {0: rules.SignerMismatch})
    # With a refusal before the log is read, the others are judged in the submitters' own
    # view of the log: the orphan dispense might name a prescription they may not see, so it
    # is not reported (that would tell, without storing anything, whether it exists).
    refuse(
        ledger,
        [good[0], forged, good[1], orphan, good[2]],
        {1: rules.SignerMismatch},
    )
    # A refused event does not drag down the events that refer to it.
    forged_rx = hospital.prescription(record, patient)
    refuse(
        ledger,
        [pharmacy.sign(forged_rx), pharmacy.sign(pharmacy.dispense(forged_rx))],
        {0: rules.SignerMismatch},
    )
    receipts = accept(ledger, *good)
    assert [r.leaf_index for r in receipts] == [0, 1, 2]


def test_before_commit_is_called_once_the_batch_is_written_and_not_yet_committed(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook the service gives the next batch its turn with (api.turns): called once per
    stored batch, inside the write transaction (another connection does not see the batch
    yet), never for a refused one."""
    ledger, hospital = env.ledger, env.hospital
    record, patient = hospital.record("mrn-1"), env.patient.address
    seen: list[int] = []
    steps: list[str] = []
    real_insert = ingest_module.insert_rows

    def insert_rows(*args: Any, **kwargs: Any) -> Any:
        steps.append("insert")
        return real_insert(*args, **kwargs)

    def before_commit() -> None:
        steps.append("hook")
        seen.append(len(ledger.entries(0, 100)))  # a reader of its own: committed rows only

    monkeypatch.setattr(ingest_module, "insert_rows", insert_rows)
    receipts = ledger.submit(
        [hospital.sign(hospital.access(record, patient)) for _ in range(2)],
        before_commit=before_commit,
    )
    assert seen == [0]
    assert steps[-1] == "hook"  # after the batch's rows were written
    assert "insert" in steps
    assert [r.leaf_index for r in receipts] == [0, 1]
    assert len(ledger.entries(0, 100)) == 2

    forged = env.pharmacy.sign(hospital.access(record, patient))
    with pytest.raises(BatchRejected):
        ledger.submit([forged], before_commit=before_commit)
    assert seen == [0]


def test_while_the_chain_does_not_answer_the_role_is_asked_once_per_ttl(
    lite: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's anchoring role: while the node does not answer, the last answer stands
    and the chain is asked again after the role's ttl, not at every batch (each question costs
    the node's timeout, and a process checks one batch at a time)."""
    ledger, hospital = lite.ledger, lite.hospital
    record, patient = hospital.record("mrn-1"), lite.patient.address
    asked: list[float] = []

    def down(_address: str) -> bool:
        asked.append(time.monotonic())
        raise ChainError("the node does not answer")

    monkeypatch.setattr(ledger.chain, "is_log_operator", down)
    ledger.role_ttl = 3600.0
    ledger._role_checked_at = float("-inf")  # due now
    for _ in range(3):
        accept(ledger, hospital.sign(hospital.access(record, patient)))
    assert len(asked) == 1


def test_events_of_one_batch_may_refer_to_each_other(env: Env) -> None:
    ledger, hospital, pharmacy, insurer = env.ledger, env.hospital, env.pharmacy, env.insurer
    record, patient = hospital.record("mrn-1"), env.patient.address
    rx = hospital.prescription(record, patient, fills=1)
    fill = pharmacy.dispense(rx)
    claim = pharmacy.claim(fill, insurer.address, amount=30_00)
    pay = insurer.payment(claim, amount=25_00)
    batch = [hospital.sign(rx), pharmacy.sign(fill), pharmacy.sign(claim), insurer.sign(pay)]
    receipts = accept(ledger, *batch)
    assert [r.leaf_index for r in receipts] == [0, 1, 2, 3]
    assert [r.consent for r in receipts] == ["not-applicable"] * 4
    # Events that refer to a prescription belong to its record.
    assert [v.event_id for v in ledger.trail(record)] == [s.event_id for s in batch]
    # The references now hold in the log: the fills are used up, the claim is paid.
    withheld_one(ledger, pharmacy.sign(pharmacy.dispense(rx, fill=1)), rules.FillAlreadyDispensed)
    refuse_one(ledger, insurer.sign(insurer.payment(claim, amount=5_00)), rules.ClaimAlreadyPaid)


def test_empty_and_oversized_batches_are_refused(tmp_path: Path) -> None:
    with open_env("embedded", "sqlite", tmp_path, max_batch=3) as env:
        ledger, hospital = env.ledger, env.hospital
        record, patient = hospital.record("mrn-1"), env.patient.address
        events = [hospital.sign(hospital.access(record, patient)) for _ in range(4)]
        before = log_state(ledger)
        with pytest.raises(EmptyBatch) as empty:
            ledger.submit([])
        assert (empty.value.code, empty.value.status) == ("empty-batch", 400)
        with pytest.raises(BatchTooLarge) as large:
            ledger.submit(events)
        assert (large.value.code, large.value.status) == ("batch-too-large", 413)
        assert large.value.context == {"limit": 3}
        assert log_state(ledger) == before
        assert len(accept(ledger, *events[:3])) == 3


# --------------------------------------------------------------------------- concurrency


def run_at_once(tasks: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run ``tasks`` in threads released together; each result or the exception it raised."""
    barrier = threading.Barrier(len(tasks))
    results: list[Any] = [None] * len(tasks)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = tasks[i]()
        except Exception as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(tasks))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_concurrent_payments_of_one_claim_accept_exactly_one(env: Env) -> None:
    ledger, hospital, insurer = env.ledger, env.hospital, env.insurer
    visit = hospital.access(hospital.record("mrn-1"), env.patient.address)
    claim: InsuranceClaim = hospital.claim(visit, insurer.address, amount=50_00)
    accept(ledger, hospital.sign(visit), hospital.sign(claim))
    payments = [insurer.sign(insurer.payment(claim, amount=50_00 - i)) for i in range(8)]

    results = run_at_once([partial(ledger.submit, [p]) for p in payments])

    accepted = [r for r in results if isinstance(r, list)]
    refused = [r for r in results if not isinstance(r, list)]
    assert len(accepted) == 1, results
    for exc in refused:
        assert isinstance(exc, BatchRejected), exc
        assert {i: type(e) for i, e in exc.failures.items()} == {0: rules.ClaimAlreadyPaid}
    entries = ledger.entries(0, 100)
    assert [row.leaf_index for row in entries] == [0, 1, 2]
    assert entries[2].event_id == accepted[0][0].event_id

    # One new event sent by 8 threads at once: stored once, the same receipt for all.
    same = hospital.sign(hospital.access(hospital.record("mrn-2"), env.patient.address))
    results = run_at_once([partial(ledger.submit, [same])] * 8)
    assert all(isinstance(r, list) for r in results), results
    receipts = [r[0] for r in results]
    assert sum(not r.duplicate for r in receipts) == 1
    assert {dataclasses.replace(r, duplicate=False) for r in receipts} == {
        dataclasses.replace(receipts[0], duplicate=False)
    }
    assert receipts[0].leaf_index == 3
    assert len(ledger.entries(0, 100)) == 4


def test_concurrent_batches_get_contiguous_leaf_indexes(env: Env) -> None:
    ledger, patient = env.ledger, env.patient.address
    threads, batches, size = 6, 3, 4
    hospitals = [env.institution(f"Hospital {t}", InstitutionKind.HOSPITAL) for t in range(threads)]

    def work(t: int) -> list[Receipt]:
        hospital, receipts = hospitals[t], []
        for b in range(batches):
            record = hospital.record(f"mrn-{b}")
            batch = [hospital.sign(hospital.access(record, patient)) for _ in range(size)]
            receipts += ledger.submit(batch)
        return receipts

    results = run_at_once([partial(work, t) for t in range(threads)])
    assert all(isinstance(r, list) for r in results), results
    receipts = [r for result in results for r in result]
    total = threads * batches * size

    entries = ledger.entries(0, 10 * total)
    assert [row.leaf_index for row in entries] == list(range(total))
    assert len({row.event_id for row in entries}) == total
    by_leaf = {row.leaf_index: row for row in entries}
    for receipt in receipts:
        row = by_leaf[receipt.leaf_index]
        assert (bytes(row.event_id), bytes(row.digest)) == (
            receipt.event_id,
            receipt.event_digest,
        )
    # Each batch got a contiguous run of leaves (a batch is one transaction).
    for result in results:
        for b in range(batches):
            leaves = [r.leaf_index for r in result[b * size : (b + 1) * size]]
            assert leaves == list(range(leaves[0], leaves[0] + size))

    head = ledger.log.integrate_all()
    tree = merkle.MemoryTree(merkle.leaf_hash(bytes(row.digest)) for row in entries)
    assert head.size == total
    assert head.root == tree.root() == ledger.log.root_at(total)


# --------------------------------------------------------------------------- receipts


def test_receipts_are_signed_by_the_operator_and_promise_the_merge_delay(tmp_path: Path) -> None:
    with open_env("embedded", "sqlite", tmp_path, max_merge_delay=777) as env:
        ledger, hospital, pharmacy = env.ledger, env.hospital, env.pharmacy
        record, patient = hospital.record("mrn-1"), env.patient.address
        rx = hospital.prescription(record, patient)
        batch = [
            hospital.sign(hospital.access(record, patient)),
            hospital.sign(rx),
            pharmacy.sign(pharmacy.dispense(rx)),
        ]
        start = int(time.time())
        receipts = accept(ledger, *batch)
        end = int(time.time())
        entries = ledger.entries(0, 100)
        for signed, receipt, row in zip(batch, receipts, entries, strict=True):
            assert receipt.event_id == signed.event_id
            assert receipt.event_digest == signed.digest(ledger.domain) == bytes(row.digest)
            assert start <= receipt.received_at <= end
            assert receipt.anchor_by == receipt.received_at + 777
            assert recover(receipt.signed_digest(ledger.domain), receipt.signature) == (
                ledger.operator.address
            )
            assert (row.received_at, row.anchor_by, bytes(row.receipt_signature)) == (
                receipt.received_at,
                receipt.anchor_by,
                receipt.signature,
            )
            assert bytes(row.signature) == signed.signature
            assert receipt.batch is not None
            assert (row.receipt_batch_first, row.receipt_batch_count) == (0, 3)
            assert bytes(row.receipt_path) == b"".join(receipt.batch.path)
        # One operator signature for the batch, over the root of its three receipts.
        assert len({receipt.signature for receipt in receipts}) == 1
        assert {(r.batch.first_leaf, r.batch.count) for r in receipts if r.batch} == {(0, 3)}
        # The path binds the position: moved elsewhere in the batch, or out of it, it proves
        # nothing.
        for leaf_index in (1, 5):
            moved = dataclasses.replace(receipts[0], leaf_index=leaf_index)
            with pytest.raises(ProofError):
                moved.signed_digest(ledger.domain)


def test_a_receipt_signed_alone_before_batch_receipts_stays_valid(tmp_path: Path) -> None:
    """A row stored before batch receipts (its batch columns null, its receipt signed alone):
    resent, it gets that receipt back; served, its bundle's receipt verifies."""
    with open_env("embedded", "sqlite", tmp_path) as env:
        ledger, hospital = env.ledger, env.hospital
        record, patient = hospital.record("mrn-1"), env.patient.address
        signed = hospital.sign(hospital.access(record, patient))
        (receipt,) = accept(ledger, signed)
        alone = sign_digest(
            receipt_digest(
                ledger.domain,
                receipt.event_digest,
                receipt.leaf_index,
                receipt.received_at,
                receipt.anchor_by,
            ),
            bytes(ledger.operator.key),
        )
        with ledger.store.write() as connection:  # as migration 0006 leaves an older row
            connection.execute(
                text(
                    "UPDATE events SET receipt_signature = :signature, receipt_batch_first = "
                    "NULL, receipt_batch_count = NULL, receipt_batch_root = NULL, "
                    "receipt_path = NULL WHERE leaf_index = :leaf"
                ),
                {"signature": alone, "leaf": receipt.leaf_index},
            )
        (again,) = ledger.submit([signed])
        assert again.duplicate
        assert again.batch is None
        assert again.signature == alone
        assert "batch" not in again.to_json()
        assert recover(again.signed_digest(ledger.domain), alone) == ledger.operator.address
        bundle = ledger.event(signed.event_id).bundle
        assert bundle.receipt is not None
        assert bundle.receipt.batch is None
        findings = verify_bundle(
            bundle,
            domain=ledger.domain,
            trusted_size=0,
            trusted_root=merkle.EMPTY_ROOT,
            operator=ledger.operator.address,
        )
        assert [f.code for f in findings] == ["pending"]


def test_a_constraint_the_checks_missed_refuses_the_batch_whole(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database's constraints stand behind the checks: were the log's view wrong (here,
    ``_load`` made blind), the insert (``COPY`` on PostgreSQL, ``executemany`` on SQLite)
    breaks the unique ``event_id``, and the batch is refused whole — nothing stored, the
    counter unmoved, and the store usable after."""
    ledger, hospital = env.ledger, env.hospital
    record, patient = hospital.record("mrn-1"), env.patient.address
    stored = hospital.sign(hospital.access(record, patient))
    accept(ledger, stored)
    monkeypatch.setattr(Ingestor, "_load", staticmethod(lambda _c, _e: _Loaded(LogState(), {})))
    fresh = hospital.sign(hospital.access(record, patient, action=2))
    refuse(ledger, [fresh, stored], {0: rules.EventIdConflict})
    monkeypatch.undo()
    [receipt] = accept(ledger, fresh)
    assert receipt.leaf_index == 1
