"""Shared pieces of the fault and load suites: a world (anvil + a store backend + registered
institutions + API keys), an HTTP client that signs and submits events, and the final checks.

The test process keeps an in-process :class:`~ledger.service.Ledger` over the same database
and deployment *without* a worker: it registers the institutions, issues API keys, and reads
the store and the chain for the checks. The service under test is a real subprocess
(:mod:`tests.support.service_proc`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ledger.eip712 import recover
from ledger.events import SignedEvent
from ledger.ingest import BatchPlace, Receipt
from ledger.verify import ReceiptBatchProof
from tests.support.anchoring import EVENTS, assert_sound
from tests.support.anvil import ANVIL, Anvil, anvil_available, free_port
from tests.support.ledgers import Env, open_env
from tests.support.postgres import SKIP_REASON, postgres_url
from tests.support.service_proc import (
    Service,
    anchored_all,
    api_keys,
    bearer,
    run_audit,
    service_env,
    wait_for,
)

ANVIL_MISSING = f"anvil is not installed at {ANVIL} (run `make node`)"

#: Both store backends; PostgreSQL is skipped without MEDTRAIL_TEST_POSTGRES_URL.
STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def need_backends(store: str) -> None:
    if not anvil_available():
        pytest.skip(ANVIL_MISSING)
    if store == "postgres" and postgres_url() is None:
        pytest.skip(SKIP_REASON)


@dataclass
class World:
    """A ledger on anvil + one store, its keys, and the service subprocess's settings."""

    env: Env
    keys: dict[str, str]
    directory: Path
    port: int
    overrides: dict[str, str] = field(default_factory=dict)
    starts: int = 0

    def service(
        self, *, wait_ready: bool = True, ready_timeout: float = 45.0, **overrides: str
    ) -> Service:
        """Start ``medtrail serve`` (a new log file per start)."""
        self.starts += 1
        environment = service_env(self.env, **{**self.overrides, **overrides})
        return Service.start(
            environment,
            self.directory / f"service-{self.starts}.log",
            port=self.port,
            wait_ready=wait_ready,
            ready_timeout=ready_timeout,
        )

    def headers(self, who: Any) -> dict[str, str]:
        return bearer(self.keys[who if isinstance(who, str) else who.address])

    def access_batch(self, count: int, record: str = "mrn-1") -> list[SignedEvent]:
        hospital, patient = self.env.hospital, self.env.patient.address
        ref = hospital.record(record)
        now = int(time.time())
        return [
            hospital.sign(hospital.access(ref, patient, action=1 + i % 3, occurredAt=now))
            for i in range(count)
        ]

    def post(
        self, client: httpx.Client, base: str, events: Sequence[SignedEvent], who: Any = None
    ) -> httpx.Response:
        return client.post(
            f"{base}/v1/events",
            json={"events": [e.model_dump(mode="json") for e in events]},
            headers=self.headers(who or self.env.hospital),
        )

    def total_events(self) -> int:
        with self.env.ledger.store.read() as connection:
            return len(connection.execute(select(EVENTS.c.leaf_index)).all())

    def wait_anchored(self, total: int, timeout: float = 45.0) -> float:
        """Wait until a checkpoint of ``total`` events is on chain and stored; seconds taken."""
        started = time.monotonic()
        wait_for(f"a checkpoint of {total} events", lambda: anchored_all(self.env, total), timeout)
        return time.monotonic() - started

    def check_sound(self, receipts: Sequence[Receipt]) -> Any:
        ledger = self.env.ledger
        # Every receipt served is the operator's: through its batch's path and signed root.
        for receipt in receipts:
            signer = recover(receipt.signed_digest(ledger.domain), receipt.signature)
            assert signer == ledger.operator.address, f"receipt of leaf {receipt.leaf_index}"
        return assert_sound(ledger.store, ledger.log, ledger.chain, receipts)

    def audit(self, service: Service, name: str = "audit") -> tuple[int, str]:
        return run_audit(self.env, service, self.keys["regulator"], self.directory, name)


def _b(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


def _place(batch: dict[str, Any] | None) -> BatchPlace | None:
    if batch is None:
        return None
    proof = ReceiptBatchProof.model_validate(batch)
    return BatchPlace(proof.firstLeaf, proof.count, proof.root, proof.path)


def receipt_from_json(body: dict[str, Any]) -> Receipt:
    return Receipt(
        event_id=_b(body["eventId"]),
        event_digest=_b(body["eventDigest"]),
        leaf_index=int(body["leafIndex"]),
        received_at=int(body["receivedAt"]),
        anchor_by=int(body["anchorBy"]),
        signature=_b(body["signature"]),
        consent=str(body["consent"]),
        duplicate=bool(body.get("duplicate", False)),
        batch=_place(body.get("batch")),
    )


def receipts_of(response: httpx.Response) -> list[Receipt]:
    assert response.status_code == 200, response.text
    return [receipt_from_json(r) for r in response.json()["receipts"]]


@contextmanager
def open_world(
    store: str, tmp_path: Path, anvil: Anvil, *, consent_v2: bool = False, **overrides: str
) -> Iterator[World]:
    """``consent_v2``: the deployment has ConsentRegistryV2 (new grants are version 2's)."""
    need_backends(store)
    with open_env(
        "anvil",
        store,
        tmp_path,
        anvil,
        institution_cache_ttl=3600.0,
        embedded_consent_v2=consent_v2,
    ) as env:
        keys = api_keys(env, [env.hospital, env.pharmacy, env.insurer])
        yield World(env, keys, tmp_path, free_port(), dict(overrides))


@pytest.fixture(scope="module")
def anvil_node() -> Iterator[Anvil]:
    """One auto-mining anvil per module (each test deploys its own contracts)."""
    if not anvil_available():
        pytest.skip(ANVIL_MISSING)
    with Anvil() as node:
        yield node
