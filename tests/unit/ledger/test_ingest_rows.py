"""ledger.ingest's short cuts for the objects and rows it makes a thousand of per batch (issue
15) make exactly what the plain calls make: a receipt and its batch place equal (and hash,
print, copy and refuse changes) as if built by their constructors, and a stored body is the
event's ``model_dump_json`` for every event type."""

from __future__ import annotations

import dataclasses

import pytest

from ledger.events import EventBase, InstitutionKind, audit_log_domain
from ledger.ingest import BatchPlace, Receipt, _body, _built
from tests.support.actors import Institution, Patient

_DOMAIN = audit_log_domain(31337, "0x" + "11" * 20)


def test_a_built_receipt_is_the_one_its_constructor_makes() -> None:
    place = {"first_leaf": 7, "count": 3, "root": b"r" * 32, "path": (b"a" * 32, b"b" * 32)}
    fields = {
        "event_id": b"e" * 32,
        "event_digest": b"d" * 32,
        "leaf_index": 8,
        "received_at": 1_700_000_000,
        "anchor_by": 1_700_003_600,
        "signature": b"s" * 65,
        "consent": "custodian",
        "duplicate": False,
    }
    built = _built(Receipt, **fields, batch=_built(BatchPlace, **place))
    made = Receipt(**fields, batch=BatchPlace(**place))
    assert built == made
    assert hash(built) == hash(made)
    assert repr(built) == repr(made)
    assert built.to_json() == made.to_json()
    assert dataclasses.replace(built, duplicate=True) == dataclasses.replace(made, duplicate=True)
    assert built != dataclasses.replace(made, leaf_index=9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.leaf_index = 9  # type: ignore[misc]


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
