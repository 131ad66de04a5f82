# ruff: noqa: N815  (field names are the wire's camelCase names, on purpose)
"""Relaying a patient's signed ``IncreaseNonce``: cancel every outstanding consent signature."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from api.auth import require_role
from api.deps import Caller, Ctx
from api.problems import Forbidden, openapi_responses
from api.render import hex0x
from api.schemas import AddressOut, Hex32, HexSignature, Uint256, _In, _Out
from ledger.events import Address

router = APIRouter(prefix="/v1", tags=["consent"])

PatientPath = Annotated[Address, Path(alias="address", description="The patient's address.")]


class IncreaseNonceIn(_In):
    """An ``IncreaseNonce`` the patient signed (EIP-712, ConsentRegistry domain) with their
    current consent nonce."""

    newNonce: Uint256
    deadline: Uint256
    signature: HexSignature


class IncreaseNonceOut(_Out):
    patient: AddressOut
    nonce: Uint256
    transactionHash: Hex32


@router.post(
    "/patients/{address}/increase-nonce",
    response_model=IncreaseNonceOut,
    summary="Relay a nonce increase the patient signed: cancels outstanding signatures",
    responses=openapi_responses(401, 403, 409, 422),
)
def relay_increase_nonce(
    patient: PatientPath, body: IncreaseNonceIn, caller: Caller, ctx: Ctx
) -> JSONResponse:
    """Relay the patient's EIP-712 `IncreaseNonce` to the ConsentRegistry (the service pays
    the gas): every grant or revocation signed with a nonce below `newNonce` and not yet
    relayed becomes unusable. Only the signed-in patient named in the path may."""
    require_role(caller, "patient", action="cancel consent signatures")
    if caller.address != patient:
        raise Forbidden(
            f"a patient may cancel only their own signatures (signed in as {caller.address})"
        )
    tx_hash = ctx.ledger.relay_increase_nonce(patient, body.newNonce, body.deadline, body.signature)
    return JSONResponse(
        {
            "patient": patient,
            "nonce": ctx.ledger.consent_nonce(patient),
            "transactionHash": hex0x(tx_hash),
        }
    )
