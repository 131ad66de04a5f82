"""Every stable code medtrail answers, reports or refuses with, in one table.

A code names one thing that can be wrong. The same code may be

* a **refusal**: the service answers with it (an RFC 9457 problem, ``type`` ``/problems/<code>``,
  with the entry's HTTP ``status``) — ingest refusing an event, the API refusing a request;
* a **finding**: a verification reports it (the API's ``verify=true``, the wallet, the
  regulator's ``verify_trail`` and ``audit_log``), with the entry's ``severity``; ``found_by``
  says which of the regulator's checks finds it: one record's ``trail``, the whole ``log``;
* a **wallet** error: ``medtrail wallet`` exits with it (``--json``: ``code``);
* a **tool** error: the regulator's tools could not verify (exit status 2) and say why;
* a **monitor** status: the regulator's monitor (``medtrail-monitor``) alerts with it when a
  source it follows stops or starts answering (its findings are findings: ``found_by``
  ``monitor`` for the supervision rules and the receipts watch, which only it runs).

A rule of the ledger is usually both: ingest refuses the event, and the audit reports it if
it is in the log anyway. This table is the one source of each code's description, status and
severity: the exception classes take their ``status`` (and docstring) from it, ``GET
/problems`` is generated from it, the findings catalogue of docs/regulator.md is generated
from it (``python -m ledger.codes``), and tests fail when a code is raised, reported or
documented without being here (tests/unit/ledger/test_codes.py).

The second table, :data:`REVERTS`, describes the custom errors the contracts revert with
when the service relays a request (the answer is ``contract-reverted`` with ``error`` and
``args``), with the HTTP status of that answer. The wallet's pre-checks
(:func:`ledger.events.grant_refusal`) tell the patient the same sentence before signing.

Pure data, standard library only (the regulator's light install imports it).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

__all__ = [
    "CODES",
    "FINDINGS_BEGIN",
    "FINDINGS_END",
    "OTHER_REVERT_STATUS",
    "REVERTS",
    "Code",
    "Revert",
    "Scope",
    "Severity",
    "findings_markdown",
    "regulator_doc",
    "revert_status",
    "severity_of",
]

#: How bad a finding is: ``error`` (something is wrong), ``review`` (a person must look,
#: e.g. an emergency access), ``warning`` (not wrong yet, e.g. not anchored yet).
Severity: TypeAlias = Literal["error", "review", "warning"]
#: Which of the regulator's checks finds a finding: one record's trail, the whole log, or
#: only the monitor (its supervision rules, its receipts watch; it finds every ``log`` code
#: too).
Scope: TypeAlias = Literal["trail", "log", "monitor"]

_TITLE_END: Final = re.compile(r"\. |: |; |\.$")
_ASIDE: Final = re.compile(r"\s*\([^)]*\)")


@dataclass(frozen=True)
class Code:
    """One code: what it means, and how it is answered or reported."""

    code: str
    #: What it means, in Markdown (backticks for names); the first clause is the title.
    description: str
    #: HTTP status when the service refuses with it (None: never answered by the API).
    status: int | None = None
    #: Severity when a verification reports it (None: never a finding).
    severity: Severity | None = None
    #: Which of the regulator's checks find it (findings only).
    found_by: frozenset[Scope] = frozenset()
    #: An error of the patient's wallet (``medtrail wallet``).
    wallet: bool = False
    #: An error of the regulator's tools (``medtrail-verify-trail``, ``medtrail-audit-log``):
    #: they could not verify, exit status 2.
    tool: bool = False
    #: A status alert of the regulator's monitor (not a finding: a source stopped or started
    #: answering).
    monitor: bool = False

    @property
    def title(self) -> str:
        """The description's first clause, without asides."""
        first = self.description.split("\n\n", 1)[0]
        return _TITLE_END.split(_ASIDE.sub("", first), maxsplit=1)[0].strip()

    @property
    def reported_by(self) -> tuple[str, ...]:
        """Who uses it: ``refusal`` (the API), ``finding`` (verifications), ``wallet``,
        ``tool`` (the regulator's tools)."""
        return tuple(
            name
            for name, used in (
                ("refusal", self.status is not None),
                ("finding", self.severity is not None),
                ("wallet", self.wallet),
                ("tool", self.tool),
                ("monitor", self.monitor),
            )
            if used
        )


def _refusal(code: str, status: int, description: str) -> Code:
    return Code(code, description, status=status)


def _finding(code: str, severity: Severity, found_by: str, description: str) -> Code:
    return Code(code, description, severity=severity, found_by=_scopes(found_by))


def _rule(code: str, status: int, description: str, found_by: str = "trail log") -> Code:
    """A rule of the ledger: refused at ingest, an ``error`` finding when logged anyway."""
    return Code(code, description, status=status, severity="error", found_by=_scopes(found_by))


def _wallet(code: str, description: str) -> Code:
    return Code(code, description, wallet=True)


def _tool(code: str, description: str) -> Code:
    return Code(code, description, tool=True)


def _monitor(code: str, description: str) -> Code:
    return Code(code, description, monitor=True)


def _scopes(text: str) -> frozenset[Scope]:
    scopes: set[Scope] = set()
    for word in text.split():
        if word == "trail":
            scopes.add("trail")
        elif word == "log":
            scopes.add("log")
        elif word == "monitor":
            scopes.add("monitor")
        else:  # pragma: no cover - a typo in the table below
            raise ValueError(f"not a scope: {word!r}")
    return frozenset(scopes)


_ENTRIES: Final[tuple[Code, ...]] = (
    # ------------------------------------------------------------------ the ledger's roots
    _refusal("ledger-error", 400, "Root of every deliberate ledger error."),
    _refusal(
        "invalid-proof",
        422,
        "A Merkle inclusion or consistency proof does not verify, or is malformed.",
    ),
    _refusal(
        "invalid-signature",
        422,
        "A signature is malformed, malleable (high s) or does not recover.",
    ),
    _refusal(
        "malformed-event",
        422,
        "An event, grant or struct value is malformed: bad hex, wrong length, out-of-range int.",
    ),
    _refusal(
        "invalid-grant-terms",
        422,
        "Consent version 2: a grant's terms could never cover an access (no purpose, an empty "
        "or reversed window, already expired, longer than a century, a commitment deadline "
        "passed), or a version-2 grant is malformed.",
    ),
    _refusal(
        "grantee-not-active",
        409,
        "Consent version 2: the grantee is not an active registered institution (unknown or "
        "suspended), so the grant is not stored nor committed.",
    ),
    _refusal(
        "invalid-revocation-secret",
        422,
        "Consent version 2: the revocation secret presented is not the grant's "
        "(keccak256(secret) is not its revocationHash).",
    ),
    _refusal(
        "grant-version-refused",
        409,
        "The grant is of the consent version this deployment does not take for new grants: a "
        "deployment with ConsentRegistryV2 takes version-2 grants only (its version-1 grants "
        "stay readable and judged), one without it version-1 grants only.",
    ),
    _refusal(
        "weak-key", 400, "A reference (HMAC) key is too short to keep local identifiers secret."
    ),
    _refusal(
        "invalid-text",
        422,
        "A name or label holds a character medtrail does not store: a control character (NUL, "
        "line breaks, escapes), a line separator, a bidirectional override, or a lone "
        "surrogate. Send one line of printable text.",
    ),
    _refusal(
        "json-too-deep",
        422,
        "The JSON document nests arrays and objects deeper than the service accepts (see "
        "`limit`), or opens more of them than it closes. Nothing of it was parsed.",
    ),
    # ------------------------------------------------------------------ the rules of events
    _refusal(
        "rule-violation", 422, "An event breaks a rule of the ledger (root of the refusals below)."
    ),
    _rule(
        "signer-mismatch",
        422,
        "The signature does not recover to the institution the event names: the event was "
        "never signed by it (forged or altered).",
    ),
    _rule(
        "institution-unregistered",
        403,
        "The signing institution is not registered on chain (for a finding: was not, at "
        "`occurredAt`).",
    ),
    _rule(
        "institution-suspended",
        403,
        "The signing institution is registered but suspended (for a finding: was, at "
        "`occurredAt`).",
    ),
    _rule(
        "institution-wrong-kind",
        403,
        "The institution's kind may not sign this type of event (e.g. a pharmacy prescribing).",
    ),
    _refusal(
        "occurred-in-future",
        422,
        "`occurredAt` is further in the future than the allowed clock skew "
        "(`MEDTRAIL_MAX_FUTURE_SKEW`).",
    ),
    _refusal(
        "occurred-too-long-ago",
        422,
        "`occurredAt` is further in the past than the allowed window "
        "(`MEDTRAIL_MAX_BACKDATE`): events are logged when they happen, not dated at will.",
    ),
    _rule(
        "custodian-not-hospital",
        403,
        "An access names as the record's custodian an institution that is not a hospital "
        "registered at `occurredAt` (only a hospital holds records).",
    ),
    _refusal(
        "event-id-conflict", 409, "An event with this `eventId` exists with different content."
    ),
    _rule("prescription-unknown", 422, "A dispense names a prescription that is not in the log."),
    _rule(
        "prescription-patient-mismatch",
        422,
        "A dispense is for another patient than its prescription.",
    ),
    _rule(
        "prescription-expired", 422, "A dispense happened after the prescription's `validUntil`."
    ),
    _rule(
        "fills-exceeded",
        422,
        "A dispense goes beyond the prescription's fills: its `fillNumber` is above `fills`, or "
        "(found by the audit) the prescription was dispensed more times than it allows.",
    ),
    _rule("fill-already-dispensed", 409, "This fill of the prescription was dispensed already."),
    _rule("service-unknown", 422, "A claim's `serviceRef` is not an event in the log."),
    _rule(
        "service-patient-mismatch", 422, "A claim is for another patient than the service it bills."
    ),
    _rule(
        "service-not-claimable",
        422,
        "A claim's `serviceRef` names a claim or a payment, which are not services.",
    ),
    _rule(
        "service-not-claimant",
        422,
        "A claim is made by another institution than the one that gave the service.",
    ),
    _rule(
        "service-already-claimed",
        409,
        "The service was claimed already (a second claim for one service).",
    ),
    _rule(
        "dispense-before-prescription",
        422,
        "A dispense happened before the prescription was written.",
    ),
    _rule(
        "insurer-not-registered",
        422,
        "A claim names an insurer that is not a registered, active insurer (at `occurredAt`).",
    ),
    _rule("claim-unknown", 422, "A payment's `claimId` is not a claim in the log."),
    _rule("claim-patient-mismatch", 422, "A payment is for another patient than its claim."),
    _rule(
        "payment-wrong-insurer",
        422,
        "A payment is signed by another insurer than the one the claim was made to.",
    ),
    _rule("payment-wrong-payee", 422, "A payment goes to another institution than the claimant."),
    _rule("claim-already-paid", 409, "The claim was paid already (a second payment)."),
    _rule(
        "payment-exceeds-claim",
        422,
        "A payment is above the claimed amount (found by the audit also in total, over "
        "several payments).",
    ),
    _rule("reason-required", 422, "An emergency (break-glass) access must carry a `reasonHash`."),
    _rule(
        "custodian-mismatch",
        409,
        "The record's earlier events name another custodian (a record's custodian is fixed by "
        "its first event: an access's `custodian`, or the hospital that issued a prescription "
        "for it).",
    ),
    _rule(
        "record-patient-mismatch",
        409,
        "The record's earlier events belong to another patient (fixed by its first event).",
    ),
    # ------------------------------------------------------------------ ingest and the log
    _refusal("empty-batch", 400, "A submission with no events."),
    _refusal("batch-too-large", 413, "More events in one submission than the configured limit."),
    _refusal(
        "batch-rejected",
        422,
        "At least one event of the batch was refused; nothing of the batch was stored.",
    ),
    _refusal(
        "log-conflict",
        409,
        "The batch conflicts with what the log holds beyond what the submitter may see: a "
        "record of another patient or held by another custodian, a prescription that does not "
        "admit the dispense, a service or claim that is not the submitter's to bill or pay, an "
        "`eventId` in use. Which event, and why, is not said (it would disclose another "
        "institution's data): submit the events one at a time to find it.",
    ),
    _refusal(
        "tree-size-out-of-range",
        400,
        "A proof was asked for a tree size the log has not reached (or an index outside it).",
    ),
    _refusal(
        "merkle-node-missing",
        500,
        "A node that a proof plan needs is absent from the node mapping it was given.\n\n"
        "This is the store's fault (a lost or not yet persisted node), not the caller's, hence "
        "a 5xx status; it is also a `KeyError` so mapping-style callers can catch it.",
    ),
    _refusal(
        "missing-fact",
        500,
        "A chain fact table was asked for a fact it was not given (a bug of the caller's "
        "prefetch).",
    ),
    _refusal(
        "log-diverged",
        500,
        "The chain holds a checkpoint the store's tree does not reproduce: refuse to anchor.",
    ),
    _refusal("store-unavailable", 503, "The store is unreachable, or holds data it should not."),
    _refusal(
        "anchoring-unavailable",
        503,
        "The operator's key may no longer commit checkpoints (its AuditLog role was revoked "
        "since the service started): events are refused rather than given a receipt promising "
        "an anchoring that cannot happen. Grant the role back, or configure a key that holds "
        "it.",
    ),
    _refusal(
        "not-found", 404, "The thing asked for does not exist (or is not visible to the caller)."
    ),
    _refusal("configuration-error", 500, "The settings are incomplete or unsafe."),
    # ------------------------------------------------------------------ the chain
    _refusal(
        "chain-unavailable",
        503,
        "The chain could not be reached or did not answer as expected.",
    ),
    Code(
        "deployment-mismatch",
        "The chain does not hold the contracts the deployment (or the store) expects; for the "
        "regulator's tools, the API names other contracts (or another chain) than yours.",
        status=500,
        severity="error",
        found_by=frozenset({"trail", "log"}),
    ),
    _refusal(
        "contract-reverted",
        409,
        "A contract call reverted; `error` is the custom error's name, `args` its arguments.",
    ),
    _refusal("artifact-error", 500, "A compiled contract artifact is missing or malformed."),
    _refusal(
        "signer-not-configured",
        500,
        "A write needs a key (log operator or registrar) this client was not given.",
    ),
    # ------------------------------------------------------------------ the HTTP API
    Code(
        "api-error",
        "An error the HTTP layer raises itself (authentication, authorization, limits). For "
        "the wallet: the API answered with a problem document (`problem` names its code) or "
        "with something that is not JSON.",
        status=400,
        wallet=True,
    ),
    _refusal(
        "unauthenticated",
        401,
        "No valid credential: the `Authorization: Bearer` header is missing, malformed, or "
        "names an unknown, revoked or expired API key or patient session.",
    ),
    _refusal(
        "forbidden",
        403,
        "The credential is valid, but its role may not do this (e.g. a regulator submitting "
        "events, an institution using the admin API, a patient relaying another patient's "
        "grant).",
    ),
    _refusal(
        "foreign-event",
        403,
        "An institution may submit only events whose `institution` is its own registered "
        "address (the one its API key is bound to); `errors` lists each foreign event's index. "
        "Nothing of the batch was stored.",
    ),
    _refusal(
        "validation-error",
        422,
        "The request does not match the API's schema (a missing or unknown field, a value of "
        "the wrong type or format, a body that is not JSON); `errors` lists each problem with "
        "its location `loc` (and `index` for an event of a batch).",
    ),
    _refusal(
        "request-too-large",
        413,
        "The request body is larger than the server accepts (see `limit`, in bytes). Split "
        "the batch.",
    ),
    _refusal(
        "rate-limited",
        429,
        "Too many sign-in nonces asked for, or too many failed sign-ins or authentications, "
        "from this client address. Wait `retryAfter` seconds (the `Retry-After` header) and "
        "try again. The budget is a token bucket per client address and per API process "
        "(`MEDTRAIL_AUTH_RATE` a minute, `MEDTRAIL_AUTH_BURST` at once).",
    ),
    _refusal(
        "method-not-allowed",
        405,
        "The endpoint exists but not with this HTTP method (see the `Allow` header).",
    ),
    _refusal("bad-request", 400, "The request is malformed at the HTTP level."),
    _refusal(
        "not-ready",
        503,
        "The service cannot serve requests now: its store or its chain is unreachable (see "
        "`checks`). Retry later.",
    ),
    _refusal(
        "registrar-not-configured",
        503,
        "The service has no registrar key (`MEDTRAIL_REGISTRAR_KEY`, see `setting`), so it "
        "cannot register, suspend or reinstate institutions on chain. The operator may "
        "configure a key holding the InstitutionRegistry's REGISTRAR_ROLE; a regulator may "
        "also send the transaction with their own key.",
    ),
    _refusal(
        "server-busy",
        503,
        "The server process holds as many connections as it may (`MEDTRAIL_MAX_CONNECTIONS`, "
        "see `limit`) and closed this one at once; or, for `POST /v1/events`, the batch "
        "waited 30 s for its turn (each server process checks one batch at a time, in the "
        "order they came). Retry shortly (`Retry-After`).",
    ),
    _refusal(
        "institution-unknown",
        409,
        "The address is not an institution registered on chain (register it first).",
    ),
    _refusal(
        "internal-error",
        500,
        "An unexpected error on the server's side. It was logged; the answer carries no "
        "details. Not the caller's fault: report it if it persists.",
    ),
    # ------------------------------------------------------------------ Sign-In with Ethereum
    _refusal("siwe-invalid", 401, "A Sign-In with Ethereum message or signature was refused."),
    _refusal(
        "siwe-malformed",
        400,
        "The text does not conform to the EIP-4361 ABNF (or a field value is invalid).",
    ),
    _refusal(
        "siwe-domain",
        401,
        "The message is for another domain (or another scheme) than this service.",
    ),
    _refusal(
        "siwe-uri",
        401,
        "The message's `URI` is not under the URI prefix this service expects.",
    ),
    _refusal("siwe-chain-id", 401, "The message is bound to another chain than this service's."),
    _refusal(
        "siwe-expired",
        401,
        "`now` is at or after the message's `Expiration Time` (or past the max age).",
    ),
    _refusal(
        "siwe-not-yet-valid",
        401,
        "`now` is before the message's `Not Before`, or `Issued At` is in the future.",
    ),
    _refusal(
        "siwe-signature",
        401,
        "The signature is malformed, malleable (high s) or not by the message's address.",
    ),
    _refusal(
        "siwe-nonce",
        401,
        "The nonce was not issued by the caller, or was used already (raised by the caller).",
    ),
    # ------------------------------------------------------------------ findings: proofs
    _finding(
        "digest-mismatch",
        "error",
        "trail log",
        "The served event is not the one whose digest was logged: its EIP-712 digest differs "
        "from the bundle's `eventDigest` (changed after it was logged).",
    ),
    _finding(
        "signature-invalid",
        "error",
        "trail log",
        "The event's signature is malformed, malleable (high s) or recovers no key: the event "
        "was never signed by the institution it names.",
    ),
    _finding(
        "inclusion-invalid",
        "error",
        "trail",
        "The inclusion proof does not place the event at its leaf in the root the chain holds.",
    ),
    _finding(
        "checkpoint-mismatch",
        "error",
        "trail",
        "The bundle's checkpoint (size, root, chain or AuditLog) is not the chain's.",
    ),
    _finding(
        "checkpoint-not-on-chain",
        "error",
        "trail",
        "The bundle names a checkpoint size the chain does not hold.",
    ),
    _finding(
        "proof-missing",
        "error",
        "trail",
        "Served as not anchored though the chain's checkpoint covers its leaf.",
    ),
    _finding(
        "pending",
        "warning",
        "trail",
        "Not anchored yet, within the merge delay (or no deadline is known).",
    ),
    _finding(
        "not-anchored-in-time",
        "error",
        "trail log",
        "Not anchored past the operator's promise (the receipt's `anchorBy`: received + the "
        "maximum merge delay).",
    ),
    _finding(
        "anchored-late",
        "warning",
        "log",
        "Anchored, but after the receipt's promise (`receivedAt` + the maximum merge delay).",
    ),
    _finding(
        "receipt-invalid",
        "error",
        "trail",
        "The receipt is not the operator's over this event, leaf index and times: its "
        "signature (over the receipt, or over its batch's root) or its path to that root "
        "(checked with `--operator`, and by the receipts watch).",
    ),
    _finding(
        "receipt-missing",
        "warning",
        "trail",
        "An operator was given to check receipts against (`--operator`), but the bundle has no "
        "receipt.",
    ),
    _finding(
        "checkpoint-inconsistent",
        "error",
        "log",
        "An on-chain checkpoint does not extend the previous one (their consistency proof fails).",
    ),
    _finding(
        "log-rollback",
        "error",
        "log",
        "The log serves a smaller tree than one verified before (a rollback).",
    ),
    _finding(
        "split-view",
        "error",
        "log",
        "The log serves another history than one verified before (a tree that does not extend "
        "it, or another event at a leaf already mirrored).",
    ),
    # ------------------------------------------------------------------ findings: the audit
    _finding(
        "emergency-access",
        "review",
        "trail log",
        "A break-glass access (another institution than the custodian, no grant): listed for "
        "review.",
    ),
    _finding(
        "consent-not-covered",
        "error",
        "trail log",
        "An access by another institution than the custodian under a grant that did not cover "
        "it on chain at `occurredAt`; `context.grantStatus` says why (`revoked`, `expired`, "
        "`wrong-grantee`, `out-of-scope`, `purpose-not-covered`, `not-yet-valid`, "
        "`not-yet-granted`, `wrong-patient`, `not-found`; with consent version 2 also "
        "`invalid-signature` and `committed-too-late`).",
    ),
    _finding(
        "consent-grant-unavailable",
        "error",
        "trail log",
        "An access under a consent version 2 grant whose commitment is on chain, but whose "
        "signed grant the verifier could not obtain (not in `--grants`, not served by the API "
        "at `GET /v1/grants/{id}`, or served with another commitment): its consent cannot be "
        "judged, so it is not shown covered; `context.consentLabel` is what ingest recorded.",
    ),
    _finding(
        "consent-revoked-in-flight",
        "review",
        "trail log",
        "An access ingest labelled covered whose grant the chain now shows revoked at "
        "`occurredAt`, by a revocation mined at or after the operator received the access "
        "(`context.revokedAt` >= `context.receivedAt`): the chain ingest asked held no "
        "revocation yet (the access is dated in the revocation's second, or a little ahead of "
        "the chain), so it is not `consent-not-covered`; check the access did not go ahead "
        "after the revocation. A revocation mined before the receipt stays "
        "`consent-not-covered`.",
    ),
    _finding(
        "consent-label-mismatch",
        "warning",
        "trail log",
        "The operator recorded another consent status for the access than the chain gives.",
    ),
    _finding(
        "event-id-duplicate",
        "error",
        "trail log",
        "The same `eventId` appears twice in the log (or the trail).",
    ),
    _finding(
        "entry-malformed",
        "error",
        "log",
        "A served event could not be parsed (bad JSON, a bad field).",
    ),
    _finding(
        "entry-missing",
        "error",
        "log",
        "Leaves are missing from the served log (deleted rows).",
    ),
    _finding(
        "entry-changed",
        "error",
        "log",
        "An entry mirrored by an earlier run is served differently now (its event, digest, "
        "consent status or receipt time; `context.changed` says what), or no longer at all: "
        "the log was edited after that entry was first served (found by re-checking the "
        "mirror, `--recheck`).",
    ),
    _finding(
        "entry-out-of-order",
        "error",
        "log",
        "The served log's leaves are out of order.",
    ),
    _finding(
        "checkpoint-root-mismatch",
        "error",
        "log",
        "An on-chain checkpoint's root is not the root of the served events at its size "
        "(`context.suspectFrom` … `treeSize` bound where they differ).",
    ),
    _finding(
        "checkpoint-beyond-log",
        "error",
        "log",
        "The chain holds a checkpoint larger than the log the operator serves (events "
        "withheld, deleted or rolled back).",
    ),
    _finding(
        "head-mismatch",
        "error",
        "log",
        "The log's served head (size, root) is not the root of the entries it serves.",
    ),
    _finding(
        "trail-record-mismatch",
        "error",
        "trail",
        "The trail holds an event of another record.",
    ),
    _finding("trail-order", "error", "trail", "The trail's events are not in log order."),
    _finding(
        "history-other-patient",
        "error",
        "trail",
        "A patient's history (the wallet's `accesses`) holds an event about another patient: "
        "the service served someone else's event as theirs.",
    ),
    _finding("trail-empty", "warning", "trail", "The trail asked for holds no event at all."),
    # ------------------------------------------------------------------ findings: completeness
    _finding(
        "trail-incomplete",
        "error",
        "trail",
        "The trail (or a patient's history) is not the whole list the verifiable index "
        "commits to on chain: an event the index lists was not served (a row deleted after "
        "anchoring, an event filtered out of the answer), the list served is not the one the "
        "on-chain index root proves (shortened, changed, or a proof for another key), or an "
        "anchored event was served that the list does not hold.",
    ),
    _finding(
        "trail-outdated",
        "error",
        "trail",
        "The trail is proven complete at an older checkpoint than the chain's latest (read by "
        "the verifier itself): what was anchored since is not covered — a trail served from "
        "an older copy of the log. (The tools fetch and verify once more before reporting it: "
        "a checkpoint may land between the two reads.)",
    ),
    _finding(
        "trail-as-of",
        "warning",
        "trail",
        "An exported trail (`--bundle`) is proven complete as of the checkpoint of its index "
        "proof, and the chain has anchored more since: the events logged after the export are "
        "not covered. Fetch the trail again to cover them.",
    ),
    _finding(
        "index-proof-missing",
        "error",
        "trail",
        "The chain holds a checkpoint, but the trail came with no index proof: whether it is "
        "complete cannot be checked.",
    ),
    _finding(
        "history-shrunk",
        "error",
        "trail",
        "A list the client saw before (the wallet remembers the head of each history it "
        "verified) is not a prefix of the one served now: fewer events, or earlier ones "
        "removed or changed — a rewritten history.",
    ),
    _finding(
        "index-root-mismatch",
        "error",
        "log",
        "An on-chain checkpoint's index root is not the root of the index rebuilt from the "
        "served events at its size (`MemoryIndex`): the index was built wrong, so lookups "
        "against it may lie.",
    ),
    _finding(
        "index-roots-unchecked",
        "warning",
        "log",
        "Some on-chain index roots were not compared with the rebuilt index: it cannot be "
        "rebuilt past a malformed entry (`context.malformedLeaf`, reported as "
        "`entry-malformed`), so the checkpoints beyond it (`context.checkpoints`) are not "
        "audited for `index-root-mismatch`.",
    ),
    _finding(
        "deployment-from-api",
        "warning",
        "log",
        "The log's identity (its chain and AuditLog) was taken from the API, not from your own "
        "configuration (`--deployment-file`, or `--chain-id` and `--audit-log`): an offline "
        "audit of a mirror then checks the log the operator names.",
    ),
    _finding(
        "chain-not-consulted",
        "warning",
        "log",
        "The chain was not consulted (`--no-chain`): institution, consent and checkpoint "
        "checks were skipped.",
    ),
    _finding(
        "backdated",
        "error",
        "trail log",
        "First anchored later than `occurredAt` + the backdating window (`--max-backdate`) + "
        "the merge delay (`--max-merge-delay`): the event was dated earlier than it was logged "
        "(or the operator anchored it late).",
    ),
    _finding(
        "access-logged-after-grant-end",
        "review",
        "trail log",
        "An access dated while its grant covered it, but first anchored after the grant was "
        "revoked or expired: check it was not dated back to before the revocation.",
    ),
    # ------------------------------------------------------------------ findings: supervision
    # The supervision rules of the regulator's monitor (ledger/supervision.py): what a
    # supervision office reviews beyond the ledger's own rules.
    _finding(
        "prescription-without-access",
        "review",
        "monitor",
        "A prescription whose prescriber's institution had no access to the record before it "
        "(no `RecordAccess` by that institution to that record earlier in the log, dated no "
        "later than the prescription): online prescribing needs the patient's records first.",
    ),
    _finding(
        "emergency-access-rate",
        "review",
        "monitor",
        "An institution made more emergency (break-glass) accesses than the threshold within "
        "the window (`--emergency-threshold` in `--emergency-window` seconds, by "
        "`occurredAt`; `context.count`): reported at most once per window per institution.",
    ),
    _finding(
        "checkpoint-late",
        "review",
        "monitor",
        "A checkpoint landed on chain later than the operator promised for some of the events "
        "it newly covers (their `receivedAt` + the maximum merge delay): `context.lateEvents` "
        "of them, the worst `context.maxLateness` seconds late. One finding per checkpoint, "
        "where the audit reports each event (`anchored-late`).",
    ),
    # ------------------------------------------------------------------ findings: receipts
    _finding(
        "receipt-replaced",
        "error",
        "monitor",
        "An institution's receipt promises its event at a leaf that the chain's checkpoint "
        "covers, but the operator cannot prove the event there (no valid inclusion proof of "
        "its digest at that leaf): another event took its place, or the log was rewritten.",
    ),
    _finding(
        "receipt-dropped",
        "error",
        "monitor",
        "An institution's receipt promised its event anchored by `anchorBy`, and that time has "
        "passed with no on-chain checkpoint reaching its leaf: the operator dropped it, or "
        "stopped anchoring.",
    ),
    # ------------------------------------------------------------------ the monitor's status
    _monitor(
        "source-down",
        "The operator's API or your chain node (`context.source`: `api` or `chain`) stopped "
        "answering the monitor: nothing new is verified from it until it answers again "
        "(`context.error` says how it failed, `context.behind` how far behind the monitor was).",
    ),
    _monitor(
        "source-up",
        "A source the monitor had reported `source-down` answers again "
        "(`context.downSeconds`): the monitor catches up from where it stopped.",
    ),
    # ------------------------------------------------------------------ the patient's wallet
    _wallet("wallet-error", "Root of every deliberate wallet error."),
    _wallet(
        "wrong-passphrase", "The passphrase does not open the keystore (its MAC does not match)."
    ),
    _wallet(
        "corrupt-keystore",
        "A keystore file is unreadable, not a scrypt Web3 Secret Storage v3 keystore, or holds "
        "a key for another address than the wallet expects.",
    ),
    _wallet("corrupt-wallet", "The wallet index (`wallet.json`) is unreadable or inconsistent."),
    _wallet("wallet-not-found", "No wallet in the given directory."),
    _wallet(
        "wallet-exists",
        "A wallet (or other files) already exist where a new wallet was to be created.",
    ),
    _wallet("account-not-found", "The wallet holds no account with that address."),
    _wallet("duplicate-account", "The wallet already holds that account."),
    _wallet(
        "invalid-mnemonic",
        "Not a valid English BIP-39 mnemonic (unknown word, wrong length or checksum).",
    ),
    _wallet("invalid-private-key", "Not a valid secp256k1 private key (32 bytes, 0 < key < n)."),
    _wallet("weak-passphrase", "A new passphrase is too short."),
    _wallet(
        "passphrase-required",
        "No passphrase: the environment variable is unset and no prompt could be shown.",
    ),
    _wallet(
        "keystore-write-failed",
        "A keystore or the wallet index could not be written; nothing was replaced.",
    ),
    _wallet(
        "invalid-consent-request",
        "A grant, revocation or nonce increase that the chain would refuse (no purposes, a "
        "validity window that is empty or reversed, an expiry not in the future, a deadline "
        "passed, ...): `error` names the contract's custom error it would revert with, when "
        "there is one.",
    ),
    _wallet("api-unreachable", "The API did not answer (connection refused, timeout, DNS)."),
    _wallet("unknown-institution", "The grantee is not a registered institution."),
    _wallet(
        "institution-not-active",
        "The grantee is registered but suspended: the chain would refuse the grant.",
    ),
    _wallet(
        "typed-data-mismatch",
        "The service's typed-data definitions differ from what the contracts verify.",
    ),
    # ------------------------------------------------------------------ the regulator's tools
    _tool(
        "cannot-verify",
        "Verification could not be done: a bad input file or option, missing configuration, "
        "contracts that are not medtrail's, or a worker process of the audit died. Nothing is "
        "reported as verified (exit status 2).",
    ),
    _tool(
        "api-unavailable",
        "The API could not be reached, refused the request, or answered something unreadable "
        "(exit status 2).",
    ),
)

#: Every code, by code.
CODES: Final[Mapping[str, Code]] = MappingProxyType({entry.code: entry for entry in _ENTRIES})
if len(CODES) != len(_ENTRIES):  # pragma: no cover - a code listed twice above
    raise ValueError("ledger.codes lists a code twice")


def severity_of(code: str) -> Severity:
    """The severity a verification reports ``code`` with (``KeyError`` if it is no finding)."""
    severity = CODES[code].severity
    if severity is None:
        raise KeyError(f"{code!r} is not a finding code")
    return severity


# --------------------------------------------------------------------------- contract reverts


@dataclass(frozen=True)
class Revert:
    """A custom error a contract reverts with when the service relays a request."""

    error: str
    contract: str
    #: The status of the API's ``contract-reverted`` answer.
    status: int
    #: What it means, for the one who signed or sent the request.
    description: str


_REVERT_ENTRIES: Final = (
    # ConsentRegistry, relaying a patient's signed request; the grant checks in the
    # contract's order (ledger.events.grant_refusal mirrors them).
    Revert("SignatureExpired", "ConsentRegistry", 422, "the signature's deadline has passed"),
    Revert(
        "InvalidSignature",
        "ConsentRegistry",
        422,
        "the signature is not the patient's for this request, chain, contract and nonce",
    ),
    Revert("EmptyPurposes", "ConsentRegistry", 422, "a grant must cover at least one purpose"),
    Revert(
        "InvalidValidityWindow",
        "ConsentRegistry",
        422,
        "notBefore must be before expiresAt (the validity window is empty or reversed)",
    ),
    Revert(
        "GrantAlreadyExpired",
        "ConsentRegistry",
        422,
        "the grant would be expired when created: expiresAt is not in the future",
    ),
    Revert(
        "GranteeNotActive",
        "ConsentRegistry",
        409,
        "the grantee is not a registered, active institution",
    ),
    Revert("GrantNotFound", "ConsentRegistry", 404, "no grant has this id"),
    Revert("NotGrantPatient", "ConsentRegistry", 403, "only the grant's patient may revoke it"),
    Revert("GrantAlreadyRevoked", "ConsentRegistry", 409, "the grant is revoked already"),
    Revert(
        "InvalidNonce",
        "ConsentRegistry",
        409,
        "a nonce can only move forward: the new nonce must be above the current one",
    ),
    # InstitutionRegistry, the admin API
    Revert("ZeroAddress", "InstitutionRegistry", 422, "the zero address cannot be registered"),
    Revert("InvalidKind", "InstitutionRegistry", 422, "not a kind an institution can have"),
    Revert("InvalidName", "InstitutionRegistry", 422, "institution names are 1..64 bytes long"),
    Revert(
        "InstitutionAlreadyRegistered",
        "InstitutionRegistry",
        409,
        "the institution is registered already (kinds are permanent; suspend instead)",
    ),
    Revert(
        "InstitutionNotRegistered",
        "InstitutionRegistry",
        404,
        "the institution has never been registered",
    ),
    Revert(
        "InstitutionAlreadySuspended",
        "InstitutionRegistry",
        409,
        "the institution is suspended already",
    ),
    Revert(
        "InstitutionNotSuspended",
        "InstitutionRegistry",
        409,
        "the institution is not suspended, so it cannot be reinstated",
    ),
)

#: The custom errors the API can answer ``contract-reverted`` with, by name.
REVERTS: Final[Mapping[str, Revert]] = MappingProxyType({r.error: r for r in _REVERT_ENTRIES})
#: The status of a ``contract-reverted`` answer for any error not in :data:`REVERTS`.
OTHER_REVERT_STATUS: Final = 409


def revert_status(error: str) -> int:
    """The HTTP status of the API's answer when a contract reverts with ``error``."""
    known = REVERTS.get(error)
    return OTHER_REVERT_STATUS if known is None else known.status


# --------------------------------------------------------------------------- the regulator's doc

#: The generated findings catalogue of docs/regulator.md sits between these lines.
FINDINGS_BEGIN: Final = "<!-- findings: generated by `python -m ledger.codes`; do not edit -->"
FINDINGS_END: Final = "<!-- end of findings -->"

_SCOPE_TEXT: Final[Mapping[frozenset[Scope], str]] = {
    frozenset({"trail", "log"}): "both",
    frozenset({"trail"}): "trail",
    frozenset({"log"}): "log",
    frozenset({"monitor"}): "monitor",
}


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def findings_markdown(codes: Iterable[Code] | None = None) -> str:
    """The findings catalogue (a Markdown table): every finding code, its severity, which
    checks find it (``trail``: ``verify_trail``, ``log``: ``audit_log`` and the monitor,
    ``both``, ``monitor``: the monitor alone), and what it means; errors first, then reviews,
    then warnings, each by code."""
    rank = {"error": 0, "review": 1, "warning": 2}
    findings = sorted(
        (c for c in (CODES.values() if codes is None else codes) if c.severity is not None),
        key=lambda c: (rank[c.severity or "error"], c.code),
    )
    lines = [
        "| code | severity | found by | what it means |",
        "|---|---|---|---|",
        *(
            f"| `{c.code}` | {c.severity} | {_SCOPE_TEXT[c.found_by]} | "
            f"{_one_line(c.description)} |"
            for c in findings
        ),
    ]
    return "\n".join(lines) + "\n"


def regulator_doc(text: str) -> str:
    """``text`` (docs/regulator.md) with its findings catalogue regenerated."""
    begin, end = text.find(FINDINGS_BEGIN), text.find(FINDINGS_END)
    if begin < 0 or end < begin:
        raise ValueError("the document has no generated findings section")
    head = text[: begin + len(FINDINGS_BEGIN)]
    return f"{head}\n{findings_markdown()}{text[end:]}"


def main(argv: list[str] | None = None) -> int:
    """``python -m ledger.codes [PATH]``: regenerate the findings catalogue of PATH (default
    docs/regulator.md) in place."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "docs/regulator.md")
    path.write_text(regulator_doc(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
