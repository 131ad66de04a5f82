"""The FastAPI application: :func:`create_app` over a running :class:`~ledger.service.Ledger`.

The app does not own the ledger: whoever opened it (the CLI, a test) starts its worker and
closes it. Every error is an RFC 9457 problem (:mod:`api.problems`); every request is
counted (:mod:`api.metrics`); bodies over the size limit are refused before they are read,
and bodies nested deeper than :data:`MAX_BODY_DEPTH` before they are parsed
(:mod:`api.middleware`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware

from api.auth import Credentials
from api.deps import ApiContext
from api.metrics import Metrics
from api.middleware import (
    AuthThrottle,
    BodyLimit,
    ErrorGuard,
    RequestId,
    RequestMetrics,
    SecurityHeaders,
)
from api.pages import STATIC_DIR, STATIC_PATH
from api.problems import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    Problem,
    ProblemItem,
    RequestTooLarge,
    Unauthenticated,
    ValidationFailed,
    ledger_error_response,
    validation_items,
)
from api.ratelimit import TokenBuckets
from api.routes import admin, auth, consent, events, log, nonce, pages, search, system
from api.schemas import EventBatch
from ledger.errors import LedgerError
from ledger.redact import redactor_for
from ledger.service import Ledger, NotFound

logger = logging.getLogger("medtrail.api")

#: Default request body limit: 8 MiB, or 2 KiB per event of the largest batch if more.
DEFAULT_MAX_BODY = 8 * 1024 * 1024
#: A patient session lasts at most this long (seconds).
DEFAULT_SESSION_TTL = 15 * 60
#: A SIWE nonce must be used within this time (seconds).
DEFAULT_NONCE_TTL = 10 * 60
#: Deepest JSON nesting accepted in a request body (the deepest the API takes nests 5 deep).
MAX_BODY_DEPTH = 32

DESCRIPTION = """\
medtrail: a blockchain-backed provenance ledger for health data.

Institutions submit signed events; the log operator sequences them into an RFC 9162 Merkle
log and anchors checkpoints on chain; patients grant consent by signing EIP-712 messages
that the service relays; regulators verify trails against the chain.

**Authentication**: `Authorization: Bearer <token>` with an API key (`mtk_…`: regulators,
institutions) or a patient session token (`mtp_…`, from Sign-In with Ethereum at
`POST /v1/auth/siwe`).

**Errors** are RFC 9457 `application/problem+json` documents whose `type` is
`/problems/<code>`, described at `GET /problems/<code>` (all: `GET /problems`).
"""


def bootstrap_admin_key(ledger: Ledger) -> str:
    """Issue a regulator API key and return its token (shown once; the CLI prints it in
    embedded mode)."""
    _info, token = Credentials(ledger.store).issue_key("regulator", None, "bootstrap")
    return token


def _instance(request: Request) -> str:
    return request.url.path


def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    error: LedgerError
    if exc.status_code == 404:
        error = NotFound(f"no resource at {request.url.path}")
    elif exc.status_code == 405:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    elif exc.status_code == 413:
        error = RequestTooLarge(detail)
    elif exc.status_code == 401:
        error = Unauthenticated(detail)
    elif exc.status_code == 403:
        error = Forbidden(detail)
    else:
        error = BadRequest(detail)
        error.status = exc.status_code if 400 <= exc.status_code < 500 else 400
    response = ledger_error_response(error, _instance(request))
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    items = validation_items(errors)
    where = ", ".join(
        ".".join(str(p) for p in item["loc"]) + f": {item['detail']}" for item in items[:3]
    )
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    total = {"errorsTotal": len(errors)} if len(errors) > len(items) else {}
    error = ValidationFailed(
        f"the request does not match the schema: {where}{more}", errors=items, **total
    )
    return ledger_error_response(error, _instance(request))


def _ledger_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LedgerError)
    return ledger_error_response(exc, _instance(request), request.app.state.redactor)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # EventBatch: POST /v1/events declares its body itself (it parses the bytes off the loop).
    for model in (Problem, ProblemItem, EventBatch):
        definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, nested in definition.pop("$defs", {}).items():
            components.setdefault(name, nested)
        components[model.__name__] = definition
    app.openapi_schema = schema
    return schema


def _buckets(ledger: Ledger, clock: Callable[[], float]) -> TokenBuckets:
    """A token bucket per client address, as configured (``MEDTRAIL_AUTH_RATE`` a minute,
    ``MEDTRAIL_AUTH_BURST`` at once)."""
    return TokenBuckets(ledger.settings.auth_rate / 60, ledger.settings.auth_burst, clock=clock)


def create_app(
    ledger: Ledger,
    *,
    admin_key: str | None = None,
    max_body_bytes: int | None = None,
    session_ttl: int = DEFAULT_SESSION_TTL,
    nonce_ttl: int = DEFAULT_NONCE_TTL,
    clock: Callable[[], float] = time.monotonic,
    trial_rpc_url: str | None = None,
) -> FastAPI:
    """The HTTP API over ``ledger``, its landing page (``/``) and its docs (``/docs``, with
    their assets under ``/static``: no CDN).

    :param admin_key: a regulator API key token (``mtk_…``) to accept; registered in the
        store if it is not there yet (e.g. one printed by :func:`bootstrap_admin_key` at an
        earlier start).
    :param max_body_bytes: largest request body accepted (default: 8 MiB, or 2 KiB per event
        of the largest batch if that is more).
    :param session_ttl: longest life of a patient session, seconds.
    :param nonce_ttl: life of a Sign-In with Ethereum nonce, seconds.
    :param clock: the rate limits' clock (seconds; tests stop it).
    :param trial_rpc_url: where the embedded chain is served read-only over JSON-RPC for
        trying (:mod:`api.trial_rpc`), for the landing page to say.
    """
    credentials = Credentials(ledger.store)
    if admin_key is not None:
        credentials.adopt_key(admin_key, "regulator", "admin (configured)")
    metrics = Metrics(ledger)
    limit = max_body_bytes or max(DEFAULT_MAX_BODY, 2048 * ledger.settings.max_batch)
    app = FastAPI(
        title="medtrail",
        version="0.1.0",
        description=DESCRIPTION,
        docs_url=None,  # api.routes.pages serves /docs with local assets
        redoc_url=None,  # (FastAPI's own pages load theirs from a CDN)
        middleware=[
            Middleware(RequestId),
            Middleware(RequestMetrics, metrics=metrics),
            Middleware(SecurityHeaders),
            Middleware(ErrorGuard),
            Middleware(
                AuthThrottle, nonces=_buckets(ledger, clock), failures=_buckets(ledger, clock)
            ),
            Middleware(BodyLimit, max_bytes=limit, max_depth=MAX_BODY_DEPTH),
        ],
        openapi_tags=[
            {"name": "events", "description": "Submitting events; events and trails."},
            {"name": "consent", "description": "Patients' grants, accesses, decisions."},
            {"name": "log", "description": "The Merkle log, its proofs and checkpoints."},
            {"name": "admin", "description": "Institutions on chain, API keys (regulators)."},
            {"name": "auth", "description": "Sign-In with Ethereum for patients."},
            {"name": "system", "description": "Health, readiness, metrics, problem types."},
        ],
    )
    app.state.medtrail = ApiContext(
        ledger=ledger,
        credentials=credentials,
        metrics=metrics,
        session_ttl=session_ttl,
        nonce_ttl=nonce_ttl,
    )
    #: Chain and store errors repeat the RPC URL (and its key): never in an answer.
    app.state.redactor = redactor_for(ledger.settings)
    app.add_exception_handler(LedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.state.trial_rpc_url = trial_rpc_url
    #: /readyz's checks run here, bounded in time (a hung check holds a thread, not a request).
    app.state.readiness_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")
    for module in (events, search, consent, nonce, log, admin, auth, system, pages):
        app.include_router(module.router)
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC_DIR), name="static")
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
