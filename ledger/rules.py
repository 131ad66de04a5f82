"""The rules events must obey, as pure functions over typed values (no I/O).

The same checks refuse bad events at ingest and, in the regulator's scripts, report events
that should never have been accepted. Each violation is a distinct :class:`RuleViolation`
subclass with a stable ``code`` (what it means, its HTTP status and its severity as a finding:
:data:`ledger.codes.CODES`); consent problems are *not* violations: an access is recorded
whatever its consent state, and flagged with a :class:`ConsentStatus`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import NamedTuple, Protocol, runtime_checkable

from ledger.errors import LedgerError
from ledger.events import (
    SIGNER_KINDS,
    EventBase,
    EventType,
    InstitutionKind,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    RecordAccess,
)
from ledger.visibility import counterparty

ZERO32 = bytes(32)


class RuleViolation(LedgerError):
    code = "rule-violation"


class SignerMismatch(RuleViolation):
    code = "signer-mismatch"


class InstitutionUnregistered(RuleViolation):
    code = "institution-unregistered"


class InstitutionSuspended(RuleViolation):
    code = "institution-suspended"


class InstitutionWrongKind(RuleViolation):
    code = "institution-wrong-kind"


class OccurredInFuture(RuleViolation):
    code = "occurred-in-future"


class OccurredTooLongAgo(RuleViolation):
    code = "occurred-too-long-ago"


class CustodianNotHospital(RuleViolation):
    code = "custodian-not-hospital"


class EventIdConflict(RuleViolation):
    code = "event-id-conflict"


class PrescriptionUnknown(RuleViolation):
    code = "prescription-unknown"


class PrescriptionPatientMismatch(RuleViolation):
    code = "prescription-patient-mismatch"


class PrescriptionExpired(RuleViolation):
    code = "prescription-expired"


class FillsExceeded(RuleViolation):
    code = "fills-exceeded"


class FillAlreadyDispensed(RuleViolation):
    code = "fill-already-dispensed"


class ServiceUnknown(RuleViolation):
    code = "service-unknown"


class ServicePatientMismatch(RuleViolation):
    code = "service-patient-mismatch"


class ServiceNotClaimable(RuleViolation):
    code = "service-not-claimable"


class ServiceNotClaimant(RuleViolation):
    code = "service-not-claimant"


class ServiceAlreadyClaimed(RuleViolation):
    code = "service-already-claimed"


class DispenseBeforePrescription(RuleViolation):
    code = "dispense-before-prescription"


class InsurerNotRegistered(RuleViolation):
    code = "insurer-not-registered"


class ClaimUnknown(RuleViolation):
    code = "claim-unknown"


class ClaimPatientMismatch(RuleViolation):
    code = "claim-patient-mismatch"


class PaymentWrongInsurer(RuleViolation):
    code = "payment-wrong-insurer"


class PaymentWrongPayee(RuleViolation):
    code = "payment-wrong-payee"


class ClaimAlreadyPaid(RuleViolation):
    code = "claim-already-paid"


class PaymentExceedsClaim(RuleViolation):
    code = "payment-exceeds-claim"


class ReasonRequired(RuleViolation):
    code = "reason-required"


class CustodianMismatch(RuleViolation):
    code = "custodian-mismatch"


class RecordPatientMismatch(RuleViolation):
    code = "record-patient-mismatch"


class GrantStatus(IntEnum):
    """``ConsentRegistry.GrantStatus``, value for value (the last two only from version 2,
    ``ConsentRegistryV2``, which checks the patient's signature when asked)."""

    VALID = 0
    NOT_FOUND = 1
    NOT_YET_GRANTED = 2
    WRONG_PATIENT = 3
    WRONG_GRANTEE = 4
    OUT_OF_SCOPE = 5
    PURPOSE_NOT_COVERED = 6
    NOT_YET_VALID = 7
    EXPIRED = 8
    REVOKED = 9
    #: Version 2: the grant's signature is not its patient's (key or ERC-1271 wallet).
    INVALID_SIGNATURE = 10
    #: Version 2: the commitment reached the chain after the grant's deadline.
    COMMITTED_TOO_LATE = 11

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class GrantQuery(NamedTuple):
    """The question ``ConsentRegistry.grantStatusAt`` answers for one access."""

    grant_id: int
    patient: str
    grantee: str
    record_ref: bytes
    purpose: int
    at: int


class GrantSource(Protocol):
    """On-chain grant state: whether a grant covered an access at ``time`` (the
    ConsentRegistry's ``grantStatusAt``; what ingest asks, and version 2's grant source keeps
    version 1's grants judged by)."""

    def grant_status_at(
        self,
        grant_id: int,
        patient: str,
        grantee: str,
        record_ref: bytes,
        purpose: int,
        time: int,
    ) -> GrantStatus | int: ...


@runtime_checkable
class GrantBatchSource(GrantSource, Protocol):
    """A grant source that answers many questions at once (one JSON-RPC batch): what ingest
    asks of it for a batch's accesses."""

    def grant_statuses(self, queries: Sequence[GrantQuery]) -> list[GrantStatus]: ...


class ConsentStatus(StrEnum):
    """How an access stood with consent when it happened."""

    #: Not an access event (prescriptions, claims, payments need no grant).
    NOT_APPLICABLE = "not-applicable"
    #: The record's custodian's own staff (treatment relationship): no grant needed.
    CUSTODIAN = "custodian"
    #: Another institution, under a grant valid on chain at ``occurredAt``.
    COVERED = "covered"
    #: Another institution without a grant: break-glass, always listed for review.
    EMERGENCY = "emergency"
    #: Another institution naming a grant that did not cover the access.
    NOT_COVERED = "not-covered"


@dataclass(frozen=True)
class ConsentFinding:
    """The consent status of an access, and why when not covered."""

    status: ConsentStatus
    grant_status: GrantStatus | None = None

    @property
    def label(self) -> str:
        """``covered``, ``emergency``, ``custodian`` or ``not-covered:<reason>``."""
        if self.status is ConsentStatus.NOT_COVERED and self.grant_status is not None:
            return f"{self.status.value}:{self.grant_status.label}"
        return self.status.value

    @classmethod
    def parse(cls, label: str) -> ConsentFinding:
        """The inverse of :attr:`label`; ``ValueError`` for anything it would not produce."""
        status_text, colon, reason = label.partition(":")
        try:
            status = ConsentStatus(status_text)
        except ValueError:
            raise ValueError(f"unknown consent status {label!r}") from None
        if status is not ConsentStatus.NOT_COVERED:
            if colon:
                raise ValueError(f"consent status {status_text!r} takes no reason: {label!r}")
            return cls(status)
        grant = {g.label: g for g in GrantStatus if g is not GrantStatus.VALID}.get(reason)
        if grant is None:
            raise ValueError(f"not-covered needs a known reason, got {label!r}")
        return cls(status, grant)


@dataclass(frozen=True, slots=True)
class RecordFacts:
    """What the log already says about a record: whose it is and who holds it (fixed by the
    record's first event: an access's custodian, or the hospital that issued a prescription)."""

    patient: str
    custodian: str


_new = object.__new__
_set = object.__setattr__


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What the rules need to remember of a logged event (a few fields, not the event)."""

    event_type: EventType
    patient: str
    institution: str
    #: The other institution the event names (:func:`ledger.visibility.counterparty`).
    counterparty: str | None
    occurredAt: int  # noqa: N815 - the event's field name
    #: The record the event belongs to: its own ``recordRef``, or inherited by reference.
    record_ref: bytes | None = None
    #: PrescriptionIssued
    fills: int = 0
    validUntil: int = 0  # noqa: N815 - the event's field name
    #: InsuranceClaim
    insurer: str | None = None
    amount: int = 0

    @classmethod
    def of(cls, event: EventBase, record_ref: bytes | None = None) -> EventFacts:
        """The facts of ``event``, belonging to ``record_ref``."""
        fills = valid_until = amount = 0
        insurer = None
        if isinstance(event, PrescriptionIssued):
            fills, valid_until = event.fills, event.validUntil
        elif isinstance(event, InsuranceClaim):
            insurer, amount = event.insurer, event.amount
        # What the frozen dataclass's __init__ does, without its keyword call: one per event
        # of the log in the audit's replay and in ingest (issue 15).
        facts = _new(cls)
        _set(facts, "event_type", event.event_type)
        _set(facts, "patient", event.patient)
        _set(facts, "institution", event.institution)
        _set(facts, "counterparty", counterparty(event))
        _set(facts, "occurredAt", event.occurredAt)
        _set(facts, "record_ref", record_ref)
        _set(facts, "fills", fills)
        _set(facts, "validUntil", valid_until)
        _set(facts, "insurer", insurer)
        _set(facts, "amount", amount)
        return facts


def _facts(event: EventFacts | EventBase | None) -> EventFacts | None:
    return EventFacts.of(event) if isinstance(event, EventBase) else event


def check_signer(event: EventBase, signer: str) -> None:
    """The recovered signer must be the institution the event names."""
    if signer != event.institution:
        raise SignerMismatch(
            f"the signature is by {signer}, not by the event's institution {event.institution}",
            signer=signer,
            institution=event.institution,
        )


def check_institution(
    event_type: EventType, institution: str, kind: InstitutionKind, active: bool
) -> None:
    """The signer must be registered, active, and of a kind allowed for ``event_type``."""
    if kind == InstitutionKind.NONE:
        raise InstitutionUnregistered(
            f"{institution} is not a registered institution", institution=institution
        )
    if not active:
        raise InstitutionSuspended(f"{institution} is suspended", institution=institution)
    allowed = SIGNER_KINDS[event_type]
    if kind not in allowed:
        names = " or ".join(sorted(k.name.lower() for k in allowed))
        raise InstitutionWrongKind(
            f"a {kind.name.lower()} may not sign {event_type.value} (only a {names})",
            institution=institution,
            kind=kind.name.lower(),
        )


def check_not_future(event: EventBase, now: int, max_skew: int) -> None:
    """``occurredAt`` may be at most ``max_skew`` seconds ahead of ``now``."""
    if event.occurredAt > now + max_skew:
        raise OccurredInFuture(
            f"occurredAt {event.occurredAt} is more than {max_skew} s after now ({now})",
            occurred_at=event.occurredAt,
            now=now,
        )


def check_not_backdated(event: EventBase, now: int, max_backdate: int) -> None:
    """``occurredAt`` may be at most ``max_backdate`` seconds before ``now``."""
    if event.occurredAt < now - max_backdate:
        raise OccurredTooLongAgo(
            f"occurredAt {event.occurredAt} is more than {max_backdate} s before now ({now})",
            occurred_at=event.occurredAt,
            now=now,
        )


def check_record(event: RecordAccess | PrescriptionIssued, facts: RecordFacts | None) -> None:
    """A record's events agree on its patient and (for accesses) on its custodian, which the
    record's first event fixed."""
    if facts is None:
        return
    if facts.patient != event.patient:
        raise RecordPatientMismatch(
            f"record 0x{event.recordRef.hex()} belongs to another patient",
            record_ref="0x" + event.recordRef.hex(),
        )
    if isinstance(event, RecordAccess) and facts.custodian != event.custodian:
        raise CustodianMismatch(
            f"record 0x{event.recordRef.hex()} is held by {facts.custodian}, not {event.custodian}",
            record_ref="0x" + event.recordRef.hex(),
            custodian=facts.custodian,
        )


def check_custodian(access: RecordAccess, kind: InstitutionKind) -> None:
    """The custodian an access names must be a hospital (``kind``: its registration at
    ``occurredAt``, NONE when it was not registered then)."""
    if kind != InstitutionKind.HOSPITAL:
        what = "not registered" if kind == InstitutionKind.NONE else f"a {kind.name.lower()}"
        raise CustodianNotHospital(
            f"the custodian {access.custodian} is {what} at occurredAt {access.occurredAt}: "
            "only a hospital holds records",
            custodian=access.custodian,
        )


def check_access_reason(access: RecordAccess) -> None:
    """A break-glass access (another institution, no grant) must say why."""
    emergency = access.institution != access.custodian and access.grantId == 0
    if emergency and access.reasonHash == ZERO32:
        raise ReasonRequired("an emergency access (no grant, not the custodian) needs a reasonHash")


def consent_of(access: RecordAccess, grant_status: GrantStatus | None) -> ConsentFinding:
    """The consent status of ``access`` given its grant's on-chain status at ``occurredAt``.

    ``grant_status`` is required (not ``None``) exactly when the access is by another
    institution than the custodian and names a grant.
    """
    if access.institution == access.custodian:
        return ConsentFinding(ConsentStatus.CUSTODIAN)
    if access.grantId == 0:
        return ConsentFinding(ConsentStatus.EMERGENCY)
    if grant_status is None:
        raise ValueError("a grant-based access needs the grant's status to be judged")
    if grant_status is GrantStatus.VALID:
        return ConsentFinding(ConsentStatus.COVERED)
    return ConsentFinding(ConsentStatus.NOT_COVERED, grant_status)


def needs_grant_check(access: RecordAccess) -> bool:
    """Whether the access's consent depends on its grant's on-chain state."""
    return access.institution != access.custodian and access.grantId != 0


def grant_query(access: RecordAccess) -> GrantQuery | None:
    """The grant question an access raises (None when its consent needs no grant)."""
    if not needs_grant_check(access):
        return None
    return GrantQuery(
        access.grantId,
        access.patient,
        access.institution,
        access.recordRef,
        int(access.purpose),
        access.occurredAt,
    )


def check_dispense(
    dispense: PrescriptionDispensed,
    prescription: EventFacts | EventBase | None,
    dispensed_fills: Collection[int],
) -> None:
    """A dispense needs a known prescription of the same patient, still valid, with a fill left."""
    prescription = _facts(prescription)
    if prescription is None or prescription.event_type is not EventType.PRESCRIPTION_ISSUED:
        raise PrescriptionUnknown(
            f"no prescription 0x{dispense.prescriptionId.hex()} in the log",
            prescription_id="0x" + dispense.prescriptionId.hex(),
        )
    if prescription.patient != dispense.patient:
        raise PrescriptionPatientMismatch("the prescription is for another patient")
    if dispense.occurredAt < prescription.occurredAt:
        raise DispenseBeforePrescription(
            f"dispensed at {dispense.occurredAt}, before the prescription "
            f"({prescription.occurredAt})"
        )
    if dispense.occurredAt > prescription.validUntil:
        raise PrescriptionExpired(
            f"dispensed at {dispense.occurredAt}, after validUntil {prescription.validUntil}",
            valid_until=prescription.validUntil,
        )
    if dispense.fillNumber > prescription.fills:
        raise FillsExceeded(
            f"fill {dispense.fillNumber} of a prescription for {prescription.fills} fill(s)",
            fills=prescription.fills,
        )
    if dispense.fillNumber in dispensed_fills:
        raise FillAlreadyDispensed(
            f"fill {dispense.fillNumber} of this prescription was dispensed already",
            fill_number=dispense.fillNumber,
        )


#: Events that are services one can bill for.
SERVICE_TYPES = (RecordAccess, PrescriptionIssued, PrescriptionDispensed)
SERVICE_EVENT_TYPES = frozenset(t.event_type for t in SERVICE_TYPES)


def check_claim(
    claim: InsuranceClaim,
    service: EventFacts | EventBase | None,
    insurer_active: bool,
    already_claimed: bool = False,
) -> None:
    """A claim bills, once, a service event in the log that the claimant gave to the same
    patient, to a registered insurer."""
    service = _facts(service)
    if service is None:
        raise ServiceUnknown(
            f"no service event 0x{claim.serviceRef.hex()} in the log",
            service_ref="0x" + claim.serviceRef.hex(),
        )
    if service.event_type not in SERVICE_EVENT_TYPES:
        raise ServiceNotClaimable(
            f"event 0x{claim.serviceRef.hex()} is a {service.event_type.value}, not a service"
        )
    if service.patient != claim.patient:
        raise ServicePatientMismatch("the service event is for another patient")
    if service.institution != claim.institution:
        raise ServiceNotClaimant(
            f"the service was given by {service.institution}, not the claimant {claim.institution}"
        )
    if already_claimed:
        raise ServiceAlreadyClaimed(f"service 0x{claim.serviceRef.hex()} was claimed already")
    if not insurer_active:
        raise InsurerNotRegistered(
            f"{claim.insurer} is not a registered, active insurer", insurer=claim.insurer
        )


def check_payment(
    payment: InsurancePayment, claim: EventFacts | EventBase | None, already_paid: bool
) -> None:
    """A payment settles a known claim once, by its insurer, to its claimant, at most in full."""
    claim = _facts(claim)
    if claim is None or claim.event_type is not EventType.INSURANCE_CLAIM:
        raise ClaimUnknown(
            f"no claim 0x{payment.claimId.hex()} in the log",
            claim_id="0x" + payment.claimId.hex(),
        )
    if claim.patient != payment.patient:
        raise ClaimPatientMismatch("the claim is for another patient")
    if claim.insurer != payment.institution:
        raise PaymentWrongInsurer(
            f"the claim was made to {claim.insurer}, not {payment.institution}"
        )
    if claim.institution != payment.payee:
        raise PaymentWrongPayee(f"the claimant is {claim.institution}, not {payment.payee}")
    if already_paid:
        raise ClaimAlreadyPaid(f"claim 0x{payment.claimId.hex()} was paid already")
    if payment.amount > claim.amount:
        raise PaymentExceedsClaim(
            f"paid {payment.amount}, above the claimed {claim.amount}",
            paid=payment.amount,
            claimed=claim.amount,
        )
