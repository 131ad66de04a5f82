"""Test actors: institutions that sign events, patients that sign grants.

They use the production signing code (``ledger.events.sign_event``) for events and
eth-account's independent typed-data signing for patients' grants, so that a grant accepted
by the service is one any standard wallet could have produced.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.eip712 import Domain
from ledger.events import (
    Action,
    InstitutionKind,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    Purpose,
    RecordAccess,
    SignedEvent,
    grant_typed_data,
    revoke_typed_data,
    sign_event,
)
from ledger.refs import record_ref, staff_ref

_counter = itertools.count(1)


def new_event_id() -> bytes:
    return os.urandom(32)


def content_hash(text: str) -> bytes:
    from hashlib import sha256

    return sha256(text.encode()).digest()


@dataclass
class Clock:
    """The time actors date their events by: the wall clock, but never before ``floor``.

    Events may not predate their signer's registration on chain, and an in-process chain runs
    ahead of the wall clock after a burst of transactions (each block at least a second after
    its parent): a test environment raises the floor past the registrations it made, so that
    "a minute ago" is after them.
    """

    floor: int = 0

    def __call__(self) -> int:
        return max(int(time.time()), self.floor)

    def after(self, timestamp: int, margin: int = 120) -> None:
        """Date events from now on at least ``margin`` seconds after ``timestamp``."""
        self.floor = max(self.floor, timestamp + margin)


#: The wall clock (actors made outside a test environment).
WALL_CLOCK = Clock()


@dataclass
class Institution:
    """A hospital, pharmacy or insurer with its signing key and its reference key."""

    name: str
    kind: InstitutionKind
    domain: Domain
    account: LocalAccount = field(default_factory=Account.create)
    ref_key: bytes = field(default_factory=lambda: os.urandom(32))
    clock: Clock = field(default_factory=lambda: WALL_CLOCK)

    @property
    def address(self) -> str:
        return str(self.account.address)

    def sign(self, event: Any) -> SignedEvent:
        return sign_event(event, self.domain, bytes(self.account.key))

    def record(self, local_id: str) -> bytes:
        return record_ref(self.ref_key, local_id)

    def staff(self, staff_id: str) -> bytes:
        return staff_ref(self.ref_key, staff_id)

    # -- event builders (unsigned; override any field with keywords) ----------------------

    def access(
        self, record: bytes, patient: str, custodian: str | None = None, **kw: Any
    ) -> RecordAccess:
        fields: dict[str, Any] = {
            "eventId": new_event_id(),
            "recordRef": record,
            "custodian": custodian or self.address,
            "patient": patient,
            "institution": self.address,
            "actor": self.staff("dr-1"),
            "action": Action.READ,
            "purpose": Purpose.TREATMENT,
            "grantId": 0,
            "reasonHash": bytes(32),
            "occurredAt": self.clock() - 5,
        }
        fields.update(kw)
        return RecordAccess(**fields)

    def prescription(self, record: bytes, patient: str, **kw: Any) -> PrescriptionIssued:
        now = self.clock()
        fields: dict[str, Any] = {
            "eventId": new_event_id(),
            "recordRef": record,
            "patient": patient,
            "institution": self.address,
            "prescriber": self.staff("dr-1"),
            "contentHash": content_hash(f"rx-{next(_counter)}"),
            "fills": 2,
            "validUntil": now + 30 * 86400,
            "occurredAt": now - 60,
        }
        fields.update(kw)
        return PrescriptionIssued(**fields)

    def dispense(
        self, prescription: PrescriptionIssued, fill: int = 1, **kw: Any
    ) -> PrescriptionDispensed:
        fields: dict[str, Any] = {
            "eventId": new_event_id(),
            "prescriptionId": prescription.eventId,
            "patient": prescription.patient,
            "institution": self.address,
            "pharmacist": self.staff("ph-1"),
            "fillNumber": fill,
            "contentHash": content_hash(f"box-{next(_counter)}"),
            "occurredAt": self.clock() - 30,
        }
        fields.update(kw)
        return PrescriptionDispensed(**fields)

    def claim(self, service: Any, insurer: str, amount: int = 12_50, **kw: Any) -> InsuranceClaim:
        fields: dict[str, Any] = {
            "eventId": new_event_id(),
            "serviceRef": service.eventId,
            "patient": service.patient,
            "institution": self.address,
            "insurer": insurer,
            "amount": amount,
            "contentHash": content_hash(f"invoice-{next(_counter)}"),
            "occurredAt": self.clock() - 20,
        }
        fields.update(kw)
        return InsuranceClaim(**fields)

    def payment(
        self, claim: InsuranceClaim, amount: int | None = None, **kw: Any
    ) -> InsurancePayment:
        fields: dict[str, Any] = {
            "eventId": new_event_id(),
            "claimId": claim.eventId,
            "patient": claim.patient,
            "institution": self.address,
            "payee": claim.institution,
            "amount": claim.amount if amount is None else amount,
            "contentHash": content_hash(f"remittance-{next(_counter)}"),
            "occurredAt": self.clock() - 10,
        }
        fields.update(kw)
        return InsurancePayment(**fields)


@dataclass
class Patient:
    """A patient's wallet key, signing grants and revocations with eth-account."""

    account: LocalAccount = field(default_factory=Account.create)

    @property
    def address(self) -> str:
        return str(self.account.address)

    def sign_grant(self, domain: Domain, **values: Any) -> bytes:
        message = grant_typed_data(domain, patient=self.address, **values)
        return bytes(Account.sign_typed_data(self.account.key, full_message=message).signature)

    def sign_revoke(self, domain: Domain, **values: Any) -> bytes:
        message = revoke_typed_data(domain, patient=self.address, **values)
        return bytes(Account.sign_typed_data(self.account.key, full_message=message).signature)
