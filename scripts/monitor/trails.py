"""A key's trail as the monitor answers it — a record's or a patient's: which leaves are the
key's, proven whole by the monitor's own verifiable index. Pure: the console reads and asks,
this judges.

The mirror has no index by patient (state format 2 dropped it: a random key, a page of its
B-tree written per event) and the console does not use its index by record (the same cost, to
be dropped), and the monitor's verifiable index
(:class:`~scripts.monitor.store.StoredIndex`) keeps each key's list *head* (count and root, in
the trie's leaf), not the list. So the list of leaves comes from the operator (the index
answer of ``GET /v1/records/{recordRef}/trail`` or ``GET /v1/events?patient=``), and is taken
only once it is the list the monitor's own index holds for the key at its size — the last
checkpoint the monitor verified, whose index root it rebuilt from its mirror and compared with
the chain's (:func:`check_served`, with :func:`ledger.index.verify_list_lookup`: the
operator's own proof is not needed). The events are then read from the mirror by position. A
list that does not verify is reported (``trail-incomplete``, ``trail-outdated``,
``index-proof-missing``) and the console reads the mirror's own rows instead, checked the same
way (:func:`check_list`).

The entries past that size (not yet covered by a checkpoint the monitor verified) are the
mirror's tail, read by position too; each was verified when it was mirrored, and the index
will cover it at the next checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ledger import index
from ledger.completeness import CompletenessCode
from ledger.errors import ProofError
from ledger.index import ListHead, LookupProof
from ledger.verify import Finding
from ledger.wire import IndexProofOut

__all__ = [
    "ListCheck",
    "OwnIndex",
    "check_list",
    "check_served",
    "check_unknown",
    "completeness_text",
    "own_root_findings",
]

#: Leaf indexes shown in a finding's context at most (the count is always given).
_SHOWN = 20


@dataclass(frozen=True)
class OwnIndex:
    """The monitor's own index, as one key sees it.

    :param key: the index key (:func:`ledger.index.record_key`, :func:`~ledger.index.patient_key`).
    :param what: whose key it is, for a person ("the record", "the patient").
    :param size: the log size it covers (the last checkpoint the monitor verified; 0: none).
    :param root: its root at that size.
    :param proof: the key's lookup proof in it, made from the monitor's own trie.
    :param chain_root: the index root the chain's checkpoint of that size commits to (None:
        the monitor holds no such checkpoint).
    """

    key: bytes
    what: str
    size: int
    root: bytes
    proof: LookupProof
    chain_root: bytes | None = None


@dataclass(frozen=True)
class ListCheck:
    """What :func:`check_served` made of the operator's answer: the key's whole list below the
    monitor's index size (None: not to be had from the answer) and what is wrong with it."""

    leaves: list[int] | None
    findings: list[Finding] = field(default_factory=list)
    head: ListHead | None = None


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _context(own: OwnIndex, **more: Any) -> dict[str, Any]:
    return {"key": _hex(own.key), "indexSize": own.size, **more}


def check_list(
    leaves: Sequence[int], own: OwnIndex, source: str
) -> tuple[ListHead | None, list[Finding]]:
    """Whether ``leaves`` (from ``source``: "the operator", "the mirror") is the key's whole
    list in the monitor's own index: its head when it is, else a ``trail-incomplete``
    finding."""
    try:
        return index.verify_list_lookup(own.key, leaves, own.size, own.proof, own.root), []
    except ProofError as exc:
        finding = Finding(
            CompletenessCode.TRAIL_INCOMPLETE,
            "error",
            f"{own.what}'s list of events from {source} ({len(leaves)} below leaf {own.size}) "
            f"is not the whole list the monitor's own index holds at that size: {exc.detail}",
            None,
            _context(own, source=source, count=len(leaves), leaves=list(leaves[:_SHOWN])),
        )
        return None, [finding]


def own_root_findings(own: OwnIndex) -> list[Finding]:
    """``index-root-mismatch`` when the monitor's index is not the one the chain's checkpoint
    of its size commits to: a list proven against it is then the log's, not the chain's (the
    monitor raised the same finding when it verified that checkpoint)."""
    if own.chain_root is None or own.chain_root == own.root:
        return []
    return [
        Finding(
            CompletenessCode.INDEX_ROOT_MISMATCH,
            "error",
            f"the monitor's index rebuilt from the log at size {own.size} is not the one the "
            "chain's checkpoint commits to: the operator's index proofs are not to be trusted",
            None,
            _context(own, indexRoot=_hex(own.root), chainIndexRoot=_hex(own.chain_root)),
        )
    ]


def check_served(served: IndexProofOut | None, own: OwnIndex) -> ListCheck:
    """The operator's index answer for the key (``served``) judged by the monitor's own index:
    the part of its list below ``own.size``, when that is the whole list the monitor's index
    holds (:func:`check_list`). An answer at an older checkpoint than the monitor verified
    (``trail-outdated``), for another key, or none while the monitor holds a checkpoint
    (``index-proof-missing``) gives no list."""
    if own.size == 0:
        return ListCheck([])  # no checkpoint verified yet: every entry is the mirror's tail
    if served is None:
        finding = Finding(
            CompletenessCode.INDEX_PROOF_MISSING,
            "error",
            f"the operator served no index answer for {own.what}, though the monitor verified "
            f"a checkpoint of {own.size} events",
            None,
            _context(own),
        )
        return ListCheck(None, [finding])
    if served.key != own.key:
        finding = Finding(
            CompletenessCode.TRAIL_INCOMPLETE,
            "error",
            f"the operator's index answer is for the key {_hex(served.key)}, not {own.what}'s",
            None,
            _context(own, servedKey=_hex(served.key)),
        )
        return ListCheck(None, [finding])
    if served.treeSize < own.size:
        finding = Finding(
            CompletenessCode.TRAIL_OUTDATED,
            "error",
            f"the operator's list of {own.what}'s events is at checkpoint {served.treeSize}, "
            f"older than the one the monitor verified ({own.size}): what was anchored since is "
            "not covered",
            None,
            _context(own, treeSize=served.treeSize),
        )
        return ListCheck(None, [finding])
    leaves = [leaf for leaf in served.leafIndexes if leaf < own.size]
    head, findings = check_list(leaves, own, "the operator")
    return ListCheck(leaves if head is not None else None, findings, head)


def check_unknown(own: OwnIndex) -> ListCheck:
    """The operator says it knows no event of the key (it answered 404): the empty list, judged
    as any list it serves (:func:`check_list`), so that the mirror need not be scanned when
    the monitor's own index agrees, and a key it hides whole is reported when it does not."""
    if own.size == 0:
        return ListCheck([])
    head, findings = check_list([], own, "the operator")
    return ListCheck([] if head is not None else None, findings, head)


def completeness_text(own: OwnIndex, head: ListHead | None, tail: int) -> str:
    """What the trail is proven to be, for a person (the report's ``completeness``)."""
    if own.size == 0:
        proven = "no checkpoint verified by the monitor yet: not proven"
    elif head is None:
        proven = f"not proven at the monitor's checkpoint {own.size}"
    else:
        proven = (
            f"{head.size} event(s) below leaf {own.size}, the whole list of the monitor's own "
            f"index at its checkpoint {own.size} (list root {_hex(head.root)})"
        )
    return f"{proven}; {tail} later event(s) mirrored, not yet covered by a verified checkpoint"
