"""RFC 9457 problem details: the one place errors become HTTP responses.

Every error the API answers with is ``application/problem+json``::

    {"type": "/problems/<code>", "title": ..., "status": ..., "detail": ..., "instance": ...,
     "code": "<code>", ...extensions}

``type`` is a relative URI that resolves: ``GET /problems/<code>`` describes the error kind
(the catalogue is generated from the code table, :data:`ledger.codes.CODES`, where every
:class:`~ledger.errors.LedgerError` subclass also takes its status from, so the code, the docs
and the answers cannot drift apart). Extensions:

* ``errors``: the items of a refused batch (``index``, ``code``, ``detail``) or of a request
  that does not match the schema (``loc``, ``code``, ``detail``; ``index`` when the item is an
  event of a batch): the first :data:`MAX_PROBLEM_ITEMS` of them, in order, and then
  ``errorsTotal``, how many there were (a batch of events each wrong in every field would
  otherwise be answered with a dozen items per event);
* ``error`` and ``args`` for a contract revert (the decoded custom error);
* the error's own context (e.g. ``limit`` for a batch too large).
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from types import MappingProxyType
from typing import Any, Final

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.logs import current_request_id
from ledger.chain.tx import ContractReverted
from ledger.codes import CODES, OTHER_REVERT_STATUS, REVERTS, revert_status
from ledger.errors import LedgerError
from ledger.redact import Redactor

log = logging.getLogger("medtrail.api")

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_BASE: Final = "/problems/"
#: The most items a problem's ``errors`` lists; past it, ``errorsTotal`` says how many there were.
MAX_PROBLEM_ITEMS: Final = 1000

# --------------------------------------------------------------------------- API errors


class ApiError(LedgerError):
    code = "api-error"


class Unauthenticated(ApiError):
    code = "unauthenticated"


class Forbidden(ApiError):
    code = "forbidden"


class ForeignEvent(ApiError):
    code = "foreign-event"


class ValidationFailed(ApiError):
    code = "validation-error"


class RequestTooLarge(ApiError):
    code = "request-too-large"


class TooManyRequests(ApiError):
    code = "rate-limited"


class MethodNotAllowed(ApiError):
    code = "method-not-allowed"


class BadRequest(ApiError):
    code = "bad-request"


class NotReady(ApiError):
    code = "not-ready"


class RegistrarNotConfigured(ApiError):
    code = "registrar-not-configured"


class ServerBusy(ApiError):
    code = "server-busy"


class UnknownInstitution(ApiError):
    code = "institution-unknown"


class InternalError(ApiError):
    code = "internal-error"


# --------------------------------------------------------------------------- contract reverts

#: HTTP status of each custom error the contracts can revert with through the API (a revert
#: names what the chain refused; anything not listed is a 409 conflict with the chain's state),
#: from :data:`ledger.codes.REVERTS`.
REVERT_STATUS: Final[Mapping[str, int]] = MappingProxyType(
    {name: revert.status for name, revert in REVERTS.items()}
)

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
    errors: list[ProblemItem] | None = Field(
        default=None, description=f"The items refused: the first {MAX_PROBLEM_ITEMS}, in order."
    )
    errorsTotal: int | None = Field(  # noqa: N815 (the wire's name)
        default=None, description="How many items there were, when `errors` lists only some."
    )


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


@cache
def catalogue() -> dict[str, ProblemKind]:
    """Every code the API can answer with (those of :data:`ledger.codes.CODES` that have an
    HTTP status), by code."""
    kinds: dict[str, ProblemKind] = {}
    for entry in CODES.values():
        if entry.status is None:
            continue
        description = entry.description
        if entry.code == ContractReverted.code:
            listed = ", ".join(f"{name} → {status}" for name, status in REVERT_STATUS.items())
            description += (
                "\n\nThe answer's `error` names the contract's custom error and `args` its "
                f"arguments; its status depends on the error: {listed}; any other → "
                f"{OTHER_REVERT_STATUS}."
            )
        kinds[entry.code] = ProblemKind(entry.code, entry.status, entry.title, description)
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
    for key, value in capped_items(extensions or {}).items():
        if key not in _RESERVED:
            body[key] = jsonable(value)
    request_id = current_request_id()  # the X-Request-ID of the answer, to quote in a report
    if request_id is not None:
        body["requestId"] = request_id
    return JSONResponse(
        body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {})
    )


def capped_items(extensions: Mapping[str, Any]) -> Mapping[str, Any]:
    """``extensions`` with its ``errors`` cut to the first :data:`MAX_PROBLEM_ITEMS` and, when
    cut, ``errorsTotal``: how many there were."""
    items = extensions.get("errors")
    if not isinstance(items, list | tuple) or len(items) <= MAX_PROBLEM_ITEMS:
        return extensions
    return {**extensions, "errors": items[:MAX_PROBLEM_ITEMS], "errorsTotal": len(items)}


def ledger_error_response(
    exc: LedgerError, instance: str, redactor: Redactor | None = None
) -> JSONResponse:
    """The problem response of a ledger (or API) error; with ``redactor``, its detail and
    context (which may repeat an RPC URL, say) are redacted (:mod:`ledger.redact`)."""
    status = int(exc.status)
    redact = redactor or Redactor()
    detail = redact.text(exc.detail)
    extensions = {  # cut before it is redacted: a batch may be refused a thousand times over
        k: redact.value(v)
        for k, v in capped_items(exc.diagnostics()).items()
        if k not in ("code", "detail")
    }
    headers: dict[str, str] = {}
    if isinstance(exc, ContractReverted):
        status = revert_status(exc.error)
        extensions["error"] = exc.error
        extensions["args"] = list(exc.args_)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, TooManyRequests | ServerBusy) and "retryAfter" in exc.context:
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
    events of a batch), the first :data:`MAX_PROBLEM_ITEMS` of them. Inputs are not echoed
    back."""
    items: list[dict[str, Any]] = []
    for error in errors[:MAX_PROBLEM_ITEMS]:
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
        503: "The store or the chain is unavailable, or the server is busy (`server-busy`)",
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
