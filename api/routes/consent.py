"""Consent: relaying patients' signed grants and revocations, reading grants and accesses,
and access decisions for record holders."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse

from api.access import may_read_grant
from api.auth import Principal, require_role
from api.deps import Caller, Ctx
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
from api.problems import Forbidden, openapi_responses
from api.render import any_grant_json, event_json, grant_json, grant_v2_json
from api.schemas import (
    AccessDecisionIn,
    AccessDecisionOut,
    AccessesOut,
    ConsentNonceOut,
    GrantIn,
    GrantOut,
    GrantsOut,
    GrantV2In,
    GrantV2Out,
    RevokeIn,
    RevokeV2In,
)
from ledger.chain.client import GrantRequest
from ledger.chain.tx import ContractReverted
from ledger.consent import GrantVersionError, SignedGrant
from ledger.events import Address, grant_refusal
from ledger.service import Ledger, NotFound

router = APIRouter(prefix="/v1", tags=["consent"])

GrantIdPath = Annotated[int, Path(alias="grantId", ge=1, le=2**256 - 1)]
PatientPath = Annotated[Address, Path(alias="address", description="The patient's address.")]


def _own_patient(caller: Principal, patient: str, action: str) -> None:
    """Patients act and read only for themselves; regulators read anyone's."""
    if caller.role == "patient" and caller.address != patient:
        raise Forbidden(f"a patient may {action} only their own (signed in as {caller.address})")


@router.post(
    "/grants",
    response_model=GrantOut | GrantV2Out,
    status_code=201,
    summary="Keep and commit (version 2), or relay (version 1), a grant the patient signed",
    responses={
        **openapi_responses(401, 403, 409, 422),
        200: {"description": "Version 2: this signed grant was kept before (as it stands)."},
        202: {"description": "Version 2: kept; its commitment goes on chain in the next batch."},
    },
)
def relay_grant(body: GrantV2In | GrantIn, caller: Caller, ctx: Ctx) -> JSONResponse:
    """Only the signed-in patient whose address is the grant's `patient` may post it.

    **Version 2** (a deployment with `consentRegistryV2`; body = the signed grant, domain
    `consentV2` of `GET /v1/typed-data`): the service checks its terms (`invalid-grant-terms`
    422), the grantee (an active institution, else `grantee-not-active` 409) and the
    signature (the patient's key, or their ERC-1271 wallet's `isValidSignature`; else
    `invalid-signature` 422), keeps it, and answers 202 with the grant (`status`
    `pending`); its commitment goes on chain with every other pending one in the next batch
    (one `commit`, the service pays). Posting the same signed grant again answers 200 with it
    as it stands. A version-1 body on such a deployment, or a version-2 body on a deployment
    without version 2: `grant-version-refused` 409.

    **Version 1**: the service relays the patient's EIP-712 `Grant` to the ConsentRegistry
    and pays the gas. The
    signature must be over the patient's current consent nonce
    (`GET /v1/patients/{address}/consent-nonce`). A refusal by the contract answers with its
    custom error (`error`): e.g. `InvalidSignature` or `SignatureExpired` 422,
    `GranteeNotActive` 409. A grant the contract would refuse on its own (deadline passed,
    empty or reversed window, already expired) is answered the same way without being sent."""
    require_role(caller, "patient", action="relay a grant")
    _own_patient(caller, body.patient, "relay grants")
    if isinstance(body, GrantV2In):
        return _keep_grant_v2(body, ctx.ledger)
    ctx.ledger.refuse_v1_grant()
    refusal = grant_refusal(
        purposes=body.purposes,
        not_before=body.notBefore,
        expires_at=body.expiresAt,
        deadline=body.deadline,
        now=ctx.ledger.chain.latest_timestamp(),
    )
    if refusal is not None:
        raise ContractReverted(
            refusal.error,
            refusal.args,
            f"not relayed: the ConsentRegistry would revert with {refusal.error}: {refusal.detail}",
        )
    request = GrantRequest(
        grantee=body.grantee,
        record_ref=body.recordRef,
        purposes=body.purposes,
        not_before=body.notBefore,
        expires_at=body.expiresAt,
    )
    info = ctx.ledger.relay_grant(body.patient, request, body.deadline, body.signature)
    return JSONResponse(grant_json(info), status_code=201)


def _keep_grant_v2(body: GrantV2In, ledger: Ledger) -> JSONResponse:
    grant = SignedGrant(
        patient=body.patient,
        grantee=body.grantee,
        record_ref=body.recordRef,
        purposes=body.purposes,
        not_before=body.notBefore,
        expires_at=body.expiresAt,
        deadline=body.deadline,
        salt=body.salt,
        revocation_hash=body.revocationHash,
        signature=body.signature,
    )
    view, new = ledger.accept_grant_v2(grant)
    return JSONResponse(grant_v2_json(view), status_code=202 if new else 200)


@router.post(
    "/grants/{grantId}/revoke",
    response_model=GrantOut | GrantV2Out,
    summary="Revoke one of the patient's grants (patients)",
    responses=openapi_responses(401, 403, 404, 409, 422),
)
def relay_revoke(
    grant_id: GrantIdPath, body: RevokeV2In | RevokeIn, caller: Caller, ctx: Ctx
) -> JSONResponse:
    """Only the grant's patient, signed in, may; other grants answer 404.

    **Version 2**: body `{"secret": …}`, the grant's revocation secret
    (`invalid-revocation-secret` 422 unless its keccak256 is the grant's `revocationHash`);
    the service sends `revoke(secret)` and pays the gas, and answers with the grant, revoked.
    Anyone may instead send `revoke(secret)` to the ConsentRegistryV2 directly, from any
    address: the revocation counts from its block either way.

    **Version 1**: body `{deadline, signature}`, the patient's EIP-712 `Revoke`; the service
    relays it. A body of the other version than the grant's: `grant-version-refused` 409."""
    require_role(caller, "patient", action="revoke a grant")
    v2 = ctx.ledger.grant_v2(grant_id)
    if v2 is not None:
        if not may_read_grant(caller, v2):
            raise NotFound(f"no grant {grant_id}")
        if not isinstance(body, RevokeV2In):
            raise GrantVersionError(
                'a version-2 grant is revoked with its revocation secret: {"secret": "0x…"}'
            )
        return JSONResponse(grant_v2_json(ctx.ledger.revoke_v2(v2, body.secret)))
    grant = ctx.ledger.grant(grant_id)
    if not may_read_grant(caller, grant):
        raise NotFound(f"no grant {grant_id}")
    if isinstance(body, RevokeV2In):
        raise GrantVersionError(
            "a version-1 grant is revoked with the patient's signed `Revoke`: "
            '{"deadline": …, "signature": "0x…"}'
        )
    info = ctx.ledger.relay_revoke(grant.patient, grant_id, body.deadline, body.signature)
    return JSONResponse(grant_json(info))


@router.get(
    "/grants/{grantId}",
    response_model=GrantOut | GrantV2Out,
    summary="One grant, as the chain holds it",
    responses=openapi_responses(401, 404, 422),
)
def get_grant(grant_id: GrantIdPath, caller: Caller, ctx: Ctx) -> JSONResponse:
    """Visible to regulators, to the grant's patient and to its grantee; else 404.

    A version-2 grant (`version` 2) is the signed grant with its commitment and what the
    chain says of it now (`committedAt`, `revokedAt`: a revocation sent straight to the chain
    shows): anyone holding it can check the signature and the commitment on chain, so it
    needs no trust in the service."""
    v2 = ctx.ledger.grant_v2(grant_id)
    if v2 is not None:
        if not may_read_grant(caller, v2):
            raise NotFound(f"no grant {grant_id}")
        return JSONResponse(grant_v2_json(v2))
    grant = ctx.ledger.grant(grant_id)
    if not may_read_grant(caller, grant):
        raise NotFound(f"no grant {grant_id}")
    return JSONResponse(grant_json(grant))


@router.get(
    "/patients/{address}/grants",
    response_model=GrantsOut,
    summary="A patient's grants (revoked ones included), paged",
    responses=paged_responses(401, 403, 422),
)
def patient_grants(
    patient: PatientPath,
    request: Request,
    caller: Caller,
    ctx: Ctx,
    after: Annotated[
        int | None,
        Query(ge=0, le=2**256 - 1, description="The id of the last grant received."),
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
) -> JSONResponse:
    """The grants the patient made, by id, in their current state: version 1's, then version
    2's (`version` 2; their ids, commitments, are above every version-1 id). Regulators see all of
    them, the patient their own, an institution only the grants made to it; another patient
    gets 403.

    **Paged** by grant id: `after` (the `next` of the previous page) and `limit` (1..1000,
    default 100); `next` is null on the last page, and `Link: <…>; rel="next"` names the
    following page."""
    _own_patient(caller, patient, "read grants")
    grantee = caller.address if caller.role == "institution" else None
    grants = ctx.ledger.grants_of(patient, grantee, after or 0, limit + 1)
    page, following = split_page(grants, limit, lambda grant: grant.grant_id)
    body = {"patient": patient, "grants": [any_grant_json(g) for g in page], "next": following}
    return paged_json(request, body, following)


@router.get(
    "/patients/{address}/accesses",
    response_model=AccessesOut,
    summary="The accesses to a patient's records, paged (regulators, the patient)",
    responses=paged_responses(401, 403, 422),
)
def patient_accesses(
    patient: PatientPath,
    request: Request,
    caller: Caller,
    ctx: Ctx,
    after: AfterLeaf = None,
    limit: Limit = DEFAULT_LIMIT,
    index_wanted: IndexWanted = None,
) -> JSONResponse:
    """The RecordAccess events about the patient's records, in log order, with their consent
    status (`custodian`, `covered`, `emergency`, `not-covered:<reason>`) and proof bundles.

    `index` is the verifiable index's answer for the patient at the checkpoint the bundles
    are proved against: the leaf indexes of **every** event about them (accesses,
    prescriptions, dispenses, claims, payments) and its lookup proof (docs/index.md), on the
    first page (and on any page asked with `index=true`; null on the others). To check that
    nothing was left out, read the whole history, `GET /v1/events?patient=`, which serves the
    same proof: the patient's wallet does.

    **Paged** by leaf index: `after` (the `next` of the previous page) and `limit` (1..1000,
    default 100); `next` is null on the last page, and `Link: <…>; rel="next"` names the
    following page."""
    require_role(caller, "regulator", "patient", action="read a patient's accesses")
    _own_patient(caller, patient, "read accesses")
    served_at = ctx.ledger.serving_checkpoint()  # the events and the index proof: one checkpoint
    views = ctx.ledger.accesses_of(patient, -1 if after is None else after, limit + 1, served_at)
    page, following = split_page(views, limit, lambda view: view.bundle.leafIndex)
    proof = (
        ctx.ledger.patient_index(patient, served_at) if sends_index(index_wanted, after) else None
    )
    body = {
        "patient": patient,
        "accesses": [event_json(v) for v in page],
        "next": following,
        "index": None if proof is None else proof.model_dump(mode="json"),
    }
    return paged_json(request, body, following)


@router.get(
    "/patients/{address}/consent-nonce",
    response_model=ConsentNonceOut,
    summary="The nonce the patient's next signed grant or revocation must carry",
    responses=openapi_responses(422),
)
def consent_nonce(patient: PatientPath, ctx: Ctx) -> JSONResponse:
    """Public, as on chain (`ConsentRegistry.nonces`)."""
    return JSONResponse({"patient": patient, "nonce": ctx.ledger.consent_nonce(patient)})


@router.post(
    "/access-decisions",
    response_model=AccessDecisionOut,
    summary="May this record be released to that institution?",
    responses=openapi_responses(401, 403, 422),
)
def access_decision(body: AccessDecisionIn, caller: Caller, ctx: Ctx) -> JSONResponse:
    """What a record holder's system asks before releasing a record to another institution:
    `permit` with the grant relied on, or deny with the reason (`no-grant`, or why the best
    of the patient's grants to `grantee` does not cover it: `expired`, `revoked`,
    `out-of-scope`, `purpose-not-covered`…). Decided from the grants on chain at `at`
    (default: now). Refuses by default.

    Only the parties of the question may ask: regulators; the patient, about themself; the
    grantee institution, about releases to itself; and the record's custodian (the hospital
    holding it, which asks before releasing it), about its own record of that patient.
    Anyone else gets 403: a patient's consent to another institution is not theirs to
    learn."""
    _own_patient(caller, body.patient, "ask about records")
    if caller.role == "institution" and caller.address != body.grantee:
        parties = ctx.ledger.record_parties(body.recordRef)
        if (
            parties is None
            or parties.custodian != caller.address
            or parties.patient != body.patient
        ):
            raise Forbidden(
                "an institution may ask only about releases to itself, or about a record it "
                "holds as custodian (of that patient)"
            )
    at = body.at if body.at is not None else int(time.time())
    decision = ctx.ledger.access_decision(
        body.grantee, body.patient, body.recordRef, int(body.purpose), at
    )
    return JSONResponse(
        {
            "permit": decision.permit,
            "grantId": decision.grant_id,
            "reason": decision.reason,
            "at": at,
        }
    )
