"""ledger.ingest's short cut for the body it stores for each event (issue 15): exactly the
event's ``model_dump_json``, for every event type."""

from __future__ import annotations

import pytest

from ledger.events import EventBase, InstitutionKind, audit_log_domain
from ledger.ingest import _body
from tests.support.actors import Institution, Patient

_DOMAIN = audit_log_domain(31337, "0x" + "11" * 20)


def _every_type() -> list[EventBase]:
    hospital = Institution("H", InstitutionKind.HOSPITAL, _DOMAIN)
    pharmacy = Institution("P", InstitutionKind.PHARMACY, _DOMAIN)
    insurer = Institution("I", InstitutionKind.INSURER, _DOMAIN)
    patient = Patient().address
    record = hospital.record("mrn-1")
    script = hospital.prescription(record, patient)
    claim = hospital.claim(script, insurer.address)
    return [
        hospital.access(record, patient),
        hospital.access(record, patient, custodian=pharmacy.address, grantId=12),
        script,
        pharmacy.dispense(script),
        claim,
        insurer.payment(claim),
    ]


@pytest.mark.parametrize("event", _every_type(), ids=lambda e: type(e).__name__)
def test_a_stored_body_is_the_events_model_dump_json(event: EventBase) -> None:
    assert _body(event) == event.model_dump_json()
    assert type(event).model_validate_json(_body(event)) == event
