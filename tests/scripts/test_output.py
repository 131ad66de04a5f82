"""The reports' three forms: a table for people, JSON for machines, a FHIR R4 Bundle of
AuditEvent and Provenance resources for health-IT systems (checked for R4's required
elements and cardinalities)."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scripts import verify_trail
from scripts._api import TrailOut
from scripts._common import ChainOptions, Report, render_table
from scripts._fhir import fhir_bundle
from tests.scripts.support import (
    Story,
    anchor,
    chain_now,
    export_trail,
    insert_event,
    regulator_chain,
)
from tests.support.ledgers import Env

FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def report_with_findings(env: Env, story: Story) -> Report:
    """The story's trail plus a dispense beyond the fills (written behind the service)."""
    third = env.pharmacy.dispense(story.prescription, fill=3, occurredAt=chain_now(env) + 1)
    insert_event(env.ledger, env.pharmacy.sign(third), record_ref=story.record)
    anchor(env.ledger)
    trail = TrailOut.model_validate(export_trail(env.ledger, story.record))
    return verify_trail.verify(story.record, trail, regulator_chain(env), now=int(time.time()))


def _coding(value: Any) -> None:
    assert isinstance(value, dict)
    assert isinstance(value.get("system"), str)
    assert value["system"]
    assert isinstance(value.get("code"), str)
    assert value["code"]


def _reference(value: Any) -> None:
    assert isinstance(value, dict)
    assert {"reference", "identifier", "display"} & value.keys()
    if "identifier" in value:
        assert value["identifier"]["system"]
        assert value["identifier"]["value"]


def check_audit_event(resource: dict[str, Any]) -> None:
    """AuditEvent (R4): type 1..1 Coding, recorded 1..1 instant, agent 1..* with requestor
    1..1 boolean, source 1..1 with observer 1..1 Reference; outcome from its value set."""
    _coding(resource["type"])
    for coding in resource.get("subtype", []):
        _coding(coding)
    assert resource.get("action", "E") in {"C", "R", "U", "D", "E"}
    assert INSTANT.match(resource["recorded"])
    assert resource["outcome"] in {"0", "4", "8", "12"}
    assert resource["agent"]
    for agent in resource["agent"]:
        assert isinstance(agent["requestor"], bool)
        _reference(agent["who"])
    _reference(resource["source"]["observer"])
    for entity in resource.get("entity", []):
        _reference(entity["what"])
        for detail in entity.get("detail", []):
            assert isinstance(detail["type"], str)
            assert isinstance(detail["valueString"], str)
    for purpose in resource.get("purposeOfEvent", []):
        for coding in purpose["coding"]:
            _coding(coding)


def check_provenance(resource: dict[str, Any], ids: set[str]) -> bytes:
    """Provenance (R4): target 1..*, recorded 1..1 instant, agent 1..* with who 1..1;
    Signature: type 1..*, when 1..1, who 1..1, data base64. Returns the signature bytes."""
    assert resource["target"]
    for target in resource["target"]:
        assert target["reference"].removeprefix("urn:uuid:") in ids
    assert INSTANT.match(resource["recorded"])
    for agent in resource["agent"]:
        _reference(agent["who"])
    (signature,) = resource["signature"]
    for coding in signature["type"]:
        _coding(coding)
    assert INSTANT.match(signature["when"])
    _reference(signature["who"])
    return base64.b64decode(signature["data"], validate=True)


def test_the_fhir_export_is_an_r4_collection_bundle(storied: tuple[Env, Story]) -> None:
    env, story = storied
    report = report_with_findings(env, story)
    bundle = fhir_bundle(report)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    assert INSTANT.match(bundle["timestamp"])
    resources = [entry["resource"] for entry in bundle["entry"]]
    ids = {r["id"] for r in resources}
    assert len(ids) == len(resources)
    for entry in bundle["entry"]:
        assert FHIR_ID.match(entry["resource"]["id"])
        assert entry["fullUrl"] == "urn:uuid:" + entry["resource"]["id"]
    audits = [r for r in resources if r["resourceType"] == "AuditEvent"]
    provenances = [r for r in resources if r["resourceType"] == "Provenance"]
    assert {r["resourceType"] for r in resources} == {"AuditEvent", "Provenance"}
    for audit in audits:
        check_audit_event(audit)
    signatures = [check_provenance(p, ids) for p in provenances]
    # One AuditEvent and one Provenance per event, plus the summary.
    assert len(provenances) == len(report.events) == 8
    assert len(audits) == 1 + len(report.events)
    assert signatures == [line.signature for line in report.events]
    assert all(len(s) == 65 for s in signatures)
    # The verdict: the summary and the offending event say "serious failure".
    summary = audits[0]
    assert summary["type"]["code"] == "110101"
    assert summary["outcome"] == "8"
    outcomes = {a["outcome"] for a in audits[1:]}
    assert outcomes == {"0", "8"}  # the emergency access (review only) is not a failure
    failing = [a for a in audits[1:] if a["outcome"] == "8"]
    assert len(failing) == 1
    assert "fills-exceeded" in failing[0]["outcomeDesc"]
    # Accesses carry their purpose; identifiers are the ledger's own.
    accesses = [a for a in audits if a["type"]["code"] == "110110"]
    assert {a["purposeOfEvent"][0]["coding"][0]["code"] for a in accesses} == {"TREAT"}
    patients = {
        e["what"]["identifier"]["value"]
        for a in audits[1:]
        for e in a["entity"]
        if e["what"]["identifier"]["system"] == "urn:medtrail:patient"
    }
    assert patients == {env.patient.address}
    assert json.loads(json.dumps(bundle)) == bundle


def test_the_json_report_lists_every_event_and_counts_findings(
    storied: tuple[Env, Story],
) -> None:
    env, story = storied
    report = report_with_findings(env, story).to_json()
    assert report["tool"] == "verify_trail"
    assert report["ok"] is False
    assert report["exitStatus"] == 1
    assert report["summary"]["counts"] == {
        "error": {"fills-exceeded": 1},
        "review": {"emergency-access": 1},
        "warning": {},
    }
    assert [e["leafIndex"] for e in report["events"]] == list(range(8))
    bad = report["events"][-1]
    assert bad["result"] == "error"
    assert bad["findings"][0]["code"] == "fills-exceeded"
    assert report["chain"]["auditLog"] == env.ledger.deployment.audit_log


def test_the_table_names_each_event_and_the_verdict(storied: tuple[Env, Story]) -> None:
    env, story = storied
    text = render_table(report_with_findings(env, story))
    assert "PrescriptionDispensed" in text
    assert "ERROR: fills-exceeded" in text
    assert "Corner Pharmacy" in text  # the institution's name, from the chain's registry
    assert text.rstrip().endswith("Result: FAILED: 1 error(s) — 8 event(s)")


def test_the_command_prints_each_form(
    storied: tuple[Env, Story], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, story = storied
    path = tmp_path / "trail.json"
    path.write_text(json.dumps(export_trail(env.ledger, story.record)))
    regulator = regulator_chain(env)
    # The embedded chain has no URL a command could reach: hand the command its chain.
    monkeypatch.setattr(ChainOptions, "connect", lambda _self, _spec=None: regulator)
    deployment = env.ledger.deployment
    base = ["0x" + story.record.hex(), "--bundle", str(path), "--rpc-url", "in-process"]
    base += ["--audit-log", deployment.audit_log]
    base += ["--consent-registry", deployment.consent_registry]
    base += ["--institution-registry", deployment.institution_registry]
    checks: dict[str, Callable[[str], bool]] = {
        "--table": lambda out: "Result: OK" in out,
        "--json": lambda out: json.loads(out)["ok"] is True,
        "--fhir": lambda out: json.loads(out)["resourceType"] == "Bundle",
    }
    for flag, check in checks.items():
        result = CliRunner().invoke(verify_trail.main, [*base, flag])
        assert result.exit_code == 0, result.output
        assert check(result.output), flag


@pytest.mark.parametrize("terminal", [True, False])
def test_json_is_indented_on_a_terminal_and_one_line_otherwise(
    terminal: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scripts import _common

    monkeypatch.setattr(_common.sys.stdout, "isatty", lambda: terminal)
    document = {"ok": True, "events": [{"eventId": "0x01", "findings": []}]}
    text = _common.json_text(document)
    assert json.loads(text) == document
    assert ("\n" in text) is terminal
