"""Tests of ledger.index against a deliberately naive, independent implementation.

``Naive`` below recomputes everything from scratch from the sorted ``key -> list`` map: the
RFC 9162 list roots by the RFC's recursive definition, the trie by splitting the key set on
each bit in turn, and the lookup proofs by walking that recursion. It shares no code with
ledger.index (its hash tags are spelled out again here, from docs/index.md), so that a
mistake in one is not repeated in the other. Known-answer vectors pin the hashing; docs/index.md
carries the same vectors for anyone reimplementing it.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import index, merkle
from ledger.eip712 import to_checksum_address
from ledger.errors import LedgerError, MalformedEventError, ProofError
from ledger.events import (
    Action,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    Purpose,
    RecordAccess,
)
from ledger.index import (
    EMPTY_HASH,
    EMPTY_LIST,
    KEY_SIZE,
    LEAF_NODE_SIZE,
    Leaf,
    ListHead,
    LookupProof,
    MemoryIndex,
    Terminal,
    assemble_lookup,
    batch_of,
    check_list,
    decode_frontier,
    encode_frontier,
    event_keys,
    keys_of,
    list_consistency_proof,
    list_head,
    lookup_plan,
    node_depth,
    node_id,
    patient_key,
    record_key,
    root_from_lookup_proof,
    update,
    update_plan,
    verify_list_consistency,
    verify_list_extends,
    verify_list_lookup,
    verify_lookup,
)
from ledger.logstate import LogState, apply
from ledger.merkle import CompactRange, MissingNodeError

# ---------------------------------------------------------------------------------------
# The naive reference
# ---------------------------------------------------------------------------------------


def sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


NAIVE_EMPTY = sha(b"medtrail/index/empty/v1")


def bit(key: bytes, i: int) -> int:
    """Bit ``i`` of ``key``, the most significant bit of its first byte being bit 0."""
    return key[i // 8] >> (7 - i % 8) & 1


class Naive:
    """The index recomputed from scratch from ``mapping`` (key -> its list of leaf indexes)."""

    def __init__(self, mapping: Mapping[bytes, Sequence[int]]) -> None:
        self.items = sorted((k, list(v)) for k, v in mapping.items() if v)

    @staticmethod
    def mth(entries: Sequence[int]) -> bytes:
        """RFC 9162 §2.1.1 MTH over the 8-byte big-endian entries, literally."""
        n = len(entries)
        if n == 0:
            return sha()
        if n == 1:
            return sha(b"\x00", entries[0].to_bytes(8, "big"))
        k = 1
        while k * 2 < n:
            k *= 2
        return sha(b"\x01", Naive.mth(entries[:k]), Naive.mth(entries[k:]))

    @staticmethod
    def value(entries: Sequence[int]) -> bytes:
        return sha(b"medtrail/index/value/v1", len(entries).to_bytes(8, "big"), Naive.mth(entries))

    @staticmethod
    def leaf(key: bytes, entries: Sequence[int]) -> bytes:
        return sha(b"medtrail/index/leaf/v1", key, Naive.value(entries))

    def subtree(self, items: list[tuple[bytes, list[int]]], depth: int) -> bytes:
        if not items:
            return NAIVE_EMPTY
        if len(items) == 1:
            return self.leaf(*items[0])
        left = [item for item in items if bit(item[0], depth) == 0]
        right = [item for item in items if bit(item[0], depth) == 1]
        return sha(
            b"medtrail/index/node/v1", self.subtree(left, depth + 1), self.subtree(right, depth + 1)
        )

    def root(self) -> bytes:
        return self.subtree(self.items, 0)

    def proof(self, key: bytes) -> LookupProof:
        """Walk the recursion towards ``key``, keeping the other side's hash at each split."""
        items = self.items
        depth = 0
        siblings: list[bytes] = []
        while True:
            if not items:
                return LookupProof(tuple(reversed(siblings)), Terminal.EMPTY)
            if len(items) == 1:
                other, entries = items[0]
                if other == key:
                    return LookupProof(tuple(reversed(siblings)), Terminal.LEAF)
                return LookupProof(
                    tuple(reversed(siblings)), Terminal.OTHER_LEAF, other, self.value(entries)
                )
            side = bit(key, depth)
            siblings.append(self.subtree([i for i in items if bit(i[0], depth) != side], depth + 1))
            items = [i for i in items if bit(i[0], depth) == side]
            depth += 1


def events_mapping(
    events: Sequence[Sequence[bytes]], size: int | None = None
) -> dict[bytes, list[int]]:
    """key -> leaf indexes of the first ``size`` events (each event: its keys)."""
    mapping: dict[bytes, list[int]] = {}
    for leaf, keys in enumerate(events[:size]):
        for key in keys:
            mapping.setdefault(key, []).append(leaf)
    return mapping


# ---------------------------------------------------------------------------------------
# Keys that exercise the trie's corners
# ---------------------------------------------------------------------------------------


def key_of(value: int) -> bytes:
    return value.to_bytes(32, "big")


#: Keys sharing long prefixes: 0 and 1 share 255 bits (leaves at depth 256), 0 and 2**128
#: share 127, the rest spread over the top bits.
CORNER_KEYS = [
    key_of(0),
    key_of(1),
    key_of(2**128),
    key_of(2**255),
    key_of(2**254),
    key_of(3 * 2**254),
    key_of(2**256 - 1),
    key_of(2**255 - 1),
]
ABSENT_KEYS = [key_of(2), key_of(2**253), key_of(2**256 - 2), sha(b"absent")]


def lists_for(keys: Sequence[bytes], rng: random.Random) -> dict[bytes, list[int]]:
    """A list of 1..5 increasing leaf indexes for each key."""
    return {k: sorted(rng.sample(range(40), rng.randrange(1, 6))) for k in keys}


def index_of(mapping: Mapping[bytes, Sequence[int]], history: bool = False) -> MemoryIndex:
    """A MemoryIndex holding ``mapping``, through one batch."""
    size = max((max(v) for v in mapping.values() if v), default=-1) + 1
    built = MemoryIndex(history=history)
    built.apply({k: list(v) for k, v in mapping.items() if v}, size)
    return built


# ---------------------------------------------------------------------------------------
# Known answers
# ---------------------------------------------------------------------------------------

VECTOR_MAP = {record_key(bytes(32)): [0, 2, 5], patient_key(b"\x11" * 20): [0, 1, 2, 5]}
#: The vectors docs/index.md gives (computed once, checked against the naive reference).
VECTORS = {
    "EMPTY_HASH": "d95560da71d99db6a128eab68424cb4d48041422aec4ea2d6ed75763b787592c",
    "record_key": "5cf42c92a8ec3830263d23bb21bf093e222eba6db7e09f18bfd847fbca2e7a67",
    "patient_key": "95f8e1943d82927520d25e01104866e39fdebd19aa8ed667f3c0d4230596ec43",
    "list_root_025": "5cc378fc576efc8d7971a9f038e9bab5f4d613f53c267893539f89010dc5f69b",
    "list_root_0125": "64760ce352b12dcdffe2b90ecc344178479d259bb940a5507d30ffb81b5d26b6",
    "root": "1232ac0f4e3eb3ee774804d96d283b39ed4c7a36f85371f515b9112306ff961e",
    "proof_record": "00018077af2ddfcd7697f87db3d9300d3f59e1388d10bb3aea58fd3c9bf07ac109951001",
    "proof_patient": "0001806ee9638408a7049b471cc8f5371260e41bdee43e35e459b1dc73c2b6be91de3501",
    "proof_absent": "00018077af2ddfcd7697f87db3d9300d3f59e1388d10bb3aea58fd3c9bf07ac109951002"
    "5cf42c92a8ec3830263d23bb21bf093e222eba6db7e09f18bfd847fbca2e7a67"
    "418413220c5b7fd9314f83b34291a3f26085b3c12198c567ab8adbf0803388ec",
}


def test_constants_and_known_answers() -> None:
    record, patient = record_key(bytes(32)), patient_key(b"\x11" * 20)
    assert record == sha(b"medtrail/index/record/v1", bytes(32))
    assert patient == sha(b"medtrail/index/patient/v1", b"\x11" * 20)
    naive = Naive(VECTOR_MAP)
    built = index_of(VECTOR_MAP)
    absent = sha(b"absent")
    assert built.root() == naive.root()
    assert built.lookup(absent)[1] == naive.proof(absent)
    computed = {
        "EMPTY_HASH": NAIVE_EMPTY,
        "record_key": record,
        "patient_key": patient,
        "list_root_025": list_head([0, 2, 5]).root,
        "list_root_0125": list_head([0, 1, 2, 5]).root,
        "root": built.root(),
        "proof_record": built.lookup(record)[1].to_bytes(),
        "proof_patient": built.lookup(patient)[1].to_bytes(),
        "proof_absent": built.lookup(absent)[1].to_bytes(),
    }
    assert {name: value.hex() for name, value in computed.items()} == VECTORS
    assert EMPTY_HASH == NAIVE_EMPTY


def test_empty_index() -> None:
    empty = MemoryIndex()
    assert empty.root() == EMPTY_HASH == Naive({}).root()
    assert empty.size == 0
    assert len(empty) == 0
    assert empty.depth() == 0
    indexes, proof = empty.lookup(sha(b"anything"))
    assert indexes == []
    assert proof == LookupProof((), Terminal.EMPTY)
    assert verify_list_lookup(sha(b"anything"), [], 0, proof, EMPTY_HASH) == EMPTY_LIST


# ---------------------------------------------------------------------------------------
# Keys of events
# ---------------------------------------------------------------------------------------

NOW = 1_750_000_000


def address(n: int) -> str:
    return to_checksum_address(bytes([n]) * 20)


HOSPITAL, PHARMACY, INSURER, PATIENT = address(1), address(3), address(4), address(6)


def h(label: str) -> bytes:
    return sha(label.encode())


def access(**changes: Any) -> RecordAccess:
    fields: dict[str, Any] = {
        "eventId": h("access"),
        "recordRef": h("record"),
        "custodian": HOSPITAL,
        "patient": PATIENT,
        "institution": HOSPITAL,
        "actor": h("dr who"),
        "action": Action.READ,
        "purpose": Purpose.TREATMENT,
        "grantId": 0,
        "reasonHash": bytes(32),
        "occurredAt": NOW,
    }
    return RecordAccess(**{**fields, **changes})


def prescription() -> PrescriptionIssued:
    return PrescriptionIssued(
        eventId=h("prescription"),
        recordRef=h("other record"),
        patient=PATIENT,
        institution=HOSPITAL,
        prescriber=h("dr who"),
        contentHash=h("amoxicillin"),
        fills=2,
        validUntil=NOW + 30 * 86400,
        occurredAt=NOW,
    )


def dispense(prescription_id: bytes) -> PrescriptionDispensed:
    return PrescriptionDispensed(
        eventId=h("dispense"),
        prescriptionId=prescription_id,
        patient=PATIENT,
        institution=PHARMACY,
        pharmacist=h("pharmacist"),
        fillNumber=1,
        contentHash=h("box"),
        occurredAt=NOW + 86400,
    )


def claim(service: bytes) -> InsuranceClaim:
    return InsuranceClaim(
        eventId=h("claim"),
        serviceRef=service,
        patient=PATIENT,
        institution=PHARMACY,
        insurer=INSURER,
        amount=1250,
        contentHash=h("invoice"),
        occurredAt=NOW + 86400,
    )


def payment() -> InsurancePayment:
    return InsurancePayment(
        eventId=h("payment"),
        claimId=h("claim"),
        patient=PATIENT,
        institution=INSURER,
        payee=PHARMACY,
        amount=1250,
        contentHash=h("remittance"),
        occurredAt=NOW + 2 * 86400,
    )


def test_event_keys_follow_the_record_an_event_belongs_to() -> None:
    """Each event's keys are its record's (own or inherited, as logstate.apply links it) and
    its patient's; the record's key is first."""
    state = LogState()
    the_patient = patient_key(PATIENT)
    chain = [access(), prescription(), dispense(h("prescription")), claim(h("dispense")), payment()]
    records = [h("record"), h("other record"), h("other record"), h("other record")]
    records.append(h("other record"))
    for event, record in zip(chain, records, strict=True):
        _, links = apply(state, event)
        assert links.record_ref == record
        assert event_keys(event, links.record_ref) == (record_key(record), the_patient)
    # A dispense of a prescription the log does not hold belongs to no record: one key.
    _, links = apply(state, dispense(h("no such prescription")))
    assert links.record_ref is None
    assert event_keys(dispense(h("no such prescription")), None) == (the_patient,)


def test_patient_key_takes_an_address_in_any_accepted_form() -> None:
    raw = bytes.fromhex(PATIENT[2:])
    assert patient_key(PATIENT) == patient_key(PATIENT.lower()) == patient_key(raw)
    assert patient_key(raw) == sha(b"medtrail/index/patient/v1", raw)
    assert keys_of(raw, None) == (patient_key(raw),)


@pytest.mark.parametrize("bad", [b"\x00" * 19, "0x1234", 5])
def test_patient_key_refuses_what_is_not_an_address(bad: Any) -> None:
    with pytest.raises(MalformedEventError, match=r"^patient: "):
        patient_key(bad)


@pytest.mark.parametrize("bad", [b"\x00" * 31, b"\x00" * 33, "00" * 32])
def test_record_key_refuses_what_is_not_a_record_ref(bad: Any) -> None:
    with pytest.raises(LedgerError, match="a recordRef is 32 bytes"):
        record_key(bad)


def test_keys_are_domain_separated() -> None:
    """A 20-byte patient and a 32-byte record never give the same key, nor equal an RFC 9162
    hash of the same bytes."""
    ref = b"\x11" * 20 + bytes(12)
    assert record_key(ref) != patient_key(ref[:20])
    assert record_key(ref) not in (merkle.leaf_hash(ref), sha(ref))


# ---------------------------------------------------------------------------------------
# Lists
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", range(0, 70))
def test_list_head_is_the_rfc9162_root_of_the_8_byte_indexes(count: int) -> None:
    entries = [3 * i + 1 for i in range(count)]
    head = list_head(entries)
    tree = merkle.MemoryTree(merkle.leaf_hash(i.to_bytes(8, "big")) for i in entries)
    assert head == ListHead(count, tree.root()) == ListHead(count, Naive.mth(entries))


@pytest.mark.parametrize(
    ("entries", "size", "message"),
    [
        ([1, 1], 5, r"entry 1 of the list \(1\) does not come after entry 0 \(1\)"),
        ([2, 1], 5, r"entry 1 of the list \(1\) does not come after entry 0 \(2\)"),
        ([0, 5], 5, r"entry 1 of the list \(5\) is not a leaf of a log of size 5"),
        ([-1], 5, "entry 0 of the list is negative"),
        ([True], 5, "entry 0 of the list is not an integer"),
        ([1.0], 5, "entry 0 of the list is not an integer"),
        (b"\x01", 5, "a list of leaf indexes must be a sequence of integers"),
    ],
)
def test_check_list_refuses_each_malformed_list(entries: Any, size: int, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        check_list(entries, size)


def test_frontiers_round_trip_through_their_stored_form() -> None:
    for size in range(40):
        compact = CompactRange()
        for i in range(size):
            compact.append(merkle.leaf_hash(i.to_bytes(8, "big")))
        assert decode_frontier(encode_frontier(compact)) == compact
    with pytest.raises(LedgerError, match="a compact range of size 3 has 2 hashes, got 1"):
        decode_frontier((3).to_bytes(8, "big") + bytes(32))
    with pytest.raises(LedgerError, match="8 bytes and whole hashes"):
        decode_frontier(bytes(9))


# ---------------------------------------------------------------------------------------
# Roots and proofs against the naive reference, exhaustively at small sizes
# ---------------------------------------------------------------------------------------


def check_everything(built: MemoryIndex, mapping: Mapping[bytes, Sequence[int]]) -> None:
    """Root equal to the naive one; every key's proof (present or absent) equal to the naive
    proof, through its byte encoding, and verifying with the key's list."""
    naive = Naive(mapping)
    root = built.root()
    assert root == naive.root()
    for key in [*mapping, *CORNER_KEYS, *ABSENT_KEYS]:
        entries, proof = built.lookup(key)
        assert entries == list(mapping.get(key, []))
        assert proof == naive.proof(key)
        assert LookupProof.from_bytes(proof.to_bytes()) == proof
        head = verify_list_lookup(key, entries, built.size, proof, root)
        assert head == (list_head(entries) if entries else EMPTY_LIST)


@pytest.mark.parametrize("count", range(len(CORNER_KEYS) + 1))
def test_every_subset_of_corner_keys(count: int) -> None:
    rng = random.Random(count)
    for subset in itertools.combinations(CORNER_KEYS, count):
        mapping = lists_for(subset, rng)
        check_everything(index_of(mapping), mapping)


def test_random_keys_up_to_64() -> None:
    rng = random.Random(16)
    for count in range(65):
        keys = [rng.randbytes(32) for _ in range(count)]
        mapping = lists_for(keys, rng)
        check_everything(index_of(mapping), mapping)


def test_leaves_at_depth_256_and_the_plan_covers_them() -> None:
    mapping = {key_of(0): [0], key_of(1): [1]}
    built = index_of(mapping)
    assert built.depth() == index.MAX_DEPTH
    _, proof = built.lookup(key_of(1))
    assert proof.depth == 256
    assert proof.terminal is Terminal.LEAF
    assert sum(s != EMPTY_HASH for s in proof.siblings) == 1  # only the last split has two sides
    assert len(proof.to_bytes()) == 2 + 32 + 32 + 1
    check_everything(built, mapping)


def test_plans_name_the_path_and_its_siblings() -> None:
    key = key_of(2**255 + 2**253)
    plan = lookup_plan(key, 3)
    assert plan == [1, 3, 2, 6, 7, 13, 12]
    assert [node_depth(n) for n in plan] == [0, 1, 1, 2, 2, 3, 3]
    assert node_id(key, 3) == 0b1101
    assert node_id(key, 0) == 1
    assert update_plan([key, key], 3) == plan
    with pytest.raises(LedgerError, match=r"a depth is an integer in \[0, 256\]"):
        node_id(key, 257)


# ---------------------------------------------------------------------------------------
# Incremental updates equal a rebuild; every version answers proofs
# ---------------------------------------------------------------------------------------

key_pool = st.lists(
    st.one_of(
        st.sampled_from(CORNER_KEYS),
        st.binary(min_size=32, max_size=32),
        st.integers(0, 255).map(lambda b: bytes([b]) + bytes(31)),
    ),
    min_size=1,
    max_size=12,
    unique=True,
)


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[tuple[bytes, ...]], list[int]]:
    """Events (each with one or two keys from a pool) and the checkpoint sizes."""
    pool = draw(key_pool)
    events = draw(
        st.lists(
            st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True).map(tuple),
            max_size=40,
        )
    )
    cuts = sorted(set(draw(st.lists(st.integers(0, len(events)), max_size=6))) | {len(events)})
    return events, cuts


@settings(max_examples=150, deadline=None)
@given(logs())
def test_incremental_updates_equal_a_rebuild(
    log: tuple[list[tuple[bytes, ...]], list[int]],
) -> None:
    events, cuts = log
    built = MemoryIndex(history=True)
    for cut in cuts:
        update_result = built.extend(events[built.size : cut])
        assert update_result.size == cut
        assert built.root() == Naive(events_mapping(events, cut)).root()
    rebuilt = MemoryIndex.build(events)
    assert rebuilt.root() == built.root()
    assert dict(rebuilt.nodes()) == dict(built.nodes())
    assert dict(rebuilt.frontiers) == dict(built.frontiers)
    # Every version answers, from its own nodes, the proofs of that version.
    pool = {k for keys in events for k in keys} | set(ABSENT_KEYS)
    for size in built.versions:
        mapping = events_mapping(events, size)
        naive = Naive(mapping)
        root = built.root(size)
        assert root == naive.root()
        for key in pool:
            entries, proof = built.lookup(key, size)
            assert entries == mapping.get(key, [])
            assert proof == naive.proof(key)
            verify_list_lookup(key, entries, size, proof, root)


def test_frontiers_and_heads_of_an_update_are_the_lists() -> None:
    rng = random.Random(3)
    keys = [rng.randbytes(32) for _ in range(20)]
    events = [tuple(rng.sample(keys, 2)) for _ in range(300)]
    built = MemoryIndex()
    for start in range(0, 300, 37):
        result = built.extend(events[start : start + 37])
        mapping = events_mapping(events, result.size)
        for key, stored in result.frontiers.items():
            compact = CompactRange()
            for i in mapping[key]:
                compact.append(merkle.leaf_hash(i.to_bytes(8, "big")))
            assert decode_frontier(stored) == compact
        assert result.heads() == {k: list_head(mapping[k]) for k in result.frontiers}
        assert result.depth <= built.depth()
    for key in keys:
        assert built.head(key) == list_head(events_mapping(events)[key])


def test_update_reads_only_what_its_plan_names() -> None:
    """A store fetching update_plan(keys, depth) gives update() all it reads."""
    rng = random.Random(5)
    keys = [rng.randbytes(32) for _ in range(300)] + CORNER_KEYS
    events = [(rng.choice(keys),) for _ in range(2000)]
    built = MemoryIndex.build(events)
    nodes = built.nodes()
    new_events = [(rng.choice(keys),) for _ in range(50)] + [(sha(b"new"),), (key_of(3),)]
    batch, count = batch_of(built.size, new_events)
    plan = update_plan(batch, built.depth())
    fetched = {n: nodes[n] for n in plan if n in nodes}
    frontiers = {k: built.frontiers[k] for k in batch if k in built.frontiers}
    partial = update(fetched, frontiers, batch, built.size, built.size + count)
    full = update(nodes, built.frontiers, batch, built.size, built.size + count)
    assert partial == full
    built.apply(batch, built.size + count)
    assert built.root() == partial.root == Naive(events_mapping(events + new_events)).root()


def test_update_modifies_nothing_it_is_given() -> None:
    built = MemoryIndex.build([(key_of(0),), (key_of(2**255),)])
    nodes, frontiers = dict(built.nodes()), dict(built.frontiers)
    batch = {key_of(0): [2], key_of(1): [2]}
    update(nodes, frontiers, batch, 2, 3)
    assert nodes == dict(built.nodes())
    assert frontiers == dict(built.frontiers)
    assert batch == {key_of(0): [2], key_of(1): [2]}


def test_an_empty_batch_is_the_same_version() -> None:
    built = MemoryIndex.build([(key_of(0),)])
    result = built.extend([])
    assert result.root == built.root()
    assert result.nodes == {}
    assert built.versions == (0, 1)


# ---------------------------------------------------------------------------------------
# What a lookup proves: every lie fails, with its own message
# ---------------------------------------------------------------------------------------

RNG = random.Random(9162)
BIG_KEYS = [RNG.randbytes(32) for _ in range(400)]
BIG_EVENTS = [tuple(RNG.sample(BIG_KEYS, 2)) for _ in range(3000)]
BIG = MemoryIndex.build(BIG_EVENTS)
PRESENT = BIG_KEYS[7]
ENTRIES, PROOF = BIG.lookup(PRESENT)
ROOT, SIZE = BIG.root(), BIG.size


def absent_keys() -> tuple[bytes, bytes]:
    """An absent key whose path ends at an empty subtree, and one ending at another leaf."""
    found: dict[Terminal, bytes] = {}
    for i in itertools.count():
        key = sha(b"absent", i.to_bytes(4, "big"))
        found.setdefault(BIG.lookup(key)[1].terminal, key)
        if Terminal.EMPTY in found and Terminal.OTHER_LEAF in found:
            return found[Terminal.EMPTY], found[Terminal.OTHER_LEAF]
    raise AssertionError  # pragma: no cover


ABSENT_EMPTY, ABSENT_OTHER = absent_keys()


def test_the_big_index_proofs_verify() -> None:
    assert len(ENTRIES) > 5
    assert PROOF.terminal is Terminal.LEAF
    assert verify_list_lookup(PRESENT, ENTRIES, SIZE, PROOF, ROOT) == list_head(ENTRIES)
    for key in (ABSENT_EMPTY, ABSENT_OTHER):
        entries, proof = BIG.lookup(key)
        assert entries == []
        assert verify_list_lookup(key, [], SIZE, proof, ROOT) == EMPTY_LIST
    assert Naive(events_mapping(BIG_EVENTS)).root() == ROOT


@pytest.mark.parametrize(
    "key", [PRESENT, ABSENT_EMPTY, ABSENT_OTHER], ids=["present", "absent-empty", "absent-other"]
)
def test_every_single_byte_corruption_of_a_proof_fails(key: bytes) -> None:
    """Each byte of the encoded proof, set to each of its 255 other values."""
    entries, proof = BIG.lookup(key)
    head = list_head(entries) if entries else None  # the list's own checks are tested apart
    encoded = proof.to_bytes()
    verify_lookup(key, head, LookupProof.from_bytes(encoded), ROOT)
    for at in range(len(encoded)):
        for value in range(256):
            if value == encoded[at]:
                continue
            corrupt = encoded[:at] + bytes([value]) + encoded[at + 1 :]
            try:
                verify_lookup(key, head, LookupProof.from_bytes(corrupt), ROOT)
            except ProofError:
                continue
            raise AssertionError(f"byte {at} set to {value:#04x} still verifies")


ROOT_MISMATCH = "does not lead to the index root"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (ENTRIES[:-1], f"of a list of {len(ENTRIES) - 1} entries {ROOT_MISMATCH}"),
        (ENTRIES[1:], ROOT_MISMATCH),
        ([*ENTRIES, SIZE - 1], ROOT_MISMATCH),
        (ENTRIES[:3] + ENTRIES[4:], ROOT_MISMATCH),
        (
            [ENTRIES[0] + 1 if ENTRIES[0] + 1 < ENTRIES[1] else ENTRIES[0] - 1, *ENTRIES[1:]],
            ROOT_MISMATCH,
        ),
        ([ENTRIES[1], ENTRIES[0], *ENTRIES[2:]], "does not come after entry 0"),
        ([*ENTRIES[:-1], SIZE], f"is not a leaf of a log of size {SIZE}"),
        ([], "shows the key in the index, but it was claimed absent"),
    ],
    ids=[
        "shortened",
        "first-dropped",
        "extended",
        "one-removed",
        "one-changed",
        "reordered",
        "beyond-the-log",
        "claimed-absent",
    ],
)
def test_a_list_that_is_not_the_whole_list_fails(entries: list[int], message: str) -> None:
    with pytest.raises(ProofError, match=message):
        verify_list_lookup(PRESENT, entries, SIZE, PROOF, ROOT)


@pytest.mark.parametrize("key", ["empty", "other"])
def test_an_absent_key_claimed_present_fails(key: str) -> None:
    absent = ABSENT_EMPTY if key == "empty" else ABSENT_OTHER
    _, proof = BIG.lookup(absent)
    with pytest.raises(ProofError, match="shows the key absent from the index, but a list of 2"):
        verify_list_lookup(absent, [0, 1], SIZE, proof, ROOT)


def test_a_proof_for_another_key_fails() -> None:
    other = BIG_KEYS[8]
    with pytest.raises(ProofError, match=ROOT_MISMATCH):
        verify_list_lookup(other, ENTRIES, SIZE, PROOF, ROOT)
    with pytest.raises(ProofError, match=ROOT_MISMATCH):
        verify_list_lookup(other, BIG.indexes(other), SIZE, PROOF, ROOT)


def test_an_absence_proof_ending_at_the_key_itself_fails() -> None:
    _, proof = BIG.lookup(ABSENT_OTHER)
    assert proof.other_key is not None
    with pytest.raises(ProofError, match="other leaf is the key itself"):
        verify_list_lookup(proof.other_key, [], SIZE, proof, ROOT)


def test_an_absence_proof_ending_off_the_path_fails() -> None:
    _, proof = BIG.lookup(ABSENT_OTHER)
    far = bytes([ABSENT_OTHER[0] ^ 0x80]) + ABSENT_OTHER[1:]
    with pytest.raises(ProofError, match=f"does not share the key's first {proof.depth} bits"):
        verify_list_lookup(far, [], SIZE, proof, ROOT)


def test_a_non_canonical_proof_fails() -> None:
    _, proof = BIG.lookup(ABSENT_EMPTY)
    padded = LookupProof((EMPTY_HASH, *proof.siblings), Terminal.EMPTY)
    with pytest.raises(ProofError, match="not canonical: its path ends beside an empty subtree"):
        verify_list_lookup(ABSENT_EMPTY, [], SIZE, padded, ROOT)


def test_a_proof_against_another_root_fails() -> None:
    older = MemoryIndex.build(BIG_EVENTS[:-1]).root()
    with pytest.raises(ProofError, match=ROOT_MISMATCH):
        verify_list_lookup(PRESENT, ENTRIES, SIZE, PROOF, older)
    with pytest.raises(ProofError, match="index root is 31 bytes long"):
        verify_lookup(PRESENT, list_head(ENTRIES), PROOF, ROOT[:31])


@pytest.mark.parametrize(
    ("head", "message"),
    [
        ((1, bytes(32)), "list head must be a ListHead"),
        (ListHead(-1, bytes(32)), r"list head size must be an integer in \[0, 2\*\*64\)"),
        (ListHead(1, bytes(31)), "list head root must be 32 bytes"),
        (ListHead(0, bytes(32)), "of an empty list must have the empty tree's root"),
    ],
)
def test_malformed_heads_fail(head: Any, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        root_from_lookup_proof(PRESENT, head, PROOF)


def test_a_head_of_zero_entries_is_a_claim_of_absence() -> None:
    _, proof = BIG.lookup(ABSENT_EMPTY)
    verify_lookup(ABSENT_EMPTY, EMPTY_LIST, proof, ROOT)
    verify_lookup(ABSENT_EMPTY, None, proof, ROOT)


# ---------------------------------------------------------------------------------------
# Proof encoding
# ---------------------------------------------------------------------------------------


def test_encoding_layout() -> None:
    proof = LookupProof(
        (b"\x01" * 32, EMPTY_HASH, b"\x02" * 32), Terminal.OTHER_LEAF, b"k" * 32, b"v" * 32
    )
    encoded = proof.to_bytes()
    assert encoded == (
        b"\x00\x03"
        + bytes([0b1010_0000])
        + b"\x01" * 32
        + b"\x02" * 32
        + b"\x02"
        + b"k" * 32
        + b"v" * 32
    )
    assert LookupProof.from_bytes(encoded) == proof
    assert (
        len(PROOF.to_bytes())
        == 2 + (PROOF.depth + 7) // 8 + 32 * sum(s != EMPTY_HASH for s in PROOF.siblings) + 1
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "at least 3 bytes, got 2"),
        (b"\x01\x01\x00", "depth 257 is above 256"),
        (b"\x00\x09\x00", "of depth 9 is cut short"),
        (b"\x00\x01\x40\x00", "bitmap has bits set beyond its depth"),
        (b"\x00\x01\x80\x00", "too short for its 1 non-empty siblings"),
        (b"\x00\x00\x03", "unknown lookup proof terminal 3"),
        (b"\x00\x00\x01\x00", "1 trailing bytes"),
        (b"\x00\x00\x02" + bytes(63), "carries 64 bytes after its terminal, got 63"),
        ("00", "an encoded lookup proof is bytes, got str"),
    ],
)
def test_malformed_encodings_fail(data: Any, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        LookupProof.from_bytes(data)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((b"\x01" * 32,), "siblings are a sequence of hashes"),
        (((bytes(32),) * 257,), "depth 257 is above 256"),
        (((bytes(31),),), "sibling 0 of the lookup proof is not 32 bytes"),
        (((), 7), "unknown lookup proof terminal 7"),
        (((), Terminal.OTHER_LEAF, bytes(32)), "the other leaf's value hash must be bytes"),
        (((), Terminal.EMPTY, bytes(32), bytes(32)), "ending at EMPTY names no other leaf"),
    ],
)
def test_malformed_proofs_cannot_be_built(args: tuple[Any, ...], message: str) -> None:
    if len(args) == 1:
        args = (*args, Terminal.LEAF)
    with pytest.raises(ProofError, match=message):
        LookupProof(*args)


# ---------------------------------------------------------------------------------------
# "Only grew"
# ---------------------------------------------------------------------------------------

GROWN = list(range(0, 90, 3))


@pytest.mark.parametrize("old_count", range(len(GROWN) + 1))
def test_appends_only_grow(old_count: int) -> None:
    old = list_head(GROWN[:old_count])
    verify_list_extends(old, GROWN)
    verify_list_consistency(old, list_head(GROWN), list_consistency_proof(GROWN, old_count))


@pytest.mark.parametrize(
    ("new", "message"),
    [
        (GROWN[:9], "the list shrank from 10 to 9 entries"),
        ([*GROWN[:4], *GROWN[5:]], "the first 10 entries of the list are not those of the earlier"),
        ([GROWN[0] + 1, *GROWN[1:]], "its history was rewritten"),
        ([*GROWN[:9], GROWN[9] + 1, *GROWN[10:]], "its history was rewritten"),
        ([1000], "the list shrank from 10 to 1 entries"),
    ],
    ids=["shrunk", "one-removed", "first-changed", "last-old-changed", "replaced"],
)
def test_rewrites_do_not_only_grow(new: list[int], message: str) -> None:
    old = list_head(GROWN[:10])
    with pytest.raises(ProofError, match=message):
        verify_list_extends(old, new)


def test_a_consistency_proof_from_another_history_fails() -> None:
    old = list_head(GROWN[:10])
    rewritten = [1, *GROWN[1:]]
    with pytest.raises(ProofError, match="does not lead to the old root of size 10"):
        verify_list_consistency(old, list_head(rewritten), list_consistency_proof(rewritten, 10))
    with pytest.raises(ProofError, match="the list shrank from 10 to 9 entries"):
        verify_list_consistency(old, list_head(GROWN[:9]), [])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 200), unique=True, max_size=40).map(sorted), st.data())
def test_only_grew_holds_exactly_for_prefixes(entries: list[int], data: st.DataObject) -> None:
    """For any earlier list and any later one: verify_list_extends passes iff the earlier is a
    prefix of the later."""
    earlier = data.draw(st.lists(st.integers(0, 200), unique=True, max_size=40).map(sorted))
    is_prefix = entries[: len(earlier)] == earlier
    if is_prefix:
        verify_list_extends(list_head(earlier), entries)
    else:
        with pytest.raises(ProofError):
            verify_list_extends(list_head(earlier), entries)


# ---------------------------------------------------------------------------------------
# Upkeep errors: each its own message
# ---------------------------------------------------------------------------------------

SMALL = MemoryIndex.build([(key_of(0), key_of(2**255)), (key_of(0),)])


@pytest.mark.parametrize(
    ("batch", "old_size", "size", "message"),
    [
        ({key_of(5): [2]}, 3, 2, "old size 3 is larger than new size 2"),
        ({key_of(5): [2]}, -1, 3, r"old_size must be an integer in \[0, 2\*\*64\), got -1"),
        ({key_of(5)[:31]: [2]}, 2, 3, "an index key is 32 bytes"),
        ({key_of(5): []}, 2, 3, "at least one leaf index"),
        ({key_of(5): [1]}, 2, 3, "strictly increasing integers from the batch's first leaf 2"),
        ({key_of(5): [2, 2]}, 2, 4, "strictly increasing"),
        ({key_of(5): [True]}, 0, 3, "strictly increasing"),
        ({key_of(5): [3]}, 2, 3, "leaf index 3 is beyond the batch's last leaf 2"),
    ],
)
def test_malformed_batches_are_refused(
    batch: dict[bytes, list[int]], old_size: int, size: int, message: str
) -> None:
    with pytest.raises(LedgerError, match=message):
        update(SMALL.nodes(), SMALL.frontiers, batch, old_size, size)


def test_a_missing_frontier_for_a_key_the_index_holds_is_refused() -> None:
    with pytest.raises(LedgerError, match="holds 2 entries for a key whose frontier covers 0"):
        update(SMALL.nodes(), {}, {key_of(0): [2]}, 2, 3)


def test_a_frontier_for_a_key_the_index_lacks_is_refused() -> None:
    frontier = SMALL.frontiers[key_of(0)]
    with pytest.raises(LedgerError, match="1 key\\(s\\) of the batch come with a frontier but"):
        update(SMALL.nodes(), {key_of(7): frontier}, {key_of(7): [2]}, 2, 3)


def test_a_frontier_of_another_size_is_refused() -> None:
    frontier = SMALL.frontiers[key_of(2**255)]  # one entry
    with pytest.raises(LedgerError, match="holds 2 entries for a key whose frontier covers 1"):
        update(SMALL.nodes(), {key_of(0): frontier}, {key_of(0): [2]}, 2, 3)
    garbled = (3).to_bytes(8, "big") + bytes(32)
    with pytest.raises(LedgerError, match="a stored list frontier of size 3 holds 2 hashes"):
        update(SMALL.nodes(), {key_of(0): garbled}, {key_of(0): [2]}, 2, 3)


# ---------------------------------------------------------------------------------------
# A store that lost or garbled nodes
# ---------------------------------------------------------------------------------------


def test_assemble_reports_a_lost_node() -> None:
    nodes = dict(BIG.nodes())
    plan = lookup_plan(PRESENT, BIG.depth())
    path = [n for n in plan if n in nodes and node_id(PRESENT, node_depth(n)) == n]
    last_internal = next(n for n in reversed(path) if len(nodes[n]) == KEY_SIZE)
    del nodes[last_internal * 2], nodes[last_internal * 2 + 1]
    with pytest.raises(MissingNodeError, match="internal but both of its children are missing"):
        assemble_lookup(PRESENT, nodes)


def test_assemble_reports_a_garbled_node() -> None:
    nodes = dict(BIG.nodes())
    nodes[1] = b"\x00" * 33
    with pytest.raises(MissingNodeError, match="is not a stored node"):
        assemble_lookup(PRESENT, nodes)


def test_assemble_reports_a_leaf_off_the_path() -> None:
    leaf = Leaf.of(key_of(2**255), list_head([0])).encode()
    assert len(leaf) == LEAF_NODE_SIZE
    nodes = {1: b"\x00" * 32, 2: leaf, 3: leaf}
    with pytest.raises(MissingNodeError, match="index leaf at depth 1 is off the key's path"):
        assemble_lookup(key_of(0), nodes)


def test_leaf_decoding_refuses_an_internal_node() -> None:
    with pytest.raises(MissingNodeError, match="an index leaf node is 104 bytes, not 32"):
        Leaf.decode(bytes(32))


def test_a_too_shallow_plan_is_noticed() -> None:
    nodes = BIG.nodes()
    plan = lookup_plan(PRESENT, 2)
    with pytest.raises(MissingNodeError, match="both of its children are missing"):
        assemble_lookup(PRESENT, {n: nodes[n] for n in plan if n in nodes})


# ---------------------------------------------------------------------------------------
# The in-memory index
# ---------------------------------------------------------------------------------------


def test_versions_lists_and_heads_at_each_size() -> None:
    events = [(key_of(0),), (key_of(0), key_of(2**255)), (key_of(1),), (key_of(0),)]
    built = MemoryIndex(history=True)
    built.extend(events[:2])
    built.extend(events[2:])
    assert built.versions == (0, 2, 4)
    assert len(built) == 3
    assert key_of(1) in built
    assert sorted(built.keys()) == sorted({k for e in events for k in e})
    assert built.indexes(key_of(0), 2) == [0, 1]
    assert built.indexes(key_of(0)) == [0, 1, 3]
    assert built.head(key_of(0), 2) == list_head([0, 1])
    assert built.head(key_of(1), 2) is None
    assert built.head(key_of(0)) == list_head([0, 1, 3])
    assert built.head(sha(b"none")) is None
    assert built.indexes(sha(b"none")) == []
    assert built.root(2) == Naive(events_mapping(events, 2)).root()


def test_sizes_that_are_not_versions_are_refused() -> None:
    built = MemoryIndex.build([(key_of(0),), (key_of(1),)])
    with pytest.raises(ProofError, match="the index has no version at log size 1"):
        built.root(1)
    with pytest.raises(ProofError, match="keeps no history: it has the trie at size 2 only"):
        built.nodes(0)


def test_the_audit_rebuild_matches_checkpoint_by_checkpoint() -> None:
    """The audit's use: one extend() per checkpoint, each root compared (DESIGN §6.5)."""
    rng = random.Random(11)
    keys = [rng.randbytes(32) for _ in range(30)]
    events = [tuple(rng.sample(keys, 2)) for _ in range(500)]
    checkpoints = [0, 1, 17, 200, 201, 500]
    committed = {size: Naive(events_mapping(events, size)).root() for size in checkpoints}
    audit = MemoryIndex()
    for size in checkpoints[1:]:
        assert audit.extend(events[audit.size : size]).root == committed[size]
    tampered = [*events[:100], events[101], *events[101:]]
    audit = MemoryIndex()
    mismatches = [
        s for s in checkpoints[1:] if audit.extend(tampered[audit.size : s]).root != committed[s]
    ]
    assert mismatches == [200, 201, 500]
