"""The pure judgement of a key's trail (scripts/monitor/trails.py), a patient's or a record's:
the operator's list of the key's leaves taken only when it is the whole list the monitor's own
index holds."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest

from ledger import index
from ledger.index import MemoryIndex
from ledger.wire import IndexProofOut
from scripts.monitor.store import Store
from scripts.monitor.trails import (
    ListCheck,
    OwnIndex,
    check_list,
    check_served,
    check_unknown,
    completeness_text,
    own_root_findings,
)

RECORDS = [bytes([n]) * 32 for n in range(1, 4)]
PATIENTS = ["0x" + f"{n:040x}" for n in range(1, 4)]
#: (patient, record) of each leaf: patient 1 has leaves 0, 2, 3, 6 over two records; record 1
#: has leaves 0, 2, 6.
LOG = [(0, 0), (1, 1), (0, 0), (0, 2), (2, 1), (1, 1), (0, 0), (1, 2)]
KEY = index.patient_key(PATIENTS[0])
MINE = [0, 2, 3, 6]
RECORD_KEY = index.record_key(RECORDS[0])
RECORD_LEAVES = [0, 2, 6]


def own_index(
    size: int = len(LOG),
    key: bytes = KEY,
    chain_root: bytes | None = None,
    what: str = "the patient",
) -> OwnIndex:
    built = MemoryIndex.build(index.keys_of(PATIENTS[p], RECORDS[r]) for p, r in LOG[:size])
    _leaves, proof = built.lookup(key)
    root = built.root()
    return OwnIndex(key, what, size, root, proof, root if chain_root is None else chain_root)


def served(leaves: list[int], tree_size: int = len(LOG), key: bytes = KEY) -> IndexProofOut:
    """An operator's answer (its head and proof are the operator's: the monitor ignores them)."""
    head = index.list_head(leaves)
    return IndexProofOut(
        key=key,
        treeSize=tree_size,
        indexRoot=b"\x00" * 32,
        leafIndexes=leaves,
        head={"size": head.size, "root": head.root},
        proof=b"",
    )


def test_the_operators_whole_list_is_taken_below_the_monitors_index() -> None:
    own = own_index(size=5)  # the monitor verified the checkpoint of 5; the operator is at 8
    check = check_served(served(MINE), own)
    assert check.leaves == [0, 2, 3]
    assert check.findings == []
    assert check.head == index.list_head([0, 2, 3])


def test_a_patient_with_no_event_has_an_empty_list_proven_absent() -> None:
    key = index.patient_key("0x" + "ab" * 20)
    own = own_index(key=key)
    check = check_served(served([], key=key), own)
    assert (check.leaves, check.findings) == ([], [])


@pytest.mark.parametrize(
    "leaves",
    [
        pytest.param([0, 2, 6], id="a-leaf-left-out"),
        pytest.param([0, 1, 2, 3, 6], id="another-patients-leaf-added"),
        pytest.param([0, 2, 4, 6], id="a-leaf-moved"),
        pytest.param([], id="all-hidden"),
    ],
)
def test_a_list_that_is_not_the_whole_list_is_incomplete(leaves: list[int]) -> None:
    check = check_served(served(leaves), own_index())
    assert check.leaves is None
    (finding,) = check.findings
    assert (finding.code, finding.severity) == ("trail-incomplete", "error")
    assert finding.context["source"] == "the operator"
    assert finding.context["indexSize"] == len(LOG)


def test_a_records_list_is_judged_the_same_way_by_its_own_key() -> None:
    own = own_index(key=RECORD_KEY, what="the record")
    check = check_served(served(RECORD_LEAVES, key=RECORD_KEY), own)
    assert (check.leaves, check.findings) == (RECORD_LEAVES, [])
    assert check.head == index.list_head(RECORD_LEAVES)
    # The patient's list is not the record's, though both are about one patient's events.
    check = check_served(served(MINE, key=RECORD_KEY), own)
    assert check.leaves is None
    (finding,) = check.findings
    assert finding.code == "trail-incomplete"
    assert finding.detail.startswith("the record's list of events from the operator (4 below")
    assert finding.context["key"] == "0x" + RECORD_KEY.hex()


def test_an_operator_that_knows_no_event_of_a_key_is_judged_as_an_empty_list() -> None:
    absent = index.record_key(b"\x09" * 32)
    check = check_unknown(own_index(key=absent, what="the record"))
    assert (check.leaves, check.findings) == ([], [])
    assert check.head == index.list_head([])
    check = check_unknown(own_index(key=RECORD_KEY, what="the record"))  # hiding it whole
    assert (check.leaves, check.head) == (None, None)
    (finding,) = check.findings
    assert (finding.code, finding.context["source"]) == ("trail-incomplete", "the operator")
    assert check_unknown(own_index(size=0, key=RECORD_KEY)) == ListCheck([])


def test_a_list_at_an_older_checkpoint_than_the_monitors_is_outdated() -> None:
    check = check_served(served([0, 2, 3], tree_size=5), own_index())
    assert check.leaves is None
    assert [f.code for f in check.findings] == ["trail-outdated"]


def test_no_answer_while_the_monitor_holds_a_checkpoint_is_a_missing_proof() -> None:
    check = check_served(None, own_index())
    assert check.leaves is None
    assert [f.code for f in check.findings] == ["index-proof-missing"]


def test_an_answer_for_another_key_is_incomplete() -> None:
    other = index.patient_key(PATIENTS[1])
    check = check_served(served([1, 4, 5, 7], key=other), own_index())
    assert check.leaves is None
    (finding,) = check.findings
    assert finding.code == "trail-incomplete"
    assert finding.context["servedKey"] == "0x" + other.hex()


def test_before_any_verified_checkpoint_there_is_nothing_to_prove() -> None:
    check = check_served(None, own_index(size=0))
    assert (check.leaves, check.findings) == ([], [])


def test_the_mirrors_own_list_is_checked_the_same_way() -> None:
    own = own_index()
    assert check_list(MINE, own, "the mirror") == (index.list_head(MINE), [])
    head, (finding,) = check_list(MINE[:-1], own, "the mirror")
    assert head is None
    assert finding.context["source"] == "the mirror"


def test_an_index_the_chain_does_not_commit_to_is_reported() -> None:
    own = own_index(chain_root=b"\x01" * 32)
    (finding,) = own_root_findings(own)
    assert (finding.code, finding.severity) == ("index-root-mismatch", "error")
    assert own_root_findings(own_index()) == []
    assert own_root_findings(replace(own, chain_root=None)) == []  # no such checkpoint


def test_completeness_says_what_is_proven() -> None:
    own = own_index()
    proven = completeness_text(own, index.list_head(MINE), 2)
    assert proven.startswith(f"4 event(s) below leaf {len(LOG)}, the whole list")
    assert proven.endswith("2 later event(s) mirrored, not yet covered by a verified checkpoint")
    assert completeness_text(own, None, 0).startswith("not proven at the monitor's checkpoint 8")
    assert completeness_text(own_index(size=0), None, 3).startswith("no checkpoint verified")


def test_the_stored_index_makes_the_lookup_proof_the_memory_index_makes(tmp_path: Path) -> None:
    """StoredIndex.lookup (one query, from the monitor's own trie) gives each key's proof as
    MemoryIndex does, present or absent, over several updates (the trie's depth grows)."""
    rng = random.Random(5)
    people = ["0x" + rng.randbytes(20).hex() for _ in range(40)]
    log = [index.keys_of(rng.choice(people), rng.randbytes(32)) for _ in range(600)]
    store = Store(tmp_path / "m.db")
    reference = MemoryIndex()
    for start in range(0, len(log), 150):
        with store.step():
            store.index().extend(log[start : start + 150])
        reference.extend(log[start : start + 150])
        for key in [index.patient_key(p) for p in people] + [index.patient_key("0x" + "ab" * 20)]:
            size, root, proof = store.index().lookup(key)
            leaves, expected = reference.lookup(key)
            assert (size, root, proof) == (reference.size, reference.root(), expected)
            index.verify_list_lookup(key, leaves, size, proof, root)
    store.close()
