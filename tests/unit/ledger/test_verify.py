"""ledger.verify: proof bundles, checkpoint consistency and rollback, each finding by a test."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledger.eip712 import SECP256K1_N, Domain, sign_digest, typed_data_message
from ledger.events import (
    RECEIPT,
    RECEIPT_BATCH,
    Action,
    EventBase,
    Purpose,
    RecordAccess,
    SignedEvent,
    audit_log_domain,
    sign_event,
)
from ledger.merkle import EMPTY_ROOT, MemoryTree, batch_proofs, leaf_hash
from ledger.rules import FillsExceeded
from ledger.verify import (
    BundleReceipt,
    CheckpointRef,
    Finding,
    FindingCode,
    ProofBundle,
    ReceiptBatchProof,
    Verdict,
    check_checkpoint_consistency,
    check_rollback,
    receipt_batch_digest,
    receipt_digest,
    receipt_leaf,
    receipt_leaves,
    verify_bundle,
    verify_consistency_chain,
)

CHAIN_ID = 31337
AUDIT_LOG = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER_CONTRACT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
DOMAIN = audit_log_domain(CHAIN_ID, AUDIT_LOG)
RECEIVED_AT = 1_750_000_000
MERGE_DELAY = 3600
ANCHOR_BY = RECEIVED_AT + MERGE_DELAY
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Key:
    """A fresh secp256k1 key and its address."""

    key: bytes
    address: str

    @classmethod
    def create(cls) -> Key:
        account = Account.create()
        return cls(bytes(account.key), account.address)


@cache
def keys() -> dict[str, Key]:
    return {name: Key.create() for name in ("hospital", "custodian", "operator", "stranger")}


def _hash(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def make_access(n: int = 0, **changes: Any) -> RecordAccess:
    """A RecordAccess by the hospital to a record of the custodian, under grant 7."""
    fields: dict[str, Any] = {
        "eventId": _hash(f"event {n}"),
        "recordRef": _hash("record"),
        "custodian": keys()["custodian"].address,
        "patient": "0x" + "ab" * 20,
        "institution": keys()["hospital"].address,
        "actor": _hash("dr who"),
        "action": Action.READ,
        "purpose": Purpose.TREATMENT,
        "grantId": 7,
        "reasonHash": bytes(32),
        "occurredAt": RECEIVED_AT - 10,
    }
    fields.update(changes)
    return RecordAccess(**fields)


def sign_receipt(
    event_digest: bytes, leaf_index: int, key: bytes, *, received_at: int = RECEIVED_AT
) -> BundleReceipt:
    anchor_by = received_at + MERGE_DELAY
    signature = sign_digest(
        receipt_digest(DOMAIN, event_digest, leaf_index, received_at, anchor_by), key
    )
    return BundleReceipt(receivedAt=received_at, anchorBy=anchor_by, signature=signature)


@dataclass
class Log:
    """A log of signed events in a MemoryTree, serving bundles like the API would."""

    events: list[SignedEvent]
    tree: MemoryTree

    @classmethod
    def build(cls, count: int = 11) -> Log:
        hospital = keys()["hospital"].key
        events = [sign_event(make_access(i), DOMAIN, hospital) for i in range(count)]
        tree = MemoryTree(leaf_hash(e.digest(DOMAIN)) for e in events)
        return cls(events, tree)

    @property
    def trusted(self) -> tuple[int, bytes]:
        return self.tree.size, self.tree.root()

    def bundle(self, index: int, *, anchored: bool = True) -> ProofBundle:
        signed = self.events[index]
        event_digest = signed.digest(DOMAIN)
        size = self.tree.size
        checkpoint = CheckpointRef(
            treeSize=size,
            rootHash=self.tree.root(),
            chainId=CHAIN_ID,
            auditLog=AUDIT_LOG,
            transactionHash=_hash("tx"),
            blockNumber=42,
        )
        return ProofBundle(
            event=signed,
            eventDigest=event_digest,
            leafIndex=index,
            treeSize=size if anchored else 0,
            inclusionPath=self.tree.inclusion_proof(index) if anchored else [],
            checkpoint=checkpoint if anchored else None,
            receipt=sign_receipt(event_digest, index, keys()["operator"].key),
            consent="covered",
        )


@cache
def log() -> Log:
    return Log.build()


def verify(bundle: ProofBundle, **overrides: Any) -> list[Finding]:
    size, root = log().trusted
    arguments: dict[str, Any] = {
        "domain": DOMAIN,
        "trusted_size": size,
        "trusted_root": root,
        "now": RECEIVED_AT + 60,
        "max_merge_delay": MERGE_DELAY,
        "operator": keys()["operator"].address,
    }
    arguments.update(overrides)
    return verify_bundle(bundle, **arguments)


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def edit(bundle: ProofBundle, **changes: Any) -> ProofBundle:
    """The bundle with some fields replaced, validated again from its wire form."""
    data = bundle.model_dump(mode="json")
    data.update(changes)
    return ProofBundle.model_validate(data)


def with_event(bundle: ProofBundle, event: EventBase, signature: bytes) -> ProofBundle:
    signed = SignedEvent(type=event.event_type, event=event, signature=signature)
    return ProofBundle.model_validate({**dict(bundle), "event": signed})


def high_s(signature: bytes) -> bytes:
    """The other valid-on-the-curve (malleable) form of a signature: s -> n - s, v flipped."""
    s = int.from_bytes(signature[32:64], "big")
    v = 55 - signature[64]  # 27 <-> 28
    return signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((v,))


# ----------------------------------------------------------------------------- clean


@pytest.mark.parametrize("index", [0, 5, 10])
def test_a_clean_anchored_bundle_has_no_findings(index: int) -> None:
    bundle = log().bundle(index)
    assert verify(bundle) == []
    assert Verdict(verify(bundle)).ok


def test_a_clean_bundle_survives_its_json_wire_form() -> None:
    bundle = log().bundle(3)
    wire = json.loads(bundle.model_dump_json())
    assert set(wire) == {
        "event",
        "eventDigest",
        "leafIndex",
        "treeSize",
        "inclusionPath",
        "checkpoint",
        "receipt",
        "consent",
    }
    assert wire["eventDigest"] == "0x" + bundle.eventDigest.hex()
    assert set(wire["checkpoint"]) == {
        "treeSize",
        "rootHash",
        "chainId",
        "auditLog",
        "transactionHash",
        "blockNumber",
    }
    assert set(wire["receipt"]) == {"receivedAt", "anchorBy", "signature", "batch"}
    parsed = ProofBundle.model_validate_json(json.dumps(wire))
    assert parsed == bundle
    assert verify(parsed) == []


def test_a_clean_bundle_verifies_without_the_optional_checks() -> None:
    bundle = log().bundle(4)
    assert verify(bundle, now=None, max_merge_delay=None, operator=None) == []


@cache
def pool() -> Log:
    return Log.build(40)


@FAST
@given(data=st.data(), size=st.integers(min_value=1, max_value=40))
def test_any_leaf_of_any_tree_verifies_and_any_flipped_bit_fails(
    data: st.DataObject, size: int
) -> None:
    small = Log(pool().events[:size], MemoryTree(pool().tree.leaf(i) for i in range(size)))
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    bundle = small.bundle(index)
    trusted = {"trusted_size": size, "trusted_root": small.tree.root()}
    assert verify(bundle, **trusted) == []
    path = list(bundle.inclusionPath)
    if path:
        element = data.draw(st.integers(min_value=0, max_value=len(path) - 1))
        bit = data.draw(st.integers(min_value=0, max_value=255))
        flipped = bytearray(path[element])
        flipped[bit // 8] ^= 1 << (bit % 8)
        path[element] = bytes(flipped)
        tampered = bundle.model_copy(update={"inclusionPath": path})
        assert codes(verify(tampered, **trusted)) == [FindingCode.INCLUSION_INVALID]


# ----------------------------------------------------------------------------- digest, signature


def test_a_tampered_field_is_a_digest_and_signer_mismatch() -> None:
    bundle = log().bundle(2)
    changed = bundle.event.event.model_copy(update={"purpose": Purpose.RESEARCH})
    assert isinstance(changed, RecordAccess)
    tampered = with_event(bundle, changed, bundle.event.signature)
    findings = verify(tampered)
    found = codes(findings)
    assert FindingCode.DIGEST_MISMATCH in found
    assert FindingCode.SIGNER_MISMATCH in found
    # The log holds the original: the changed event is not in it, nor under the receipt.
    assert FindingCode.INCLUSION_INVALID in found
    assert FindingCode.RECEIPT_INVALID in found
    inclusion = next(f for f in findings if f.code == FindingCode.INCLUSION_INVALID)
    assert "changed after it was logged" in inclusion.detail
    assert inclusion.context["loggedDigest"] == "0x" + bundle.eventDigest.hex()
    assert all(f.event_id == bundle.event.event_id for f in findings)


def test_a_tampered_field_with_a_recomputed_digest_is_still_caught() -> None:
    bundle = log().bundle(2)
    changed = bundle.event.event.model_copy(update={"action": Action.EXPORT})
    assert isinstance(changed, RecordAccess)
    tampered = with_event(bundle, changed, bundle.event.signature)
    tampered = tampered.model_copy(update={"eventDigest": changed.digest(DOMAIN)})
    found = codes(verify(tampered))
    assert FindingCode.DIGEST_MISMATCH not in found
    assert FindingCode.SIGNER_MISMATCH in found
    assert FindingCode.INCLUSION_INVALID in found


def test_a_wrong_event_digest_alone_is_a_digest_mismatch() -> None:
    bundle = log().bundle(6)
    tampered = bundle.model_copy(update={"eventDigest": _hash("something else")})
    findings = verify(tampered, operator=None)
    assert codes(findings) == [FindingCode.DIGEST_MISMATCH]
    assert findings[0].context["computed"] == "0x" + bundle.eventDigest.hex()


def test_a_signature_by_another_key_is_a_signer_mismatch() -> None:
    event = make_access(99)
    forged = sign_event(event, DOMAIN, keys()["stranger"].key)
    tree = MemoryTree([leaf_hash(forged.digest(DOMAIN))])
    bundle = ProofBundle(
        event=forged,
        eventDigest=forged.digest(DOMAIN),
        leafIndex=0,
        treeSize=1,
        inclusionPath=[],
        checkpoint=CheckpointRef(
            treeSize=1, rootHash=tree.root(), chainId=CHAIN_ID, auditLog=AUDIT_LOG
        ),
        consent="covered",
    )
    findings = verify(bundle, trusted_size=1, trusted_root=tree.root(), operator=None)
    assert codes(findings) == [FindingCode.SIGNER_MISMATCH]
    assert findings[0].context == {
        "signer": keys()["stranger"].address,
        "institution": keys()["hospital"].address,
    }


def test_a_signature_under_another_domain_is_a_signer_mismatch() -> None:
    bundle = log().bundle(1)
    other = Domain("medtrail", "1", CHAIN_ID, OTHER_CONTRACT)
    signed = sign_event(bundle.event.event, other, keys()["hospital"].key)
    assert codes(verify(with_event(bundle, bundle.event.event, signed.signature))) == [
        FindingCode.SIGNER_MISMATCH
    ]


def test_a_high_s_signature_is_invalid() -> None:
    bundle = log().bundle(7)
    malleable = with_event(bundle, bundle.event.event, high_s(bundle.event.signature))
    findings = verify(malleable)
    assert codes(findings) == [FindingCode.SIGNATURE_INVALID]
    assert "malleable" in findings[0].detail


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda s: s[:64] + b"\x01", id="v-not-27-or-28"),
        pytest.param(lambda s: bytes(32) + s[32:], id="r-zero"),
        pytest.param(lambda s: s[:32] + bytes(32) + s[64:], id="s-zero"),
    ],
)
def test_a_malformed_signature_is_invalid(mangle: Any) -> None:
    bundle = log().bundle(7)
    malformed = with_event(bundle, bundle.event.event, mangle(bundle.event.signature))
    assert codes(verify(malformed)) == [FindingCode.SIGNATURE_INVALID]


# ----------------------------------------------------------------------------- inclusion


@pytest.mark.parametrize("wrong_index", [0, 4, 9])
def test_a_wrong_leaf_index_is_an_invalid_inclusion(wrong_index: int) -> None:
    bundle = log().bundle(5)
    moved = bundle.model_copy(update={"leafIndex": wrong_index})
    # The receipt promised leaf 5, so the receipt no longer matches either.
    assert codes(verify(moved, operator=None)) == [FindingCode.INCLUSION_INVALID]


def test_a_leaf_index_outside_the_tree_is_an_invalid_inclusion() -> None:
    bundle = log().bundle(5)
    outside = bundle.model_copy(update={"leafIndex": log().tree.size})
    findings = verify(outside, operator=None)
    assert codes(findings) == [FindingCode.INCLUSION_INVALID]
    assert "outside the trusted tree" in findings[0].detail


@pytest.mark.parametrize("element", [0, 1, -1])
def test_a_flipped_proof_element_is_an_invalid_inclusion(element: int) -> None:
    bundle = log().bundle(8)
    path = list(bundle.inclusionPath)
    path[element] = bytes([path[element][0] ^ 0x80]) + path[element][1:]
    findings = verify(bundle.model_copy(update={"inclusionPath": path}))
    assert codes(findings) == [FindingCode.INCLUSION_INVALID]
    assert findings[0].context == {"leafIndex": 8, "treeSize": log().tree.size}


@pytest.mark.parametrize("change", ["drop", "extra"])
def test_a_proof_of_the_wrong_length_is_an_invalid_inclusion(change: str) -> None:
    bundle = log().bundle(8)
    path = list(bundle.inclusionPath)
    path = path[:-1] if change == "drop" else [*path, _hash("extra")]
    findings = verify(bundle.model_copy(update={"inclusionPath": path}))
    assert codes(findings) == [FindingCode.INCLUSION_INVALID]


# ----------------------------------------------------------------------------- checkpoint


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rootHash", "0x" + "11" * 32),
        ("treeSize", 10),
        ("chainId", 1),
        ("auditLog", OTHER_CONTRACT),
    ],
)
def test_a_checkpoint_other_than_the_trusted_one_is_a_mismatch(field: str, value: Any) -> None:
    bundle = log().bundle(3)
    assert bundle.checkpoint is not None
    checkpoint = {**bundle.checkpoint.model_dump(mode="json"), field: value}
    findings = verify(edit(bundle, checkpoint=checkpoint))
    assert codes(findings) == [FindingCode.CHECKPOINT_MISMATCH]
    assert set(findings[0].context) == {field}


def test_a_proof_for_a_forged_tree_is_a_mismatch_and_does_not_verify() -> None:
    """The operator serves a root of its own that holds the event; the chain holds another."""
    bundle = log().bundle(3)
    forged = MemoryTree([leaf_hash(_hash("x")), leaf_hash(bundle.eventDigest)])
    forged_bundle = edit(
        bundle,
        leafIndex=1,
        treeSize=2,
        inclusionPath=["0x" + p.hex() for p in forged.inclusion_proof(1)],
        checkpoint={
            "treeSize": 2,
            "rootHash": "0x" + forged.root().hex(),
            "chainId": CHAIN_ID,
            "auditLog": AUDIT_LOG,
        },
    )
    found = codes(verify(forged_bundle, operator=None))
    assert found == [FindingCode.CHECKPOINT_MISMATCH, FindingCode.INCLUSION_INVALID]


def test_a_proof_for_an_older_checkpoint_against_a_newer_trusted_one_is_a_mismatch() -> None:
    older = Log(log().events[:6], MemoryTree(log().tree.leaf(i) for i in range(6)))
    bundle = older.bundle(2)
    findings = verify(bundle)  # trusted: the full log of 11
    assert codes(findings) == [FindingCode.CHECKPOINT_MISMATCH, FindingCode.INCLUSION_INVALID]
    assert set(findings[0].context) == {"treeSize", "rootHash", "proofTreeSize"}
    # Against its own (trusted) checkpoint it is clean.
    assert verify(bundle, trusted_size=6, trusted_root=older.tree.root()) == []


# ----------------------------------------------------------------------------- anchoring


def test_a_bundle_not_anchored_within_the_deadline_is_pending() -> None:
    bundle = log().bundle(10, anchored=False)
    pending_size = 10  # the trusted checkpoint does not reach leaf 10 yet
    root = log().tree.root(pending_size)
    findings = verify(bundle, trusted_size=pending_size, trusted_root=root, now=ANCHOR_BY)
    assert codes(findings) == [FindingCode.PENDING]
    assert findings[0].severity == "warning"
    assert findings[0].context["anchorBy"] == ANCHOR_BY
    assert Verdict(findings).ok


def test_a_bundle_not_anchored_is_pending_when_no_time_is_given() -> None:
    bundle = log().bundle(10, anchored=False)
    root = log().tree.root(10)
    findings = verify(bundle, trusted_size=10, trusted_root=root, now=None)
    assert codes(findings) == [FindingCode.PENDING]


def test_a_bundle_not_anchored_without_a_receipt_is_pending_with_no_deadline() -> None:
    bundle = log().bundle(10, anchored=False).model_copy(update={"receipt": None})
    root = log().tree.root(10)
    findings = verify(bundle, trusted_size=10, trusted_root=root, operator=None, now=2**40)
    assert codes(findings) == [FindingCode.PENDING]
    assert "no deadline" in findings[0].detail


def test_a_bundle_not_anchored_past_its_anchor_by_is_late() -> None:
    bundle = log().bundle(10, anchored=False)
    root = log().tree.root(10)
    findings = verify(
        bundle, trusted_size=10, trusted_root=root, now=ANCHOR_BY + 1, max_merge_delay=None
    )
    assert codes(findings) == [FindingCode.NOT_ANCHORED_IN_TIME]
    assert findings[0].severity == "error"
    assert not Verdict(findings).ok


def test_a_bundle_not_anchored_past_the_merge_delay_is_late_even_if_promised_later() -> None:
    bundle = log().bundle(10, anchored=False)
    root = log().tree.root(10)
    now = RECEIVED_AT + 601
    assert now < ANCHOR_BY
    findings = verify(bundle, trusted_size=10, trusted_root=root, now=now, max_merge_delay=600)
    assert codes(findings) == [FindingCode.NOT_ANCHORED_IN_TIME]
    assert findings[0].context["anchorBy"] == RECEIVED_AT + 600


def test_a_bundle_not_anchored_though_the_trusted_checkpoint_covers_it_lacks_its_proof() -> None:
    bundle = log().bundle(4, anchored=False)
    findings = verify(bundle)  # the trusted checkpoint has 11 leaves
    assert codes(findings) == [FindingCode.PROOF_MISSING]
    assert not Verdict(findings).ok


# ----------------------------------------------------------------------------- receipts


def test_a_receipt_signed_by_another_key_is_invalid() -> None:
    bundle = log().bundle(9)
    forged = sign_receipt(bundle.eventDigest, 9, keys()["stranger"].key)
    findings = verify(bundle.model_copy(update={"receipt": forged}))
    assert codes(findings) == [FindingCode.RECEIPT_INVALID]
    assert findings[0].context["signer"] == keys()["stranger"].address


def test_a_receipt_for_another_leaf_is_invalid() -> None:
    bundle = log().bundle(9)
    other = sign_receipt(bundle.eventDigest, 8, keys()["operator"].key)
    assert codes(verify(bundle.model_copy(update={"receipt": other}))) == [
        FindingCode.RECEIPT_INVALID
    ]


def test_a_receipt_with_changed_times_is_invalid() -> None:
    bundle = log().bundle(9)
    assert bundle.receipt is not None
    later = bundle.receipt.model_copy(update={"anchorBy": ANCHOR_BY + 86400})
    assert codes(verify(bundle.model_copy(update={"receipt": later}))) == [
        FindingCode.RECEIPT_INVALID
    ]


def test_a_malleable_receipt_signature_is_invalid() -> None:
    bundle = log().bundle(9)
    assert bundle.receipt is not None
    receipt = bundle.receipt.model_copy(update={"signature": high_s(bundle.receipt.signature)})
    findings = verify(bundle.model_copy(update={"receipt": receipt}))
    assert codes(findings) == [FindingCode.RECEIPT_INVALID]
    assert "malleable" in findings[0].detail


def test_a_missing_receipt_is_a_warning_when_an_operator_is_given() -> None:
    bundle = log().bundle(9).model_copy(update={"receipt": None})
    findings = verify(bundle)
    assert codes(findings) == [FindingCode.RECEIPT_MISSING]
    assert findings[0].severity == "warning"
    assert verify(bundle, operator=None) == []


def test_the_operator_may_be_given_in_any_case() -> None:
    bundle = log().bundle(9)
    assert verify(bundle, operator=keys()["operator"].address.lower()) == []


def test_receipt_digest_agrees_with_ingest_and_eth_account() -> None:
    from ledger import ingest  # imports sqlalchemy: only here

    event_digest = _hash("event")
    ours = receipt_digest(DOMAIN, event_digest, 5, RECEIVED_AT, ANCHOR_BY)
    alone = ingest.Receipt(event_digest, event_digest, 5, RECEIVED_AT, ANCHOR_BY, b"", "n/a")
    assert ours == alone.signed_digest(DOMAIN)
    operator = keys()["operator"]
    message = typed_data_message(DOMAIN, RECEIPT, (event_digest, 5, RECEIVED_AT, ANCHOR_BY))
    signed = Account.sign_typed_data(operator.key, full_message=message)
    receipt = BundleReceipt(
        receivedAt=RECEIVED_AT, anchorBy=ANCHOR_BY, signature=bytes(signed.signature)
    )
    bundle = log().bundle(0)
    # eth-account signed the digest of (event, leaf 5): valid only for that leaf and event.
    assert bytes(signed.message_hash) == ours
    assert codes(verify(bundle.model_copy(update={"receipt": receipt}))) == [
        FindingCode.RECEIPT_INVALID
    ]
    good = Account.sign_typed_data(
        operator.key,
        full_message=typed_data_message(
            DOMAIN, RECEIPT, (bundle.eventDigest, 0, RECEIVED_AT, ANCHOR_BY)
        ),
    )
    receipt = receipt.model_copy(update={"signature": bytes(good.signature)})
    assert verify(bundle.model_copy(update={"receipt": receipt})) == []


# ----------------------------------------------------------------------------- batch receipts


def sign_batch(
    first: int, count: int, key: bytes, *, received_at: int = RECEIVED_AT
) -> dict[int, BundleReceipt]:
    """The receipts of the log's leaves ``first .. first + count - 1``, as ingest signs them:
    one ReceiptBatch signature over the RFC 9162 root of their receipt leaves."""
    anchor_by = received_at + MERGE_DELAY
    digests = [log().events[i].digest(DOMAIN) for i in range(first, first + count)]
    leaves = [receipt_leaf(d, first + n, received_at, anchor_by) for n, d in enumerate(digests)]
    root, paths = batch_proofs(leaves)
    signature = sign_digest(
        receipt_batch_digest(DOMAIN, first, count, received_at, anchor_by, root), key
    )
    return {
        first + n: BundleReceipt(
            receivedAt=received_at,
            anchorBy=anchor_by,
            signature=signature,
            batch=ReceiptBatchProof(firstLeaf=first, count=count, root=root, path=tuple(path)),
        )
        for n, path in enumerate(paths)
    }


@settings(max_examples=200, deadline=None)
@given(
    digests=st.lists(st.binary(min_size=32, max_size=32), max_size=12),
    first=st.one_of(st.integers(0, 2**20), st.just(2**64 - 12)),
    received_at=st.integers(0, 2**63),
    delay=st.integers(0, 2**32),
)
def test_a_batchs_receipt_leaves_are_each_receipts_own_leaf(
    digests: list[bytes], first: int, received_at: int, delay: int
) -> None:
    """Ingest builds a batch's leaves at once; each is what a verifier computes alone (a
    digest given as hex too, as :func:`receipt_leaf` takes it)."""
    anchor_by = received_at + delay
    mixed: list[Any] = ["0x" + d.hex() if n % 2 else d for n, d in enumerate(digests)]
    assert receipt_leaves(mixed, first, received_at, anchor_by) == receipt_leaves(
        digests, first, received_at, anchor_by
    )
    assert receipt_leaves(digests, first, received_at, anchor_by) == [
        receipt_leaf(d, first + n, received_at, anchor_by) for n, d in enumerate(digests)
    ]


@pytest.mark.parametrize(
    ("digests", "first", "times"),
    [
        ([b"\x01" * 32, b"\x02" * 31], 0, (1, 2)),  # a short digest, not first
        ([b"\x01" * 32, b"\x02" * 33], 0, (1, 2)),  # a long digest
        ([b"\x01" * 32] * 3, 2**64 - 2, (1, 2)),  # the last leaf beyond uint64
        ([b"\x01" * 32], -1, (1, 2)),
        ([b"\x01" * 32], 0, (-1, 2)),
        ([b"\x01" * 32], 0, (1, 2**64)),
    ],
)
def test_a_batchs_receipt_leaves_refuse_what_one_leaf_refuses(
    digests: list[Any], first: int, times: tuple[int, int]
) -> None:
    alone = None
    for n, d in enumerate(digests):
        try:
            receipt_leaf(d, first + n, *times)
        except Exception as exc:
            alone = exc
            break
    assert alone is not None
    with pytest.raises(type(alone)):
        receipt_leaves(digests, first, *times)


def with_receipt(index: int, receipt: BundleReceipt) -> ProofBundle:
    return log().bundle(index).model_copy(update={"receipt": receipt})


@pytest.mark.parametrize(("first", "count"), [(0, 11), (4, 5), (10, 1), (3, 2)])
def test_every_receipt_of_a_batch_verifies_through_its_path(first: int, count: int) -> None:
    receipts = sign_batch(first, count, keys()["operator"].key)
    for index, receipt in receipts.items():
        assert verify(with_receipt(index, receipt)) == []
    # On the wire and back, as the API serves it.
    bundle = edit(with_receipt(first, receipts[first]))
    assert verify(bundle) == []


def test_a_batch_receipt_with_a_forged_path_is_invalid() -> None:
    receipt = sign_batch(0, 11, keys()["operator"].key)[5]
    assert receipt.batch is not None
    path = list(receipt.batch.path)
    path[1] = hashlib.sha256(b"forged").digest()
    forged = receipt.model_copy(
        update={"batch": receipt.batch.model_copy(update={"path": tuple(path)})}
    )
    findings = verify(with_receipt(5, forged))
    assert codes(findings) == [FindingCode.RECEIPT_INVALID]
    assert "path does not lead to its batch's root" in findings[0].detail


def test_a_batch_receipt_with_a_path_of_the_wrong_length_is_invalid() -> None:
    receipt = sign_batch(0, 11, keys()["operator"].key)[5]
    assert receipt.batch is not None
    short = receipt.model_copy(
        update={"batch": receipt.batch.model_copy(update={"path": receipt.batch.path[:-1]})}
    )
    findings = verify(with_receipt(5, short))
    assert codes(findings) == [FindingCode.RECEIPT_INVALID]
    assert "must have" in findings[0].detail


def test_a_receipt_moved_to_another_batch_is_invalid() -> None:
    # Leaf 5 was received in the batch of leaves 4..8; the operator also signed 0..10.
    mine = sign_batch(4, 5, keys()["operator"].key, received_at=RECEIVED_AT)[5]
    other = sign_batch(0, 11, keys()["operator"].key, received_at=RECEIVED_AT)[3]
    assert mine.batch is not None
    assert other.batch is not None
    # Its path presented under the other batch's root and signature leads nowhere.
    moved = other.model_copy(
        update={"batch": other.batch.model_copy(update={"path": mine.batch.path})}
    )
    findings = verify(with_receipt(5, moved))
    assert codes(findings) == [FindingCode.RECEIPT_INVALID]
    assert "path does not lead" in findings[0].detail
    # Nor does claiming another place (firstLeaf) for its own batch: the root it signed
    # is over the receipts at their own positions.
    shifted = mine.model_copy(update={"batch": mine.batch.model_copy(update={"firstLeaf": 3})})
    assert codes(verify(with_receipt(5, shifted))) == [FindingCode.RECEIPT_INVALID]


def test_a_receipt_outside_its_batch_is_invalid() -> None:
    receipt = sign_batch(4, 5, keys()["operator"].key)[4]
    findings = verify(with_receipt(9, receipt))
    assert codes(findings) == [FindingCode.RECEIPT_INVALID]
    assert "not in the receipt batch of leaves 4..8" in findings[0].detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("receivedAt", RECEIVED_AT + 1),
        ("anchorBy", ANCHOR_BY + 86400),
        ("batch.count", 12),
        ("batch.root", _hash("another root")),
    ],
)
def test_a_batch_receipt_with_a_tampered_field_is_invalid(field: str, value: Any) -> None:
    receipt = sign_batch(0, 11, keys()["operator"].key)[5]
    assert receipt.batch is not None
    if field.startswith("batch."):
        batch = receipt.batch.model_copy(update={field.removeprefix("batch."): value})
        tampered = receipt.model_copy(update={"batch": batch})
    else:
        tampered = receipt.model_copy(update={field: value})
    assert codes(verify(with_receipt(5, tampered))) == [FindingCode.RECEIPT_INVALID]


def test_a_batch_receipt_for_another_event_is_invalid() -> None:
    receipt = sign_batch(0, 11, keys()["operator"].key)[5]
    bundle = log().bundle(6).model_copy(update={"receipt": receipt, "leafIndex": 5})
    assert FindingCode.RECEIPT_INVALID in codes(verify(bundle))


def test_a_batch_signed_by_another_key_is_invalid() -> None:
    receipt = sign_batch(0, 11, keys()["stranger"].key)[5]
    findings = verify(with_receipt(5, receipt))
    assert codes(findings) == [FindingCode.RECEIPT_INVALID]
    assert findings[0].context["signer"] == keys()["stranger"].address


def test_receipt_batch_digest_agrees_with_eth_account() -> None:
    operator = keys()["operator"]
    root = _hash("root")
    values = (4, 5, RECEIVED_AT, ANCHOR_BY, root)
    signed = Account.sign_typed_data(
        operator.key, full_message=typed_data_message(DOMAIN, RECEIPT_BATCH, values)
    )
    assert bytes(signed.message_hash) == receipt_batch_digest(DOMAIN, *values)
    assert RECEIPT_BATCH.type_string == (
        "ReceiptBatch(uint64 firstLeaf,uint64 count,uint64 receivedAt,uint64 anchorBy,bytes32 root)"
    )


# ----------------------------------------------------------------------------- arguments, models


@pytest.mark.parametrize(
    "overrides",
    [
        {"trusted_root": b"\x00" * 31},
        {"trusted_size": -1},
        {"operator": "0x1234"},
        # The empty tree's root is SHA-256 of nothing, not zeros (the wallet once said so).
        {"trusted_size": 0, "trusted_root": bytes(32)},
    ],
)
def test_a_malformed_trusted_state_is_a_value_error(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"trusted|operator"):
        verify(log().bundle(0), **overrides)


def test_the_empty_trees_root_is_the_one_of_merkle() -> None:
    bundle = log().bundle(0).model_copy(update={"checkpoint": None, "treeSize": 0})
    found = verify(bundle, trusted_size=0, trusted_root=EMPTY_ROOT, now=0)
    assert [f.code for f in found] == [FindingCode.PENDING]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"extra": 1}, id="unknown-field"),
        pytest.param({"consent": "fine"}, id="unknown-consent"),
        pytest.param({"consent": "not-covered:bogus"}, id="unknown-grant-status"),
        pytest.param({"eventDigest": "0x1234"}, id="short-digest"),
        pytest.param({"inclusionPath": ["0x" + "zz" * 32]}, id="bad-hex"),
        pytest.param({"leafIndex": -1}, id="negative-index"),
        pytest.param({"leafIndex": "3"}, id="index-as-string"),
        pytest.param({"treeSize": 2**64}, id="size-beyond-uint64"),
    ],
)
def test_a_malformed_bundle_is_refused_when_parsed(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        edit(log().bundle(0), **changes)


def test_a_checkpoint_ref_refuses_unknown_fields_and_bad_values() -> None:
    good = {"treeSize": 1, "rootHash": "0x" + "00" * 32, "chainId": 1, "auditLog": AUDIT_LOG}
    assert CheckpointRef.model_validate(good).transactionHash is None
    for bad in ({"chainId": 0}, {"auditLog": "0x" + "00" * 20}, {"root": "0x"}):
        with pytest.raises(ValidationError):
            CheckpointRef.model_validate({**good, **bad})


def test_consent_labels_from_the_rules_are_accepted() -> None:
    for label in ("not-applicable", "custodian", "covered", "emergency", "not-covered:revoked"):
        assert edit(log().bundle(0), consent=label).consent == label


# ----------------------------------------------------------------------------- findings


def test_a_verdict_fails_only_on_errors() -> None:
    warning = Finding(FindingCode.PENDING, "warning", "not yet")
    review = Finding("emergency-access", "review", "break-glass")
    error = Finding(FindingCode.SPLIT_VIEW, "error", "two roots")
    assert Verdict([]).ok
    assert Verdict([warning, review]).ok
    verdict = Verdict([warning, error, review])
    assert not verdict.ok
    assert verdict.errors == (error,)
    assert verdict.codes == {"pending", "split-view", "emergency-access"}


def test_a_finding_from_a_rule_violation_keeps_its_code_and_context() -> None:
    violation = FillsExceeded("fill 3 of a prescription for 2 fill(s)", fills=2)
    finding = Finding.from_error(violation, event_id=b"\x01" * 32)
    assert finding == Finding(
        "fills-exceeded",
        "error",
        "fill 3 of a prescription for 2 fill(s)",
        b"\x01" * 32,
        {"fills": 2},
    )
    assert finding.to_json() == {
        "code": "fills-exceeded",
        "severity": "error",
        "detail": "fill 3 of a prescription for 2 fill(s)",
        "eventId": "0x" + "01" * 32,
        "context": {"fills": 2},
    }
    assert hash(finding) == hash(Finding.from_error(violation, event_id=b"\x01" * 32))


def test_findings_are_json_ready() -> None:
    bundle = log().bundle(2)
    changed = bundle.event.event.model_copy(update={"purpose": Purpose.RESEARCH})
    assert isinstance(changed, RecordAccess)
    findings = verify(with_event(bundle, changed, bundle.event.signature))
    document = json.loads(json.dumps([f.to_json() for f in findings]))
    assert [d["code"] for d in document] == [str(c) for c in codes(findings)]


# ----------------------------------------------------------------------------- the log's history


def test_consistent_checkpoints_have_no_finding() -> None:
    tree = log().tree
    for old, new in [(1, 11), (4, 7), (7, 11), (11, 11), (0, 5)]:
        proof = tree.consistency_proof(old, new) if 0 < old < new else []
        assert check_checkpoint_consistency(old, tree.root(old), new, tree.root(new), proof) is None


def test_checkpoints_from_diverging_trees_are_inconsistent() -> None:
    tree = log().tree
    fork = MemoryTree([tree.leaf(i) for i in range(4)] + [leaf_hash(_hash("fork"))] * 7)
    proof = fork.consistency_proof(6, 11)
    finding = check_checkpoint_consistency(6, tree.root(6), 11, fork.root(), proof)
    assert finding is not None
    assert finding.code == FindingCode.CHECKPOINT_INCONSISTENT
    assert finding.severity == "error"
    assert finding.event_id is None
    assert finding.context["oldSize"] == 6
    assert finding.context["newSize"] == 11


def test_a_shrinking_or_rewritten_checkpoint_is_inconsistent() -> None:
    tree = log().tree
    shrunk = check_checkpoint_consistency(11, tree.root(), 6, tree.root(6), [])
    rewritten = check_checkpoint_consistency(6, tree.root(6), 6, tree.root(5), [])
    assert shrunk is not None
    assert shrunk.code == FindingCode.CHECKPOINT_INCONSISTENT
    assert rewritten is not None
    assert rewritten.code == FindingCode.CHECKPOINT_INCONSISTENT


def test_a_chain_of_checkpoints_reports_each_broken_link() -> None:
    tree = log().tree
    fork = MemoryTree([tree.leaf(i) for i in range(5)] + [leaf_hash(_hash("fork"))] * 3)
    checkpoints = [(2, tree.root(2)), (5, tree.root(5)), (8, fork.root()), (11, tree.root())]
    proofs = [
        tree.consistency_proof(2, 5),
        fork.consistency_proof(5, 8),  # fine: the fork extends 5
        tree.consistency_proof(8, 11),  # from the real 8, not the fork's
    ]
    findings = verify_consistency_chain(checkpoints, proofs)
    assert [(f.context["oldSize"], f.context["newSize"]) for f in findings] == [(8, 11)]

    def source(old: int, new: int) -> list[bytes]:
        return (fork if new == 8 else tree).consistency_proof(old, new)

    assert verify_consistency_chain(checkpoints, source) == findings
    good = [(2, tree.root(2)), (5, tree.root(5)), (8, tree.root(8)), (11, tree.root())]
    assert verify_consistency_chain(good, tree.consistency_proof) == []
    assert verify_consistency_chain(good[:1], []) == []


def test_a_chain_of_checkpoints_needs_one_proof_per_link() -> None:
    tree = log().tree
    with pytest.raises(ValueError, match="2 consecutive pairs"):
        verify_consistency_chain([(1, tree.root(1)), (2, tree.root(2)), (3, tree.root(3))], [[]])


def test_rollback_first_sight_and_unchanged_log_are_fine() -> None:
    tree = log().tree
    assert check_rollback(None, (11, tree.root()), None) is None
    assert check_rollback((11, tree.root()), (11, tree.root()), None) is None
    assert check_rollback((6, tree.root(6)), (11, tree.root()), tree.consistency_proof(6)) is None


@pytest.mark.parametrize("served_size", [0, 1, 10])
def test_a_smaller_served_tree_is_a_rollback(served_size: int) -> None:
    tree = log().tree
    finding = check_rollback((11, tree.root()), (served_size, tree.root(served_size)), [])
    assert finding is not None
    assert finding.code == FindingCode.LOG_ROLLBACK
    assert finding.severity == "error"
    assert finding.context["seenSize"] == 11
    assert finding.context["servedSize"] == served_size


def test_another_root_for_a_size_seen_is_a_split_view() -> None:
    tree = log().tree
    other = MemoryTree([leaf_hash(_hash(str(i))) for i in range(6)])
    finding = check_rollback((6, tree.root(6)), (6, other.root()), None)
    assert finding is not None
    assert finding.code == FindingCode.SPLIT_VIEW


def test_a_larger_tree_that_does_not_extend_the_one_seen_is_a_split_view() -> None:
    tree = log().tree
    fork = MemoryTree([tree.leaf(i) for i in range(3)] + [leaf_hash(_hash("fork"))] * 8)
    finding = check_rollback((6, tree.root(6)), (11, fork.root()), fork.consistency_proof(6))
    assert finding is not None
    assert finding.code == FindingCode.SPLIT_VIEW
    assert "does not extend" in finding.detail


def test_a_larger_tree_without_a_consistency_proof_is_a_split_view() -> None:
    tree = log().tree
    finding = check_rollback((6, tree.root(6)), (11, tree.root()), None)
    assert finding is not None
    assert finding.code == FindingCode.SPLIT_VIEW
    assert "no consistency proof" in finding.detail


def test_merkle_errors_are_not_leaked() -> None:
    """Garbage proofs become findings, never ProofError."""
    tree = log().tree
    finding = check_checkpoint_consistency(3, tree.root(3), 11, tree.root(), [b"short", b"x" * 32])
    assert finding is not None
    assert finding.code == FindingCode.CHECKPOINT_INCONSISTENT
    assert "proof[0]" in finding.detail
