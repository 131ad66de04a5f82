"""The regulator's rule engine: every ledger rule, replayed over logged events, pure.

Ingest refuses what breaks a rule, but a regulator does not trust ingest: a malicious or
careless operator can write rows behind the service's back. This module replays the rules
over a sequence of events *in log order* and reports, as :class:`~ledger.verify.Finding`
values, whatever a regulator must see:

* signature: the signer registered, active and of the right kind **at ``occurredAt``**;
* consent: each non-emergency access by an institution other than the record's custodian
  covered by a grant valid on chain at ``occurredAt`` (``consent-not-covered`` otherwise,
  with the chain's reason: revoked, expired, wrong grantee, out of scope, purpose…), except
  an access ingest labelled covered whose revocation was mined at or after the operator
  received it (``consent-revoked-in-flight``, ``review``: ingest asked the chain before it
  held the revocation); each emergency (break-glass) access listed with severity ``review``;
* prescriptions and money: a dispense without a prescription, beyond its fills (by count or
  by fill number), after ``validUntil``; a claim without a service; a claim paid twice; paid
  more than claimed (by one payment or in total);
* the shape of a log or trail: missing or out-of-order leaves, checkpoints whose root is not
  the recomputed one, late or missing anchoring.

Nothing here does I/O. What the chain says is passed in as plain data through the
:class:`ChainFacts` protocol (:class:`FactTable` is a mapping-backed implementation), and
:func:`needed_facts` lists every fact the rules will ask for, so that a caller can fetch
them all at once (one JSON-RPC batch) before auditing. Rule violations reuse
:mod:`ledger.rules` (same codes as ingest's refusals); the codes that are the audit's own are
in :class:`AuditCode`.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from ledger import rules
from ledger.errors import LedgerError
from ledger.events import (
    EventBase,
    PrescriptionIssued,
    RecordAccess,
    SignedEvent,
)
from ledger.logstate import (
    InstitutionStatus,
    Links,
    LogState,
    apply,
    chain_violations,
    institution_queries,
)
from ledger.rules import ConsentFinding, ConsentStatus, GrantStatus, RuleViolation
from ledger.rules import GrantQuery as GrantQuery  # (re-exported)
from ledger.rules import grant_query as grant_query  # (re-exported)
from ledger.verify import Finding, FindingCode, Severity
from ledger.verify import signature_findings as signature_findings  # (re-exported)

__all__ = [
    "RULE_CODES",
    "Anchor",
    "AuditCode",
    "Auditor",
    "ChainFacts",
    "FactNeeds",
    "FactTable",
    "GrantQuery",
    "InstitutionStatus",
    "MissingFact",
    "RecomputedTree",
    "Revocation",
    "anchoring_times",
    "audit_events",
    "backdated_finding",
    "check_anchoring",
    "check_checkpoints",
    "check_leaf_sequence",
    "check_trail_shape",
    "count_findings",
    "grant_query",
    "needed_facts",
    "signature_findings",
]


class AuditCode(StrEnum):
    """The finding codes of the audit itself (rule violations keep :mod:`ledger.rules`' codes,
    proofs and signatures :class:`ledger.verify.FindingCode`)."""

    #: A break-glass access (another institution, no grant): listed for review.
    EMERGENCY_ACCESS = "emergency-access"
    #: An access by another institution than the custodian, under a grant that did not cover
    #: it on chain at ``occurredAt`` (``context["grantStatus"]`` says why).
    CONSENT_NOT_COVERED = "consent-not-covered"
    #: The operator recorded another consent status than the chain gives.
    CONSENT_LABEL_MISMATCH = "consent-label-mismatch"
    #: The same ``eventId`` appears twice in the log (or the trail).
    EVENT_ID_DUPLICATE = "event-id-duplicate"
    #: A served event could not be parsed (bad JSON, bad field).
    ENTRY_MALFORMED = "entry-malformed"
    #: Leaves are missing from the served log (deleted rows), or served out of order.
    ENTRY_MISSING = "entry-missing"
    ENTRY_OUT_OF_ORDER = "entry-out-of-order"
    #: An entry mirrored by an earlier run is served differently now, or no longer at all
    #: (found by re-checking the mirror).
    ENTRY_CHANGED = "entry-changed"
    #: An on-chain checkpoint's root is not the root of the served events at its size.
    CHECKPOINT_ROOT_MISMATCH = "checkpoint-root-mismatch"
    #: The chain holds a checkpoint larger than the log the operator serves.
    CHECKPOINT_BEYOND_LOG = "checkpoint-beyond-log"
    #: A bundle names a checkpoint the chain does not hold.
    CHECKPOINT_NOT_ON_CHAIN = "checkpoint-not-on-chain"
    #: The log's served head (size, root) is not the root of the entries it serves.
    HEAD_MISMATCH = "head-mismatch"
    #: Anchored, but after the receipt's promise (``receivedAt`` + maximum merge delay).
    ANCHORED_LATE = "anchored-late"
    #: The API names other contracts (or chain) than the ones the regulator trusts.
    DEPLOYMENT_MISMATCH = "deployment-mismatch"
    #: A trail holds an event of another record.
    TRAIL_RECORD_MISMATCH = "trail-record-mismatch"
    #: A trail's events are not in log order.
    TRAIL_ORDER = "trail-order"
    #: A patient's history holds an event about another patient.
    HISTORY_OTHER_PATIENT = "history-other-patient"
    #: The trail asked for holds no event at all.
    TRAIL_EMPTY = "trail-empty"
    #: The chain was not consulted: institution, consent and checkpoint checks were skipped.
    CHAIN_NOT_CONSULTED = "chain-not-consulted"
    #: The log's identity (chain, AuditLog) was taken from the API, not the regulator's own
    #: configuration.
    DEPLOYMENT_FROM_API = "deployment-from-api"
    #: On-chain index roots not compared: the index cannot be rebuilt past a malformed entry.
    INDEX_ROOTS_UNCHECKED = "index-roots-unchecked"
    #: Anchored later than ``occurredAt`` + the backdating window + the merge delay: the event
    #: was dated earlier than it was logged (or the operator anchored it late).
    BACKDATED = "backdated"
    #: An access dated while its grant covered it, but anchored only after the grant was
    #: revoked or expired: it may have been dated back to before the revocation.
    ACCESS_LOGGED_AFTER_GRANT_END = "access-logged-after-grant-end"
    #: An access under a consent version 2 grant committed on chain whose signed grant the
    #: verifier could not obtain (not in ``--grants``, not served by the API): not judged.
    CONSENT_GRANT_UNAVAILABLE = "consent-grant-unavailable"
    #: An access ingest labelled covered, whose grant the chain now shows revoked at
    #: ``occurredAt`` by a revocation mined at or after the operator received the access
    #: (``receivedAt``): covered by everything the chain held then; listed for review.
    CONSENT_REVOKED_IN_FLIGHT = "consent-revoked-in-flight"


#: Every code a :class:`ledger.rules.RuleViolation` subclass carries (for documentation and
#: the tools' ``--help``), sorted.
RULE_CODES: tuple[str, ...] = tuple(
    sorted(
        {
            cls.code
            for cls in vars(rules).values()
            if isinstance(cls, type) and issubclass(cls, RuleViolation) and cls is not RuleViolation
        }
    )
)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


# --------------------------------------------------------------------------- chain facts


class Revocation(NamedTuple):
    """A grant's revocation as the chain holds it now (block time; 0: not revoked) and the
    validity window it was granted for (``grantStatusAt`` answers ``revoked`` before it
    looks at the window)."""

    revoked_at: int
    not_before: int
    expires_at: int

    def in_flight(self, occurred_at: int, received_at: int) -> bool:
        """Whether the grant covered an access at ``occurred_at`` but for a revocation the
        chain did not hold when the operator received the access at ``received_at``: mined
        in that second or later (block times have a resolution of one second, so a
        revocation of the very second of the receipt may not have been seen)."""
        return (
            self.revoked_at >= received_at
            and self.revoked_at != 0
            and self.not_before <= occurred_at < self.expires_at
        )


class ChainFacts(Protocol):
    """What the rules need to know of the chain (time-aware, block time in unix seconds)."""

    def institution_at(self, address: str, at: int) -> InstitutionStatus:
        """The registration of ``address`` at time ``at``."""
        ...

    def grant_status(self, query: GrantQuery) -> GrantStatus:
        """The grant's status for the access described by ``query``
        (:class:`GrantUnavailable` when the grant cannot be judged)."""
        ...

    def grant_revocation(self, grant_id: int) -> Revocation | None:
        """When grant ``grant_id`` was revoked and its window (asked only of a grant whose
        status was ``revoked``); None if the chain holds no such grant."""
        ...


class MissingFact(LedgerError):
    """A :class:`FactTable` was asked for a fact it was not given."""

    code = "missing-fact"
    status = 500


class GrantUnavailable(MissingFact):
    """The grant an access cites exists on chain (a consent version 2 commitment), but the
    signed grant needed to judge it could not be obtained: the :class:`Auditor` reports
    ``consent-grant-unavailable`` instead of a verdict."""


@dataclass(frozen=True)
class FactTable:
    """:class:`ChainFacts` from plain mappings (as fetched in bulk by :func:`needed_facts`)."""

    institutions: Mapping[tuple[str, int], InstitutionStatus] = field(default_factory=dict)
    grants: Mapping[GrantQuery, GrantStatus] = field(default_factory=dict)
    revocations: Mapping[int, Revocation] = field(default_factory=dict)

    def institution_at(self, address: str, at: int) -> InstitutionStatus:
        try:
            return self.institutions[(address, at)]
        except KeyError:
            raise MissingFact(f"no institution fact for {address} at {at}") from None

    def grant_status(self, query: GrantQuery) -> GrantStatus:
        try:
            return self.grants[query]
        except KeyError:
            raise MissingFact(f"no grant fact for {query}") from None

    def grant_revocation(self, grant_id: int) -> Revocation | None:
        try:
            return self.revocations[grant_id]
        except KeyError:
            raise MissingFact(f"no revocation fact for grant {grant_id}") from None


@dataclass(frozen=True)
class FactNeeds:
    """Every chain fact an audit of some events will ask for."""

    institutions: frozenset[tuple[str, int]]
    grants: frozenset[GrantQuery]

    def __len__(self) -> int:
        return len(self.institutions) + len(self.grants)


def needed_facts(
    events: Iterable[EventBase | SignedEvent], logged_by: Mapping[bytes, int] | None = None
) -> FactNeeds:
    """The ``(address, time)`` and grant questions :class:`Auditor` will ask about ``events``
    (``logged_by``: the anchoring time of each anchored event, by eventId, as given to
    :meth:`Auditor.check`)."""
    institutions: set[tuple[str, int]] = set()
    grants: set[GrantQuery] = set()
    for item in events:
        event = item.event if isinstance(item, SignedEvent) else item
        institutions.update(institution_queries(event))
        if isinstance(event, RecordAccess):
            query = grant_query(event)
            if query is not None:
                grants.add(query)
                at = (logged_by or {}).get(event.eventId)
                if at is not None and at > query.at:
                    grants.add(query._replace(at=at))
    return FactNeeds(frozenset(institutions), frozenset(grants))


# --------------------------------------------------------------------------- the rules


def _violation(error: RuleViolation, event: EventBase, **context: Any) -> Finding:
    finding = Finding.from_error(error, event_id=event.eventId)
    if context:
        return Finding(
            finding.code,
            finding.severity,
            finding.detail,
            finding.event_id,
            {**finding.context, **context},
        )
    return finding


class Auditor:
    """Replays the rules over events fed in log order (:meth:`check`, one at a time).

    The rules are ingest's own: :func:`ledger.logstate.apply` over a :class:`LogState` of the
    whole log, and :func:`ledger.logstate.chain_violations` at each ``occurredAt``.
    ``facts`` is what the chain says; ``None`` skips the checks that need it (institutions,
    consent grants) and nothing else. ``max_backdate`` and ``max_merge_delay`` bound how long
    after ``occurredAt`` an event may be anchored (``backdated``); ``None`` skips that check.

    ``state`` and ``seen`` are where the log so far is kept (by default in memory): the rules'
    :class:`LogState`, and a content fingerprint of each eventId seen (to tell an event resent
    from a conflicting one). A verifier that must not grow with the log (the regulator's
    monitor) gives mappings kept on disk, and fingerprints that are stable across processes
    (``check(content=…)``: e.g. the event's digest).
    """

    def __init__(
        self,
        facts: ChainFacts | None,
        *,
        max_backdate: int | None = None,
        max_merge_delay: int | None = None,
        state: LogState | None = None,
        seen: MutableMapping[bytes, int] | None = None,
    ) -> None:
        self.facts = facts
        self.state = LogState() if state is None else state
        #: A content fingerprint of each event seen, to tell a resent event from a
        #: conflicting one.
        self._content: MutableMapping[bytes, int] = {} if seen is None else seen
        self.max_backdate = max_backdate
        self.max_merge_delay = max_merge_delay
        #: How the event :meth:`check` judged last hangs in the log (what
        #: :func:`ledger.logstate.apply` returned for it), None when the rules did not apply it
        #: (an eventId seen before): the audit's index is rebuilt from these.
        self.last_links: Links | None = None

    def check(
        self,
        item: EventBase | SignedEvent,
        *,
        consent_label: str | None = None,
        logged_by: int | None = None,
        content: int | None = None,
        received_at: int | None = None,
    ) -> list[Finding]:
        """The findings of the next event of the log.

        ``consent_label`` is the consent status the operator recorded for it (compared with
        the chain's verdict: ``consent-label-mismatch``); ``received_at`` when the operator
        received it (its receipt's ``receivedAt``: an access labelled covered whose grant was
        revoked at or after then is ``consent-revoked-in-flight``, not ``consent-not-covered``);
        ``logged_by`` the block time of the
        first on-chain checkpoint that covers it (an upper bound, from the chain alone, on
        when it was logged), None while it is not anchored (:meth:`check_anchored` judges it
        once it is). ``content`` is the event's content fingerprint (default: ``hash`` of
        the event, which is stable within one process only).
        """
        event = item.event if isinstance(item, SignedEvent) else item
        fingerprint = hash(event) if content is None else content
        earlier = self._content.get(event.eventId)
        self.last_links = None
        if earlier is not None:
            same = earlier == fingerprint
            return [
                Finding(
                    AuditCode.EVENT_ID_DUPLICATE,
                    "error",
                    "this eventId appears earlier in the log"
                    + (" with the same content" if same else " with different content"),
                    event.eventId,
                    {"sameContent": same},
                )
            ]
        self._content[event.eventId] = fingerprint
        findings: list[Finding] = []
        if self.facts is not None:
            findings += [
                _violation(error, event, occurredAt=event.occurredAt)
                for error in chain_violations(event, self.facts)
            ]
        violations, self.last_links = apply(self.state, event)
        findings += [_violation(v.error, event) for v in violations]
        findings += self._backdated(event, logged_by)
        if isinstance(event, RecordAccess):
            findings += self._consent(event, consent_label, logged_by, received_at)
        return findings

    def check_anchored(self, item: EventBase | SignedEvent, logged_by: int) -> list[Finding]:
        """The findings of :meth:`check` that depend on when the event was first anchored
        (``backdated``, ``access-logged-after-grant-end``), for a verifier that judged it with
        ``logged_by=None`` before a checkpoint covered it (the monitor): ``check(logged_by=T)``
        finds what ``check(logged_by=None)`` and then ``check_anchored(T)`` find together."""
        event = item.event if isinstance(item, SignedEvent) else item
        findings = self._backdated(event, logged_by)
        if isinstance(event, RecordAccess) and self.facts is not None:
            query = grant_query(event)
            status = None if query is None else self._grant_status(query)
            if query is not None and status is not None:
                consent = rules.consent_of(event, status)
                findings += self._logged_after_grant_end(event, consent, query, logged_by)
        return findings

    def state_only(self, item: EventBase | SignedEvent) -> None:
        """Move the rules' state past an event without judging it (an event the rules look
        back at that is not among those verified, e.g. before a page of a trail)."""
        event = item.event if isinstance(item, SignedEvent) else item
        if event.eventId in self._content:
            return
        self._content[event.eventId] = hash(event)
        apply(self.state, event)

    # -- time -----------------------------------------------------------------------------

    def _backdated(self, event: EventBase, logged_by: int | None) -> list[Finding]:
        if logged_by is None or self.max_backdate is None or self.max_merge_delay is None:
            return []
        finding = backdated_finding(
            event.eventId,
            event.occurredAt,
            logged_by,
            max_backdate=self.max_backdate,
            max_merge_delay=self.max_merge_delay,
        )
        return [] if finding is None else [finding]

    # -- consent --------------------------------------------------------------------------

    def _consent(
        self,
        access: RecordAccess,
        consent_label: str | None,
        logged_by: int | None,
        received_at: int | None,
    ) -> list[Finding]:
        findings: list[Finding] = []
        query = grant_query(access)
        if query is not None and self.facts is None:
            return findings  # cannot be judged without the chain
        status = None
        if query is not None:
            try:
                status = self.facts.grant_status(query) if self.facts is not None else None
            except GrantUnavailable as exc:
                return [_grant_unavailable(access, consent_label, exc)]
        consent = rules.consent_of(access, status)
        if consent.status is ConsentStatus.EMERGENCY:
            findings.append(
                Finding(
                    AuditCode.EMERGENCY_ACCESS,
                    "review",
                    f"emergency (break-glass) access by {access.institution} to a record held "
                    f"by {access.custodian}, without a grant",
                    access.eventId,
                    {
                        "institution": access.institution,
                        "custodian": access.custodian,
                        "reasonHash": _hex(access.reasonHash),
                        "occurredAt": access.occurredAt,
                    },
                )
            )
        elif consent.status is ConsentStatus.NOT_COVERED:
            assert consent.grant_status is not None
            in_flight = self._revoked_in_flight(access, consent, consent_label, received_at)
            if in_flight is not None:
                return [in_flight]  # the operator's label was the chain's when it received it
            findings.append(
                Finding(
                    AuditCode.CONSENT_NOT_COVERED,
                    "error",
                    f"access by {access.institution} under grant {access.grantId}, which did "
                    f"not cover it on chain at occurredAt {access.occurredAt}: "
                    f"{consent.grant_status.label}",
                    access.eventId,
                    {
                        "grantId": access.grantId,
                        "grantStatus": consent.grant_status.label,
                        "occurredAt": access.occurredAt,
                    },
                )
            )
        elif query is not None and logged_by is not None:
            findings += self._logged_after_grant_end(access, consent, query, logged_by)
        if consent_label is not None and consent_label != consent.label:
            findings.append(_label_mismatch(access, consent_label, consent))
        return findings

    def _revoked_in_flight(
        self,
        access: RecordAccess,
        consent: ConsentFinding,
        consent_label: str | None,
        received_at: int | None,
    ) -> Finding | None:
        """``consent-revoked-in-flight`` for an access ingest labelled covered that the chain
        now shows revoked at ``occurredAt``, when the revocation was mined at or after the
        operator received the access (what ingest asked the chain held no revocation yet: an
        access dated in the second of the revocation, or a little ahead of the chain);
        None otherwise (``consent-not-covered`` stands)."""
        if (
            consent.grant_status is not GrantStatus.REVOKED
            or consent_label != ConsentStatus.COVERED.value
            or received_at is None
            or self.facts is None
        ):
            return None
        revocation = self.facts.grant_revocation(access.grantId)
        if revocation is None or not revocation.in_flight(access.occurredAt, received_at):
            return None
        return Finding(
            AuditCode.CONSENT_REVOKED_IN_FLIGHT,
            "review",
            f"access by {access.institution} under grant {access.grantId}, dated "
            f"{access.occurredAt}: the grant was revoked on chain at {revocation.revoked_at}, "
            f"at or after the operator received the access at {received_at}: the chain held no "
            "revocation when ingest found it covered; check the access did not go ahead after "
            "the revocation",
            access.eventId,
            {
                "grantId": access.grantId,
                "grantStatus": GrantStatus.REVOKED.label,
                "occurredAt": access.occurredAt,
                "receivedAt": received_at,
                "revokedAt": revocation.revoked_at,
            },
        )

    def _grant_status(self, query: GrantQuery) -> GrantStatus | None:
        """The grant's status; None without the chain, or when the grant cannot be judged
        (reported once, by :meth:`_consent`)."""
        if self.facts is None:
            return None
        try:
            return self.facts.grant_status(query)
        except GrantUnavailable:
            return None

    def _logged_after_grant_end(
        self, access: RecordAccess, consent: ConsentFinding, query: GrantQuery, logged_by: int
    ) -> list[Finding]:
        """``access-logged-after-grant-end`` when a covered access was first anchored after
        its grant was revoked or expired."""
        if (
            consent.status is not ConsentStatus.COVERED
            or self.facts is None
            or logged_by <= query.at
        ):
            return []
        later = self._grant_status(query._replace(at=logged_by))
        if later not in (GrantStatus.REVOKED, GrantStatus.EXPIRED):
            return []
        return [
            Finding(
                AuditCode.ACCESS_LOGGED_AFTER_GRANT_END,
                "review",
                f"access by {access.institution} dated {access.occurredAt}, when grant "
                f"{access.grantId} covered it, but anchored only at {logged_by}, after "
                f"the grant was {later.label}: check it was not dated back",
                access.eventId,
                {
                    "grantId": access.grantId,
                    "occurredAt": access.occurredAt,
                    "anchoredAt": logged_by,
                    "grantStatusWhenAnchored": later.label,
                },
            )
        ]


def _grant_unavailable(
    access: RecordAccess, consent_label: str | None, exc: GrantUnavailable
) -> Finding:
    return Finding(
        AuditCode.CONSENT_GRANT_UNAVAILABLE,
        "error",
        f"access by {access.institution} under grant {access.grantId}, which cannot be judged: "
        f"{exc.detail} (give it with --grants, or have the API serve it)",
        access.eventId,
        {
            "grantId": access.grantId,
            "occurredAt": access.occurredAt,
            "consentLabel": consent_label,
        },
    )


def backdated_finding(
    event_id: bytes, occurred_at: int, logged_by: int, *, max_backdate: int, max_merge_delay: int
) -> Finding | None:
    """``backdated`` when an event dated ``occurred_at`` was first anchored (at ``logged_by``)
    later than the backdating window and the merge delay allow; None otherwise."""
    bound = occurred_at + max_backdate + max_merge_delay
    if logged_by <= bound:
        return None
    return Finding(
        AuditCode.BACKDATED,
        "error",
        f"dated {occurred_at} but first anchored at {logged_by}, "
        f"{logged_by - bound} s later than the backdating window "
        f"({max_backdate} s) and the merge delay ({max_merge_delay} s) allow: "
        "it was dated earlier than it was logged, or anchored late",
        event_id,
        {
            "occurredAt": occurred_at,
            "anchoredAt": logged_by,
            "maxBackdate": max_backdate,
            "maxMergeDelay": max_merge_delay,
        },
    )


def _label_mismatch(access: RecordAccess, label: str, consent: ConsentFinding) -> Finding:
    return Finding(
        AuditCode.CONSENT_LABEL_MISMATCH,
        "warning",
        f"the operator recorded consent {label!r}, the chain gives {consent.label!r}",
        access.eventId,
        {"recorded": label, "chain": consent.label},
    )


def audit_events(
    events: Iterable[EventBase | SignedEvent],
    facts: ChainFacts | None,
    *,
    consent_labels: Mapping[bytes, str] | None = None,
) -> list[Finding]:
    """Every rule over ``events`` (in log order); ``consent_labels`` by eventId, optional."""
    auditor = Auditor(facts)
    labels = consent_labels or {}
    findings: list[Finding] = []
    for item in events:
        event = item.event if isinstance(item, SignedEvent) else item
        findings += auditor.check(event, consent_label=labels.get(event.eventId))
    return findings


# --------------------------------------------------------------------------- the log's shape


class Anchor(NamedTuple):
    """An on-chain checkpoint as plain data: ``(tree_size, root_hash)`` and when it landed."""

    tree_size: int
    root_hash: bytes
    timestamp: int = 0
    block_number: int = 0


def anchoring_times(leaf_indexes: Sequence[int], anchors: Sequence[Anchor]) -> list[int | None]:
    """For each leaf, the block time of the first on-chain checkpoint that covers it (None
    while none does): from the chain alone, an upper bound on when the event was logged
    (what :meth:`Auditor.check` takes as ``logged_by``). ``anchors`` in any order."""
    ordered = sorted(anchors, key=lambda a: a.tree_size)
    sizes = [a.tree_size for a in ordered]
    times: list[int | None] = []
    for index in leaf_indexes:
        position = bisect.bisect_right(sizes, index)
        times.append(ordered[position].timestamp if position < len(ordered) else None)
    return times


def check_leaf_sequence(leaf_indexes: Sequence[int], start: int = 0) -> list[Finding]:
    """Leaves must be served as ``start, start+1, …``: one finding per hole (``entry-missing``,
    e.g. a deleted row) and per step backwards (``entry-out-of-order``)."""
    findings: list[Finding] = []
    expected = start
    for position, index in enumerate(leaf_indexes):
        if index > expected:
            findings.append(
                Finding(
                    AuditCode.ENTRY_MISSING,
                    "error",
                    f"the log serves no event at leaf {expected}"
                    + (f" to {index - 1}" if index - 1 > expected else "")
                    + f" (the next entry served is leaf {index})",
                    None,
                    {"from": expected, "to": index - 1, "position": position},
                )
            )
        elif index < expected:
            findings.append(
                Finding(
                    AuditCode.ENTRY_OUT_OF_ORDER,
                    "error",
                    f"leaf {index} is served after leaf {expected - 1}",
                    None,
                    {"leafIndex": index, "position": position},
                )
            )
        expected = max(expected, index + 1)
    return findings


class RecomputedTree(Protocol):
    """What :func:`check_checkpoints` reads of the recomputed tree: its size and its root at a
    size (a :class:`ledger.merkle.MemoryTree`; the monitor's frontier at one size)."""

    @property
    def size(self) -> int: ...

    def root(self, size: int | None = None) -> bytes: ...


def check_checkpoints(tree: RecomputedTree, anchors: Sequence[Anchor]) -> list[Finding]:
    """Each on-chain checkpoint (in commit order) against the tree recomputed from the served
    events: ``checkpoint-beyond-log`` when the log serves fewer events than it covers,
    ``checkpoint-root-mismatch`` when its root is not the recomputed one (the context names
    the leaf range in which the served events differ from the anchored ones)."""
    findings: list[Finding] = []
    last_good = 0
    for anchor in anchors:
        size, root = anchor.tree_size, bytes(anchor.root_hash)
        context: dict[str, Any] = {
            "treeSize": size,
            "rootHash": _hex(root),
            "blockNumber": anchor.block_number,
            "servedSize": tree.size,
        }
        if size > tree.size:
            findings.append(
                Finding(
                    AuditCode.CHECKPOINT_BEYOND_LOG,
                    "error",
                    f"the chain holds a checkpoint of {size} events but the log serves only "
                    f"{tree.size}: anchored events are withheld or the log was rolled back",
                    None,
                    context,
                )
            )
            continue
        served = tree.root(size)
        if served != root:
            findings.append(
                Finding(
                    AuditCode.CHECKPOINT_ROOT_MISMATCH,
                    "error",
                    f"the on-chain root of size {size} is not the root of the served events: "
                    f"they differ from what was anchored in leaves {last_good} to {size - 1}",
                    None,
                    {**context, "servedRoot": _hex(served), "suspectFrom": last_good},
                )
            )
        else:
            last_good = size
    return findings


def check_anchoring(
    received_at: Sequence[int],
    anchors: Sequence[Anchor],
    *,
    now: int,
    max_merge_delay: int,
    event_ids: Sequence[bytes | None] | None = None,
) -> list[Finding]:
    """Each leaf ``i`` (received at ``received_at[i]``) must be covered by a checkpoint within
    ``max_merge_delay`` seconds: ``not-anchored-in-time`` (error) when it is still not anchored
    after that, ``anchored-late`` (warning) when the first checkpoint covering it came later.
    ``anchors`` are the on-chain checkpoints (any order)."""
    ordered = sorted(anchors, key=lambda a: a.tree_size)
    findings: list[Finding] = []
    position = 0
    for index, received in enumerate(received_at):
        while position < len(ordered) and ordered[position].tree_size <= index:
            position += 1
        deadline = received + max_merge_delay
        event_id = event_ids[index] if event_ids is not None else None
        if position < len(ordered):
            anchor = ordered[position]
            if anchor.timestamp > deadline:
                findings.append(
                    Finding(
                        AuditCode.ANCHORED_LATE,
                        "warning",
                        f"leaf {index} was anchored at {anchor.timestamp}, "
                        f"{anchor.timestamp - deadline} s after its deadline {deadline}",
                        event_id,
                        {"leafIndex": index, "anchorBy": deadline, "anchoredAt": anchor.timestamp},
                    )
                )
        elif now > deadline:
            findings.append(
                Finding(
                    FindingCode.NOT_ANCHORED_IN_TIME,
                    "error",
                    f"leaf {index} is not anchored {now - deadline} s after its deadline "
                    f"{deadline}",
                    event_id,
                    {"leafIndex": index, "anchorBy": deadline, "now": now},
                )
            )
    return findings


def check_trail_shape(
    record_ref: bytes | None, items: Sequence[tuple[int, EventBase, bytes | None]]
) -> list[Finding]:
    """A record's trail: ``(leafIndex, event, recordRef served with it)`` in the order served.

    ``trail-record-mismatch`` for an event of another record (by its own ``recordRef`` for
    accesses and prescriptions, else by the served one; not checked when ``record_ref`` is
    None: a list of events of several records, such as a patient's accesses), ``trail-order``
    when leaves go backwards, ``event-id-duplicate`` for an event served twice.
    """
    findings: list[Finding] = []
    seen: set[bytes] = set()
    last = -1
    for leaf, event, served_ref in items:
        own = event.recordRef if isinstance(event, RecordAccess | PrescriptionIssued) else None
        for ref in (own, served_ref):
            if record_ref is not None and ref is not None and ref != record_ref:
                findings.append(
                    Finding(
                        AuditCode.TRAIL_RECORD_MISMATCH,
                        "error",
                        f"the trail of record {_hex(record_ref)} holds an event of record "
                        f"{_hex(ref)}",
                        event.eventId,
                        {"recordRef": _hex(ref), "leafIndex": leaf},
                    )
                )
                break
        if leaf <= last:
            findings.append(
                Finding(
                    AuditCode.TRAIL_ORDER,
                    "error",
                    f"leaf {leaf} is served after leaf {last}: the trail is not in log order",
                    event.eventId,
                    {"leafIndex": leaf, "previous": last},
                )
            )
        last = max(last, leaf)
        if event.eventId in seen:
            findings.append(
                Finding(
                    AuditCode.EVENT_ID_DUPLICATE,
                    "error",
                    "this event is served twice in the trail",
                    event.eventId,
                    {"leafIndex": leaf},
                )
            )
        seen.add(event.eventId)
    return findings


# --------------------------------------------------------------------------- summaries


def count_findings(findings: Iterable[Finding]) -> dict[Severity, dict[str, int]]:
    """Counts per severity, then per code (codes sorted), for reports."""
    counts: dict[Severity, Counter[str]] = {
        "error": Counter(),
        "review": Counter(),
        "warning": Counter(),
    }
    for finding in findings:
        counts[finding.severity][str(finding.code)] += 1
    return {severity: dict(sorted(c.items())) for severity, c in counts.items()}
