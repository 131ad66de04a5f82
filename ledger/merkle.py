"""RFC 9162 (Certificate Transparency v2) Merkle tree logic: pure functions, no I/O.

Hashing (RFC 9162 §2.1.1), with SHA-256:

* the hash of the empty tree is ``SHA-256()`` (:data:`EMPTY_ROOT`);
* a leaf hash is ``SHA-256(0x00 || leaf)`` (:func:`leaf_hash`); in medtrail each leaf is
  the 32-byte digest of one event;
* an interior node hash is ``SHA-256(0x01 || left || right)`` (:func:`node_hash`).

The tree over ``n`` leaves splits at the largest power of two ``k < n``, so its left side
is always a *perfect* subtree. Node addressing follows Trillian's ``merkle/compact``
package: :data:`NodeId` ``(level, index)`` names the root of the perfect subtree over the
leaves ``[index * 2**level, (index + 1) * 2**level)``. Only perfect nodes are ever stored;
any other node of the tree (the "ephemeral" nodes along the right edge) is recomputed by
folding the perfect nodes that cover the same leaves (:func:`subtree_nodes`, :func:`fold`).

Proofs are produced in two steps, like Trillian's ``merkle/proof`` package and
sigstore-python's ``merkle.py``:

1. a *plan* (:func:`inclusion_plan`, :func:`consistency_plan`, :func:`root_plan`) says,
   from the sizes alone, which stored nodes each proof element is made of. Plans never
   look at hashes, so a store fetches :meth:`ProofPlan.node_ids` in one query;
2. :func:`assemble` turns the plan and the fetched hashes into the RFC 9162 proof.

Verification (:func:`verify_inclusion`, :func:`verify_consistency`) is the RFC 9162
§2.1.3.2 / §2.1.4.2 algorithm, preceded by explicit checks of the sizes, of every hash's
length and of the proof length, so that each failure has a precise message.

:class:`CompactRange` is the right-edge frontier used to append leaves in O(1) amortised
time, reporting every perfect node it completes so that a store can persist it;
:class:`MemoryTree` is the in-memory tree built on both, used by tests and audit scripts.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from ledger.errors import LedgerError, ProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_TREE_SIZE",
    "CompactRange",
    "MemoryTree",
    "MissingNodeError",
    "NodeId",
    "ProofPlan",
    "assemble",
    "batch_proofs",
    "consistency_plan",
    "fold",
    "inclusion_plan",
    "leaf_hash",
    "node_hash",
    "root_from_inclusion_proof",
    "root_plan",
    "subtree_nodes",
    "verify_consistency",
    "verify_inclusion",
]

#: Size in bytes of every hash in the tree (SHA-256).
HASH_SIZE = 32

#: Tree sizes are ``uint64`` in RFC 9162 (``tree_size``); verification rejects larger ones.
MAX_TREE_SIZE = 2**64 - 1

#: Root hash of the empty tree: ``SHA-256()`` of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT: bytes = hashlib.sha256(b"").digest()

#: ``(level, index)``: the root of the perfect subtree over the leaves
#: ``[index * 2**level, (index + 1) * 2**level)``. Level 0 nodes are leaf hashes.
NodeId: TypeAlias = tuple[int, int]

_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


class MissingNodeError(LedgerError, KeyError):
    code = "merkle-node-missing"

    def __str__(self) -> str:
        # KeyError's __str__ would print the repr of the message, quotes included.
        return self.detail


# ---------------------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------------------


def leaf_hash(leaf: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 || leaf)``."""
    return _sha256(_LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 || left || right)``."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def batch_proofs(leaf_hashes: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of the RFC 9162 tree over ``leaf_hashes`` and every leaf's inclusion proof.

    All proofs at once in ``O(n log n)`` hashes-worth of list appends and ``n - 1`` node
    hashes (one :meth:`MemoryTree.inclusion_proof` per leaf would re-plan each proof). Used
    for a small tree built and discarded in one go: the receipts of one ingested batch.
    Raises :class:`ProofError` for an empty sequence (its proofs would prove nothing).
    """
    if not leaf_hashes:
        raise ProofError("a batch tree needs at least one leaf")
    paths: list[list[bytes]] = [[] for _ in leaf_hashes]

    def build(begin: int, end: int) -> bytes:
        if end - begin == 1:
            return leaf_hashes[begin]
        split = 1 << ((end - begin - 1).bit_length() - 1)  # largest power of two < n
        left = build(begin, begin + split)
        right = build(begin + split, end)
        for i in range(begin, begin + split):
            paths[i].append(right)
        for i in range(begin + split, end):
            paths[i].append(left)
        return node_hash(left, right)

    return build(0, len(leaf_hashes)), paths


# ---------------------------------------------------------------------------------------
# Node ranges and plans
# ---------------------------------------------------------------------------------------


def _check_count(value: int, what: str) -> None:
    """Raise :class:`ProofError` unless ``value`` is a non-negative ``int``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProofError(f"{what} must be a non-negative integer, got {value!r}", **{what: value})


def _trailing_zeros(value: int) -> int:
    """Number of trailing zero bits of a positive integer."""
    return (value & -value).bit_length() - 1


def subtree_nodes(begin: int, end: int) -> list[NodeId]:
    """Decompose the leaf range ``[begin, end)`` into maximal aligned perfect subtrees.

    This is the "compact range" of Trillian's ``merkle/compact``: nodes are returned left
    to right, their levels first increasing then decreasing, at most ``2 * log2(end -
    begin) + 2`` of them. Folding their hashes right to left (:func:`fold`) gives the RFC
    9162 hash of the range when ``begin`` is aligned to a power of two at least ``end -
    begin`` (always the case for the ranges this module folds, including ``begin == 0``).
    """
    _check_count(begin, "begin")
    _check_count(end, "end")
    if begin > end:
        raise ProofError(f"reversed leaf range [{begin}, {end})", begin=begin, end=end)
    return _range_nodes(begin, end)


def _range_nodes(begin: int, end: int) -> list[NodeId]:
    """:func:`subtree_nodes` without argument checks, for ``0 <= begin <= end``."""
    ids: list[NodeId] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, _trailing_zeros(begin))
        ids.append((level, begin >> level))
        begin += 1 << level
    return ids


@dataclass(frozen=True, slots=True)
class ProofPlan:
    """Which stored nodes make up each element of an RFC 9162 proof.

    ``elements[i]`` lists, left to right, the perfect nodes whose hashes are folded
    (:func:`fold`: right to left, ``node_hash(left, acc)``) to give proof element ``i``.
    Every element is a single stored node except at most one: the ephemeral node of the
    tree's right edge, made of the compact range of the leaves it covers.
    """

    elements: tuple[tuple[NodeId, ...], ...]

    def __len__(self) -> int:
        """Number of elements of the proof this plan produces."""
        return len(self.elements)

    def node_ids(self) -> list[NodeId]:
        """The distinct nodes to fetch (in proof order), at most ``2 * log2(n) + 2``."""
        seen: dict[NodeId, None] = {}
        for element in self.elements:
            for node in element:
                seen[node] = None
        return list(seen)


def _path(level: int, index: int, size: int) -> list[tuple[NodeId, ...]]:
    """Plan the audit path from the perfect node ``(level, index)`` to the root of ``size``.

    Walks up the aligned binary tree. At each level the sibling of the current node is
    either entirely within the tree (a stored node), straddles its right edge (the
    ephemeral node, made of the compact range ``[begin, size)``) or lies beyond it (the
    RFC tree has no node there: skip the level). Elements come bottom-up, as in RFC 9162.
    """
    elements: list[tuple[NodeId, ...]] = []
    while index or (1 << level) < size:
        sibling = index ^ 1
        begin = sibling << level
        if begin < size:
            if begin + (1 << level) <= size:
                elements.append(((level, sibling),))
            else:
                elements.append(tuple(_range_nodes(begin, size)))
        level += 1
        index >>= 1
    return elements


def inclusion_plan(index: int, size: int) -> ProofPlan:
    """Plan the RFC 9162 §2.1.3.1 inclusion proof ``PATH(index, D[size])``.

    Raises :class:`ProofError` unless ``0 <= index < size``.
    """
    _check_count(index, "index")
    _check_count(size, "size")
    if index >= size:
        raise ProofError(
            f"leaf index {index} is outside a tree of size {size}", index=index, size=size
        )
    return ProofPlan(tuple(_path(0, index, size)))


def consistency_plan(old_size: int, new_size: int) -> ProofPlan:
    """Plan the RFC 9162 §2.1.4.1 consistency proof ``PROOF(old_size, D[new_size])``.

    The proof is empty when ``old_size`` is 0 or equal to ``new_size``. Otherwise it is
    the largest perfect node ending at ``old_size`` (omitted when ``old_size`` is a power
    of two, since it is then the old root the verifier already has), followed by that
    node's audit path in the tree of ``new_size``. Raises :class:`ProofError` unless
    ``0 <= old_size <= new_size``.
    """
    _check_count(old_size, "old_size")
    _check_count(new_size, "new_size")
    if old_size > new_size:
        raise ProofError(
            f"old size {old_size} is larger than new size {new_size}",
            old_size=old_size,
            new_size=new_size,
        )
    if old_size in (0, new_size):
        return ProofPlan(())
    level = _trailing_zeros(old_size)
    index = (old_size >> level) - 1
    elements = _path(level, index, new_size)
    if index:
        elements.insert(0, ((level, index),))
    return ProofPlan(tuple(elements))


def root_plan(size: int) -> list[NodeId]:
    """The stored nodes whose fold is the root of the tree of ``size`` leaves.

    Empty for ``size == 0``, whose root is :data:`EMPTY_ROOT` (what :func:`fold` returns
    for no nodes).
    """
    _check_count(size, "size")
    return _range_nodes(0, size)


def _node(nodes: Mapping[NodeId, bytes], node: NodeId) -> bytes:
    """Fetch one node hash, turning absence or a malformed value into a ledger error."""
    try:
        value = nodes[node]
    except KeyError:
        raise MissingNodeError(f"Merkle node {node} is missing", node=list(node)) from None
    if len(value) != HASH_SIZE:
        raise MissingNodeError(
            f"Merkle node {node} holds {len(value)} bytes, not {HASH_SIZE}", node=list(node)
        )
    return value


def fold(ids: Sequence[NodeId], nodes: Mapping[NodeId, bytes]) -> bytes:
    """Fold the hashes of ``ids`` right to left: ``node_hash(h0, node_hash(h1, ... hk))``.

    With the ids of :func:`subtree_nodes` this is the RFC 9162 hash of the range; with no
    ids it is :data:`EMPTY_ROOT`. Raises :class:`MissingNodeError` if a node is absent.
    """
    if not ids:
        return EMPTY_ROOT
    acc = _node(nodes, ids[-1])
    for node in reversed(ids[:-1]):
        acc = _sha256(_NODE_PREFIX + _node(nodes, node) + acc).digest()
    return acc


def assemble(plan: ProofPlan, nodes: Mapping[NodeId, bytes]) -> list[bytes]:
    """Build the proof described by ``plan`` from the fetched node hashes.

    ``nodes`` must hold at least :meth:`ProofPlan.node_ids`; raises
    :class:`MissingNodeError` (a :class:`LedgerError` and a :class:`KeyError`) otherwise.
    """
    return [fold(element, nodes) for element in plan.elements]


# ---------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------


def _check_size(value: int, what: str) -> None:
    """Raise :class:`ProofError` unless ``value`` is a valid RFC 9162 ``uint64`` size."""
    _check_count(value, what)
    if value > MAX_TREE_SIZE:
        raise ProofError(f"{what} {value} does not fit in 64 bits", **{what: value})


def _check_hash(value: Any, what: str) -> bytes:
    """Return ``value`` as ``bytes`` if it is a ``HASH_SIZE``-byte string, else raise."""
    if not isinstance(value, bytes | bytearray):
        raise ProofError(f"{what} must be bytes, got {type(value).__name__}")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes long, not {HASH_SIZE}")
    return bytes(value)


def _check_proof(proof: Sequence[bytes]) -> list[bytes]:
    """Validate every proof element's type and length; return them as a list of bytes."""
    if isinstance(proof, bytes | bytearray | str):
        raise ProofError("proof must be a sequence of hashes, not a single string")
    return [_check_hash(element, f"proof[{i}]") for i, element in enumerate(proof)]


def _inclusion_length(index: int, size: int) -> int:
    """Length of ``PATH(index, D[size])``, for ``index < size`` (Trillian's decomposition).

    ``inner`` levels lie below the node where the paths to ``index`` and to ``size - 1``
    fork; above it, one element per left sibling, i.e. per set bit of ``index >> inner``.
    """
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root that ``proof`` yields for ``leaf_hash`` at ``index`` in ``size``.

    Implements RFC 9162 §2.1.3.2 steps 1-4 (and the ``sn == 0`` check of step 5). Raises
    :class:`ProofError` if ``index >= size``, a hash is not 32 bytes, or the proof does
    not have exactly the length a tree of ``size`` implies.
    """
    _check_size(index, "index")
    _check_size(size, "size")
    if index >= size:
        raise ProofError(
            f"leaf index {index} is outside a tree of size {size}", index=index, size=size
        )
    r = _check_hash(leaf_hash, "leaf hash")
    path = _check_proof(proof)
    expected = _inclusion_length(index, size)
    if len(path) != expected:
        raise ProofError(
            f"inclusion proof for leaf {index} in a tree of size {size} must have "
            f"{expected} elements, got {len(path)}",
            index=index,
            size=size,
            expected=expected,
            got=len(path),
        )
    # RFC 9162 §2.1.3.2, step by step.
    fn, sn = index, size - 1
    for p in path:
        if sn == 0:
            raise ProofError("inclusion proof is too long", index=index, size=size)
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short", index=index, size=size)
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an RFC 9162 §2.1.3.2 inclusion proof; raise :class:`ProofError` if it fails.

    The proof authenticates ``root``; ``size`` only fixes the hashing order, and a
    neighbouring size with the same order also passes. Take ``size`` and ``root`` from
    the same signed checkpoint, never from the party supplying the proof.
    """
    expected_root = _check_hash(root, "root")
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if not hmac.compare_digest(computed, expected_root):
        raise ProofError(
            f"inclusion proof for leaf {index} does not lead to the root of the tree "
            f"of size {size}",
            index=index,
            size=size,
            computed_root=computed.hex(),
            root=expected_root.hex(),
        )


def _consistency_length(old_size: int, new_size: int) -> int:
    """Length of ``PROOF(old_size, D[new_size])`` for ``0 < old_size < new_size``."""
    level = _trailing_zeros(old_size)
    index = (old_size >> level) - 1
    inner = (index ^ ((new_size - 1) >> level)).bit_length()
    return (1 if index else 0) + inner + (index >> inner).bit_count()


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check an RFC 9162 §2.1.4.2 consistency proof; raise :class:`ProofError` if it fails.

    Beyond the RFC's ``0 < old_size < new_size`` case: equal sizes are consistent iff the
    proof is empty and the roots are equal; the empty tree (``old_size == 0``) is
    consistent with every tree iff the proof is empty and ``old_root`` is
    :data:`EMPTY_ROOT`. As with :func:`verify_inclusion`, the sizes must come with the
    roots from signed checkpoints: the proof authenticates roots, not size labels.
    """
    _check_size(old_size, "old_size")
    _check_size(new_size, "new_size")
    first_hash = _check_hash(old_root, "old root")
    second_hash = _check_hash(new_root, "new root")
    path = _check_proof(proof)
    sizes = {"old_size": old_size, "new_size": new_size}
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}", **sizes)
    if old_size == new_size:
        if path:
            raise ProofError(
                f"consistency proof between equal sizes must be empty, got {len(path)} elements",
                **sizes,
            )
        if not hmac.compare_digest(first_hash, second_hash):
            raise ProofError(f"two different roots for the same size {old_size}", **sizes)
        return
    if old_size == 0:
        if path:
            raise ProofError(
                f"consistency proof from the empty tree must be empty, got {len(path)} elements",
                **sizes,
            )
        if not hmac.compare_digest(first_hash, EMPTY_ROOT):
            raise ProofError("old root of size 0 is not the empty tree's root", **sizes)
        return

    # RFC 9162 §2.1.4.2, step 1.
    if not path:
        raise ProofError(f"consistency proof from size {old_size} to {new_size} is empty", **sizes)
    expected = _consistency_length(old_size, new_size)
    if len(path) != expected:
        raise ProofError(
            f"consistency proof from size {old_size} to {new_size} must have {expected} "
            f"elements, got {len(path)}",
            expected=expected,
            got=len(path),
            **sizes,
        )
    # Step 2.
    if old_size & (old_size - 1) == 0:
        path.insert(0, first_hash)
    # Steps 3 and 4.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long", **sizes)
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise ProofError("consistency proof is too short", **sizes)
    if not hmac.compare_digest(fr, first_hash):
        raise ProofError(
            f"consistency proof does not lead to the old root of size {old_size}",
            computed_root=fr.hex(),
            **sizes,
        )
    if not hmac.compare_digest(sr, second_hash):
        raise ProofError(
            f"consistency proof does not lead to the new root of size {new_size}",
            computed_root=sr.hex(),
            **sizes,
        )


# ---------------------------------------------------------------------------------------
# Appending
# ---------------------------------------------------------------------------------------


class CompactRange:
    """The right-edge frontier of a tree: the hashes of ``subtree_nodes(0, size)``.

    One hash per set bit of ``size``, largest subtree first. Appending a leaf pushes it
    and merges equal-sized subtrees, like a binary counter: O(log n) worst case, O(1)
    amortised, and every merge is a newly completed perfect node that a store persists.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        """Resume the frontier of a tree of ``size`` leaves from its stored node hashes.

        ``hashes`` are those of :meth:`node_ids` (``subtree_nodes(0, size)``), in order.
        Raises :class:`LedgerError` if their number or length does not fit ``size``.
        """
        _check_count(size, "size")
        values = list(hashes)
        if len(values) != size.bit_count():
            raise LedgerError(
                f"a compact range of size {size} has {size.bit_count()} hashes, got {len(values)}",
                size=size,
            )
        for i, value in enumerate(values):
            if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                raise LedgerError(f"compact range hash {i} is not {HASH_SIZE} bytes", size=size)
        self._size = size
        self._hashes = values

    @classmethod
    def load(cls, size: int, nodes: Mapping[NodeId, bytes]) -> CompactRange:
        """Resume the frontier of ``size`` from a node mapping (e.g. one store query)."""
        return cls(size, [_node(nodes, node) for node in subtree_nodes(0, size)])

    @property
    def size(self) -> int:
        """Number of leaves covered."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """Hashes of :meth:`node_ids`, left (largest subtree) to right."""
        return tuple(self._hashes)

    def node_ids(self) -> list[NodeId]:
        """Ids of the frontier's perfect subtrees: ``subtree_nodes(0, size)``."""
        return subtree_nodes(0, self._size)

    def append(self, leaf_hash: bytes) -> list[tuple[NodeId, bytes]]:
        """Append one leaf hash and return every new perfect node, bottom-up.

        The first entry is the leaf itself, ``((0, old_size), leaf_hash)``; then come the
        parents it completes, one per trailing one bit of the old size.
        """
        if not isinstance(leaf_hash, bytes) or len(leaf_hash) != HASH_SIZE:
            raise LedgerError(f"a leaf hash is {HASH_SIZE} bytes", size=self._size)
        size = self._size
        hashes = self._hashes
        created: list[tuple[NodeId, bytes]] = [((0, size), leaf_hash)]
        acc = leaf_hash
        level = 0
        rest = size
        while rest & 1:
            acc = _sha256(_NODE_PREFIX + hashes.pop() + acc).digest()
            level += 1
            rest >>= 1
            created.append(((level, rest), acc))
        hashes.append(acc)
        self._size = size + 1
        return created

    def root(self) -> bytes:
        """The RFC 9162 root of the tree of :attr:`size` leaves (O(log n) hashes)."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        acc = hashes[-1]
        for value in reversed(hashes[:-1]):
            acc = _sha256(_NODE_PREFIX + value + acc).digest()
        return acc

    def copy(self) -> CompactRange:
        """An independent copy of this frontier."""
        return CompactRange(self._size, self._hashes)

    def __eq__(self, other: object) -> bool:
        """Equal when covering the same number of leaves with the same hashes."""
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        """Size and root, for debugging."""
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


class _LevelNodes(Mapping[NodeId, bytes]):
    """Read-only ``NodeId -> hash`` view over per-level lists of perfect node hashes.

    Node ``(level, index)`` exists iff ``index < len(levels[level])``; dense lists keep a
    million-leaf tree at a fraction of the memory of a dict keyed by tuples.
    """

    __slots__ = ("_levels",)

    def __init__(self, levels: list[list[bytes]]) -> None:
        self._levels = levels

    def __getitem__(self, node: NodeId) -> bytes:
        level, index = node
        levels = self._levels
        if 0 <= level < len(levels) and 0 <= index < len(levels[level]):
            return levels[level][index]
        raise KeyError(node)

    def __contains__(self, node: object) -> bool:
        if not isinstance(node, tuple) or len(node) != 2:
            return False
        level, index = node
        levels = self._levels
        return (
            isinstance(level, int)
            and isinstance(index, int)
            and 0 <= level < len(levels)
            and 0 <= index < len(levels[level])
        )

    def __iter__(self) -> Iterator[NodeId]:
        for level, hashes in enumerate(self._levels):
            for index in range(len(hashes)):
                yield (level, index)

    def __len__(self) -> int:
        return sum(len(hashes) for hashes in self._levels)


class MemoryTree:
    """An in-memory RFC 9162 tree storing every perfect node, proofs through the plans.

    This is the reference the SQL store mirrors: it appends through a
    :class:`CompactRange`, keeps the nodes it reports, and answers roots and proofs for
    any size up to the current one with :func:`root_plan`, :func:`inclusion_plan`,
    :func:`consistency_plan` and :func:`assemble`.
    """

    __slots__ = ("_levels", "_nodes", "_range")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        """Create a tree, optionally with initial leaf hashes (see :meth:`extend`)."""
        self._levels: list[list[bytes]] = []
        self._nodes = _LevelNodes(self._levels)
        self._range = CompactRange()
        self.extend(leaf_hashes)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._range.size

    @property
    def nodes(self) -> Mapping[NodeId, bytes]:
        """Every stored (perfect) node, as a read-only ``NodeId -> hash`` mapping."""
        return self._nodes

    @property
    def compact_range(self) -> CompactRange:
        """A copy of the current right-edge frontier."""
        return self._range.copy()

    def append(self, leaf_hash: bytes) -> int:
        """Append a leaf hash (``leaf_hash(event_digest)``); return its leaf index."""
        index = self._range.size
        levels = self._levels
        for (level, _), value in self._range.append(leaf_hash):
            if level == len(levels):
                levels.append([])
            levels[level].append(value)
        return index

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append several leaf hashes in order."""
        for value in leaf_hashes:
            self.append(value)

    def leaf(self, index: int) -> bytes:
        """The leaf hash at ``index``."""
        _check_count(index, "index")
        if index >= self.size:
            raise ProofError(f"no leaf {index} in a tree of size {self.size}", index=index)
        return self._levels[0][index]

    def _check_size(self, size: int | None) -> int:
        """Resolve ``None`` to the current size and reject sizes beyond it."""
        if size is None:
            return self.size
        _check_count(size, "size")
        if size > self.size:
            raise ProofError(
                f"size {size} is beyond the tree's current size {self.size}", size=size
            )
        return size

    def root(self, size: int | None = None) -> bytes:
        """The root of the tree of ``size`` leaves (default: all of them)."""
        return fold(root_plan(self._check_size(size)), self._nodes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """The RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves."""
        return assemble(inclusion_plan(index, self._check_size(size)), self._nodes)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """The RFC 9162 consistency proof from ``old_size`` to ``new_size`` (default: now)."""
        return assemble(consistency_plan(old_size, self._check_size(new_size)), self._nodes)
