"""The log's running state, and the one function that moves it forward (pure).

An event is judged against what the log held before it: the record's patient and custodian,
the prescription a dispense fills, the service a claim bills, the claim a payment settles.
Ingest and the regulator's audit both keep that state as a :class:`LogState` and apply each
event to it with :func:`apply` — ingest over the part of the log a batch refers to (loaded
from the store, :meth:`LogState.load`-style by the store layer), the audit over the whole log
it mirrors — so that what ingest accepts, the audit cannot call an error: one rule, one
verifier.

What the chain says about institutions is checked by :func:`chain_violations` against
:class:`InstitutionFacts` at the event's ``occurredAt`` (the signer registered, active and of a
kind allowed to sign it; a claim's insurer an active insurer; an access's custodian a
hospital). Consent is judged apart (:func:`ledger.rules.consent_of`): an access is recorded
whatever its consent, and flagged.

Every violation says what it is about (:class:`Subject`): the record, or the earlier event it
refers to, so that ingest can tell a refusal the submitter may be given in full from one that
would disclose another institution's data (:mod:`ledger.visibility`).
"""

from __future__ import annotations

from collections.abc import MutableMapping, MutableSet, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol

from ledger import rules
from ledger.events import (
    EventBase,
    EventType,
    InstitutionKind,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    RecordAccess,
)
from ledger.rules import EventFacts, RecordFacts, RuleViolation

__all__ = [
    "EventFacts",
    "InstitutionFacts",
    "InstitutionStatus",
    "Links",
    "LogState",
    "RecordFacts",
    "Subject",
    "Violation",
    "apply",
    "chain_violations",
    "claim_key",
    "custodian_of",
    "fill_key",
    "institution_queries",
    "paid_key",
    "status_at",
]


# --------------------------------------------------------------------------- chain facts


class InstitutionStatus(NamedTuple):
    """An institution's registration at one moment: ``kind`` NONE when it was not registered
    then, ``active`` False when it was suspended then."""

    kind: InstitutionKind
    active: bool


class InstitutionFacts(Protocol):
    """What the rules need to know of the InstitutionRegistry (block time, unix seconds)."""

    def institution_at(self, address: str, at: int) -> InstitutionStatus:
        """The registration of ``address`` at time ``at``."""
        ...


def status_at(
    kind: InstitutionKind | int,
    registered_at: int,
    history: Sequence[tuple[int, bool]],
    at: int,
) -> InstitutionStatus:
    """An institution's status at ``at`` from its registration and its status history
    (``InstitutionRegistry.historyOf``: ``(since, active)`` in time order), as the contract's
    ``wasActiveAt`` computes it."""
    try:
        known = InstitutionKind(int(kind))
    except ValueError:
        known = InstitutionKind.NONE
    if known is InstitutionKind.NONE or at < registered_at:
        return InstitutionStatus(InstitutionKind.NONE, False)
    active = False
    for since, state in history:
        if since > at:
            break
        active = state
    return InstitutionStatus(known, active)


def custodian_of(event: RecordAccess | PrescriptionIssued) -> str:
    """The custodian an event names for its record: an access's ``custodian``, or the hospital
    that issued a prescription (DESIGN §5: the first event that mentions a record fixes it)."""
    return event.custodian if isinstance(event, RecordAccess) else event.institution


def institution_queries(event: EventBase) -> list[tuple[str, int]]:
    """The ``(address, time)`` questions :func:`chain_violations` asks about ``event``."""
    queries = [(event.institution, event.occurredAt)]
    if isinstance(event, InsuranceClaim):
        queries.append((event.insurer, event.occurredAt))
    elif isinstance(event, RecordAccess) and event.custodian != event.institution:
        queries.append((event.custodian, event.occurredAt))
    return queries


def chain_violations(event: EventBase, facts: InstitutionFacts) -> list[RuleViolation]:
    """What the InstitutionRegistry says against ``event`` at its ``occurredAt``: its signer
    registered, active and of an allowed kind; a claim's insurer an active insurer; an
    access's custodian a registered hospital."""
    at = event.occurredAt
    found: list[RuleViolation] = []
    signer = facts.institution_at(event.institution, at)
    try:
        rules.check_institution(event.event_type, event.institution, signer.kind, signer.active)
    except RuleViolation as exc:
        found.append(type(exc)(f"{exc.detail} at occurredAt {at}", **exc.context))
    if isinstance(event, InsuranceClaim):
        insurer = facts.institution_at(event.insurer, at)
        if not (insurer.kind is InstitutionKind.INSURER and insurer.active):
            found.append(
                rules.InsurerNotRegistered(
                    f"{event.insurer} is not a registered, active insurer at occurredAt {at}",
                    insurer=event.insurer,
                )
            )
    elif isinstance(event, RecordAccess):
        custodian = (
            signer
            if event.custodian == event.institution
            else facts.institution_at(event.custodian, at)
        )
        try:
            rules.check_custodian(event, custodian.kind)
        except RuleViolation as exc:
            found.append(exc)
    return found


# --------------------------------------------------------------------------- the state


class Subject(NamedTuple):
    """What a violation is about, beyond the event itself: a record, or an earlier event."""

    kind: Literal["record", "event"]
    key: bytes


@dataclass(frozen=True)
class Violation:
    """A rule the event breaks, and what of the log's earlier content it depends on
    (``None``: only the event itself)."""

    error: RuleViolation
    about: Subject | None = None


@dataclass(frozen=True)
class Links:
    """How an event hangs in the log, as the store keeps it."""

    #: The record it belongs to (own, or inherited through its reference).
    record_ref: bytes | None
    #: The event it refers to: prescriptionId, serviceRef or claimId.
    ref_event_id: bytes | None
    #: The one-per-log key it uses up: a fill, a service's claim, a claim's payment.
    claim_key: str | None


def fill_key(prescription_id: bytes, fill: int) -> str:
    return f"fill:{prescription_id.hex()}:{fill}"


def claim_key(service_ref: bytes) -> str:
    return f"claim:{service_ref.hex()}"


def paid_key(claim_id: bytes) -> str:
    return f"paid:{claim_id.hex()}"


@dataclass
class LogState:
    """The log so far, as far as the rules look back: events by id (as :class:`EventFacts`),
    records, fills dispensed per prescription, services claimed, amounts paid per claim.

    The audit builds it from the whole log; ingest fills it with the part a batch refers to.
    Each part is a mapping (or set) of immutable values that :func:`apply` only reads, adds
    to and replaces — never changes in place — so that any ``MutableMapping`` will do: plain
    dicts in memory, or a store on disk with a bounded cache (the regulator's monitor, whose
    memory must not grow with the log).
    """

    events: MutableMapping[bytes, EventFacts] = field(default_factory=dict)
    records: MutableMapping[bytes, RecordFacts] = field(default_factory=dict)
    fills: MutableMapping[bytes, Sequence[int]] = field(default_factory=dict)
    claimed: MutableSet[bytes] = field(default_factory=set)
    paid: MutableMapping[bytes, int] = field(default_factory=dict)

    def custodian(self, record_ref: bytes | None) -> str | None:
        """The custodian of a record (None: no such record, or no record)."""
        if record_ref is None:
            return None
        facts = self.records.get(record_ref)
        return facts.custodian if facts is not None else None

    def use_key(self, ref_event_id: bytes, key: str, amount: int = 0) -> None:
        """Remember a key loaded from the store (``fill:…``, ``claim:…``, ``paid:…``)."""
        kind, _, rest = key.partition(":")
        if kind == "fill":
            before = self.fills.get(ref_event_id, ())
            self.fills[ref_event_id] = (*before, int(rest.rpartition(":")[2]))
        elif kind == "claim":
            self.claimed.add(ref_event_id)
        elif kind == "paid":
            self.paid[ref_event_id] = self.paid.get(ref_event_id, 0) + amount


def apply(state: LogState, event: EventBase) -> tuple[list[Violation], Links]:
    """Judge ``event`` against ``state`` and move ``state`` past it.

    Returns the rules it breaks (empty when none) and how it hangs in the log. The state is
    updated even when rules are broken (the audit goes on past a bad event; ingest discards
    the state of a refused batch). The caller deals with a repeated ``eventId`` first.
    """
    violations: list[Violation] = []
    record_ref: bytes | None = None
    ref_event_id: bytes | None = None
    key: str | None = None
    if isinstance(event, RecordAccess | PrescriptionIssued):
        record_ref = event.recordRef
        known = state.records.get(record_ref)
        if known is None:
            state.records[record_ref] = RecordFacts(event.patient, custodian_of(event))
        else:
            try:
                rules.check_record(event, known)
            except RuleViolation as exc:
                violations.append(Violation(exc, Subject("record", record_ref)))
        if isinstance(event, RecordAccess):
            try:
                rules.check_access_reason(event)
            except RuleViolation as exc:
                violations.append(Violation(exc))
    elif isinstance(event, PrescriptionDispensed):
        ref_event_id = event.prescriptionId
        prescription = state.events.get(ref_event_id)
        before = state.fills.get(ref_event_id, ())
        about = Subject("event", ref_event_id)
        try:
            rules.check_dispense(event, prescription, set(before))
        except RuleViolation as exc:
            violations.append(Violation(exc, about))
        state.fills[ref_event_id] = (*before, event.fillNumber)
        if prescription is not None and prescription.event_type is EventType.PRESCRIPTION_ISSUED:
            record_ref = prescription.record_ref
            count, fills = len(before) + 1, prescription.fills
            reported = any(isinstance(v.error, rules.FillsExceeded) for v in violations)
            if not reported and (count > fills or event.fillNumber > fills):
                what = f"dispense number {count}" if count > fills else f"fill {event.fillNumber}"
                violations.append(
                    Violation(
                        rules.FillsExceeded(
                            f"{what} of a prescription for {fills} fill(s)",
                            fills=fills,
                            dispenses=count,
                        ),
                        about,
                    )
                )
        key = fill_key(ref_event_id, event.fillNumber)
    elif isinstance(event, InsuranceClaim):
        ref_event_id = event.serviceRef
        service = state.events.get(ref_event_id)
        already = ref_event_id in state.claimed
        state.claimed.add(ref_event_id)
        try:
            rules.check_claim(event, service, True, already)
        except RuleViolation as exc:
            violations.append(Violation(exc, Subject("event", ref_event_id)))
        record_ref = service.record_ref if service is not None else None
        key = claim_key(ref_event_id)
    elif isinstance(event, InsurancePayment):
        ref_event_id = event.claimId
        claim = state.events.get(ref_event_id)
        paid_before = state.paid.get(ref_event_id)
        about = Subject("event", ref_event_id)
        try:
            rules.check_payment(event, claim, paid_before is not None)
        except RuleViolation as exc:
            violations.append(Violation(exc, about))
        total = (paid_before or 0) + event.amount
        state.paid[ref_event_id] = total
        if claim is not None and claim.event_type is EventType.INSURANCE_CLAIM:
            record_ref = claim.record_ref
            reported = any(isinstance(v.error, rules.PaymentExceedsClaim) for v in violations)
            if not reported and total > claim.amount:
                violations.append(
                    Violation(
                        rules.PaymentExceedsClaim(
                            f"paid {total} in total, above the claimed {claim.amount}",
                            paid=total,
                            claimed=claim.amount,
                        ),
                        about,
                    )
                )
        key = paid_key(ref_event_id)
    state.events[event.eventId] = EventFacts.of(event, record_ref)
    return violations, Links(record_ref, ref_event_id, key)
