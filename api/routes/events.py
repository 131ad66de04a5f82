"""Submitting signed events and reading one event; a record's trail."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from pydantic_core import from_json

from api.access import check_event, check_record, reading_institution, sees_whole_trail
from api.auth import Principal, require_role
from api.deps import ApiContext, Caller, Ctx
from api.paging import (
    DEFAULT_LIMIT,
    AfterLeaf,
    IndexWanted,
    Limit,
    paged_json,
    paged_responses,
    sends_index,
    split_page,
)
from api.problems import ForeignEvent, openapi_responses
from api.render import event_json
from api.schemas import EventBatch, EventOut, ReceiptsOut, TrailOut
from api.verification import verify_views
from ledger import index
from ledger.errors import LedgerError
from ledger.events import Bytes32, SignedEvent, built_model, signed_event_from_json
from ledger.ingest import BatchRejected, BatchTooLarge, receipts_json
from ledger.trail import IndexClaim

router = APIRouter(prefix="/v1", tags=["events"])

EventIdPath = Annotated[
    Bytes32, Path(alias="eventId", description="The event's 32-byte id, 0x-hex.")
]
RecordRefPath = Annotated[
    Bytes32, Path(alias="recordRef", description="The record's opaque reference, 0x-hex.")
]


@router.post(
    "/events",
    response_model=ReceiptsOut,
    summary="Submit signed events (a batch is all-or-nothing)",
    responses=openapi_responses(401, 403, 409, 413, 422, 503),
    # The body is read as bytes and parsed off the event loop (parse_batch): declared here.
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/EventBatch"}}
            },
        }
    },
)
async def submit_events(request: Request, caller: Caller, ctx: Ctx) -> Response:
    """Append signed events to the log (institutions only; each event's `institution` must be
    the caller's own address).

    **All-or-nothing**: every event is checked (schema, signature, signer registered with the
    right kind, references, fills, payments, consent state) and if any is refused, nothing of
    the batch is stored; the problem's `errors` lists the refused events with their `index`,
    `code` and `detail` (the first 1,000; past that, `errorsTotal` says how many). Batches
    hold 1..`MEDTRAIL_MAX_BATCH` events (default 1000; more: 413 `batch-too-large`).

    **Idempotent per eventId**: resending a stored event returns its original receipt with
    `duplicate: true`; the same eventId with other content is a 409 `event-id-conflict`.

    The answer holds one receipt per event, in order, signed by the log operator: the leaf
    index, and the promise to anchor the event on chain by `anchorBy`.

    Each server process checks one batch at a time, in the order they came: a batch that has
    waited 30 s for its turn is answered 503 `server-busy` (retry shortly, `Retry-After`).
    """
    # Before the body is parsed or a turn taken: a caller who may not submit spends neither.
    require_role(caller, "institution", action="submit events")
    body = await request.body()
    async with ctx.ingest_turns.turn() as give_on:
        return await run_in_threadpool(_submit, body, caller, ctx, give_on)


def parse_batch(body: bytes, max_events: int) -> EventBatch:
    """The request body as an :class:`EventBatch`, parsed once, off the event loop; a body
    that does not match is refused as FastAPI refuses one (422 ``validation-error``, each
    error located under ``body``), and one listing more than ``max_events`` events as ingest
    refuses it (413 ``batch-too-large``) before any of them is validated: a body of 300,000
    malformed events took ~1 s and a 422 listing every one.

    A body in the form clients write it (``{"events": [...]}``, each event every field of
    its type and no other, each value one its field takes) is built from its parsed JSON by
    :func:`ledger.events.signed_event_from_json`, the audit's fast path, which makes the model
    ``model_validate_json`` makes (``tests/api/test_parse_batch.py``); any other body is
    validated by pydantic, whose refusal the client gets. Issue 15: 7.48 → 5.84 µs per event.
    """
    if not body:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        data = from_json(body)
    except ValueError:
        data = None  # pydantic says why
    events = data.get("events") if type(data) is dict else None
    if type(events) is list and len(events) > max_events:
        raise BatchTooLarge(
            f"{len(events)} events in one batch; the limit is {max_events}", limit=max_events
        )
    batch = _plain_batch(data)
    if batch is not None:
        return batch
    try:
        return EventBatch.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        ) from None


def _plain_batch(data: Any) -> EventBatch | None:
    """The batch ``EventBatch.model_validate_json`` makes of a body that parsed as ``data``
    (``pydantic_core.from_json``), built without pydantic's validation; None when the body is
    not in the form clients write (pydantic then judges)."""
    if type(data) is not dict or data.keys() != {"events"}:
        return None
    raw = data["events"]
    if type(raw) is not list or not raw:
        return None
    events: list[SignedEvent] = []
    for item in raw:
        signed = signed_event_from_json(item)
        if signed is None:
            return None
        events.append(signed)
    return built_model(EventBatch, {"events": events})


def _submit(
    body: bytes, caller: Principal, ctx: ApiContext, give_on: Callable[[], None]
) -> Response:
    try:
        batch = parse_batch(body, ctx.ledger.ingestor.max_batch)
    except BatchTooLarge as exc:
        ctx.metrics.refusals.labels(exc.code).inc()
        raise
    foreign = [
        {
            "index": index,
            "code": ForeignEvent.code,
            "detail": f"the event's institution is {signed.institution}, not {caller.address}",
        }
        for index, signed in enumerate(batch.events)
        if signed.institution != caller.address
    ]
    if foreign:
        ctx.metrics.refusals.labels(ForeignEvent.code).inc(len(foreign))
        raise ForeignEvent(
            f"{len(foreign)} event(s) name another institution than {caller.address}",
            errors=foreign,
        )
    metrics = ctx.metrics
    started = time.perf_counter()
    try:
        receipts = ctx.ledger.submit(batch.events, before_commit=give_on)
    except BatchRejected as exc:
        for code in exc.refusal_codes():
            metrics.refusals.labels(code).inc()
        raise
    except LedgerError as exc:
        metrics.refusals.labels(exc.code).inc()
        raise
    finally:
        metrics.ingest_seconds.observe(time.perf_counter() - started)
    stored = Counter(
        signed.type.value
        for signed, receipt in zip(batch.events, receipts, strict=True)
        if not receipt.duplicate
    )
    for event_type, count in stored.items():
        metrics.events_ingested.labels(event_type).inc(count)
    return Response(receipts_json(receipts), media_type="application/json")


@router.get(
    "/events/{eventId}",
    response_model=EventOut,
    summary="One event, its status and its proof bundle",
    responses=openapi_responses(401, 404, 422),
)
def get_event(event_id: EventIdPath, caller: Caller, ctx: Ctx) -> JSONResponse:
    """The event, its status (`pending` until a checkpoint covering it is mined, `anchored`,
    then `confirmed`), its consent status and its proof bundle (inclusion proof to the latest
    on-chain checkpoint, once anchored).

    Visible to regulators, to the event's patient, to the custodian of its record, and to the
    institutions that took part in it: its signer and the institution it names (the custodian
    an access names, the insurer of a claim, the payee of a payment). Anyone else gets 404.
    """
    view = ctx.ledger.event(event_id, reading_institution(caller))
    check_event(caller, view)
    return JSONResponse(event_json(view))


@router.get(
    "/records/{recordRef}/trail",
    response_model=TrailOut,
    summary="The events about a record the caller may see, with proofs, paged",
    responses=paged_responses(401, 404, 422),
)
def get_trail(
    record_ref: RecordRefPath,
    request: Request,
    caller: Caller,
    ctx: Ctx,
    verify: Annotated[
        bool, Query(description="Also verify each bundle against the chain and report findings.")
    ] = False,
    after: AfterLeaf = None,
    limit: Limit = DEFAULT_LIMIT,
    index_wanted: IndexWanted = None,
) -> JSONResponse:
    """The events about the record (accesses, prescriptions, and the dispenses, claims and
    payments that refer to them), in log order, each with its proof bundle; all bundles of
    one page are proved against the same checkpoint (pages read at different times may name
    different checkpoints: each bundle carries its own). This is what a regulator verifies.

    **Paged** by leaf index: `after` (the `next` of the previous page) and `limit`
    (1..1000, default 100); `next` is null on the last page, and `Link: <…>; rel="next"`
    names the following page.

    Who sees what (DESIGN §5): regulators, the record's patient and its custodian see every
    event; another institution sees only the events it took part in — those it signed and
    those that name it (the custodian an access names, a claim's insurer, a payment's payee).
    Anyone who may see none of the record's events gets 404.

    **Complete**: `index` is the verifiable index's answer for the record at the checkpoint
    the bundles are proved against — the leaf indexes of *all* its events and the lookup proof
    that this is the list the index root on chain commits to (docs/index.md) — on the first
    page (and on any page asked with `index=true`), so that a client checks that the pages
    together served every listed event. Null on the other pages, before the first checkpoint,
    and for an institution other than the custodian (it sees only its own events: the whole
    list would tell it of the others).

    With `verify=true`, each event also carries `findings` from the one trail verifier run
    against the chain (proofs, receipt, signer's registration at `occurredAt`, consent, when
    the chain first anchored it), and the page `findings` about itself (order, duplicates,
    events of another record, the page's part of the list complete) — a convenience: the
    regulator's tools recompute it without trusting the service, and find the same.
    """
    check_record(caller, record_ref, ctx.ledger)
    served_at = ctx.ledger.serving_checkpoint()  # the events and the index proof: one checkpoint
    rows = ctx.ledger.trail(
        record_ref,
        reading_institution(caller),
        -1 if after is None else after,
        limit + 1,
        served_at,
    )
    views, following = split_page(rows, limit, lambda view: view.bundle.leafIndex)
    whole = sees_whole_trail(caller, record_ref, ctx.ledger)
    send = sends_index(index_wanted, after)
    # Read (once per checkpoint: the service keeps it) when sent or checked with verify=true.
    proof = ctx.ledger.record_index(record_ref, served_at) if whole and (send or verify) else None
    report = (
        verify_views(
            ctx.ledger,
            views,
            record_ref=record_ref,
            context=ctx.ledger.rule_context(views),
            completeness=IndexClaim(
                index.record_key(record_ref),
                "the record's trail",
                proof,
                after=-1 if after is None else after,
                through=following,
            )
            if whole
            else None,
        )
        if verify
        else None
    )
    findings = report.events if report is not None else [None] * len(views)
    body: dict[str, Any] = {
        "recordRef": "0x" + record_ref.hex(),
        "events": [event_json(v, f) for v, f in zip(views, findings, strict=True)],
        "next": following,
        "index": None if proof is None or not send else proof.model_dump(mode="json"),
    }
    if report is not None:
        body["findings"] = [f.to_json() for f in report.findings]
    return paged_json(request, body, following)
