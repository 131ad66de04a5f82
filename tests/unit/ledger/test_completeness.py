"""ledger.completeness: a served list against the index root on chain, every way it can fail.

The index is ``ledger.index.MemoryIndex`` over a small log; the "chain" is the roots it
computed, given as :class:`~ledger.chain.model.CheckpointRoots`. Each failure has its own
test: a served answer is judged complete only when every check passes.
"""

from __future__ import annotations

import hashlib

import pytest

from ledger import index
from ledger.chain.model import CheckpointRoots, OnChainCheckpoint
from ledger.completeness import CompletenessCode, IndexClaim, completeness_findings
from ledger.index import ListHead, MemoryIndex
from ledger.wire import IndexProofOut, ListHeadOut

RECORD = b"\x10" * 32
OTHER_RECORD = b"\x20" * 32
PATIENT = "0x" + "11" * 20

#: (patient, record) of each event of the log, in order: leaves 0..9.
LOG = [
    (PATIENT, RECORD),
    (PATIENT, OTHER_RECORD),
    (PATIENT, RECORD),
    ("0x" + "22" * 20, b"\x30" * 32),
    (PATIENT, RECORD),
    (PATIENT, None),
    (PATIENT, OTHER_RECORD),
    (PATIENT, RECORD),
    (PATIENT, RECORD),
    ("0x" + "22" * 20, RECORD),
]
FIRST, SECOND = 6, 10


@pytest.fixture(scope="module")
def built() -> MemoryIndex:
    memory = MemoryIndex(history=True)
    memory.extend(index.keys_of(p, r) for p, r in LOG[:FIRST])
    memory.extend(index.keys_of(p, r) for p, r in LOG[FIRST:SECOND])
    return memory


def served(memory: MemoryIndex, key: bytes, size: int, **change: object) -> IndexProofOut:
    leaves, proof = memory.lookup(key, size)
    head = index.list_head(leaves)
    values: dict[str, object] = {
        "key": key,
        "treeSize": size,
        "indexRoot": memory.root(size),
        "leafIndexes": leaves,
        "head": ListHeadOut(size=head.size, root=head.root),
        "proof": proof.to_bytes(),
    }
    values.update(change)
    return IndexProofOut.model_validate(values)


def roots(memory: MemoryIndex, size: int) -> CheckpointRoots:
    return CheckpointRoots(size, hashlib.sha256(b"log %d" % size).digest(), memory.root(size))


def latest(memory: MemoryIndex, size: int) -> OnChainCheckpoint:
    at = roots(memory, size)
    return OnChainCheckpoint(size, at.root_hash, at.index_root, 100 + size, 1_000 + size)


def check(
    memory: MemoryIndex,
    claim: IndexClaim,
    leaves: list[int],
    *,
    at: int | None = None,
    newest: int = SECOND,
) -> tuple[list[str], ListHead | None]:
    size = at if at is not None else (claim.served.treeSize if claim.served else SECOND)
    report = completeness_findings(
        claim,
        leaves,
        checkpoint_at=roots(memory, size) if size in memory.versions else None,
        latest=latest(memory, newest),
    )
    return [str(f.code) for f in report.findings], report.head


RECORD_KEY = index.record_key(RECORD)
RECORD_LEAVES = [0, 2, 4, 7, 8, 9]


def test_a_complete_trail_has_no_finding_and_gives_its_head(built: MemoryIndex) -> None:
    claim = IndexClaim(RECORD_KEY, "the record's trail", served(built, RECORD_KEY, SECOND))
    codes, head = check(built, claim, RECORD_LEAVES)
    assert codes == []
    assert head == index.list_head(RECORD_LEAVES)
    # A patient's history, and a key the index does not hold (an empty list, proved absent).
    patient = index.patient_key(PATIENT)
    history = [i for i, (p, _r) in enumerate(LOG) if p == PATIENT]
    claim = IndexClaim(patient, "the history", served(built, patient, SECOND))
    assert check(built, claim, history) == ([], index.list_head(history))
    absent = index.record_key(b"\x99" * 32)
    claim = IndexClaim(absent, "the record's trail", served(built, absent, SECOND))
    assert check(built, claim, []) == ([], index.list_head([]))


def test_no_proof_is_an_error_once_the_chain_holds_a_checkpoint(built: MemoryIndex) -> None:
    claim = IndexClaim(RECORD_KEY, "the record's trail", None)
    assert check(built, claim, RECORD_LEAVES)[0] == [CompletenessCode.INDEX_PROOF_MISSING]
    nothing_anchored = completeness_findings(claim, [], checkpoint_at=None, latest=None)
    assert nothing_anchored.findings == []


def test_a_proof_for_another_key_proves_nothing(built: MemoryIndex) -> None:
    other = index.record_key(OTHER_RECORD)
    claim = IndexClaim(RECORD_KEY, "the record's trail", served(built, other, SECOND))
    codes, head = check(built, claim, [1, 6])
    assert codes == [CompletenessCode.TRAIL_INCOMPLETE]
    assert head is None


def test_a_proof_at_a_checkpoint_the_chain_does_not_hold(built: MemoryIndex) -> None:
    claim = IndexClaim(
        RECORD_KEY,
        "the record's trail",
        served(built, RECORD_KEY, SECOND, treeSize=SECOND + 1),
    )
    codes, _ = check(built, claim, RECORD_LEAVES, at=SECOND + 1)
    assert codes == [CompletenessCode.CHECKPOINT_NOT_ON_CHAIN]


@pytest.mark.parametrize(
    "leaves",
    [
        [0, 2, 4, 7, 8],  # the last entry dropped from the list
        [0, 2, 7, 8, 9],  # one filtered out of the middle
        [0, 2, 4, 7, 8, 9, 5],  # out of order
        [0, 2, 3, 4, 7, 8, 9],  # one added
        [0, 2, 4, 7, 8, 10],  # beyond the checkpoint
        [],  # claimed absent
    ],
    ids=["dropped-last", "filtered", "unordered", "added", "beyond", "empty"],
)
def test_a_list_that_is_not_the_committed_one_is_incomplete(
    built: MemoryIndex, leaves: list[int]
) -> None:
    claim = IndexClaim(
        RECORD_KEY, "the record's trail", served(built, RECORD_KEY, SECOND, leafIndexes=leaves)
    )
    codes, head = check(built, claim, [leaf for leaf in leaves if leaf < SECOND])
    assert codes == [CompletenessCode.TRAIL_INCOMPLETE]
    assert head is None


def test_a_malformed_proof_is_incomplete(built: MemoryIndex) -> None:
    claim = IndexClaim(
        RECORD_KEY, "the record's trail", served(built, RECORD_KEY, SECOND, proof=b"\x00")
    )
    assert check(built, claim, RECORD_LEAVES)[0] == [CompletenessCode.TRAIL_INCOMPLETE]


def test_a_listed_event_not_served_is_incomplete(built: MemoryIndex) -> None:
    claim = IndexClaim(RECORD_KEY, "the record's trail", served(built, RECORD_KEY, SECOND))
    report = completeness_findings(
        claim,
        [0, 2, 7, 8, 9],
        checkpoint_at=roots(built, SECOND),
        latest=latest(built, SECOND),
    )
    (finding,) = report.findings
    assert finding.code == CompletenessCode.TRAIL_INCOMPLETE
    assert finding.context["missingLeaves"] == [4]
    assert "leaf 4" in finding.detail
    assert report.head == index.list_head(RECORD_LEAVES)  # the chain's list, still remembered


def test_a_served_event_the_list_does_not_hold_is_incomplete(built: MemoryIndex) -> None:
    claim = IndexClaim(RECORD_KEY, "the record's trail", served(built, RECORD_KEY, SECOND))
    report = completeness_findings(
        claim,
        [*RECORD_LEAVES, 3, 12],  # 3 is another record's; 12 is past the checkpoint: pending
        checkpoint_at=roots(built, SECOND),
        latest=latest(built, SECOND),
    )
    (finding,) = report.findings
    assert finding.code == CompletenessCode.TRAIL_INCOMPLETE
    assert finding.context["unlistedLeaves"] == [3]


def test_a_page_is_checked_within_its_window(built: MemoryIndex) -> None:
    proof = served(built, RECORD_KEY, SECOND)
    page = IndexClaim(RECORD_KEY, "the record's trail", proof, after=2, through=7)
    assert check(built, page, [4, 7])[0] == []
    assert check(built, page, [7])[0] == [CompletenessCode.TRAIL_INCOMPLETE]
    last_page = IndexClaim(RECORD_KEY, "the record's trail", proof, after=7)
    assert check(built, last_page, [8, 9])[0] == []
    assert check(built, last_page, [8])[0] == [CompletenessCode.TRAIL_INCOMPLETE]


def test_a_trail_proven_at_an_older_checkpoint_is_outdated(built: MemoryIndex) -> None:
    """The trail as it was at the first checkpoint: complete then, every proof valid, but the
    chain has moved on (the operator serves an older copy of the log)."""
    old = [0, 2, 4]
    claim = IndexClaim(RECORD_KEY, "the record's trail", served(built, RECORD_KEY, FIRST))
    codes, head = check(built, claim, old, newest=SECOND)
    assert codes == [CompletenessCode.TRAIL_OUTDATED]
    assert head == index.list_head(old)
    assert check(built, claim, old, newest=FIRST)[0] == []


def test_a_history_that_does_not_extend_the_remembered_one_has_shrunk(
    built: MemoryIndex,
) -> None:
    proof = served(built, RECORD_KEY, SECOND)
    grew = IndexClaim(RECORD_KEY, "the history", proof, remembered=index.list_head([0, 2, 4]))
    assert check(built, grew, RECORD_LEAVES) == ([], index.list_head(RECORD_LEAVES))
    same = IndexClaim(RECORD_KEY, "the history", proof, remembered=index.list_head(RECORD_LEAVES))
    assert check(built, same, RECORD_LEAVES)[0] == []
    for remembered in ([0, 2, 4, 7, 8, 9, 11], [0, 1, 2], [0, 2, 5]):
        claim = IndexClaim(RECORD_KEY, "the history", proof, remembered=index.list_head(remembered))
        codes, head = check(built, claim, RECORD_LEAVES)
        assert codes == [CompletenessCode.HISTORY_SHRUNK], remembered
        assert head is None  # not taken: the alarm stays until someone looks
