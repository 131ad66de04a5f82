"""Ingest: check signed events, store them durably with their leaf index, answer with receipts.

A batch is **all-or-nothing**: every event is checked, and if any is refused nothing is
stored and :class:`BatchRejected` lists every refusal with the index of its event. Resending
an event already stored (same ``eventId``, same content) is not an error: the original
receipt comes back, marked as a duplicate.

Checks that depend on the chain (signer's registration, grants) run before the database
transaction; checks that depend on the log (references, fills, payments, records) run inside
it, after the ingest counter's row lock is taken, so concurrent ingest processes cannot both
accept, say, two payments of one claim. Leaf indexes are handed out under that same lock, so
they are contiguous and the order of commits is the order of the log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from ledger import rules
from ledger.eip712 import Domain, recover, sign_digest
from ledger.errors import LedgerError
from ledger.events import (
    EVENT_MODELS,
    EventBase,
    EventType,
    InstitutionKind,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    RecordAccess,
    SignedEvent,
)
from ledger.rules import ConsentFinding, GrantStatus, RecordFacts
from ledger.store import Store
from ledger.store.db import placeholder, select_in
from ledger.store.models import EventRow, IngestCounter, RecordRow
from ledger.verify import receipt_digest
from ledger.visibility import counterparty

_EVENTS = EventRow.__table__  # type: ignore[attr-defined]
_RECORDS = RecordRow.__table__  # type: ignore[attr-defined]
_COUNTER = IngestCounter.__table__  # type: ignore[attr-defined]

# Ingest's bulk statements go to the driver as plain SQL: with batches of 1,000, building
# parameters row by row through SQLAlchemy cost more than the inserts themselves. The
# placeholders are the driver's (``?`` for sqlite3, ``%s`` for psycopg).
_INSERT_EVENTS = (
    "INSERT INTO events (leaf_index, event_id, event_type, institution, patient, record_ref, "
    "ref_event_id, claim_key, digest, signature, body, occurred_at, received_at, anchor_by, "
    "consent_status, receipt_signature, counterparty) VALUES ({marks})"
)
_EVENT_VALUES = 17
_CONTEXT_COLUMNS = (
    "event_id",
    "event_type",
    "body",
    "digest",
    "record_ref",
    "leaf_index",
    "received_at",
    "anchor_by",
    "receipt_signature",
    "consent_status",
)
_SELECT_CONTEXT = (
    "SELECT event_id, event_type, body, digest, record_ref, leaf_index, received_at, "
    "anchor_by, receipt_signature, consent_status FROM events WHERE event_id IN ({marks})"
)


def _select_in(connection: Connection, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
    """:func:`ledger.store.db.select_in` inside the ingest's transaction."""
    return select_in(connection.exec_driver_sql, sql, values, placeholder(connection.dialect))


class EmptyBatch(LedgerError):
    """A submission with no events."""

    code = "empty-batch"
    status = 400


class BatchTooLarge(LedgerError):
    """More events in one submission than the configured limit."""

    code = "batch-too-large"
    status = 413


class BatchRejected(LedgerError):
    """At least one event of the batch was refused; nothing of the batch was stored."""

    code = "batch-rejected"
    status = 422

    def __init__(self, failures: Mapping[int, LedgerError]) -> None:
        self.failures = dict(sorted(failures.items()))
        first_index, first = next(iter(self.failures.items()))
        detail = f"event {first_index}: {first.detail}"
        if len(self.failures) > 1:
            detail += f" (and {len(self.failures) - 1} more refused)"
        super().__init__(detail)
        # A batch refused for a single reason reports that reason's status.
        self.status = first.status if len(self.failures) == 1 else 422

    def diagnostics(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "detail": self.detail,
            "errors": [{"index": i, **e.diagnostics()} for i, e in self.failures.items()],
        }


class InstitutionLike(Protocol):
    """What ingest needs to know of an institution."""

    @property
    def kind(self) -> InstitutionKind | int: ...

    @property
    def active(self) -> bool: ...


class InstitutionSource(Protocol):
    """Current registration of institutions (the chain, usually through a cache)."""

    def institution(self, address: str) -> InstitutionLike: ...


class GrantSource(Protocol):
    """On-chain grant state (the ConsentRegistry)."""

    def grant_status_at(
        self,
        grant_id: int,
        patient: str,
        grantee: str,
        record_ref: bytes,
        purpose: int,
        time: int,
    ) -> GrantStatus | int: ...


@dataclass(frozen=True)
class Receipt:
    """The operator's signed promise for one event: where it is, and when it will be anchored."""

    event_id: bytes
    event_digest: bytes
    leaf_index: int
    received_at: int
    anchor_by: int
    signature: bytes
    consent: str
    duplicate: bool = False

    def signed_digest(self, domain: Domain) -> bytes:
        """The EIP-712 digest the operator signed (domain: the AuditLog's)."""
        return receipt_digest(
            domain, self.event_digest, self.leaf_index, self.received_at, self.anchor_by
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "eventId": "0x" + self.event_id.hex(),
            "eventDigest": "0x" + self.event_digest.hex(),
            "leafIndex": self.leaf_index,
            "receivedAt": self.received_at,
            "anchorBy": self.anchor_by,
            "signature": "0x" + self.signature.hex(),
            "consent": self.consent,
            "duplicate": self.duplicate,
        }


_NOT_APPLICABLE = ConsentFinding(rules.ConsentStatus.NOT_APPLICABLE)


@dataclass
class _Prepared:
    """An event that passed the checks that need no log: signature, signer, clock, consent."""

    signed: SignedEvent
    digest: bytes
    consent: ConsentFinding
    # Filled in inside the transaction:
    record_ref: bytes | None = None
    ref_event_id: bytes | None = None
    claim_key: str | None = None
    duplicate_of: Mapping[str, Any] | None = None


@dataclass
class _Context:
    """What the log already holds that this batch refers to, plus the batch so far."""

    events: dict[bytes, Mapping[str, Any]] = field(default_factory=dict)
    parsed: dict[bytes, EventBase] = field(default_factory=dict)
    records: dict[bytes, RecordFacts] = field(default_factory=dict)
    new_records: dict[bytes, RecordFacts] = field(default_factory=dict)
    claim_keys: set[str] = field(default_factory=set)

    def event(self, event_id: bytes) -> EventBase | None:
        if event_id in self.parsed:
            return self.parsed[event_id]
        row = self.events.get(event_id)
        if row is None:
            return None
        model = EVENT_MODELS[EventType(row["event_type"])].model_validate_json(row["body"])
        self.parsed[event_id] = model
        return model


def _fill_key(prescription_id: bytes, fill: int) -> str:
    return f"fill:{prescription_id.hex()}:{fill}"


def _paid_key(claim_id: bytes) -> str:
    return f"paid:{claim_id.hex()}"


def _claim_key(service_ref: bytes) -> str:
    return f"claim:{service_ref.hex()}"


def _kind(value: InstitutionKind | int) -> InstitutionKind:
    """The institution kind, treating a value this version does not know as unregistered."""
    try:
        return InstitutionKind(int(value))
    except ValueError:
        return InstitutionKind.NONE


class Ingestor:
    """Checks and stores signed events; the only writer of the events table."""

    def __init__(
        self,
        store: Store,
        domain: Domain,
        operator_key: bytes,
        institutions: InstitutionSource,
        grants: GrantSource,
        *,
        max_batch: int = 1000,
        max_future_skew: int = 300,
        max_merge_delay: int = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.domain = domain
        self._operator_key = operator_key
        self.institutions = institutions
        self.grants = grants
        self.max_batch = max_batch
        self.max_future_skew = max_future_skew
        self.max_merge_delay = max_merge_delay
        self.clock = clock

    # -- checks outside the transaction ---------------------------------------------------

    def _known_digests(self, event_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        with self.store.read() as connection:
            rows = _select_in(
                connection,
                "SELECT event_id, digest FROM events WHERE event_id IN ({marks})",
                list(set(event_ids)),
            )
            return {bytes(event_id): bytes(value) for event_id, value in rows}

    def _prepare(self, signed: SignedEvent, event_digest: bytes, now: int) -> _Prepared:
        event = signed.event
        rules.check_signer(event, recover(event_digest, signed.signature))
        info = self.institutions.institution(event.institution)
        rules.check_institution(signed.type, event.institution, _kind(info.kind), info.active)
        rules.check_not_future(event, now, self.max_future_skew)
        consent = _NOT_APPLICABLE
        if isinstance(event, RecordAccess):
            rules.check_access_reason(event)
            status = None
            if rules.needs_grant_check(event):
                status = GrantStatus(
                    int(
                        self.grants.grant_status_at(
                            event.grantId,
                            event.patient,
                            event.institution,
                            event.recordRef,
                            int(event.purpose),
                            event.occurredAt,
                        )
                    )
                )
            consent = rules.consent_of(event, status)
        elif isinstance(event, InsuranceClaim):
            insurer = self.institutions.institution(event.insurer)
            if not (_kind(insurer.kind) == InstitutionKind.INSURER and insurer.active):
                raise rules.InsurerNotRegistered(
                    f"{event.insurer} is not a registered, active insurer",
                    insurer=event.insurer,
                )
        return _Prepared(signed=signed, digest=event_digest, consent=consent)

    # -- checks inside the transaction ----------------------------------------------------

    @staticmethod
    def _load_context(connection: Connection, batch: Sequence[_Prepared]) -> _Context:
        ids: set[bytes] = set()
        refs: set[bytes] = set()
        for item in batch:
            event = item.signed.event
            ids.add(event.eventId)
            if isinstance(event, PrescriptionDispensed):
                ids.add(event.prescriptionId)
            elif isinstance(event, InsuranceClaim):
                ids.add(event.serviceRef)
            elif isinstance(event, InsurancePayment):
                ids.add(event.claimId)
            if isinstance(event, RecordAccess | PrescriptionIssued):
                refs.add(event.recordRef)
        context = _Context()
        if ids:
            wanted = list(ids)
            rows = _select_in(
                connection,
                _SELECT_CONTEXT,
                wanted,
            )
            context.events = {
                bytes(r[0]): dict(zip(_CONTEXT_COLUMNS, r, strict=True)) for r in rows
            }
            keys = _select_in(
                connection,
                "SELECT claim_key FROM events WHERE ref_event_id IN ({marks}) "
                "AND claim_key IS NOT NULL",
                wanted,
            )
            context.claim_keys = {key for (key,) in keys}
        if refs:
            rows = _select_in(
                connection,
                "SELECT record_ref, patient, custodian FROM records WHERE record_ref IN ({marks})",
                list(refs),
            )
            for ref, patient, custodian in rows:
                context.records[bytes(ref)] = RecordFacts(patient, custodian)
        return context

    @staticmethod
    def _check_in_log(item: _Prepared, context: _Context) -> None:
        event = item.signed.event
        existing = context.events.get(event.eventId)
        if existing is not None:
            if bytes(existing["digest"]) != item.digest:
                raise rules.EventIdConflict(
                    f"event 0x{event.eventId.hex()} exists with different content",
                    event_id="0x" + event.eventId.hex(),
                )
            item.duplicate_of = existing
            return
        if isinstance(event, RecordAccess | PrescriptionIssued):
            ref = event.recordRef
            facts = context.new_records.get(ref) or context.records.get(ref)
            rules.check_record(event, facts)
            item.record_ref = ref
            custodian = event.custodian if isinstance(event, RecordAccess) else None
            if facts is None:
                context.new_records[ref] = RecordFacts(event.patient, custodian)
            elif facts.custodian is None and custodian is not None:
                context.new_records[ref] = RecordFacts(facts.patient, custodian)
        elif isinstance(event, PrescriptionDispensed):
            prescription = context.event(event.prescriptionId)
            fills = {
                n
                for n in range(1, event.fillNumber + 1)
                if _fill_key(event.prescriptionId, n) in context.claim_keys
            }
            rules.check_dispense(event, prescription, fills)
            item.ref_event_id = event.prescriptionId
            item.claim_key = _fill_key(event.prescriptionId, event.fillNumber)
            item.record_ref = _record_of(context, event.prescriptionId)
        elif isinstance(event, InsuranceClaim):
            claimed = _claim_key(event.serviceRef) in context.claim_keys
            rules.check_claim(event, context.event(event.serviceRef), True, claimed)
            item.ref_event_id = event.serviceRef
            item.claim_key = _claim_key(event.serviceRef)
            item.record_ref = _record_of(context, event.serviceRef)
        elif isinstance(event, InsurancePayment):
            paid = _paid_key(event.claimId) in context.claim_keys
            rules.check_payment(event, context.event(event.claimId), paid)
            item.ref_event_id = event.claimId
            item.claim_key = _paid_key(event.claimId)
            item.record_ref = _record_of(context, event.claimId)
        # Later events of the batch may refer to this one.
        context.parsed[event.eventId] = event
        context.events[event.eventId] = {
            "digest": item.digest,
            "record_ref": item.record_ref,
            "event_type": event.event_type.value,
        }
        if item.claim_key is not None:
            context.claim_keys.add(item.claim_key)

    # -- the transaction ------------------------------------------------------------------

    def submit(self, batch: Sequence[SignedEvent]) -> list[Receipt]:
        """Check and store ``batch`` atomically; one receipt per event, in order."""
        if not batch:
            raise EmptyBatch("the batch holds no events")
        if len(batch) > self.max_batch:
            raise BatchTooLarge(
                f"{len(batch)} events in one batch; the limit is {self.max_batch}",
                limit=self.max_batch,
            )
        now = int(self.clock())
        known = self._known_digests([signed.event_id for signed in batch])
        prepared: list[_Prepared] = []
        failures: dict[int, LedgerError] = {}
        for index, signed in enumerate(batch):
            try:
                event_digest = signed.digest(self.domain)
                if known.get(signed.event_id) == event_digest:
                    # Resent as it was stored: the original receipt, whatever changed since
                    # (but only for the institution's own signature).
                    rules.check_signer(signed.event, recover(event_digest, signed.signature))
                    prepared.append(_Prepared(signed, event_digest, _NOT_APPLICABLE))
                else:
                    prepared.append(self._prepare(signed, event_digest, now))
            except LedgerError as exc:
                failures[index] = exc
        if failures:
            self._reject(batch, failures)
        try:
            with self.store.write() as connection:
                return self._store(connection, prepared, now)
        except IntegrityError as exc:  # a constraint caught what the checks should have
            raise BatchRejected(
                {0: rules.EventIdConflict(f"the batch conflicts with the log: {exc.orig}")}
            ) from exc

    def _reject(self, batch: Sequence[SignedEvent], failures: dict[int, LedgerError]) -> NoReturn:
        """Refuse a batch some events of which failed the checks outside the log, listing
        also what the log refuses in the others (so the refusal names every bad event)."""
        items: dict[int, _Prepared] = {}
        for index, signed in enumerate(batch):
            with suppress(LedgerError):
                items[index] = _Prepared(signed, signed.digest(self.domain), _NOT_APPLICABLE)
        try:
            with self.store.read() as connection:
                context = self._load_context(connection, list(items.values()))
        except LedgerError:  # the store is unreachable: report what is known
            raise BatchRejected(failures) from None
        for index, item in items.items():
            try:
                self._check_in_log(item, context)
            except LedgerError as exc:
                failures.setdefault(index, exc)
        raise BatchRejected(failures)

    def _store(self, connection: Connection, batch: list[_Prepared], now: int) -> list[Receipt]:
        next_index = connection.execute(
            select(_COUNTER.c.next_index).where(_COUNTER.c.id == 1).with_for_update()
        ).scalar_one()
        context = self._load_context(connection, batch)
        failures: dict[int, LedgerError] = {}
        for index, item in enumerate(batch):
            try:
                self._check_in_log(item, context)
            except LedgerError as exc:
                failures[index] = exc
        if failures:
            raise BatchRejected(failures)

        receipts: list[Receipt] = []
        rows: list[tuple[Any, ...]] = []
        seen: dict[bytes, Receipt] = {}
        anchor_by = now + self.max_merge_delay
        for item in batch:
            event = item.signed.event
            if item.duplicate_of is not None and "leaf_index" in item.duplicate_of:
                original = item.duplicate_of
                receipts.append(
                    Receipt(
                        event_id=event.eventId,
                        event_digest=item.digest,
                        leaf_index=original["leaf_index"],
                        received_at=original["received_at"],
                        anchor_by=original["anchor_by"],
                        signature=bytes(original["receipt_signature"]),
                        consent=original["consent_status"],
                        duplicate=True,
                    )
                )
                continue
            if item.duplicate_of is not None:  # repeated within this very batch
                first = seen[event.eventId]
                receipts.append(
                    Receipt(**{**first.__dict__, "duplicate": True})  # same promise
                )
                continue
            leaf_index = next_index
            next_index += 1
            signature = sign_digest(
                receipt_digest(self.domain, item.digest, leaf_index, now, anchor_by),
                self._operator_key,
            )
            receipt = Receipt(
                event_id=event.eventId,
                event_digest=item.digest,
                leaf_index=leaf_index,
                received_at=now,
                anchor_by=anchor_by,
                signature=signature,
                consent=item.consent.label,
            )
            seen[event.eventId] = receipt
            receipts.append(receipt)
            rows.append(
                (
                    leaf_index,
                    event.eventId,
                    event.event_type.value,
                    event.institution,
                    event.patient,
                    item.record_ref,
                    item.ref_event_id,
                    item.claim_key,
                    item.digest,
                    item.signed.signature,
                    event.model_dump_json(),
                    event.occurredAt,
                    now,
                    anchor_by,
                    item.consent.label,
                    signature,
                    counterparty(event),
                )
            )
        if rows:
            marks = ", ".join([placeholder(connection.dialect)] * _EVENT_VALUES)
            connection.exec_driver_sql(_INSERT_EVENTS.format(marks=marks), rows)
            self._store_records(connection, context, rows[0][0])
            connection.execute(
                _COUNTER.update().where(_COUNTER.c.id == 1).values(next_index=next_index)
            )
        return receipts

    @staticmethod
    def _store_records(connection: Connection, context: _Context, first_leaf: int) -> None:
        inserts = []
        for ref, facts in context.new_records.items():
            if ref in context.records:  # known record: its custodian becomes known now
                connection.execute(
                    _RECORDS.update()
                    .where(_RECORDS.c.record_ref == ref, _RECORDS.c.custodian.is_(None))
                    .values(custodian=facts.custodian)
                )
            else:
                inserts.append(
                    {
                        "record_ref": ref,
                        "patient": facts.patient,
                        "custodian": facts.custodian,
                        "first_leaf": first_leaf,
                    }
                )
        if inserts:
            connection.execute(_RECORDS.insert(), inserts)


def _record_of(context: _Context, event_id: bytes) -> bytes | None:
    row = context.events.get(event_id)
    if row is None or row.get("record_ref") is None:
        return None
    return bytes(row["record_ref"])
