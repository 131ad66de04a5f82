"""The main happy path over HTTP with the store on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.world import World, bearer, open_world, sign_in
from tests.support.actors import Patient

pytestmark = pytest.mark.postgres


def h(value: bytes) -> str:
    return "0x" + value.hex()


def test_submit_anchor_prove_and_consent_on_postgres(tmp_path: Path) -> None:
    with open_world(tmp_path, "postgres") as world:
        _happy_path(world)


def _happy_path(world: World) -> None:
    assert world.ledger.store.url.get_backend_name() == "postgresql"
    a, pharmacy = world.a, world.env.pharmacy
    patient = Patient()
    session = bearer(sign_in(world.client, patient.account))
    record = a.record("mrn-pg")
    grant = world.client.post(
        "/v1/grants", json=world.grant_body(patient, pharmacy.address, record), headers=session
    )
    assert grant.status_code == 201, grant.text
    at = world.ledger.chain.latest_timestamp()
    own = a.access(record, patient.address, occurredAt=at)
    by_pharmacy = pharmacy.access(
        record,
        patient.address,
        custodian=a.address,
        grantId=grant.json()["grantId"],
        occurredAt=at,
    )
    world.submit(a, own)
    receipts = world.submit(pharmacy, by_pharmacy)
    assert receipts[0]["consent"] == "covered"
    world.ledger.anchor_now()
    world.ledger.anchor_now()
    trail = world.client.get(f"/v1/records/{h(record)}/trail?verify=true", headers=session)
    assert trail.status_code == 200, trail.text
    events = trail.json()["events"]
    assert [e["eventId"] for e in events] == [h(own.eventId), h(by_pharmacy.eventId)]
    assert all(e["status"] == "confirmed" and e["findings"] == [] for e in events), events
    one = world.client.get(f"/v1/events/{h(own.eventId)}", headers=world.headers("institution_a"))
    assert one.json()["bundle"]["checkpoint"]["treeSize"] == world.ledger.log.head().size
    again = sign_in(world.client, patient.account)
    assert world.client.get("/v1/auth/whoami", headers=bearer(again)).json()["role"] == "patient"


def test_consent_v2_grants_kept_committed_and_judged_on_postgres(tmp_path: Path) -> None:
    """Consent version 2's store (``consent_grants``) on PostgreSQL: kept, paged by commitment,
    committed in one batch, judged at ingest."""
    with open_world(tmp_path, "postgres", embedded_consent_v2=True) as world:
        pharmacy, patient = world.env.pharmacy, Patient()
        session = bearer(sign_in(world.client, patient.account))
        record = world.a.record("mrn-pg-v2")
        grants = [world.grant_v2(patient, pharmacy.address, record) for _ in range(3)]
        posted = [
            world.client.post("/v1/grants", json=g.as_json(), headers=session) for g in grants
        ]
        assert [p.status_code for p in posted] == [202, 202, 202]
        assert world.ledger.commit_grants_now() == 3
        ids = sorted(int(p.json()["grantId"]) for p in posted)
        page = world.client.get(
            f"/v1/patients/{patient.address}/grants", params={"limit": 2}, headers=session
        ).json()
        assert [g["grantId"] for g in page["grants"]] == ids[:2]
        rest = world.client.get(
            f"/v1/patients/{patient.address}/grants",
            params={"after": page["next"]},
            headers=session,
        ).json()
        assert [(g["grantId"], g["status"]) for g in rest["grants"]] == [(ids[2], "active")]
        access = pharmacy.access(
            record,
            patient.address,
            custodian=world.a.address,
            grantId=ids[0],
            occurredAt=world.ledger.chain.latest_timestamp(),
        )
        assert world.submit(pharmacy, access)[0]["consent"] == "covered"
