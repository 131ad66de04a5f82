"""Sign-In with Ethereum (EIP-4361) for patients, and who-am-I for every caller."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from api.auth import require_role
from api.deps import Caller, Ctx
from api.problems import openapi_responses
from api.schemas import NonceOut, SessionOut, SiweIn, WhoAmIOut
from ledger.siwe import verify_siwe

router = APIRouter(prefix="/v1/auth", tags=["auth"])

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
#: Answers carrying a credential (or a single-use nonce) are never stored by a cache.
NO_STORE = {"Cache-Control": "no-store"}


def _scheme(domain: str) -> str:
    """The URI scheme a message may name for ``domain``: http only for the loopback host."""
    host = urlsplit("//" + domain).hostname or ""
    return "http" if host in _LOCAL_HOSTS or host == "::1" else "https"


@router.get(
    "/nonce",
    response_model=NonceOut,
    summary="A single-use nonce for a Sign-In with Ethereum message",
    responses=openapi_responses(429),
)
def nonce(ctx: Ctx) -> JSONResponse:
    """A fresh nonce (single use, expires at `expiresAt`) and the `domain` and `chainId` the
    EIP-4361 message must name. Nothing is stored until the nonce is used."""
    value, expires_at = ctx.credentials.issue_nonce(ctx.nonce_ttl)
    return JSONResponse(
        {
            "nonce": value,
            "expiresAt": expires_at,
            "domain": ctx.ledger.settings.siwe_domain,
            "chainId": ctx.ledger.deployment.chain_id,
        },
        headers=NO_STORE,
    )


@router.post(
    "/siwe",
    response_model=SessionOut,
    summary="Sign in as a patient with an EIP-4361 message",
    responses=openapi_responses(400, 401, 422, 429),
)
def sign_in(body: SiweIn, ctx: Ctx) -> JSONResponse:
    """Exchange a signed EIP-4361 message for a short-lived patient session token.

    The message must name this service's `domain` and `chainId` (see `GET /v1/auth/nonce`),
    a `URI` of this service's origin (`<scheme>://<domain>`, or a path below it: `http` for a
    loopback domain, else `https`), a nonce from `GET /v1/auth/nonce` (single use), and be
    within its validity times; the signature is EIP-191 `personal_sign` by the message's
    address. Refusals are 401 with a `siwe-*` type (`siwe-malformed` 400); failed sign-ins
    are rate limited per client address (429 `rate-limited`). The session lasts until the
    message's `Expiration Time` or the server's limit, whichever is first."""
    now = datetime.now(UTC)
    domain = ctx.ledger.settings.siwe_domain
    scheme = _scheme(domain)
    message = verify_siwe(
        body.message,
        bytes.fromhex(body.signature[2:]),
        domain=domain,
        chain_id=ctx.ledger.deployment.chain_id,
        now=now,
        uri_prefix=f"{scheme}://{domain}",
        scheme=scheme,
    )
    ctx.credentials.consume_nonce(message.nonce)
    expires_at = int(time.time()) + ctx.session_ttl
    if message.expiration_time is not None:
        expires_at = min(expires_at, int(message.expiration_time.timestamp()))
    token, expires_at = ctx.credentials.open_session(message.address, expires_at)
    return JSONResponse(
        {
            "token": token,
            "tokenType": "Bearer",
            "address": message.address,
            "expiresAt": expires_at,
        },
        headers=NO_STORE,
    )


@router.get(
    "/whoami",
    response_model=WhoAmIOut,
    summary="The caller's role and identity",
    responses=openapi_responses(401),
)
def whoami(caller: Caller) -> JSONResponse:
    return JSONResponse(
        {
            "role": caller.role,
            "credentialId": caller.credential_id,
            "address": caller.address,
            "expiresAt": caller.expires_at,
        }
    )


@router.post(
    "/logout",
    status_code=204,
    summary="End the patient's session",
    responses=openapi_responses(401, 403),
)
def logout(caller: Caller, ctx: Ctx) -> Response:
    """The session token stops working at once (patients; API keys are revoked by a
    regulator)."""
    require_role(caller, "patient", action="sign out (API keys are revoked by a regulator)")
    ctx.credentials.close_session(caller.credential_id)
    return Response(status_code=204)
