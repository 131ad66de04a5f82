"""The log for mirrors and verifiers: head, entries, proofs, checkpoints; the deployment and
the typed-data definitions.

Tree heads, proofs, checkpoints, the deployment and the typed data are public (hashes and
contract addresses only, like the chain itself); the entries carry the events, so mirroring
them is for regulators.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.auth import require_role
from api.deps import Caller, Ctx
from api.problems import openapi_responses
from api.render import checkpoint_json, entry_json, hex0x
from api.schemas import (
    CheckpointOut,
    CheckpointsOut,
    ConsistencyOut,
    DeploymentOut,
    InclusionOut,
    LogEntriesOut,
    LogHeadOut,
    TypedDataOut,
)
from ledger.anchor import ANCHORED, CONFIRMED
from ledger.service import NotFound

router = APIRouter(prefix="/v1", tags=["log"])

#: The largest tree size or index accepted (the store keeps them as signed 64-bit integers).
MAX_INDEX = 2**63 - 1
MAX_ENTRIES = 1000

Size = Annotated[int, Query(ge=0, le=MAX_INDEX)]


@router.get(
    "/typed-data",
    response_model=TypedDataOut,
    summary="EIP-712 domains and types (events, grants, revocations, receipts)",
    responses=openapi_responses(),
)
def typed_data(ctx: Ctx) -> JSONResponse:
    """What any wallet or library (MetaMask, ethers, viem, eth-account) needs to sign events,
    grants and revocations for this deployment, and to check the operator's receipts."""
    return JSONResponse(ctx.ledger.typed_data())


@router.get(
    "/deployment",
    response_model=DeploymentOut,
    summary="Chain id and contract addresses",
    responses=openapi_responses(),
)
def deployment(ctx: Ctx) -> JSONResponse:
    """Where medtrail's contracts are: a wallet or a regulator then reads the chain itself."""
    d = ctx.ledger.deployment
    return JSONResponse(
        {
            "chainId": d.chain_id,
            "institutionRegistry": d.institution_registry,
            "auditLog": d.audit_log,
            "consentRegistry": d.consent_registry,
            "blockNumber": d.block_number,
        }
    )


@router.get(
    "/log/head",
    response_model=LogHeadOut,
    summary="The integrated tree head",
    responses=openapi_responses(),
)
def log_head(ctx: Ctx) -> JSONResponse:
    """Size and RFC 9162 root of the integrated tree (may be ahead of the chain)."""
    head = ctx.ledger.log.head()
    return JSONResponse({"treeSize": head.size, "rootHash": hex0x(head.root)})


@router.get(
    "/log/entries",
    response_model=LogEntriesOut,
    summary="Leaves and events of the log, paged (regulators)",
    responses=openapi_responses(401, 403, 422),
)
def log_entries(
    caller: Caller,
    ctx: Ctx,
    start: Size = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_ENTRIES)] = 100,
) -> JSONResponse:
    """Entries `[start, start + limit)` of the integrated tree, for mirroring the whole log:
    each leaf's event digest, receipt time, consent status and signed event. `next` is the
    `start` of the following page, null when the mirror has caught up with `treeSize`."""
    require_role(caller, "regulator", action="mirror the log")
    size = ctx.ledger.log.head().size
    rows = ctx.ledger.entries(start, min(limit, max(size - start, 0))) if start < size else []
    kept = [row for row in rows if row.leaf_index < size]
    entries = [entry_json(row) for row in kept]
    # Continue after the last leaf served (not start + count: a missing row must not make
    # the next page repeat one); a mirror sees the gap itself and reports it.
    end = kept[-1].leaf_index + 1 if kept else min(start + limit, size)
    return JSONResponse(
        {
            "start": start,
            "treeSize": size,
            "next": end if end < size else None,
            "entries": entries,
        }
    )


@router.get(
    "/log/consistency",
    response_model=ConsistencyOut,
    summary="RFC 9162 consistency proof between two tree sizes",
    responses=openapi_responses(400, 422),
)
def log_consistency(
    ctx: Ctx,
    from_: Annotated[int, Query(alias="from", ge=0, le=MAX_INDEX)],
    to: Size,
) -> JSONResponse:
    """Proof that the tree of size `to` extends the tree of size `from` (both at most the
    integrated size; else 400 `tree-size-out-of-range`)."""
    proof = ctx.ledger.log.consistency_proof(from_, to)
    return JSONResponse({"from": from_, "to": to, "proof": [hex0x(p) for p in proof]})


@router.get(
    "/log/inclusion",
    response_model=InclusionOut,
    summary="RFC 9162 inclusion proof of a leaf",
    responses=openapi_responses(400, 422),
)
def log_inclusion(
    ctx: Ctx,
    leaf_index: Annotated[int, Query(alias="leafIndex", ge=0, le=MAX_INDEX)],
    tree_size: Annotated[int, Query(alias="treeSize", ge=1, le=MAX_INDEX)],
) -> JSONResponse:
    """Proof that leaf `leafIndex` is in the tree of size `treeSize` (400
    `tree-size-out-of-range` outside the integrated tree)."""
    proof = ctx.ledger.log.inclusion_proof(leaf_index, tree_size)
    return JSONResponse(
        {"leafIndex": leaf_index, "treeSize": tree_size, "proof": [hex0x(p) for p in proof]}
    )


@router.get(
    "/checkpoints",
    response_model=CheckpointsOut,
    summary="Every checkpoint and the state of its anchoring",
    responses=openapi_responses(),
)
def checkpoints(ctx: Ctx) -> JSONResponse:
    """Every checkpoint the operator made, by tree size: `pending` → `sent` → `anchored`
    (mined) → `confirmed`; `superseded` ones were replaced before being mined."""
    return JSONResponse({"checkpoints": [checkpoint_json(c) for c in ctx.ledger.checkpoints()]})


@router.get(
    "/checkpoints/latest",
    response_model=CheckpointOut,
    summary="The latest checkpoint on chain",
    responses=openapi_responses(404),
)
def latest_checkpoint(ctx: Ctx) -> JSONResponse:
    """The largest checkpoint mined on chain (`anchored` or `confirmed`); 404 before the
    first."""
    on_chain = [c for c in ctx.ledger.checkpoints() if c.status in (ANCHORED, CONFIRMED)]
    if not on_chain:
        raise NotFound("no checkpoint is on chain yet")
    return JSONResponse(checkpoint_json(on_chain[-1]))
