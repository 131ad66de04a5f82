"""Happy paths of the regulator's admin API and of credentials."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import bootstrap_admin_key, create_app
from api.auth import Credentials
from ledger.settings import ConfigurationError
from ledger.store.models import ApiKeyRow
from tests.api.world import World, bearer, event_json, later, sign_in
from tests.support.actors import Institution, Patient


def test_a_regulator_onboards_an_institution_that_then_submits(world: World) -> None:
    regulator = world.headers("regulator")
    pharmacy = Institution("Night Pharmacy", world.env.pharmacy.kind, world.ledger.domain)
    body = {"address": pharmacy.address, "kind": "pharmacy", "name": pharmacy.name}
    created = world.client.post("/v1/institutions", json=body, headers=regulator)
    assert created.status_code == 201, created.text
    info = created.json()
    assert info["address"] == pharmacy.address
    assert info["kind"] == "pharmacy"
    assert info["name"] == pharmacy.name
    assert info["active"] is True
    assert info["transactionHash"].startswith("0x")

    issued = world.client.post(
        "/v1/api-keys",
        json={"role": "institution", "institution": pharmacy.address, "label": "night desk"},
        headers=regulator,
    )
    assert issued.status_code == 201
    key = issued.json()
    assert key["key"].startswith("mtk_")
    assert key["role"] == "institution"
    assert key["institution"] == pharmacy.address
    assert key["revokedAt"] is None
    whoami = world.client.get("/v1/auth/whoami", headers=bearer(key["key"])).json()
    assert whoami == {
        "role": "institution",
        "credentialId": key["keyId"],
        "address": pharmacy.address,
        "expiresAt": None,
    }
    listed = world.client.get("/v1/api-keys", headers=regulator).json()["keys"]
    assert {k["keyId"]: k for k in listed}[key["keyId"]] == {
        k: v for k, v in key.items() if k != "key"
    }

    record = world.a.record("mrn-night")
    # A pharmacy cannot hold a record: it reads the hospital's (break-glass, with a reason).
    access = pharmacy.access(
        record,
        world.p.address,
        custodian=world.a.address,
        reasonHash=b"\x01" * 32,
        occurredAt=world.ledger.chain.latest_timestamp(),
    )
    answer = world.client.post(
        "/v1/events",
        json={"events": [event_json(pharmacy.sign(access))]},
        headers=bearer(key["key"]),
    )
    assert answer.status_code == 200, answer.text

    suspended = world.client.post(f"/v1/institutions/{pharmacy.address}/suspend", headers=regulator)
    assert suspended.json()["active"] is False
    later = pharmacy.access(
        record,
        world.p.address,
        custodian=world.a.address,
        reasonHash=b"\x01" * 32,
        occurredAt=world.ledger.chain.latest_timestamp(),
    )
    refused = world.client.post(
        "/v1/events",
        json={"events": [event_json(pharmacy.sign(later))]},
        headers=bearer(key["key"]),
    )
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["code"] == "institution-suspended"
    reinstated = world.client.post(
        f"/v1/institutions/{pharmacy.address}/reinstate", headers=regulator
    )
    assert reinstated.json()["active"] is True
    read = world.client.get(f"/v1/institutions/{pharmacy.address}", headers=bearer(key["key"]))
    assert read.json() == {**reinstated.json(), "transactionHash": None}

    revoked = world.client.delete(f"/v1/api-keys/{key['keyId']}", headers=regulator)
    assert revoked.json()["revokedAt"] is not None
    assert world.client.get("/v1/auth/whoami", headers=bearer(key["key"])).status_code == 401
    again = world.client.delete(f"/v1/api-keys/{key['keyId']}", headers=regulator)
    assert again.json() == revoked.json()


def test_keys_are_stored_hashed_and_shown_once(world: World) -> None:
    issued = world.client.post(
        "/v1/api-keys",
        json={"role": "regulator", "label": "audit"},
        headers=world.headers("regulator"),
    ).json()
    with world.ledger.store.read() as connection:
        rows = connection.execute(ApiKeyRow.__table__.select()).all()  # type: ignore[attr-defined]
    stored = {r.key_id: r for r in rows}[issued["keyId"]]
    assert issued["key"].encode() not in bytes(stored.secret_hash)
    assert len(bytes(stored.secret_hash)) == 32
    assert all(issued["key"] not in str(value) for value in stored)
    assert (
        "key"
        not in world.client.get("/v1/api-keys", headers=world.headers("regulator")).json()["keys"][
            0
        ]
    )


def test_the_bootstrap_key_is_a_regulator_and_a_configured_admin_key_is_adopted(
    world: World,
) -> None:
    token = bootstrap_admin_key(world.ledger)
    whoami = world.client.get("/v1/auth/whoami", headers=bearer(token)).json()
    assert whoami["role"] == "regulator"

    _info, configured = Credentials(world.ledger.store).issue_key("regulator", None, "x")
    world.credentials().revoke_key(_info.key_id)
    fresh = "mtk_00000000000000aa." + "B" * 43
    client = TestClient(create_app(world.ledger, admin_key=fresh))
    assert client.get("/v1/auth/whoami", headers=bearer(fresh)).json()["role"] == "regulator"
    # Adopting the same key again (a restart) is harmless.
    client = TestClient(create_app(world.ledger, admin_key=fresh))
    assert client.get("/v1/auth/whoami", headers=bearer(fresh)).status_code == 200
    assert client.get("/v1/auth/whoami", headers=bearer(configured)).status_code == 401


def test_a_malformed_admin_key_is_a_configuration_error(world: World) -> None:
    with pytest.raises(ConfigurationError):
        create_app(world.ledger, admin_key="letmein")


def test_a_patient_session_is_bound_to_the_signing_wallet(world: World) -> None:
    patient = Patient()
    token = sign_in(world.client, patient.account)
    assert token.startswith("mtp_")
    whoami = world.client.get("/v1/auth/whoami", headers=bearer(token)).json()
    assert whoami["role"] == "patient"
    assert whoami["address"] == patient.address
    assert whoami["expiresAt"] is not None
    # A session never outlives its sign-in message.
    capped = sign_in(world.client, patient.account, expiration_time=later(30))
    expires = world.client.get("/v1/auth/whoami", headers=bearer(capped)).json()["expiresAt"]
    assert expires <= int(later(30).timestamp())
