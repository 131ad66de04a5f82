"""``kill -9`` of the service while clients ingest big batches (issue 7).

Two client threads post batches of 400 events as fast as the service takes them; the service
is killed at a random moment (seeded: the seed is printed) while batches are in flight. After
the crash, before anything else touches the store: every acknowledged event is there, each
batch is all in or all out (a batch is one transaction), and the leaf indexes are
contiguous. Then the service restarts, the clients resend what got no answer (idempotent),
and everything is anchored exactly once; the regulator's audit passes.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from ledger.events import SignedEvent
from ledger.ingest import Receipt
from tests.faults.harness import STORES, World, anvil_node, open_world, receipts_of
from tests.support.anchoring import EVENTS
from tests.support.anvil import Anvil

__all__ = ["anvil_node"]

BATCH = 400
CLIENTS = 2


@pytest.mark.anvil
@pytest.mark.parametrize("store", STORES)
def test_kill_9_during_batch_ingest(store: str, tmp_path: Path, anvil_node: Anvil) -> None:
    with open_world(store, tmp_path, anvil_node) as world:
        run_scenario(world)


def run_scenario(world: World) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    sent: list[list[SignedEvent]] = []  # every batch posted, answered or not
    receipts: list[Receipt] = []
    answered: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    service = world.service()

    def client(index: int) -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                batch = world.access_batch(BATCH, f"mrn-{index}")
                with lock:
                    sent.append(batch)
                    number = len(sent) - 1
                try:
                    response = world.post(http, service.url, batch)
                except httpx.HTTPError:
                    return  # the service died under this request
                try:
                    got = receipts_of(response)
                except BaseException as exc:
                    errors.append(exc)
                    return
                with lock:
                    receipts.extend(got)
                    answered.add(number)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(1.5, 4.0))
        service.kill()
        killed_at = time.monotonic()
    finally:
        stop.set()
        service.kill()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)

    # Straight after the crash: nothing acknowledged lost, nothing half-written.
    with world.env.ledger.store.read() as connection:
        rows = connection.execute(
            select(EVENTS.c.leaf_index, EVENTS.c.event_id).order_by(EVENTS.c.leaf_index)
        ).all()
    stored = {bytes(r.event_id) for r in rows}
    assert [r.leaf_index for r in rows] == list(range(len(rows))), "gaps in the leaf indexes"
    assert {r.event_id for r in receipts} <= stored, "an acknowledged event was lost"
    complete = 0
    for batch in sent:
        inside = sum(signed.event_id in stored for signed in batch)
        assert inside in (0, len(batch)), f"a batch half-written: {inside}/{len(batch)}"
        complete += inside == len(batch)
    unanswered = [batch for number, batch in enumerate(sent) if number not in answered]
    assert unanswered, "the kill hit no request in flight"

    # Restart; the clients resend what got no answer; everything is anchored once.
    service = world.service()
    try:
        restarted_at = time.monotonic()
        with httpx.Client(timeout=60) as http:
            for batch in unanswered:
                receipts += receipts_of(world.post(http, service.url, batch))
        total = len(stored) + sum(len(b) for b in unanswered if b[0].event_id not in stored)
        world.wait_anchored(total, 60)
        recovered = time.monotonic() - restarted_at
        found = world.check_sound(receipts)
        assert found.events == total
        status, output = world.audit(service)
        assert status == 0, output
    except BaseException:
        print(service.tail())
        raise
    finally:
        service.stop()
    print(
        f"\n[kill-ingest {world.env.store_backend} seed {seed}] {len(sent)} batches of {BATCH}, "
        f"{len(rows)} events stored at the kill ({complete} whole batches, "
        f"{len(unanswered)} unanswered, of which {len(unanswered) - (complete - len(answered))} "
        f"not stored), {total} events after resends, 1 kill -9, 1 restart; "
        f"all anchored {recovered:.1f} s after restart ({restarted_at - killed_at:.1f} s to "
        "restart)"
    )
