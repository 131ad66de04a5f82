"""The one trail verifier: served bundles, checked against the chain, with every rule.

What the regulator's ``verify_trail``, the API's ``verify=true`` and the wallet's
``accesses`` each verify is the same thing — events served with their proof bundles, in log
order — and :func:`verify_trail` is the one function that does it, so that the same trail
gives the same findings everywhere. It is pure: the caller supplies its I/O as narrow
protocols (a :class:`CheckpointSource` for the on-chain roots, a :class:`FactSource` for
institutions and grants, both implemented by :class:`ledger.chain.reader.ChainView`), the
deployment it trusts, and the time windows; a :class:`TrailReport` comes out.

For each event (in log order):

* its bundle against the root the *chain* holds for the bundle's checkpoint size, never the
  root the bundle carries (:func:`ledger.verify.verify_bundle`: digest, signature, inclusion,
  the operator's receipt); a bundle proved against a checkpoint the chain does not hold is
  ``checkpoint-not-on-chain`` (only the checks that need no root are run on it); a pending
  one against the chain's latest checkpoint (``proof-missing``, ``not-anchored-in-time``);
* every ledger rule (:class:`ledger.audit.Auditor`): the signer registered, active and of the
  right kind at ``occurredAt``; consent of accesses by another institution than the custodian;
  prescriptions, fills, claims and payments; ``occurredAt`` bounded by when the chain first
  anchored the event (``backdated``, ``access-logged-after-grant-end``).

About the whole answer: the served deployment against the trusted one
(``deployment-mismatch``), a record's trail holding another record's event, out of order or
twice (:func:`ledger.audit.check_trail_shape`), an empty trail, and a chain not consulted;
and, given the verifiable index's answer served with it (an :class:`IndexClaim`), whether it
is **complete** (:mod:`ledger.completeness`: ``trail-incomplete``, ``trail-outdated``,
``index-proof-missing``, ``history-shrunk``), against the index root the chain holds.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger.audit import (
    Anchor,
    AuditCode,
    Auditor,
    ChainFacts,
    FactNeeds,
    anchoring_times,
    check_trail_shape,
    needed_facts,
)
from ledger.chain.model import CheckpointRoots, OnChainCheckpoint, TrustedDeployment
from ledger.completeness import IndexClaim, completeness_findings
from ledger.eip712 import Domain
from ledger.events import EventBase, audit_log_domain
from ledger.index import ListHead
from ledger.merkle import EMPTY_ROOT
from ledger.verify import Finding, FindingCode, ProofBundle, verify_bundle

__all__ = [
    "DEFAULT_MAX_BACKDATE",
    "DEFAULT_MAX_MERGE_DELAY",
    "CheckpointSource",
    "FactSource",
    "IndexClaim",
    "TimeWindows",
    "TrailItem",
    "TrailReport",
    "deployment_findings",
    "verify_trail",
]

#: The operator's promises a verification holds it to by default (the service's defaults):
#: seconds within which each event is anchored, and an event may be dated before it is logged.
DEFAULT_MAX_MERGE_DELAY = 3600
DEFAULT_MAX_BACKDATE = 86_400

#: Findings of :func:`ledger.verify.verify_bundle` that do not depend on the trusted root.
ROOT_FREE = frozenset(
    {
        FindingCode.DIGEST_MISMATCH,
        FindingCode.SIGNATURE_INVALID,
        FindingCode.SIGNER_MISMATCH,
        FindingCode.RECEIPT_INVALID,
        FindingCode.RECEIPT_MISSING,
    }
)


class CheckpointSource(Protocol):
    """The on-chain checkpoints a verifier trusts (a :class:`ledger.chain.reader.ChainView`)."""

    def latest_checkpoint(self) -> OnChainCheckpoint | None:
        """The chain's latest checkpoint; None before the first."""
        ...

    def checkpoint_at(self, size: int) -> CheckpointRoots | None:
        """The roots of the checkpoint of ``size`` the chain holds; None if it holds none."""
        ...

    def anchors(self, leaf_indexes: Sequence[int]) -> Sequence[Anchor]:
        """On-chain checkpoints, at least the first one covering each of ``leaf_indexes``
        (when there is one): when each event was first anchored is read from them."""
        ...


class FactSource(ChainFacts, Protocol):
    """What the rules ask the chain (:class:`ledger.audit.ChainFacts`), prefetched in bulk."""

    def prefetch(self, needs: FactNeeds) -> None:
        """Answer every question of ``needs`` now (in batches)."""
        ...


@dataclass(frozen=True)
class TimeWindows:
    """The clock and the promises a verification holds the operator to.

    ``now``: the verifier's time; ``max_merge_delay``: the seconds within which each event must
    be anchored (None: the receipt's own ``anchorBy`` only); ``max_backdate``: the seconds an
    event may be dated before it is logged (None: not checked).
    """

    now: int
    max_merge_delay: int | None = DEFAULT_MAX_MERGE_DELAY
    max_backdate: int | None = DEFAULT_MAX_BACKDATE


@dataclass(frozen=True)
class TrailItem:
    """One served event: its proof bundle and the record it was served under (if any)."""

    bundle: ProofBundle
    record_ref: bytes | None = None


@dataclass
class TrailReport:
    """What :func:`verify_trail` found: per event (aligned with the items), and about the
    whole answer."""

    events: list[list[Finding]]
    findings: list[Finding]
    #: Per event, the size of the on-chain checkpoint its proof was checked against (None:
    #: not anchored, or proved against a checkpoint the chain does not hold).
    anchored_in: list[int | None]
    #: The chain's latest checkpoint, as read for this verification.
    latest: OnChainCheckpoint | None
    #: The chain facts the rules asked for.
    needs: FactNeeds = field(default_factory=lambda: FactNeeds(frozenset(), frozenset()))
    #: The head of the list the index proof verified (what a client remembers to check later
    #: that the list only grew), and the checkpoint size it is at; None when none verified.
    index_head: ListHead | None = None
    index_size: int | None = None

    @property
    def all_findings(self) -> list[Finding]:
        """The findings about the whole answer, then every event's, in order."""
        return self.findings + [f for findings in self.events for f in findings]

    @property
    def ok(self) -> bool:
        """No finding of ``error`` severity."""
        return not any(f.severity == "error" for f in self.all_findings)

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(str(f.code) for f in self.all_findings)


def deployment_findings(trusted: TrustedDeployment, served: TrustedDeployment) -> list[Finding]:
    """``deployment-mismatch`` when the service names other contracts (or chain) than the
    ones trusted (a ConsentRegistryV2 only when one is trusted: a deployment file written
    before consent version 2 names none)."""
    differences: dict[str, Any] = {}
    for name, mine, theirs in (
        ("chainId", trusted.chain_id, served.chain_id),
        ("institutionRegistry", trusted.institution_registry, served.institution_registry),
        ("auditLog", trusted.audit_log, served.audit_log),
        ("consentRegistry", trusted.consent_registry, served.consent_registry),
        ("consentRegistryV2", trusted.consent_registry_v2, served.consent_registry_v2),
    ):
        if mine != theirs and (name != "consentRegistryV2" or mine is not None):
            differences[name] = {"trusted": mine, "api": theirs}
    if not differences:
        return []
    return [
        Finding(
            AuditCode.DEPLOYMENT_MISMATCH,
            "error",
            "the API names other contracts than the ones you trust (differs in "
            + ", ".join(differences)
            + "): its proofs and events are for another log",
            None,
            differences,
        )
    ]


def _hex(value: bytes) -> str:
    return "0x" + bytes(value).hex()


def verify_trail(
    items: Sequence[TrailItem],
    *,
    checkpoints: CheckpointSource,
    facts: FactSource | None,
    trusted: TrustedDeployment,
    windows: TimeWindows,
    operator: str | None = None,
    record_ref: bytes | None = None,
    served_deployment: TrustedDeployment | None = None,
    context: Sequence[tuple[int, EventBase]] = (),
    completeness: IndexClaim | None = None,
    patient: str | None = None,
) -> TrailReport:
    """Verify served events (``items``, in the order served) against the chain.

    :param checkpoints: the on-chain roots (never the bundles' own).
    :param facts: institutions and grants on chain; None: not consulted (a
        ``chain-not-consulted`` warning, and the checks that need them are skipped).
    :param trusted: the deployment the verifier trusts (its AuditLog is the events' domain).
    :param operator: the log operator's address: also check every receipt is its.
    :param record_ref: the record whose trail this is (its shape is then checked: every
        event of that record, in log order, once); None for another list (a patient's
        accesses), whose order and duplicates are still checked.
    :param served_deployment: the deployment the service named, checked against ``trusted``.
    :param context: events the rules must look back at that ``items`` do not hold
        (``(leaf index, event)`` in log order, e.g. before a page): they move the rules' state
        forward, unjudged.
    :param completeness: the key of the list served and the index proof served with it (if
        any): checked against the index root the chain holds (None: not checked).
    :param patient: the patient whose history this is: an event about anyone else is
        ``history-other-patient``.
    """
    domain: Domain = audit_log_domain(trusted.chain_id, trusted.audit_log)
    bundles = [item.bundle for item in items]
    log_findings: list[Finding] = []
    if served_deployment is not None:
        log_findings += deployment_findings(trusted, served_deployment)
    if facts is None:
        log_findings.append(
            Finding(
                AuditCode.CHAIN_NOT_CONSULTED,
                "warning",
                "the chain was not consulted: signers' registrations and consent grants were "
                "not checked",
                None,
                {},
            )
        )
    if record_ref is not None and not bundles:
        log_findings.append(
            Finding(
                AuditCode.TRAIL_EMPTY,
                "warning",
                "the trail holds no event: nothing was verified",
                None,
                {"recordRef": _hex(record_ref)},
            )
        )
    per_event: list[list[Finding]] = [[] for _ in bundles]
    by_id: dict[bytes, list[int]] = {}
    for position, bundle in enumerate(bundles):
        by_id.setdefault(bundle.event.event_id, []).append(position)

    shape = [
        (b.leafIndex, b.event.event, item.record_ref)
        for b, item in zip(bundles, items, strict=True)
    ]
    for finding in check_trail_shape(record_ref, shape):
        positions = by_id.get(finding.event_id or b"")
        if positions:
            per_event[positions[-1]].append(finding)
        else:
            log_findings.append(finding)
    if patient is not None:
        for position, bundle in enumerate(bundles):
            about = str(getattr(bundle.event.event, "patient", ""))
            if about.lower() != patient.lower():
                per_event[position].append(
                    Finding(
                        AuditCode.HISTORY_OTHER_PATIENT,
                        "error",
                        f"the history of {patient} holds an event about {about}",
                        bundle.event.event_id,
                        {"patient": patient, "eventPatient": about},
                    )
                )

    # Proofs and signatures, against the roots the chain holds.
    latest = checkpoints.latest_checkpoint()
    latest_state = (latest.tree_size, latest.root_hash) if latest else (0, EMPTY_ROOT)

    # Completeness: the served list against the index root the chain holds.
    index_head: ListHead | None = None
    index_size: int | None = None
    if completeness is not None:
        served = completeness.served
        checked = completeness_findings(
            completeness,
            [bundle.leafIndex for bundle in bundles],
            checkpoint_at=None if served is None else checkpoints.checkpoint_at(served.treeSize),
            latest=latest,
        )
        log_findings += checked.findings
        index_head, index_size = checked.head, checked.tree_size
    anchored_in: list[int | None] = []
    for position, bundle in enumerate(bundles):
        found, anchored = _proof_findings(
            bundle, checkpoints, latest_state, domain, windows, operator
        )
        per_event[position] += found
        anchored_in.append(anchored)

    # The rules, with the chain's view of institutions and grants at each occurredAt, and
    # when each event was first anchored (the chain's bound on when it was logged).
    events = [bundle.event.event for bundle in bundles]
    leaves = [bundle.leafIndex for bundle in bundles]
    anchors = list(checkpoints.anchors(leaves)) if bundles else []
    logged_by = anchoring_times(leaves, anchors)
    needs = needed_facts(
        events,
        {e.eventId: at for e, at in zip(events, logged_by, strict=True) if at is not None},
    )
    if facts is not None:
        facts.prefetch(needs)
    auditor = Auditor(
        facts, max_backdate=windows.max_backdate, max_merge_delay=windows.max_merge_delay
    )
    earlier = deque(context)
    for position, (bundle, event) in enumerate(zip(bundles, events, strict=True)):
        while earlier and earlier[0][0] < bundle.leafIndex:
            _leaf, before = earlier.popleft()
            auditor.state_only(before)
        per_event[position] += auditor.check(
            event,
            consent_label=bundle.consent,
            logged_by=logged_by[position],
            received_at=None if bundle.receipt is None else bundle.receipt.receivedAt,
        )
    return TrailReport(per_event, log_findings, anchored_in, latest, needs, index_head, index_size)


def _proof_findings(
    bundle: ProofBundle,
    checkpoints: CheckpointSource,
    latest_state: tuple[int, bytes],
    domain: Domain,
    windows: TimeWindows,
    operator: str | None,
) -> tuple[list[Finding], int | None]:
    """The bundle's findings against the chain's root for it, and the size of the on-chain
    checkpoint it was proved against."""
    if bundle.checkpoint is None:
        size, root = latest_state
        return (
            verify_bundle(
                bundle,
                domain=domain,
                trusted_size=size,
                trusted_root=root,
                now=windows.now,
                max_merge_delay=windows.max_merge_delay,
                operator=operator,
            ),
            None,
        )
    claimed = bundle.checkpoint.treeSize
    on_chain = checkpoints.checkpoint_at(claimed)
    if on_chain is None:
        size, root = latest_state
        findings = [
            Finding(
                AuditCode.CHECKPOINT_NOT_ON_CHAIN,
                "error",
                f"the bundle is proved against a checkpoint of size {claimed} that the chain "
                "does not hold: its proof cannot be trusted",
                bundle.event.event_id,
                {"treeSize": claimed, "rootHash": _hex(bundle.checkpoint.rootHash)},
            )
        ]
        findings += [
            f
            for f in verify_bundle(
                bundle, domain=domain, trusted_size=size, trusted_root=root, operator=operator
            )
            if f.code in ROOT_FREE
        ]
        return findings, None
    return (
        verify_bundle(
            bundle,
            domain=domain,
            trusted_size=on_chain.tree_size,
            trusted_root=on_chain.root_hash,
            now=windows.now,
            max_merge_delay=windows.max_merge_delay,
            operator=operator,
        ),
        on_chain.tree_size,
    )
