# ruff: noqa: N815  (field names are the API's camelCase wire names, on purpose)
"""The ledger's HTTP API as the regulator's tools read it (``docs/wire.md``).

Answers are parsed into typed models at the edge. Nothing the API says is trusted as such:
the tools check every event, proof and root against the chain. A transport failure or an
error status is an :class:`ApiError` (the tools then exit with "could not verify").
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from ledger import jsonsafe
from ledger.errors import LedgerError
from ledger.events import Address, Bytes32, EventType, SignedEvent
from ledger.verify import ProofBundle

__all__ = [
    "ApiClient",
    "ApiError",
    "DeploymentOut",
    "EntriesPage",
    "EventOut",
    "LogHead",
    "RawEntry",
    "TrailOut",
]


_M = TypeVar("_M", bound=BaseModel)

#: Items asked for per page of a paged list (the API's maximum: fewest round trips).
PAGE_LIMIT = 1000


class ApiError(LedgerError):
    """The API could not be reached, refused, or answered something unreadable."""

    code = "api-unavailable"
    status = 503


class _Answer(BaseModel):
    # Unknown fields are ignored (the API may add some); known ones are checked strictly.
    model_config = ConfigDict(extra="ignore", frozen=True)


class EventOut(_Answer):
    """One event with its proof bundle (``GET /v1/events/{id}``, the items of a trail)."""

    eventId: Bytes32
    type: EventType
    status: str
    consent: str
    receivedAt: StrictInt
    recordRef: Bytes32 | None = None
    bundle: ProofBundle


class TrailOut(_Answer):
    """``GET /v1/records/{recordRef}/trail``: a record's events in log order (one page of
    them as served, with its ``next``; :meth:`ApiClient.trail` joins every page)."""

    recordRef: Bytes32
    events: list[EventOut]
    next: StrictInt | None = Field(default=None, ge=0)


class LogHead(_Answer):
    """``GET /v1/log/head``: the operator's integrated tree."""

    treeSize: StrictInt = Field(ge=0)
    rootHash: Bytes32


class RawEntry(_Answer):
    """One entry of ``GET /v1/log/entries``, its event kept unparsed (it is parsed, and a
    malformed one reported, by the audit)."""

    leafIndex: StrictInt = Field(ge=0)
    eventDigest: Bytes32
    receivedAt: StrictInt = Field(ge=0)
    consent: str
    event: dict[str, Any]

    def signed_event(self) -> SignedEvent:
        """The entry's event, validated (``ValidationError`` when malformed)."""
        return SignedEvent.model_validate(self.event)


class EntriesPage(_Answer):
    """``GET /v1/log/entries?start=N&limit=M``."""

    start: StrictInt = Field(ge=0)
    treeSize: StrictInt = Field(ge=0)
    next: StrictInt | None = None
    entries: list[dict[str, Any]]


class DeploymentOut(_Answer):
    """``GET /v1/deployment``: where the API says the contracts are."""

    chainId: StrictInt
    institutionRegistry: Address
    auditLog: Address
    consentRegistry: Address
    blockNumber: StrictInt = 0


class ApiClient:
    """A read-only client of the ledger API (a regulator's bearer key).

    :param client: an ``httpx.Client`` to use (tests pass one bound to the app in process);
        by default one is made for ``base_url``.
    :param page_limit: items asked for per page of a paged list (the API's maximum unless
        told: fewest round trips).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        client: httpx.Client | None = None,
        page_limit: int = PAGE_LIMIT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.page_limit = page_limit
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._owned = client is None
        self._client = client or httpx.Client(timeout=timeout)
        self._headers = headers
        #: HTTP requests made (for the performance figures).
        self.requests = 0

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """``GET`` a path of the API and return the JSON answer."""
        url = self.base_url + path
        self.requests += 1
        try:
            response = self._client.get(url, params=params, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ApiError(f"the API at {self.base_url} is unreachable: {exc}") from exc
        if response.status_code >= 400:
            raise ApiError(_problem(response), status=response.status_code, url=str(url))
        try:
            return jsonsafe.loads(response.content)
        except ValueError as exc:
            raise ApiError(f"GET {path} answered something that is not JSON") from exc

    def _model(self, model: type[_M], path: str, params: dict[str, Any] | None = None) -> _M:
        data = self.get(path, params)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ApiError(f"GET {path} answered an unexpected document: {exc}") from exc

    def trail(self, record_ref: bytes) -> TrailOut:
        """The record's whole trail: every page, in order (``next`` of one page is the
        ``after`` of the following one), joined. Pages read at different moments may be
        proved against different checkpoints; each bundle names its own."""
        path = f"/v1/records/0x{record_ref.hex()}/trail"
        params: dict[str, Any] = {"limit": self.page_limit}
        first = page = self._model(TrailOut, path, params)
        events = list(page.events)
        after: int | None = None
        while page.next is not None:
            if not page.events or (after is not None and page.next <= after):
                raise ApiError(f"GET {path} answered pages that do not move forward")
            after = page.next
            page = self._model(TrailOut, path, {**params, "after": after})
            if page.recordRef != first.recordRef:
                raise ApiError(f"GET {path} answered pages of different records")
            events += page.events
        return TrailOut(recordRef=first.recordRef, events=events)

    def event(self, event_id: bytes) -> EventOut:
        return self._model(EventOut, f"/v1/events/0x{event_id.hex()}")

    def deployment(self) -> DeploymentOut:
        return self._model(DeploymentOut, "/v1/deployment")

    def head(self) -> LogHead:
        return self._model(LogHead, "/v1/log/head")

    def entries(self, start: int, limit: int) -> EntriesPage:
        return self._model(EntriesPage, "/v1/log/entries", {"start": start, "limit": limit})

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        data = self.get("/v1/log/consistency", {"from": old_size, "to": new_size})
        try:
            return _Proof.model_validate(data).proof
        except ValidationError as exc:
            raise ApiError(f"the consistency proof answer is malformed: {exc}") from exc


class _Proof(_Answer):
    proof: list[Bytes32]


def _problem(response: httpx.Response) -> str:
    """A one-line description of an error answer (RFC 9457 problem document or not)."""
    where = f"{response.request.method} {response.request.url.path}"
    try:
        body = jsonsafe.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        title = body.get("title") or body.get("code") or ""
        detail = body.get("detail") or ""
        text = ": ".join(str(x) for x in (title, detail) if x)
        if text:
            return f"{where} answered {response.status_code}: {text}"
    return f"{where} answered {response.status_code}"
