"""An HTTP client of the medtrail API for the patient's wallet (httpx).

Everything here is what the service serves; nothing is trusted blindly that the wallet can
check itself: the typed-data definitions are checked by
:meth:`wallets.consent.ConsentTypedData.from_definitions`, and proof bundles are verified by
:mod:`wallets.service`.

* **Sign-in** (EIP-4361): the message names the API's own authority (``host:port`` of the
  URL the wallet talks to) as its ``domain``, the chain id of ``GET /v1/deployment``, and a
  nonce from ``GET /v1/auth/nonce``. A service that announces another domain (e.g. behind a
  proxy) is refused unless the caller names that domain explicitly (``siwe_domain``): the
  wallet never signs a sign-in for a site other than the one it was pointed at.
* **Errors.** An answer of the API that is a problem document becomes :class:`ApiError`
  (its ``status``, ``code``, ``detail`` and, for a refusal by the contract, ``error``); a
  service that cannot be reached, :class:`ApiUnreachable`. Both are :class:`WalletError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

import httpx
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ValidationError

from ledger import jsonsafe
from ledger.chain.model import Deployment
from ledger.completeness import REASKS, index_behind
from ledger.consent import SignedGrant
from ledger.siwe import SiweMessage
from ledger.wire import CheckpointOut, CheckpointsOut, EventOut, IndexProofOut
from wallets.consent import SignedConsent
from wallets.errors import WalletError

__all__ = [
    "API_URL_ENVS",
    "ApiError",
    "ApiUnreachable",
    "MedtrailClient",
    "Session",
]

#: Where the API's base URL comes from, in order, when not given.
API_URL_ENVS: Final = ("MEDTRAIL_API_URL", "MEDTRAIL_URL")
#: Items asked for per page of a list (the API's maximum: fewest round trips).
PAGE_LIMIT: Final = 1000
#: How long a sign-in message asks the session to last at most.
SESSION_LIFETIME: Final = timedelta(minutes=10)
_LOCAL_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})

_M = TypeVar("_M", bound=BaseModel)


class ApiError(WalletError):
    """The API answered with a problem document (or something that is not JSON)."""

    code = "api-error"

    def __init__(self, detail: str, *, status: int, problem: dict[str, Any] | None = None) -> None:
        problem = problem or {}
        super().__init__(
            detail,
            status=status,
            problem=problem.get("code"),
            **({"error": problem["error"]} if "error" in problem else {}),
        )
        self.status = status
        self.problem = problem


class ApiUnreachable(WalletError):
    """The API did not answer (connection refused, timeout, DNS)."""

    code = "api-unreachable"


class Session:
    """A patient session: the bearer token of ``POST /v1/auth/siwe``."""

    __slots__ = ("address", "expires_at", "token")

    def __init__(self, token: str, address: str, expires_at: int) -> None:
        self.token = token
        self.address = address
        self.expires_at = expires_at

    def __repr__(self) -> str:  # never show the token
        return f"Session(address={self.address!r}, expires_at={self.expires_at})"


def _authority(base_url: str) -> tuple[str, str]:
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WalletError(f"the API URL must be http(s)://host[:port], got {base_url!r}")
    return parts.scheme, parts.netloc


class MedtrailClient:
    """The medtrail API at ``base_url`` (e.g. ``http://127.0.0.1:8000``).

    Lists are read page after page to the end, ``page_limit`` items a page (default: the
    API's maximum)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        siwe_domain: str | None = None,
        transport: httpx.BaseTransport | None = None,
        page_limit: int = PAGE_LIMIT,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.page_limit = page_limit
        self.scheme, authority = _authority(self.base_url)
        self.siwe_domain = siwe_domain or authority
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)
        self._deployment: Deployment | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MedtrailClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        session: Session | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
        allow_404: bool = False,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if session is not None:
            headers["Authorization"] = f"Bearer {session.token}"
        try:
            answer = self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise ApiUnreachable(
                f"the medtrail API at {self.base_url} cannot be reached:"
                f" {exc or type(exc).__name__}",
                url=self.base_url,
            ) from None
        if allow_404 and answer.status_code == 404:
            return None
        try:
            body = jsonsafe.loads(answer.content)
        except ValueError:
            body = None
        if answer.status_code >= 400:
            problem = body if isinstance(body, dict) else {}
            detail = problem.get("detail") or answer.reason_phrase or "error"
            error = f" ({problem['error']})" if problem.get("error") else ""
            raise ApiError(
                f"the service refused: {detail}{error} [HTTP {answer.status_code}"
                f"{', ' + str(problem['code']) if problem.get('code') else ''}]",
                status=answer.status_code,
                problem=problem,
            )
        if body is None:
            raise ApiError(
                f"the service answered {method} {path} with something that is not JSON",
                status=answer.status_code,
            )
        return body

    def _pages(
        self,
        path: str,
        items: str,
        *,
        session: Session | None = None,
        query: dict[str, Any] | None = None,
        on_page: Callable[[dict[str, Any]], None] | None = None,
        after: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a paged list (docs/wire.md, "Paging"), page after page to the end:
        each page's ``next`` is the following page's ``after``. A service whose ``next`` does
        not move forward is an :class:`ApiError` (rather than a loop without end).
        ``query``: more query parameters; ``on_page``: called with each page's answer;
        ``after``: the items after this key only (None: from the first)."""
        while True:
            params: dict[str, Any] = {**(query or {}), "limit": self.page_limit}
            if after is not None:
                params["after"] = after
            answer = self._request("GET", path, session=session, params=params)
            if on_page is not None:
                on_page(answer)
            yield from answer[items]
            following = answer.get("next")
            if following is None:
                return
            if type(following) is not int or (after is not None and following <= after):
                raise ApiError(
                    f"the service answered GET {path} with a `next` that does not move forward"
                    f" ({following!r} after {after!r})",
                    status=200,
                )
            after = following

    # -- public documents ----------------------------------------------------------------

    def typed_data(self) -> dict[str, Any]:
        """``GET /v1/typed-data``: the EIP-712 domains and types."""
        result: dict[str, Any] = self._request("GET", "/v1/typed-data")
        return result

    def deployment(self) -> Deployment:
        """``GET /v1/deployment``: the chain id and contract addresses the service names
        (cached). Not to be trusted as such: :class:`wallets.pin.DeploymentPin` checks it."""
        if self._deployment is None:
            data = self._request("GET", "/v1/deployment")
            self._deployment = self._parse(Deployment, data, "GET /v1/deployment", extra="ignore")
        return self._deployment

    def consent_nonce(self, patient: str) -> int:
        """The nonce the patient's next consent signature must carry (as on chain)."""
        return int(self._request("GET", f"/v1/patients/{patient}/consent-nonce")["nonce"])

    def latest_checkpoint(self) -> CheckpointOut | None:
        """``GET /v1/checkpoints/latest``; None before the first checkpoint is on chain."""
        data = self._request("GET", "/v1/checkpoints/latest", allow_404=True)
        return None if data is None else self._parse(CheckpointOut, data, "a checkpoint")

    def checkpoints(self) -> Iterator[CheckpointOut]:
        """``GET /v1/checkpoints``: every checkpoint and its anchoring state, by tree size
        (page after page)."""
        for item in self._pages("/v1/checkpoints", "checkpoints"):
            yield self._parse(CheckpointOut, item, "a checkpoint")

    def checkpoint(self, tree_size: int) -> CheckpointOut | None:
        """The checkpoint of size ``tree_size`` (``GET /v1/checkpoints?after=N-1&limit=1``);
        None if the service made none of that size."""
        if tree_size < 1:
            return None
        answer = self._request(
            "GET", "/v1/checkpoints", params={"after": tree_size - 1, "limit": 1}
        )
        rows = self._parse(CheckpointsOut, answer, "GET /v1/checkpoints").checkpoints
        if rows and rows[0].treeSize == tree_size:
            return rows[0]
        return None

    @staticmethod
    def _parse(
        model: type[_M], data: Any, what: str, *, extra: Literal["ignore"] | None = None
    ) -> _M:
        """``data`` as the wire's ``model`` (:mod:`ledger.wire`); :class:`ApiError` if not."""
        try:
            return model.model_validate(data, extra=extra)
        except ValidationError as exc:
            raise ApiError(
                f"the service answered {what} with an unexpected document:"
                f" {exc.error_count()} error(s), first: {exc.errors()[0]['msg']}",
                status=200,
            ) from None

    # -- sign-in -------------------------------------------------------------------------

    def sign_in(
        self, account: LocalAccount, *, chain_id: int | None = None, now: datetime | None = None
    ) -> Session:
        """Sign in with Ethereum (EIP-4361) as ``account``: a short-lived session, on chain
        ``chain_id`` (the wallet's trusted deployment's; by default the service's)."""
        info = self._request("GET", "/v1/auth/nonce")
        served_domain = info.get("domain")
        if served_domain != self.siwe_domain:
            raise WalletError(
                f"the service at {self.base_url} signs patients in for {served_domain!r}, not"
                f" for {self.siwe_domain!r}: refusing to sign a sign-in for another site"
                " (if that really is this service, e.g. behind a proxy, pass --siwe-domain)",
                domain=served_domain,
            )
        if chain_id is None:
            chain_id = self.deployment().chain_id
        if info.get("chainId") != chain_id:
            raise WalletError(
                f"the service names chain {info.get('chainId')} for sign-in but its deployment"
                f" is on chain {chain_id}"
            )
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        host = urlsplit("//" + self.siwe_domain).hostname or ""
        scheme = "http" if host in _LOCAL_HOSTS else "https"
        message = SiweMessage(
            domain=self.siwe_domain,
            address=account.address,
            statement="Sign in to medtrail to manage consent to my health records.",
            uri=f"{scheme}://{self.siwe_domain}",
            chain_id=chain_id,
            nonce=str(info["nonce"]),
            issued_at=issued,
            expiration_time=issued + SESSION_LIFETIME,
        )
        text = message.to_text()
        signature = bytes(account.sign_message(encode_defunct(text=text)).signature)
        answer = self._request(
            "POST", "/v1/auth/siwe", json={"message": text, "signature": "0x" + signature.hex()}
        )
        return Session(str(answer["token"]), str(answer["address"]), int(answer["expiresAt"]))

    # -- patients ------------------------------------------------------------------------

    def institution(self, session: Session, address: str) -> dict[str, Any] | None:
        """An institution's registration; None when the address was never registered."""
        result: dict[str, Any] | None = self._request(
            "GET", f"/v1/institutions/{address}", session=session, allow_404=True
        )
        return result

    def relay_grant(self, session: Session, signed: SignedConsent) -> dict[str, Any]:
        """``POST /v1/grants`` with a signed ``Grant``: the grant as the chain holds it."""
        m = signed.message
        body = {
            "patient": m["patient"],
            "grantee": m["grantee"],
            "recordRef": m["recordRef"],
            "purposes": m["purposes"],
            "notBefore": m["notBefore"],
            "expiresAt": m["expiresAt"],
            "deadline": m["deadline"],
            "signature": "0x" + signed.signature.hex(),
        }
        result: dict[str, Any] = self._request("POST", "/v1/grants", session=session, json=body)
        return result

    def post_grant_v2(self, session: Session, grant: SignedGrant) -> dict[str, Any]:
        """``POST /v1/grants`` with a signed version-2 grant: the service keeps it and commits
        it on chain (``status`` "pending" until mined). Posting it again is harmless."""
        result: dict[str, Any] = self._request(
            "POST", "/v1/grants", session=session, json=grant.as_json()
        )
        return result

    def revoke_v2(self, session: Session, grant_id: int, secret: bytes) -> dict[str, Any]:
        """``POST /v1/grants/{id}/revoke`` with a version-2 grant's revocation secret: the
        service presents it on chain; the grant, revoked."""
        result: dict[str, Any] = self._request(
            "POST",
            f"/v1/grants/{grant_id}/revoke",
            session=session,
            json={"secret": "0x" + secret.hex()},
        )
        return result

    def grant_or_none(self, session: Session, grant_id: int) -> dict[str, Any] | None:
        """``GET /v1/grants/{id}``; None when the service has no such grant for this patient."""
        result: dict[str, Any] | None = self._request(
            "GET", f"/v1/grants/{grant_id}", session=session, allow_404=True
        )
        return result

    def relay_revoke(self, session: Session, signed: SignedConsent) -> dict[str, Any]:
        """``POST /v1/grants/{id}/revoke`` with a signed ``Revoke``."""
        m = signed.message
        result: dict[str, Any] = self._request(
            "POST",
            f"/v1/grants/{m['grantId']}/revoke",
            session=session,
            json={"deadline": m["deadline"], "signature": "0x" + signed.signature.hex()},
        )
        return result

    def relay_increase_nonce(self, session: Session, signed: SignedConsent) -> dict[str, Any]:
        """``POST /v1/patients/{address}/increase-nonce`` with a signed ``IncreaseNonce``."""
        m = signed.message
        result: dict[str, Any] = self._request(
            "POST",
            f"/v1/patients/{m['patient']}/increase-nonce",
            session=session,
            json={
                "newNonce": m["newNonce"],
                "deadline": m["deadline"],
                "signature": "0x" + signed.signature.hex(),
            },
        )
        return result

    def grant(self, session: Session, grant_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/grants/{grant_id}", session=session)
        return result

    def grants(self, session: Session, patient: str) -> Iterator[dict[str, Any]]:
        """Every grant of ``patient`` the session may see, by id (page after page)."""
        return self._pages(f"/v1/patients/{patient}/grants", "grants", session=session)

    def history(
        self, session: Session, patient: str
    ) -> tuple[list[EventOut], IndexProofOut | None]:
        """Every event about ``patient`` (``GET /v1/events?patient=``: accesses,
        prescriptions, dispenses, claims, payments), in log order, each with its proof bundle,
        and the index proof of the whole list the first page carries. When a checkpoint
        landed while paging (:func:`ledger.completeness.index_behind`), the page after the
        last event is asked again with ``index=true``: the proof at the newest checkpoint."""
        proofs: list[IndexProofOut] = []

        def keep(page: dict[str, Any]) -> None:
            found = page.get("index")
            if found is not None:
                proofs.append(self._parse(IndexProofOut, found, "an index proof"))

        query: dict[str, Any] = {"patient": patient}
        events: list[EventOut] = []
        after: int | None = None
        for _ in range(REASKS + 1):
            events += [
                self._parse(EventOut, item, "an event")
                for item in self._pages(
                    "/v1/events", "events", session=session, query=query, on_page=keep, after=after
                )
            ]
            proof = max(proofs, key=lambda proof: proof.treeSize, default=None)
            if not index_behind(proof, (event.bundle.treeSize for event in events)):
                break
            query, after = {"patient": patient, "index": "true"}, events[-1].bundle.leafIndex
        return events, proof

    def accesses(self, session: Session, patient: str) -> Iterator[EventOut]:
        """Every access to ``patient``'s records, in log order (page after page), each with
        its proof bundle."""
        for item in self._pages(f"/v1/patients/{patient}/accesses", "accesses", session=session):
            yield self._parse(EventOut, item, "an access")
