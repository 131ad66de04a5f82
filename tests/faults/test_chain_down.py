"""The chain's JSON-RPC endpoint unreachable for a while (issue 7).

anvil (with a state file, so that it comes back with the same chain) is stopped under a
running service: ingest over HTTP keeps working (institutions are cached), ``/readyz`` says
the chain is down (503), and once anvil is back the checkpoints resume: every event is
anchored exactly once and the regulator's audit passes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledger.ingest import Receipt
from tests.faults.harness import ANVIL_MISSING, STORES, World, open_world, receipts_of
from tests.support.anvil import Anvil, anvil_available
from tests.support.service_proc import wait_for

DOWN_SECONDS = 4.0


@pytest.fixture
def stateful_anvil(tmp_path: Path) -> Iterator[Anvil]:
    if not anvil_available():
        pytest.skip(ANVIL_MISSING)
    with Anvil(state_file=tmp_path / "anvil-state.json") as node:
        yield node


@pytest.mark.anvil
@pytest.mark.parametrize("store", STORES)
def test_chain_down_then_back(store: str, tmp_path: Path, stateful_anvil: Anvil) -> None:
    with open_world(store, tmp_path, stateful_anvil) as world:
        run_scenario(world, stateful_anvil)


def ready(http: httpx.Client, base: str) -> httpx.Response:
    return http.get(f"{base}/readyz")


def run_scenario(world: World, node: Anvil) -> None:
    receipts: list[Receipt] = []
    service = world.service()
    try:
        with httpx.Client(timeout=30) as http:
            assert ready(http, service.url).status_code == 200
            receipts += receipts_of(world.post(http, service.url, world.access_batch(10, "a")))
            world.wait_anchored(10)

            node.stop()
            down_at = time.monotonic()
            accepted = 0
            while time.monotonic() - down_at < DOWN_SECONDS:
                got = receipts_of(world.post(http, service.url, world.access_batch(10, "b")))
                accepted += len(got)
                receipts += got
                time.sleep(0.2)
            answer = ready(http, service.url)
            assert answer.status_code == 503, answer.text
            checks = answer.json()["checks"]
            assert checks["store"] == "ok"
            assert checks["chain"].startswith("unreachable"), checks
            down = time.monotonic() - down_at

            node.start()
            up_at = time.monotonic()
            wait_for(
                "/readyz to say ready", lambda: ready(http, service.url).status_code == 200, 20
            )
            total = 10 + accepted
            world.wait_anchored(total, 60)
            recovered = time.monotonic() - up_at
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
        f"\n[chain-down {world.env.store_backend}] chain down {down:.1f} s, {accepted} events "
        f"ingested meanwhile (HTTP 200, /readyz 503), {total} events in all, checkpoints "
        f"{found.sizes}; everything anchored {recovered:.1f} s after the node came back"
    )
