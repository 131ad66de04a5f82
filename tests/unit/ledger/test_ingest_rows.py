"""ledger.ingest's short cuts (issue 15): the body it stores for each event is exactly the
event's ``model_dump_json``, for every event type; a batch asks the institution source each
question once, with the source's answers, and never keeps a failure."""

from __future__ import annotations

import pytest

from ledger.chain.model import ChainError, InstitutionInfo
from ledger.events import EventBase, InstitutionKind, audit_log_domain
from ledger.ingest import _BatchInstitutions, _body
from ledger.logstate import InstitutionStatus
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


class _Counting:
    """An institution source that counts the questions it is asked, and fails on request."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int | None]] = []
        self.down = False

    def institution(self, address: str) -> InstitutionInfo:
        self.asked.append((address, None))
        if self.down:
            raise ChainError("the chain does not answer")
        return InstitutionInfo(address, InstitutionKind.HOSPITAL, True, 0, "H")

    def institution_at(self, address: str, at: int) -> InstitutionStatus:
        self.asked.append((address, at))
        if self.down:
            raise ChainError("the chain does not answer")
        return InstitutionStatus(InstitutionKind.HOSPITAL, at % 2 == 0)


def test_a_batch_asks_its_source_each_question_once_and_never_keeps_a_failure() -> None:
    source = _Counting()
    batch = _BatchInstitutions(source)
    answers = [batch.institution_at("A", at) for at in (10, 11, 10, 10, 11)]
    assert answers == [source.institution_at("A", at) for at in (10, 11, 10, 10, 11)]
    assert batch.institution("A") is batch.institution("A")
    assert source.asked[:2] == [("A", 10), ("A", 11)]
    assert source.asked.count(("A", None)) == 1
    source.asked.clear()
    source.down = True
    for _ in range(2):
        with pytest.raises(ChainError):
            batch.institution_at("B", 10)
        with pytest.raises(ChainError):
            batch.institution("B")
    assert source.asked == [("B", 10), ("B", None)] * 2
    source.down = False
    assert batch.institution_at("B", 10) == InstitutionStatus(InstitutionKind.HOSPITAL, True)
