"""Listing and search: the registered institutions; the events a caller may see, by record,
patient, institution, type and time (each scoped to the caller's view, paged)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.access import sees_whole_trail
from api.deps import Caller, Ctx
from api.paging import (
    DEFAULT_LIMIT,
    MAX_INDEX,
    AfterLeaf,
    IndexWanted,
    Limit,
    paged_json,
    paged_responses,
    sends_index,
    split_page,
)
from api.problems import ValidationFailed
from api.render import event_json, institution_json
from api.schemas import EventOut, InstitutionOut
from ledger.events import Address, Bytes32, EventType, InstitutionKind
from ledger.registrations import UnknownCursor
from ledger.service import EventSearch, Viewer
from ledger.wire import IndexProofOut

router = APIRouter(prefix="/v1")


class _Out(BaseModel):
    """A response body (documented strictly, as api.schemas' are)."""

    model_config = ConfigDict(extra="forbid")


class InstitutionsOut(_Out):
    """One page of the registered institutions, in registration order."""

    institutions: list[InstitutionOut]
    next: str | None = Field(
        description="The `after` of the following page (the `address` of this page's last "
        "institution); null on the last page."
    )


class EventsOut(_Out):
    """One page of the events the caller may see that match the search, in log order."""

    events: list[EventOut]
    next: int | None = Field(
        description="The `after` of the following page (the `leafIndex` of this page's last "
        "event); null on the last page."
    )
    index: IndexProofOut | None = Field(
        default=None,
        description="When the search is a record's whole trail (`recordRef` alone) or a "
        "patient's whole history (`patient` alone) and the caller sees all of it: the "
        "verifiable index's answer for it, as a trail carries it (docs/index.md), on the first "
        "page (or any page asked with `index=true`); else null.",
    )


Time = Annotated[int | None, Query(ge=0, le=MAX_INDEX)]


def known_query(*names: str) -> Any:
    """A dependency refusing (422) any query parameter but ``names``: a search that ignored a
    misspelt filter (``recordref=``) would answer with more than was asked for."""
    allowed = frozenset(names)

    def check(request: Request) -> None:
        unknown = sorted({name for name in request.query_params if name not in allowed})
        if unknown:
            shown = ", ".join(repr(name[:40]) for name in unknown[:5])
            raise ValidationFailed(
                f"unknown query parameter(s) {shown}: this list takes {', '.join(sorted(allowed))}",
                errors=[
                    {"loc": ["query", name[:40]], "code": "unknown", "detail": "not a parameter"}
                    for name in unknown[:20]
                ],
            )

    return Depends(check)


@router.get(
    "/institutions",
    response_model=InstitutionsOut,
    tags=["admin"],
    summary="The registered institutions, paged",
    responses=paged_responses(401, 422),
    dependencies=[known_query("kind", "after", "limit")],
)
def list_institutions(
    request: Request,
    caller: Caller,
    ctx: Ctx,
    kind: Annotated[
        Literal["hospital", "pharmacy", "insurer"] | None,
        Query(description="Only institutions of this kind."),
    ] = None,
    after: Annotated[
        Address | None,
        Query(description="The `address` of the last institution received (`next`)."),
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
) -> JSONResponse:
    """Every institution registered in the InstitutionRegistry — through this service or
    straight on chain — in registration order, with its kind, name, whether it is active and
    when it was registered, as the chain holds them now. Any authenticated caller (the
    registry is public on chain).

    **Paged** by address, in registration order: `after` (the `next` of the previous page)
    and `limit` (1..1000, default 100); `next` is null on the last page, and
    `Link: <…>; rel="next"` names the following page. An `after` that names no registered
    institution is 422, and so is a query parameter it does not take."""
    del caller  # any authenticated caller
    wanted = InstitutionKind[kind.upper()] if kind is not None else None
    try:
        found = ctx.ledger.institutions(after, limit + 1, wanted)
    except UnknownCursor as exc:
        raise ValidationFailed(
            exc.detail,
            errors=[{"loc": ["query", "after"], "code": "unknown", "detail": exc.detail}],
        ) from exc
    page, following = split_page(found, limit, lambda info: info.address)
    body = {"institutions": [institution_json(info) for info in page], "next": following}
    return paged_json(request, body, following)


@router.get(
    "/events",
    response_model=EventsOut,
    tags=["events"],
    summary="Search the events the caller may see, paged",
    responses=paged_responses(401, 422),
    dependencies=[
        known_query(
            "recordRef", "patient", "institution", "type", "from", "to", "after", "limit", "index"
        )
    ],
)
def search_events(
    request: Request,
    caller: Caller,
    ctx: Ctx,
    record_ref: Annotated[
        Bytes32 | None, Query(alias="recordRef", description="Events about this record.")
    ] = None,
    patient: Annotated[Address | None, Query(description="Events about this patient.")] = None,
    institution: Annotated[
        Address | None,
        Query(description="Events this institution took part in: signed, or is named in."),
    ] = None,
    event_type: Annotated[
        EventType | None, Query(alias="type", description="Events of this type.")
    ] = None,
    from_: Annotated[
        Time, Query(alias="from", description="`occurredAt` at or after this (unix seconds).")
    ] = None,
    to: Annotated[Time, Query(description="`occurredAt` before this (unix seconds).")] = None,
    after: AfterLeaf = None,
    limit: Limit = DEFAULT_LIMIT,
    index_wanted: IndexWanted = None,
) -> JSONResponse:
    """The events that match every filter given (none: every event), **among those the
    caller may see** (DESIGN §5): regulators every event; a patient the events about them; an
    institution the events it took part in — signed, or named in as custodian, insurer or
    payee — and every event of the records it holds as custodian. A filter narrows that view
    and never reaches past it: an event the caller may not see is never in the answer,
    whatever is asked, and an empty page tells nothing of what exists beyond it.

    `GET /v1/events` with no filter is the caller's own view of the log: for an institution,
    its events. Each item is an `EventOut` with its status and proof bundle, all proved
    against the same checkpoint.

    A record's whole trail (`recordRef` alone) or a patient's whole history (`patient` alone),
    asked by someone who sees all of it (regulators; the patient; a record's custodian), also
    carries `index` on its first page (and on any page asked with `index=true`): the leaf
    indexes of every one of its events and the lookup proof that this is the whole list the
    index root on chain commits to (docs/index.md).

    **Paged** by leaf index: `after` (the `next` of the previous page) and `limit` (1..1000,
    default 100); `next` is null on the last page, and `Link: <…>; rel="next"` names the
    following page. A query parameter it does not take is 422 (a misspelt filter is not
    ignored)."""
    search = EventSearch(
        record_ref=record_ref,
        patient=patient,
        institution=institution,
        event_type=event_type,
        occurred_from=from_,
        occurred_to=to,
    )
    viewer = Viewer(caller.role, caller.address)
    served_at = ctx.ledger.serving_checkpoint()  # the events and the index proof: one checkpoint
    rows = ctx.ledger.search_events(
        search, viewer, -1 if after is None else after, limit + 1, served_at
    )
    views, following = split_page(rows, limit, lambda view: view.bundle.leafIndex)
    proof: IndexProofOut | None = None
    narrowed = (institution, event_type, from_, to) != (None, None, None, None)
    if (
        sends_index(index_wanted, after)
        and not narrowed
        and (record_ref is None) != (patient is None)
    ):
        own = caller.role == "patient" and caller.address == patient  # not an institution
        if patient is not None and (caller.is_regulator or own):  # whose address it is
            proof = ctx.ledger.patient_index(patient, served_at)
        elif record_ref is not None and sees_whole_trail(caller, record_ref, ctx.ledger):
            proof = ctx.ledger.record_index(record_ref, served_at)
    body = {
        "events": [event_json(view) for view in views],
        "next": following,
        "index": None if proof is None else proof.model_dump(mode="json"),
    }
    return paged_json(request, body, following)
