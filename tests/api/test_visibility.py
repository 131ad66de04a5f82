"""What an institution may read of a record (DESIGN §5, issue 12 item 5): the custodian the
whole trail, another institution only the events it took part in — signed, or named as the
custodian of an access, the insurer of a claim, the payee of a payment; the patient and the
regulator everything.

One record is shared by hospital A (custodian), hospital B (one break-glass access), a
pharmacy (a dispense, its claim, and the payment it receives), an insurer (claims made to it,
its payments) and a second insurer (one claim); every viewer's trail and every event read is
checked against the table below.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from ledger.events import InstitutionKind
from tests.api.world import World, bearer
from tests.support.actors import Institution


def h(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass
class Scene:
    record: bytes
    #: Event name → event id, in log order (the order of EVERYTHING).
    events: dict[str, bytes]
    #: Viewer → its bearer headers.
    headers: dict[str, dict[str, str]]
    #: The claim amount only A's claim carries (must not reach B).
    secret_amount: int


EVERYTHING = (
    "a-visit",
    "a-prescription",
    "a-claim",
    "a-visit-2",
    "a-claim-2",
    "insurer-pays-a",
    "pharmacy-dispense",
    "pharmacy-claim",
    "insurer-pays-pharmacy",
    "b-emergency",
)

#: Viewer → the events of the record it may read (none: not even the record, 404).
VISIBLE: dict[str, tuple[str, ...]] = {
    "custodian A": EVERYTHING,
    "patient P": EVERYTHING,
    "regulator": EVERYTHING,
    "hospital B": ("b-emergency",),
    "pharmacy": ("pharmacy-dispense", "pharmacy-claim", "insurer-pays-pharmacy"),
    "insurer": ("a-claim", "insurer-pays-a", "pharmacy-claim", "insurer-pays-pharmacy"),
    "second insurer": ("a-claim-2",),
    "stranger": (),
}


@pytest.fixture(scope="module")
def scene(world: World) -> Scene:
    a, b, p = world.a, world.b, world.p.address
    pharmacy = world.new_institution(InstitutionKind.PHARMACY)
    insurer = world.new_institution(InstitutionKind.INSURER)
    insurer_2 = world.new_institution(InstitutionKind.INSURER)
    stranger = world.new_institution(InstitutionKind.HOSPITAL)
    record = a.record("mrn-visibility")
    at = world.ledger.chain.latest_timestamp()
    secret = 987_654_321
    visit = a.access(record, p, occurredAt=at)
    rx = a.prescription(record, p, occurredAt=at)
    claim = a.claim(visit, insurer.address, amount=secret, occurredAt=at)
    visit_2 = a.access(record, p, occurredAt=at)
    claim_2 = a.claim(visit_2, insurer_2.address, occurredAt=at)
    world.submit(a, visit, rx, claim, visit_2, claim_2)
    pays_a = insurer.payment(claim, occurredAt=at)
    world.submit(insurer, pays_a)
    fill = pharmacy.dispense(rx, occurredAt=at)
    pharmacy_claim = pharmacy.claim(fill, insurer.address, occurredAt=at)
    world.submit(pharmacy, fill, pharmacy_claim)
    pays_pharmacy = insurer.payment(pharmacy_claim, occurredAt=at)
    world.submit(insurer, pays_pharmacy)
    emergency = b.access(record, p, custodian=a.address, reasonHash=b"\x01" * 32, occurredAt=at)
    assert world.submit(b, emergency)[0]["consent"] == "emergency"
    world.ledger.anchor_now()
    world.ledger.anchor_now()

    def key(inst: Institution) -> dict[str, str]:
        return bearer(world.keys_of(inst))

    return Scene(
        record=record,
        events={
            "a-visit": visit.eventId,
            "a-prescription": rx.eventId,
            "a-claim": claim.eventId,
            "a-visit-2": visit_2.eventId,
            "a-claim-2": claim_2.eventId,
            "insurer-pays-a": pays_a.eventId,
            "pharmacy-dispense": fill.eventId,
            "pharmacy-claim": pharmacy_claim.eventId,
            "insurer-pays-pharmacy": pays_pharmacy.eventId,
            "b-emergency": emergency.eventId,
        },
        headers={
            "custodian A": world.headers("institution_a"),
            "patient P": world.headers("patient_p"),
            "regulator": world.headers("regulator"),
            "hospital B": world.headers("institution_b"),
            "pharmacy": key(pharmacy),
            "insurer": key(insurer),
            "second insurer": key(insurer_2),
            "stranger": key(stranger),
        },
        secret_amount=secret,
    )


def in_log_order(scene: Scene, names: tuple[str, ...]) -> list[str]:
    ids = {scene.events[name]: name for name in names}
    order = {event_id: position for position, event_id in enumerate(scene.events.values())}
    return [ids[event_id] for event_id in sorted(ids, key=order.__getitem__)]


@pytest.mark.parametrize("viewer", list(VISIBLE))
def test_a_trail_holds_only_the_events_the_viewer_may_see(
    world: World, scene: Scene, viewer: str
) -> None:
    answer = world.client.get(f"/v1/records/{h(scene.record)}/trail", headers=scene.headers[viewer])
    expected = VISIBLE[viewer]
    if not expected:
        assert answer.status_code == 404
        assert answer.json()["code"] == "not-found"
        return
    assert answer.status_code == 200, answer.text
    names = {event_id: name for name, event_id in scene.events.items()}
    served = [names[bytes.fromhex(e["eventId"][2:])] for e in answer.json()["events"]]
    assert served == in_log_order(scene, expected)
    assert answer.json()["next"] is None


@pytest.mark.parametrize("viewer", list(VISIBLE))
def test_each_event_is_readable_exactly_by_its_viewers(
    world: World, scene: Scene, viewer: str
) -> None:
    for name, event_id in scene.events.items():
        answer = world.client.get(f"/v1/events/{h(event_id)}", headers=scene.headers[viewer])
        if name in VISIBLE[viewer]:
            assert answer.status_code == 200, (name, answer.text)
        else:
            assert answer.status_code == 404, name
            assert answer.json()["code"] == "not-found"


def test_a_break_glass_access_discloses_no_other_institution_s_claim(
    world: World, scene: Scene
) -> None:
    """Hospital B logged one emergency access to A's record: its reads carry no trace of A's
    claims, their amounts or their insurers."""
    for verify in ("false", "true"):
        answer = world.client.get(
            f"/v1/records/{h(scene.record)}/trail?verify={verify}",
            headers=scene.headers["hospital B"],
        )
        assert answer.status_code == 200
        text = answer.text
        assert str(scene.secret_amount) not in text
        for hidden in ("a-claim", "a-claim-2", "insurer-pays-a", "a-prescription"):
            assert scene.events[hidden].hex() not in text
        assert [e["type"] for e in answer.json()["events"]] == ["RecordAccess"]
