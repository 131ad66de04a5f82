"""The verifiable index's answer served with trails and histories (issue 16): to whom, that it
verifies against the root on chain, an absence proof for a key with no events, and
``verify=true`` finding a trail that is not whole."""

from __future__ import annotations

from typing import Any

from ledger import index
from tests.api.world import World, hex0x
from tests.scripts.support import delete_event


def trail(world: World, record: bytes, role: str, query: str = "") -> dict[str, Any]:
    answer = world.client.get(
        f"/v1/records/{hex0x(record)}/trail{query}", headers=world.headers(role)
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def search(world: World, role: str, **query: str) -> dict[str, Any]:
    answer = world.client.get("/v1/events", params=query, headers=world.headers(role))
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def check(world: World, served: dict[str, Any], key: bytes) -> index.ListHead:
    """Verify the served index answer as a client does: against the chain's index root."""
    size = served["treeSize"]
    on_chain = world.ledger.chain.checkpoint_at(size)
    assert on_chain is not None
    assert served["indexRoot"] == hex0x(on_chain.index_root)
    assert served["key"] == hex0x(key)
    proof = index.LookupProof.from_bytes(bytes.fromhex(served["proof"][2:]))
    return index.verify_list_lookup(
        key, served["leafIndexes"], size, proof, bytes(on_chain.index_root)
    )


def test_whoever_sees_the_whole_trail_gets_a_proof_that_verifies(world: World) -> None:
    key = index.record_key(world.record_a)
    for role in ("regulator", "institution_a", "patient_p"):
        body = trail(world, world.record_a, role)
        served = body["index"]
        assert served is not None, role
        head = check(world, served, key)
        leaves = [e["bundle"]["leafIndex"] for e in body["events"]]
        anchored = [leaf for leaf in leaves if leaf < served["treeSize"]]
        assert served["leafIndexes"] == anchored, role
        assert head.size == len(anchored) == 2  # A's access and prescription


def test_an_institution_seeing_part_of_a_trail_gets_no_list(world: World) -> None:
    """B may read its own events of A's record, never the whole list: it would learn that the
    record has others, how many and when (api.access.sees_whole_trail)."""
    record = world.a.record("mrn-partial")
    grant = world.relay_grant(world.p, world.b.address, record)
    world.submit(world.a, world.a.access(record, world.p.address))
    world.submit(
        world.b,
        world.b.access(record, world.p.address, custodian=world.a.address, grantId=grant),
    )
    world.ledger.anchor_now()
    world.ledger.anchor_now()
    assert trail(world, record, "institution_b")["index"] is None
    assert search(world, "institution_b", recordRef=hex0x(record))["index"] is None
    assert trail(world, record, "institution_a")["index"]["leafIndexes"] != []


def test_a_patient_with_no_events_gets_a_proof_of_absence(world: World) -> None:
    nobody = "0x" + "42" * 20
    body = search(world, "regulator", patient=nobody)
    assert body["events"] == []
    served = body["index"]
    assert served["leafIndexes"] == []
    assert check(world, served, index.patient_key(nobody)).size == 0


def test_a_patients_whole_history_is_proven_and_a_narrowed_search_is_not(world: World) -> None:
    body = search(world, "patient_p", patient=world.p.address)
    head = check(world, body["index"], index.patient_key(world.p.address))
    assert head.size >= 2
    narrowed = search(world, "patient_p", patient=world.p.address, type="RecordAccess")
    assert narrowed["index"] is None


def test_verify_true_finds_an_event_deleted_after_anchoring(world: World) -> None:
    record = world.a.record("mrn-deleted")
    first, second = (world.a.access(record, world.p.address) for _ in range(2))
    world.submit(world.a, first, second)
    world.ledger.anchor_now()
    world.ledger.anchor_now()
    clean = trail(world, record, "regulator", "?verify=true")
    assert [f["code"] for f in clean["findings"] if f["severity"] == "error"] == []
    delete_event(world.ledger, bytes(second.eventId))
    tampered = trail(world, record, "regulator", "?verify=true")
    codes = [f["code"] for f in tampered["findings"] if f["severity"] == "error"]
    assert codes == ["trail-incomplete"]


def test_a_requests_events_and_index_proof_are_proved_at_one_checkpoint(world: World) -> None:
    """A checkpoint landing between a request's reads must not make its index proof list
    leaves its events were served as pending (a false trail-incomplete): one checkpoint is
    read per request and used for both."""
    record = world.a.record("mrn-race")
    first = world.a.access(record, world.p.address)
    world.submit(world.a, first)
    world.ledger.anchor_now()
    world.ledger.anchor_now()
    served_at = world.ledger.serving_checkpoint()
    second = world.a.access(record, world.p.address)
    world.submit(world.a, second)
    world.ledger.anchor_now()  # lands between the request's reads
    world.ledger.anchor_now()
    assert world.ledger.serving_checkpoint()[0].tree_size > served_at[0].tree_size
    views = world.ledger.trail(record, served_at=served_at)
    proof = world.ledger.record_index(record, served_at)
    assert proof is not None
    assert proof.treeSize == served_at[0].tree_size
    assert [v.bundle.treeSize for v in views] == [proof.treeSize, 0]  # the second: pending
    assert proof.leafIndexes == [views[0].bundle.leafIndex]


def test_an_institution_named_as_a_patient_gets_no_patients_list(world: World) -> None:
    """The patient's whole list goes to the patient (signed in as one) and regulators, not to
    an institution whose address some event names as its patient."""
    record = world.a.record("mrn-self")
    world.submit(world.a, world.a.access(record, world.a.address))
    world.ledger.anchor_now()
    world.ledger.anchor_now()
    body = search(world, "institution_a", patient=world.a.address)
    assert body["events"] != []
    assert body["index"] is None
    assert search(world, "regulator", patient=world.a.address)["index"] is not None
