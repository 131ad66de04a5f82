"""The regulator's verify_trail with consent version 2 (issue 17): with a ConsentRegistryV2 in
the deployment it trusts (the file's ``consentRegistryV2``, or ``--consent-v2 ADDRESS``) and the
signed grants (``--grants FILE``, or fetched from the API), it judges each access by the signed
grant it cites and the contract's ``grantStatusAt`` on the regulator's own chain endpoint (no
web3: the tools' reader), and reports ``consent-not-covered`` at ``occurredAt`` with the reason
ingest recorded; a committed grant it cannot obtain is ``consent-grant-unavailable``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.chain.model import Deployment, DeploymentMismatch
from ledger.consent import SignedGrant
from ledger.events import Purpose
from scripts import verify_trail
from scripts._api import TrailOut
from scripts._common import ToolError
from scripts._consent import consent_facts, read_grants
from tests.api.world import open_world
from tests.scripts.support import Story, anchor, chain_now, export_trail, regulator_chain
from tests.support.consent_v2 import V2
from tests.support.ledgers import Env


def _access(env: Env, story: Story, grant_id: int) -> tuple[bytes, str]:
    event = env.pharmacy.access(
        story.record,
        env.patient.address,
        custodian=env.hospital.address,
        grantId=grant_id,
        occurredAt=chain_now(env),
    )
    receipt = env.ledger.submit([env.pharmacy.sign(event)])[0]
    return event.eventId, receipt.consent


def _grants_file(tmp_path: Path, *grants: SignedGrant) -> Path:
    path = tmp_path / "grants.json"
    path.write_text(json.dumps([g.as_json() for g in grants]), encoding="utf-8")
    return path


def _verify(env: Env, story: Story, *, registry: str, grants: Path) -> Any:
    trail = TrailOut.model_validate(export_trail(env.ledger, story.record))
    chain = regulator_chain(env, consent_v2=registry)
    facts = consent_facts(chain, grants=grants)
    return verify_trail.verify(
        story.record,
        trail,
        chain,
        now=int(time.time()),
        operator=env.ledger.operator.address,
        facts=facts,
    )


def test_a_revoked_v2_grant_is_found_and_a_valid_one_is_not(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    with V2(env) as v2:
        revoked = v2.grant(env.pharmacy.address, story.record, [Purpose.TREATMENT])
        valid = v2.grant(env.pharmacy.address, story.record, [Purpose.TREATMENT])
        revoked_id, valid_id = v2.commit(revoked, valid)
        v2.revoke_on_chain(revoked)  # straight to the chain, not through the service
        bad_event, bad_label = _access(env, story, revoked_id)
        good_event, good_label = _access(env, story, valid_id)
    assert (bad_label, good_label) == ("not-covered:revoked", "covered")
    anchor(env.ledger)
    grants = _grants_file(tmp_path, revoked, valid)
    report = _verify(env, story, registry=v2.registry.address, grants=grants)
    assert sorted({str(f.code) for f in report.errors}) == ["consent-not-covered"]
    (finding,) = report.errors
    assert finding.event_id == bad_event
    assert finding.context["grantStatus"] == "revoked"
    assert finding.context["grantId"] == revoked_id

    # Without the valid grant in hand, the regulator cannot call its access covered: its
    # commitment is on chain, so it is said unavailable (not judged), not "not-found".
    report = _verify(
        env, story, registry=v2.registry.address, grants=_grants_file(tmp_path, revoked)
    )
    assert {(f.event_id, str(f.code)) for f in report.errors} == {
        (bad_event, "consent-not-covered"),
        (good_event, "consent-grant-unavailable"),
    }
    (unavailable,) = report.findings_of("consent-grant-unavailable")
    assert unavailable.context == {
        "grantId": valid_id,
        "occurredAt": unavailable.context["occurredAt"],
        "consentLabel": "covered",
    }


def test_a_contract_that_is_not_consent_registry_v2_is_refused(
    storied: tuple[Env, Story],
) -> None:
    env, _story = storied
    version_1 = env.ledger.deployment.consent_registry
    with pytest.raises(DeploymentMismatch, match="is not medtrail's ConsentRegistryV2"):
        regulator_chain(env, consent_v2=version_1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is unreadable"),
        ('{"a": 1}', "not a JSON list of grants"),
        ('[{"patient": "nobody"}]', "holds a malformed grant"),
    ],
)
def test_a_bad_grants_file_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "grants.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ToolError, match=message):
        read_grants(path)


def test_grants_need_a_consent_registry_v2(storied: tuple[Env, Story], tmp_path: Path) -> None:
    env, _story = storied
    with pytest.raises(ToolError, match="names no ConsentRegistryV2"):
        consent_facts(regulator_chain(env), grants=_grants_file(tmp_path))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0x" + "22" * 20, "but the deployment file names the ConsentRegistryV2"),
        ("nonsense", "--consent-v2: address"),
    ],
)
def test_a_consent_v2_flag_the_deployment_file_contradicts_is_refused(
    tmp_path: Path, value: str, message: str
) -> None:
    deployment = Deployment(
        chain_id=31337,
        institution_registry="0x" + "11" * 20,
        audit_log="0x" + "12" * 20,
        consent_registry="0x" + "13" * 20,
        block_number=0,
        sources_hash="0x" + "00" * 32,
        consent_registry_v2="0x" + "14" * 20,
    )
    path = tmp_path / "deployment.json"
    deployment.write(path)
    bundle = tmp_path / "trail.json"
    bundle.write_text("[]", encoding="utf-8")
    result = CliRunner().invoke(
        verify_trail.main,
        [
            *("0x" + "11" * 32, "--bundle", str(bundle), "--deployment-file", str(path)),
            *("--rpc-url", "http://127.0.0.1:9", "--consent-v2", value),
        ],
    )
    assert result.exit_code == 2
    assert message in result.output


def test_a_revocation_mined_in_the_second_of_an_access_is_for_review_not_an_error(
    tmp_path: Path,
) -> None:
    """Ingest found the access covered: the chain held no revocation when the operator
    received it. The revocation mined afterwards in the access's very second counts at
    ``occurredAt``, so the trail reports it for review (``consent-revoked-in-flight``, with
    both times), not as ``consent-not-covered``."""
    with open_world(tmp_path, embedded_consent_v2=True) as world:
        access, receipt, grant = world.access_revoked_in_flight()
        anchor(world.ledger)
        trail = TrailOut.model_validate(export_trail(world.ledger, world.record_a))
        chain = regulator_chain(world.env)
        report = verify_trail.verify(
            world.record_a,
            trail,
            chain,
            now=int(time.time()),
            operator=world.ledger.operator.address,
            facts=consent_facts(chain, grants=_grants_file(tmp_path, grant)),
        )
    assert report.errors == [], report.errors
    (finding,) = [f for f in report.findings if str(f.code).startswith("consent-")]
    assert (finding.code, finding.severity, finding.event_id) == (
        "consent-revoked-in-flight",
        "review",
        access.eventId,
    )
    assert finding.context["receivedAt"] == receipt["receivedAt"]
    assert finding.context["revokedAt"] == access.occurredAt
