"""Happy paths of events: submit (batched, idempotent), read with proofs, trails, metrics."""

from __future__ import annotations

from typing import Any

from ledger import merkle
from ledger.events import InstitutionKind, SignedEvent
from ledger.verify import ProofBundle, verify_bundle
from tests.api.world import World, bearer, event_json


def h(value: bytes) -> str:
    return "0x" + value.hex()


def post(world: World, role: str, *events: SignedEvent) -> Any:
    return world.client.post(
        "/v1/events",
        json={"events": [event_json(e) for e in events]},
        headers=world.headers(role),
    )


def test_a_batch_gets_one_signed_receipt_per_event_in_order(world: World) -> None:
    a, p = world.a, world.p.address
    at = world.ledger.chain.latest_timestamp()
    record = a.record("mrn-batch")
    events = [a.sign(a.access(record, p, occurredAt=at)) for _ in range(3)]
    head = world.client.get("/v1/log/head").json()["treeSize"]
    answer = post(world, "institution_a", *events)
    assert answer.status_code == 200
    receipts = answer.json()["receipts"]
    assert [r["eventId"] for r in receipts] == [h(e.event_id) for e in events]
    assert [r["leafIndex"] for r in receipts] == list(range(head, head + 3))
    assert all(r["duplicate"] is False and r["consent"] == "custodian" for r in receipts)
    for receipt, event in zip(receipts, events, strict=True):
        assert receipt["eventDigest"] == h(event.digest(world.ledger.domain))
        assert receipt["anchorBy"] == receipt["receivedAt"] + world.ledger.settings.max_merge_delay


def test_resending_an_event_returns_its_original_receipt(world: World) -> None:
    a = world.a
    event = a.sign(
        a.access(
            a.record("mrn-again"), world.p.address, occurredAt=world.ledger.chain.latest_timestamp()
        )
    )
    first = post(world, "institution_a", event).json()["receipts"][0]
    again = post(world, "institution_a", event).json()["receipts"][0]
    assert again == {**first, "duplicate": True}


def test_an_event_is_pending_then_confirmed_with_a_proof_that_verifies(world: World) -> None:
    a = world.a
    event = a.access(
        a.record("mrn-proof"), world.p.address, occurredAt=world.ledger.chain.latest_timestamp()
    )
    post(world, "institution_a", a.sign(event))
    url = f"/v1/events/{h(event.eventId)}"
    pending = world.client.get(url, headers=world.headers("institution_a")).json()
    assert pending["status"] == "pending"
    assert pending["bundle"]["checkpoint"] is None
    assert pending["recordRef"] == h(event.recordRef)

    world.ledger.anchor_now()
    world.ledger.anchor_now()
    body = world.client.get(url, headers=world.headers("institution_a")).json()
    assert body["status"] == "confirmed"
    assert body["type"] == "RecordAccess"
    assert body["consent"] == "custodian"
    bundle = ProofBundle.model_validate(body["bundle"])
    on_chain = world.ledger.chain.latest_checkpoint()
    assert on_chain is not None
    assert bundle.treeSize == on_chain.tree_size
    findings = verify_bundle(
        bundle,
        domain=world.ledger.domain,
        trusted_size=on_chain.tree_size,
        trusted_root=on_chain.root_hash,
        operator=world.ledger.operator.address,
    )
    assert findings == []
    # The proof also checks with the log's own inclusion endpoint.
    proof = world.client.get(
        f"/v1/log/inclusion?leafIndex={bundle.leafIndex}&treeSize={bundle.treeSize}"
    ).json()["proof"]
    assert proof == [h(p) for p in bundle.inclusionPath]
    merkle.verify_inclusion(
        merkle.leaf_hash(bundle.eventDigest),
        bundle.leafIndex,
        bundle.treeSize,
        bundle.inclusionPath,
        on_chain.root_hash,
    )


def test_a_trail_lists_the_record_s_events_in_order_and_verifies(world: World) -> None:
    a, pharmacy, insurer = world.a, world.env.pharmacy, world.env.insurer
    p = world.p.address
    record = a.record("mrn-trail")
    at = world.ledger.chain.latest_timestamp()
    rx = a.prescription(record, p, occurredAt=at - 1)
    access = a.access(record, p, occurredAt=at)
    fill = pharmacy.dispense(rx, occurredAt=at)
    claim = pharmacy.claim(fill, insurer.address, occurredAt=at)
    pay = insurer.payment(claim, occurredAt=at)
    world.submit(a, rx, access)
    world.submit(pharmacy, fill, claim)
    world.submit(insurer, pay)
    world.ledger.anchor_now()
    world.ledger.anchor_now()

    url = f"/v1/records/{h(record)}/trail?verify=true"
    body = world.client.get(url, headers=world.headers("regulator")).json()
    assert body["recordRef"] == h(record)
    ids = [e["eventId"] for e in body["events"]]
    assert ids == [h(e.eventId) for e in (rx, access, fill, claim, pay)]
    assert {e["status"] for e in body["events"]} == {"confirmed"}
    assert all(e["findings"] == [] for e in body["events"]), body["events"]
    sizes = {e["bundle"]["checkpoint"]["treeSize"] for e in body["events"]}
    assert len(sizes) == 1  # one checkpoint for the whole answer

    plain = world.client.get(f"/v1/records/{h(record)}/trail", headers=world.headers("regulator"))
    assert all("findings" not in e for e in plain.json()["events"])


def test_verify_flags_an_emergency_access_for_review(world: World) -> None:
    b, a = world.b, world.a
    record = a.record("mrn-emergency")
    at = world.ledger.chain.latest_timestamp()
    world.submit(a, a.access(record, world.p.address, occurredAt=at))
    emergency = b.access(
        record, world.p.address, custodian=a.address, reasonHash=b"\x01" * 32, occurredAt=at
    )
    receipt = world.submit(b, emergency)[0]
    assert receipt["consent"] == "emergency"
    body = world.client.get(
        f"/v1/records/{h(record)}/trail?verify=true", headers=world.headers("regulator")
    ).json()
    codes = [[f["code"] for f in e["findings"]] for e in body["events"]]
    assert codes[0] == ["pending"]
    assert codes[1] == ["pending", "emergency-access"]
    review = body["events"][1]["findings"][1]
    assert review["severity"] == "review"
    assert review["eventId"] == h(emergency.eventId)


def test_metrics_count_requests_events_and_refusals(world: World) -> None:
    def value(text: str, line_start: str) -> float:
        for line in text.splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = world.client.get("/metrics").text
    a = world.a
    at = world.ledger.chain.latest_timestamp()
    post(
        world, "institution_a", a.sign(a.access(a.record("mrn-m"), world.p.address, occurredAt=at))
    )
    stranger = world.env.institution("Unregistered", InstitutionKind.HOSPITAL, register=False)
    refused = stranger.sign(stranger.access(a.record("mrn-m2"), world.p.address, occurredAt=at))
    key = world.institution_key(world.new_institution())
    world.client.post("/v1/events", json={"events": [event_json(refused)]}, headers=bearer(key))
    after = world.client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    ingested = 'medtrail_events_ingested_total{type="RecordAccess"}'
    assert value(text, ingested) == value(before, ingested) + 1
    assert value(text, 'medtrail_event_refusals_total{code="foreign-event"}') >= 1
    route = 'medtrail_http_requests_total{method="POST",route="/v1/events",status="200"}'
    assert value(text, route) >= value(before, route) + 1
    assert value(text, "medtrail_ingest_seconds_count") >= 1
    assert value(text, "medtrail_log_tree_size") == world.ledger.log.head().size
    assert value(text, "medtrail_log_anchored_size") == world.ledger.anchor_state()[0]
