"""Who may read what: the object-level rules of issue 4, and what an institution may see of
a record (:mod:`ledger.visibility`, issue 12).

* A regulator reads everything.
* A patient reads what concerns them: events whose patient they are, the trails of their
  records, their grants and accesses.
* An institution reads the events it took part in — those it signed, and those that name it
  (the custodian an access names, the insurer of a claim, the payee of a payment) — and the
  whole trail of a record it is the custodian of; of another record it took part in, the
  trail holds only those events. It reads the grants made to it.

Objects the caller may not read answer 404, as if they did not exist, so that ids cannot be
probed; a collection named by someone else's address (``/v1/patients/{address}/…``) answers
403, since the address is the caller's own input.
"""

from __future__ import annotations

from api.auth import Principal
from ledger.chain.client import GrantInfo
from ledger.service import EventView, GrantV2View, Ledger, NotFound


def reading_institution(principal: Principal) -> str | None:
    """The institution whose view of the log a read takes (:mod:`ledger.visibility`); None
    for regulators and patients, whose reads are not narrowed to one institution's part."""
    if principal.role != "institution":
        return None
    assert principal.address is not None  # institution keys are bound to an address
    return principal.address


def check_record(principal: Principal, record_ref: bytes, ledger: Ledger) -> None:
    """:class:`NotFound` unless the caller may read (part of) the record's trail: regulators,
    the record's patient, its custodian, and institutions that took part in one of its
    events."""
    parties = ledger.record_parties(record_ref)
    if parties is not None and (
        principal.is_regulator
        or (principal.role == "patient" and parties.patient == principal.address)
        or (
            principal.role == "institution"
            and principal.address is not None
            and (
                parties.custodian == principal.address
                or ledger.took_part(record_ref, principal.address)
            )
        )
    ):
        return
    raise NotFound(f"no record 0x{record_ref.hex()}")


def sees_whole_trail(principal: Principal, record_ref: bytes, ledger: Ledger) -> bool:
    """Whether the caller sees every event of the record's trail — regulators, the record's
    patient, its custodian — and so is served the index proof of the whole list with it.

    Another institution sees only the events it took part in and gets no index proof: the
    whole list's leaf indexes would tell it that the record has other events, how many and
    when, and it could not even tell its own apart in the list (docs/wire.md, "The index")."""
    if principal.is_regulator:
        return True
    parties = ledger.record_parties(record_ref)
    if parties is None:
        return False
    if principal.role == "patient":
        return parties.patient == principal.address
    return principal.role == "institution" and parties.custodian == principal.address


def check_event(principal: Principal, view: EventView) -> None:
    """:class:`NotFound` for a patient reading another patient's event. (An institution's
    view is applied by the ledger as it reads: :meth:`ledger.service.Ledger.event`.)"""
    if principal.role == "patient" and view.patient != principal.address:
        raise NotFound(f"no event 0x{view.event_id.hex()}")


def may_read_grant(principal: Principal, grant: GrantInfo | GrantV2View) -> bool:
    """Regulators, the grant's patient and its grantee (of either consent version)."""
    if principal.is_regulator:
        return True
    if principal.role == "patient":
        return grant.patient == principal.address
    return grant.grantee == principal.address
