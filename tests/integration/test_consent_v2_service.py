"""Consent version 2 run by the service itself (issue 17): grants kept in its store, committed
by its worker's committer, judged at ingest by its own grant source, on a deployment with
ConsentRegistryV2 (embedded chain).

* a grant kept but not committed when the service stops is committed after it restarts;
* a revocation the patient sends straight to the chain while the service is stopped is
  honoured once it is back: an access after the revocation's block is labelled not covered,
  and the regulator's tools (their own reader, the signed grants) report
  ``consent-not-covered``;
* the time-aware cases through ingest, with grants the service kept and committed;
* the committer's crash-safety and lapsed grants.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.chain.consent import CommittedConsent
from ledger.chain.embedded import funded_account
from ledger.consent import SignedGrant, revocation_root, revocation_secret
from ledger.consent_store import COMMITTED, LAPSED, PENDING
from ledger.events import InstitutionKind, Purpose, RecordAccess
from ledger.service import Ledger
from scripts import verify_trail
from scripts._api import TrailOut
from scripts._consent import ApiGrants, consent_facts
from tests.scripts.support import anchor, api_of, export_trail, regulator_chain
from tests.support.consent_v2 import service_grant
from tests.support.ledgers import Env, open_env

DAY = 86_400
ROOT = revocation_root(b"\x07" * 65)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with open_env("embedded", "sqlite", tmp_path, embedded_consent_v2=True) as environment:
        yield environment


def signed(env: Env, grantee: str, record: bytes, **terms: Any) -> SignedGrant:
    return service_grant(env, grantee, record, root=ROOT, **terms)


def keep(env: Env, *grants: SignedGrant) -> list[int]:
    return [env.ledger.accept_grant_v2(g)[0].grant_id for g in grants]


def access(env: Env, grant_id: int, **kw: Any) -> RecordAccess:
    return env.pharmacy.access(
        env.hospital.record("mrn-1"),
        env.patient.address,
        custodian=env.hospital.address,
        grantId=grant_id,
        occurredAt=env.ledger.chain.latest_timestamp(),
        **kw,
    )


def restart(env: Env) -> Ledger:
    """Stop the service and start it again on the same store and chain."""
    settings = env.ledger.settings
    env.ledger.close()
    env.ledger = Ledger.open(settings)
    return env.ledger


def test_the_deployment_names_consent_v2_and_ingest_judges_by_it(env: Env) -> None:
    ledger = env.ledger
    assert ledger.deployment.consent_registry_v2 == ledger.chain.consent_v2.address
    assert isinstance(ledger.ingestor.grants, CommittedConsent)
    assert ledger.consent_v2_domain.verifying_contract == ledger.deployment.consent_registry_v2


def test_a_direct_revocation_made_while_the_service_was_stopped_is_honoured(
    env: Env, tmp_path: Path
) -> None:
    record = env.hospital.record("mrn-1")
    grant = signed(env, env.pharmacy.address, record)
    [grant_id] = keep(env, grant)
    assert env.ledger.stored_grants.get(grant.commitment(env.ledger.consent_v2_domain)).state == (
        PENDING
    )

    # Stopped before its committer ran: the grant is committed by the worker after restart.
    ledger = restart(env)
    ledger.start_worker(poll=0.05)
    deadline = time.monotonic() + 30
    while ledger.grant_v2(grant_id).committed_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    ledger.stop_worker()
    assert ledger.grant_v2(grant_id).status == "active"
    covered = access(env, grant_id)
    assert ledger.submit([env.pharmacy.sign(covered)])[0].consent == "covered"

    # The service stops; the patient revokes straight on chain, from an address of their own.
    w3 = ledger.chain.w3
    ledger.close()
    burner = funded_account(w3)
    env.ledger.chain.consent_v2.revoke(revocation_secret(ROOT, grant.salt), burner)
    ledger = restart(env)
    assert ledger.grant_v2(grant_id).status == "revoked"
    after = access(env, grant_id)
    assert after.occurredAt >= ledger.grant_v2(grant_id).revoked_at
    assert ledger.submit([env.pharmacy.sign(after)])[0].consent == "not-covered:revoked"

    # The regulator's tools, with the signed grant in hand and their own chain reader.
    anchor(ledger)
    grants_file = tmp_path / "grants.json"
    grants_file.write_text(json.dumps([grant.as_json()]), encoding="utf-8")
    chain = regulator_chain(env)
    facts = consent_facts(chain, grants=grants_file)
    report = verify_trail.verify(
        record,
        TrailOut.model_validate(export_trail(ledger, record)),
        chain,
        now=int(time.time()),
        operator=ledger.operator.address,
        facts=facts,
    )
    expected = [("consent-not-covered", after.eventId, "revoked")]
    assert [(f.code, f.event_id, f.context["grantStatus"]) for f in report.errors] == expected

    # Without a grants file: the cited grants fetched from the API (no trust needed: the
    # signature and the commitment are checked on chain), the same finding.
    with api_of(env) as api:
        facts = consent_facts(chain, api=api)
        report = verify_trail.verify_from_api(
            record, api, chain, now=int(time.time()), operator=ledger.operator.address, facts=facts
        )
    assert [(f.code, f.event_id, f.context["grantStatus"]) for f in report.errors] == expected


def test_a_grant_served_under_another_id_is_ignored(env: Env) -> None:
    """The tools' :class:`ApiGrants` keeps a fetched grant only if its commitment is the id
    the access cites: an operator serving another grant under that id proves nothing."""
    grant = signed(env, env.pharmacy.address, env.hospital.record("mrn-1"))
    other = signed(env, env.pharmacy.address, env.hospital.record("mrn-2"))
    domain = env.ledger.consent_v2_domain
    served = {grant.grant_id(domain): other.as_json(), other.grant_id(domain): other.as_json()}

    class Api:
        def grant_v2(self, grant_id: int) -> dict[str, Any] | None:
            answer = served.get(grant_id)
            return None if answer is None else {"version": 2, **answer}

    book = ApiGrants(Api(), domain)  # type: ignore[arg-type]
    assert book.signed_grant(grant.grant_id(domain)) is None
    assert book.signed_grant(other.grant_id(domain)) == other
    assert book.signed_grant(12) is None


def test_every_time_aware_case_through_the_service(env: Env) -> None:
    ledger, pharmacy = env.ledger, env.pharmacy
    record, other = env.hospital.record("mrn-1"), env.hospital.record("mrn-2")
    clinic = env.institution("Other Hospital", InstitutionKind.HOSPITAL)
    now = ledger.chain.latest_timestamp()
    grants = {
        "valid": signed(env, pharmacy.address, record),
        "revoked": signed(env, pharmacy.address, record),
        "expiring": signed(env, pharmacy.address, record, expires_at=now + 30),
        "later": signed(
            env, pharmacy.address, record, not_before=now + DAY, expires_at=now + 2 * DAY
        ),
        "for clinic": signed(env, clinic.address, record),
        "other scope": signed(env, pharmacy.address, other),
    }
    ids = dict(zip(grants, keep(env, *grants.values()), strict=True))
    assert ledger.commit_grants_now() == len(grants)
    ledger.chain.consent_v2.revoke(
        revocation_secret(ROOT, grants["revoked"].salt), funded_account(ledger.chain.w3)
    )
    assert ledger.tester is not None
    ledger.tester.time_travel(grants["expiring"].expires_at + 5)
    ledger.tester.mine_blocks(1)
    cases = [
        (access(env, ids["valid"]), "covered"),
        (access(env, ids["revoked"]), "not-covered:revoked"),
        (access(env, ids["expiring"]), "not-covered:expired"),
        (access(env, ids["later"]), "not-covered:not-yet-valid"),
        (access(env, ids["for clinic"]), "not-covered:wrong-grantee"),
        (access(env, ids["other scope"]), "not-covered:out-of-scope"),
        (access(env, ids["valid"], purpose=Purpose.RESEARCH), "not-covered:purpose-not-covered"),
    ]
    receipts = ledger.submit([pharmacy.sign(event) for event, _ in cases])
    assert [r.consent for r in receipts] == [label for _, label in cases]
    assert ledger.grant_v2(ids["expiring"]).status == "expired"
    assert ledger.grant_v2(ids["later"]).status == "active"


def test_a_commitment_mined_before_a_crash_is_not_sent_again(env: Env) -> None:
    ledger = env.ledger
    grant = signed(env, env.pharmacy.address, env.hospital.record("mrn-1"))
    [grant_id] = keep(env, grant)
    commitment = grant.commitment(ledger.consent_v2_domain)
    ledger.chain.commit_grants([commitment])  # mined; the store never heard of it
    block = ledger.chain.block_number()
    assert ledger.commit_grants_now() == 0
    assert ledger.chain.block_number() == block
    kept = ledger.stored_grants.get(commitment)
    assert (kept.state, kept.committed_at) == (COMMITTED, ledger.grant_v2(grant_id).committed_at)


def test_a_grant_whose_deadline_passed_uncommitted_lapses(env: Env) -> None:
    ledger = env.ledger
    grant = signed(env, env.pharmacy.address, env.hospital.record("mrn-1"))
    [grant_id] = keep(env, grant)
    assert ledger.tester is not None
    ledger.tester.time_travel(grant.deadline + 5)
    ledger.tester.mine_blocks(1)
    block = ledger.chain.block_number()
    assert ledger.commit_grants_now() == 0
    assert ledger.chain.block_number() == block
    assert ledger.stored_grants.get(grant.commitment(ledger.consent_v2_domain)).state == LAPSED
    assert ledger.grant_v2(grant_id).status == "expired"


def test_a_grant_revoked_before_it_was_committed_is_not_committed(env: Env) -> None:
    ledger = env.ledger
    grant = signed(env, env.pharmacy.address, env.hospital.record("mrn-1"))
    [grant_id] = keep(env, grant)
    ledger.chain.consent_v2.revoke(
        revocation_secret(ROOT, grant.salt), funded_account(ledger.chain.w3)
    )
    block = ledger.chain.block_number()
    assert ledger.commit_grants_now() == 0
    assert ledger.chain.block_number() == block  # no commit transaction
    assert ledger.stored_grants.get(grant.commitment(ledger.consent_v2_domain)).state == LAPSED
    assert ledger.grant_v2(grant_id).status == "revoked"


def test_posting_a_kept_grant_again_keeps_it_once(env: Env) -> None:
    grant = signed(env, env.pharmacy.address, env.hospital.record("mrn-1"))
    first, new = env.ledger.accept_grant_v2(grant)
    again, new_again = env.ledger.accept_grant_v2(grant)
    assert (new, new_again) == (True, False)
    assert again == first
    changed = dataclasses.replace(grant, purposes=3).sign(
        env.ledger.consent_v2_domain, bytes(env.patient.account.key)
    )
    assert env.ledger.accept_grant_v2(changed)[0].grant_id != first.grant_id
