"""The regulator's admin API: institutions on chain, API keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from api.auth import require_role
from api.deps import ApiContext, Caller, Ctx
from api.paging import DEFAULT_LIMIT, Limit, paged_json, paged_responses, split_page
from api.problems import RegistrarNotConfigured, UnknownInstitution, openapi_responses
from api.render import institution_json
from api.schemas import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    ApiKeysOut,
    InstitutionIn,
    InstitutionOut,
)
from ledger.events import Address, InstitutionKind
from ledger.service import NotFound

router = APIRouter(prefix="/v1", tags=["admin"])

InstitutionPath = Annotated[Address, Path(alias="address", description="Signing address.")]
KeyIdPath = Annotated[str, Path(alias="keyId", pattern="^[0-9a-f]{16}$")]


def _need_registrar(ctx: ApiContext) -> None:
    """503 ``registrar-not-configured`` when the service has no key to register with."""
    if ctx.ledger.registrar is None:
        raise RegistrarNotConfigured(
            "this service has no registrar key: set MEDTRAIL_REGISTRAR_KEY to a key holding the "
            "InstitutionRegistry's REGISTRAR_ROLE, or register institutions on chain directly",
            setting="MEDTRAIL_REGISTRAR_KEY",
        )


@router.post(
    "/institutions",
    response_model=InstitutionOut,
    status_code=201,
    summary="Register an institution on chain (regulators)",
    responses=openapi_responses(401, 403, 409, 422, 503),
)
def register_institution(body: InstitutionIn, caller: Caller, ctx: Ctx) -> JSONResponse:
    """Register the institution's signing address with its kind and name in the
    InstitutionRegistry (the service's registrar key sends the transaction). Kinds are
    permanent: an address registered already answers 409 `InstitutionAlreadyRegistered`.
    Without a registrar key (`MEDTRAIL_REGISTRAR_KEY`) the service answers 503
    `registrar-not-configured`."""
    require_role(caller, "regulator", action="register institutions")
    _need_registrar(ctx)
    kind = InstitutionKind[body.kind.upper()]
    tx = ctx.ledger.register_institution(body.address, kind, body.name)
    info = ctx.ledger.institution(body.address)
    return JSONResponse(institution_json(info, tx), status_code=201)


@router.get(
    "/institutions/{address}",
    response_model=InstitutionOut,
    summary="An institution's registration",
    responses=openapi_responses(401, 404, 422),
)
def get_institution(address: InstitutionPath, caller: Caller, ctx: Ctx) -> JSONResponse:
    """The institution's kind, name, and whether it is active (as on chain); 404 if the
    address was never registered."""
    info = ctx.ledger.institution(address)
    if not info.registered:
        raise NotFound(f"{address} is not a registered institution")
    return JSONResponse(institution_json(info))


@router.post(
    "/institutions/{address}/suspend",
    response_model=InstitutionOut,
    summary="Suspend an institution (regulators)",
    responses=openapi_responses(401, 403, 404, 409, 422, 503),
)
def suspend_institution(address: InstitutionPath, caller: Caller, ctx: Ctx) -> JSONResponse:
    """From the block of this transaction on, the institution's events are refused."""
    require_role(caller, "regulator", action="suspend institutions")
    _need_registrar(ctx)
    tx = ctx.ledger.suspend_institution(address)
    return JSONResponse(institution_json(ctx.ledger.institution(address), tx))


@router.post(
    "/institutions/{address}/reinstate",
    response_model=InstitutionOut,
    summary="Reinstate a suspended institution (regulators)",
    responses=openapi_responses(401, 403, 404, 409, 422, 503),
)
def reinstate_institution(address: InstitutionPath, caller: Caller, ctx: Ctx) -> JSONResponse:
    require_role(caller, "regulator", action="reinstate institutions")
    _need_registrar(ctx)
    tx = ctx.ledger.reinstate_institution(address)
    return JSONResponse(institution_json(ctx.ledger.institution(address), tx))


@router.post(
    "/api-keys",
    response_model=ApiKeyCreated,
    status_code=201,
    summary="Issue an API key (regulators)",
    responses=openapi_responses(401, 403, 409, 422),
)
def issue_api_key(body: ApiKeyIn, caller: Caller, ctx: Ctx) -> JSONResponse:
    """A new API key. An institution key is bound to the institution's address, which must
    be registered on chain (409 `institution-unknown` otherwise). The key is in the answer
    **once**: only its hash is stored."""
    require_role(caller, "regulator", action="issue API keys")
    if body.institution is not None and not ctx.ledger.institution(body.institution).registered:
        raise UnknownInstitution(
            f"{body.institution} is not a registered institution", institution=body.institution
        )
    info, token = ctx.credentials.issue_key(body.role, body.institution, body.label)
    return JSONResponse(
        {**info.to_json(), "key": token},
        status_code=201,
        headers={"Cache-Control": "no-store"},  # the key, shown once: never cached
    )


@router.get(
    "/api-keys",
    response_model=ApiKeysOut,
    summary="The API keys (without secrets; regulators), paged",
    responses=paged_responses(401, 403, 422),
)
def list_api_keys(
    request: Request,
    caller: Caller,
    ctx: Ctx,
    after: Annotated[
        str | None,
        Query(pattern="^[0-9a-f]{16}$", description="The `keyId` of the last key received."),
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
) -> JSONResponse:
    """The API keys, oldest first, revoked ones included.

    **Paged**: `after` (the `next` of the previous page: a `keyId`) and `limit` (1..1000,
    default 100); `next` is null on the last page, and `Link: <…>; rel="next"` names the
    following page."""
    require_role(caller, "regulator", action="list API keys")
    keys = ctx.credentials.list_keys(after, limit + 1)
    page, following = split_page(keys, limit, lambda key: key.key_id)
    body = {"keys": [k.to_json() for k in page], "next": following}
    return paged_json(request, body, following)


@router.delete(
    "/api-keys/{keyId}",
    response_model=ApiKeyOut,
    summary="Revoke an API key (regulators)",
    responses=openapi_responses(401, 403, 404, 422),
)
def revoke_api_key(key_id: KeyIdPath, caller: Caller, ctx: Ctx) -> JSONResponse:
    """The key stops working at once. Idempotent: revoking a revoked key changes nothing."""
    require_role(caller, "regulator", action="revoke API keys")
    return JSONResponse(ctx.credentials.revoke_key(key_id).to_json())
