"""The supervision console over a monitor's state of a real ledger: its credential, its
JSON answers and problems, decisions as FHIR AuditEvents, a record's and a patient's trails
exported (each proven whole by the monitor's own index, the mirror answering when the operator
does not or lies); then in a real browser (Debian's chromium, Playwright): a live alert appears, an
emergency access is reviewed, a record's and a patient's trails are exported."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from ledger.events import InstitutionKind, SignedEvent
from scripts import verify_trail
from scripts._api import ApiClient
from scripts.monitor.console import Console
from scripts.monitor.core import Monitor
from scripts.monitor.store import Store
from tests.monitor.conftest import World, make_monitor
from tests.scripts.support import (
    anchor,
    chain_now,
    delete_event,
    insert_event,
    regulator_chain,
)
from tests.support.actors import Institution

TOKEN = "console-token-of-the-office"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def running(world: World, api: ApiClient, tmp_path: Path) -> Iterator[tuple[Monitor, Console]]:
    monitor = make_monitor(world.env, api, tmp_path / "m.db")
    monitor.step()
    console = Console(
        tmp_path / "m.db", TOKEN, port=0, lag=monitor.lag, supervisor="Dr Li", api=api
    )
    console.start()
    yield monitor, console
    console.stop()


def client(console: Console, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=console.url, headers=headers, timeout=10)


def emergency_id(world: World) -> str:
    return "0x" + world.story.events[-1].event_id.hex()


def test_nothing_but_the_login_page_without_the_token(
    running: tuple[Monitor, Console],
) -> None:
    _monitor, console = running
    with client(console, None) as anonymous:
        page = anonymous.get("/")
        assert page.status_code == 200
        assert 'name="token"' in page.text
        for path in ("/api/status", "/api/findings", "/metrics", "/api/decisions"):
            answer = anonymous.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["content-type"] == "application/problem+json"
    with client(console, "wrong-token-wrong-token") as wrong:
        assert wrong.get("/api/status").status_code == 401
        login = wrong.post("/login", data={"token": "nope"})
        assert login.status_code == 401


def test_login_sets_an_http_only_cookie(running: tuple[Monitor, Console]) -> None:
    _monitor, console = running
    with client(console, None) as browser:
        login = browser.post("/login", data={"token": TOKEN})
        assert login.status_code == 303
        assert "HttpOnly" in login.headers["set-cookie"]
        assert "SameSite=Strict" in login.headers["set-cookie"]
        assert browser.get("/api/status").status_code == 200


def test_status_findings_and_alerts(world: World, running: tuple[Monitor, Console]) -> None:
    _monitor, console = running
    with client(console) as office:
        status = office.get("/api/status").json()
        assert status["logSize"] == status["verified"] == len(world.story.events)
        assert status["latestCheckpoint"]["treeSize"] == len(world.story.events)
        assert status["sources"] == {"api": "up", "chain": "up"}
        assert status["findings"] == {"error": 0, "review": 1, "warning": 0}
        (alert,) = office.get("/api/alerts", params={"after": 0}).json()
        assert alert["code"] == "emergency-access"
        assert office.get("/api/alerts", params={"after": alert["id"]}).json() == []
        assert office.get("/api/alerts", params={"after": "x"}).status_code == 400
        assert "medtrail_monitor_entries_verified_total 7.0" in office.get("/metrics").text


def test_an_emergency_access_is_reviewed_and_exported_as_a_fhir_audit_event(
    world: World, running: tuple[Monitor, Console]
) -> None:
    _monitor, console = running
    event_id = emergency_id(world)
    with client(console) as office:
        (item,) = office.get("/api/emergencies").json()
        assert item["eventId"] == event_id
        assert item["decision"] is None
        assert item["recordRef"] == "0x" + world.story.record.hex()
        made = office.post(
            f"/api/emergencies/{event_id}", json={"decision": "referred", "note": "ask the ward"}
        )
        assert made.status_code == 201
        (item,) = office.get("/api/emergencies").json()
        assert (item["decision"]["decision"], item["decision"]["supervisor"]) == (
            "referred",
            "Dr Li",
        )
        bundle = Bundle.model_validate(office.get("/api/decisions").json())
        (entry,) = bundle.entry or []
        event = entry.resource
        assert event.get_resource_type() == "AuditEvent"
        assert event.outcome == "4"
        assert event.entity[0].what.identifier.value == event_id


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"decision": "maybe"}, 422),
        ({"decision": "justified", "note": 5}, 422),
        ({"decision": "justified", "note": "x" * 2001}, 422),
        ([], 400),
    ],
)
def test_a_bad_decision_is_refused(
    world: World, running: tuple[Monitor, Console], body: Any, status: int
) -> None:
    _monitor, console = running
    with client(console) as office:
        answer = office.post(f"/api/emergencies/{emergency_id(world)}", json=body)
        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/problem+json"
        assert office.get("/api/decisions").json()["entry"] == []


def test_a_decision_on_no_emergency_access_is_refused(
    world: World, running: tuple[Monitor, Console]
) -> None:
    _monitor, console = running
    with client(console) as office:
        not_emergency = "0x" + world.story.events[0].event_id.hex()
        answer = office.post(f"/api/emergencies/{not_emergency}", json={"decision": "justified"})
        assert answer.status_code == 404
        assert office.post("/api/emergencies/0x12", json={}).status_code == 400


def test_a_trail_on_demand_as_json_fhir_and_csv(
    world: World, running: tuple[Monitor, Console]
) -> None:
    _monitor, console = running
    record = "0x" + world.story.record.hex()
    with client(console) as office:
        trail = office.get(f"/api/trail/{record}").json()
        assert [e["leafIndex"] for e in trail["events"]] == list(range(len(world.story.events)))
        assert trail["events"][-1]["result"] == "review"
        fhir = office.get(f"/api/trail/{record}", params={"format": "fhir"})
        assert fhir.headers["content-type"] == "application/fhir+json"
        Bundle.model_validate(fhir.json())
        csv = office.get(f"/api/trail/{record}", params={"format": "csv"}).text
        assert len(csv.strip().splitlines()) == 1 + len(world.story.events)
        assert office.get(f"/api/trail/{record}", params={"format": "pdf"}).status_code == 400
    assert trail["ok"] is True
    assert trail["subject"]["recordRef"] == record
    assert trail["subject"]["source"] == (
        "the operator's list, checked against the monitor's own index"
    )
    assert trail["subject"]["completeness"].startswith(
        f"{len(world.story.events)} event(s) below leaf {len(world.story.events)}, the whole list"
    )


def test_a_record_with_no_event_is_not_found(
    running: tuple[Monitor, Console], api: ApiClient
) -> None:
    _monitor, console = running
    asked = api.requests
    with client(console) as office:
        answer = office.get("/api/trail/0x" + "00" * 32)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == "the monitor has mirrored no event of this record"
    assert api.requests == asked + 1  # its 404, judged by the monitor's own index


@pytest.mark.parametrize(
    "ref",
    ["nope", "0x12", "0x" + "ab" * 33, "0x" + "zz" * 32, "ab" * 32, "%20", "0x" + "ab" * 31 + "a"],
)
def test_a_record_that_is_not_a_record_ref_is_refused(
    running: tuple[Monitor, Console], ref: str
) -> None:
    _monitor, console = running
    with client(console) as office:
        answer = office.get(f"/api/trail/{ref}")
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == "recordRef is 0x and 64 hex digits"


@dataclass
class PatientStory:
    """The story's patient with a second record (two events, anchored), another patient's
    event between them, and one more event of the patient mirrored but not anchored yet."""

    patient: str
    records: tuple[bytes, bytes]
    leaves: list[int]
    late: SignedEvent


def patient_story(world: World, monitor: Monitor, local_id: str = "mrn-0043") -> PatientStory:
    env = world.env
    hospital, patient = env.hospital, env.patient.address
    second = hospital.record(local_id)
    now = chain_now(env)
    signed = [
        hospital.sign(hospital.access(second, patient, occurredAt=now)),
        hospital.sign(hospital.access(hospital.record("mrn-9999"), STRANGER, occurredAt=now)),
        hospital.sign(hospital.prescription(second, patient, fills=1, occurredAt=now)),
    ]
    env.ledger.submit(signed)
    anchor(env.ledger)
    late = hospital.sign(hospital.access(second, patient, occurredAt=now + 1))
    env.ledger.submit([late])
    env.ledger.log.integrate_all()  # served in the log, not anchored
    monitor.step()
    story = len(world.story.events)
    leaves = [*range(story), story, story + 2, story + 3]
    return PatientStory(patient, (world.story.record, second), leaves, late)


#: A patient of another record, whose event lies among the story patient's.
STRANGER = "0x" + "12" * 20


def patient_trail(office: httpx.Client, patient: str, **params: str) -> httpx.Response:
    return office.get(f"/api/patients/{patient}/trail", params=params)


def record_trail(office: httpx.Client, record: bytes, **params: str) -> httpx.Response:
    return office.get(f"/api/trail/0x{record.hex()}", params=params)


def mirrored_event_id(console: Console, leaf: int) -> bytes:
    store = console.store()
    try:
        (event_id,) = store.db.execute(
            "SELECT event_id FROM entries WHERE pos = ?", (leaf,)
        ).fetchone()
    finally:
        store.close()
    return bytes(event_id)


def test_a_records_trail_is_proven_whole_and_shows_the_mirrors_tail(
    world: World, running: tuple[Monitor, Console]
) -> None:
    monitor, console = running
    story = patient_story(world, monitor, "mrn-0050")
    record = story.records[1]  # two events anchored (a stranger's between), one mirrored since
    with client(console) as office:
        trail = record_trail(office, record).json()
        exported = record_trail(office, record, format="csv")
        fhir = record_trail(office, record, format="fhir")
    leaves = story.leaves[-3:]
    assert [e["leafIndex"] for e in trail["events"]] == leaves
    assert {e["recordRef"] for e in trail["events"]} == {"0x" + record.hex()}
    assert trail["events"][-1]["eventId"] == "0x" + story.late.event_id.hex()
    assert trail["events"][-1]["anchoredInCheckpoint"] is None
    assert trail["ok"] is True
    subject = trail["subject"]
    assert subject["source"] == "the operator's list, checked against the monitor's own index"
    assert subject["completeness"].startswith(
        f"2 event(s) below leaf {leaves[-1]}, the whole list of the monitor's own index"
    )
    assert subject["completeness"].endswith("1 later event(s) mirrored, not yet covered by a "
                                            "verified checkpoint")  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(row["leafIndex"]) for row in rows] == leaves
    assert "trail-0x" in fhir.headers["content-disposition"]
    Bundle.model_validate(fhir.json())


def test_a_records_trail_agrees_with_verify_trail(
    world: World, running: tuple[Monitor, Console], api: ApiClient
) -> None:
    """What the regulator's own tool says of a record's trail, event by event, is what the
    console says of it (the events anchored: the tool's scope)."""
    monitor, console = running
    story = patient_story(world, monitor, "mrn-0051")
    for record in story.records:
        with client(console) as office:
            trail = record_trail(office, record).json()
        console_says = [
            (e["leafIndex"], e["eventId"], e["result"], sorted(f["code"] for f in e["findings"]))
            for e in trail["events"]
            if e["anchoredInCheckpoint"] is not None
        ]
        with regulator_chain(world.env) as chain:
            report = verify_trail.verify_from_api(record, api, chain, now=int(time.time()))
        assert report.ok
        tool_says = []
        for line in report.events:
            if line.anchored_in is None:
                continue  # pending: the console shows it too, as the mirror's tail
            found = line.to_json()
            codes = sorted(f["code"] for f in found["findings"])
            tool_says.append((line.leaf_index, found["eventId"], found["result"], codes))
        assert console_says == tool_says
        assert len(console_says) == (len(world.story.events) if record == story.records[0] else 2)
        assert trail["ok"] is report.ok


def test_an_operator_hiding_a_records_event_is_reported_and_the_mirror_answers(
    world: World, running: tuple[Monitor, Console]
) -> None:
    monitor, console = running
    story = patient_story(world, monitor, "mrn-0052")  # a record the operator never answered
    record, leaves = story.records[1], story.leaves[-3:]
    delete_event(world.env.ledger, mirrored_event_id(console, leaves[0]))
    with client(console) as office:
        trail = record_trail(office, record).json()
    assert [e["leafIndex"] for e in trail["events"]] == leaves  # the mirror's, whole
    assert trail["ok"] is False
    (finding,) = [f for f in trail["findings"] if f["eventId"] is None]
    assert (finding["code"], finding["severity"]) == ("trail-incomplete", "error")
    assert finding["detail"].startswith("the record's list of events from the operator")
    assert finding["context"]["source"] == "the operator"
    assert finding["context"]["leaves"] == leaves[1:2]  # the hidden leaf missing
    subject = trail["subject"]
    assert subject["source"] == "the monitor's mirror (the operator's list is not the whole list)"
    assert subject["completeness"].startswith(f"2 event(s) below leaf {leaves[-1]}")
    # The lie is the monitor's finding now, alerted once: asked again, nothing new.
    with client(console) as office:
        assert record_trail(office, record).json()["ok"] is False
    assert _kept_lies(console) == [(finding["detail"], 1)]


def _kept_lies(console: Console) -> list[tuple[str, int]]:
    """The trail-incomplete findings the monitor keeps, each with how many alerts name it."""
    store = console.store()
    try:
        alerts = [a.body for a in store.alerts_after(0)]
        return [
            (kept.finding.detail, sum(1 for a in alerts if a.get("findingId") == kept.id))
            for kept in store.findings()
            if kept.finding.code == "trail-incomplete"
        ]
    finally:
        store.close()


def test_an_operator_hiding_a_whole_record_is_reported_and_the_mirror_answers(
    world: World, running: tuple[Monitor, Console]
) -> None:
    monitor, console = running
    story = patient_story(world, monitor, "mrn-0053")
    record, leaves = story.records[1], story.leaves[-3:]
    for leaf in leaves:
        delete_event(world.env.ledger, mirrored_event_id(console, leaf))
    with client(console) as office:
        trail = record_trail(office, record).json()  # the operator answers 404
    assert [e["leafIndex"] for e in trail["events"]] == leaves
    (finding,) = [f for f in trail["findings"] if f["eventId"] is None]
    assert finding["code"] == "trail-incomplete"
    assert finding["context"]["count"] == 0
    assert finding["detail"].startswith("the record's list of events from the operator (0 below")
    assert trail["subject"]["source"] == (
        "the monitor's mirror (the operator's list is not the whole list)"
    )
    assert (finding["detail"], 1) in _kept_lies(console)


def test_a_patients_trail_over_several_records_as_json_fhir_and_csv(
    world: World, running: tuple[Monitor, Console]
) -> None:
    monitor, console = running
    story = patient_story(world, monitor)
    with client(console) as office:
        trail = patient_trail(office, story.patient.lower()).json()  # any case of the address
        fhir = patient_trail(office, story.patient, format="fhir")
        exported = patient_trail(office, story.patient, format="csv")
        assert patient_trail(office, story.patient, format="pdf").status_code == 400
    assert [e["leafIndex"] for e in trail["events"]] == story.leaves
    assert {e["patient"] for e in trail["events"]} == {story.patient}
    assert {e["recordRef"] for e in trail["events"]} == {"0x" + r.hex() for r in story.records}
    assert trail["events"][-1]["eventId"] == "0x" + story.late.event_id.hex()
    assert trail["events"][-1]["anchoredInCheckpoint"] is None  # mirrored, not anchored yet
    assert [e["result"] for e in trail["events"]].count("review") == 1  # the emergency access
    assert trail["ok"] is True
    subject = trail["subject"]
    assert subject["patient"] == story.patient
    assert subject["source"] == "the operator's list, checked against the monitor's own index"
    assert subject["completeness"].startswith(
        f"{len(story.leaves) - 1} event(s) below leaf {story.leaves[-1]}, the whole list"
    )
    assert subject["completeness"].endswith("1 later event(s) mirrored, not yet covered by a "
                                            "verified checkpoint")  # fmt: skip
    assert fhir.headers["content-type"] == "application/fhir+json"
    assert "patient-trail-0x" in fhir.headers["content-disposition"]
    bundle = Bundle.model_validate(fhir.json())
    kinds = [e.resource.get_resource_type() for e in bundle.entry or [] if e.resource]
    assert kinds.count("AuditEvent") == 1 + len(story.leaves)  # the summary, one per event
    assert kinds.count("Provenance") == len(story.leaves)
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [int(row["leafIndex"]) for row in rows] == story.leaves


def test_a_patients_trail_agrees_with_verify_trail_on_each_of_their_records(
    world: World, running: tuple[Monitor, Console], api: ApiClient
) -> None:
    """What the regulator's own tool says of each record's trail, event by event, is what
    the console says of the patient's trail (the events anchored: the tool's scope)."""
    monitor, console = running
    story = patient_story(world, monitor)
    with client(console) as office:
        trail = patient_trail(office, story.patient).json()
    console_says = {
        e["leafIndex"]: (e["eventId"], e["result"], sorted(f["code"] for f in e["findings"]))
        for e in trail["events"]
        if e["anchoredInCheckpoint"] is not None
    }
    tool_says = {}
    with regulator_chain(world.env) as chain:
        for record in story.records:
            report = verify_trail.verify_from_api(record, api, chain, now=int(time.time()))
            assert report.ok
            for line in report.events:
                if line.event.patient == story.patient and line.anchored_in is not None:
                    found = line.to_json()
                    tool_says[line.leaf_index] = (
                        found["eventId"],
                        found["result"],
                        sorted(f["code"] for f in found["findings"]),
                    )
    assert console_says == tool_says
    assert sorted(console_says) == story.leaves[:-1]


def test_a_patient_with_no_event_is_not_found(
    world: World, running: tuple[Monitor, Console]
) -> None:
    _monitor, console = running
    with client(console) as office:
        answer = patient_trail(office, "0x" + "ab" * 20)
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["detail"] == "the monitor has mirrored no event about this patient"


@pytest.mark.parametrize(
    "address",
    [
        "nope",
        "0x12",
        "0x" + "ab" * 21,
        "0x" + "zz" * 20,
        "0xAbcdef0123456789abcdef0123456789ABCDEF01",  # mixed case, not its EIP-55 checksum
        "%20",
    ],
)
def test_a_patient_that_is_not_an_address_is_refused(
    running: tuple[Monitor, Console], address: str
) -> None:
    _monitor, console = running
    with client(console) as office:
        answer = patient_trail(office, address)
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert "an address is 0x and 40 hex digits" in answer.json()["detail"]


def test_an_operator_hiding_a_patients_event_is_reported_and_the_mirror_answers(
    world: World, running: tuple[Monitor, Console]
) -> None:
    monitor, console = running
    # A record of its own: the operator keeps each answer that verified per key and index
    # root, and would serve the one it made for an earlier test of the same log.
    story = patient_story(world, monitor, "mrn-0044")
    hidden = world.story.events[2].event_id
    delete_event(world.env.ledger, hidden)  # the operator's list no longer holds its leaf
    with client(console) as office:
        trail = patient_trail(office, story.patient).json()
    assert [e["leafIndex"] for e in trail["events"]] == story.leaves  # the mirror's, whole
    assert trail["ok"] is False
    (finding,) = [f for f in trail["findings"] if f["eventId"] is None]
    assert (finding["code"], finding["severity"]) == ("trail-incomplete", "error")
    assert finding["context"]["source"] == "the operator"
    assert 2 not in finding["context"]["leaves"]
    subject = trail["subject"]
    assert subject["source"] == "the monitor's mirror (the operator's list is not the whole list)"
    assert subject["completeness"].startswith(f"{len(story.leaves) - 1} event(s) below leaf")


def test_before_any_checkpoint_is_verified_the_mirror_alone_answers(
    api: ApiClient, tmp_path: Path
) -> None:
    Store(tmp_path / "fresh.db").close()  # a monitor that has verified nothing yet
    console = Console(tmp_path / "fresh.db", TOKEN, port=0, api=api)
    console.start()
    try:
        with client(console) as office:
            answer = patient_trail(office, "0x" + "ab" * 20)
    finally:
        console.stop()
    assert answer.status_code == 404
    assert answer.json()["detail"] == "the monitor has mirrored no event about this patient"
    assert api.requests == 0  # nothing to prove a list against: the operator is not asked


@pytest.mark.parametrize("kind", ["patient", "record"])
@pytest.mark.parametrize("operator", ["down", "none"])
def test_without_the_operator_the_mirror_answers_the_same_trail(
    world: World, running: tuple[Monitor, Console], tmp_path: Path, operator: str, kind: str
) -> None:
    monitor, first = running
    story = patient_story(world, monitor)

    def ask(office: httpx.Client) -> Any:
        if kind == "record":
            return record_trail(office, story.records[1]).json()
        return patient_trail(office, story.patient).json()

    with client(first) as office:
        expected = ask(office)
    unreachable = ApiClient("http://127.0.0.1:9", timeout=2) if operator == "down" else None
    console = Console(tmp_path / "m.db", TOKEN, port=0, api=unreachable)
    console.start()
    try:
        with client(console) as office:
            trail = ask(office)
    finally:
        console.stop()
    assert trail["subject"]["completeness"].startswith(
        f"{len(expected['events']) - 1} event(s) below leaf"
    )
    assert trail["events"] == expected["events"]
    assert trail["findings"] == expected["findings"]
    assert trail["subject"]["completeness"] == expected["subject"]["completeness"]
    assert trail["subject"]["source"].startswith("the monitor's mirror (")


def test_per_institution_events_by_day_rates_and_anchoring_delay(
    world: World, running: tuple[Monitor, Console]
) -> None:
    _monitor, console = running
    env, story = world.env, world.story
    with client(console) as office:
        items = {i["institution"]: i for i in office.get("/api/institutions").json()}
    hospital, other = items[env.hospital.address], items[story.emergency_hospital.address]
    assert [sum(day.values()) for day in hospital["perDay"].values()] == [2]
    assert set(next(iter(hospital["perDay"].values()))) == {"RecordAccess", "PrescriptionIssued"}
    assert (hospital["emergencyRate"], hospital["notCoveredRate"]) == (0.0, 0.0)
    assert (other["emergencyRate"], other["notCoveredRate"]) == (1.0, 0.0)
    assert items[env.pharmacy.address]["perDay"]
    delay = hospital["anchoringDelay"]
    assert delay is not None
    assert 0 <= delay["mean"] <= delay["max"]


# --------------------------------------------------------------------------- in a browser


def _playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - .ci/run installs it
        pytest.skip("Playwright is not installed (pip install playwright)")
    if not CHROMIUM.exists():  # pragma: no cover - .ci/run installs it
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return sync_playwright


def test_in_a_browser_a_supervisor_sees_an_alert_reviews_and_exports(
    world: World, running: tuple[Monitor, Console], tmp_path: Path
) -> None:
    """Screenshots go to $MEDTRAIL_SCREENSHOTS when set (docs/screenshots/ is made so)."""
    monitor, console = running
    shots = Path(os.environ.get("MEDTRAIL_SCREENSHOTS") or tmp_path)
    requests: list[str] = []
    with _playwright()() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"{console.url}/")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector("#alerts tr.alert[data-code=emergency-access]")
            assert page.locator("#log-size").inner_text() == str(len(world.story.events))

            # A forged event lands; the monitor's next step finds it; the page shows it live.
            env = world.env
            forger = Institution("Forger", InstitutionKind.HOSPITAL, env.ledger.domain)
            fake = env.hospital.access(
                world.story.record, env.patient.address, occurredAt=chain_now(env)
            )
            insert_event(env.ledger, forger.sign(fake), consent="custodian")
            anchor(env.ledger)
            monitor.step()
            row = page.locator("#alerts tr.alert[data-code=signer-mismatch]")
            row.wait_for(timeout=5000)
            assert "error" in row.inner_text()
            page.screenshot(path=str(shots / "monitor-live.png"), full_page=True)

            page.click("nav button[data-view=findings]")
            page.wait_for_selector("#findings-table tbody tr")
            assert page.locator("#findings-table tbody tr").first.inner_text().startswith("error")
            page.screenshot(path=str(shots / "monitor-findings.png"), full_page=True)

            page.click("nav button[data-view=institutions]")
            card = page.locator(
                f"#institution-charts .institution[data-institution='{env.hospital.address}']"
            )
            card.wait_for()
            assert card.locator("svg.day-chart rect").count() == 2  # two types, one day
            assert "anchoring delay" in card.locator(".delay").inner_text()
            page.screenshot(path=str(shots / "monitor-institutions.png"), full_page=True)

            page.click("nav button[data-view=emergencies]")
            item = page.locator(f"#emergency-table tr[data-event-id='{emergency_id(world)}']")
            item.locator("select").select_option("not-justified")
            item.locator("input.note").fill("no emergency in the ward's log")
            item.locator("button").click()
            decided = item.locator(".decision")
            decided.wait_for()
            assert decided.inner_text() == "not-justified — no emergency in the ward's log"
            page.screenshot(path=str(shots / "monitor-emergencies.png"), full_page=True)

            page.click("nav button[data-view=trail]")
            page.fill("#record-ref", "0x" + world.story.record.hex())
            page.click("#trail-form button")
            page.wait_for_selector("#trail-table tbody tr")
            assert page.locator("#trail-table tbody tr").count() == len(world.story.events) + 1
            # The record's trail now says how it is proven whole, as a patient's does.
            assert "the whole list" in page.locator("#trail-completeness").inner_text()
            page.screenshot(path=str(shots / "monitor-trail.png"), full_page=True)
            with page.expect_download() as download:
                page.click("#trail-fhir")
            exported = json.loads(Path(download.value.path()).read_text())
            assert Bundle.model_validate(exported).type == "collection"

            # The patient's trail: every event about them (the forged one included), proven
            # whole by the monitor's own index, exported as CSV.
            page.fill("#patient-address", env.patient.address)
            page.click("#patient-form button")
            page.wait_for_selector("#trail-completeness:has-text('whole list')")
            events = len(world.story.events) + 1
            assert page.locator("#trail-table tbody tr").count() == events
            assert (
                page.locator("#trail-result").inner_text().startswith(f"{events} event(s): 1 error")
            )
            page.screenshot(path=str(shots / "monitor-patient-trail.png"), full_page=True)
            with page.expect_download() as download:
                page.click("#trail-csv")
            rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
            assert [int(row["leafIndex"]) for row in rows] == list(range(events))
            assert {row["patient"] for row in rows} == {env.patient.address}

            page.fill("#patient-address", "0x12")
            page.click("#patient-form button")
            page.wait_for_selector("#trail-result:has-text('an address is 0x and 40 hex digits')")
            assert page.locator("#trail-table tbody tr").count() == 0
            assert page.locator("#trail-exports").is_hidden()
        finally:
            browser.close()
    assert requests
    assert all(url.startswith(console.url) for url in requests)  # no CDN, nothing outside


def test_each_supervisors_token_signs_their_decisions(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    monitor = make_monitor(world.env, api, tmp_path / "m.db")
    monitor.step()
    wang = "token-of-dr-wang-at-the-office"
    console = Console(
        tmp_path / "m.db", TOKEN, port=0, supervisor="Dr Li", supervisors={"Dr Wang": wang}
    )
    console.start()
    try:
        event_id = emergency_id(world)
        for token, decision in ((TOKEN, "referred"), (wang, "justified")):
            with client(console, token) as office:
                made = office.post(f"/api/emergencies/{event_id}", json={"decision": decision})
                assert made.status_code == 201
        with client(console) as office:
            bundle = Bundle.model_validate(office.get("/api/decisions").json())
        who = [
            (e.resource.entity[0].what.identifier.value, e.resource.agent[0].who.display)
            for e in bundle.entry or []
        ]
        assert who == [(event_id, "Dr Li"), (event_id, "Dr Wang")]
        with httpx.Client(base_url=console.url, timeout=10) as browser:
            login = browser.post("/login", data={"token": wang}, follow_redirects=False)
            assert login.status_code == 303
            assert browser.get("/api/status").status_code == 200
        with client(console, "not-a-token-of-anyone-here") as stranger:
            assert stranger.get("/api/status").status_code == 401
    finally:
        console.stop()


@pytest.mark.parametrize(
    ("supervisors", "message"),
    [
        ({"Dr Wang": TOKEN}, "'Dr Li' and 'Dr Wang' have the same console token"),
        ({"Dr Wang": "short"}, "of 'Dr Wang' is at least 16 characters"),
        ({" ": "token-of-nobody-at-all"}, "non-empty"),
    ],
)
def test_console_credentials_that_cannot_tell_supervisors_apart_are_refused(
    tmp_path: Path, supervisors: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Console(tmp_path / "m.db", TOKEN, port=0, supervisor="Dr Li", supervisors=supervisors)
