"""Building what the regulator's tools verify: real ledgers, real trails, real tampering.

Tampering is done the way a malicious operator would: by writing to the store behind the
service's back (``UPDATE``/``DELETE``/``INSERT`` on the events table), then letting the
service integrate and anchor whatever the table holds. The operator holds its own key (so
its receipts look right), but not the institutions' keys.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import text

from api.render import entry_json, event_json
from ledger.chain.embedded import EmbeddedNode, LockedEthereumTesterProvider
from ledger.chain.reader import ChainReader, ChainView, DeploymentSpec
from ledger.chain.rpc import InProcessTransport, JsonRpc
from ledger.eip712 import sign_digest, to_checksum_address
from ledger.events import (
    EventBase,
    InstitutionKind,
    PrescriptionIssued,
    RecordAccess,
    SignedEvent,
)
from ledger.service import Ledger
from ledger.verify import receipt_digest
from ledger.visibility import counterparty
from scripts._api import ApiClient
from tests.support.actors import Institution
from tests.support.ledgers import Env, relay_grant

#: A JSON-RPC payload handler (an in-process node).
Handler = Callable[[Any], Any]

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"


def h(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def chain_now(env: Env) -> int:
    """The latest block's time (events must not predate their signer's registration)."""
    return env.ledger.chain.latest_timestamp()


def advance_chain(env: Env, timestamp: int) -> None:
    """Mine a block at ``timestamp`` unless the chain is there already (so that what the chain
    does next happens after events dated up to ``timestamp``)."""
    if chain_now(env) >= timestamp:
        return
    ledger = env.ledger
    if ledger.tester is not None:
        ledger.tester.time_travel(timestamp)
    else:
        ledger.chain.w3.provider.make_request("evm_setNextBlockTimestamp", [timestamp])  # type: ignore[arg-type]
        ledger.chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


def regulator_chain(env: Env, *, consent_v2: str | None = None, **options: Any) -> ChainView:
    """The regulator's read-only view of the env's chain (same node, no keys), as the tools
    connect to it: over JSON-RPC, to the anvil node, or to the embedded chain in process.
    ``consent_v2``: a ConsentRegistryV2 the deployment does not name (``--consent-v2``)."""
    ledger = env.ledger
    spec = DeploymentSpec.from_deployment(ledger.deployment)
    if consent_v2 is not None:
        spec = replace(spec, consent_registry_v2=consent_v2)
    if ledger.tester is None:
        assert ledger.settings.rpc_url is not None
        return ChainView.connect(ledger.settings.rpc_url, spec, **options)
    return ChainView(ChainReader.connect(embedded_node_rpc(env), spec, **options), owns=True)


def embedded_node_rpc(env: Env, wrap: Callable[[Handler], Handler] | None = None) -> JsonRpc:
    """A JSON-RPC client of the env's embedded chain (:class:`EmbeddedNode`, in process), its
    handler wrapped by ``wrap`` (a test's spy or fault) if given."""
    provider = env.ledger.chain.w3.provider
    assert isinstance(provider, LockedEthereumTesterProvider)
    node: Handler = EmbeddedNode(provider)
    if wrap is not None:
        node = wrap(node)
    return JsonRpc(InProcessTransport(node, lock=provider.lock))


def anchor(ledger: Ledger) -> None:
    """Integrate, anchor and confirm whatever the events table holds.

    Between the two passes it waits for the checkpoint to be on chain: anvil answers a
    transaction before it has mined it, and a second pass that catches the receipt missing
    may plan the checkpoint again (and have it refused as ``CheckpointNotLarger``).
    """
    size = ledger.anchor_now().tree_size
    deadline = time.monotonic() + 30
    while True:
        latest = ledger.chain.latest_checkpoint()
        if latest is not None and latest.tree_size >= size:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"checkpoint {size} was not mined")
        time.sleep(0.02)
    ledger.anchor_now()


def export_trail(ledger: Ledger, record: bytes) -> dict[str, Any]:
    """What ``GET /v1/records/{ref}/trail`` serves a regulator (the API's own rendering,
    with the verifiable index's answer for the record)."""
    proof = ledger.record_index(record)
    return {
        "recordRef": "0x" + record.hex(),
        "events": [event_json(v) for v in ledger.trail(record)],
        "index": None if proof is None else proof.model_dump(mode="json"),
    }


def write_mirror(ledger: Ledger, path: Path, *, upto: int | None = None) -> Path:
    """A mirror file of the integrated log as ``GET /v1/log/entries`` serves it."""
    size = ledger.log.head().size if upto is None else upto
    header = {
        "medtrailMirror": 1,
        "chainId": ledger.deployment.chain_id,
        "auditLog": ledger.deployment.audit_log,
    }
    lines = [json.dumps(header)]
    lines += [
        json.dumps(entry_json(row)) for row in ledger.entries(0, size) if row.leaf_index < size
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def snapshot_db(ledger: Ledger, path: Path) -> None:
    """Copy the (SQLite) store to ``path`` (the backup API: consistent, WAL included)."""
    database = ledger.store.url.database
    assert database is not None
    with sqlite3.connect(database) as live, sqlite3.connect(path) as copy:
        live.backup(copy)


def restore_db(ledger: Ledger, path: Path) -> None:
    """Put a copy made by :func:`snapshot_db` back in place of the live store (an operator
    restoring an old backup; or a test going back to a prepared state)."""
    ledger.store.engine.dispose()
    database = ledger.store.url.database
    assert database is not None
    with sqlite3.connect(path) as copy, sqlite3.connect(database) as live:
        copy.backup(live)


# --------------------------------------------------------------------------- tampering


def _rows(ledger: Ledger, sql: str, **params: Any) -> None:
    with ledger.store.write() as connection:
        connection.execute(text(sql), params)


def insert_event(
    ledger: Ledger,
    signed: SignedEvent,
    *,
    record_ref: bytes | None = None,
    ref_event_id: bytes | None = None,
    consent: str = "not-applicable",
    received_at: int | None = None,
) -> int:
    """Append ``signed`` to the log as a malicious operator would: straight into the events
    table, with a receipt signed by the operator key (received now, or at ``received_at``),
    skipping every check. Returns its leaf index (the sequencer and the anchor worker then
    treat it like any other)."""
    event = signed.event
    received = int(time.time()) if received_at is None else received_at
    anchor_by = received + ledger.settings.max_merge_delay
    digest = signed.digest(ledger.domain)
    with ledger.store.write() as connection:
        leaf = connection.execute(
            text("SELECT next_index FROM ingest_counter WHERE id = 1")
        ).scalar_one()
        receipt = sign_digest(
            receipt_digest(ledger.domain, digest, leaf, received, anchor_by),
            bytes(ledger.operator.key),
        )
        connection.execute(
            text(
                "INSERT INTO events (leaf_index, event_id, event_type, institution, patient, "
                "record_ref, ref_event_id, claim_key, digest, signature, body, occurred_at, "
                "received_at, anchor_by, consent_status, receipt_signature, counterparty) "
                "VALUES (:leaf, :id, :type, :institution, :patient, :record, :ref, NULL, :digest, "
                ":signature, :body, :occurred, :received, :anchor_by, :consent, :receipt, :other)"
            ),
            {
                "leaf": leaf,
                "id": event.eventId,
                "type": event.event_type.value,
                "institution": event.institution,
                "patient": event.patient,
                "record": record_ref
                if record_ref is not None
                else getattr(event, "recordRef", None),
                "ref": ref_event_id,
                "digest": digest,
                "signature": signed.signature,
                "body": event.model_dump_json(),
                "occurred": event.occurredAt,
                "received": received,
                "anchor_by": anchor_by,
                "consent": consent,
                "receipt": receipt,
                "other": counterparty(event),
            },
        )
        connection.execute(
            text("UPDATE ingest_counter SET next_index = :next WHERE id = 1"), {"next": leaf + 1}
        )
    return int(leaf)


def rewrite_body(ledger: Ledger, event: EventBase, **changes: Any) -> EventBase:
    """``UPDATE events SET body=…`` for one event (digest, signature and tree untouched)."""
    changed = type(event).model_validate({**event.model_dump(), **changes})
    _rows(
        ledger,
        "UPDATE events SET body = :body WHERE event_id = :id",
        body=changed.model_dump_json(),
        id=event.eventId,
    )
    return changed


def delete_event(ledger: Ledger, event_id: bytes) -> None:
    """``DELETE FROM events`` one row (its leaf stays in the tree the chain anchored)."""
    _rows(ledger, "DELETE FROM events WHERE event_id = :id", id=event_id)


def swap_leaves(ledger: Ledger, first: int, second: int) -> None:
    """Serve two (validly signed) events at each other's leaf: the anchored root no longer
    matches the served events, though every event and signature is genuine."""
    _rows(ledger, "UPDATE events SET leaf_index = -1 WHERE leaf_index = :a", a=first)
    _rows(ledger, "UPDATE events SET leaf_index = :a WHERE leaf_index = :b", a=first, b=second)
    _rows(ledger, "UPDATE events SET leaf_index = :b WHERE leaf_index = -1", b=second)


# --------------------------------------------------------------------------- a story


@dataclass
class Story:
    """A clean record trail: own read, prescription, pharmacy read under a grant, dispense,
    claim, payment, and an emergency access by another hospital."""

    record: bytes
    grant_id: int
    prescription: PrescriptionIssued
    events: list[SignedEvent]
    emergency_hospital: Institution
    t0: int


def granted_read(env: Env, record: bytes, grant_id: int, occurred_at: int) -> RecordAccess:
    """The pharmacy's read of the hospital's ``record`` under grant ``grant_id`` (unsigned)."""
    return env.pharmacy.access(
        record,
        env.patient.address,
        custodian=env.hospital.address,
        grantId=grant_id,
        occurredAt=occurred_at,
    )


def tell_story(env: Env, local_id: str = "mrn-0042") -> Story:
    ledger, hospital, pharmacy, insurer = env.ledger, env.hospital, env.pharmacy, env.insurer
    patient = env.patient.address
    record = hospital.record(local_id)
    other = env.institution(f"Other Hospital {local_id}", InstitutionKind.HOSPITAL)
    grant_id = relay_grant(env, pharmacy.address, record)
    t0 = chain_now(env) + 1
    own_read = hospital.access(record, patient, occurredAt=t0)
    rx = hospital.prescription(record, patient, fills=2, occurredAt=t0 + 1)
    pharmacy_read = pharmacy.access(
        record, patient, custodian=hospital.address, grantId=grant_id, occurredAt=t0 + 2
    )
    fill = pharmacy.dispense(rx, fill=1, occurredAt=t0 + 3)
    claim = pharmacy.claim(fill, insurer.address, amount=25_00, occurredAt=t0 + 4)
    pay = insurer.payment(claim, amount=20_00, occurredAt=t0 + 5)
    emergency = other.access(
        record, patient, custodian=hospital.address, reasonHash=h("unconscious"), occurredAt=t0 + 6
    )
    signed = [
        hospital.sign(own_read),
        hospital.sign(rx),
        pharmacy.sign(pharmacy_read),
        pharmacy.sign(fill),
        pharmacy.sign(claim),
        insurer.sign(pay),
        other.sign(emergency),
    ]
    ledger.submit(signed)
    anchor(ledger)
    advance_chain(env, t0 + 7)
    return Story(record, grant_id, rx, signed, other, t0)


@contextmanager
def api_of(env: Env) -> Iterator[ApiClient]:
    """The ledger's HTTP API (``api.app.create_app``), in process, with a regulator's key."""
    from api.app import bootstrap_admin_key, create_app

    with warnings.catch_warnings():
        # Starlette's TestClient on httpx warns that it prefers httpx2; it works as it is.
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    key = bootstrap_admin_key(env.ledger)
    with TestClient(create_app(env.ledger), base_url="http://testserver") as client:
        yield ApiClient("http://testserver", key, client=client)


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Temporarily set environment variables (for in-process CLI runs)."""
    import os

    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------------------------------- big mirrors

#: The AuditLog address of :func:`synthetic_mirror`'s logs (no contract: --no-chain audits).
SYNTHETIC_AUDIT_LOG = to_checksum_address("0x" + "5a" * 20)


def synthetic_mirror(path: Path, count: int, chain_id: int = 31337) -> Path:
    """A mirror file of ``count`` custodian accesses signed by four hospitals (real events
    and signatures, no ledger: for logs longer than a recompute chunk), of the AuditLog at
    :data:`SYNTHETIC_AUDIT_LOG` on chain ``chain_id``."""
    from ledger.events import audit_log_domain

    domain = audit_log_domain(chain_id, SYNTHETIC_AUDIT_LOG)
    hospitals = [Institution(f"Hospital {i}", InstitutionKind.HOSPITAL, domain) for i in range(4)]
    patients = ["0x" + f"{i + 1:040x}" for i in range(25)]
    header = {"medtrailMirror": 1, "chainId": chain_id, "auditLog": SYNTHETIC_AUDIT_LOG}
    lines = [json.dumps(header)]
    at = int(time.time()) - 10_000
    for index in range(count):
        hospital = hospitals[index % 4]
        event = hospital.access(
            hospital.record(f"mrn-{index % 300}"), patients[index % 25], occurredAt=at + index
        )
        signed = hospital.sign(event)
        entry = {
            "leafIndex": index,
            "eventDigest": "0x" + signed.digest(domain).hex(),
            "receivedAt": at + index + 1,
            "consent": "custodian",
            "event": signed.model_dump(mode="json"),
        }
        lines.append(json.dumps(entry, separators=(",", ":")))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def edit_mirror_line(path: Path, leaf_index: int, edit: Any) -> None:
    """Change the mirrored entry of ``leaf_index`` with ``edit(entry dict)`` (in place)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    entry = json.loads(lines[1 + leaf_index])
    assert entry["leafIndex"] == leaf_index
    edit(entry)
    lines[1 + leaf_index] = json.dumps(entry, separators=(",", ":"))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
