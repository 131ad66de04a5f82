"""Consent version 2 across ``kill -9`` (a real ``medtrail serve`` subprocess on anvil;
issue 17).

A patient hands the service a signed grant over HTTP; the service's worker commits it and an
access under it is covered. The service is killed. While it is down, a second grant is stored
but not committed (the crash-safe point: a grant kept, its commitment not yet sent), and the
patient revokes the first one straight on chain, from an address of their own. After the
restart the worker commits the second grant, and the accesses the pharmacy then logs are
labelled by the chain: after the revocation's block, ``not-covered:revoked``; under the
second grant, ``covered``. Every acknowledged event is in the log exactly once, and the
regulator's audit reports the revoked access alone as an error, as ingest labelled it; the
first access, dated in the second the revocation was mined (after the service received it),
is listed for review (``consent-revoked-in-flight``), not an error.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

from ledger.consent import SignedGrant, new_grant, revocation_root, revocation_secret
from ledger.events import Purpose
from ledger.ingest import Receipt
from tests.api.world import bearer, sign_in
from tests.faults.harness import STORES, World, anvil_node, open_world, receipts_of
from tests.support.anvil import Anvil
from tests.support.service_proc import wait_for

__all__ = ["anvil_node"]

ROOT = revocation_root(secrets.token_bytes(65))


def _grant(world: World) -> SignedGrant:
    env = world.env
    domain = env.ledger.consent_v2_domain
    assert domain is not None
    now = env.ledger.chain.latest_timestamp()
    grant = new_grant(
        root=ROOT,
        patient=env.patient.address,
        grantee=env.pharmacy.address,
        record_ref=env.hospital.record("mrn-1"),
        purposes=[Purpose.TREATMENT],
        not_before=now - 60,
        expires_at=now + 86_400,
        deadline=now + 3600,
        now=now,
    )
    return grant.sign(domain, bytes(env.patient.account.key))


def _access(
    world: World, client: httpx.Client, base: str, grant_id: int, at: int | None = None
) -> Receipt:
    """The pharmacy reads the record under ``grant_id``, dated now (or ``at``)."""
    env = world.env
    if at is None:
        at = max(int(time.time()), env.ledger.chain.latest_timestamp())
    event = env.pharmacy.access(
        env.hospital.record("mrn-1"),
        env.patient.address,
        custodian=env.hospital.address,
        grantId=grant_id,
        occurredAt=at,
    )
    [receipt] = receipts_of(world.post(client, base, [env.pharmacy.sign(event)], env.pharmacy))
    return receipt


def _committed(client: httpx.Client, grant_id: int, session: dict[str, str]) -> Any:
    """The grant as served once its commitment is on chain (None before)."""
    answer = client.get(f"/v1/grants/{grant_id}", headers=session)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body if body["committedAt"] is not None else None


@pytest.mark.anvil
@pytest.mark.parametrize("store", STORES)
def test_kill_9_with_grants_pending_and_a_revocation_sent_while_down(
    store: str, tmp_path: Path, anvil_node: Anvil
) -> None:
    with open_world(store, tmp_path, anvil_node, consent_v2=True) as world:
        env = world.env
        receipts: list[Receipt] = []
        first, second = _grant(world), _grant(world)
        service = world.service()
        try:
            with httpx.Client(base_url=service.url, timeout=30) as client:
                session = bearer(sign_in(client, env.patient.account))  # type: ignore[arg-type]
                posted = client.post("/v1/grants", json=first.as_json(), headers=session)
                assert posted.status_code == 202, posted.text
                first_id = int(posted.json()["grantId"])
                started = time.monotonic()
                wait_for("the worker to commit", lambda: _committed(client, first_id, session), 30)
                committed_in = time.monotonic() - started
                # Dated a few seconds ahead of the clock (within the future skew): the
                # revocation below is mined in its very second.
                first_at = max(int(time.time()), env.ledger.chain.latest_timestamp()) + 5
                receipt = _access(world, client, service.url, first_id, first_at)
                assert receipt.consent == "covered"
                receipts.append(receipt)
        finally:
            service.kill()  # kill -9

        # Down: a grant kept but not committed; the patient revokes the first on chain.
        view, new = env.ledger.accept_grant_v2(second)
        assert new
        assert view.status == "pending"
        burner = Account.create()
        anvil_node.set_balance(burner.address, 10**18)
        consent_v2 = env.ledger.chain.consent_v2
        assert consent_v2 is not None
        # In the very second of the access under it, after the service received it: the
        # contract counts it revoked at its occurredAt, which ingest could not foresee.
        anvil_node.set_next_block_timestamp(first_at)
        consent_v2.revoke(revocation_secret(ROOT, first.salt), burner)
        assert receipt.received_at <= consent_v2.revoked_at(first.revocation_hash) == first_at

        service = world.service()
        try:
            with httpx.Client(base_url=service.url, timeout=30) as client:
                session = bearer(sign_in(client, env.patient.account))  # type: ignore[arg-type]
                wait_for(
                    "the restarted worker to commit the kept grant",
                    lambda: _committed(client, view.grant_id, session),
                    30,
                )
                assert (
                    client.get(f"/v1/grants/{first_id}", headers=session).json()["status"]
                    == "revoked"
                )
                revoked = _access(world, client, service.url, first_id)
                covered = _access(world, client, service.url, view.grant_id)
                assert (revoked.consent, covered.consent) == ("not-covered:revoked", "covered")
                receipts += [revoked, covered]
                world.wait_anchored(3, 30)
                found = world.check_sound(receipts)
                assert found.events == 3
                # The regulator's audit, with the deployment file alone (it names the
                # ConsentRegistryV2) and the cited grants fetched from the API, judges them
                # as ingest did: the access after the direct revocation, and nothing else.
                status, output = world.audit(service)
                assert status == 1, output
                report = json.loads(output)
                assert [
                    (f["code"], f["eventId"], f["context"]["grantStatus"])
                    for f in report["findings"]
                    if f["severity"] == "error"
                ] == [("consent-not-covered", "0x" + revoked.event_id.hex(), "revoked")]
                # The access ingest found covered, revoked in its second after it was
                # received: listed for review, not an error.
                in_flight = [
                    (f["severity"], f["context"]["revokedAt"], f["context"]["receivedAt"])
                    for f in report["findings"]
                    if f["code"] == "consent-revoked-in-flight"
                    and f["eventId"] == "0x" + receipt.event_id.hex()
                ]
                assert in_flight == [("review", first_at, receipt.received_at)]
        except BaseException:
            print(service.tail())
            raise
        finally:
            service.stop()
    print(
        f"\n[kill-consent-v2 {store}] grant committed by the worker {committed_in:.1f} s after "
        "it was posted; after kill -9 the kept grant committed and the direct revocation honoured"
    )
