"""Happy paths of consent: a patient signs in, relays a grant and a revocation; grants,
accesses and access decisions read back."""

from __future__ import annotations

from ledger.events import Purpose, purposes_mask
from tests.api.world import World, bearer, sign_in
from tests.support.actors import Patient


def h(value: bytes) -> str:
    return "0x" + value.hex()


def test_a_patient_grants_then_revokes_through_the_api(world: World) -> None:
    patient = Patient()
    session = bearer(sign_in(world.client, patient.account))
    record = world.a.record("mrn-consent")
    nonce = world.client.get(f"/v1/patients/{patient.address}/consent-nonce").json()
    assert nonce == {"patient": patient.address, "nonce": 0}

    body = world.grant_body(patient, world.b.address, record)
    created = world.client.post("/v1/grants", json=body, headers=session)
    assert created.status_code == 201, created.text
    grant = created.json()
    assert grant["patient"] == patient.address
    assert grant["grantee"] == world.b.address
    assert grant["recordRef"] == h(record)
    assert grant["allRecords"] is False
    assert grant["purposes"] == purposes_mask([Purpose.TREATMENT])
    assert grant["purposeNames"] == ["treatment"]
    assert grant["notBefore"] == body["notBefore"]
    assert grant["expiresAt"] == body["expiresAt"]
    assert grant["revoked"] is False
    assert grant["revokedAt"] == 0
    assert world.client.get(f"/v1/patients/{patient.address}/consent-nonce").json()["nonce"] == 1

    read = world.client.get(f"/v1/grants/{grant['grantId']}", headers=session)
    assert read.json() == grant
    listed = world.client.get(f"/v1/patients/{patient.address}/grants", headers=session).json()
    assert listed == {"patient": patient.address, "grants": [grant], "next": None}

    revoke = world.revoke_body(patient, grant["grantId"])
    revoked = world.client.post(
        f"/v1/grants/{grant['grantId']}/revoke", json=revoke, headers=session
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] is True
    assert revoked.json()["revokedAt"] > 0


def test_access_decisions_permit_on_a_grant_and_deny_without(world: World) -> None:
    patient = Patient()
    record = world.a.record("mrn-decide")
    # A asks as the record's custodian: the log shows it holds the record.
    world.submit(
        world.a,
        world.a.access(record, patient.address, occurredAt=world.ledger.chain.latest_timestamp()),
    )
    ask = {
        "grantee": world.b.address,
        "patient": patient.address,
        "recordRef": h(record),
        "purpose": int(Purpose.TREATMENT),
    }
    headers = world.headers("institution_a")
    denied = world.client.post("/v1/access-decisions", json=ask, headers=headers).json()
    assert denied["permit"] is False
    assert denied["grantId"] is None
    assert denied["reason"] == "no-grant"

    grant = world.relay_grant(patient, world.b.address, record)
    at = world.ledger.chain.latest_timestamp()
    permitted = world.client.post(
        "/v1/access-decisions", json={**ask, "at": at}, headers=headers
    ).json()
    assert permitted == {"permit": True, "grantId": grant, "reason": "covered", "at": at}

    research = world.client.post(
        "/v1/access-decisions",
        json={**ask, "at": at, "purpose": int(Purpose.RESEARCH)},
        headers=headers,
    ).json()
    assert research["permit"] is False
    assert research["reason"] == "purpose-not-covered"


def test_a_patient_sees_every_access_to_their_records(world: World) -> None:
    answer = world.client.get(
        f"/v1/patients/{world.p.address}/accesses", headers=world.headers("patient_p")
    )
    assert answer.status_code == 200
    accesses = answer.json()["accesses"]
    assert h(world.event_a) in [a["eventId"] for a in accesses]
    assert {a["type"] for a in accesses} == {"RecordAccess"}
    assert all(a["bundle"]["event"]["event"]["patient"] == world.p.address for a in accesses)


def test_an_institution_lists_only_the_grants_made_to_it(world: World) -> None:
    url = f"/v1/patients/{world.p.address}/grants"
    to_b = world.client.get(url, headers=world.headers("institution_b")).json()["grants"]
    assert world.grant_p in [g["grantId"] for g in to_b]
    assert {g["grantee"] for g in to_b} == {world.b.address}
    assert world.client.get(url, headers=world.headers("institution_a")).json()["grants"] == []


# ------------------------------------------------------------- a version-1-only deployment


def test_a_version_1_deployment_serves_no_consent_v2(world: World) -> None:
    assert "consentV2" not in world.client.get("/v1/typed-data").json()
    assert "consentRegistryV2" not in world.client.get("/v1/deployment").json()


def test_a_version_2_grant_on_a_version_1_deployment_is_409(world: World) -> None:
    from ledger.consent import consent_domain_v2, new_grant, revocation_root

    now = world.ledger.chain.latest_timestamp()
    domain = consent_domain_v2(world.ledger.deployment.chain_id, "0x" + "22" * 20)
    grant = new_grant(
        root=revocation_root(bytes(65)),
        patient=world.p.address,
        grantee=world.b.address,
        record_ref=world.record_a,
        purposes=[Purpose.TREATMENT],
        not_before=now - 60,
        expires_at=now + 3600,
        deadline=now + 600,
        now=now,
    ).sign(domain, bytes(world.p.account.key))
    answer = world.client.post(
        "/v1/grants", json=grant.as_json(), headers=world.headers("patient_p")
    )
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "grant-version-refused"


def test_a_revocation_secret_for_a_version_1_grant_is_409(world: World) -> None:
    answer = world.client.post(
        f"/v1/grants/{world.grant_p}/revoke",
        json={"secret": "0x" + "33" * 32},
        headers=world.headers("patient_p"),
    )
    assert answer.status_code == 409, answer.text
    assert answer.json()["code"] == "grant-version-refused"
    assert world.ledger.grant(world.grant_p).revoked is False
