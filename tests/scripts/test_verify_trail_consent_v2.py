"""The regulator's verify_trail with consent version 2 (issue 17): ``--consent-v2 ADDRESS
--grants FILE`` judges each access by the signed grant it cites and the ConsentRegistryV2's
``grantStatusAt`` on the regulator's own chain endpoint (no web3: the tools' reader), and
reports ``consent-not-covered`` at ``occurredAt`` with the reason ingest recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ledger.chain.model import DeploymentMismatch
from ledger.consent import SignedGrant
from ledger.events import Purpose
from scripts import verify_trail
from scripts._api import TrailOut
from scripts._common import ToolError
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


def _verify(env: Env, story: Story, **kw: Any) -> Any:
    trail = TrailOut.model_validate(export_trail(env.ledger, story.record))
    chain = regulator_chain(env)
    facts = kw.pop("facts", None)
    if "grants" in kw:
        facts = verify_trail.consent_v2_facts(chain, kw.pop("registry"), kw.pop("grants"))
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

    # Without the valid grant in hand, the regulator cannot call its access covered.
    report = _verify(
        env, story, registry=v2.registry.address, grants=_grants_file(tmp_path, revoked)
    )
    assert {(f.event_id, f.context["grantStatus"]) for f in report.errors} == {
        (bad_event, "revoked"),
        (good_event, "not-found"),
    }


def test_a_contract_that_is_not_consent_registry_v2_is_refused(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, _story = storied
    chain = regulator_chain(env)
    version_1 = env.ledger.deployment.consent_registry
    with pytest.raises(DeploymentMismatch, match="is not medtrail's ConsentRegistryV2"):
        verify_trail.consent_v2_facts(chain, version_1, _grants_file(tmp_path))


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is unreadable"), ('{"a": 1}', "not a JSON list of grants")],
)
def test_a_bad_grants_file_is_refused(
    storied: tuple[Env, Story], tmp_path: Path, content: str, message: str
) -> None:
    env, _story = storied
    path = tmp_path / "grants.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ToolError, match=message):
        verify_trail.consent_v2_facts(regulator_chain(env), "0x" + "11" * 20, path)


def test_consent_v2_and_grants_go_together(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        verify_trail.main,
        ["0x" + "11" * 32, "--bundle", str(tmp_path / "x.json"), "--consent-v2", "0x" + "22" * 20],
    )
    assert result.exit_code == 2
    assert "--consent-v2 and --grants go together" in result.output


def test_grants_need_consent_v2(tmp_path: Path) -> None:
    grants = _grants_file(tmp_path)
    result = CliRunner().invoke(
        verify_trail.main,
        ["0x" + "11" * 32, "--bundle", str(tmp_path / "x.json"), "--grants", str(grants)],
    )
    assert result.exit_code == 2
    assert "--grants needs --consent-v2" in result.output
