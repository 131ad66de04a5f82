"""Health, readiness, metrics, and the problem catalogue."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import ApiContext, Ctx
from api.problems import (
    NotReady,
    ProblemType,
    ProblemTypes,
    catalogue,
    openapi_responses,
    problem_page,
)
from api.schemas import HealthOut, ReadyOut
from ledger.errors import LedgerError
from ledger.redact import Redactor
from ledger.service import NotFound

router = APIRouter(tags=["system"])


@router.get(
    "/healthz",
    response_model=HealthOut,
    summary="The process is up",
    responses=openapi_responses(),
)
def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=ReadyOut,
    summary="The store and the chain answer",
    responses=openapi_responses(503),
)
def readyz(request: Request, ctx: Ctx) -> JSONResponse:
    """200 when the store answers a query, the chain its block number, and the operator's key
    may still anchor checkpoints (`anchoring`: it holds the AuditLog's LOG_OPERATOR_ROLE);
    else 503 `not-ready` with the state of each in `checks`. Public: the RPC endpoint shows as
    its origin only (`scheme://host:port`), never its credentials, path or query.

    **Bounded**: the checks run at once and the answer comes within
    `MEDTRAIL_READINESS_TIMEOUT` seconds (default 2.5), well under a load balancer's probe
    timeout; a check still running then is reported as `timed out` (a node that accepts
    connections but never answers, a database that hangs)."""
    redactor: Redactor = request.app.state.redactor
    limit = ctx.ledger.settings.readiness_timeout
    pool: ThreadPoolExecutor = request.app.state.readiness_pool
    jobs: dict[str, Future[str]] = {
        "store": pool.submit(_store_check, ctx),
        "chain": pool.submit(_chain_check, ctx, redactor),
        "anchoring": pool.submit(_anchoring, ctx, redactor),
    }
    wait(jobs.values(), timeout=limit)
    checks: dict[str, str] = {}
    for name, job in jobs.items():
        if job.done():
            checks[name] = job.result()
        else:
            job.cancel()  # not started yet (the pool is busy with hung checks): never will be
            checks[name] = f"timed out: no answer within {limit:g} s"
    block = 0
    state = checks["chain"]
    if state.startswith("ok:"):
        block = int(state.removeprefix("ok:"))
        checks["chain"] = "ok"
    else:
        del checks["anchoring"]  # the chain's answer on the role means nothing then
    if any(state != "ok" for state in checks.values()):
        failing = ", ".join(name for name, state in checks.items() if state != "ok")
        raise NotReady(f"the service is not ready: {failing}", checks=checks)
    return JSONResponse({"status": "ready", "checks": checks, "blockNumber": block})


def _store_check(ctx: ApiContext) -> str:
    return "ok" if ctx.ledger.store.ping() else "unreachable"


def _chain_check(ctx: ApiContext, redactor: Redactor) -> str:
    """``ok:<block number>``, or why the chain does not answer."""
    try:
        return f"ok:{ctx.ledger.chain.block_number()}"
    except LedgerError as exc:
        return redactor.text(f"unreachable: {exc.detail}")


def _anchoring(ctx: ApiContext, redactor: Redactor) -> str:
    """``ok``, or why the operator's key cannot anchor (its role was revoked since start)."""
    operator = ctx.ledger.operator.address
    try:
        held = ctx.ledger.chain.is_log_operator(operator)
    except LedgerError as exc:
        return redactor.text(f"unknown: {exc.detail}")
    if held:
        return "ok"
    return (
        f"MEDTRAIL_OPERATOR_KEY ({operator}) does not hold the AuditLog's LOG_OPERATOR_ROLE: "
        "checkpoints cannot be anchored"
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **openapi_responses(),
    },
)
def metrics(ctx: Ctx) -> Response:
    """Requests by route and status, events ingested, refusals by code, ingest latency, and
    the log's tree size, latest anchored and confirmed sizes."""
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/problems",
    response_model=ProblemTypes,
    summary="Every kind of problem the API answers with",
    responses=openapi_responses(),
)
def problems() -> JSONResponse:
    return JSONResponse(
        {"problems": [kind.to_model().model_dump() for kind in catalogue().values()]}
    )


@router.get(
    "/problems/{code}",
    response_model=ProblemType,
    summary="What a problem `type` means",
    responses={
        200: {"content": {"text/html": {"schema": {"type": "string"}}}},
        **openapi_responses(404, 422),
    },
)
def problem(
    code: Annotated[str, Path(pattern="^[a-z0-9-]{1,64}$")],
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """The description of one problem kind (JSON, or HTML for browsers): every answer's
    `type` is `/problems/<code>` and resolves here."""
    kind = catalogue().get(code)
    if kind is None:
        raise NotFound(f"no problem kind {code!r}")
    if accept and "text/html" in accept and "application/json" not in accept:
        return HTMLResponse(problem_page(kind))
    return JSONResponse(kind.to_model().model_dump())
