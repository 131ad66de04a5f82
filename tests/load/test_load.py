"""Load: many concurrent clients against the service subprocess for a bounded time (issue 7).

``CLIENTS`` threads, each with its own HTTP connection, post for ``SECONDS`` seconds: batches
of valid accesses and prescriptions, resends of their previous batch (duplicates), and
invalid events (a signature by another key; a dispense of a prescription nobody issued). At
the end: every valid event is in the log exactly once at the leaf its receipt names, every
invalid one got a 4xx and is not stored, no request got a 5xx, everything is anchored once,
and the regulator's audit exits 0. The rate held is printed (and recorded in
docs/reliability.md).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ledger.events import SignedEvent, sign_event
from ledger.ingest import Receipt
from tests.faults.harness import STORES, World, anvil_node, open_world, receipt_from_json
from tests.support.anchoring import EVENTS
from tests.support.anvil import Anvil

__all__ = ["anvil_node"]

CLIENTS = 8
SECONDS = 10.0
BATCH = 10


@dataclass
class Tally:
    receipts: list[Receipt] = field(default_factory=list)
    invalid: list[bytes] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.mark.anvil
@pytest.mark.slow
@pytest.mark.parametrize("store", STORES)
def test_concurrent_clients_with_duplicates_and_invalid_events(
    store: str, tmp_path: Path, anvil_node: Anvil
) -> None:
    with open_world(store, tmp_path, anvil_node) as world:
        run_load(world)


def run_load(world: World) -> None:
    env = world.env
    hospital, pharmacy, patient = env.hospital, env.pharmacy, env.patient.address
    tally = Tally()
    service = world.service()
    started = time.monotonic()
    deadline = started + SECONDS

    def post(http: httpx.Client, events: list[SignedEvent], who: object) -> httpx.Response:
        return world.post(http, service.url, events, who)

    def client(index: int) -> None:
        record = hospital.record(f"mrn-load-{index}")
        previous: list[SignedEvent] | None = None
        step = 0
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < deadline:
                step += 1
                now = int(time.time())
                kind = step % 10
                who: object = hospital
                if kind == 6 and previous is not None:
                    events, valid, label = previous, True, "resend"
                elif kind == 7:  # signed by a key that is not the institution's
                    event = hospital.access(record, patient, occurredAt=now)
                    events = [sign_event(event, env.ledger.domain, os.urandom(32))]
                    valid, label = False, "bad-signature"
                elif kind == 8:  # a dispense of a prescription nobody issued
                    event = pharmacy.dispense(
                        hospital.prescription(record, patient, occurredAt=now), occurredAt=now
                    )
                    events, who = [pharmacy.sign(event)], pharmacy
                    valid, label = False, "unknown-rx"
                elif kind == 9:
                    events = [hospital.sign(hospital.prescription(record, patient, occurredAt=now))]
                    valid, label = True, "prescription"
                else:
                    events = [
                        hospital.sign(hospital.access(record, patient, occurredAt=now))
                        for _ in range(BATCH)
                    ]
                    valid, label = True, "accesses"
                try:
                    response = post(http, events, who)
                except httpx.HTTPError as exc:
                    with tally.lock:
                        tally.problems.append(f"{label}: {exc!r}")
                    return
                status = response.status_code
                with tally.lock:
                    tally.statuses[f"{status // 100}xx"] += 1
                    if status >= 500 or (valid and status != 200):
                        tally.problems.append(f"{label}: {status} {response.text[:300]}")
                    elif not valid and not 400 <= status < 500:
                        tally.problems.append(f"{label} accepted: {status}")
                    elif valid:
                        got = [receipt_from_json(r) for r in response.json()["receipts"]]
                        if label == "resend" and not all(r.duplicate for r in got):
                            tally.problems.append("a resend was not a duplicate")
                        tally.receipts.extend(got)
                    else:
                        tally.invalid.extend(e.event_id for e in events)
                if valid and label != "resend":
                    previous = events

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(SECONDS + 60)
        elapsed = time.monotonic() - started
        assert not any(thread.is_alive() for thread in threads)
        assert not tally.problems, tally.problems[:10]

        unique = {r.event_id for r in tally.receipts}
        rate = len(unique) / elapsed
        anchoring = world.wait_anchored(len(unique), 60)
        found = world.check_sound(tally.receipts)  # exactly the valid events, each once
        assert found.events == len(unique)
        with env.ledger.store.read() as connection:
            stored_invalid = connection.execute(
                select(EVENTS.c.event_id).where(EVENTS.c.event_id.in_(tally.invalid))
            ).all()
        assert stored_invalid == []
        assert tally.statuses["5xx"] == 0
        assert any(r.duplicate for r in tally.receipts)
        assert tally.invalid
        status, output = world.audit(service)
        assert status == 0, output
    except BaseException:
        print(service.tail())
        raise
    finally:
        service.stop()
    print(
        f"\n[load {env.store_backend}] {CLIENTS} clients x {SECONDS:g} s: {len(unique)} events "
        f"stored ({rate:.0f} events/s held), {sum(r.duplicate for r in tally.receipts)} "
        f"duplicate receipts, {len(tally.invalid)} invalid events refused, requests "
        f"{dict(tally.statuses)}; checkpoints {found.sizes}, all anchored {anchoring:.1f} s "
        "after the load stopped"
    )
