"""Database rows edited or deleted behind the running service's back (issue 7).

The service (a real subprocess) keeps serving, but never a proof that silently fails: the
edited event comes with its ``integrity`` findings (the service's own check of each bundle it
serves, ``EventView.integrity``), the deleted one is not served at all, the untouched ones
verify; and the regulator's ``scripts/audit_log.py`` flags the log (exit status 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from ledger.events import SignedEvent
from tests.faults.harness import STORES, World, anvil_node, open_world, receipts_of
from tests.support.anvil import Anvil

__all__ = ["anvil_node"]


@pytest.mark.anvil
@pytest.mark.parametrize("store", STORES)
def test_rows_edited_or_deleted_behind_the_service(
    store: str, tmp_path: Path, anvil_node: Anvil
) -> None:
    with open_world(store, tmp_path, anvil_node) as world:
        run_scenario(world)


def sql(world: World, statement: str, **params: Any) -> None:
    with world.env.ledger.store.write() as connection:
        assert connection.execute(text(statement), params).rowcount == 1


def run_scenario(world: World) -> None:
    record = "mrn-tamper"
    batch = world.access_batch(6, record)
    edited, deleted = batch[2], batch[4]
    ref = "0x" + world.env.hospital.record(record).hex()
    service = world.service()
    try:
        with httpx.Client(timeout=30, headers=world.headers("regulator")) as http:

            def event(signed: SignedEvent) -> httpx.Response:
                return http.get(f"{service.url}/v1/events/0x{signed.event_id.hex()}")

            receipts_of(world.post(http, service.url, batch))
            world.wait_anchored(len(batch))
            assert all(event(e).json()["integrity"] == [] for e in batch)
            clean, output = world.audit(service)
            assert clean == 0, output

            # A DBA "fixes" the action of one access and deletes another.
            action = 1 if edited.event.model_dump()["action"] != 1 else 2
            body = edited.event.model_dump() | {"action": action}
            sql(
                world,
                "UPDATE events SET body = :body WHERE event_id = :id",
                body=type(edited.event).model_validate(body).model_dump_json(),
                id=edited.event_id,
            )
            sql(world, "DELETE FROM events WHERE event_id = :id", id=deleted.event_id)

            answer = event(edited)
            assert answer.status_code == 200
            codes = {f["code"] for f in answer.json()["integrity"]}
            assert {"digest-mismatch", "inclusion-invalid"} & codes, answer.json()["integrity"]
            assert all(f["severity"] == "error" for f in answer.json()["integrity"])
            assert event(deleted).status_code == 404  # nothing served for it, no bad proof

            trail = http.get(f"{service.url}/v1/records/{ref}/trail")
            assert trail.status_code == 200
            by_id = {e["eventId"]: e for e in trail.json()["events"]}
            assert set(by_id) == {"0x" + e.event_id.hex() for e in batch if e is not deleted}
            for signed in batch:
                if signed is deleted:
                    continue
                findings = by_id["0x" + signed.event_id.hex()]["integrity"]
                assert (findings != []) == (signed is edited), findings

            # A regulator mirroring the log now (an earlier mirror keeps what it fetched:
            # see test_a_row_changed_in_the_database_is_found in tests/scripts for that case).
            status, output = world.audit(service, "audit-after")
            assert status == 1, output
            report = json.loads(output[output.index("{") :])
            flagged = sorted({f["code"] for f in report["findings"] if f["severity"] == "error"})
            assert flagged, report
    except BaseException:
        print(service.tail())
        raise
    finally:
        service.stop()
    print(
        f"\n[tampering {world.env.store_backend}] 6 events anchored; 1 row edited, 1 deleted: "
        f"the edited event served with integrity {sorted(codes)}, the deleted one 404, the "
        f"audit exits 1 with {flagged}"
    )
