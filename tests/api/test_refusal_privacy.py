"""Issue 12, item 3: a refusal never discloses another institution's data.

A refusal may repeat what the submitter sent and name a reason; it must not disclose values
from stored events of other institutions (a record's patient or custodian, a prescription's
date or fills, a claim's insurer or amount, who gave a service), nor answer differently for
facts the submitter may not know — not even when the batch is refused anyway because of
another, invalid, event (the probe that stored nothing and answered everything).

Over HTTP (problem+json), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.events import InstitutionKind, SignedEvent
from tests.api.world import World, bearer, event_json, open_world
from tests.support.actors import Institution, Patient, new_event_id

HEX = re.compile(r"0x[0-9a-fA-F]{40,}")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path, request.param) as built:
        yield built


def post(world: World, inst: Institution, *signed: SignedEvent) -> httpx.Response:
    return world.client.post(
        "/v1/events",
        json={"events": [event_json(s) for s in signed]},
        headers=bearer(world.keys_of(inst)),
    )


def only_what_was_sent(answer: httpx.Response, *sent: SignedEvent) -> None:
    """Every address or hash in the refusal is one the submitter sent."""
    body = json.dumps([event_json(s) for s in sent]).lower()
    for value in HEX.findall(answer.text):
        assert value.lower() in body, f"{value} in the refusal was not sent: {answer.text}"


def without_ids(answer: httpx.Response, *sent: SignedEvent) -> Any:
    """The problem document with the submitted events' ids blanked out (to compare two
    refusals of different events)."""
    text = answer.text
    for signed in sent:
        text = text.replace("0x" + signed.event_id.hex(), "0x<id>")
    document = json.loads(text)
    document.pop("requestId", None)  # every answer has its own
    return document


def invalid_event(world: World, inst: Institution) -> SignedEvent:
    """An event refused before the log is read, the same way every time: a break-glass
    access to a new record of the hospital A's without the reason it needs."""
    return inst.sign(
        inst.access(inst.record("probe"), Patient().address, custodian=world.a.address)
    )


def test_a_batch_with_an_invalid_event_cannot_probe_a_records_patient(world: World) -> None:
    b = world.b
    answers = []
    for patient in (world.p.address, world.q.address):  # P is record_a's patient, Q is not
        probe = b.sign(
            b.access(
                world.record_a,
                patient,
                custodian=world.a.address,
                reasonHash=b"\x01" * 32,
            )
        )
        bad = invalid_event(world, b)
        answer = post(world, b, bad, probe)
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert [e["index"] for e in answer.json()["errors"]] == [0]
        only_what_was_sent(answer, bad, probe)
        answers.append(without_ids(answer, bad, probe))
    assert answers[0] == answers[1]
    assert world.ledger.trail(world.record_a)[-1].institution != b.address  # nothing stored


def test_a_single_refusal_does_not_tell_a_records_patient_or_custodian(world: World) -> None:
    b, a = world.b, world.a
    probes = [
        # the right patient, B naming itself custodian
        b.access(world.record_a, world.p.address, custodian=b.address),
        # a wrong patient, the right custodian
        b.access(world.record_a, world.q.address, custodian=a.address, reasonHash=b"\x01" * 32),
        # a wrong patient and a wrong custodian
        b.access(world.record_a, world.q.address, custodian=b.address),
    ]
    answers = []
    for event in probes:
        signed = b.sign(event)
        answer = post(world, b, signed)
        assert answer.status_code == 409, answer.text
        document = answer.json()
        assert [e["code"] for e in document["errors"]] == ["log-conflict"]
        only_what_was_sent(answer, signed)
        answers.append(without_ids(answer, signed))
    assert answers[0] == answers[1] == answers[2]
    assert a.address not in answers[0]["detail"]


def test_a_pharmacy_is_not_told_a_prescriptions_date_or_fills(world: World) -> None:
    a, pharmacy = world.a, world.env.pharmacy
    patient = world.p.address
    rx = a.prescription(world.record_a, patient, fills=2)
    world.submit(a, rx)
    world.submit(pharmacy, pharmacy.dispense(rx, fill=1))
    probes = [
        pharmacy.dispense(rx, fill=1),  # dispensed already
        pharmacy.dispense(rx, fill=3),  # beyond the fills
        pharmacy.dispense(rx, fill=2, occurredAt=rx.occurredAt - 1),  # before it was written
        pharmacy.dispense(rx, fill=2, patient=world.q.address),  # another patient's
        pharmacy.dispense(rx, fill=2, prescriptionId=new_event_id()),  # no such prescription
    ]
    answers = []
    for event in probes:
        signed = pharmacy.sign(event)
        answer = post(world, pharmacy, signed)
        assert answer.status_code == 409, answer.text
        only_what_was_sent(answer, signed)
        assert str(rx.occurredAt) not in answer.text
        assert "2 fill" not in answer.text
        assert "fills=2" not in answer.text
        answers.append(without_ids(answer, signed))
    assert all(answer == answers[0] for answer in answers)
    # The batch probe: refused anyway, and the same whatever the prescription holds.
    batch_answers = []
    for event in probes[:2]:
        signed, bad = pharmacy.sign(event), invalid_event(world, pharmacy)
        answer = post(world, pharmacy, bad, signed)
        assert [e["index"] for e in answer.json()["errors"]] == [0]
        batch_answers.append(without_ids(answer, bad, signed))
    assert batch_answers[0] == batch_answers[1]


def test_an_insurer_is_not_told_another_insurers_claim(world: World) -> None:
    a, insurer = world.a, world.env.insurer
    other_insurer = world.env.institution("Other Insurer", InstitutionKind.INSURER)
    visit = a.access(world.record_a, world.p.address)
    claim = a.claim(visit, insurer.address, amount=123_45)
    world.submit(a, visit, claim)
    probe = other_insurer.sign(other_insurer.payment(claim, amount=1))
    answer = post(world, other_insurer, probe)
    assert answer.status_code == 409, answer.text
    only_what_was_sent(answer, probe)
    assert insurer.address not in answer.text
    assert "12345" not in answer.text
    # The insurer the claim was made to is told precisely (it may see the claim).
    too_much = insurer.sign(insurer.payment(claim, amount=123_46))
    precise = post(world, insurer, too_much)
    assert precise.status_code == 422, precise.text
    assert [e["code"] for e in precise.json()["errors"]] == ["payment-exceeds-claim"]


def test_a_claimant_is_not_told_who_gave_a_service(world: World) -> None:
    a, pharmacy, insurer = world.a, world.env.pharmacy, world.env.insurer
    rx = a.prescription(world.record_a, world.p.address)
    world.submit(a, rx)
    probe = pharmacy.sign(pharmacy.claim(rx, insurer.address))
    answer = post(world, pharmacy, probe)
    assert answer.status_code == 409, answer.text
    only_what_was_sent(answer, probe)
    assert a.address not in answer.text
