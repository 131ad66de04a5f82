"""Consent version 2 as the regulator's tools judge it (``verify_trail``, ``audit_log``, the
monitor): one rule, one verifier — what ingest accepted, judged the way ingest judged it.

An access cites a version-2 grant by its id, the salted commitment the ConsentRegistryV2 holds;
the grant itself, signed by the patient, lives off chain. The tools judge it with
:class:`ledger.chain.consent.CommittedConsentFacts` — ingest's own
:class:`~ledger.chain.consent.CommittedConsent` over the tools' chain reader — given the signed
grant from a file the patient or the service handed over (``--grants``), or else fetched from
the API as the accesses cite them (:class:`ApiGrants`). Nothing the file or the API says is
trusted: a grant counts only if its commitment is the id cited, that commitment is on the
ConsentRegistryV2 of the deployment the regulator trusts, and the signature is the patient's —
what the contract's ``grantStatusAt`` checks, on the regulator's own endpoint. A grant whose
commitment is on chain but that the tool could not obtain is reported
``consent-grant-unavailable`` (:class:`ledger.audit.GrantUnavailable`), never covered.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ledger.chain.consent import (
    CommittedConsent,
    CommittedConsentFacts,
    GrantBook,
    ReaderConsent,
    SignedGrants,
)
from ledger.chain.reader import ChainView
from ledger.consent import GRANT_V2, SignedGrant
from ledger.eip712 import Domain
from ledger.errors import LedgerError
from scripts._api import ApiClient
from scripts._common import ToolError

__all__ = ["ApiGrants", "consent_facts", "grants_option", "read_grants"]

#: The fields of a signed version-2 grant in a file or the API's answer.
_GRANT_V2_FIELDS = (*(name for name, _type in GRANT_V2.fields), "signature")


def read_grants(path: Path) -> list[SignedGrant]:
    """The signed version-2 grants of a file: a JSON list of grants as the patient's wallet
    or the API hands them over (``SignedGrant.as_json``, or the API's grant answers)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ToolError(f"the grants file {path} is unreadable: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ToolError(f"the grants file {path} is not a JSON list of grants")
    try:
        return [_signed_grant(item) for item in data]
    except LedgerError as exc:
        raise ToolError(f"the grants file {path} holds a malformed grant: {exc.detail}") from exc


def _signed_grant(data: dict[str, Any]) -> SignedGrant:
    return SignedGrant.from_json({name: data.get(name) for name in _GRANT_V2_FIELDS})


class ApiGrants:
    """:class:`ledger.chain.consent.SignedGrants` fetched from the API as the accesses cite
    them (``GET /v1/grants/{grantId}``), each once. No trust in the operator is needed: an
    answer whose commitment is not the id asked for is refused (as if the API had no such
    grant), and a grant proves nothing unless its commitment is on chain and its signature is
    the patient's, which ``grantStatusAt`` checks."""

    def __init__(self, api: ApiClient, domain: Domain) -> None:
        self.api = api
        self.domain = domain
        self._fetched: dict[int, SignedGrant | None] = {}

    def signed_grant(self, grant_id: int) -> SignedGrant | None:
        if grant_id not in self._fetched:
            self._fetched[grant_id] = self._fetch(grant_id)
        return self._fetched[grant_id]

    def _fetch(self, grant_id: int) -> SignedGrant | None:
        data = self.api.grant_v2(grant_id)
        if data is None:
            return None
        try:
            grant = _signed_grant(data)
        except LedgerError:
            return None
        return grant if grant.grant_id(self.domain) == grant_id else None


def consent_facts(
    chain: ChainView, *, grants: Path | None = None, api: ApiClient | None = None
) -> ChainView | CommittedConsentFacts:
    """What the rules judge an access by: ``chain``, with consent version 2 judged by the
    ConsentRegistryV2 the trusted deployment names (its code checked when the chain was
    connected) — the signed grants from the file ``grants``, else fetched from ``api``, else
    none (each version-2 grant then ``consent-grant-unavailable``). Any other grant id is
    judged by the deployment's ConsentRegistry (version 1), as ingest does. ``chain`` alone
    when the deployment has no ConsentRegistryV2."""
    registry = chain.trusted.consent_registry_v2
    if registry is None:
        if grants is not None:
            raise ToolError(
                "--grants: the deployment you trust names no ConsentRegistryV2 (give "
                "--consent-v2 ADDRESS, or a deployment file with consentRegistryV2)"
            )
        return chain
    judge = ReaderConsent(chain.reader, registry, check=False)
    book: SignedGrants
    if grants is not None:
        book = GrantBook(judge.domain, read_grants(grants))
    elif api is not None:
        book = ApiGrants(api, judge.domain)
    else:
        book = GrantBook(judge.domain)
    return CommittedConsentFacts(chain, CommittedConsent(judge, book))


def grants_option(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--grants FILE``: the signed version-2 grants the accesses cite."""
    return click.option(
        "--grants",
        "grants_file",
        envvar="MEDTRAIL_GRANTS_FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The signed version-2 grants the accesses cite (a JSON list); without it, with "
        "--api, each cited grant is fetched from the API [env MEDTRAIL_GRANTS_FILE].",
    )(function)
