"""The patient page's consent version 2 (issue 17) in Debian's chromium, on a deployment with
a ConsentRegistryV2: consent.js signs a grant and derives its revocation secret as
ledger/consent.py does, and the chain takes the page's grant and the page's revocation; end to
end, the patient gives, withdraws and cancels permissions on the page through the service.

The first tests drive the page module directly (``import('/static/patient/consent.js')``) with
the injected test wallet; its ``post`` there only records what the page would send (a
recording stub, not a service), which is checked against the Python reference and presented to
the real contract. The last test goes through the page and the real service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from ledger.chain.consent_client import ConsentV2
from ledger.chain.embedded import funded_account
from ledger.consent import (
    SignedGrant,
    revocation_hash,
    revocation_key_typed_data,
    revocation_root,
    revocation_secret,
    typed_data_v2,
)
from ledger.eip712 import recover
from ledger.events import Purpose
from ledger.rules import GrantStatus
from tests.api.test_patient_page import (
    Site,
    _open,
    _row,
    _shoot,
    _sign_in,
    _wallet,
    open_site,
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The page's seeded site on a consent-version-2 deployment (the service serves
    ``consentV2``, keeps and commits version-2 grants)."""
    with open_site(tmp_path_factory.mktemp("patient-v2"), embedded_consent_v2=True) as running:
        yield running


#: Runs consent.js's version 2 in the page: `steps` is a list of [name, args]; each answer, or
#: the error it threw, is recorded; `posts` are what the page would send.
DRIVE = """async ([typed, steps]) => {
    const C = await import('/static/patient/consent.js');
    const posts = [];
    const post = async (path, body) => { posts.push([path, body]); return body; };
    const context = { typedData: typed, provider: window.ethereum,
                      account: (await window.ethereum.request({method: 'eth_accounts'}))[0],
                      post };
    const out = [];
    for (const [name, args] of steps) {
      try {
        const answer = await C[name]({ ...context, ...args });
        out.push({ ok: answer === undefined ? null : answer });
      } catch (e) { out.push({ error: e.message, code: e.code ?? null }); }
    }
    return { out, posts, version: C.version(typed) };
}"""


def _typed(site: Site) -> tuple[dict[str, Any], ConsentV2]:
    """The served typed data, checked to carry the deployment's ConsentRegistryV2."""
    ledger = site.world.ledger
    registry_v2 = ledger.deployment.consent_registry_v2
    assert registry_v2 is not None
    registry = ConsentV2(ledger.chain.w3, registry_v2)
    typed = site.world.client.get("/v1/typed-data").json()
    assert typed["consentV2"] == typed_data_v2(registry.domain)
    return typed, registry


def _terms(site: Site, registry: ConsentV2) -> dict[str, Any]:
    now = site.world.ledger.chain.latest_timestamp()
    return {
        "grantee": site.clinic.address,
        "recordRef": None,
        "purposes": 1,
        "notBefore": now - 60,
        "expiresAt": now + 86_400,
    }


def _status(site: Site, registry: ConsentV2, grant: SignedGrant) -> GrantStatus:
    return registry.status_at(
        grant.grant_id(registry.domain),
        grant,
        patient=grant.patient,
        grantee=grant.grantee,
        record_ref=b"\x07" * 32,
        purpose=0,
        time=site.world.ledger.chain.latest_timestamp(),
    )


def _reference_root(account: LocalAccount, registry: ConsentV2) -> bytes:
    message = revocation_key_typed_data(registry.domain, account.address)
    return revocation_root(bytes(account.sign_typed_data(full_message=message).signature))


def test_the_pages_grant_and_revocation_are_the_references_and_the_chain_takes_them(
    site: Site,
) -> None:
    typed, registry = _typed(site)
    wallet = _wallet(site)
    ctx, page, _ = _open(site, wallet)
    try:
        terms = _terms(site, registry)
        first = page.evaluate(DRIVE, [typed, [["grantV2", terms], ["grantV2", terms]]])
        assert first["version"] == 2
        assert [o.get("error") for o in first["out"]] == [None, None]
        # The wallet is asked for the revocation key once per session, then for each grant.
        assert [d["primaryType"] for d in wallet.typed] == ["RevocationKey", "Grant", "Grant"]
        (path, body), (_, other) = first["posts"]
        assert path == "/v1/grants"
        grant = SignedGrant.from_json(body)
        domain = registry.domain
        # What the page signed: the patient's own grant, over the contract's struct.
        assert recover(grant.digest(domain), grant.signature) == site.world.p.address
        assert (grant.grantee, grant.purposes, grant.record_ref) == (
            site.clinic.address,
            1,
            bytes(32),
        )
        # A fresh salt per grant, and the revocation hash ledger/consent.py derives.
        assert grant.salt != SignedGrant.from_json(other).salt
        root = _reference_root(site.world.p.account, registry)
        assert grant.revocation_hash == revocation_hash(revocation_secret(root, grant.salt))
        assert int(time.time()) < grant.deadline <= int(time.time()) + 600

        # The operator commits it: the chain judges the page's grant valid.
        registry.commit([grant.commitment(domain)], funded_account(registry.w3))
        assert _status(site, registry, grant) is GrantStatus.VALID

        # The page revokes it: the secret it sends, presented by anyone, revokes it.
        served = {
            **body,
            "version": 2,
            "grantId": grant.grant_id(domain),
            "commitment": "0x" + grant.commitment(domain).hex(),
            "committedAt": registry.committed_at(grant.commitment(domain)),
            "revoked": False,
        }
        second = page.evaluate(DRIVE, [typed, [["revokeV2", {"grant": served}]]])
        assert second["out"][0].get("error") is None
        [(revoke_path, revoke_body)] = second["posts"]
        # The id in the path is exact beyond 2^53 (the page uses the commitment, not a double).
        assert revoke_path == f"/v1/grants/{grant.grant_id(domain)}/revoke"
        secret = bytes.fromhex(revoke_body["secret"][2:])
        assert secret == revocation_secret(root, grant.salt)
        assert [d["primaryType"] for d in wallet.typed][3:] == []  # the root was kept
        registry.revoke(secret, funded_account(registry.w3))
        assert _status(site, registry, grant) is GrantStatus.REVOKED
    finally:
        ctx.close()


def test_cancel_reveals_only_the_grants_waiting_to_be_committed(site: Site) -> None:
    typed, registry = _typed(site)
    wallet = _wallet(site)
    ctx, page, _ = _open(site, wallet)
    try:
        terms = _terms(site, registry)
        made = page.evaluate(DRIVE, [typed, [["grantV2", terms]] * 3])
        domain = registry.domain
        grants = [SignedGrant.from_json(body) for _, body in made["posts"]]

        def served(grant: SignedGrant, **state: Any) -> dict[str, Any]:
            return {
                **grant.as_json(),
                "version": 2,
                "grantId": str(grant.grant_id(domain)),
                "commitment": "0x" + grant.commitment(domain).hex(),
                "committedAt": None,
                "revoked": False,
                **state,
            }

        listed = [
            served(grants[0]),
            served(grants[1], committedAt=1_800_000_000),
            served(grants[2], revoked=True, revokedAt=1_800_000_000),
            {"version": 1, "grantId": 7, "revoked": False},
        ]
        done = page.evaluate(DRIVE, [typed, [["cancelV2", {"grants": listed}]]])
        assert done["out"][0].get("error") is None
        [(path, body)] = done["posts"]
        assert path == f"/v1/grants/{grants[0].grant_id(domain)}/revoke"
        root = _reference_root(site.world.p.account, registry)
        assert bytes.fromhex(body["secret"][2:]) == revocation_secret(root, grants[0].salt)
    finally:
        ctx.close()


def test_a_wallet_that_declines_the_revocation_key_sends_nothing(site: Site) -> None:
    typed, registry = _typed(site)
    wallet = _wallet(site, refuse={"eth_signTypedData_v4"})
    ctx, page, _ = _open(site, wallet)
    try:
        result = page.evaluate(DRIVE, [typed, [["grantV2", _terms(site, registry)]]])
        assert result["posts"] == []
        assert result["out"] == [{"error": "User rejected the request.", "code": 4001}]
    finally:
        ctx.close()


def test_a_grant_whose_secret_this_wallet_does_not_derive_is_not_revoked(site: Site) -> None:
    typed, _registry = _typed(site)
    ctx, page, _ = _open(site, _wallet(site))
    try:
        foreign = {
            "version": 2,
            "commitment": "0x" + "ab" * 32,
            "salt": "0x" + "01" * 32,
            "revocationHash": "0x" + "02" * 32,
        }
        result = page.evaluate(DRIVE, [typed, [["revokeV2", {"grant": foreign}]]])
        assert result["posts"] == []
        assert "does not derive the secret of this permission" in result["out"][0]["error"]
    finally:
        ctx.close()


# --------------------------------------------------------------------------- end to end


def _grants_of_p(site: Site) -> dict[str, dict[str, Any]]:
    world = site.world
    answer = world.client.get(
        f"/v1/patients/{world.p.address}/grants", headers=world.headers("patient_p")
    ).json()["grants"]
    return {g["commitment"]: g for g in answer if g.get("version") == 2}


def test_on_a_v2_deployment_the_patient_gives_withdraws_and_cancels_on_the_page(
    site: Site, tmp_path: Path
) -> None:
    world, clinic = site.world, site.clinic
    ledger = world.ledger
    wallet = _wallet(site)
    ctx, page, _ = _open(site, wallet)
    try:
        _sign_in(page)
        before = set(_grants_of_p(site))
        page.select_option("#g-institution", clinic.address)
        page.get_by_role("button", name="Sign and give permission").click()
        page.wait_for_selector("#status:has-text('Permission #0x')")
        assert [d["primaryType"] for d in wallet.typed] == ["RevocationKey", "Grant"]
        [made] = [g for c, g in _grants_of_p(site).items() if c not in before]
        assert (made["grantee"], made["status"], made["allRecords"]) == (
            clinic.address,
            "pending",
            True,
        )
        row = page.locator(f'#grant-list tr[data-grant-id="{made["grantId"]}"]')
        assert row.locator("[data-state]").inner_text() == "Waiting for the chain"

        # The service commits it; the clinic reads the record under it: covered, and the page
        # names the permission by its commitment.
        ledger.commit_grants_now()
        committed = _grants_of_p(site)[made["commitment"]]
        at = max(ledger.chain.latest_timestamp(), made["notBefore"], committed["committedAt"]) + 1
        access = clinic.access(
            world.record_a,
            world.p.address,
            custodian=world.a.address,
            grantId=made["grantId"],
            purpose=Purpose.TREATMENT,
            occurredAt=at,
        )
        world.submit(clinic, access)
        page.get_by_role("button", name="Check again for new entries").click()
        page.wait_for_selector(f'tr[data-event-id="0x{access.eventId.hex()}"] [data-proof]')
        label = f"#{made['commitment'][:6]}…{made['commitment'][-4:]}"
        assert f"Covered by your permission {label}" in _row(page, access.eventId).inner_text()
        # The README's screenshots show the default deployment's page (consent version 2), read
        # afresh so that every entry's proof is checked.
        for name, viewport in (
            ("patient-page-desktop.png", {"width": 1280, "height": 900}),
            ("patient-page-phone.png", {"width": 390, "height": 844}),
        ):
            shot_ctx, shot, _ = _open(site, _wallet(site), viewport=viewport)
            try:
                _sign_in(shot)
                _shoot(shot, name, tmp_path)
            finally:
                shot_ctx.close()

        # Withdraw it: the secret is derived from the root kept in memory (no new signature).
        page.get_by_role("button", name=f"Withdraw permission {label} of Riverside Clinic").click()
        page.wait_for_selector("#status:has-text('withdrawn')")
        assert [d["primaryType"] for d in wallet.typed] == ["RevocationKey", "Grant"]
        assert row.locator("[data-state]").inner_text() == "Withdrawn"
        view = ledger.grant_v2(int(made["grantId"]))
        assert view is not None
        assert view.revoked_at

        # A permission signed and not yet committed: cancelled, it never comes into force.
        page.get_by_role("button", name="Sign and give permission").click()
        page.wait_for_selector("#status:has-text('Permission #0x')")
        waiting = [c for c, g in _grants_of_p(site).items() if g["status"] == "pending"]
        assert len(waiting) == 1
        page.get_by_role("button", name="Cancel my outstanding signatures").click()
        page.wait_for_selector("#status:has-text('cancelled (1)')")
        ledger.commit_grants_now()
        assert _grants_of_p(site)[waiting[0]]["status"] == "revoked"
        assert [d["primaryType"] for d in wallet.typed].count("RevocationKey") == 1
    finally:
        ctx.close()
