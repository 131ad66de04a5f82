"""Consent version 2 through the API (issue 17, /work wire): a deployment with ConsentRegistryV2
keeps the grants patients sign off chain, commits their commitments in batches, serves them
only to their patient, their grantee and regulators, revokes them with their secret, and
judges access decisions by them. Every refusal is its own test."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.consent import SignedGrant
from ledger.errors import SignatureError
from ledger.events import InstitutionKind, Purpose, purposes_mask
from tests.api.test_errors import problem
from tests.api.world import World, bearer, open_world, sign_in
from tests.contracts.conftest import deploy_test_contract
from tests.support.actors import Patient


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with open_world(tmp_path_factory.mktemp("world-v2"), embedded_consent_v2=True) as built:
        yield built


def h(value: bytes) -> str:
    return "0x" + value.hex()


def body_of(grant: SignedGrant) -> dict[str, Any]:
    return grant.as_json()


def post(world: World, grant: SignedGrant | dict[str, Any], role: str = "patient_p") -> Any:
    body = grant if isinstance(grant, dict) else body_of(grant)
    return world.client.post("/v1/grants", json=body, headers=world.headers(role))


def fresh_patient(world: World) -> tuple[Patient, dict[str, str]]:
    patient = Patient()
    return patient, bearer(sign_in(world.client, patient.account))


# --------------------------------------------------------------------------- the happy path


def test_typed_data_serves_the_version_2_domain(world: World) -> None:
    served = world.client.get("/v1/typed-data").json()["consentV2"]
    deployment = world.client.get("/v1/deployment").json()
    assert served["domain"] == {
        "name": "medtrail",
        "version": "2",
        "chainId": deployment["chainId"],
        "verifyingContract": deployment["consentRegistryV2"],
    }
    assert [f["name"] for f in served["types"]["Grant"]] == [
        "patient",
        "grantee",
        "recordRef",
        "purposes",
        "notBefore",
        "expiresAt",
        "deadline",
        "salt",
        "revocationHash",
    ]
    assert served["types"]["RevocationKey"] == [{"name": "patient", "type": "address"}]
    assert world.ledger.consent_v2_domain.as_json() == served["domain"]


def test_a_grant_is_kept_pending_then_committed_in_one_batch(world: World) -> None:
    patient, session = fresh_patient(world)
    record = world.a.record("mrn-v2-happy")
    grants = [world.grant_v2(patient, world.b.address, record) for _ in range(3)]
    answers = [world.client.post("/v1/grants", json=g.as_json(), headers=session) for g in grants]
    assert [a.status_code for a in answers] == [202, 202, 202], answers[0].text
    first = answers[0].json()
    commitment = grants[0].commitment(world.ledger.consent_v2_domain)
    assert first == {
        "version": 2,
        "grantId": int.from_bytes(commitment, "big"),
        "commitment": h(commitment),
        **grants[0].as_json(),
        "allRecords": False,
        "purposeNames": ["treatment"],
        "committedAt": None,
        "revokedAt": None,
        "revoked": False,
        "status": "pending",
    }
    # The same signed grant again: 200, the same grant, nothing kept twice.
    again = world.client.post("/v1/grants", json=grants[0].as_json(), headers=session)
    assert (again.status_code, again.json()) == (200, first)

    block = world.ledger.chain.block_number()
    assert world.ledger.commit_grants_now() == 3
    assert world.ledger.chain.block_number() == block + 1  # one transaction for the three
    assert world.ledger.commit_grants_now() == 0
    read = world.client.get(f"/v1/grants/{first['grantId']}", headers=session).json()
    assert read["status"] == "active"
    assert read["committedAt"] == world.ledger.chain.consent_v2.committed_at(commitment) > 0


def test_the_patient_s_list_holds_both_versions_and_pages(world: World) -> None:
    record = world.a.record("mrn-v2-list")
    v2_ids = sorted(world.keep_grant_v2(world.q, world.b.address, record) for _ in range(2))
    session = world.headers("patient_q")
    page = world.client.get(
        f"/v1/patients/{world.q.address}/grants", params={"limit": 1}, headers=session
    ).json()
    assert [g["grantId"] for g in page["grants"]] == [v2_ids[0]]
    assert page["next"] == v2_ids[0]
    rest = world.client.get(
        f"/v1/patients/{world.q.address}/grants",
        params={"after": page["next"]},
        headers=session,
    ).json()
    assert [g["grantId"] for g in rest["grants"]] == [v2_ids[1]]
    assert rest["next"] is None
    assert all(g["version"] == 2 and g["status"] == "active" for g in rest["grants"])
    # The grantee sees them; another institution does not.
    as_b = world.client.get(
        f"/v1/patients/{world.q.address}/grants", headers=world.headers("institution_b")
    ).json()
    assert {g["grantId"] for g in as_b["grants"]} >= set(v2_ids)
    as_a = world.client.get(
        f"/v1/patients/{world.q.address}/grants", headers=world.headers("institution_a")
    ).json()
    assert as_a["grants"] == []


@pytest.mark.parametrize(
    ("role", "status"),
    [
        ("regulator", 200),
        ("patient_p", 200),
        ("institution_b", 200),
        ("institution_a", 404),
        ("patient_q", 404),
        ("anonymous", 401),
    ],
)
def test_only_the_patient_the_grantee_and_regulators_see_a_grant(
    world: World, role: str, status: int
) -> None:
    answer = world.client.get(f"/v1/grants/{world.grant_p}", headers=world.headers(role))
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.json()["grantId"] == world.grant_p
    elif status == 404:
        problem(answer, 404, "not-found")


def test_a_grant_is_revoked_with_its_secret(world: World) -> None:
    patient, session = fresh_patient(world)
    record = world.a.record("mrn-v2-revoke")
    grant = world.grant_v2(patient, world.b.address, record)
    grant_id = world.client.post("/v1/grants", json=grant.as_json(), headers=session).json()[
        "grantId"
    ]
    world.ledger.commit_grants_now()
    secret = world.secret_of(patient, grant)
    answer = world.client.post(
        f"/v1/grants/{grant_id}/revoke", json={"secret": h(secret)}, headers=session
    )
    assert answer.status_code == 200, answer.text
    revoked = answer.json()
    assert revoked["revoked"] is True
    assert revoked["status"] == "revoked"
    assert revoked["revokedAt"] >= revoked["committedAt"]
    # Revoking again (or after the patient revoked on chain themselves) answers the same.
    again = world.client.post(
        f"/v1/grants/{grant_id}/revoke", json={"secret": h(secret)}, headers=session
    )
    assert (again.status_code, again.json()) == (200, revoked)


def test_a_revocation_sent_straight_to_the_chain_shows(world: World) -> None:
    from ledger.chain.embedded import funded_account

    patient, session = fresh_patient(world)
    grant = world.grant_v2(patient, world.b.address, world.a.record("mrn-v2-direct"))
    grant_id = world.client.post("/v1/grants", json=grant.as_json(), headers=session).json()[
        "grantId"
    ]
    world.ledger.commit_grants_now()
    burner = funded_account(world.ledger.chain.w3)
    world.ledger.chain.consent_v2.revoke(world.secret_of(patient, grant), burner)
    read = world.client.get(f"/v1/grants/{grant_id}", headers=session).json()
    assert read["status"] == "revoked"
    assert read["revokedAt"] == world.ledger.chain.latest_timestamp()


def test_access_decisions_judge_version_2_grants(world: World) -> None:
    patient, session = fresh_patient(world)
    record = world.a.record("mrn-v2-decide")
    grant = world.grant_v2(patient, world.b.address, record)
    grant_id = world.client.post("/v1/grants", json=grant.as_json(), headers=session).json()[
        "grantId"
    ]
    question = {
        "grantee": world.b.address,
        "patient": patient.address,
        "recordRef": h(record),
        "purpose": int(Purpose.TREATMENT),
    }

    def decide(**kw: Any) -> dict[str, Any]:
        answer = world.client.post(
            "/v1/access-decisions", json={**question, **kw}, headers=world.headers("regulator")
        )
        assert answer.status_code == 200, answer.text
        decision: dict[str, Any] = answer.json()
        return decision

    now = world.ledger.chain.latest_timestamp()
    assert decide(at=now)["reason"] == "not-found"  # kept, not yet committed
    world.ledger.commit_grants_now()
    now = world.ledger.chain.latest_timestamp()
    assert (decide(at=now)["permit"], decide(at=now)["grantId"]) == (True, grant_id)
    assert decide(at=now, purpose=int(Purpose.RESEARCH))["reason"] == "purpose-not-covered"
    assert decide(at=grant.expires_at)["reason"] == "expired"
    world.client.post(
        f"/v1/grants/{grant_id}/revoke",
        json={"secret": h(world.secret_of(patient, grant))},
        headers=session,
    )
    later = world.ledger.chain.latest_timestamp()
    assert decide(at=later)["reason"] == "revoked"
    assert decide(at=now)["permit"] is True  # before the revocation's block: still covered


def test_a_contract_wallet_s_grant_is_checked_with_erc1271(world: World) -> None:
    """A patient whose address is an ERC-1271 wallet (they cannot sign in with SIWE, which
    covers keys only: the ledger's check, below the API)."""
    from ledger.chain.embedded import funded_account

    ledger = world.ledger
    owner = funded_account(ledger.chain.w3)
    wallet = deploy_test_contract(ledger.chain, "TestERC1271Wallet", owner, owner.address).address
    patient = Patient()
    grant = world.grant_v2(patient, world.b.address, world.a.record("mrn-v2-1271"))
    as_wallet = dataclasses.replace(grant, patient=wallet).sign(
        ledger.consent_v2_domain, bytes(owner.key)
    )
    view, new = ledger.accept_grant_v2(as_wallet)
    assert new
    assert (view.patient, view.status) == (wallet, "pending")
    stranger = dataclasses.replace(as_wallet, salt=bytes(31) + b"\x01").sign(
        ledger.consent_v2_domain, bytes(patient.account.key)
    )
    with pytest.raises(SignatureError, match="ERC-1271"):
        ledger.accept_grant_v2(stranger)


# --------------------------------------------------------------------------- refusals


def test_a_grant_that_could_never_cover_an_access_is_422(world: World) -> None:
    now = world.ledger.chain.latest_timestamp()
    grant = world.grant_v2(world.p, world.b.address, world.a.record("mrn-v2-terms"))
    expired = dataclasses.replace(grant, not_before=now - 100, expires_at=now - 10).sign(
        world.ledger.consent_v2_domain, bytes(world.p.account.key)
    )
    problem(post(world, expired), 422, "invalid-grant-terms")


def test_a_grant_whose_deadline_passed_is_422(world: World) -> None:
    now = world.ledger.chain.latest_timestamp()
    grant = world.grant_v2(world.p, world.b.address, world.a.record("mrn-v2-deadline"))
    late = dataclasses.replace(grant, deadline=now - 1).sign(
        world.ledger.consent_v2_domain, bytes(world.p.account.key)
    )
    problem(post(world, late), 422, "invalid-grant-terms")


def test_a_grant_not_signed_by_its_patient_is_422(world: World) -> None:
    forged = world.grant_v2(
        world.p, world.b.address, world.a.record("mrn-v2-forged"), signer=Patient().account
    )
    problem(post(world, forged), 422, "invalid-signature")
    assert world.ledger.stored_grants.get(forged.commitment(world.ledger.consent_v2_domain)) is None


def test_a_malformed_signature_is_422(world: World) -> None:
    grant = world.grant_v2(world.p, world.b.address, world.a.record("mrn-v2-badsig"))
    problem(
        post(world, {**grant.as_json(), "signature": "0x" + "00" * 65}), 422, "invalid-signature"
    )


def test_a_grant_with_a_short_salt_is_422(world: World) -> None:
    grant = world.grant_v2(world.p, world.b.address, world.a.record("mrn-v2-salt"))
    answer = post(world, {**grant.as_json(), "salt": "0x1234"})
    assert answer.status_code == 422
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_grant_to_an_unregistered_grantee_is_409(world: World) -> None:
    stranger = Patient()  # an address no registry knows
    grant = world.grant_v2(world.p, stranger.address, world.a.record("mrn-v2-unknown"))
    problem(post(world, grant), 409, "grantee-not-active")


def test_a_grant_to_a_suspended_grantee_is_409(world: World) -> None:
    suspended = world.new_institution(InstitutionKind.PHARMACY)
    world.ledger.suspend_institution(suspended.address)
    grant = world.grant_v2(world.p, suspended.address, world.a.record("mrn-v2-suspended"))
    body = problem(post(world, grant), 409, "grantee-not-active")
    assert "suspended" in body["detail"]


def test_a_version_1_grant_on_a_version_2_deployment_is_409(world: World) -> None:
    body = {
        "patient": world.p.address,
        "grantee": world.b.address,
        "recordRef": h(world.a.record("mrn-v2-v1body")),
        "purposes": purposes_mask([Purpose.TREATMENT]),
        "notBefore": 0,
        "expiresAt": world.ledger.chain.latest_timestamp() + 3600,
        "deadline": world.ledger.chain.latest_timestamp() + 600,
        "signature": "0x" + "11" * 65,
    }
    answer = problem(post(world, body), 409, "grant-version-refused")
    assert answer["consentRegistryV2"] == world.ledger.deployment.consent_registry_v2


def test_a_patient_posts_only_their_own_grants(world: World) -> None:
    grant = world.grant_v2(world.p, world.b.address, world.a.record("mrn-v2-other"))
    problem(post(world, grant, role="patient_q"), 403, "forbidden")


def test_an_institution_cannot_post_a_grant(world: World) -> None:
    grant = world.grant_v2(world.p, world.b.address, world.a.record("mrn-v2-inst"))
    problem(post(world, grant, role="institution_b"), 403, "forbidden")


def _kept(world: World, record_name: str) -> tuple[SignedGrant, int]:
    grant = world.grant_v2(world.p, world.b.address, world.a.record(record_name))
    return grant, int(post(world, grant).json()["grantId"])


def test_a_wrong_revocation_secret_is_422(world: World) -> None:
    _grant, grant_id = _kept(world, "mrn-v2-wrongsecret")
    answer = world.client.post(
        f"/v1/grants/{grant_id}/revoke",
        json={"secret": h(bytes(32))},
        headers=world.headers("patient_p"),
    )
    problem(answer, 422, "invalid-revocation-secret")
    assert world.ledger.grant_v2(grant_id).revoked_at is None


def test_another_patient_cannot_revoke_a_grant(world: World) -> None:
    grant, grant_id = _kept(world, "mrn-v2-notyours")
    answer = world.client.post(
        f"/v1/grants/{grant_id}/revoke",
        json={"secret": h(world.secret_of(world.p, grant))},
        headers=world.headers("patient_q"),
    )
    problem(answer, 404, "not-found")
    assert world.ledger.grant_v2(grant_id).revoked_at is None


def test_the_grantee_cannot_revoke_a_grant(world: World) -> None:
    grant, grant_id = _kept(world, "mrn-v2-grantee")
    answer = world.client.post(
        f"/v1/grants/{grant_id}/revoke",
        json={"secret": h(world.secret_of(world.p, grant))},
        headers=world.headers("institution_b"),
    )
    problem(answer, 403, "forbidden")


def test_a_version_1_revocation_of_a_version_2_grant_is_409(world: World) -> None:
    _grant, grant_id = _kept(world, "mrn-v2-v1revoke")
    answer = world.client.post(
        f"/v1/grants/{grant_id}/revoke",
        json={"deadline": 1, "signature": "0x" + "11" * 65},
        headers=world.headers("patient_p"),
    )
    problem(answer, 409, "grant-version-refused")


def test_an_unknown_grant_is_404(world: World) -> None:
    answer = world.client.get(f"/v1/grants/{2**255 + 7}", headers=world.headers("regulator"))
    problem(answer, 404, "not-found")
    revoke = world.client.post(
        f"/v1/grants/{2**255 + 7}/revoke",
        json={"secret": h(bytes(32))},
        headers=world.headers("patient_p"),
    )
    problem(revoke, 404, "not-found")
