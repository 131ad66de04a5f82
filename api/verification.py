"""``verify=true`` on a trail: the pure verification, run by the service against the chain.

A convenience: the regulator's scripts recompute all of it without trusting the service. The
code is theirs — :func:`ledger.verify.verify_bundle` and :class:`ledger.audit.Auditor` — fed
with what this service reads from the chain. For each event, in log order:

* the bundle against the root the *chain* holds for the bundle's checkpoint size (pending
  events: against the chain's latest checkpoint), with the operator's receipt checked;
* every ledger rule (:mod:`ledger.audit`): the signer registered, active and of the right
  kind at ``occurredAt``; consent of accesses by another institution than the custodian
  (``consent-not-covered``, ``emergency-access`` for review, ``consent-label-mismatch``);
  prescriptions, fills, claims and payments.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Sequence

from ledger.audit import Auditor, FactTable, GrantQuery, InstitutionStatus, needed_facts
from ledger.chain.reader import ChainReader
from ledger.events import EventBase, InstitutionKind
from ledger.rules import GrantStatus
from ledger.service import EventView, Ledger
from ledger.verify import Finding, verify_bundle

_EMPTY_ROOT = hashlib.sha256(b"").digest()


def chain_facts(chain: ChainReader, views: Sequence[EventView]) -> FactTable:
    """Every chain fact the rules will ask about these events, read from the chain."""
    needs = needed_facts(view.bundle.event for view in views)
    institutions: dict[tuple[str, int], InstitutionStatus] = {}
    current = {address: chain.institution(address) for address, _at in needs.institutions}
    for address, at in needs.institutions:
        info = current[address]
        if info.kind == InstitutionKind.NONE or info.registered_at > at:
            institutions[(address, at)] = InstitutionStatus(InstitutionKind.NONE, False)
        else:
            active = chain.was_active_at(address, info.kind, at)
            institutions[(address, at)] = InstitutionStatus(info.kind, active)
    grants: dict[GrantQuery, GrantStatus] = {
        query: GrantStatus(
            int(
                chain.grant_status_at(
                    query.grant_id,
                    query.patient,
                    query.grantee,
                    query.record_ref,
                    query.purpose,
                    query.at,
                )
            )
        )
        for query in needs.grants
    }
    return FactTable(institutions=institutions, grants=grants)


def trail_findings(
    ledger: Ledger,
    views: Sequence[EventView],
    context: Sequence[tuple[int, EventBase]] = (),
) -> list[list[Finding]]:
    """Findings for each view of a trail (in log order), in order.

    ``context`` (:meth:`ledger.service.Ledger.rule_context`) is what the rules look back at
    that ``views`` does not hold — when they are one page of a trail, or one institution's
    part of it: those events move the rules' state forward in log order, unjudged, so that a
    page is judged as the whole trail would be.
    """
    chain = ledger.chain
    latest = chain.latest_checkpoint()
    latest_state = (latest.tree_size, latest.root_hash) if latest else (0, _EMPTY_ROOT)
    trusted_at: dict[int, tuple[int, bytes]] = {}
    auditor = Auditor(chain_facts(chain, views))
    now = int(time.time())
    results: list[list[Finding]] = []
    earlier = deque(context)
    for view in views:
        bundle = view.bundle
        while earlier and earlier[0][0] < bundle.leafIndex:
            _leaf, event = earlier.popleft()
            judged, auditor.facts = auditor.facts, None  # state only: no chain fact asked
            auditor.check(event)
            auditor.facts = judged
        state = latest_state
        if bundle.checkpoint is not None:
            size = bundle.checkpoint.treeSize
            if size not in trusted_at:
                on_chain = chain.checkpoint_at(size)
                trusted_at[size] = (
                    (on_chain.tree_size, on_chain.root_hash) if on_chain else latest_state
                )
            state = trusted_at[size]
        findings = verify_bundle(
            bundle,
            domain=ledger.domain,
            trusted_size=state[0],
            trusted_root=state[1],
            now=now,
            max_merge_delay=ledger.settings.max_merge_delay,
            operator=ledger.operator.address,
        )
        findings += auditor.check(bundle.event, consent_label=view.consent)
        results.append(findings)
    return results
