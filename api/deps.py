"""FastAPI dependencies: the service context and the authenticated caller."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, cast

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Credentials, Principal
from api.metrics import Metrics
from api.problems import Unauthenticated
from api.turns import Turns
from ledger.service import Ledger


@dataclass(frozen=True)
class ApiContext:
    """What the routes work with (one per app)."""

    ledger: Ledger
    credentials: Credentials
    metrics: Metrics
    #: Longest life of a patient session, seconds.
    session_ttl: int
    #: Life of a SIWE nonce, seconds.
    nonce_ttl: int
    #: Submitted batches compute one at a time in this process (api.turns).
    ingest_turns: Turns = field(default_factory=Turns)


def get_context(request: Request) -> ApiContext:
    return cast(ApiContext, request.app.state.medtrail)


Ctx = Annotated[ApiContext, Depends(get_context)]

_bearer = HTTPBearer(
    auto_error=False,
    description=(
        "An API key (`mtk_…`, regulators and institutions) or a patient session token "
        "(`mtp_…`, from `POST /v1/auth/siwe`)."
    ),
)


def get_principal(
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Principal:
    """The authenticated caller; 401 ``unauthenticated`` without a valid bearer token."""
    if credentials is None:
        raise Unauthenticated("send `Authorization: Bearer <API key or session token>`")
    return ctx.credentials.authenticate(credentials.credentials)


Caller = Annotated[Principal, Depends(get_principal)]
