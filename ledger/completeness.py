"""Is a served trail the whole trail? The verifiable index's checks, pure (docs/index.md).

A record's trail or a patient's history is served with the index's answer for its key
(:class:`ledger.wire.IndexProofOut`): the whole list of the leaf indexes of its events at a
checkpoint, and the lookup proof that it is the list the index root **the chain** holds for
that checkpoint commits to. :func:`completeness_findings` checks it for
:func:`ledger.trail.verify_trail`, the one trail verifier (``verify_trail.py``, the API's
``verify=true``, the wallet's ``accesses``):

* ``index-proof-missing``: the chain holds a checkpoint but no index proof was served;
* ``trail-incomplete``: the proof is for another key, or does not lead to the on-chain index
  root (the list served is not the committed one: shortened, an entry filtered out, changed);
  or a listed leaf was not served (a row deleted, an event filtered out of the response); or
  an anchored event was served that the list does not hold;
* ``checkpoint-not-on-chain``: the proof names a checkpoint the chain does not hold;
* ``trail-outdated``: the proof's checkpoint is older than the chain's latest (a trail served
  from an older copy of the log: events anchored since are not covered);
* ``history-shrunk``: the list does not extend the one the client saw before
  (:func:`ledger.index.verify_list_extends`; the wallet remembers the head it saw per key).

And for the whole-log audit, :func:`index_root_findings`: the index rebuilt from the events
(:class:`ledger.index.MemoryIndex`, one batch per checkpoint) against every index root the
chain holds (``index-root-mismatch``): a lookup is as good as the construction of the root it
is checked against, which the chain cannot check and the audit does.

What the index proves, and what it does not, is docs/index.md §5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from ledger import index
from ledger.errors import ProofError
from ledger.index import IndexUpdate, ListHead, LookupProof, MemoryIndex
from ledger.verify import Finding

if TYPE_CHECKING:
    from ledger.chain.model import CheckpointRoots, OnChainCheckpoint
    from ledger.wire import IndexProofOut

__all__ = [
    "CompletenessCode",
    "CompletenessReport",
    "IndexClaim",
    "RebuiltIndex",
    "completeness_findings",
    "index_behind",
    "index_root_findings",
]

#: How many times a client asks again for a list's index proof when a checkpoint landed while
#: it read the pages (:func:`index_behind`) before it verifies what it has.
REASKS = 3

#: Leaf indexes listed in a finding's context at most (the count is always given).
_SHOWN = 20


class CompletenessCode(StrEnum):
    """The codes of the completeness checks (what each means: :data:`ledger.codes.CODES`)."""

    #: A listed leaf was not served, or the served list is not the committed one.
    TRAIL_INCOMPLETE = "trail-incomplete"
    #: The index proof is at an older checkpoint than the chain's latest.
    TRAIL_OUTDATED = "trail-outdated"
    #: An archived answer (an exported file) proven complete as of an older checkpoint.
    TRAIL_AS_OF = "trail-as-of"
    #: The chain holds a checkpoint, but no index proof was served.
    INDEX_PROOF_MISSING = "index-proof-missing"
    #: The list does not extend the one seen before (fewer entries, or other earlier ones).
    HISTORY_SHRUNK = "history-shrunk"
    #: The proof names a checkpoint the chain does not hold (:mod:`ledger.audit`'s code).
    CHECKPOINT_NOT_ON_CHAIN = "checkpoint-not-on-chain"
    #: An on-chain index root is not the root of the index rebuilt from the log (the audit's).
    INDEX_ROOT_MISMATCH = "index-root-mismatch"


@dataclass(frozen=True)
class IndexClaim:
    """What a served list is checked against: the key the verifier computed itself, what the
    service served, which part of the list the served events must cover, and the head the
    client saw before (if it remembers one).

    :param key: ``index.record_key(recordRef)`` or ``index.patient_key(patient)``.
    :param subject: what the list is, for messages ("the record's trail").
    :param served: the service's index answer; None when it served none.
    :param after: only the list's leaves above it were asked for (a page's ``after``).
    :param through: only the list's leaves up to it were served (a page's last leaf when more
        pages follow); None: to the end.
    :param remembered: the head of the list the client saw last (the wallet's), checked to be
        extended by the served list.
    :param archived: the answer was kept (an exported file), not served just now: proven
        complete as of its checkpoint, a later checkpoint is a warning (``trail-as-of``), not
        a trail served from an older copy of the log (``trail-outdated``).
    """

    key: bytes
    subject: str
    served: IndexProofOut | None
    after: int = -1
    through: int | None = None
    remembered: ListHead | None = None
    archived: bool = False


@dataclass(frozen=True)
class CompletenessReport:
    """What :func:`completeness_findings` found, and the head it verified (None: none)."""

    findings: list[Finding]
    #: The verified list's head, and the checkpoint size it is at: what a client remembers.
    head: ListHead | None = None
    tree_size: int | None = None


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _shown(leaves: Sequence[int]) -> list[int]:
    return list(leaves[:_SHOWN])


def index_behind(served: IndexProofOut | None, tree_sizes: Iterable[int]) -> bool:
    """Whether the pages of a list were proved at a newer checkpoint than the index proof the
    client holds (the first page's: the service sends it once): a checkpoint landed while it
    read them. Then it asks for the page after the last event again with ``index=true``, the
    proof at the newest checkpoint, rather than report the list outdated."""
    newest = max(tree_sizes, default=0)
    return newest > (0 if served is None else served.treeSize)


def completeness_findings(
    claim: IndexClaim,
    served_leaves: Sequence[int],
    *,
    checkpoint_at: CheckpointRoots | None,
    latest: OnChainCheckpoint | None,
) -> CompletenessReport:
    """Check a served list against the chain.

    :param served_leaves: the leaf index of every event served (in any order).
    :param checkpoint_at: the roots the chain holds for the served proof's ``treeSize`` (None:
        none; ignored when no proof was served).
    :param latest: the chain's latest checkpoint, read by the verifier itself.
    """
    served = claim.served
    subject = claim.subject
    base: dict[str, Any] = {"key": _hex(claim.key)}
    if served is None:
        if latest is None:
            return CompletenessReport([])  # nothing anchored yet: nothing to be complete about
        return CompletenessReport(
            [
                Finding(
                    CompletenessCode.INDEX_PROOF_MISSING,
                    "error",
                    f"no index proof was served with {subject}, though the chain holds a "
                    f"checkpoint (size {latest.tree_size}): whether it is complete cannot be "
                    "checked",
                    None,
                    {**base, "latestTreeSize": latest.tree_size},
                )
            ]
        )
    size = served.treeSize
    context = {**base, "treeSize": size}
    if served.key != claim.key:
        return CompletenessReport(
            [
                Finding(
                    CompletenessCode.TRAIL_INCOMPLETE,
                    "error",
                    f"the index proof served with {subject} is for another key: it proves "
                    "nothing about this list",
                    None,
                    {**context, "servedKey": _hex(served.key)},
                )
            ]
        )
    if checkpoint_at is None:
        return CompletenessReport(
            [
                Finding(
                    CompletenessCode.CHECKPOINT_NOT_ON_CHAIN,
                    "error",
                    f"the index proof of {subject} is at a checkpoint of size {size} that the "
                    "chain does not hold: it cannot be trusted",
                    None,
                    context,
                )
            ]
        )
    findings: list[Finding] = []
    head: ListHead | None = None
    listed = list(served.leafIndexes)
    try:
        proof = LookupProof.from_bytes(served.proof)
        head = index.verify_list_lookup(claim.key, listed, size, proof, checkpoint_at.index_root)
    except ProofError as exc:
        findings.append(
            Finding(
                CompletenessCode.TRAIL_INCOMPLETE,
                "error",
                f"the list of {len(listed)} leaf index(es) served for {subject} is not the one "
                f"the index root on chain at checkpoint {size} commits to: {exc.detail}",
                None,
                {**context, "indexRoot": _hex(checkpoint_at.index_root), "listed": len(listed)},
            )
        )
    if head is not None:
        got = set(served_leaves)
        upper = claim.through
        missing = [
            leaf
            for leaf in listed
            if leaf > claim.after and (upper is None or leaf <= upper) and leaf not in got
        ]
        if missing:
            findings.append(
                Finding(
                    CompletenessCode.TRAIL_INCOMPLETE,
                    "error",
                    f"{len(missing)} event(s) of {subject} that the index lists at checkpoint "
                    f"{size} were not served (leaf {missing[0]}"
                    + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                    + "): deleted, filtered out or withheld",
                    None,
                    {**context, "missing": len(missing), "missingLeaves": _shown(missing)},
                )
            )
        in_list = set(listed)
        unlisted = sorted(leaf for leaf in got if leaf < size and leaf not in in_list)
        if unlisted:
            findings.append(
                Finding(
                    CompletenessCode.TRAIL_INCOMPLETE,
                    "error",
                    f"{len(unlisted)} event(s) served with {subject} below checkpoint {size} "
                    f"are not in the list the index holds for it (leaf {unlisted[0]}"
                    + (f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else "")
                    + "): the index and the log disagree",
                    None,
                    {**context, "unlisted": len(unlisted), "unlistedLeaves": _shown(unlisted)},
                )
            )
        if claim.remembered is not None:
            try:
                index.verify_list_extends(claim.remembered, listed)
            except ProofError as exc:
                findings.append(
                    Finding(
                        CompletenessCode.HISTORY_SHRUNK,
                        "error",
                        f"{subject} is not an extension of the one seen before "
                        f"({claim.remembered.size} events): {exc.detail}",
                        None,
                        {
                            **context,
                            "rememberedSize": claim.remembered.size,
                            "rememberedRoot": _hex(claim.remembered.root),
                            "listed": len(listed),
                        },
                    )
                )
    if latest is not None and latest.tree_size > size and claim.archived:
        findings.append(
            Finding(
                CompletenessCode.TRAIL_AS_OF,
                "warning",
                f"{subject} is proven complete as of checkpoint {size}; the chain has anchored "
                f"up to {latest.tree_size} since: events logged after the export are not "
                "covered (fetch it again to cover them)",
                None,
                {**context, "latestTreeSize": latest.tree_size},
            )
        )
    elif latest is not None and latest.tree_size > size:
        findings.append(
            Finding(
                CompletenessCode.TRAIL_OUTDATED,
                "error",
                f"{subject} is proven complete at checkpoint {size}, but the chain's latest "
                f"checkpoint is {latest.tree_size}: what was anchored since is not covered (a "
                "trail served from an older copy of the log)",
                None,
                {**context, "latestTreeSize": latest.tree_size},
            )
        )
    # The head is the chain's word once the proof verified (even if the service then failed to
    # serve every listed event); one that does not extend the remembered head is not taken.
    keep = head is not None and not any(f.code == CompletenessCode.HISTORY_SHRUNK for f in findings)
    return CompletenessReport(findings, head if keep else None, size if keep else None)


class RebuiltIndex(Protocol):
    """What :func:`index_root_findings` extends: a :class:`~ledger.index.MemoryIndex`, or an
    index kept on disk (the regulator's monitor's)."""

    @property
    def size(self) -> int: ...

    def root(self, size: int | None = None) -> bytes: ...

    def extend(self, events: Iterable[Sequence[bytes]]) -> IndexUpdate: ...


def index_root_findings(
    keys: Sequence[Sequence[bytes]],
    checkpoints: Iterable[CheckpointRoots],
    rebuilt: RebuiltIndex | None = None,
) -> tuple[list[Finding], RebuiltIndex]:
    """Rebuild the index over events whose keys are ``keys`` (in log order: leaf ``i`` has
    ``keys[i]``, :func:`ledger.index.event_keys`) one batch per checkpoint, and compare each
    checkpoint's on-chain index root with the rebuilt one (``index-root-mismatch``).

    Checkpoints beyond the events given are skipped (the audit reports those itself:
    ``checkpoint-beyond-log``); they are taken in increasing size. Returns the findings and
    the rebuilt index (at the largest checkpoint checked).

    ``rebuilt``: an index already built over the first ``rebuilt.size`` events, extended in
    place (the monitor's, kept on disk, checkpoint after checkpoint: ``keys`` then need only
    answer slices from ``rebuilt.size`` on)."""
    rebuilt = MemoryIndex() if rebuilt is None else rebuilt
    findings: list[Finding] = []
    for checkpoint in sorted(checkpoints, key=lambda c: c.tree_size):
        size = checkpoint.tree_size
        if size > len(keys) or size < rebuilt.size:
            continue
        root = (
            rebuilt.extend(keys[rebuilt.size : size]).root
            if size > rebuilt.size
            else (rebuilt.root())
        )
        if root != checkpoint.index_root:
            findings.append(
                Finding(
                    CompletenessCode.INDEX_ROOT_MISMATCH,
                    "error",
                    f"the index root the chain holds for checkpoint {size} is not the root of "
                    "the index of the log's events at that size: the index was built wrong, "
                    "and lookups proved against it may leave events out",
                    None,
                    {
                        "treeSize": size,
                        "indexRoot": _hex(checkpoint.index_root),
                        "rebuiltRoot": _hex(root),
                    },
                )
            )
    return findings, rebuilt
