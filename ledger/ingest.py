"""Ingest: check signed events, store them durably with their leaf index, answer with receipts.

A batch is **all-or-nothing**: every event is checked, and if any is refused nothing is
stored and :class:`BatchRejected` lists the refusals with the index of their event. Resending
an event already stored (same ``eventId``, same content) is not an error: the original
receipt comes back, marked as a duplicate.

Checks that depend on the chain (the signer's registration now and at ``occurredAt``, a
claim's insurer, an access's custodian, grants) and on the clock (``occurredAt`` within
``max_backdate`` before and ``max_future_skew`` after now) run before the database
transaction; checks that depend on the log run inside it, after the ingest counter's row lock
is taken, so concurrent ingest processes cannot both accept, say, two payments of one claim.
They are :func:`ledger.logstate.apply`, the very rules the regulator's audit replays, over the
part of the log the batch refers to. Leaf indexes are handed out under that same lock, so they
are contiguous and the order of commits is the order of the log.

**What a refusal may say** (issue 12): never a value from another institution's events, and
never something that differs with facts the submitter may not know (:mod:`ledger.visibility`).
The log-dependent checks are judged twice when they fail: once against the log as it is
(whether to store), once against the submitter's own view of it — the records it holds and the
events it took part in, every other fact assumed favourable. Refusals found in that view are
reported with their index and reason: they depend on nothing hidden. A batch refused only for
facts outside that view gets one uniform answer, ``log-conflict``, naming no event — exactly
the one bit "stored or not" that submitting the batch for real would give, and which then
leaves a trace. So a batch with one invalid event can no longer be used to probe, untraced,
another institution's record (its patient, its custodian), prescription (its date, its fills)
or claim (its insurer, its amount).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NoReturn, Protocol

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError

from ledger import merkle, rules
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
from ledger.logstate import (
    InstitutionStatus,
    LogState,
    Subject,
    Violation,
    apply,
    chain_violations,
)
from ledger.rules import ConsentFinding, EventFacts, GrantSource, GrantStatus, RecordFacts
from ledger.store import Store
from ledger.store.db import insert_rows, select_any
from ledger.store.models import EventRow, IngestCounter, RecordRow
from ledger.verify import (
    ReceiptBatchProof,
    receipt_batch_digest,
    receipt_leaves,
    signed_receipt_digest,
)
from ledger.visibility import counterparty, institution_may_see

log = logging.getLogger("medtrail.ingest")

_EVENTS = EventRow.__table__  # type: ignore[attr-defined]
_RECORDS = RecordRow.__table__  # type: ignore[attr-defined]
_COUNTER = IngestCounter.__table__  # type: ignore[attr-defined]
#: The counter's row, locked for the batch (the leaf indexes are handed out under it), and its
#: update: built once (each costs ~15-20 µs of SQLAlchemy to build, once per batch).
_LOCK_COUNTER = select(_COUNTER.c.next_index).where(_COUNTER.c.id == 1).with_for_update()
_ADVANCE_COUNTER = (
    _COUNTER.update().where(_COUNTER.c.id == 1).values(next_index=bindparam("next_index"))
)

# Ingest's bulk statements go to the driver as plain SQL: with batches of 1,000, building
# parameters row by row through SQLAlchemy cost more than the inserts themselves. ``{any}``
# matches a list of values (:func:`ledger.store.db.select_any`).
_EVENT_COLUMNS = (
    "leaf_index",
    "event_id",
    "event_type",
    "institution",
    "patient",
    "record_ref",
    "ref_event_id",
    "claim_key",
    "digest",
    "signature",
    "body",
    "occurred_at",
    "received_at",
    "anchor_by",
    "consent_status",
    "receipt_signature",
    "counterparty",
    "receipt_batch_first",
    "receipt_batch_count",
    "receipt_batch_root",
    "receipt_path",
)
_STORED_COLUMNS = (
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
    "institution",
    "counterparty",
    "receipt_batch_first",
    "receipt_batch_count",
    "receipt_batch_root",
    "receipt_path",
)
_SELECT_STORED = (
    "SELECT event_id, event_type, body, digest, record_ref, leaf_index, received_at, "
    "anchor_by, receipt_signature, consent_status, institution, counterparty, "
    "receipt_batch_first, receipt_batch_count, receipt_batch_root, receipt_path "
    "FROM events WHERE event_id {any}"
)
_SELECT_DIGESTS = "SELECT event_id, digest FROM events WHERE event_id {any}"
_SELECT_KEYS = (
    "SELECT ref_event_id, claim_key, event_type, body FROM events "
    "WHERE ref_event_id {any} AND claim_key IS NOT NULL"
)
_RECORD_COLUMNS = ("record_ref", "patient", "custodian", "first_leaf")
_SELECT_RECORDS = "SELECT record_ref, patient, custodian FROM records WHERE record_ref {any}"


class EmptyBatch(LedgerError):
    """A submission with no events."""

    code = "empty-batch"
    status = 400


class BatchTooLarge(LedgerError):
    """More events in one submission than the configured limit."""

    code = "batch-too-large"
    status = 413


class LogConflict(LedgerError):
    """The batch conflicts with what the log holds beyond what the submitter may see: a record
    of another patient or held by another custodian, a prescription that does not admit the
    dispense, a service or claim that is not the submitter's to bill or pay, an ``eventId``
    in use. Which event, and why, is not said (it would disclose another institution's data):
    submit the events one at a time to find it."""

    code = "log-conflict"
    status = 409


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

    def refusal_codes(self) -> list[str]:
        """The code of each refusal (for metrics)."""
        return [error.code for error in self.failures.values()]


#: What a refused event of each type may have run into beyond the submitter's view (one
#: sentence per type, the same whatever the hidden facts are).
_HIDDEN_REASONS: Final[Mapping[EventType, str]] = {
    EventType.RECORD_ACCESS: (
        "its record belongs to another patient or is held by another custodian than it names"
    ),
    EventType.PRESCRIPTION_ISSUED: "its record belongs to another patient",
    EventType.PRESCRIPTION_DISPENSED: (
        "its prescription is unknown, another patient's, not valid at occurredAt, or this fill "
        "was dispensed already or is beyond its fills"
    ),
    EventType.INSURANCE_CLAIM: (
        "its service is unknown, another patient's, not a service you gave, or claimed already"
    ),
    EventType.INSURANCE_PAYMENT: (
        "its claim is unknown, another patient's, not made to you or to that payee, paid "
        "already, or for less"
    ),
}


class HiddenConflict(BatchRejected):
    """The batch conflicts with the log only where the submitters may not see: one uniform
    refusal that names no event of a larger batch (see the module's docstring).

    :attr:`withheld` holds the real refusals, for the operator's logs and the tests: it is
    **never** shown to the submitter (:meth:`diagnostics` does not carry it).
    """

    def __init__(self, batch: Sequence[SignedEvent], withheld: Mapping[int, LedgerError]) -> None:
        self.withheld = dict(sorted(withheld.items()))
        if len(batch) == 1:
            event = batch[0].event
            what = (
                f"the {event.event_type.value} 0x{event.eventId.hex()} cannot be logged: "
                f"{_HIDDEN_REASONS[event.event_type]}, or its eventId is in use"
            )
        else:
            what = (
                "at least one event of the batch conflicts with what the log holds beyond what "
                "your institution may see (another patient's or custodian's record, a "
                "prescription that does not admit the dispense, a service or claim that is not "
                "yours to bill or pay, or an eventId in use); submit the events one at a time "
                "to find which"
            )
        error = LogConflict(what + "; nothing was stored")
        LedgerError.__init__(self, error.detail)
        self.failures = {}
        self.status = LogConflict.status
        self._error = error

    def diagnostics(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "detail": self.detail,
            "errors": [self._error.diagnostics()],
        }

    def refusal_codes(self) -> list[str]:
        return [self._error.code]


class InstitutionLike(Protocol):
    """What ingest needs to know of an institution now."""

    @property
    def kind(self) -> InstitutionKind | int: ...

    @property
    def active(self) -> bool: ...


class InstitutionSource(Protocol):
    """Registration of institutions, now and at any time (the chain, through a cache)."""

    def institution(self, address: str) -> InstitutionLike: ...

    def institution_at(self, address: str, at: int) -> InstitutionStatus: ...


class _BatchInstitutions:
    """The institution source as one batch sees it: each question (an address now, an address
    at a time) asked of it once per batch, the answer kept for the batch's other events. The
    directory behind it takes a lock and reads the clock on every call (~3 µs per event,
    issue 15); the events of a batch are mostly one institution's, often of one second. The
    answers are the source's; only their reuse is new (so within a batch they agree, even if
    the directory's cache expires half-way). A question that raised is asked again."""

    __slots__ = ("_at", "_now", "_source")

    def __init__(self, source: InstitutionSource) -> None:
        self._source = source
        self._now: dict[str, InstitutionLike] = {}
        self._at: dict[tuple[str, int], InstitutionStatus] = {}

    def institution(self, address: str) -> InstitutionLike:
        info = self._now.get(address)
        if info is None:
            info = self._now[address] = self._source.institution(address)
        return info

    def institution_at(self, address: str, at: int) -> InstitutionStatus:
        key = (address, at)
        status = self._at.get(key)
        if status is None:
            status = self._at[key] = self._source.institution_at(address, at)
        return status


class _BatchGrants:
    """The grant source as one batch sees it: the on-chain statuses of every grant its
    accesses cite, asked at once where the source can (:class:`rules.GrantBatchSource`: one
    JSON-RPC batch), each kept for the batch's other events. Issue 15: asked one access at a
    time through web3, each cost ~2.7 ms of the service's CPU (and a round trip to the node),
    42 times a custodian's access. If the batched question fails, each access asks again on
    its own, and fails as it did before. The questions are asked before any event is checked,
    so an event refused later (a bad signature, say) has had its grant asked about: no more
    than its submitter, an authenticated institution, could make ingest ask by signing it."""

    __slots__ = ("_answers", "_source")

    def __init__(self, source: GrantSource, batch: Sequence[SignedEvent]) -> None:
        self._source = source
        self._answers: dict[rules.GrantQuery, GrantStatus] = {}
        if not isinstance(source, rules.GrantBatchSource):
            return
        queries = list(
            {
                query: None
                for signed in batch
                if isinstance(signed.event, RecordAccess)
                and (query := rules.grant_query(signed.event)) is not None
            }
        )
        if not queries:
            return
        try:
            statuses = source.grant_statuses(queries)
        except LedgerError:  # the chain is unreachable: each access finds out on its own
            return
        self._answers = dict(zip(queries, statuses, strict=True))

    def grant_status_at(
        self, grant_id: int, patient: str, grantee: str, record_ref: bytes, purpose: int, time: int
    ) -> GrantStatus:
        query = rules.GrantQuery(grant_id, patient, grantee, record_ref, purpose, time)
        status = self._answers.get(query)
        if status is None:
            status = self._answers[query] = GrantStatus(int(self._source.grant_status_at(*query)))
        return status


@dataclass(frozen=True)
class BatchPlace:
    """Where a receipt sits in its batch (:class:`ledger.verify.ReceiptBatchProof`, without
    the validation a model costs: ingest makes a thousand of them a batch)."""

    first_leaf: int
    count: int
    root: bytes
    path: tuple[bytes, ...]

    def proof(self) -> ReceiptBatchProof:
        """The wire model (validated)."""
        return ReceiptBatchProof(
            firstLeaf=self.first_leaf, count=self.count, root=self.root, path=self.path
        )


@dataclass(frozen=True)
class Receipt:
    """The operator's signed promise for one event: where it is, and when it will be anchored.

    ``batch`` places the receipt in its batch's tree, whose root the operator signed once
    (``signature``); ``None`` for a receipt signed alone (those issued before batch
    receipts, still valid: :func:`ledger.verify.signed_receipt_digest`).
    """

    event_id: bytes
    event_digest: bytes
    leaf_index: int
    received_at: int
    anchor_by: int
    signature: bytes
    consent: str
    duplicate: bool = False
    batch: BatchPlace | None = None

    def signed_digest(self, domain: Domain) -> bytes:
        """The EIP-712 digest the operator signed (domain: the AuditLog's); raises
        :class:`ledger.errors.ProofError` if the batch path does not lead to its root."""
        return signed_receipt_digest(
            domain,
            self.event_digest,
            self.leaf_index,
            self.received_at,
            self.anchor_by,
            None if self.batch is None else self.batch.proof(),
        )

    def to_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "eventId": "0x" + self.event_id.hex(),
            "eventDigest": "0x" + self.event_digest.hex(),
            "leafIndex": self.leaf_index,
            "receivedAt": self.received_at,
            "anchorBy": self.anchor_by,
            "signature": "0x" + self.signature.hex(),
            "consent": self.consent,
            "duplicate": self.duplicate,
        }
        batch = self.batch
        if batch is not None:
            answer["batch"] = {
                "firstLeaf": batch.first_leaf,
                "count": batch.count,
                "root": "0x" + batch.root.hex(),
                "path": ["0x" + node.hex() for node in batch.path],
            }
        return answer


def receipts_json(receipts: Sequence[Receipt]) -> bytes:
    """``{"receipts": [receipt.to_json(), ...]}`` as compact JSON, written directly: a batch's
    receipts share their signature and root, each turned into text once, and a path is turned
    into hex in one call, its separators put in by ``bytes.hex``'s (``json.dumps`` of the dicts
    cost ~15 µs per receipt, issue 15; a node at a time through a cache, 4.6, this 3.7 to 4.4)."""
    quoted: dict[bytes | str, str] = {}

    def quote(value: bytes | str) -> str:  # a JSON string, made once per distinct value
        text = quoted.get(value)
        if text is None:
            text = quoted[value] = (
                json.dumps(value) if isinstance(value, str) else '"0x' + value.hex() + '"'
            )
        return text

    parts = []
    for r in receipts:
        text = (
            f'{{"eventId":"0x{r.event_id.hex()}","eventDigest":"0x{r.event_digest.hex()}",'
            f'"leafIndex":{r.leaf_index},"receivedAt":{r.received_at},"anchorBy":{r.anchor_by},'
            f'"signature":{quote(r.signature)},"consent":{quote(r.consent)},'
            f'"duplicate":{"true" if r.duplicate else "false"}'
        )
        batch = r.batch
        if batch is None:
            parts.append(text + "}")
            continue
        root = quote(batch.root)
        nodes = b"".join(batch.path)
        if not batch.path:
            path = ""
        elif len(nodes) == 32 * len(batch.path) and min(map(len, batch.path)) == 32:
            # every node 32 bytes, as ever (none shorter, so none longer): "0x…","0x…"
            path = '"0x' + nodes.hex(",", 32).replace(",", '","0x') + '"'
        else:  # a node of another size (a store written otherwise): each as it is
            path = ",".join('"0x' + node.hex() + '"' for node in batch.path)
        parts.append(
            f'{text},"batch":{{"firstLeaf":{batch.first_leaf},"count":{batch.count},'
            f'"root":{root},"path":[{path}]}}}}'
        )
    return ('{"receipts":[' + ",".join(parts) + "]}").encode()


def stored_batch(
    first_leaf: int | None, count: int | None, root: bytes | None, path: bytes | None
) -> BatchPlace | None:
    """A stored receipt's place in its batch (``None``: a receipt signed alone), as stored:
    whether it holds is the verifier's to say."""
    if first_leaf is None or count is None or root is None or path is None:
        return None
    nodes = tuple(bytes(path[i : i + 32]) for i in range(0, len(path), 32))
    return BatchPlace(first_leaf, count, bytes(root), nodes)


_NOT_APPLICABLE = ConsentFinding(rules.ConsentStatus.NOT_APPLICABLE)


def _body(event: EventBase) -> str:
    """``event.model_dump_json()`` (the canonical JSON stored as ``body``) straight from the
    model's serializer, without ``model_dump_json``'s argument handling (~1 µs per event)."""
    return type(event).__pydantic_serializer__.to_json(event).decode()


@dataclass
class _Prepared:
    """An event that passed the checks that need no log: signature, signer, clock, consent."""

    signed: SignedEvent
    digest: bytes
    consent: ConsentFinding


@dataclass(frozen=True)
class _Stored:
    """An event the log holds already, as far as ingest needs it."""

    digest: bytes
    institution: str
    counterparty: str | None
    record_ref: bytes | None
    row: Mapping[str, Any]


@dataclass
class _Loaded:
    """The part of the log a batch refers to: the state :func:`apply` needs, and the stored
    events that carry the batch's own eventIds (resends, or conflicts)."""

    state: LogState
    stored: dict[bytes, _Stored]


@dataclass
class _Outcome:
    """One event of the batch after the log-dependent checks."""

    prepared: _Prepared
    violations: list[Violation]
    record_ref: bytes | None = None
    ref_event_id: bytes | None = None
    claim_key: str | None = None
    #: The stored event it repeats (a resend), or the batch's earlier receipt index.
    duplicate_of: _Stored | None = None
    repeats: int | None = None
    #: A new event's receipt, once its leaf is handed out.
    receipt: Receipt | None = None


def _kind(value: InstitutionKind | int) -> InstitutionKind:
    """The institution kind, treating a value this version does not know as unregistered."""
    try:
        return InstitutionKind(int(value))
    except ValueError:
        return InstitutionKind.NONE


def _references(event: EventBase) -> bytes | None:
    if isinstance(event, PrescriptionDispensed):
        return event.prescriptionId
    if isinstance(event, InsuranceClaim):
        return event.serviceRef
    if isinstance(event, InsurancePayment):
        return event.claimId
    return None


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
        max_backdate: int = 86_400,
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
        self.max_backdate = max_backdate
        self.max_merge_delay = max_merge_delay
        self.clock = clock

    # -- checks outside the transaction ---------------------------------------------------

    def _known_digests(self, event_ids: Sequence[bytes]) -> dict[bytes, bytes]:
        with self.store.read() as connection:
            rows = select_any(connection, _SELECT_DIGESTS, list(set(event_ids)))
            return {bytes(event_id): bytes(value) for event_id, value in rows}

    def _resent(
        self,
        batch: Sequence[SignedEvent],
        digests: Mapping[int, bytes],
        prepared: list[_Prepared | None],
        failures: dict[int, LedgerError],
    ) -> None:
        """Take back the refusals of events the log holds as they are (same ``eventId``, same
        digest): resent, they get their original receipt whatever changed since (registration,
        clock, grants) — but only for the institution's own signature.

        Only refused events are looked up: an event that passed every check is found in the
        log inside the transaction anyway (:meth:`_load`), and answered as a duplicate there;
        the lookup, a read transaction and a probe per event, is saved on every batch that
        holds no refusal (issue 15)."""
        candidates = [index for index in failures if index in digests]
        if not candidates:
            return
        known = self._known_digests([batch[index].event_id for index in candidates])
        for index in candidates:
            signed, event_digest = batch[index], digests[index]
            if known.get(signed.event_id) != event_digest:
                continue
            try:
                rules.check_signer(signed.event, recover(event_digest, signed.signature))
            except LedgerError as exc:
                failures[index] = exc
                continue
            prepared[index] = _Prepared(signed, event_digest, _NOT_APPLICABLE)
            del failures[index]

    def _prepare(
        self,
        signed: SignedEvent,
        event_digest: bytes,
        now: int,
        institutions: InstitutionSource | None = None,
        grants: GrantSource | None = None,
    ) -> _Prepared:
        """``signed`` after the checks that need no log (``institutions`` and ``grants``: the
        sources as its batch sees them, :class:`_BatchInstitutions` and :class:`_BatchGrants`;
        the ingestor's own by default)."""
        if institutions is None:
            institutions = self.institutions
        if grants is None:
            grants = self.grants
        event = signed.event
        rules.check_signer(event, recover(event_digest, signed.signature))
        info = institutions.institution(event.institution)
        rules.check_institution(signed.type, event.institution, _kind(info.kind), info.active)
        rules.check_not_future(event, now, self.max_future_skew)
        rules.check_not_backdated(event, now, self.max_backdate)
        for error in chain_violations(event, institutions):
            raise error
        consent = _NOT_APPLICABLE
        if isinstance(event, RecordAccess):
            rules.check_access_reason(event)
            query = rules.grant_query(event)  # the question _BatchGrants asked for the batch
            status = None if query is None else GrantStatus(int(grants.grant_status_at(*query)))
            consent = rules.consent_of(event, status)
        return _Prepared(signed=signed, digest=event_digest, consent=consent)

    # -- the log a batch refers to --------------------------------------------------------

    @staticmethod
    def _load(connection: Connection, events: Iterable[EventBase]) -> _Loaded:
        """The events the batch refers to, what uses them up, their records and the batch's
        own records: one query each."""
        own: set[bytes] = set()
        referenced: set[bytes] = set()
        refs: set[bytes] = set()
        for event in events:
            own.add(event.eventId)
            target = _references(event)
            if target is not None:
                referenced.add(target)
            if isinstance(event, RecordAccess | PrescriptionIssued):
                refs.add(event.recordRef)
        state = LogState()
        stored: dict[bytes, _Stored] = {}
        wanted = list(own | referenced)
        for values in select_any(connection, _SELECT_STORED, wanted):
            row = dict(zip(_STORED_COLUMNS, values, strict=True))
            event_id = bytes(row["event_id"])
            record_ref = bytes(row["record_ref"]) if row["record_ref"] is not None else None
            if event_id in own:
                stored[event_id] = _Stored(
                    bytes(row["digest"]), row["institution"], row["counterparty"], record_ref, row
                )
            if event_id in referenced:
                model = EVENT_MODELS[EventType(row["event_type"])].model_validate_json(row["body"])
                state.events[event_id] = EventFacts.of(model, record_ref)
                if record_ref is not None:
                    refs.add(record_ref)
        if referenced:
            for ref_event_id, key, event_type, body in select_any(
                connection, _SELECT_KEYS, list(referenced)
            ):
                amount = 0
                if event_type == EventType.INSURANCE_PAYMENT.value:
                    amount = int(json.loads(body)["amount"])
                state.use_key(bytes(ref_event_id), key, amount)
        for stored_event in stored.values():
            if stored_event.record_ref is not None:
                refs.add(stored_event.record_ref)
        if refs:
            for ref, patient, custodian in select_any(connection, _SELECT_RECORDS, list(refs)):
                state.records[bytes(ref)] = RecordFacts(patient, custodian)
        return _Loaded(state, stored)

    @staticmethod
    def _judge(loaded: _Loaded, batch: Sequence[_Prepared]) -> list[_Outcome]:
        """The log-dependent checks of every event, in order, against ``loaded``."""
        outcomes: list[_Outcome] = []
        first_at: dict[bytes, int] = {}
        for index, item in enumerate(batch):
            event = item.signed.event
            event_id = event.eventId
            stored = loaded.stored.get(event_id)
            if stored is not None:
                outcome = _Outcome(item, [])
                if stored.digest != item.digest:
                    outcome.violations.append(
                        Violation(
                            rules.EventIdConflict(
                                f"event 0x{event_id.hex()} exists with different content",
                                event_id="0x" + event_id.hex(),
                            ),
                            Subject("event", event_id),
                        )
                    )
                else:
                    outcome.duplicate_of = stored
                outcomes.append(outcome)
                continue
            if event_id in first_at:
                earlier = outcomes[first_at[event_id]]
                outcome = _Outcome(item, [], repeats=first_at[event_id])
                if earlier.prepared.digest != item.digest:
                    outcome.violations.append(
                        Violation(
                            rules.EventIdConflict(
                                f"event 0x{event_id.hex()} appears earlier in the batch with "
                                "different content",
                                event_id="0x" + event_id.hex(),
                            )
                        )
                    )
                outcomes.append(outcome)
                continue
            first_at[event_id] = index
            violations, links = apply(loaded.state, event)
            outcomes.append(
                _Outcome(item, violations, links.record_ref, links.ref_event_id, links.claim_key)
            )
        return outcomes

    @staticmethod
    def _submitters_view(loaded: _Loaded, submitters: frozenset[str]) -> _Loaded:
        """``loaded`` as the submitters may see it: the records they hold, the events they
        took part in (or of records they hold), and what uses those up."""

        def may_see(institution: str, other: str | None, record_ref: bytes | None) -> bool:
            custodian = loaded.state.custodian(record_ref)
            return any(
                institution_may_see(caller, institution, other, custodian) for caller in submitters
            )

        real = loaded.state
        events = {
            event_id: facts
            for event_id, facts in real.events.items()
            if may_see(facts.institution, facts.counterparty, facts.record_ref)
        }
        view = LogState(
            events=events,
            records={
                ref: facts for ref, facts in real.records.items() if facts.custodian in submitters
            },
            fills={event_id: list(v) for event_id, v in real.fills.items() if event_id in events},
            claimed={event_id for event_id in real.claimed if event_id in events},
            paid={event_id: v for event_id, v in real.paid.items() if event_id in events},
        )
        stored = {
            event_id: item
            for event_id, item in loaded.stored.items()
            if may_see(item.institution, item.counterparty, item.record_ref)
        }
        return _Loaded(view, stored)

    @staticmethod
    def _visible_failures(view: _Loaded, outcomes: Sequence[_Outcome]) -> dict[int, LedgerError]:
        """The refusals found in the submitters' own view of the log (none of them depends on
        what they may not see). A reference the view does not hold may exist beyond it: its
        refusals are left to the uniform answer."""
        failures: dict[int, LedgerError] = {}
        for index, outcome in enumerate(outcomes):
            for violation in outcome.violations:
                about = violation.about
                if (
                    about is not None
                    and about.kind == "event"
                    and about.key not in view.state.events
                    and about.key not in view.stored
                ):
                    continue
                failures.setdefault(index, violation.error)
        return failures

    def _refusals(
        self, loaded: _Loaded, prepared: Sequence[_Prepared], positions: Sequence[int]
    ) -> dict[int, LedgerError]:
        """The refusals the submitters may be told, by batch index, from their own view."""
        submitters = frozenset(item.signed.event.institution for item in prepared)
        view = self._submitters_view(loaded, submitters)
        outcomes = self._judge(view, prepared)
        return {positions[i]: e for i, e in self._visible_failures(view, outcomes).items()}

    # -- the transaction ------------------------------------------------------------------

    def submit(
        self, batch: Sequence[SignedEvent], *, before_commit: Callable[[], None] | None = None
    ) -> list[Receipt]:
        """Check and store ``batch`` atomically; one receipt per event, in order.

        ``before_commit`` is called once the batch is checked and written, just before its
        commit, which waits for the disk (SQLite's ``fsync``) or the database server: the
        service lets the next batch of its process start computing then (``api.turns``). It is
        not called for a batch refused before that point."""
        if not batch:
            raise EmptyBatch("the batch holds no events")
        if len(batch) > self.max_batch:
            raise BatchTooLarge(
                f"{len(batch)} events in one batch; the limit is {self.max_batch}",
                limit=self.max_batch,
            )
        now = int(self.clock())
        prepared: list[_Prepared | None] = []
        digests: dict[int, bytes] = {}
        failures: dict[int, LedgerError] = {}
        institutions = _BatchInstitutions(self.institutions)
        grants = _BatchGrants(self.grants, batch)
        for index, signed in enumerate(batch):
            try:
                event_digest = signed.digest(self.domain)
            except LedgerError as exc:
                failures[index] = exc
                prepared.append(None)
                continue
            try:
                prepared.append(self._prepare(signed, event_digest, now, institutions, grants))
            except LedgerError as exc:
                failures[index] = exc
                digests[index] = event_digest
                prepared.append(None)
        if failures:
            self._resent(batch, digests, prepared, failures)
            if failures:
                self._reject(batch, failures)
        checked = [item for item in prepared if item is not None]
        try:
            with self.store.write() as connection:
                receipts = self._store(connection, checked, now)
                if before_commit is not None:
                    before_commit()
            return receipts
        except IntegrityError as exc:  # a constraint caught what the checks should have
            raise BatchRejected(
                {0: rules.EventIdConflict(f"the batch conflicts with the log: {exc.orig}")}
            ) from exc

    def _reject(self, batch: Sequence[SignedEvent], failures: dict[int, LedgerError]) -> NoReturn:
        """Refuse a batch some events of which failed the checks outside the log, listing also
        what the others break in the submitters' own view of the log (so the refusal names
        every bad event it may name, and nothing it may not)."""
        prepared: list[_Prepared] = []
        positions: list[int] = []
        for index, signed in enumerate(batch):
            if index in failures:
                continue
            try:
                prepared.append(_Prepared(signed, signed.digest(self.domain), _NOT_APPLICABLE))
            except LedgerError:
                continue
            positions.append(index)
        if prepared:
            try:
                with self.store.read() as connection:
                    loaded = self._load(connection, [p.signed.event for p in prepared])
            except LedgerError:  # the store is unreachable: report what is known
                raise BatchRejected(failures) from None
            for index, error in self._refusals(loaded, prepared, positions).items():
                failures.setdefault(index, error)
        raise BatchRejected(failures)

    def _store(self, connection: Connection, batch: list[_Prepared], now: int) -> list[Receipt]:
        next_index = connection.execute(_LOCK_COUNTER).scalar_one()
        loaded = self._load(connection, [item.signed.event for item in batch])
        new_records = {ref for ref in self._own_records(batch) if ref not in loaded.state.records}
        outcomes = self._judge(loaded, batch)
        if any(outcome.violations for outcome in outcomes):
            # Judge again from a fresh load: _judge moved the state past the batch.
            fresh = self._load(connection, [item.signed.event for item in batch])
            visible = self._refusals(fresh, batch, list(range(len(batch))))
            if visible:
                raise BatchRejected(visible)
            withheld = {
                index: outcome.violations[0].error
                for index, outcome in enumerate(outcomes)
                if outcome.violations
            }
            log.info(
                "batch of %d refused as log-conflict (withheld from the submitter): %s",
                len(batch),
                ", ".join(f"event {i}: {e.code}" for i, e in withheld.items()),
            )
            raise HiddenConflict([item.signed for item in batch], withheld)

        anchor_by = now + self.max_merge_delay
        first_leaf = next_index
        # Leaf indexes first; then one signature over the root of the new receipts; then each
        # new event's row and receipt, in one pass.
        appended = [o for o in outcomes if o.duplicate_of is None and o.repeats is None]
        count = len(appended)
        rows: list[tuple[Any, ...]] = []
        if appended:
            root, paths = merkle.batch_proofs(
                receipt_leaves([o.prepared.digest for o in appended], first_leaf, now, anchor_by)
            )
            batch_signature = sign_digest(
                receipt_batch_digest(self.domain, first_leaf, count, now, anchor_by, root),
                self._operator_key,
            )
            for leaf, (outcome, path) in enumerate(zip(appended, paths, strict=True), first_leaf):
                item = outcome.prepared
                signed = item.signed
                event = signed.event
                event_id = event.eventId
                consent = item.consent.label
                nodes = tuple(path)
                outcome.receipt = Receipt(
                    event_id=event_id,
                    event_digest=item.digest,
                    leaf_index=leaf,
                    received_at=now,
                    anchor_by=anchor_by,
                    signature=batch_signature,
                    consent=consent,
                    batch=BatchPlace(first_leaf, count, root, nodes),
                )
                rows.append(
                    (
                        leaf,
                        event_id,
                        event.event_type.value,
                        event.institution,
                        event.patient,
                        outcome.record_ref,
                        outcome.ref_event_id,
                        outcome.claim_key,
                        item.digest,
                        signed.signature,
                        _body(event),
                        event.occurredAt,
                        now,
                        anchor_by,
                        consent,
                        batch_signature,
                        counterparty(event),
                        first_leaf,
                        count,
                        root,
                        b"".join(nodes),
                    )
                )
            next_index += count
        receipts: list[Receipt] = []
        for outcome in outcomes:
            if outcome.receipt is not None:
                receipts.append(outcome.receipt)
            elif outcome.duplicate_of is not None:
                item = outcome.prepared
                original = outcome.duplicate_of.row
                receipts.append(
                    Receipt(
                        event_id=item.signed.event.eventId,
                        event_digest=item.digest,
                        leaf_index=original["leaf_index"],
                        received_at=original["received_at"],
                        anchor_by=original["anchor_by"],
                        signature=bytes(original["receipt_signature"]),
                        consent=original["consent_status"],
                        duplicate=True,
                        batch=stored_batch(
                            original["receipt_batch_first"],
                            original["receipt_batch_count"],
                            original["receipt_batch_root"],
                            original["receipt_path"],
                        ),
                    )
                )
            else:  # repeated within this very batch: same promise
                assert outcome.repeats is not None
                receipts.append(dataclasses.replace(receipts[outcome.repeats], duplicate=True))
        if rows:
            insert_rows(connection, _EVENTS, _EVENT_COLUMNS, rows)
            records = [
                (ref, facts.patient, facts.custodian, first_leaf)
                for ref, facts in loaded.state.records.items()
                if ref in new_records
            ]
            insert_rows(connection, _RECORDS, _RECORD_COLUMNS, records)
            connection.execute(_ADVANCE_COUNTER, {"next_index": next_index})
        return receipts

    @staticmethod
    def _own_records(batch: Sequence[_Prepared]) -> set[bytes]:
        return {
            item.signed.event.recordRef
            for item in batch
            if isinstance(item.signed.event, RecordAccess | PrescriptionIssued)
        }
