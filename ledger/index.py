"""The verifiable index: a Merkle map from each record and each patient to the leaf indexes of
their events, one root per log size (DESIGN §6.5; the specification is docs/index.md). Pure
functions over typed values, no I/O.

**Keys** (:func:`event_keys`): an event belongs to two keys, one when it has no record —
``SHA-256("medtrail/index/record/v1" || recordRef)`` for the record it belongs to (its own
``recordRef``, or the one it inherits through ``prescriptionId`` / ``serviceRef`` /
``claimId``: :attr:`ledger.logstate.Links.record_ref`) and ``SHA-256("medtrail/index/patient/v1"
|| patient)`` for the 20-byte address in its ``patient`` field.

**Values** (:class:`ListHead`): each key maps to the strictly increasing list of the leaf
indexes of its events. The list is committed to as an RFC 9162 tree (:mod:`ledger.merkle`)
whose leaves are the indexes as 8-byte big-endian integers: its *head* is ``(size, root)``.
A served list is complete iff its recomputed head matches; a list only grew between two
checkpoints iff the old head is that of a prefix of the new list (:func:`verify_list_extends`),
or equivalently iff an RFC 9162 consistency proof between the two heads verifies
(:func:`verify_list_consistency`).

**The map** is a binary Merkle prefix trie over the 256-bit keys with leaf shortcuts (as in
Diem's Jellyfish Merkle tree): a key's leaf sits at the shallowest depth at which its subtree
holds no other key; an internal node hashes its two children; an empty subtree hashes to a
constant. The trie is canonical: its root depends only on the key → head map, not on the
order of the updates that built it. Hashes (SHA-256, every input starting with its own tag,
none a prefix of another and none starting with RFC 9162's 0x00 / 0x01)::

    value_hash(size, root) = SHA-256("medtrail/index/value/v1" || uint64be(size) || root)
    leaf_hash(key, head)   = SHA-256("medtrail/index/leaf/v1" || key || value_hash(head))
    node_hash(left, right) = SHA-256("medtrail/index/node/v1" || left || right)
    EMPTY_HASH             = SHA-256("medtrail/index/empty/v1")

Nodes are addressed as in an implicit binary heap (:data:`NodeId`): the root is 1, the
children of ``n`` are ``2n`` (bit 0) and ``2n + 1`` (bit 1); the node at depth ``d`` on a
key's path is ``2**d + (key >> (256 - d))``. A stored node (:data:`Node`) is bytes: an internal
node's hash, or a leaf's 104-byte record (:class:`Leaf`).

**Proofs** (:class:`LookupProof`) come in two steps, like :mod:`ledger.merkle`'s: from the
key and the trie's depth alone, :func:`lookup_plan` names the nodes a proof may need (the
key's path and its siblings), so that a store fetches them in one query; :func:`assemble_lookup`
builds the proof from what was fetched. :func:`verify_list_lookup` (a served list) and
:func:`verify_lookup` (a head) recompute the root with precise failure messages.

**Upkeep**: :func:`update` applies one batch — the new leaf indexes of each key for the events
``[N, M)`` — to the trie at size ``N`` and returns the root at ``M`` with every node it wrote,
to be stored under version ``M`` (a key set only grows, so a position once occupied stays
occupied; a store may drop versions superseded below the sizes it still serves). Upper nodes
shared by the batch's keys are hashed once per batch. Per-key lists are resumed from their
:class:`~ledger.merkle.CompactRange` frontiers (stored as bytes: :func:`encode_frontier`).
:class:`MemoryIndex` is the in-memory index built on both (the regulator's audit rebuilds the
whole index with it; tests use it as the reference a store must match).
"""

from __future__ import annotations

import hashlib
import hmac
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from ledger import merkle
from ledger.eip712 import parse_address
from ledger.errors import LedgerError, ProofError
from ledger.merkle import CompactRange, MissingNodeError

if TYPE_CHECKING:
    from ledger.events import EventBase

__all__ = [
    "EMPTY_HASH",
    "EMPTY_LIST",
    "EMPTY_TAG",
    "KEY_SIZE",
    "LEAF_NODE_SIZE",
    "LEAF_TAG",
    "MAX_DEPTH",
    "NODE_TAG",
    "PATIENT_TAG",
    "RECORD_TAG",
    "VALUE_TAG",
    "IndexUpdate",
    "Leaf",
    "ListHead",
    "LookupProof",
    "MemoryIndex",
    "Node",
    "NodeId",
    "Terminal",
    "assemble_lookup",
    "batch_of",
    "check_list",
    "decode_frontier",
    "encode_frontier",
    "event_keys",
    "frontiers_of",
    "is_leaf",
    "keys_of",
    "leaf_hash",
    "list_consistency_proof",
    "list_frontier",
    "list_head",
    "lookup_plan",
    "node_depth",
    "node_hash",
    "node_hash_of",
    "node_id",
    "patient_key",
    "record_key",
    "root_from_lookup_proof",
    "update",
    "update_plan",
    "value_hash",
    "verify_list_consistency",
    "verify_list_extends",
    "verify_list_lookup",
    "verify_lookup",
]

#: Size in bytes of a key (a SHA-256 digest) and of every hash.
KEY_SIZE = 32
#: Depth of the deepest possible leaf: two distinct 256-bit keys part at depth 255 at the latest.
MAX_DEPTH = 256
#: Leaf indexes are RFC 9162 ``uint64`` positions.
_MAX_INDEX = 2**64 - 1

#: Domain tags (docs/index.md §1, §3): no tag is a prefix of another, none starts with RFC
#: 9162's 0x00 / 0x01.
RECORD_TAG = b"medtrail/index/record/v1"
PATIENT_TAG = b"medtrail/index/patient/v1"
VALUE_TAG = b"medtrail/index/value/v1"
LEAF_TAG = b"medtrail/index/leaf/v1"
NODE_TAG = b"medtrail/index/node/v1"
EMPTY_TAG = b"medtrail/index/empty/v1"

_sha256 = hashlib.sha256

#: Hash of an empty subtree (and root of the empty index).
EMPTY_HASH: bytes = _sha256(EMPTY_TAG).digest()

#: A trie position, numbered as in an implicit binary heap: the root is 1, the children of
#: ``n`` are ``2n`` and ``2n + 1``; depth ``n.bit_length() - 1``. Below ``2**257``.
NodeId: TypeAlias = int


# ---------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------


def record_key(record_ref: bytes) -> bytes:
    """The key of a record: ``SHA-256("medtrail/index/record/v1" || recordRef)``."""
    if not isinstance(record_ref, bytes | bytearray) or len(record_ref) != 32:
        raise LedgerError("a recordRef is 32 bytes", got=_describe(record_ref))
    return _sha256(RECORD_TAG + record_ref).digest()


def patient_key(patient: str | bytes) -> bytes:
    """The key of a patient: ``SHA-256("medtrail/index/patient/v1" || address)``, over the
    20-byte address (a ``0x``-hex string is parsed; mixed case must be EIP-55)."""
    return _sha256(PATIENT_TAG + parse_address(patient, "patient")).digest()


def keys_of(patient: str | bytes, record_ref: bytes | None) -> tuple[bytes, ...]:
    """The keys of an event about ``patient`` belonging to ``record_ref``: the record's key
    first (absent when ``record_ref`` is None), then the patient's."""
    # The common case inline (a 32-byte recordRef, a 20-byte address): one call per event.
    if record_ref is None:
        record_digest = None
    elif type(record_ref) is bytes and len(record_ref) == KEY_SIZE:
        record_digest = _sha256(RECORD_TAG + record_ref).digest()
    else:
        record_digest = record_key(record_ref)
    if type(patient) is bytes and len(patient) == 20:
        patient_digest = _sha256(PATIENT_TAG + patient).digest()
    else:
        patient_digest = patient_key(patient)
    if record_digest is None:
        return (patient_digest,)
    return (record_digest, patient_digest)


def event_keys(event: EventBase, record_ref: bytes | None) -> tuple[bytes, ...]:
    """The keys of ``event``, given the record it belongs to: exactly
    :attr:`ledger.logstate.Links.record_ref` as :func:`ledger.logstate.apply` returns it (the
    event's own ``recordRef``; a dispense's prescription's; a claim's service's; a payment's
    claim's; None when the event it refers to is not in the log)."""
    return keys_of(event.patient, record_ref)


def _check_key(key: Any, what: str = "key") -> bytes:
    if not isinstance(key, bytes | bytearray):
        raise ProofError(f"{what} must be bytes, got {type(key).__name__}")
    if len(key) != KEY_SIZE:
        raise ProofError(f"{what} is {len(key)} bytes long, not {KEY_SIZE}")
    return bytes(key)


def _describe(value: Any) -> str:
    """A short description of a bad value for an error's context (never the value itself)."""
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return type(value).__name__


# ---------------------------------------------------------------------------------------
# Lists
# ---------------------------------------------------------------------------------------


class ListHead(NamedTuple):
    """The commitment to a key's list, like an RFC 9162 tree head: its number of entries and
    the root of the tree over them."""

    size: int
    root: bytes


#: The head of the empty list: what an absent key's list is.
EMPTY_LIST = ListHead(0, merkle.EMPTY_ROOT)

_LIST_LEAF_PREFIX = b"\x00"  # RFC 9162 leaf prefix; the leaf is the 8-byte index
_LIST_NODE_PREFIX = b"\x01"  # RFC 9162 node prefix


def _list_leaf_hash(index: int) -> bytes:
    return _sha256(_LIST_LEAF_PREFIX + index.to_bytes(8, "big")).digest()


def _list_root(indexes: Sequence[int]) -> bytes:
    """RFC 9162 root over the 8-byte big-endian ``indexes``, level by level (a lone node at
    the right end of a level moves up unhashed, which is RFC 9162's split)."""
    level = [_list_leaf_hash(i) for i in indexes]
    if not level:
        return merkle.EMPTY_ROOT
    prefix = _LIST_NODE_PREFIX
    while len(level) > 1:
        paired = [
            _sha256(prefix + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


def check_list(indexes: Sequence[int], size: int) -> list[int]:
    """Return ``indexes`` as a list if it is a valid list at log size ``size``, else raise
    :class:`ProofError`: every entry an ``int`` below ``size``, strictly increasing (no
    repeats, nothing out of order)."""
    _check_size(size, "size")
    if isinstance(indexes, bytes | bytearray | str):
        raise ProofError("a list of leaf indexes must be a sequence of integers")
    values = list(indexes)
    previous = -1
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProofError(f"entry {i} of the list is not an integer", entry=i)
        if value < 0:
            raise ProofError(f"entry {i} of the list is negative", entry=i)
        if value <= previous:
            raise ProofError(
                f"entry {i} of the list ({value}) does not come after entry {i - 1} "
                f"({previous}): a list is strictly increasing",
                entry=i,
            )
        if value >= size:
            raise ProofError(
                f"entry {i} of the list ({value}) is not a leaf of a log of size {size}",
                entry=i,
                size=size,
            )
        previous = value
    return values


def list_head(indexes: Sequence[int]) -> ListHead:
    """The head ``(size, root)`` of a list of leaf indexes (checked: increasing, uint64)."""
    return ListHead(len(indexes), _list_root(check_list(indexes, _MAX_INDEX)))


def _check_head(head: Any, what: str = "list head") -> ListHead:
    if not isinstance(head, ListHead):
        raise ProofError(f"{what} must be a ListHead, got {type(head).__name__}")
    size, root = head.size, head.root
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= _MAX_INDEX:
        raise ProofError(f"{what} size must be an integer in [0, 2**64)")
    if not isinstance(root, bytes | bytearray) or len(root) != KEY_SIZE:
        raise ProofError(f"{what} root must be {KEY_SIZE} bytes")
    if size == 0 and not hmac.compare_digest(bytes(root), merkle.EMPTY_ROOT):
        raise ProofError(f"{what} of an empty list must have the empty tree's root")
    return ListHead(size, bytes(root))


def verify_list_extends(old: ListHead, indexes: Sequence[int]) -> None:
    """Check that the list ``indexes`` only grew from the list ``old`` commits to: its first
    ``old.size`` entries have ``old``'s root. Raise :class:`ProofError` if the list shrank
    or an earlier entry was removed, changed or moved (a rewritten history).

    ``indexes`` is the newer list, itself checked against the newer checkpoint
    (:func:`verify_list_lookup`); ``old`` is the head a client remembered."""
    old = _check_head(old, "old list head")
    values = check_list(indexes, _MAX_INDEX)
    if len(values) < old.size:
        raise ProofError(
            f"the list shrank from {old.size} to {len(values)} entries",
            old_count=old.size,
            new_count=len(values),
        )
    if not hmac.compare_digest(_list_root(values[: old.size]), old.root):
        raise ProofError(
            f"the first {old.size} entries of the list are not those of the earlier list: "
            "its history was rewritten",
            old_count=old.size,
            new_count=len(values),
        )


def verify_list_consistency(old: ListHead, new: ListHead, proof: Sequence[bytes]) -> None:
    """Check that the list with head ``new`` only grew from the list with head ``old``, with an
    RFC 9162 consistency proof between the two list trees (no list needed). Raises
    :class:`ProofError`."""
    old = _check_head(old, "old list head")
    new = _check_head(new, "new list head")
    if old.size > new.size:
        raise ProofError(
            f"the list shrank from {old.size} to {new.size} entries",
            old_count=old.size,
            new_count=new.size,
        )
    merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)


def list_consistency_proof(indexes: Sequence[int], old_count: int) -> list[bytes]:
    """The RFC 9162 consistency proof from the first ``old_count`` entries of ``indexes`` to
    the whole list (what a server sends instead of the list's earlier part)."""
    tree = merkle.MemoryTree(_list_leaf_hash(i) for i in check_list(indexes, _MAX_INDEX))
    return tree.consistency_proof(old_count)


# ---------------------------------------------------------------------------------------
# Trie hashing and positions
# ---------------------------------------------------------------------------------------


def value_hash(head: ListHead) -> bytes:
    """``SHA-256("medtrail/index/value/v1" || uint64be(size) || root)``."""
    return _sha256(VALUE_TAG + head.size.to_bytes(8, "big") + head.root).digest()


def leaf_hash(key: bytes, head: ListHead) -> bytes:
    """``SHA-256("medtrail/index/leaf/v1" || key || value_hash(head))``."""
    return _sha256(LEAF_TAG + key + value_hash(head)).digest()


def _leaf_hash_of(key: bytes, value: bytes) -> bytes:
    return _sha256(LEAF_TAG + key + value).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256("medtrail/index/node/v1" || left || right)``."""
    return _sha256(NODE_TAG + left + right).digest()


def node_id(key: bytes, depth: int) -> NodeId:
    """The position at ``depth`` on ``key``'s path: ``2**depth + (key >> (256 - depth))``."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise LedgerError(f"a depth is an integer in [0, {MAX_DEPTH}]", depth=depth)
    return (1 << depth) | (int.from_bytes(_check_key(key), "big") >> (256 - depth))


def node_depth(node: NodeId) -> int:
    """The depth of a position (the root's is 0)."""
    return node.bit_length() - 1


#: A stored trie node, as the bytes a store keeps: an internal node is its 32-byte hash; a
#: leaf is the 104-byte record ``hash || key || uint64be(size) || root`` (:class:`Leaf`).
#: Byte strings rather than objects: a batch writes ~10 nodes per event, and a process holding
#: an index of 10^5 keys would otherwise give its garbage collector 10^5 more containers to
#: walk at every full collection (measured: the collector then took half of the upkeep).
Node: TypeAlias = bytes

#: Length of a stored leaf node.
LEAF_NODE_SIZE = 3 * KEY_SIZE + 8


class Leaf(NamedTuple):
    """A leaf node, decoded: its hash, its key and its list's head."""

    hash: bytes
    key: bytes
    head: ListHead

    @classmethod
    def of(cls, key: bytes, head: ListHead) -> Leaf:
        """The leaf of ``key`` with list head ``head`` (its hash computed)."""
        return cls(leaf_hash(key, head), key, head)

    @classmethod
    def decode(cls, node: Node) -> Leaf:
        """Decode a stored leaf node; raise :class:`MissingNodeError` if it is not one."""
        if len(node) != LEAF_NODE_SIZE:
            raise MissingNodeError(f"an index leaf node is {LEAF_NODE_SIZE} bytes, not {len(node)}")
        return cls(node[:32], node[32:64], ListHead(int.from_bytes(node[64:72], "big"), node[72:]))

    def encode(self) -> Node:
        """The stored form: ``hash || key || uint64be(size) || root``."""
        return self.hash + self.key + self.head.size.to_bytes(8, "big") + self.head.root


def is_leaf(node: Node) -> bool:
    """Whether a stored node is a leaf (else it is internal)."""
    return len(node) == LEAF_NODE_SIZE


def node_hash_of(node: Node) -> bytes:
    """The hash of a stored node."""
    return node[:KEY_SIZE]


def _check_node(node: object, position: NodeId) -> bytes:
    """A fetched node, or :class:`MissingNodeError` if it has neither stored form."""
    if not isinstance(node, bytes) or len(node) not in (KEY_SIZE, LEAF_NODE_SIZE):
        raise MissingNodeError(
            f"index node at depth {node_depth(position)} is not a stored node "
            f"({KEY_SIZE} or {LEAF_NODE_SIZE} bytes)",
            depth=node_depth(position),
        )
    return node


# A key's list frontier, as stored: ``uint64be(size) || hashes``, the hashes of
# ``CompactRange.hashes`` (one per set bit of ``size``). Bytes for the reason nodes are.


def encode_frontier(frontier: CompactRange) -> bytes:
    """The stored form of a list frontier: ``uint64be(size) || hashes``."""
    return frontier.size.to_bytes(8, "big") + b"".join(frontier.hashes)


def decode_frontier(data: bytes) -> CompactRange:
    """The :class:`~ledger.merkle.CompactRange` of a stored list frontier (raises
    :class:`LedgerError` if the hashes do not fit the size)."""
    if not isinstance(data, bytes) or len(data) < 8 or (len(data) - 8) % KEY_SIZE:
        raise LedgerError("a stored list frontier is 8 bytes and whole hashes")
    hashes = [data[i : i + KEY_SIZE] for i in range(8, len(data), KEY_SIZE)]
    return CompactRange(int.from_bytes(data[:8], "big"), hashes)


def _append_list(
    stack: list[bytes], count: int, indexes: Iterable[int], first: int
) -> tuple[int, int]:
    """Append the entries ``indexes`` to a list of ``count`` entries whose frontier's hashes are
    ``stack`` (modified in place, as :meth:`ledger.merkle.CompactRange.append` does); return the
    new count and the last entry. Raises :class:`LedgerError` unless the entries are strictly
    increasing integers from ``first`` on."""
    sha256 = _sha256
    previous = first - 1
    for value in indexes:
        if type(value) is not int or value <= previous:
            raise LedgerError(
                "a key's new leaf indexes are strictly increasing integers from the "
                f"batch's first leaf {first}",
                old_size=first,
            )
        previous = value
        # RFC 9162's leaf prefix 0x00 then the 8-byte index: the index on 9 bytes.
        acc = sha256(value.to_bytes(9, "big")).digest()
        rest = count
        while rest & 1:
            acc = sha256(b"\x01" + stack.pop() + acc).digest()
            rest >>= 1
        stack.append(acc)
        count += 1
    return count, previous


def _fold_list(stack: Sequence[bytes]) -> bytes:
    """The root of a non-empty list from its frontier's hashes (RFC 9162: right to left)."""
    sha256 = _sha256
    root = stack[-1]
    at = len(stack) - 1
    while at:
        at -= 1
        root = sha256(b"\x01" + stack[at] + root).digest()
    return root


def list_frontier(indexes: Iterable[int]) -> tuple[bytes, ListHead]:
    """A key's list frontier, stored form, over its whole list ``indexes`` (strictly increasing,
    streamed: not held), and the list's head. Raises :class:`LedgerError` for an empty list or
    one that is not strictly increasing from 0 on."""
    stack: list[bytes] = []
    count, _ = _append_list(stack, 0, indexes, 0)
    if not count:
        raise LedgerError("a key's list has at least one entry")
    return count.to_bytes(8, "big") + b"".join(stack), ListHead(count, _fold_list(stack))


def frontiers_of(lists: Mapping[bytes, Sequence[int]]) -> dict[bytes, bytes]:
    """Each key's list frontier, stored form, over its whole list ``lists[key]`` (what a store
    that keeps no frontiers rebuilds from its events). Raises :class:`ProofError` for a list
    that is not strictly increasing."""
    found: dict[bytes, bytes] = {}
    for key, indexes in lists.items():
        found[key], _ = list_frontier(check_list(indexes, _MAX_INDEX))
    return found


# ---------------------------------------------------------------------------------------
# Proofs
# ---------------------------------------------------------------------------------------


class Terminal(IntEnum):
    """Where a key's path ends."""

    #: An empty subtree: the key is absent.
    EMPTY = 0
    #: The key's own leaf: the key is present (its head is the list the verifier was served).
    LEAF = 1
    #: Another key's leaf, alone in the subtree the key would be in: the key is absent.
    OTHER_LEAF = 2


@dataclass(frozen=True, slots=True)
class LookupProof:
    """A key's lookup proof: where its path ends, and the siblings from there to the root.

    ``siblings[0]`` is the sibling of the path's last node (at depth ``len(siblings)``),
    ``siblings[-1]`` that of the root's child (RFC 9162's bottom-up order); an empty subtree's
    sibling is :data:`EMPTY_HASH`. For :attr:`Terminal.OTHER_LEAF`, ``other_key`` and
    ``other_value`` (its :func:`value_hash`) describe the leaf found on the path.

    Encoding (:meth:`to_bytes`): ``uint16be(depth)``, a bitmap of ``ceil(depth / 8)`` bytes
    (bit ``i``, most significant first, set iff ``siblings[i]`` is not :data:`EMPTY_HASH`;
    unused bits zero), the non-empty siblings in order, one terminal byte, then for
    :attr:`Terminal.OTHER_LEAF` the other key and its value hash.
    """

    siblings: tuple[bytes, ...]
    terminal: Terminal
    other_key: bytes | None = None
    other_value: bytes | None = None

    def __post_init__(self) -> None:
        """Check the proof's shape; raise :class:`ProofError` if it cannot be a lookup proof."""
        if isinstance(self.siblings, bytes | bytearray | str):
            raise ProofError("a lookup proof's siblings are a sequence of hashes")
        siblings = tuple(self.siblings)
        if len(siblings) > MAX_DEPTH:
            raise ProofError(
                f"lookup proof depth {len(siblings)} is above {MAX_DEPTH}", depth=len(siblings)
            )
        for i, sibling in enumerate(siblings):
            if not isinstance(sibling, bytes | bytearray) or len(sibling) != KEY_SIZE:
                raise ProofError(f"sibling {i} of the lookup proof is not {KEY_SIZE} bytes")
        object.__setattr__(self, "siblings", tuple(bytes(s) for s in siblings))
        try:
            terminal = Terminal(self.terminal)
        except ValueError:
            raise ProofError(f"unknown lookup proof terminal {self.terminal!r}") from None
        object.__setattr__(self, "terminal", terminal)
        if terminal is Terminal.OTHER_LEAF:
            other = _check_key(self.other_key, "the other leaf's key")
            value = _check_key(self.other_value, "the other leaf's value hash")
            object.__setattr__(self, "other_key", other)
            object.__setattr__(self, "other_value", value)
        elif self.other_key is not None or self.other_value is not None:
            raise ProofError(f"a lookup proof ending at {terminal.name} names no other leaf")

    @property
    def depth(self) -> int:
        """Depth of the path's last node: the number of siblings."""
        return len(self.siblings)

    def to_bytes(self) -> bytes:
        """The compact encoding (see the class documentation)."""
        depth = len(self.siblings)
        bitmap = 0
        present: list[bytes] = []
        for i, sibling in enumerate(self.siblings):
            if sibling != EMPTY_HASH:
                bitmap |= 1 << (8 * ((depth + 7) // 8) - 1 - i)
                present.append(sibling)
        parts = [depth.to_bytes(2, "big"), bitmap.to_bytes((depth + 7) // 8, "big"), *present]
        parts.append(bytes([self.terminal]))
        if self.other_key is not None and self.other_value is not None:
            parts += [self.other_key, self.other_value]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> LookupProof:
        """Decode :meth:`to_bytes`'s form; raise :class:`ProofError` on anything else."""
        if not isinstance(data, bytes | bytearray):
            raise ProofError(f"an encoded lookup proof is bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < 3:
            raise ProofError(f"an encoded lookup proof is at least 3 bytes, got {len(data)}")
        depth = int.from_bytes(data[:2], "big")
        if depth > MAX_DEPTH:
            raise ProofError(f"lookup proof depth {depth} is above {MAX_DEPTH}", depth=depth)
        width = (depth + 7) // 8
        if len(data) < 2 + width + 1:
            raise ProofError(f"encoded lookup proof of depth {depth} is cut short", depth=depth)
        bitmap = int.from_bytes(data[2 : 2 + width], "big")
        if bitmap & ((1 << (8 * width - depth)) - 1):
            raise ProofError("lookup proof bitmap has bits set beyond its depth", depth=depth)
        present = bitmap.bit_count()
        at = 2 + width
        end = at + KEY_SIZE * present
        if len(data) < end + 1:
            raise ProofError(
                f"encoded lookup proof is {len(data)} bytes, too short for its {present} "
                "non-empty siblings",
                depth=depth,
            )
        siblings: list[bytes] = []
        for i in range(depth):
            if bitmap >> (8 * width - 1 - i) & 1:
                siblings.append(data[at : at + KEY_SIZE])
                at += KEY_SIZE
            else:
                siblings.append(EMPTY_HASH)
        try:
            terminal = Terminal(data[end])
        except ValueError:
            raise ProofError(f"unknown lookup proof terminal {data[end]}") from None
        rest = data[end + 1 :]
        if terminal is Terminal.OTHER_LEAF:
            if len(rest) != 2 * KEY_SIZE:
                raise ProofError(
                    f"a lookup proof ending at another key's leaf carries {2 * KEY_SIZE} "
                    f"bytes after its terminal, got {len(rest)}"
                )
            return cls(tuple(siblings), terminal, rest[:KEY_SIZE], rest[KEY_SIZE:])
        if rest:
            raise ProofError(f"encoded lookup proof has {len(rest)} trailing bytes")
        return cls(tuple(siblings), terminal)


def lookup_plan(key: bytes, depth: int) -> list[NodeId]:
    """The positions a lookup proof of ``key`` may need in a trie whose deepest leaf is at
    ``depth`` (:attr:`IndexUpdate.depth`, kept per version): the key's path down to ``depth``
    and the siblings along it, ``2 * depth + 1`` positions. A store fetches, for each, the
    latest version at or below the checkpoint's size (absent: an empty subtree)."""
    node = node_id(key, depth)
    ids = [1]
    for d in range(1, depth + 1):
        path = node >> (depth - d)
        ids += (path, path ^ 1)
    return ids


def assemble_lookup(key: bytes, nodes: Mapping[NodeId, Node]) -> LookupProof:
    """Build the lookup proof of ``key`` from the fetched nodes (absent: empty subtree).

    Raises :class:`MissingNodeError` when the nodes cannot be those of a trie (an internal
    node without children, a leaf off the key's path, a malformed node): a node lost by the
    store, or a plan too shallow for the version."""
    key = _check_key(key)
    k = int.from_bytes(key, "big")
    get = nodes.get
    current = get(1)
    if current is None:
        return LookupProof((), Terminal.EMPTY)
    current = _check_node(current, 1)
    siblings: list[bytes] = []
    node = 1
    depth = 0
    while len(current) == KEY_SIZE:  # internal
        if depth == MAX_DEPTH:
            raise MissingNodeError(f"index node at depth {MAX_DEPTH} is not a leaf", depth=depth)
        child = (node << 1) | ((k >> (255 - depth)) & 1)
        sibling = get(child ^ 1)
        found = get(child)
        depth += 1
        if found is None:
            if sibling is None:
                raise MissingNodeError(
                    f"index node at depth {depth - 1} on the key's path is internal but both "
                    "of its children are missing",
                    depth=depth - 1,
                )
            siblings.append(_check_node(sibling, child ^ 1)[:KEY_SIZE])
            siblings.reverse()
            return LookupProof(tuple(siblings), Terminal.EMPTY)
        siblings.append(
            EMPTY_HASH if sibling is None else _check_node(sibling, child ^ 1)[:KEY_SIZE]
        )
        node = child
        current = _check_node(found, child)
    siblings.reverse()
    leaf = Leaf.decode(current)
    if leaf.key == key:
        return LookupProof(tuple(siblings), Terminal.LEAF)
    if depth and int.from_bytes(leaf.key, "big") >> (256 - depth) != k >> (256 - depth):
        raise MissingNodeError(f"index leaf at depth {depth} is off the key's path", depth=depth)
    return LookupProof(tuple(siblings), Terminal.OTHER_LEAF, leaf.key, value_hash(leaf.head))


def root_from_lookup_proof(key: bytes, head: ListHead | None, proof: LookupProof) -> bytes:
    """The index root that ``proof`` yields for ``key`` with list head ``head`` (None or a
    size of 0: the key is claimed absent).

    Raises :class:`ProofError` when the proof is malformed, not canonical (a leaf or an empty
    subtree beside an empty subtree: the trie never holds one), or says present when the key
    is claimed absent or the other way round."""
    key = _check_key(key)
    if not isinstance(proof, LookupProof):
        raise ProofError(f"a lookup proof must be a LookupProof, got {type(proof).__name__}")
    if head is not None:
        head = _check_head(head)
        if head.size == 0:
            head = None
    siblings = proof.siblings  # shape checked when the proof was built
    depth = len(siblings)
    terminal = proof.terminal
    if terminal is Terminal.LEAF:
        if head is None:
            raise ProofError(
                "the lookup proof shows the key in the index, but it was claimed absent (an "
                "empty list)",
                depth=depth,
            )
        acc = leaf_hash(key, head)
    else:
        if head is not None:
            raise ProofError(
                f"the lookup proof shows the key absent from the index, but a list of "
                f"{head.size} entries was claimed",
                count=head.size,
                depth=depth,
            )
        if terminal is Terminal.EMPTY:
            acc = EMPTY_HASH
        else:
            other, value = proof.other_key, proof.other_value
            assert other is not None
            assert value is not None
            if other == key:
                raise ProofError(
                    "the lookup proof's other leaf is the key itself: an absence proof must "
                    "end at a different key's leaf",
                    depth=depth,
                )
            if depth and int.from_bytes(other, "big") >> (256 - depth) != int.from_bytes(
                key, "big"
            ) >> (256 - depth):
                raise ProofError(
                    f"the lookup proof's other leaf does not share the key's first {depth} "
                    "bits: it is not on the key's path",
                    depth=depth,
                )
            acc = _leaf_hash_of(other, value)
    if depth and siblings[0] == EMPTY_HASH:
        raise ProofError(
            "the lookup proof is not canonical: its path ends beside an empty subtree, where "
            "the trie holds no node",
            depth=depth,
        )
    k = int.from_bytes(key, "big")
    for i, sibling in enumerate(siblings):
        if (k >> (256 - depth + i)) & 1:
            acc = _sha256(NODE_TAG + sibling + acc).digest()
        else:
            acc = _sha256(NODE_TAG + acc + sibling).digest()
    return acc


def verify_lookup(key: bytes, head: ListHead | None, proof: LookupProof, root: bytes) -> None:
    """Check that the index with ``root`` maps ``key`` to ``head`` (None: to nothing).

    ``root`` must come from the chain's checkpoint, never from the party supplying the proof.
    Raises :class:`ProofError`."""
    expected = _check_key(root, "index root")
    computed = root_from_lookup_proof(key, head, proof)
    if not hmac.compare_digest(computed, expected):
        what = "absence" if head is None or head.size == 0 else f"a list of {head.size} entries"
        raise ProofError(
            f"the lookup proof of {what} does not lead to the index root: the key, its list "
            "or the proof differs from what the index committed to",
            computed_root=computed.hex(),
            depth=proof.depth,
        )


def verify_list_lookup(
    key: bytes, indexes: Sequence[int], size: int, proof: LookupProof, root: bytes
) -> ListHead:
    """Check that ``indexes`` is the **whole** list of ``key`` in the index with ``root`` at log
    size ``size`` (an empty list: the key is absent); return the list's head, which a client
    remembers to check later that the list only grew (:func:`verify_list_extends`).

    ``size`` and ``root`` come from the same on-chain checkpoint. Raises :class:`ProofError`."""
    values = check_list(indexes, size)
    head = ListHead(len(values), _list_root(values))
    verify_lookup(key, head if values else None, proof, root)
    return head


# ---------------------------------------------------------------------------------------
# Upkeep
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexUpdate:
    """What one batch did: the index at log size :attr:`size` and what to store.

    :attr:`nodes` are every trie node written, to be stored under version :attr:`size` (a
    position's latest version at or below a checkpoint's size is its node at that
    checkpoint). :attr:`depth` is the deepest leaf written; the trie's depth at a version,
    which :func:`lookup_plan` needs, is the largest over the updates up to it."""

    old_size: int
    size: int
    root: bytes
    depth: int
    nodes: dict[NodeId, Node] = field(repr=False)
    #: The new list frontier of every key the batch touched, stored form
    #: (:func:`encode_frontier`), to persist or to resume from.
    frontiers: dict[bytes, bytes] = field(repr=False)

    def heads(self) -> dict[bytes, ListHead]:
        """The new list head of every key the batch touched (decoded from its leaf)."""
        found: dict[bytes, ListHead] = {}
        for node in self.nodes.values():
            if len(node) == LEAF_NODE_SIZE and node[32:64] in self.frontiers:
                leaf = Leaf.decode(node)
                found[leaf.key] = leaf.head
        return found


def batch_of(start: int, events: Iterable[Sequence[bytes]]) -> tuple[dict[bytes, list[int]], int]:
    """Group the keys of consecutive events, the first at leaf ``start``, into a batch
    ``key -> new leaf indexes``; return it with the number of events."""
    batch: dict[bytes, list[int]] = {}
    index = start
    for keys in events:
        for key in keys:
            found = batch.get(key)
            if found is None:
                batch[key] = [index]
            else:
                found.append(index)
        index += 1
    return batch, index - start


def update_plan(keys: Iterable[bytes], depth: int) -> list[NodeId]:
    """The positions :func:`update` may read to apply a batch touching ``keys`` to a trie
    whose deepest leaf is at ``depth``: each key's path and its siblings (deduplicated; the
    upper levels are shared)."""
    ids: dict[NodeId, None] = {}
    for key in keys:
        for node in lookup_plan(key, depth):
            ids[node] = None
    return list(ids)


def update(
    nodes: Mapping[NodeId, Node],
    frontiers: Mapping[bytes, bytes],
    batch: Mapping[bytes, Sequence[int]],
    old_size: int,
    size: int,
) -> IndexUpdate:
    """Apply the events ``[old_size, size)`` to the index at ``old_size``.

    ``nodes`` is the trie at ``old_size`` (at least :func:`update_plan` of the batch's keys;
    absent: empty), ``frontiers`` the stored list frontiers (:func:`encode_frontier`) of the
    batch's keys that are already in the index, ``batch`` the new leaf indexes of each key
    (:func:`batch_of`): strictly increasing, in ``[old_size, size)``. Nothing given is
    modified. Raises :class:`LedgerError` for a malformed batch, and when a frontier disagrees
    with the trie (missing for a key the index holds, given for a key it does not, or of
    another size)."""
    for value, what in ((old_size, "old_size"), (size, "size")):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INDEX:
            raise LedgerError(f"{what} must be an integer in [0, 2**64), got {value!r}")
    if old_size > size:
        raise LedgerError(f"old size {old_size} is larger than new size {size}")
    sha256 = _sha256
    node_tag, empty_hash = NODE_TAG, EMPTY_HASH
    new_frontiers: dict[bytes, bytes] = {}
    #: key (as an int) -> its new leaf node, and its count before the batch (8 bytes): what its
    #: leaf in the trie must hold, if it has one.
    leaf_of: dict[int, bytes] = {}
    old_of: dict[int, bytes] = {}
    resumed = 0  # keys of the batch with entries before it
    from_bytes = int.from_bytes
    value_tag, leaf_tag = VALUE_TAG, LEAF_TAG
    for key, indexes in batch.items():
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise LedgerError(f"an index key is {KEY_SIZE} bytes", got=_describe(key))
        if not indexes:
            raise LedgerError("a batch gives each of its keys at least one leaf index")
        # The list's frontier, appended to as CompactRange.append does, on its stored form.
        frontier = frontiers.get(key)
        if frontier is None:
            old = _NO_COUNT
            count, stack = 0, []
        else:
            old = frontier[:8]
            count = from_bytes(old, "big")
            length = len(frontier)
            if length == 40:
                stack = [frontier[8:]]
            elif length == 72:
                stack = [frontier[8:40], frontier[40:]]
            else:
                stack = [frontier[i : i + KEY_SIZE] for i in range(8, length, KEY_SIZE)]
            if len(stack) != count.bit_count() or length != 8 + KEY_SIZE * len(stack):
                raise LedgerError(
                    f"a stored list frontier of size {count} holds {count.bit_count()} hashes"
                )
            if count:
                resumed += 1
        count, previous = _append_list(stack, count, indexes, old_size)
        if previous >= size:
            raise LedgerError(
                f"leaf index {previous} is beyond the batch's last leaf {size - 1}", size=size
            )
        root = _fold_list(stack)
        count_bytes = count.to_bytes(8, "big")
        new_frontiers[key] = count_bytes + b"".join(stack)
        k = from_bytes(key, "big")
        old_of[k] = old
        leaf_of[k] = b"".join(
            (
                sha256(leaf_tag + key + sha256(value_tag + count_bytes + root).digest()).digest(),
                key,
                count_bytes,
                root,
            )
        )
    written: dict[NodeId, Node] = {}
    get = nodes.get
    deepest = 0
    found = 0

    def resume(leaf: bytes, old: bytes) -> None:
        """``leaf`` is the key's own, found in the trie: check that it holds as many entries as
        the key's frontier covers (``old``)."""
        nonlocal found
        if leaf[64:72] != old:
            count, before = from_bytes(leaf[64:72], "big"), from_bytes(old, "big")
            raise LedgerError(
                f"the index holds {count} entries for a key whose frontier covers {before}: "
                "frontiers and trie disagree",
                index_count=count,
                frontier_count=before,
            )
        found += 1

    def single(node: NodeId, depth: int, k: int, leaf: bytes, old: bytes) -> bytes:
        """Write one key's leaf in the subtree at ``node``, iteratively: below the levels the
        batch's keys share, most of the nodes written are on one key's path."""
        nonlocal deepest
        path: list[bytes] = []
        current = get(node)
        if current is not None:
            # The key's path, as heap numbers: the node at depth d is ``marked >> (256 - d)``.
            marked = k | _TOP_BIT
            append = path.append
            while True:
                if len(current) != KEY_SIZE:  # a leaf
                    current = _check_node(current, node)
                    other = from_bytes(current[32:64], "big")
                    if other == k:
                        resume(current, old)
                        break
                    # another key's leaf: push both down (its own position below is empty)
                    if k < other:
                        pair = [k, other], [leaf, current], [old, _NO_COUNT]
                    else:
                        pair = [other, k], [current, leaf], [_NO_COUNT, old]
                    value = split(node, depth, *pair, 0, 2)
                    for sibling in reversed(path):
                        if node & 1:
                            value = sha256(node_tag + sibling + value).digest()
                        else:
                            value = sha256(node_tag + value + sibling).digest()
                        node >>= 1
                        written[node] = value
                    return value
                depth += 1
                node = marked >> (256 - depth)
                beside = get(node ^ 1)
                append(empty_hash if beside is None else beside[:KEY_SIZE])
                current = get(node)
                if current is None:
                    break
        written[node] = leaf
        if depth > deepest:
            deepest = depth
        value = leaf[:KEY_SIZE]
        for sibling in reversed(path):
            if node & 1:
                value = sha256(node_tag + sibling + value).digest()
            else:
                value = sha256(node_tag + value + sibling).digest()
            node >>= 1
            written[node] = value
        return value

    def split(
        node: NodeId,
        depth: int,
        keys: list[int],
        leaves: list[bytes],
        olds: list[bytes],
        lo: int,
        hi: int,
    ) -> bytes:
        """Write the internal node ``node`` over ``keys[lo:hi]`` (at least two keys, sorted,
        all under ``node``; ``node`` is not a leaf)."""
        if depth == MAX_DEPTH:  # pragma: no cover - two keys equal on 256 bits are equal
            raise LedgerError("two keys share all 256 bits")
        mid = bisect_left(keys, ((node << 1 | 1) - (2 << depth)) << (255 - depth), lo, hi)
        depth += 1
        child = node << 1
        if lo == mid:
            current = get(child)
            left = empty_hash if current is None else current[:KEY_SIZE]
        elif mid - lo == 1:
            left = single(child, depth, keys[lo], leaves[lo], olds[lo])
        else:
            current = get(child)
            if current is not None and len(current) != KEY_SIZE:
                left = pushed(child, depth, current, keys, leaves, olds, lo, mid)
            else:
                left = split(child, depth, keys, leaves, olds, lo, mid)
        child |= 1
        if mid == hi:
            current = get(child)
            right = empty_hash if current is None else current[:KEY_SIZE]
        elif hi - mid == 1:
            right = single(child, depth, keys[mid], leaves[mid], olds[mid])
        else:
            current = get(child)
            if current is not None and len(current) != KEY_SIZE:
                right = pushed(child, depth, current, keys, leaves, olds, mid, hi)
            else:
                right = split(child, depth, keys, leaves, olds, mid, hi)
        written[node] = value = sha256(node_tag + left + right).digest()
        return value

    def pushed(
        node: NodeId,
        depth: int,
        current: bytes,
        keys: list[int],
        leaves: list[bytes],
        olds: list[bytes],
        lo: int,
        hi: int,
    ) -> bytes:
        """Write ``keys[lo:hi]`` (at least two) in the subtree at ``node``, which holds the leaf
        ``current``: it becomes internal."""
        current = _check_node(current, node)
        other = from_bytes(current[32:64], "big")
        at = bisect_left(keys, other, lo, hi)
        if at < hi and keys[at] == other:
            resume(current, olds[at])
        else:  # another key's leaf: push it down with the batch's keys
            keys = [*keys[lo:at], other, *keys[at:hi]]
            leaves = [*leaves[lo:at], current, *leaves[at:hi]]
            olds = [*olds[lo:at], _NO_COUNT, *olds[at:hi]]
            lo, hi = 0, len(keys)
        return split(node, depth, keys, leaves, olds, lo, hi)

    if leaf_of:
        ordered = sorted(leaf_of)
        leaves = list(map(leaf_of.__getitem__, ordered))
        olds = list(map(old_of.__getitem__, ordered))
        if len(ordered) == 1:
            root = single(1, 0, ordered[0], leaves[0], olds[0])
        else:
            current = get(1)
            if current is not None and len(current) != KEY_SIZE:
                root = pushed(1, 0, current, ordered, leaves, olds, 0, len(ordered))
            else:
                root = split(1, 0, ordered, leaves, olds, 0, len(ordered))
    else:
        current = get(1)
        root = EMPTY_HASH if current is None else current[:KEY_SIZE]
    if found != resumed:
        raise LedgerError(
            f"{resumed - found} key(s) of the batch come with a frontier but are not in "
            "the index: frontiers and trie disagree"
        )
    return IndexUpdate(old_size, size, root, deepest, written, new_frontiers)


#: What a key new to the index had before a batch: no entries.
_NO_COUNT = bytes(8)
#: The bit above a key's 256: ``(key | _TOP_BIT) >> (256 - d)`` is the node at depth d on its
#: path.
_TOP_BIT = 1 << 256


def _check_size(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INDEX:
        raise ProofError(f"{what} must be an integer in [0, 2**64), got {value!r}")


# ---------------------------------------------------------------------------------------
# The in-memory index
# ---------------------------------------------------------------------------------------


class _VersionView(Mapping[NodeId, Node]):
    """The trie at one version: each position's latest node at or below it."""

    __slots__ = ("_history", "_version")

    def __init__(self, history: dict[NodeId, tuple[list[int], list[Node]]], version: int) -> None:
        self._history = history
        self._version = version

    def __getitem__(self, node: NodeId) -> Node:
        found = self._history.get(node)
        if found is not None:
            versions, values = found
            at = bisect_right(versions, self._version)
            if at:
                return values[at - 1]
        raise KeyError(node)

    def __iter__(self) -> Iterator[NodeId]:
        for node, (versions, _) in self._history.items():
            if versions[0] <= self._version:
                yield node

    def __len__(self) -> int:
        return sum(1 for _ in self)


class MemoryIndex:
    """The whole index in memory: every key's list and frontier, the latest trie, and
    optionally (``history=True``) every version of every node, so that it answers lookups
    at any size it was updated to, as a store keeping every version does.

    The regulator's audit rebuilds the index from its mirror with it, one :meth:`extend` per
    on-chain checkpoint, and compares each :attr:`IndexUpdate.root` with the committed one.
    """

    __slots__ = ("_depths", "_frontiers", "_history", "_latest", "_lists", "_roots", "_versions")

    def __init__(self, *, history: bool = False) -> None:
        self._latest: dict[NodeId, Node] = {}
        self._history: dict[NodeId, tuple[list[int], list[Node]]] | None = {} if history else None
        self._lists: dict[bytes, array[int]] = {}
        self._frontiers: dict[bytes, bytes] = {}
        self._versions: list[int] = [0]
        self._roots: list[bytes] = [EMPTY_HASH]
        self._depths: list[int] = [0]

    @classmethod
    def build(cls, events: Iterable[Sequence[bytes]], *, history: bool = False) -> MemoryIndex:
        """The index over events whose keys are ``events``, in log order, as one batch."""
        index = cls(history=history)
        index.extend(events)
        return index

    @property
    def size(self) -> int:
        """The log size the index covers."""
        return self._versions[-1]

    @property
    def versions(self) -> tuple[int, ...]:
        """The log sizes the index was updated to (0 first)."""
        return tuple(self._versions)

    def __len__(self) -> int:
        """The number of keys."""
        return len(self._lists)

    def __contains__(self, key: object) -> bool:
        return key in self._lists

    def __iter__(self) -> Iterator[bytes]:
        """Every key, in no particular order."""
        return iter(self._lists)

    def keys(self) -> Iterator[bytes]:
        """Every key, in no particular order."""
        return iter(self._lists)

    @property
    def frontiers(self) -> Mapping[bytes, bytes]:
        """Every key's list frontier, stored form (:func:`decode_frontier`)."""
        return self._frontiers

    def _version(self, size: int | None) -> int:
        """The position of ``size`` among the versions (None: the latest)."""
        if size is None:
            return len(self._versions) - 1
        at = bisect_left(self._versions, size)
        if at == len(self._versions) or self._versions[at] != size:
            raise ProofError(
                f"the index has no version at log size {size}: it was updated to the sizes "
                f"{self._versions[0]}..{self._versions[-1]} of its checkpoints only",
                size=size,
            )
        return at

    def root(self, size: int | None = None) -> bytes:
        """The root at log size ``size`` (one of :attr:`versions`; default: the latest)."""
        return self._roots[self._version(size)]

    def depth(self, size: int | None = None) -> int:
        """The deepest leaf at log size ``size`` (what :func:`lookup_plan` needs)."""
        return self._depths[self._version(size)]

    def nodes(self, size: int | None = None) -> Mapping[NodeId, Node]:
        """The trie at log size ``size`` (default: the latest; older sizes need history)."""
        at = self._version(size)
        if at == len(self._versions) - 1:
            return self._latest
        if self._history is None:
            raise ProofError(
                f"the index keeps no history: it has the trie at size {self.size} only",
                size=size,
            )
        return _VersionView(self._history, self._versions[at])

    def indexes(self, key: bytes, size: int | None = None) -> list[int]:
        """The list of ``key`` at log size ``size`` (empty: absent)."""
        found = self._lists.get(key)
        if found is None:
            return []
        if size is None:
            return list(found)
        return list(found[: bisect_left(found, self._versions[self._version(size)])])

    def head(self, key: bytes, size: int | None = None) -> ListHead | None:
        """The head of ``key``'s list at log size ``size`` (None: absent)."""
        if size is None or self._version(size) == len(self._versions) - 1:
            frontier = self._frontiers.get(key)
            if frontier is None:
                return None
            compact = decode_frontier(frontier)
            return ListHead(compact.size, compact.root())
        values = self.indexes(key, size)
        return ListHead(len(values), _list_root(values)) if values else None

    def lookup(self, key: bytes, size: int | None = None) -> tuple[list[int], LookupProof]:
        """``key``'s list at log size ``size`` and its proof, through the plan a store follows
        (:func:`lookup_plan`, one fetch, :func:`assemble_lookup`)."""
        nodes = self.nodes(size)
        plan = lookup_plan(key, self.depth(size))
        fetched = {node: nodes[node] for node in plan if node in nodes}
        return self.indexes(key, size), assemble_lookup(key, fetched)

    def extend(self, events: Iterable[Sequence[bytes]]) -> IndexUpdate:
        """Append events (the keys of each, in log order, the first at leaf :attr:`size`) as
        one batch: one new version."""
        batch, count = batch_of(self.size, events)
        return self.apply(batch, self.size + count)

    def apply(self, batch: Mapping[bytes, Sequence[int]], size: int) -> IndexUpdate:
        """Apply a batch ``key -> new leaf indexes`` of the events ``[self.size, size)`` (what the
        sequencer does at each checkpoint); the index is then at ``size``."""
        result = update(self._latest, self._frontiers, batch, self.size, size)
        if size == self.size:
            return result
        self._latest.update(result.nodes)
        if self._history is not None:
            for node, value in result.nodes.items():
                found = self._history.get(node)
                if found is None:
                    self._history[node] = ([size], [value])
                else:
                    found[0].append(size)
                    found[1].append(value)
        self._frontiers.update(result.frontiers)
        lists = self._lists
        for key, indexes in batch.items():
            found_list = lists.get(key)
            if found_list is None:
                lists[key] = array("Q", indexes)
            else:
                found_list.extend(indexes)
        self._versions.append(size)
        self._roots.append(result.root)
        self._depths.append(max(self._depths[-1], result.depth))
        return result
