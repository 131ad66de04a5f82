"""``kill -9`` of the service (a real ``medtrail serve`` subprocess, rpc mode on anvil) at
each step of anchoring, then a restart (issue 7).

The crash points are hit exactly by the test-only :mod:`tests.support.faulty_anchor` worker
the service subprocess runs (``MEDTRAIL_FAULT=<point>``: the process SIGKILLs itself there).
After the restart, with the normal environment: every acknowledged event is in the log
exactly once, every checkpoint is on chain exactly once, the chain's latest checkpoint is the
store's, and the regulator's ``scripts/audit_log.py`` exits 0.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx
import pytest

from ledger.anchor import SENT
from ledger.events import SignedEvent
from ledger.ingest import Receipt
from tests.faults.harness import STORES, World, anvil_node, open_world, receipts_of
from tests.support.anchoring import checkpoint_rows
from tests.support.anvil import Anvil

__all__ = ["anvil_node"]

#: The crash points in the order one run goes through them, each with the batch posted to the
#: armed service (events), then what the store's newest checkpoint row and the chain hold
#: right after the crash (tree size each; None: nothing).
STEPS = [
    # Tree integrated, checkpoint due, nothing signed: no checkpoint anywhere.
    ("after-sequence", 20, (None, None), None),
    # Restarted: the index advanced to the checkpoint's size and stored, nothing signed: still
    # no checkpoint (the next start signs with the stored index version).
    ("after-index", 0, (None, None), None),
    # Restarted: signed transaction recorded ("sent"), never broadcast: nothing on chain.
    ("before-send", 0, (20, SENT), None),
    # Restarted: the recorded tx re-broadcast and adopted; a new one broadcast (anvil mines it
    # at once), its receipt never looked up: the store says "sent", the chain has it.
    ("after-send", 10, (30, SENT), 30),
    # Restarted: the chain's checkpoint 30 seen (the receipt of the lost answer), the store's
    # update to "anchored" not committed (killed inside the transaction): still "sent".
    ("after-receipt", 0, (30, SENT), 30),
]
TOTAL = sum(events for _point, events, _row, _chain in STEPS)


@pytest.mark.anvil
@pytest.mark.parametrize("store", STORES)
def test_kill_9_at_each_anchoring_step_then_restart(
    store: str, tmp_path: Path, anvil_node: Anvil
) -> None:
    with open_world(store, tmp_path, anvil_node) as world:
        run_scenario(world)


def run_scenario(world: World) -> None:
    ledger = world.env.ledger
    batches: list[list[SignedEvent]] = []
    receipts: list[Receipt] = []
    recoveries: list[float] = []
    with httpx.Client(timeout=30) as client:
        crashed_at = time.monotonic()
        for point, events, (row_size, row_status), chain_size in STEPS:
            service = world.service(wait_ready=events > 0, MEDTRAIL_FAULT=point)
            try:
                if events:
                    batch = world.access_batch(events, f"mrn-{point}")
                    batches.append(batch)
                    # The answer may lose the race with the crash: then the client resends
                    # after the final restart, as a client does after a timeout.
                    with contextlib.suppress(httpx.HTTPError):
                        response = world.post(client, service.url, batch)
                        receipts += receipts_of(response)
                status = service.wait_exit(60)
                assert status == -9, service.tail()
                recoveries.append(time.monotonic() - crashed_at)
                crashed_at = time.monotonic()
                assert f"MEDTRAIL_FAULT={point}" in service.tail()
            except BaseException:
                service.kill()
                print(service.tail())
                raise
            rows = checkpoint_rows(ledger.store)
            newest = (rows[-1].tree_size, rows[-1].status) if rows else (None, None)
            assert newest == (row_size, row_status), (point, rows)
            latest = ledger.chain.latest_checkpoint()
            assert (latest.tree_size if latest else None) == chain_size, point

        # Restart with the normal environment: resends (idempotent), more events, anchoring.
        service = world.service()
        try:
            restarted_at = time.monotonic()
            for batch in batches:
                receipts += receipts_of(world.post(client, service.url, batch))
            assert all(r.duplicate for r in receipts[-TOTAL:])
            receipts += receipts_of(world.post(client, service.url, world.access_batch(5)))
            world.wait_anchored(TOTAL + 5, 30)
            recovered = time.monotonic() - restarted_at
            found = world.check_sound(receipts)
            assert found.events == TOTAL + 5
            status, output = world.audit(service)
            assert status == 0, output
        except BaseException:
            print(service.tail())
            raise
        finally:
            service.stop()
    print(
        f"\n[kill-anchoring {world.env.store_backend}] {TOTAL + 5} events, {len(STEPS)} kill -9, "
        f"{world.starts - 1} restarts, checkpoints on chain {found.sizes}, last restart to "
        f"all anchored {recovered:.1f} s; crash to next crash {[round(r, 1) for r in recoveries]}"
    )
