"""Issue 16's three ways to hide an event from a trail, against a real service on anvil.

Each is found by ``verify_trail`` alone (exit status 1, as a subprocess, reading the chain
over JSON-RPC) and by the patient's wallet (``accesses`` against the chain):

* a row deleted after anchoring: the index on chain still lists its leaf (``trail-incomplete``);
* a trail served from an older copy of the log: proven complete at a checkpoint older than
  the chain's latest (``trail-outdated``);
* one event filtered out of the answer: the index lists a leaf that was not served
  (``trail-incomplete``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.events import RecordAccess
from ledger.index import ListHead, patient_key
from tests.scripts.support import (
    Story,
    anchor,
    delete_event,
    restore_db,
    snapshot_db,
    tell_story,
)
from tests.scripts.test_cli import EXIT_FINDINGS, EXIT_OK, tool
from tests.support.anvil import Anvil
from tests.wallets.api_env import Service, running_service
from wallets.client import MedtrailClient
from wallets.heads import IndexHeads
from wallets.service import AccessReport, PatientSession

pytestmark = pytest.mark.anvil


@pytest.fixture
def served(tmp_path: Path, scripts_anvil: Anvil) -> Iterator[tuple[Service, Story]]:
    """A service on anvil over SQLite, holding :func:`tell_story`'s anchored trail."""
    with running_service(tmp_path, scripts_anvil) as service:
        yield service, tell_story(service.env)


def verify_trail(service: Service, anvil: Anvil, record: bytes, *args: str) -> tuple[int, Any]:
    """``verify_trail --json`` as a regulator runs it: the chain, the API (or a file)."""
    deployment = service.env.ledger.settings.deployment_file
    assert deployment is not None
    done = tool(
        "verify_trail",
        "0x" + record.hex(),
        "--json",
        "--rpc-url",
        anvil.url,
        "--deployment-file",
        str(deployment),
        *args,
        MEDTRAIL_API_KEY=service.regulator_key,
    )
    assert done.returncode in (EXIT_OK, EXIT_FINDINGS), done.stderr
    return done.returncode, json.loads(done.stdout)


def codes(report: dict[str, Any]) -> set[str]:
    return {finding["code"] for finding in report["findings"] if finding["severity"] == "error"}


def wallet_report(
    service: Service,
    anvil: Anvil,
    transport: httpx.BaseTransport | None = None,
    heads: IndexHeads | None = None,
) -> AccessReport:
    client = MedtrailClient(service.url, transport=transport)
    with PatientSession(client, service.env.patient.account, heads=heads) as patient:
        return patient.accesses(rpc_url=anvil.url)


def wallet_codes(report: AccessReport) -> set[str]:
    return {str(f["code"]) for f in report.findings if f["severity"] == "error"}


class Filtering(httpx.HTTPTransport):
    """A real transport that drops one event (by id) from every list the service answers."""

    def __init__(self, event_id: str) -> None:
        super().__init__()
        self.event_id = event_id

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path not in ("/v1/events",) and not request.url.path.endswith("/trail"):
            return response
        response.read()
        body = response.json()
        body["events"] = [e for e in body["events"] if e["eventId"] != self.event_id]
        return httpx.Response(response.status_code, json=body, headers={"x-filtered": "1"})


def test_the_clean_trail_and_history_verify(
    served: tuple[Service, Story], scripts_anvil: Anvil
) -> None:
    service, story = served
    status, report = verify_trail(service, scripts_anvil, story.record, "--api", service.url)
    assert (status, codes(report)) == (EXIT_OK, set())
    assert "listed by the index" in report["subject"]["completeness"]
    wallet = wallet_report(service, scripts_anvil)
    assert wallet.ok, wallet.findings
    assert wallet.completeness


def test_a_row_deleted_after_anchoring_is_found(
    served: tuple[Service, Story], scripts_anvil: Anvil
) -> None:
    service, story = served
    emergency = story.events[-1]
    assert isinstance(emergency.event, RecordAccess)
    delete_event(service.env.ledger, bytes(emergency.event.eventId))
    status, report = verify_trail(service, scripts_anvil, story.record, "--api", service.url)
    assert (status, codes(report)) == (EXIT_FINDINGS, {"trail-incomplete"})
    wallet = wallet_report(service, scripts_anvil)
    assert not wallet.ok
    assert "trail-incomplete" in wallet_codes(wallet)


def test_a_trail_served_from_an_older_copy_of_the_log_is_found(
    served: tuple[Service, Story], scripts_anvil: Anvil, tmp_path: Path
) -> None:
    service, story = served
    ledger = service.env.ledger
    snapshot_db(ledger, tmp_path / "older.db")
    service.access(service.env.hospital, service.env.patient.address, story.record)
    anchor(ledger)
    restore_db(ledger, tmp_path / "older.db")  # the operator serves yesterday's copy
    status, report = verify_trail(service, scripts_anvil, story.record, "--api", service.url)
    assert (status, codes(report)) == (EXIT_FINDINGS, {"trail-outdated"})
    wallet = wallet_report(service, scripts_anvil)
    assert "trail-outdated" in wallet_codes(wallet)


def test_one_event_filtered_out_of_the_answer_is_found(
    served: tuple[Service, Story], scripts_anvil: Anvil, tmp_path: Path
) -> None:
    service, story = served
    hidden = "0x" + bytes(story.events[-1].event.eventId).hex()
    trail = httpx.get(
        f"{service.url}/v1/records/0x{story.record.hex()}/trail",
        headers={"Authorization": f"Bearer {service.regulator_key}"},
    ).json()
    trail["events"] = [e for e in trail["events"] if e["eventId"] != hidden]
    bundle = tmp_path / "filtered.json"
    bundle.write_text(json.dumps(trail))
    status, report = verify_trail(service, scripts_anvil, story.record, "--bundle", str(bundle))
    assert (status, codes(report)) == (EXIT_FINDINGS, {"trail-incomplete"})
    wallet = wallet_report(service, scripts_anvil, transport=Filtering(hidden))
    assert "trail-incomplete" in wallet_codes(wallet)
    assert hidden not in {entry.event_id for entry in wallet.entries}


def test_the_wallet_remembers_the_history_it_verified_and_finds_it_rewritten(
    served: tuple[Service, Story], scripts_anvil: Anvil, tmp_path: Path
) -> None:
    """A head is remembered only from a clean check against the chain, replaced by the next
    one (a checkpoint size claimed once cannot freeze it), and a list that does not extend it
    is ``history-shrunk``."""
    service, story = served
    heads = IndexHeads(tmp_path)
    key = patient_key(service.env.patient.address)
    trusted = service.env.ledger.deployment.trusted()
    without_chain = MedtrailClient(service.url)
    with PatientSession(without_chain, service.env.patient.account, heads=heads) as patient:
        assert patient.accesses().ok  # the service's word alone: checked, not remembered
    assert heads.get(trusted, key) is None

    first = wallet_report(service, scripts_anvil, heads=heads)
    assert first.ok
    remembered = heads.get(trusted, key)
    assert remembered is not None
    assert remembered.head.size == first.completeness["listed"]

    heads.remember(trusted, key, remembered.head, 2**62)  # a size claimed once…
    service.access(service.env.hospital, service.env.patient.address, story.record)
    anchor(service.env.ledger)
    second = wallet_report(service, scripts_anvil, heads=heads)
    assert second.ok
    grown = heads.get(trusted, key)
    assert grown is not None
    assert grown.head.size == remembered.head.size + 1  # …did not freeze what is remembered

    # The list as remembered differs from the one served now (as if history was rewritten).
    heads.remember(trusted, key, ListHead(grown.head.size, b"\x01" * 32), grown.tree_size)
    rewritten = wallet_report(service, scripts_anvil, heads=heads)
    assert "history-shrunk" in wallet_codes(rewritten)
    assert not rewritten.ok


class Injecting(httpx.HTTPTransport):
    """A real transport that adds ``extra`` (another patient's event) to every history page."""

    def __init__(self, extra: dict[str, Any]) -> None:
        super().__init__()
        self.extra = extra

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.url.path != "/v1/events":
            return response
        response.read()
        body = response.json()
        events = [*body["events"], self.extra]
        body["events"] = sorted(events, key=lambda e: e["bundle"]["leafIndex"])
        return httpx.Response(response.status_code, json=body)


def test_another_patients_event_in_a_history_is_found(
    served: tuple[Service, Story], scripts_anvil: Anvil
) -> None:
    service, _story = served
    other = "0x" + "77" * 20
    record = service.env.hospital.record("mrn-someone-else")
    service.access(service.env.hospital, other, record)
    anchor(service.env.ledger)
    theirs = httpx.get(
        f"{service.url}/v1/events",
        params={"patient": other},
        headers={"Authorization": f"Bearer {service.regulator_key}"},
    ).json()["events"][0]
    report = wallet_report(service, scripts_anvil, transport=Injecting(theirs))
    assert not report.ok
    (entry,) = [e for e in report.entries if e.event_id == theirs["eventId"]]
    assert [f["code"] for f in entry.findings if f["severity"] == "error"] == [
        "history-other-patient"
    ]
