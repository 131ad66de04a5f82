"""Who may see which event: one rule for the API's reads and for ingest's refusals (pure).

DESIGN §5: the record's **custodian** sees its record's whole trail; **any other
institution sees only the events it took part in** — those it signed, and those that name it
(the insurer a claim is made to, the payee of a payment, the custodian an access names); the
**patient** sees everything about them; **regulators** see all.

The same rule decides what a refusal may say (issue 12, item 3): a refusal never discloses
values from an event the submitter may not see, nor answers differently for facts it may not
know (see :mod:`ledger.ingest`).

An event's *counterparty* is the one other institution it names: the custodian of an access
(when another institution accessed), the insurer of a claim, the payee of a payment. It is
stored with the event (``events.counterparty``) so that "the events an institution took part
in" is one indexed query.
"""

from __future__ import annotations

from ledger.events import EventBase, InsuranceClaim, InsurancePayment, RecordAccess

__all__ = ["counterparty", "institution_may_see", "parties"]


def counterparty(event: EventBase) -> str | None:
    """The other institution ``event`` names (None if it names none but its signer)."""
    if isinstance(event, RecordAccess):
        return event.custodian if event.custodian != event.institution else None
    if isinstance(event, InsuranceClaim):
        return event.insurer
    if isinstance(event, InsurancePayment):
        return event.payee
    return None


def parties(institution: str, other: str | None) -> frozenset[str]:
    """The institutions that took part in an event: its signer and its counterparty."""
    return frozenset((institution,) if other is None else (institution, other))


def institution_may_see(
    caller: str, institution: str, other: str | None, record_custodian: str | None
) -> bool:
    """Whether institution ``caller`` may see an event signed by ``institution`` naming
    ``other``, of a record held by ``record_custodian`` (None: the event has no record)."""
    if record_custodian is not None and caller == record_custodian:
        return True
    return caller in (institution, other)
