"""RFC 9457 problem details: the one place errors become HTTP responses.

Every error the API answers with is ``application/problem+json``::

    {"type": "/problems/<code>", "title": ..., "status": ..., "detail": ..., "instance": ...,
     "code": "<code>", ...extensions}

``type`` is a relative URI that resolves: ``GET /problems/<code>`` describes the error kind
(the catalogue is generated from the docstrings of the :class:`~ledger.errors.LedgerError`
subclasses, so the code, the docs and the answers cannot drift apart). Extensions:

* ``errors``: the items of a refused batch (``index``, ``code``, ``detail``) or of a request
  that does not match the schema (``loc``, ``code``, ``detail``; ``index`` when the item is an
  event of a batch);
* ``error`` and ``args`` for a contract revert (the decoded custom error);
* the error's own context (e.g. ``limit`` for a batch too large).
"""

from __future__ import annotations

import html
import importlib
import inspect
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ledger.chain.tx import ContractReverted
from ledger.errors import LedgerError
from ledger.redact import Redactor

log = logging.getLogger("medtrail.api")

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_BASE: Final = "/problems/"

# --------------------------------------------------------------------------- API errors


class ApiError(LedgerError):
    """An error the HTTP layer raises itself (authentication, authorization, limits)."""

    code = "api-error"
    status = 400


class Unauthenticated(ApiError):
    """No valid credential: the ``Authorization: Bearer`` header is missing, malformed, or
    names an unknown, revoked or expired API key or patient session."""

    code = "unauthenticated"
    status = 401


class Forbidden(ApiError):
    """The credential is valid, but its role may not do this (e.g. a regulator submitting
    events, an institution using the admin API, a patient relaying another patient's grant)."""

    code = "forbidden"
    status = 403


class ForeignEvent(ApiError):
    """An institution may submit only events whose ``institution`` is its own registered
    address (the one its API key is bound to); ``errors`` lists each foreign event's index.
    Nothing of the batch was stored."""

    code = "foreign-event"
    status = 403


class ValidationFailed(ApiError):
    """The request does not match the API's schema (a missing or unknown field, a value of the
    wrong type or format, a body that is not JSON); ``errors`` lists each problem with its
    location ``loc`` (and ``index`` for an event of a batch)."""

    code = "validation-error"
    status = 422


class RequestTooLarge(ApiError):
    """The request body is larger than the server accepts (see ``limit``, in bytes). Split the
    batch."""

    code = "request-too-large"
    status = 413


class TooManyRequests(ApiError):
    """Too many sign-in nonces asked for, or too many failed sign-ins or authentications, from
    this client address. Wait ``retryAfter`` seconds (the ``Retry-After`` header) and try again.
    The budget is a token bucket per client address and per API process
    (``MEDTRAIL_AUTH_RATE`` a minute, ``MEDTRAIL_AUTH_BURST`` at once)."""

    code = "rate-limited"
    status = 429


class MethodNotAllowed(ApiError):
    """The endpoint exists but not with this HTTP method (see the ``Allow`` header)."""

    code = "method-not-allowed"
    status = 405


class BadRequest(ApiError):
    """The request is malformed at the HTTP level."""

    code = "bad-request"
    status = 400


class NotReady(ApiError):
    """The service cannot serve requests now: its store or its chain is unreachable (see
    ``checks``). Retry later."""

    code = "not-ready"
    status = 503


class RegistrarNotConfigured(ApiError):
    """The service has no registrar key (``MEDTRAIL_REGISTRAR_KEY``, see ``setting``), so it
    cannot register, suspend or reinstate institutions on chain. The operator may configure
    a key holding the InstitutionRegistry's REGISTRAR_ROLE; a regulator may also send the
    transaction with their own key."""

    code = "registrar-not-configured"
    status = 503


class ServerBusy(ApiError):
    """The server process holds as many connections as it may (``MEDTRAIL_MAX_CONNECTIONS``,
    see ``limit``) and closed this one at once. Retry shortly (``Retry-After``)."""

    code = "server-busy"
    status = 503


class UnknownInstitution(ApiError):
    """The address is not an institution registered on chain (register it first)."""

    code = "institution-unknown"
    status = 409


class InternalError(ApiError):
    """An unexpected error on the server's side. It was logged; the answer carries no
    details. Not the caller's fault: report it if it persists."""

    code = "internal-error"
    status = 500


# --------------------------------------------------------------------------- contract reverts

#: HTTP status of each custom error the contracts can revert with through the API (a revert
#: names what the chain refused; anything not listed is a 409 conflict with the chain's state).
REVERT_STATUS: Final[Mapping[str, int]] = {
    # ConsentRegistry, relaying a patient's signed request
    "InvalidSignature": 422,
    "SignatureExpired": 422,
    "InvalidValidityWindow": 422,
    "GrantAlreadyExpired": 422,
    "EmptyPurposes": 422,
    "GranteeNotActive": 409,
    "GrantNotFound": 404,
    "NotGrantPatient": 403,
    "GrantAlreadyRevoked": 409,
    "InvalidNonce": 409,
    # InstitutionRegistry, the admin API
    "ZeroAddress": 422,
    "InvalidKind": 422,
    "InvalidName": 422,
    "InstitutionAlreadyRegistered": 409,
    "InstitutionNotRegistered": 404,
    "InstitutionAlreadySuspended": 409,
    "InstitutionNotSuspended": 409,
}

# --------------------------------------------------------------------------- wire models


class ProblemItem(BaseModel):
    """One item of a problem's ``errors``: a refused event of a batch, or a schema error."""

    model_config = ConfigDict(extra="allow")

    index: int | None = Field(default=None, description="Index of the event in the batch.")
    loc: list[str | int] | None = Field(
        default=None, description="Where in the request (validation errors)."
    )
    code: str
    detail: str


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="`/problems/<code>`: resolves to the description of the kind.")
    title: str
    status: int
    detail: str
    instance: str = Field(description="The request path the problem occurred at.")
    code: str = Field(description="The stable machine-readable error code.")
    errors: list[ProblemItem] | None = None


class ProblemType(BaseModel):
    """The description of one kind of problem (what ``type`` resolves to)."""

    model_config = ConfigDict(extra="forbid")

    type: str
    code: str
    title: str
    status: int
    description: str


class ProblemTypes(BaseModel):
    """Every kind of problem the API can answer with."""

    model_config = ConfigDict(extra="forbid")

    problems: list[ProblemType]


# --------------------------------------------------------------------------- the catalogue

#: Modules whose LedgerError subclasses the API can surface.
_ERROR_MODULES: Final = (
    "ledger.errors",
    "ledger.rules",
    "ledger.ingest",
    "ledger.log",
    "ledger.merkle",
    "ledger.service",
    "ledger.settings",
    "ledger.store.db",
    "ledger.anchor",
    "ledger.chain.tx",
    "ledger.chain.client",
    "ledger.chain.deploy",
    "ledger.chain.artifacts",
    "ledger.siwe",
    "ledger.jsonsafe",
    "ledger.text",
)


@dataclass(frozen=True)
class ProblemKind:
    """One error code, its HTTP status and its documentation."""

    code: str
    status: int
    title: str
    description: str

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.code

    def to_model(self) -> ProblemType:
        return ProblemType(
            type=self.type,
            code=self.code,
            title=self.title,
            status=self.status,
            description=self.description,
        )


def _subclasses(root: type[LedgerError]) -> Iterable[type[LedgerError]]:
    seen: set[type[LedgerError]] = set()
    stack = [root]
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        yield cls
        stack.extend(reversed(cls.__subclasses__()))


_TITLE_END: Final = re.compile(r"\. |: |; |\.$")
_ASIDE: Final = re.compile(r"\s*\([^)]*\)")


def _describe(cls: type[LedgerError]) -> tuple[str, str]:
    """A short title (the docstring's first clause) and the whole docstring as text."""
    doc = inspect.cleandoc(cls.__doc__ or cls.__name__).replace("``", "`")
    paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
    first = paragraphs[0] if paragraphs else cls.__name__
    title = _TITLE_END.split(_ASIDE.sub("", first), maxsplit=1)[0].strip()
    return title or cls.__name__, "\n\n".join(paragraphs)


@cache
def catalogue() -> dict[str, ProblemKind]:
    """Every problem code, from the docstrings of the LedgerError subclasses (first wins)."""
    for name in _ERROR_MODULES:
        importlib.import_module(name)
    kinds: dict[str, ProblemKind] = {}
    for cls in _subclasses(LedgerError):
        code = str(cls.code)
        if code in kinds:
            continue
        title, description = _describe(cls)
        if cls is ContractReverted:
            listed = ", ".join(f"{name} → {status}" for name, status in REVERT_STATUS.items())
            description += (
                "\n\nThe answer's `error` names the contract's custom error and `args` its "
                f"arguments; its status depends on the error: {listed}; any other → 409."
            )
        kinds[code] = ProblemKind(code, int(cls.status), title, description)
    return dict(sorted(kinds.items()))


def problem_page(kind: ProblemKind) -> str:
    """A small HTML page describing one problem kind."""
    paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in kind.description.split("\n\n"))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(kind.code)}</title></head><body>"
        f"<h1>{html.escape(kind.title)}</h1>"
        f"<p><code>{html.escape(kind.type)}</code> — HTTP {kind.status}</p>{paragraphs}"
        "</body></html>"
    )


# --------------------------------------------------------------------------- responses

_RESERVED: Final = frozenset({"type", "title", "status", "detail", "instance", "code"})


def jsonable(value: Any) -> Any:
    """``value`` with bytes as 0x-hex and every container made JSON-ready."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def problem_response(
    *,
    code: str,
    status: int,
    detail: str,
    instance: str,
    title: str | None = None,
    extensions: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An ``application/problem+json`` response."""
    kind = catalogue().get(code)
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + code,
        "title": title or (kind.title if kind else code.replace("-", " ").capitalize()),
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
    }
    for key, value in (extensions or {}).items():
        if key not in _RESERVED:
            body[key] = jsonable(value)
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {})
    )


def ledger_error_response(
    exc: LedgerError, instance: str, redactor: Redactor | None = None
) -> JSONResponse:
    """The problem response of a ledger (or API) error; with ``redactor``, its detail and
    context (which may repeat an RPC URL, say) are redacted (:mod:`ledger.redact`)."""
    status = int(exc.status)
    redact = redactor or Redactor()
    detail = redact.text(exc.detail)
    extensions = {
        k: redact.value(v) for k, v in exc.diagnostics().items() if k not in ("code", "detail")
    }
    headers: dict[str, str] = {}
    if isinstance(exc, ContractReverted):
        status = REVERT_STATUS.get(exc.error, 409)
        extensions["error"] = exc.error
        extensions["args"] = list(exc.args_)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.context["retryAfter"])
    if status >= 500:
        log.error("%s answered %d: %s", type(exc).__name__, status, detail)
    return problem_response(
        code=exc.code,
        status=status,
        detail=detail,
        instance=instance,
        extensions=extensions,
        headers=headers,
    )


def validation_items(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as problem items: ``loc``, ``code``, ``detail`` (and ``index`` for the
    events of a batch). Inputs are not echoed back."""
    items: list[dict[str, Any]] = []
    for error in errors:
        loc = [part if isinstance(part, int) else str(part) for part in error.get("loc", ())]
        item: dict[str, Any] = {
            "loc": loc,
            "code": str(error.get("type", "invalid")),
            "detail": str(error.get("msg", "invalid value")),
        }
        if len(loc) >= 3 and loc[:2] == ["body", "events"] and isinstance(loc[2], int):
            item = {"index": loc[2], **item}
        items.append(item)
    return items


def openapi_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given error statuses, plus ``default``: every one a
    problem document."""
    schema = {"$ref": "#/components/schemas/Problem"}
    reasons = {
        400: "Bad request",
        401: "No valid credential (`unauthenticated`)",
        403: "Not allowed for this credential's role (`forbidden`)",
        404: "Not found, or not visible to the caller (`not-found`)",
        405: "Method not allowed",
        409: "Conflicts with the log's or the chain's state",
        413: "Request body or batch too large",
        422: "Refused: invalid request (`validation-error`) or refused content",
        429: "Too many nonces or failed authentications from this address (`rate-limited`)",
        503: "The store or the chain is unavailable",
    }
    responses: dict[int | str, dict[str, Any]] = {
        status: {
            "description": reasons.get(status, "Problem"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
        }
        for status in statuses
    }
    responses["default"] = {
        "description": "Any other problem (e.g. `chain-unavailable`, `internal-error`)",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": schema}},
    }
    return responses
