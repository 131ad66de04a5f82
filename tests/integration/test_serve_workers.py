"""``medtrail serve --workers 2`` over anvil: two API processes share the port, each opens the
ledger, one runs the anchor worker; every event submitted to either is anchored, once."""

from __future__ import annotations

import contextlib
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ledger.events import SignedEvent
from ledger.ingest import Receipt
from tests.faults.harness import STORES, anvil_node, open_world, receipts_of
from tests.support.anvil import Anvil
from tests.support.service_proc import wait_for

__all__ = ["anvil_node"]  # the module's anvil (a fixture of the fault harness)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def workers_of(pid: int) -> list[int]:
    """The uvicorn worker processes of the service ``pid`` (spawned interpreters)."""
    return [
        child
        for child in children(pid)
        if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


@pytest.mark.anvil
@pytest.mark.parametrize("store", STORES)
def test_two_workers_serve_and_anchor_every_event_once(
    store: str, tmp_path: Path, anvil_node: Anvil
) -> None:
    with open_world(store, tmp_path, anvil_node) as world:
        # Two processes each import the whole service: give a loaded machine time to start them.
        service = world.service(ready_timeout=120.0, MEDTRAIL_WORKERS="2")
        started: list[int] = []
        try:
            started = wait_for(
                "two worker processes",
                lambda: w if len(w := workers_of(service.process.pid)) == 2 else None,
                30,
            )
            wait_for(
                "both workers to serve",
                lambda: service.log_path.read_text().count("Application startup complete") == 2,
                90,
            )
            batches = [world.access_batch(50, f"mrn-{i}") for i in range(8)]

            def submit(batch: list[SignedEvent]) -> list[Receipt]:
                with httpx.Client(timeout=60) as http:  # a connection of its own
                    return receipts_of(world.post(http, service.url, batch))

            with ThreadPoolExecutor(4) as pool:
                receipts = [r for got in pool.map(submit, batches) for r in got]
            assert len(receipts) == 400
            world.wait_anchored(400)
            world.check_sound(receipts)
            log = service.log_path.read_text()
            assert log.count("Application startup complete") == 2, service.tail()
            assert "died" not in log, service.tail()  # no worker restarted on the way
        finally:
            service.stop()
            for pid in started:  # never leave a worker behind, whatever happened
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
