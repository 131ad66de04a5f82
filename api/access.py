"""Who may read what (the object-level rules of issue 4).

* A regulator reads everything.
* A patient reads what concerns them: events whose patient they are, the trails of their
  records, their grants and accesses.
* An institution reads its own events, the trails of records it is the custodian of or has
  an event about (and so every event of such a record), and grants made to it.

Objects the caller may not read answer 404, as if they did not exist, so that ids cannot be
probed; a collection named by someone else's address (``/v1/patients/{address}/…``) answers
403, since the address is the caller's own input.
"""

from __future__ import annotations

from api.auth import Principal
from ledger.chain.client import GrantInfo
from ledger.service import EventView, Ledger, RecordParties


def may_read_record(principal: Principal, parties: RecordParties) -> bool:
    if principal.is_regulator:
        return True
    if principal.role == "patient":
        return parties.patient == principal.address
    return principal.address is not None and (
        parties.custodian == principal.address or principal.address in parties.institutions
    )


def may_read_event(principal: Principal, view: EventView, ledger: Ledger) -> bool:
    if principal.is_regulator:
        return True
    if principal.role == "patient":
        return view.patient == principal.address
    if view.institution == principal.address:
        return True
    if view.record_ref is None:
        return False
    parties = ledger.record_parties(view.record_ref)
    return parties is not None and may_read_record(principal, parties)


def may_read_grant(principal: Principal, grant: GrantInfo) -> bool:
    if principal.is_regulator:
        return True
    if principal.role == "patient":
        return grant.patient == principal.address
    return grant.grantee == principal.address
