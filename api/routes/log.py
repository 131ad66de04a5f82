"""The log for mirrors and verifiers: head, entries, proofs, checkpoints; the deployment and
the typed-data definitions.

Tree heads, proofs, checkpoints, the deployment and the typed data are public (hashes and
contract addresses only, like the chain itself); the entries carry the events, so mirroring
them is for regulators.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api.auth import require_role
from api.deps import Caller, Ctx
from api.paging import (
    DEFAULT_LIMIT,
    MAX_INDEX,
    Limit,
    paged_json,
    paged_responses,
    split_page,
)
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
from ledger.service import NotFound

router = APIRouter(prefix="/v1", tags=["log"])


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
    """Where medtrail's contracts are: a wallet or a regulator then reads the chain itself.

    The answer is a deployment file, as `medtrail deploy` writes it: saved as it is served,
    the regulator's tools (`--deployment-file`) and the wallet accept it."""
    return JSONResponse(ctx.ledger.deployment.model_dump(mode="json"))


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
    responses=paged_responses(401, 403, 422),
)
def log_entries(
    request: Request,
    caller: Caller,
    ctx: Ctx,
    start: Size = 0,
    limit: Limit = DEFAULT_LIMIT,
) -> JSONResponse:
    """Entries `[start, start + limit)` of the integrated tree, for mirroring the whole log:
    each leaf's event digest, receipt time, consent status and signed event. `next` is the
    `start` of the following page, null when the mirror has caught up with `treeSize`; the
    `Link: <…>; rel="next"` header names that page. (The log pages by position, `start`
    inclusive, as RFC 6962's `get-entries`; the other lists page with `after`.)"""
    require_role(caller, "regulator", action="mirror the log")
    size = ctx.ledger.log.head().size
    rows = ctx.ledger.entries(start, min(limit, max(size - start, 0))) if start < size else []
    kept = [row for row in rows if row.leaf_index < size]
    entries = [entry_json(row) for row in kept]
    # Continue after the last leaf served (not start + count: a missing row must not make
    # the next page repeat one); a mirror sees the gap itself and reports it.
    end = kept[-1].leaf_index + 1 if kept else min(start + limit, size)
    following = end if end < size else None
    body = {"start": start, "treeSize": size, "next": following, "entries": entries}
    return paged_json(request, body, following, param="start")


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
    summary="The checkpoints and the state of their anchoring, paged",
    responses=paged_responses(422),
)
def checkpoints(
    request: Request,
    ctx: Ctx,
    after: Annotated[
        int | None,
        Query(ge=0, le=MAX_INDEX, description="The tree size of the last checkpoint received."),
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
) -> JSONResponse:
    """The checkpoints the operator made, by tree size: `pending` → `sent` → `anchored`
    (mined) → `confirmed`; `superseded` ones were replaced before being mined.

    **Paged** by tree size: `after` (the `next` of the previous page) and `limit` (1..1000,
    default 100); `next` is null on the last page, and `Link: <…>; rel="next"` names the
    following page. `?after=N-1&limit=1` reads the checkpoint of size N, if there is one."""
    rows = ctx.ledger.checkpoints(-1 if after is None else after, limit + 1)
    page, following = split_page(rows, limit, lambda row: row.tree_size)
    body = {"checkpoints": [checkpoint_json(c) for c in page], "next": following}
    return paged_json(request, body, following)


@router.get(
    "/checkpoints/latest",
    response_model=CheckpointOut,
    summary="The latest checkpoint on chain",
    responses=openapi_responses(404),
)
def latest_checkpoint(ctx: Ctx) -> JSONResponse:
    """The largest checkpoint mined on chain (`anchored` or `confirmed`); 404 before the
    first."""
    latest = ctx.ledger.latest_checkpoint()
    if latest is None:
        raise NotFound("no checkpoint is on chain yet")
    return JSONResponse(checkpoint_json(latest))
