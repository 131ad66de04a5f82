"""The ledger's typed values as the wire's JSON (docs/wire.md), built directly for speed.

The shapes are the ones :mod:`api.schemas` documents; the tests validate answers against the
OpenAPI schema, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ledger.chain.client import GrantInfo, InstitutionInfo
from ledger.errors import MalformedEventError
from ledger.events import purposes_from_mask
from ledger.service import EventView, GrantV2View
from ledger.store.models import CheckpointRow
from ledger.verify import Finding


def hex0x(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def event_json(view: EventView, findings: Sequence[Finding] | None = None) -> dict[str, Any]:
    """``EventOut``: the event, its status and consent, and its proof bundle."""
    body: dict[str, Any] = {
        "eventId": hex0x(view.event_id),
        "type": view.event_type,
        "status": view.status,
        "consent": view.consent,
        "receivedAt": view.received_at,
        "recordRef": hex0x(view.record_ref) if view.record_ref is not None else None,
        "bundle": view.bundle.model_dump(mode="json"),
        # The service's own check of the bundle it serves: empty unless the store was altered
        # behind its back, so that a proof that would fail is never served silently.
        "integrity": [f.to_json() for f in view.integrity],
    }
    if findings is not None:
        body["findings"] = [f.to_json() for f in findings]
    return body


def entry_json(row: Any) -> dict[str, Any]:
    """``LogEntryOut`` of a stored event row (its body is the signed JSON already)."""
    return {
        "leafIndex": row.leaf_index,
        "eventDigest": hex0x(row.digest),
        "receivedAt": row.received_at,
        "consent": row.consent_status,
        "event": {
            "type": row.event_type,
            "event": json.loads(row.body),
            "signature": hex0x(row.signature),
        },
    }


def checkpoint_json(row: CheckpointRow) -> dict[str, Any]:
    return {
        "treeSize": row.tree_size,
        "rootHash": hex0x(row.root),
        "indexRoot": hex0x(row.index_root) if row.index_root else None,
        "status": row.status,
        "previousSize": row.previous_size,
        "transactionHash": hex0x(row.tx_hash) if row.tx_hash else None,
        "blockNumber": row.block_number,
    }


def _purpose_names(mask: int) -> list[str]:
    try:
        return [p.name.lower() for p in purposes_from_mask(mask)]
    except MalformedEventError:  # bits this version does not know
        return []


def grant_v2_json(view: GrantV2View) -> dict[str, Any]:
    """``GrantV2Out``: the signed grant, its id and commitment, and its state on chain."""
    grant = view.grant
    return {
        "version": 2,
        "grantId": view.grant_id,
        "commitment": hex0x(view.stored.commitment),
        **grant.as_json(),
        "allRecords": grant.record_ref == bytes(32),
        "purposeNames": _purpose_names(grant.purposes),
        "committedAt": view.committed_at,
        "revokedAt": view.revoked_at,
        "revoked": view.revoked_at is not None,
        "status": view.status,
    }


def any_grant_json(grant: GrantInfo | GrantV2View) -> dict[str, Any]:
    """A grant of either version as the wire has it."""
    return grant_v2_json(grant) if isinstance(grant, GrantV2View) else grant_json(grant)


def grant_json(info: GrantInfo) -> dict[str, Any]:
    names = _purpose_names(info.purposes)
    return {
        "grantId": info.grant_id,
        "patient": info.patient,
        "grantee": info.grantee,
        "recordRef": hex0x(info.record_ref),
        "allRecords": info.all_records,
        "purposes": info.purposes,
        "purposeNames": names,
        "notBefore": info.not_before,
        "expiresAt": info.expires_at,
        "createdAt": info.created_at,
        "revokedAt": info.revoked_at,
        "revoked": info.revoked,
    }


def institution_json(info: InstitutionInfo, tx_hash: bytes | None = None) -> dict[str, Any]:
    return {
        "address": info.address,
        "kind": info.kind.name.lower(),
        "name": info.name,
        "active": info.active,
        "registeredAt": info.registered_at,
        "transactionHash": hex0x(tx_hash) if tx_hash is not None else None,
    }
