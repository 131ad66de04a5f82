"""The whole-log audit under consent version 2 (issue 17): one rule, one verifier — what
ingest labelled covered by a version-2 grant the audit does not call an error.

The real service (the API in process, an embedded chain whose deployment names its
ConsentRegistryV2) logs accesses under version-2 grants; the audit, given only the deployment
(``regulator_chain``: its ``consentRegistryV2``), judges each one with ingest's own rule —
the signed grant, fetched from the API or read from ``--grants``, and the contract's
``grantStatusAt`` at ``occurredAt``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.audit import needed_facts
from ledger.consent import SignedGrant
from scripts._common import Report
from scripts._consent import consent_facts
from scripts.audit_log import LogIdentity, Mirror, StateFile, audit, main
from tests.api.world import World, open_world
from tests.scripts.support import _rows, anchor, api_of, regulator_chain

CONSENT_CODES = {
    "consent-not-covered",
    "consent-grant-unavailable",
    "consent-label-mismatch",
    "consent-revoked-in-flight",
}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with open_world(tmp_path, embedded_consent_v2=True) as opened:
        yield opened


def _audit(world: World, tmp_path: Path, **kw: Any) -> Report:
    anchor(world.ledger)
    deployment = world.ledger.deployment
    assert deployment.consent_registry_v2 is not None
    identity = LogIdentity(deployment.chain_id, deployment.audit_log)
    with api_of(world.env) as api, regulator_chain(world.env) as chain:
        assert chain.trusted.consent_registry_v2 == deployment.consent_registry_v2
        return audit(
            Mirror(tmp_path / "mirror.jsonl", identity),
            api=api,
            chain=chain,
            state=StateFile(tmp_path / "state.json", identity),
            now=int(time.time()),
            **kw,
        )


def _consent_findings(report: Report) -> list[tuple[str, bytes | None, Any]]:
    return [
        (str(f.code), f.event_id, f.context.get("grantStatus"))
        for f in report.findings
        if f.code in CONSENT_CODES
    ]


def _grants_file(tmp_path: Path, *grants: SignedGrant) -> Path:
    path = tmp_path / "grants.json"
    path.write_text(json.dumps([g.as_json() for g in grants]), encoding="utf-8")
    return path


def test_accesses_ingest_called_covered_by_v2_grants_are_not_findings(
    world: World, tmp_path: Path
) -> None:
    second = world.keep_grant_v2(world.p, world.b.address, world.record_a)
    labels = [world.access_under(grant_id)[1] for grant_id in (world.grant_p, second)]
    assert labels == ["covered", "covered"]

    report = _audit(world, tmp_path)  # the cited grants fetched from the API

    assert report.findings == [], report.findings
    assert report.ok
    assert report.stats["events"] == 5  # the world's three, and these two
    assert report.chain is not None
    assert report.chain["consentRegistryV2"] == world.ledger.deployment.consent_registry_v2


def test_an_access_after_a_revocation_sent_to_the_chain_is_found_at_occurred_at(
    world: World, tmp_path: Path
) -> None:
    ledger = world.ledger
    grant = world.grant_v2(world.p, world.b.address, world.record_a)
    view, _new = ledger.accept_grant_v2(grant)
    ledger.commit_grants_now()
    grant_id = int(view.grant_id)
    before, before_label = world.access_under(grant_id)

    world.revoke_v2_on_chain(world.p, grant)  # straight on chain, a second later
    consent_v2 = ledger.chain.consent_v2
    assert consent_v2 is not None
    after, after_label = world.access_under(grant_id)
    assert (before_label, after_label) == ("covered", "not-covered:revoked")

    report = _audit(world, tmp_path)

    assert _consent_findings(report) == [("consent-not-covered", after.eventId, "revoked")]
    (finding,) = report.errors
    assert finding.context == {
        "grantId": grant_id,
        "grantStatus": "revoked",
        "occurredAt": after.occurredAt,
    }
    assert before.occurredAt < consent_v2.revoked_at(grant.revocation_hash) <= after.occurredAt


def test_a_revocation_mined_in_the_second_of_an_access_is_for_review_not_an_error(
    world: World, tmp_path: Path
) -> None:
    # Ingest found the access covered (the chain held no revocation when the operator
    # received it); the revocation then mined in the access's second counts at occurredAt.
    access, receipt, _grant = world.access_revoked_in_flight()

    report = _audit(world, tmp_path)

    assert _consent_findings(report) == [("consent-revoked-in-flight", access.eventId, "revoked")]
    assert report.errors == []
    assert report.ok
    (finding,) = report.findings_of("consent-revoked-in-flight")
    assert finding.severity == "review"
    assert finding.context == {
        "grantId": access.grantId,
        "grantStatus": "revoked",
        "occurredAt": access.occurredAt,
        "receivedAt": receipt["receivedAt"],
        "revokedAt": access.occurredAt,
    }

    # The revocation's time is read in the same prefetch as the statuses, not when judged.
    with api_of(world.env) as api, regulator_chain(world.env) as chain:
        facts = consent_facts(chain, api=api)
        facts.prefetch(needed_facts([access]))
        asked = chain.round_trips
        revocation = facts.grant_revocation(access.grantId)
        assert chain.round_trips == asked
    assert revocation is not None
    assert revocation.revoked_at == access.occurredAt


def test_a_covered_label_after_a_revocation_mined_before_the_receipt_is_an_error(
    world: World, tmp_path: Path
) -> None:
    ledger = world.ledger
    grant = world.grant_v2(world.p, world.b.address, world.record_a)
    view, _new = ledger.accept_grant_v2(grant)
    ledger.commit_grants_now()
    revoked_at = world.revoke_v2_on_chain(world.p, grant)
    ledger.catch_up_clock()
    while int(time.time()) <= revoked_at:  # received in a later second than the revocation
        time.sleep(0.05)
    access, label = world.access_under(int(view.grant_id))
    assert label == "not-covered:revoked"
    # The operator records it covered: the chain held the revocation when it received it.
    _rows(
        ledger,
        "UPDATE events SET consent_status = 'covered' WHERE event_id = :e",
        e=access.eventId,
    )

    report = _audit(world, tmp_path)

    assert _consent_findings(report) == [
        ("consent-not-covered", access.eventId, "revoked"),
        ("consent-label-mismatch", access.eventId, None),
    ]
    assert not report.ok


def test_a_v2_grant_the_audit_cannot_obtain_is_its_own_finding(
    world: World, tmp_path: Path
) -> None:
    other = world.grant_v2(world.p, world.b.address, world.record_a)
    kept, _new = world.ledger.accept_grant_v2(other)
    world.ledger.commit_grants_now()
    covered, label = world.access_under(world.grant_p)
    uncommitted, uncommitted_label = world.access_under(12345)  # never a grant anywhere
    assert (label, uncommitted_label) == ("covered", "not-covered:not-found")

    # The grants file the regulator was given lacks the grant the access cites (it holds
    # another): not judged, said so — neither covered nor "not-found".
    report = _audit(world, tmp_path, grants=_grants_file(tmp_path, other))

    assert _consent_findings(report) == [
        ("consent-grant-unavailable", covered.eventId, None),
        ("consent-not-covered", uncommitted.eventId, "not-found"),
    ]
    (unavailable,) = report.findings_of("consent-grant-unavailable")
    assert unavailable.severity == "error"
    assert unavailable.context == {
        "grantId": world.grant_p,
        "occurredAt": covered.occurredAt,
        "consentLabel": "covered",
    }
    assert "--grants" in unavailable.detail
    assert kept.grant_id != world.grant_p


def test_a_grant_the_operator_withholds_is_unavailable(world: World, tmp_path: Path) -> None:
    covered, label = world.access_under(world.grant_p)
    assert label == "covered"
    _rows(
        world.ledger,
        "DELETE FROM consent_grants WHERE commitment = :c",
        c=world.grant_p.to_bytes(32, "big"),
    )

    report = _audit(world, tmp_path)

    assert _consent_findings(report) == [("consent-grant-unavailable", covered.eventId, None)]


def test_a_grant_served_with_another_commitment_is_refused(world: World, tmp_path: Path) -> None:
    covered, label = world.access_under(world.grant_p)
    assert label == "covered"
    # The operator serves, under the cited id, another grant of the same patient (valid,
    # signed by them, committed): it is not the grant the access cites.
    other = world.grant_v2(world.p, world.b.address, world.record_a)
    world.ledger.accept_grant_v2(other)
    world.ledger.commit_grants_now()
    _rows(
        world.ledger,
        "UPDATE consent_grants SET body = :body WHERE commitment = :c",
        body=json.dumps(other.as_json()),
        c=world.grant_p.to_bytes(32, "big"),
    )
    with api_of(world.env) as api:
        served = api.grant_v2(world.grant_p)
    assert served is not None
    assert served["salt"] == "0x" + other.salt.hex()

    report = _audit(world, tmp_path)

    assert _consent_findings(report) == [("consent-grant-unavailable", covered.eventId, None)]


def test_v2_grants_are_judged_in_batches(world: World, tmp_path: Path) -> None:
    """Each access asks ``grantStatusAt`` twice (at ``occurredAt``, and when anchored): in
    JSON-RPC batches, as version 1's, not one round trip each."""
    second = world.keep_grant_v2(world.p, world.b.address, world.record_a)
    events = [
        world.b.access(
            world.record_a,
            world.p.address,
            custodian=world.a.address,
            grantId=(world.grant_p, second)[i % 2],
            occurredAt=world.ledger.chain.latest_timestamp(),
        )
        for i in range(60)
    ]
    assert {r["consent"] for r in world.submit(world.b, *events)} == {"covered"}

    report = _audit(world, tmp_path)

    assert report.findings == []
    assert report.stats["chainRoundTrips"] <= 12  # 120 questions: one per access unbatched
    assert report.stats["apiRequests"] <= 12  # each cited grant fetched once


def test_grants_without_the_chain_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["--offline", "--no-chain", "--grants", str(tmp_path / "grants.json")]
    )
    assert result.exit_code == 2
    assert "--no-chain takes no --grants" in result.output
