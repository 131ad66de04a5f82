"""Tests of ledger.merkle against three independent references.

1. Known-answer vectors published with the Certificate Transparency / Trillian code
   (transparency-dev/merkle ``proof/verify_test.go``, Apache-2.0; used as data only).
2. ``Rfc9162Oracle`` below: a recursive transcription of RFC 9162 §2.1.1 (MTH), §2.1.3.1
   (PATH) and §2.1.4.1 (PROOF/SUBPROOF) that shares no code with ledger.merkle.
3. The ``pymerkle`` package (7.0.0), an unrelated implementation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import pymerkle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import LedgerError, ProofError
from ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    MemoryTree,
    MissingNodeError,
    NodeId,
    assemble,
    consistency_plan,
    fold,
    inclusion_plan,
    leaf_hash,
    node_hash,
    root_from_inclusion_proof,
    root_plan,
    subtree_nodes,
    verify_consistency,
    verify_inclusion,
)

# ---------------------------------------------------------------------------------------
# Independent RFC 9162 oracle
# ---------------------------------------------------------------------------------------


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Rfc9162Oracle:
    """RFC 9162 §2.1 transcribed literally, over the inputs ``D[0:len(data)]``.

    Ranges are ``[start, end)`` into ``data`` instead of list slices, and MTH is memoised
    per range so that exhaustive sweeps stay fast; nothing else is added.
    """

    def __init__(self, data: Sequence[bytes]) -> None:
        self.data = list(data)
        self._mth: dict[tuple[int, int], bytes] = {}

    @staticmethod
    def split(n: int) -> int:
        """The largest power of two smaller than n (n > 1)."""
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    def mth(self, start: int, end: int) -> bytes:
        """MTH(D[start:end])."""
        key = (start, end)
        if key not in self._mth:
            n = end - start
            if n == 0:
                value = _sha256(b"")
            elif n == 1:
                value = _sha256(b"\x00" + self.data[start])
            else:
                k = self.split(n)
                value = _sha256(b"\x01" + self.mth(start, start + k) + self.mth(start + k, end))
            self._mth[key] = value
        return self._mth[key]

    def leaf(self, m: int) -> bytes:
        return self.mth(m, m + 1)

    def path(self, m: int, start: int, end: int) -> list[bytes]:
        """PATH(m, D[start:end]), m relative to start."""
        n = end - start
        if n == 1:
            return []
        k = self.split(n)
        if m < k:
            return [*self.path(m, start, start + k), self.mth(start + k, end)]
        return [*self.path(m - k, start + k, end), self.mth(start, start + k)]

    def subproof(self, m: int, start: int, end: int, b: bool) -> list[bytes]:
        """SUBPROOF(m, D[start:end], b)."""
        n = end - start
        if m == n:
            return [] if b else [self.mth(start, end)]
        k = self.split(n)
        if m <= k:
            return [*self.subproof(m, start, start + k, b), self.mth(start + k, end)]
        return [*self.subproof(m - k, start + k, end, False), self.mth(start, start + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        """PROOF(m, D[n]) for 0 < m <= n."""
        return self.subproof(m, 0, n, True)


# ---------------------------------------------------------------------------------------
# Shared data (built once per session, lazily)
# ---------------------------------------------------------------------------------------

EXHAUSTIVE = 70
BIG = 3000


def _event_digest(i: int) -> bytes:
    """A stand-in for medtrail's 32-byte event digests."""
    return _sha256(b"medtrail event %d" % i)


@cache
def _data() -> list[bytes]:
    return [_event_digest(i) for i in range(BIG)]


@cache
def _oracle() -> Rfc9162Oracle:
    return Rfc9162Oracle(_data())


@cache
def _tree() -> MemoryTree:
    return MemoryTree(leaf_hash(d) for d in _data())


@cache
def _pymerkle_tree() -> Any:
    # pymerkle's defaults are what RFC 9162 needs: algorithm="sha256" and
    # disable_security=False, i.e. leaf = sha256(0x00 || entry), node =
    # sha256(0x01 || left || right), empty tree = sha256(b"") (see pymerkle/hasher.py).
    # Its InmemoryTree hashes each appended entry as a leaf, which is exactly our
    # leaf_hash(event_digest), so both trees agree from the leaves up. Its indices count
    # from one.
    tree = pymerkle.InmemoryTree(algorithm="sha256")
    tree.append_entries(_data())
    return tree


def _flip(value: bytes, position: int = 0) -> bytes:
    return value[:position] + bytes([value[position] ^ 0x01]) + value[position + 1 :]


# ---------------------------------------------------------------------------------------
# Known-answer vectors (transparency-dev/merkle proof/verify_test.go, RFC 6962 test data)
# ---------------------------------------------------------------------------------------

CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
# Root for each tree size 0..8.
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (index, size, proof); the Go source numbers leaves from one, converted here.
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old_size, new_size, proof)
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


@pytest.fixture(scope="module")
def ct_tree() -> MemoryTree:
    return MemoryTree(leaf_hash(leaf) for leaf in CT_LEAVES)


def test_empty_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    assert HASH_SIZE == 32
    assert MemoryTree().root() == EMPTY_ROOT
    assert CompactRange().root() == EMPTY_ROOT
    assert fold([], {}) == EMPTY_ROOT
    assert root_plan(0) == []


def test_leaf_and_node_hash_prefixes() -> None:
    # A one-leaf tree's root is its leaf hash; a two-leaf root is one node hash.
    assert leaf_hash(b"").hex() == CT_ROOTS[1]
    assert node_hash(leaf_hash(b""), leaf_hash(b"\x00")).hex() == CT_ROOTS[2]


@pytest.mark.parametrize("size", range(len(CT_ROOTS)))
def test_reference_roots(ct_tree: MemoryTree, size: int) -> None:
    assert ct_tree.root(size).hex() == CT_ROOTS[size]
    frontier = CompactRange()
    for leaf in CT_LEAVES[:size]:
        frontier.append(leaf_hash(leaf))
    assert frontier.root().hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_reference_inclusion_proofs(
    ct_tree: MemoryTree, index: int, size: int, proof: list[str]
) -> None:
    assert [h.hex() for h in ct_tree.inclusion_proof(index, size)] == proof
    root = bytes.fromhex(CT_ROOTS[size])
    hashes = [bytes.fromhex(h) for h in proof]
    leaf = leaf_hash(CT_LEAVES[index])
    assert root_from_inclusion_proof(leaf, index, size, hashes) == root
    verify_inclusion(leaf, index, size, hashes, root)


@pytest.mark.parametrize(("old_size", "new_size", "proof"), CT_CONSISTENCY)
def test_reference_consistency_proofs(
    ct_tree: MemoryTree, old_size: int, new_size: int, proof: list[str]
) -> None:
    assert [h.hex() for h in ct_tree.consistency_proof(old_size, new_size)] == proof
    verify_consistency(
        old_size,
        new_size,
        bytes.fromhex(CT_ROOTS[old_size]),
        bytes.fromhex(CT_ROOTS[new_size]),
        [bytes.fromhex(h) for h in proof],
    )


# ---------------------------------------------------------------------------------------
# Against the RFC oracle: exhaustive for small trees, random for larger ones
# ---------------------------------------------------------------------------------------


def test_roots_match_oracle_exhaustively() -> None:
    oracle, tree = _oracle(), _tree()
    for size in range(EXHAUSTIVE + 1):
        assert tree.root(size) == oracle.mth(0, size), size


def test_inclusion_proofs_match_oracle_exhaustively() -> None:
    oracle, tree = _oracle(), _tree()
    for size in range(1, EXHAUSTIVE + 1):
        root = oracle.mth(0, size)
        for index in range(size):
            proof = tree.inclusion_proof(index, size)
            assert proof == oracle.path(index, 0, size), (index, size)
            verify_inclusion(oracle.leaf(index), index, size, proof, root)


def test_consistency_proofs_match_oracle_exhaustively() -> None:
    oracle, tree = _oracle(), _tree()
    for new_size in range(EXHAUSTIVE + 1):
        new_root = oracle.mth(0, new_size)
        for old_size in range(new_size + 1):
            proof = tree.consistency_proof(old_size, new_size)
            expected = oracle.proof(old_size, new_size) if old_size else []
            assert proof == expected, (old_size, new_size)
            verify_consistency(old_size, new_size, oracle.mth(0, old_size), new_root, proof)


def test_plans_fetch_only_what_they_list() -> None:
    # A store answers a plan with exactly node_ids(): nothing else may be needed.
    tree = _tree()
    for size in (1, 2, 7, 8, 9, 63, 64, 65, 1000, BIG):
        for index in {0, size // 3, size - 1}:
            plan = inclusion_plan(index, size)
            fetched = {node: tree.nodes[node] for node in plan.node_ids()}
            assert assemble(plan, fetched) == tree.inclusion_proof(index, size)
        for old_size in {1, size // 2, size - 1}:
            plan = consistency_plan(old_size, size)
            fetched = {node: tree.nodes[node] for node in plan.node_ids()}
            assert assemble(plan, fetched) == tree.consistency_proof(old_size, size)
        fetched = {node: tree.nodes[node] for node in root_plan(size)}
        assert fold(root_plan(size), fetched) == _oracle().mth(0, size)


@st.composite
def _size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(min_value=1, max_value=BIG))
    return size, draw(st.integers(min_value=0, max_value=size - 1))


@st.composite
def _two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    new_size = draw(st.integers(min_value=0, max_value=BIG))
    return draw(st.integers(min_value=0, max_value=new_size)), new_size


@settings(max_examples=150, deadline=None)
@given(_size_and_index())
def test_random_inclusion_proofs_match_oracle(case: tuple[int, int]) -> None:
    size, index = case
    oracle, tree = _oracle(), _tree()
    assert tree.root(size) == oracle.mth(0, size)
    proof = tree.inclusion_proof(index, size)
    assert proof == oracle.path(index, 0, size)
    verify_inclusion(oracle.leaf(index), index, size, proof, oracle.mth(0, size))


@settings(max_examples=150, deadline=None)
@given(_two_sizes())
def test_random_consistency_proofs_match_oracle(case: tuple[int, int]) -> None:
    old_size, new_size = case
    oracle, tree = _oracle(), _tree()
    proof = tree.consistency_proof(old_size, new_size)
    assert proof == (oracle.proof(old_size, new_size) if old_size else [])
    verify_consistency(old_size, new_size, oracle.mth(0, old_size), oracle.mth(0, new_size), proof)


# ---------------------------------------------------------------------------------------
# Against pymerkle
# ---------------------------------------------------------------------------------------


def _check_against_pymerkle_inclusion(index: int, size: int) -> None:
    pm, tree = _pymerkle_tree(), _tree()
    root = tree.root(size)
    assert pm.get_root(size) == root
    theirs = pm.prove_inclusion(index + 1, size)
    ours = tree.inclusion_proof(index, size)
    # pymerkle's path is the leaf hash followed by the RFC 9162 PATH.
    assert theirs.path == [tree.leaf(index), *ours]
    # Their proof verifies with our verifier; ours, in their format, with theirs.
    verify_inclusion(tree.leaf(index), index, size, theirs.path[1:], pm.get_root(size))
    data = theirs.serialize()
    data["path"] = [h.hex() for h in (tree.leaf(index), *ours)]
    pymerkle.verify_inclusion(
        tree.leaf(index),
        root,
        pymerkle.InclusionProof.deserialize(data),
        index=index + 1,
        size=size,
        algorithm="sha256",
    )


def _check_against_pymerkle_consistency(old_size: int, new_size: int) -> None:
    pm, tree = _pymerkle_tree(), _tree()
    old_root, new_root = tree.root(old_size), tree.root(new_size)
    assert pm.get_root(old_size) == old_root
    assert pm.get_root(new_size) == new_root
    ours = tree.consistency_proof(old_size, new_size)
    verify_consistency(old_size, new_size, pm.get_root(old_size), pm.get_root(new_size), ours)
    if old_size == 0:
        return  # pymerkle proves nothing from the empty tree.
    theirs = pm.prove_consistency(old_size, new_size)
    # pymerkle 7's consistency proofs are NOT in RFC 9162 form: they are the audit path of
    # the first leaf after the old tree (leaf hash first, then PATH(old_size, D[new_size])),
    # plus a "subset" mask of the hashes that fold into the old root. So the comparison is
    # made where both agree: that path must equal our RFC inclusion proof for leaf
    # old_size, and pymerkle must accept its proof against our roots.
    if old_size < new_size:
        assert theirs.path == [
            tree.leaf(old_size),
            *tree.inclusion_proof(old_size, new_size),
        ]
        verify_inclusion(
            tree.leaf(old_size), old_size, new_size, theirs.path[1:], pm.get_root(new_size)
        )
    pymerkle.verify_consistency(
        old_root,
        new_root,
        theirs,
        prior_size=old_size,
        later_size=new_size,
        algorithm="sha256",
    )


def test_pymerkle_agrees_exhaustively() -> None:
    pm = _pymerkle_tree()
    assert pm.get_root(0) == EMPTY_ROOT
    for size in range(1, EXHAUSTIVE + 1):
        for index in range(size):
            _check_against_pymerkle_inclusion(index, size)
        for old_size in range(size + 1):
            _check_against_pymerkle_consistency(old_size, size)


@settings(max_examples=60, deadline=None)
@given(_size_and_index(), _two_sizes())
def test_pymerkle_agrees_on_random_trees(
    inclusion: tuple[int, int], consistency: tuple[int, int]
) -> None:
    size, index = inclusion
    _check_against_pymerkle_inclusion(index, size)
    _check_against_pymerkle_consistency(*consistency)


# ---------------------------------------------------------------------------------------
# Inclusion verification failures, one test per way of being wrong
# ---------------------------------------------------------------------------------------

# (index, size) pairs covering: single leaf, perfect trees, right-edge leaves, ephemeral
# siblings, left-only paths.
INCLUSION_CASES = [(0, 2), (1, 2), (2, 3), (0, 5), (4, 5), (3, 8), (6, 7), (12, 13), (5, 21)]


def _inclusion(index: int, size: int) -> tuple[bytes, list[bytes], bytes]:
    tree = _tree()
    return tree.leaf(index), tree.inclusion_proof(index, size), tree.root(size)


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_accepts_the_right_proof(index: int, size: int) -> None:
    leaf, proof, root = _inclusion(index, size)
    verify_inclusion(leaf, index, size, proof, root)
    assert root_from_inclusion_proof(leaf, index, size, proof) == root


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_rejects_a_flipped_byte_in_any_element(index: int, size: int) -> None:
    leaf, proof, root = _inclusion(index, size)
    for i in range(len(proof)):
        for position in (0, 17, HASH_SIZE - 1):
            bad = [*proof[:i], _flip(proof[i], position), *proof[i + 1 :]]
            with pytest.raises(ProofError, match="does not lead to the root"):
                verify_inclusion(leaf, index, size, bad, root)


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_rejects_a_wrong_root(index: int, size: int) -> None:
    leaf, proof, root = _inclusion(index, size)
    for wrong in (_flip(root), EMPTY_ROOT, _tree().root(size + 1)):
        with pytest.raises(ProofError, match="does not lead to the root"):
            verify_inclusion(leaf, index, size, proof, wrong)


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_rejects_a_wrong_leaf(index: int, size: int) -> None:
    _, proof, root = _inclusion(index, size)
    wrong = _tree().leaf((index + 1) % size) if size > 1 else leaf_hash(b"other")
    with pytest.raises(ProofError, match="does not lead to the root"):
        verify_inclusion(wrong, index, size, proof, root)


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_rejects_a_wrong_index(index: int, size: int) -> None:
    leaf, proof, root = _inclusion(index, size)
    for wrong in {index - 1, index + 1, index ^ 1, index ^ 2} - {index}:
        if 0 <= wrong < size:
            with pytest.raises(ProofError):
                verify_inclusion(leaf, wrong, size, proof, root)


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_rejects_a_wrong_size(index: int, size: int) -> None:
    # Trillian's probes: sizes that change the shape of the path. (A neighbouring size
    # whose path has the same shape does verify: see the test below.)
    leaf, proof, root = _inclusion(index, size)
    for wrong in (size * 2, size // 2):
        if wrong > index:
            with pytest.raises(ProofError):
                verify_inclusion(leaf, index, wrong, proof, root)


def test_a_proof_authenticates_the_root_not_the_size_label() -> None:
    # RFC 9162 verification only uses the size to decide the hashing order; PATH(0, D[5])
    # and PATH(0, D[6]) are hashed in the same order, so the proof of leaf 0 against the
    # size-5 root also "verifies" when labelled size 6. The size must come from the same
    # signed checkpoint as the root, never from the request. Same for consistency.
    leaf, proof, root = _inclusion(0, 5)
    verify_inclusion(leaf, 0, 6, proof, root)
    old_root, new_root, proof = _consistency(1, 5)
    verify_consistency(1, 6, old_root, new_root, proof)


def test_inclusion_rejects_an_index_not_below_the_size() -> None:
    leaf, proof, root = _inclusion(4, 5)
    for index, size in ((5, 5), (6, 5), (0, 0), (1, 0)):
        with pytest.raises(ProofError, match="outside a tree of size"):
            verify_inclusion(leaf, index, size, proof, root)
        with pytest.raises(ProofError, match="outside a tree of size"):
            inclusion_plan(index, size)


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_rejects_an_extra_element(index: int, size: int) -> None:
    leaf, proof, root = _inclusion(index, size)
    for bad in ([*proof, root], [root, *proof], [*proof, proof[-1]], [proof[0], *proof]):
        with pytest.raises(ProofError, match="must have"):
            verify_inclusion(leaf, index, size, bad, root)


@pytest.mark.parametrize(("index", "size"), INCLUSION_CASES)
def test_inclusion_rejects_a_missing_element(index: int, size: int) -> None:
    leaf, proof, root = _inclusion(index, size)
    for i in range(len(proof)):
        with pytest.raises(ProofError, match="must have"):
            verify_inclusion(leaf, index, size, proof[:i] + proof[i + 1 :], root)


def test_inclusion_rejects_an_empty_proof_where_one_is_needed() -> None:
    for index, size in INCLUSION_CASES:
        leaf, _, root = _inclusion(index, size)
        with pytest.raises(ProofError, match="must have"):
            verify_inclusion(leaf, index, size, [], root)


def test_inclusion_rejects_a_proof_where_none_is_allowed() -> None:
    # In a one-leaf tree the root is the leaf hash and the proof is empty.
    leaf = _tree().leaf(0)
    verify_inclusion(leaf, 0, 1, [], leaf)
    for bad in ([leaf], [EMPTY_ROOT], [leaf, leaf]):
        with pytest.raises(ProofError, match="must have 0 elements"):
            verify_inclusion(leaf, 0, 1, bad, leaf)


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_inclusion_rejects_an_element_of_the_wrong_length(length: int) -> None:
    leaf, proof, root = _inclusion(5, 21)
    odd = b"\x07" * length
    for i in range(len(proof)):
        with pytest.raises(ProofError, match=rf"proof\[{i}\] is {length} bytes long"):
            verify_inclusion(leaf, 5, 21, [*proof[:i], odd, *proof[i + 1 :]], root)
    with pytest.raises(ProofError, match="leaf hash is"):
        verify_inclusion(odd, 5, 21, proof, root)
    with pytest.raises(ProofError, match="root is"):
        verify_inclusion(leaf, 5, 21, proof, odd)


def test_inclusion_rejects_malformed_arguments() -> None:
    leaf, proof, root = _inclusion(5, 21)
    for bad_proof in (b"".join(proof), [h.hex() for h in proof], [None] * len(proof)):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, 5, 21, bad_proof, root)  # type: ignore[arg-type]
    for index, size in ((-1, 21), (5, -1), (5, 2**64), (True, 21)):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, proof, root)


def test_rfc_inclusion_algorithm_rejects_wrong_lengths_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Disable the up-front length check: RFC 9162 §2.1.3.2 must still catch both cases.
    leaf, proof, root = _inclusion(4, 5)
    monkeypatch.setattr(merkle, "_inclusion_length", lambda index, size: len(proof) + 1)
    with pytest.raises(ProofError, match="too long"):
        root_from_inclusion_proof(leaf, 4, 5, [*proof, root])
    leaf, proof, root = _inclusion(5, 21)
    monkeypatch.setattr(merkle, "_inclusion_length", lambda index, size: len(proof) - 1)
    with pytest.raises(ProofError, match="too short"):
        root_from_inclusion_proof(leaf, 5, 21, proof[:-1])


def test_inclusion_rejects_every_corruption_in_small_trees() -> None:
    # The corruption probes of transparency-dev/merkle's verifierCheck, over all proofs.
    tree = _tree()
    for size in range(1, 18):
        root = tree.root(size)
        for index in range(size):
            leaf, proof = tree.leaf(index), tree.inclusion_proof(index, size)
            probes: list[tuple[int, int, bytes, list[bytes], bytes]] = [
                (index - 1, size, leaf, proof, root),
                (index + 1, size, leaf, proof, root),
                (index ^ 2, size, leaf, proof, root),
                (index, size * 2, leaf, proof, root),
                (index, size // 2, leaf, proof, root),
                (index, size, leaf_hash(b"wrong"), proof, root),
                (index, size, leaf, proof, EMPTY_ROOT),
                (index, size, leaf, [*proof, b""], root),
                (index, size, leaf, [*proof, root], root),
                (index, size, leaf, [b"", *proof], root),
                (index, size, leaf, [root, *proof], root),
            ]
            probes += [(index, size, leaf, proof[:-1], root)] if proof else []
            for i in range(len(proof)):
                probes.append(
                    (index, size, leaf, [*proof[:i], _flip(proof[i]), *proof[i + 1 :]], root)
                )
            for p_index, p_size, p_leaf, p_proof, p_root in probes:
                if (p_index, p_size) == (index, size) and p_proof == proof and p_leaf == leaf:
                    continue  # a probe that coincides with the real proof
                with pytest.raises(ProofError):
                    verify_inclusion(p_leaf, p_index, p_size, p_proof, p_root)


# ---------------------------------------------------------------------------------------
# Consistency verification failures, one test per way of being wrong
# ---------------------------------------------------------------------------------------

# (old_size, new_size): power-of-two old sizes (first hash implied), odd ones, ephemeral
# right edges, neighbours.
CONSISTENCY_CASES = [(1, 2), (1, 8), (2, 5), (3, 7), (4, 13), (6, 8), (6, 7), (7, 8), (13, 21)]


def _consistency(old_size: int, new_size: int) -> tuple[bytes, bytes, list[bytes]]:
    tree = _tree()
    return tree.root(old_size), tree.root(new_size), tree.consistency_proof(old_size, new_size)


@pytest.mark.parametrize(("old_size", "new_size"), CONSISTENCY_CASES)
def test_consistency_accepts_the_right_proof(old_size: int, new_size: int) -> None:
    old_root, new_root, proof = _consistency(old_size, new_size)
    verify_consistency(old_size, new_size, old_root, new_root, proof)


def test_consistency_accepts_the_trivial_cases() -> None:
    tree = _tree()
    for size in (0, 1, 5, 64):
        verify_consistency(size, size, tree.root(size), tree.root(size), [])
        verify_consistency(0, size, EMPTY_ROOT, tree.root(size), [])


@pytest.mark.parametrize(("old_size", "new_size"), CONSISTENCY_CASES)
def test_consistency_rejects_a_flipped_byte_in_any_element(old_size: int, new_size: int) -> None:
    old_root, new_root, proof = _consistency(old_size, new_size)
    for i in range(len(proof)):
        for position in (0, 17, HASH_SIZE - 1):
            bad = [*proof[:i], _flip(proof[i], position), *proof[i + 1 :]]
            with pytest.raises(ProofError, match=r"does not lead to the (old|new) root"):
                verify_consistency(old_size, new_size, old_root, new_root, bad)


@pytest.mark.parametrize(("old_size", "new_size"), CONSISTENCY_CASES)
def test_consistency_rejects_a_wrong_old_root(old_size: int, new_size: int) -> None:
    old_root, new_root, proof = _consistency(old_size, new_size)
    for wrong in (_flip(old_root), new_root, EMPTY_ROOT, _tree().root(old_size + 1)):
        with pytest.raises(ProofError, match=r"does not lead to the (old|new) root"):
            verify_consistency(old_size, new_size, wrong, new_root, proof)


@pytest.mark.parametrize(("old_size", "new_size"), CONSISTENCY_CASES)
def test_consistency_rejects_a_wrong_new_root(old_size: int, new_size: int) -> None:
    old_root, new_root, proof = _consistency(old_size, new_size)
    for wrong in (_flip(new_root), old_root, EMPTY_ROOT, _tree().root(new_size + 1)):
        with pytest.raises(ProofError, match="does not lead to the new root"):
            verify_consistency(old_size, new_size, old_root, wrong, proof)


@pytest.mark.parametrize(("old_size", "new_size"), CONSISTENCY_CASES)
def test_consistency_rejects_swapped_roots(old_size: int, new_size: int) -> None:
    old_root, new_root, proof = _consistency(old_size, new_size)
    with pytest.raises(ProofError):
        verify_consistency(old_size, new_size, new_root, old_root, proof)


@pytest.mark.parametrize(("old_size", "new_size"), CONSISTENCY_CASES)
def test_consistency_rejects_a_wrong_old_size(old_size: int, new_size: int) -> None:
    old_root, new_root, proof = _consistency(old_size, new_size)
    for wrong in {old_size - 1, old_size + 1, old_size ^ 2} - {old_size}:
        if 0 <= wrong <= new_size:
            with pytest.raises(ProofError):
                verify_consistency(wrong, new_size, old_root, new_root, proof)


@pytest.mark.parametrize(("old_size", "new_size"), CONSISTENCY_CASES)
def test_consistency_rejects_a_wrong_new_size(old_size: int, new_size: int) -> None:
    # Trillian's probes: sizes that change the shape of the proof (see
    # test_a_proof_authenticates_the_root_not_the_size_label).
    old_root, new_root, proof = _consistency(old_size, new_size)
    for wrong in (new_size * 2, new_size // 2):
        if wrong >= old_size:
            with pytest.raises(ProofError):
                verify_consistency(old_size, wrong, old_root, new_root, proof)


def test_consistency_rejects_non_increasing_sizes() -> None:
    tree = _tree()
    for old_size, new_size in ((2, 1), (8, 7), (1, 0), (21, 13)):
        with pytest.raises(ProofError, match="larger than new size"):
            verify_consistency(old_size, new_size, tree.root(old_size), tree.root(new_size), [])
        with pytest.raises(ProofError, match="larger than new size"):
            verify_consistency(
                old_size,
                new_size,
                tree.root(old_size),
                tree.root(new_size),
                tree.consistency_proof(new_size, old_size),
            )
        with pytest.raises(ProofError, match="larger than new size"):
            consistency_plan(old_size, new_size)


def test_consistency_rejects_equal_sizes_with_a_proof_or_different_roots() -> None:
    tree = _tree()
    root = tree.root(5)
    for proof in ([root], [EMPTY_ROOT], tree.consistency_proof(4, 5)):
        with pytest.raises(ProofError, match="between equal sizes must be empty"):
            verify_consistency(5, 5, root, root, proof)
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(5, 5, root, tree.root(6), [])


def test_consistency_rejects_anything_but_nothing_from_the_empty_tree() -> None:
    tree = _tree()
    for proof in ([EMPTY_ROOT], [tree.root(3)], tree.inclusion_proof(0, 3)):
        with pytest.raises(ProofError, match="from the empty tree must be empty"):
            verify_consistency(0, 3, EMPTY_ROOT, tree.root(3), proof)
    with pytest.raises(ProofError, match="not the empty tree's root"):
        verify_consistency(0, 3, tree.root(1), tree.root(3), [])
    with pytest.raises(ProofError, match="different roots"):
        verify_consistency(0, 0, EMPTY_ROOT, tree.root(1), [])


@pytest.mark.parametrize(("old_size", "new_size"), CONSISTENCY_CASES)
def test_consistency_rejects_an_empty_proof_where_one_is_needed(
    old_size: int, new_size: int
) -> None:
    old_root, new_root, _ = _consistency(old_size, new_size)
    with pytest.raises(ProofError, match="is empty"):
        verify_consistency(old_size, new_size, old_root, new_root, [])


@pytest.mark.parametrize(("old_size", "new_size"), CONSISTENCY_CASES)
def test_consistency_rejects_an_extra_element(old_size: int, new_size: int) -> None:
    old_root, new_root, proof = _consistency(old_size, new_size)
    for bad in (
        [*proof, old_root],
        [*proof, new_root],
        [old_root, *proof],
        [new_root, *proof],
        [proof[0], *proof],
    ):
        with pytest.raises(ProofError, match="must have"):
            verify_consistency(old_size, new_size, old_root, new_root, bad)


@pytest.mark.parametrize(("old_size", "new_size"), CONSISTENCY_CASES)
def test_consistency_rejects_a_missing_element(old_size: int, new_size: int) -> None:
    old_root, new_root, proof = _consistency(old_size, new_size)
    for i in range(len(proof)):
        bad = proof[:i] + proof[i + 1 :]
        with pytest.raises(ProofError, match=r"must have|is empty"):
            verify_consistency(old_size, new_size, old_root, new_root, bad)


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_consistency_rejects_an_element_of_the_wrong_length(length: int) -> None:
    old_root, new_root, proof = _consistency(13, 21)
    odd = b"\x07" * length
    for i in range(len(proof)):
        with pytest.raises(ProofError, match=rf"proof\[{i}\] is {length} bytes long"):
            verify_consistency(13, 21, old_root, new_root, [*proof[:i], odd, *proof[i + 1 :]])
    with pytest.raises(ProofError, match="old root is"):
        verify_consistency(13, 21, odd, new_root, proof)
    with pytest.raises(ProofError, match="new root is"):
        verify_consistency(13, 21, old_root, odd, proof)


def test_consistency_rejects_malformed_arguments() -> None:
    old_root, new_root, proof = _consistency(13, 21)
    for bad_proof in (b"".join(proof), [h.hex() for h in proof]):
        with pytest.raises(ProofError):
            verify_consistency(13, 21, old_root, new_root, bad_proof)  # type: ignore[arg-type]
    for old_size, new_size in ((-1, 21), (13, -1), (13, 2**64)):
        with pytest.raises(ProofError):
            verify_consistency(old_size, new_size, old_root, new_root, proof)


def test_rfc_consistency_algorithm_rejects_wrong_lengths_on_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Disable the up-front length check: RFC 9162 §2.1.4.2 must still catch both cases.
    old_root, new_root, proof = _consistency(6, 8)
    monkeypatch.setattr(merkle, "_consistency_length", lambda old, new: len(proof) + 1)
    with pytest.raises(ProofError, match="too long"):
        verify_consistency(6, 8, old_root, new_root, [*proof, new_root])
    old_root, new_root, proof = _consistency(13, 21)
    monkeypatch.setattr(merkle, "_consistency_length", lambda old, new: len(proof) - 1)
    with pytest.raises(ProofError, match="too short"):
        verify_consistency(13, 21, old_root, new_root, proof[:-1])


def test_consistency_rejects_every_corruption_in_small_trees() -> None:
    # The corruption probes of transparency-dev/merkle's verifierConsistencyCheck.
    tree = _tree()
    some = _sha256(b"some hash")
    for new_size in range(2, 18):
        root2 = tree.root(new_size)
        for old_size in range(1, new_size):
            root1, proof = tree.root(old_size), tree.consistency_proof(old_size, new_size)
            probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
                (old_size - 1, new_size, root1, root2, proof),
                (old_size + 1, new_size, root1, root2, proof),
                (old_size ^ 2, new_size, root1, root2, proof),
                (old_size, new_size * 2, root1, root2, proof),
                (old_size, new_size // 2, root1, root2, proof),
                (old_size, new_size, some, root2, proof),
                (old_size, new_size, root1, some, proof),
                (old_size, new_size, root2, root1, proof),
                (old_size, new_size, root1, root2, []),
                (old_size, new_size, root1, root2, [*proof, b""]),
                (old_size, new_size, root1, root2, [*proof, root1]),
                (old_size, new_size, root1, root2, [*proof, root2]),
                (old_size, new_size, root1, root2, [b"", *proof]),
                (old_size, new_size, root1, root2, [root1, *proof]),
                (old_size, new_size, root1, root2, [root2, *proof]),
                (old_size, new_size, root1, root2, [proof[0], *proof]),
                (old_size, new_size, root1, root2, proof[:-1]),
            ]
            for i in range(len(proof)):
                probes.append(
                    (
                        old_size,
                        new_size,
                        root1,
                        root2,
                        [*proof[:i], _flip(proof[i]), *proof[i + 1 :]],
                    )
                )
            for size1, size2, r1, r2, p in probes:
                if (size1, size2, r1, r2, p) == (old_size, new_size, root1, root2, proof):
                    continue
                with pytest.raises(ProofError):
                    verify_consistency(size1, size2, r1, r2, p)


# ---------------------------------------------------------------------------------------
# CompactRange
# ---------------------------------------------------------------------------------------


def test_compact_range_resumed_from_stored_hashes_equals_a_fresh_build() -> None:
    leaves = [leaf_hash(d) for d in _data()[:EXHAUSTIVE]]
    fresh = CompactRange()
    for k in range(EXHAUSTIVE + 1):
        assert fresh.size == k
        for resumed in (
            CompactRange(k, fresh.hashes),
            CompactRange.load(k, _tree().nodes),
        ):
            assert resumed == fresh
            for leaf in leaves[k:]:
                resumed.append(leaf)
            assert resumed.size == EXHAUSTIVE
            assert resumed.root() == _oracle().mth(0, EXHAUSTIVE)
        if k < EXHAUSTIVE:
            fresh.append(leaves[k])


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=BIG), st.integers(min_value=0, max_value=300))
def test_compact_range_resumes_anywhere(k: int, more: int) -> None:
    tree = _tree()
    end = min(BIG, k + more)
    resumed = CompactRange(k, [tree.nodes[node] for node in subtree_nodes(0, k)])
    assert resumed.root() == tree.root(k)
    for index in range(k, end):
        resumed.append(tree.leaf(index))
    assert resumed.root() == _oracle().mth(0, end)
    assert resumed == CompactRange.load(end, tree.nodes)


def test_compact_range_reports_exactly_the_perfect_subtree_nodes() -> None:
    oracle = _oracle()
    n = 300
    frontier = CompactRange()
    reported: dict[NodeId, bytes] = {}
    for index in range(n):
        created = frontier.append(oracle.leaf(index))
        assert created[0] == ((0, index), oracle.leaf(index))
        assert [node[0] for node, _ in created] == list(range(len(created)))  # bottom-up
        for node, value in created:
            assert node not in reported
            reported[node] = value
        # After each append, the frontier is the compact range [0, size) of the oracle.
        assert frontier.node_ids() == subtree_nodes(0, index + 1)
        assert list(frontier.hashes) == [
            oracle.mth(i << level, (i + 1) << level) for level, i in frontier.node_ids()
        ]
        assert frontier.root() == oracle.mth(0, index + 1)
    perfect = {(level, i) for level in range(n.bit_length()) for i in range(n >> level)}
    assert set(reported) == perfect
    for (level, i), value in reported.items():
        assert value == oracle.mth(i << level, (i + 1) << level)


def test_compact_range_rejects_inconsistent_state() -> None:
    tree = _tree()
    hashes = [tree.nodes[node] for node in subtree_nodes(0, 7)]
    with pytest.raises(LedgerError, match="has 3 hashes"):
        CompactRange(7, hashes[:2])
    with pytest.raises(LedgerError, match="has 1 hashes, got 3"):
        CompactRange(8, hashes)
    with pytest.raises(LedgerError, match="not 32 bytes"):
        CompactRange(7, [*hashes[:2], b"short"])
    with pytest.raises(ProofError):
        CompactRange(-1)
    frontier = CompactRange(7, hashes)
    with pytest.raises(LedgerError, match="leaf hash is 32 bytes"):
        frontier.append(b"short")
    assert frontier.size == 7  # unchanged
    with pytest.raises(MissingNodeError):
        CompactRange.load(BIG + 1, tree.nodes)


def test_compact_range_copy_is_independent() -> None:
    frontier = CompactRange()
    frontier.append(leaf_hash(b"a"))
    twin = frontier.copy()
    twin.append(leaf_hash(b"b"))
    assert (frontier.size, twin.size) == (1, 2)
    assert frontier != twin
    assert "size=1" in repr(frontier)


# ---------------------------------------------------------------------------------------
# Plans and node ranges
# ---------------------------------------------------------------------------------------


def test_subtree_nodes_is_the_maximal_aligned_decomposition() -> None:
    for begin in range(65):
        for end in range(begin, 65):
            nodes = subtree_nodes(begin, end)
            cursor = begin
            for level, index in nodes:
                assert index << level == cursor  # contiguous, left to right, aligned
                cursor += 1 << level
                # Maximal: the parent is not within [begin, end).
                parent_begin = (index >> 1) << (level + 1)
                assert parent_begin < begin or parent_begin + (2 << level) > end
            assert cursor == end
            assert len(nodes) <= 2 * max(1, (end - begin).bit_length())


def test_subtree_nodes_of_a_prefix_follows_the_bits_of_the_size() -> None:
    assert subtree_nodes(0, 0) == []
    assert subtree_nodes(0, 13) == [(3, 0), (2, 2), (0, 12)]
    assert subtree_nodes(5, 13) == [(0, 5), (1, 3), (2, 2), (0, 12)]
    with pytest.raises(ProofError):
        subtree_nodes(5, 4)


def _log_bound(n: int) -> int:
    return 2 * math.ceil(math.log2(n)) + 2 if n > 1 else 2


def _check_plan_shape(plan: merkle.ProofPlan, size: int) -> None:
    assert len(plan.node_ids()) <= _log_bound(size)
    assert sum(1 for element in plan.elements if len(element) > 1) <= 1
    for level, index in plan.node_ids():
        assert (index + 1) << level <= size  # a perfect node that exists at this size


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(min_value=1, max_value=2**40))
def test_plans_need_logarithmically_many_nodes(data: st.DataObject, size: int) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    old_size = data.draw(st.integers(min_value=0, max_value=size))
    _check_plan_shape(inclusion_plan(index, size), size)
    _check_plan_shape(consistency_plan(old_size, size), size)
    assert len(root_plan(size)) == size.bit_count()


def test_plans_at_extreme_shapes_stay_logarithmic() -> None:
    for size in (2**40, 2**40 - 1, 2**40 + 1, 2**63 + 1, 2**64 - 1):
        for index in (0, 1, size // 2, size - 2, size - 1):
            _check_plan_shape(inclusion_plan(index, size), size)
            _check_plan_shape(consistency_plan(index + 1, size), size)


def test_plan_lengths_match_the_verifiers_expectations() -> None:
    for size in range(1, 200):
        for index in range(size):
            assert len(inclusion_plan(index, size)) == merkle._inclusion_length(index, size)
        for old_size in range(1, size):
            assert len(consistency_plan(old_size, size)) == merkle._consistency_length(
                old_size, size
            )


def test_plans_reject_impossible_requests() -> None:
    for call in (
        lambda: inclusion_plan(3, 3),
        lambda: inclusion_plan(-1, 3),
        lambda: consistency_plan(4, 3),
        lambda: consistency_plan(-1, 3),
        lambda: root_plan(-1),
    ):
        with pytest.raises(ProofError):
            call()
    assert consistency_plan(0, 5).elements == ()
    assert consistency_plan(5, 5).elements == ()


def test_assemble_reports_a_missing_node() -> None:
    tree = _tree()
    plan = inclusion_plan(5, 21)
    nodes = {node: tree.nodes[node] for node in plan.node_ids()}
    missing = plan.node_ids()[-1]
    del nodes[missing]
    with pytest.raises(MissingNodeError, match=rf"node \({missing[0]}, {missing[1]}\)") as info:
        assemble(plan, nodes)
    assert isinstance(info.value, LedgerError)
    assert isinstance(info.value, KeyError)
    assert info.value.diagnostics()["code"] == "merkle-node-missing"
    nodes[missing] = b"short"
    with pytest.raises(MissingNodeError, match="holds 5 bytes"):
        assemble(plan, nodes)


# ---------------------------------------------------------------------------------------
# MemoryTree
# ---------------------------------------------------------------------------------------


def test_memory_tree_basics() -> None:
    tree = MemoryTree()
    assert tree.size == 0
    assert tree.append(leaf_hash(b"a")) == 0
    tree.extend([leaf_hash(b"b"), leaf_hash(b"c")])
    assert tree.size == 3
    assert tree.leaf(2) == leaf_hash(b"c")
    assert tree.root() == tree.compact_range.root() == tree.root(3)
    assert tree.root(2) == node_hash(leaf_hash(b"a"), leaf_hash(b"b"))
    assert tree.root(0) == EMPTY_ROOT
    # Stored nodes: every perfect subtree, 2n - popcount(n) of them.
    assert len(tree.nodes) == 2 * 3 - 2
    assert set(tree.nodes) == {(0, 0), (0, 1), (0, 2), (1, 0)}
    assert (1, 0) in tree.nodes
    assert (1, 1) not in tree.nodes
    not_a_node: object = "x"
    assert not_a_node not in tree.nodes
    with pytest.raises(KeyError):
        tree.nodes[(1, 1)]


def test_memory_tree_rejects_sizes_beyond_its_own() -> None:
    tree = MemoryTree(leaf_hash(bytes([i])) for i in range(5))
    checks: list[Callable[[], object]] = [
        lambda: tree.root(6),
        lambda: tree.inclusion_proof(0, 6),
        lambda: tree.inclusion_proof(5),
        lambda: tree.consistency_proof(2, 6),
        lambda: tree.consistency_proof(6),
        lambda: tree.leaf(5),
    ]
    for call in checks:
        with pytest.raises(ProofError):
            call()
    assert tree.consistency_proof(5) == []


# --------------------------------------------------------------------------- batch proofs


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100])
def test_batch_proofs_are_the_memory_trees_root_and_proofs(size: int) -> None:
    leaves = [merkle.leaf_hash(hashlib.sha256(b"%d" % i).digest()) for i in range(size)]
    tree = merkle.MemoryTree(leaves)
    root, paths = merkle.batch_proofs(leaves)
    assert root == tree.root()
    assert paths == [tree.inclusion_proof(i) for i in range(size)]
    for i, path in enumerate(paths):
        merkle.verify_inclusion(leaves[i], i, size, path, root)


def test_batch_proofs_of_nothing_is_a_proof_error() -> None:
    with pytest.raises(ProofError, match="at least one leaf"):
        merkle.batch_proofs([])
