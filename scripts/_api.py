"""The ledger's HTTP API as the regulator's tools read it (``docs/wire.md``).

Answers are parsed at the edge into the wire's models, defined once in :mod:`ledger.wire`
(the API documents its answers with the same ones). Nothing the API says is trusted as such:
the tools check every event, proof and root against the chain. A transport failure or an
error status is an :class:`ApiError` (the tools then exit with "could not verify").
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from ledger import jsonsafe
from ledger.chain.model import Deployment
from ledger.completeness import REASKS, index_behind
from ledger.errors import LedgerError
from ledger.wire import (
    ConsistencyOut,
    EventOut,
    IndexProofOut,
    LogHeadOut,
    RawLogEntriesOut,
    RawLogEntryOut,
    TrailOut,
)

__all__ = [
    "ApiClient",
    "ApiError",
    "Deployment",
    "EventOut",
    "IndexProofOut",
    "LogHeadOut",
    "RawLogEntriesOut",
    "RawLogEntryOut",
    "TrailOut",
]


_M = TypeVar("_M", bound=BaseModel)

#: Items asked for per page of a paged list (the API's maximum: fewest round trips).
PAGE_LIMIT = 1000


class ApiError(LedgerError):
    """The API could not be reached, refused, or answered something unreadable."""

    code = "api-unavailable"
    status = 503


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
            # Unknown fields are ignored (a later service may add some): the wire's models do
            # that; the deployment, a file format too, is strict unless told.
            return model.model_validate(data, extra="ignore" if model is Deployment else None)
        except ValidationError as exc:
            raise ApiError(f"GET {path} answered an unexpected document: {exc}") from exc

    def trail(self, record_ref: bytes) -> TrailOut:
        """The record's whole trail: every page, in order (``next`` of one page is the
        ``after`` of the following one), joined, with the index proof of the whole list the
        first page carries. Pages read at different moments may be proved against different
        checkpoints; each bundle names its own. When one landed while paging
        (:func:`ledger.completeness.index_behind`), the page after the last event is asked
        again with ``index=true``: the proof at the newest checkpoint (the verifier checks it
        is the chain's latest)."""
        path = f"/v1/records/0x{record_ref.hex()}/trail"
        params: dict[str, Any] = {"limit": self.page_limit}
        first = page = self._model(TrailOut, path, params)
        events = list(page.events)
        proof = page.index
        after: int | None = None
        reasks = 0
        while True:
            while page.next is not None:
                if not page.events or (after is not None and page.next <= after):
                    raise ApiError(f"GET {path} answered pages that do not move forward")
                after = page.next
                page = self._next_page(path, first, {**params, "after": after})
                events += page.events
            behind = index_behind(proof, (e.bundle.treeSize for e in events))
            if not behind or reasks == REASKS:
                break
            reasks += 1
            after = events[-1].bundle.leafIndex
            page = self._next_page(path, first, {**params, "after": after, "index": "true"})
            events += page.events
            if page.index is not None:
                proof = page.index
        return TrailOut(recordRef=first.recordRef, events=events, index=proof)

    def _next_page(self, path: str, first: TrailOut, params: dict[str, Any]) -> TrailOut:
        page = self._model(TrailOut, path, params)
        if page.recordRef != first.recordRef:
            raise ApiError(f"GET {path} answered pages of different records")
        return page

    def patient_index(self, patient: str) -> IndexProofOut | None:
        """The index's answer for ``patient``'s whole history (``GET /v1/events?patient=``, its
        first page of one event: the answer lists every leaf): the leaf indexes of all the
        events about them at the operator's latest checkpoint, and its lookup proof. None when
        the API serves none (before the first checkpoint). Nothing in it is trusted."""
        data = self.get("/v1/events", {"patient": patient, "limit": 1})
        found = data.get("index") if isinstance(data, dict) else None
        if found is None:
            return None
        try:
            return IndexProofOut.model_validate(found)
        except ValidationError as exc:
            raise ApiError(f"GET /v1/events answered an unexpected index: {exc}") from exc

    def record_index(self, record_ref: bytes) -> IndexProofOut | None:
        """The index's answer for the record's whole trail (``GET /v1/records/{ref}/trail``, its
        first page of one event: the answer lists every leaf), as :meth:`patient_index` for a
        patient. None when the API serves none (before the first checkpoint); an
        :class:`ApiError` of status 404 when it knows no event of the record. Nothing in it is
        trusted."""
        page = self._model(TrailOut, f"/v1/records/0x{record_ref.hex()}/trail", {"limit": 1})
        return page.index

    def event(self, event_id: bytes) -> EventOut:
        return self._model(EventOut, f"/v1/events/0x{event_id.hex()}")

    def grant_v2(self, grant_id: int) -> dict[str, Any] | None:
        """``GET /v1/grants/{grantId}`` when it is a version-2 grant (the signed grant and
        what the service says of it); None when the API has no such grant, or a version-1
        one. Nothing in it is trusted: its signature and commitment are checked on chain."""
        try:
            data = self.get(f"/v1/grants/{grant_id}")
        except ApiError as exc:
            if exc.context.get("status") == 404:
                return None
            raise
        if not isinstance(data, dict) or data.get("version") != 2:
            return None
        return data

    def deployment(self) -> Deployment:
        """``GET /v1/deployment``: where the API says the contracts are."""
        return self._model(Deployment, "/v1/deployment")

    def head(self) -> LogHeadOut:
        return self._model(LogHeadOut, "/v1/log/head")

    def entries(self, start: int, limit: int) -> RawLogEntriesOut:
        return self._model(RawLogEntriesOut, "/v1/log/entries", {"start": start, "limit": limit})

    def consistency(self, old_size: int, new_size: int) -> list[bytes]:
        data = self.get("/v1/log/consistency", {"from": old_size, "to": new_size})
        try:
            return ConsistencyOut.model_validate(data).proof
        except ValidationError as exc:
            raise ApiError(f"the consistency proof answer is malformed: {exc}") from exc


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
