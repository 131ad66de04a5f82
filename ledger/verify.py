# ruff: noqa: N815  (field names are the API's camelCase wire names, on purpose)
"""Pure verification of proof bundles and of the log's history against trusted roots.

Nothing here does I/O: no web3, no database, no HTTP. What the verifier trusts (a
checkpoint ``(size, root)`` read from the chain, the log operator's address, the EIP-712
domain, the current time) is always an argument, so the same code runs inside the
service, inside the regulator's scripts and inside the tests.

* :class:`ProofBundle` is what the API serves per event and what a regulator verifies
  offline: the signed event, its digest, its leaf index, an RFC 9162 inclusion proof,
  the on-chain checkpoint it is proved against (``None`` while not anchored yet) and the
  operator's receipt.
* :func:`verify_bundle` checks one bundle and returns :class:`Finding` s (an empty list
  means nothing is wrong); :class:`Verdict` sums findings up.
* :func:`check_checkpoint_consistency` / :func:`verify_consistency_chain` check that
  checkpoints extend one another; :func:`check_rollback` compares what a log serves now
  with what a verifier saw before (rollback, split view).
* :func:`receipt_digest` is the EIP-712 digest of the operator's ``Receipt`` (receipts
  issued one signature per event); :func:`signed_receipt_digest` the digest the operator
  signed for any receipt, per event or per batch (a ``ReceiptBatch`` over the RFC 9162 root
  of the batch's receipts, each receipt carrying its path: docs/wire.md "Receipts").

Every finding carries a stable ``code`` (:class:`FindingCode`), shared with the
regulator's scripts and their JSON output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from ledger import merkle
from ledger.codes import Severity
from ledger.eip712 import Domain, check_signature, digest, keccak, to_checksum_address
from ledger.errors import LedgerError, MalformedEventError, ProofError, SignatureError
from ledger.events import RECEIPT, RECEIPT_BATCH, Address, Bytes32, Signature65, SignedEvent
from ledger.rules import ConsentFinding

__all__ = [
    "BundleReceipt",
    "CheckpointRef",
    "Finding",
    "FindingCode",
    "ProofBundle",
    "ProofSource",
    "ReceiptBatchProof",
    "Severity",
    "TreeState",
    "Verdict",
    "check_checkpoint_consistency",
    "check_rollback",
    "receipt_batch_digest",
    "receipt_digest",
    "receipt_leaf",
    "receipt_leaves",
    "signature_findings",
    "signed_receipt_digest",
    "verify_bundle",
    "verify_consistency_chain",
]

# --------------------------------------------------------------------------- findings

#: A tree state ``(size, root)``, e.g. a checkpoint read from the chain.
TreeState: TypeAlias = tuple[int, bytes]


class FindingCode(StrEnum):
    """The codes :mod:`ledger.verify` reports (plain ``str`` values, stable on the wire; what
    each means and its severity: :data:`ledger.codes.CODES`)."""

    #: The bundle's ``eventDigest`` is not the EIP-712 digest of its event.
    DIGEST_MISMATCH = "digest-mismatch"
    #: The event's signature is malformed, malleable (high s) or recovers no key.
    SIGNATURE_INVALID = "signature-invalid"
    #: The signature recovers to another address than the event's institution.
    SIGNER_MISMATCH = "signer-mismatch"
    #: The bundle's checkpoint is not the trusted one (size, root, chain or AuditLog).
    CHECKPOINT_MISMATCH = "checkpoint-mismatch"
    #: The inclusion proof does not place the event at its leaf in the trusted root.
    INCLUSION_INVALID = "inclusion-invalid"
    #: The bundle says "not anchored" though the trusted checkpoint covers its leaf.
    PROOF_MISSING = "proof-missing"
    #: Not anchored and past the promised anchoring deadline.
    NOT_ANCHORED_IN_TIME = "not-anchored-in-time"
    #: Not anchored yet, still within the deadline (or no deadline is known).
    PENDING = "pending"
    #: The receipt's signature is not the operator's over this event, index and times.
    RECEIPT_INVALID = "receipt-invalid"
    #: An operator was given to check the receipt against, but the bundle has none.
    RECEIPT_MISSING = "receipt-missing"
    #: Two checkpoints are not consistent (the later one does not extend the earlier).
    CHECKPOINT_INCONSISTENT = "checkpoint-inconsistent"
    #: The log serves a smaller tree than one seen before.
    LOG_ROLLBACK = "log-rollback"
    #: The log serves a tree that does not extend (or differs from) one seen before.
    SPLIT_VIEW = "split-view"


@dataclass(frozen=True)
class Finding:
    """One thing a verification found, with a stable ``code`` and a human ``detail``.

    ``event_id`` names the event concerned (``None`` for findings about the log as a
    whole); ``context`` holds JSON-ready facts (hex strings, ints) for machines.
    """

    code: str
    severity: Severity
    detail: str
    event_id: bytes | None = None
    context: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_error(
        cls,
        error: LedgerError,
        *,
        severity: Severity = "error",
        event_id: bytes | None = None,
    ) -> Finding:
        """A finding from a ledger error (e.g. a :class:`ledger.rules.RuleViolation`)."""
        return cls(error.code, severity, error.detail, event_id, dict(error.context))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: ``code``, ``severity``, ``detail``, ``eventId``, ``context``."""
        return {
            "code": str(self.code),
            "severity": self.severity,
            "detail": self.detail,
            "eventId": None if self.event_id is None else "0x" + self.event_id.hex(),
            "context": dict(self.context),
        }


@dataclass(frozen=True)
class Verdict:
    """The findings of one verification; :attr:`ok` when none is an error."""

    findings: tuple[Finding, ...]

    def __init__(self, findings: Sequence[Finding] = ()) -> None:
        object.__setattr__(self, "findings", tuple(findings))

    @property
    def ok(self) -> bool:
        """No finding of ``error`` severity (``review`` and ``warning`` are not failures)."""
        return not self.errors

    @property
    def errors(self) -> tuple[Finding, ...]:
        """The findings of ``error`` severity."""
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def codes(self) -> frozenset[str]:
        """The distinct finding codes."""
        return frozenset(str(f.code) for f in self.findings)


# --------------------------------------------------------------------------- models

_Uint64 = Annotated[StrictInt, Field(ge=0, le=2**64 - 1)]
_ChainId = Annotated[StrictInt, Field(ge=1, le=2**256 - 1)]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointRef(_Wire):
    """The on-chain checkpoint a bundle's inclusion proof is for.

    ``transactionHash`` and ``blockNumber`` say where to find it on chain; they are for
    the reader and not checked here (the verifier is given the trusted root directly).
    """

    treeSize: _Uint64
    rootHash: Bytes32
    chainId: _ChainId
    auditLog: Address
    transactionHash: Bytes32 | None = None
    blockNumber: _Uint64 | None = None


class ReceiptBatchProof(_Wire):
    """Where a receipt sits among the receipts of its batch, which the operator signed once.

    ``root`` is the RFC 9162 root over the ``count`` receipt leaves (:func:`receipt_leaf`) of
    the log's leaves ``firstLeaf .. firstLeaf + count - 1``; ``path`` the receipt's
    inclusion proof in that tree (at ``leafIndex - firstLeaf``). The operator's signature is
    over ``ReceiptBatch(firstLeaf, count, receivedAt, anchorBy, root)``.
    """

    firstLeaf: _Uint64
    count: Annotated[StrictInt, Field(ge=1, le=2**64 - 1)]
    root: Bytes32
    path: tuple[Bytes32, ...]


class BundleReceipt(_Wire):
    """The operator's receipt for the event (EIP-712, under the AuditLog domain).

    Without ``batch`` (receipts issued before batch receipts) the signature is over
    ``Receipt(eventDigest, leafIndex, receivedAt, anchorBy)``; with it, over the batch's
    ``ReceiptBatch`` (:func:`signed_receipt_digest`). The digest and the leaf index are the
    bundle's own, so they are not repeated here.
    """

    receivedAt: _Uint64
    anchorBy: _Uint64
    signature: Signature65
    batch: ReceiptBatchProof | None = None


class ProofBundle(_Wire):
    """Everything needed to verify one event offline against a trusted checkpoint.

    The model checks formats only (hex lengths, integer ranges, known consent label);
    whether the parts agree with each other and with the trusted state is
    :func:`verify_bundle`'s job, which reports each disagreement as a finding.
    ``checkpoint=None`` means "not anchored yet" (``treeSize`` and ``inclusionPath`` are
    then meaningless, conventionally ``0`` and ``[]``).
    """

    event: SignedEvent
    eventDigest: Bytes32
    leafIndex: _Uint64
    treeSize: _Uint64
    inclusionPath: list[Bytes32]
    checkpoint: CheckpointRef | None
    receipt: BundleReceipt | None = None
    #: The consent label the operator recorded (:attr:`ConsentFinding.label`).
    consent: str

    @field_validator("consent")
    @classmethod
    def _known_consent(cls, value: str) -> str:
        try:
            ConsentFinding.parse(value)
        except (KeyError, ValueError):
            raise ValueError(f"unknown consent label {value!r}") from None
        return value

    @property
    def anchored(self) -> bool:
        """Whether the bundle carries a checkpoint (and so an inclusion proof)."""
        return self.checkpoint is not None


# --------------------------------------------------------------------------- receipts


def receipt_digest(
    domain: Domain, event_digest: bytes, leaf_index: int, received_at: int, anchor_by: int
) -> bytes:
    """EIP-712 digest of ``Receipt(eventDigest, leafIndex, receivedAt, anchorBy)``.

    ``domain`` is the AuditLog domain (the one events are signed under).
    """
    struct_hash = RECEIPT.hash_struct((event_digest, leaf_index, received_at, anchor_by))
    return digest(domain.separator, struct_hash)


def receipt_leaf(event_digest: bytes, leaf_index: int, received_at: int, anchor_by: int) -> bytes:
    """The RFC 9162 leaf hash of one receipt in its batch's tree:
    ``SHA-256(0x00 ‖ hashStruct(Receipt(eventDigest, leafIndex, receivedAt, anchorBy)))``."""
    return merkle.leaf_hash(RECEIPT.hash_struct((event_digest, leaf_index, received_at, anchor_by)))


def receipt_leaves(
    event_digests: Sequence[bytes], first_leaf: int, received_at: int, anchor_by: int
) -> list[bytes]:
    """:func:`receipt_leaf` of each receipt of one batch, in order (the ``i``-th at leaf
    ``first_leaf + i``), the words they share encoded and checked once: ingest builds a
    thousand a batch (2.6 → 1.5 µs each). A digest that is not 32 bytes is refused as
    :func:`receipt_leaf` refuses it."""
    if not event_digests:
        return []
    last = first_leaf + len(event_digests) - 1
    RECEIPT.encode_data((event_digests[-1], last, received_at, anchor_by))  # the range's end
    times = RECEIPT.encode_data((event_digests[0], first_leaf, received_at, anchor_by))[64:]
    head = RECEIPT.type_hash
    leaf_hash = merkle.leaf_hash
    leaves = []
    for leaf, event_digest in enumerate(event_digests, first_leaf):
        if type(event_digest) is not bytes or len(event_digest) != 32:
            leaves.append(receipt_leaf(event_digest, leaf, received_at, anchor_by))  # raises
            continue
        leaves.append(leaf_hash(keccak(head + event_digest + leaf.to_bytes(32, "big") + times)))
    return leaves


def receipt_batch_digest(
    domain: Domain, first_leaf: int, count: int, received_at: int, anchor_by: int, root: bytes
) -> bytes:
    """EIP-712 digest of ``ReceiptBatch(firstLeaf, count, receivedAt, anchorBy, root)``."""
    struct_hash = RECEIPT_BATCH.hash_struct((first_leaf, count, received_at, anchor_by, root))
    return digest(domain.separator, struct_hash)


def signed_receipt_digest(
    domain: Domain,
    event_digest: bytes,
    leaf_index: int,
    received_at: int,
    anchor_by: int,
    batch: ReceiptBatchProof | None,
) -> bytes:
    """The digest the operator's receipt signature must be over, from the verifier's own
    ``event_digest``: the per-event ``Receipt``'s without ``batch``; else the
    ``ReceiptBatch``'s, once the receipt's path is shown to lead from its leaf, at
    ``leaf_index - firstLeaf``, to the batch's root.

    Raises :class:`ProofError` (its detail says which) for a leaf outside the batch or a
    path that does not lead to the root. Whose signature it is: :func:`check_signature`.
    """
    if batch is None:
        return receipt_digest(domain, event_digest, leaf_index, received_at, anchor_by)
    position = leaf_index - batch.firstLeaf
    if not 0 <= position < batch.count:
        raise ProofError(
            f"leaf {leaf_index} is not in the receipt batch of leaves {batch.firstLeaf}.."
            f"{batch.firstLeaf + batch.count - 1}",
            leafIndex=leaf_index,
            firstLeaf=batch.firstLeaf,
            count=batch.count,
        )
    leaf = receipt_leaf(event_digest, leaf_index, received_at, anchor_by)
    try:
        merkle.verify_inclusion(leaf, position, batch.count, batch.path, batch.root)
    except ProofError as exc:
        raise ProofError(
            f"the receipt's path does not lead to its batch's root: {exc.detail}",
            leafIndex=leaf_index,
            firstLeaf=batch.firstLeaf,
            count=batch.count,
        ) from None
    return receipt_batch_digest(
        domain, batch.firstLeaf, batch.count, received_at, anchor_by, batch.root
    )


# --------------------------------------------------------------------------- bundles


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _check_trusted(size: int, root: bytes) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"the trusted size must be a non-negative int, got {size!r}")
    if not isinstance(root, bytes | bytearray) or len(root) != merkle.HASH_SIZE:
        raise ValueError("the trusted root must be 32 bytes")
    if size == 0 and bytes(root) != merkle.EMPTY_ROOT:
        raise ValueError("the trusted root of an empty tree is merkle.EMPTY_ROOT (SHA-256 of '')")


def signature_findings(signed: SignedEvent, event_digest: bytes) -> list[Finding]:
    """``signature-invalid`` / ``signer-mismatch`` unless the event's institution signed
    ``event_digest`` (the event's EIP-712 digest, recomputed by the caller): the findings of
    :func:`ledger.eip712.check_signature`, for the service, the wallet and the tools alike."""
    event_id = signed.event_id
    institution = signed.institution
    try:
        signer = check_signature(event_digest, signed.signature, institution)
    except SignatureError as exc:
        return [
            Finding(
                FindingCode.SIGNATURE_INVALID,
                "error",
                f"the event's signature is invalid: {exc.detail}",
                event_id,
                dict(exc.context),
            )
        ]
    if signer is not None:
        return [
            Finding(
                FindingCode.SIGNER_MISMATCH,
                "error",
                f"the event is signed by {signer}, not by its institution {institution}: it "
                "was never signed by that institution (forged or altered)",
                event_id,
                {"signer": signer, "institution": institution},
            )
        ]
    return []


def _checkpoint_findings(
    checkpoint: CheckpointRef,
    bundle: ProofBundle,
    domain: Domain,
    trusted_size: int,
    trusted_root: bytes,
    event_id: bytes,
) -> list[Finding]:
    differences: dict[str, Any] = {}
    if checkpoint.chainId != domain.chain_id:
        differences["chainId"] = {"bundle": checkpoint.chainId, "trusted": domain.chain_id}
    if checkpoint.auditLog != domain.verifying_contract:
        differences["auditLog"] = {
            "bundle": checkpoint.auditLog,
            "trusted": domain.verifying_contract,
        }
    if checkpoint.treeSize != trusted_size:
        differences["treeSize"] = {"bundle": checkpoint.treeSize, "trusted": trusted_size}
    if checkpoint.rootHash != trusted_root:
        differences["rootHash"] = {
            "bundle": _hex(checkpoint.rootHash),
            "trusted": _hex(trusted_root),
        }
    if bundle.treeSize != trusted_size:
        differences["proofTreeSize"] = {"bundle": bundle.treeSize, "trusted": trusted_size}
    if not differences:
        return []
    return [
        Finding(
            FindingCode.CHECKPOINT_MISMATCH,
            "error",
            "the bundle's checkpoint is not the trusted one (differs in "
            + ", ".join(differences)
            + ")",
            event_id,
            differences,
        )
    ]


def _inclusion_findings(
    bundle: ProofBundle,
    event_digest: bytes,
    trusted_size: int,
    trusted_root: bytes,
    event_id: bytes,
) -> list[Finding]:
    index = bundle.leafIndex
    context: dict[str, Any] = {"leafIndex": index, "treeSize": trusted_size}
    if index >= trusted_size:
        return [
            Finding(
                FindingCode.INCLUSION_INVALID,
                "error",
                f"leaf index {index} is outside the trusted tree of size {trusted_size}",
                event_id,
                context,
            )
        ]
    path = bundle.inclusionPath
    try:
        merkle.verify_inclusion(
            merkle.leaf_hash(event_digest), index, trusted_size, path, trusted_root
        )
    except ProofError as exc:
        detail = f"the event is not proved at leaf {index} of the trusted tree: {exc.detail}"
        if bundle.eventDigest != event_digest:
            # Tell "this content was never logged" from "the logged content was changed".
            try:
                merkle.verify_inclusion(
                    merkle.leaf_hash(bundle.eventDigest), index, trusted_size, path, trusted_root
                )
            except ProofError:
                pass
            else:
                detail = (
                    f"leaf {index} of the trusted tree holds the bundle's eventDigest, not "
                    "the digest of the event served: the event was changed after it was logged"
                )
                context["loggedDigest"] = _hex(bundle.eventDigest)
        return [Finding(FindingCode.INCLUSION_INVALID, "error", detail, event_id, context)]
    return []


def _pending_findings(
    bundle: ProofBundle,
    trusted_size: int,
    now: int | None,
    max_merge_delay: int | None,
    event_id: bytes,
) -> list[Finding]:
    index = bundle.leafIndex
    if index < trusted_size:
        return [
            Finding(
                FindingCode.PROOF_MISSING,
                "error",
                f"the bundle says the event is not anchored, but the trusted checkpoint of "
                f"size {trusted_size} covers its leaf {index}: its inclusion proof is missing",
                event_id,
                {"leafIndex": index, "treeSize": trusted_size},
            )
        ]
    deadlines: list[int] = []
    receipt = bundle.receipt
    if receipt is not None:
        deadlines.append(receipt.anchorBy)
        if max_merge_delay is not None:
            deadlines.append(receipt.receivedAt + max_merge_delay)
    deadline = min(deadlines) if deadlines else None
    context: dict[str, Any] = {"leafIndex": index, "anchorBy": deadline, "now": now}
    if deadline is not None and now is not None and now > deadline:
        return [
            Finding(
                FindingCode.NOT_ANCHORED_IN_TIME,
                "error",
                f"not anchored {now - deadline} s after its anchoring deadline {deadline}",
                event_id,
                context,
            )
        ]
    why = "no deadline is known" if deadline is None else f"deadline {deadline}"
    return [
        Finding(
            FindingCode.PENDING,
            "warning",
            f"not anchored yet ({why})",
            event_id,
            context,
        )
    ]


def _receipt_findings(
    bundle: ProofBundle, domain: Domain, event_digest: bytes, operator: str, event_id: bytes
) -> list[Finding]:
    receipt = bundle.receipt
    if receipt is None:
        return [
            Finding(
                FindingCode.RECEIPT_MISSING,
                "warning",
                "the bundle carries no receipt to check against the operator",
                event_id,
                {"operator": operator},
            )
        ]
    try:
        signed = signed_receipt_digest(
            domain,
            event_digest,
            bundle.leafIndex,
            receipt.receivedAt,
            receipt.anchorBy,
            receipt.batch,
        )
        signer = check_signature(signed, receipt.signature, operator)
    except (ProofError, SignatureError) as exc:
        return [
            Finding(
                FindingCode.RECEIPT_INVALID,
                "error",
                f"the receipt is invalid: {exc.detail}",
                event_id,
                {"operator": operator, **exc.context},
            )
        ]
    if signer is not None:
        return [
            Finding(
                FindingCode.RECEIPT_INVALID,
                "error",
                f"the receipt for this event at leaf {bundle.leafIndex} is not signed by "
                f"the operator {operator} (it recovers to {signer})",
                event_id,
                {"operator": operator, "signer": signer},
            )
        ]
    return []


def verify_bundle(
    bundle: ProofBundle,
    *,
    domain: Domain,
    trusted_size: int,
    trusted_root: bytes,
    now: int | None = None,
    max_merge_delay: int | None = None,
    operator: str | None = None,
) -> list[Finding]:
    """Verify one proof bundle against a trusted checkpoint; return what is wrong.

    ``domain`` is the AuditLog domain, ``(trusted_size, trusted_root)`` a checkpoint the
    caller trusts (read from the chain, never from the bundle). Checks, each failure its
    own :class:`FindingCode`:

    * the event's EIP-712 digest is the bundle's ``eventDigest`` (``digest-mismatch``);
    * its signature is well formed (``signature-invalid``) and by the event's
      institution (``signer-mismatch``). Whether that institution was registered with
      the right kind at ``occurredAt`` needs chain data: see :mod:`ledger.rules`;
    * anchored bundles: the checkpoint is the trusted one, on the domain's chain and
      AuditLog, and the proof is for its size (``checkpoint-mismatch``); the
      recomputed digest is at ``leafIndex`` in the *trusted* root
      (``inclusion-invalid``);
    * bundles not anchored: ``proof-missing`` if the trusted checkpoint already covers
      ``leafIndex`` (a bundle fetched just before an anchor landed can show this: fetch
      it again); ``not-anchored-in-time`` (error) once ``now`` is past the deadline, the
      earlier of the receipt's ``anchorBy`` and ``receivedAt + max_merge_delay``;
      ``pending`` (warning) otherwise, including when ``now`` or the deadline is unknown;
    * with ``operator``: the receipt is signed by it over this event's digest, leaf
      index and times, directly or through its batch's root (``receipt-invalid``: a
      path that does not lead to the root, a leaf outside the batch, another signer);
      ``receipt-missing`` (warning) when absent.

    The consent label is not judged here: it needs the grant's on-chain state.
    Raises ``ValueError`` for a malformed trusted state or operator address.
    """
    _check_trusted(trusted_size, trusted_root)
    trusted_root = bytes(trusted_root)
    operator_address = None
    if operator is not None:
        try:
            operator_address = to_checksum_address(operator)
        except MalformedEventError as exc:
            raise ValueError(f"operator: {exc.detail}") from None

    event_id = bundle.event.event_id
    event_digest = bundle.event.digest(domain)
    findings: list[Finding] = []
    if event_digest != bundle.eventDigest:
        findings.append(
            Finding(
                FindingCode.DIGEST_MISMATCH,
                "error",
                "the bundle's eventDigest is not the EIP-712 digest of its event",
                event_id,
                {"eventDigest": _hex(bundle.eventDigest), "computed": _hex(event_digest)},
            )
        )
    findings += signature_findings(bundle.event, event_digest)
    if bundle.checkpoint is not None:
        findings += _checkpoint_findings(
            bundle.checkpoint, bundle, domain, trusted_size, trusted_root, event_id
        )
        findings += _inclusion_findings(bundle, event_digest, trusted_size, trusted_root, event_id)
    else:
        findings += _pending_findings(bundle, trusted_size, now, max_merge_delay, event_id)
    if operator_address is not None:
        findings += _receipt_findings(bundle, domain, event_digest, operator_address, event_id)
    return findings


# --------------------------------------------------------------------------- the log


def check_checkpoint_consistency(
    old_size: int, old_root: bytes, new_size: int, new_root: bytes, proof: Sequence[bytes]
) -> Finding | None:
    """``checkpoint-inconsistent`` unless ``proof`` shows (new) extends (old), else ``None``.

    Both checkpoints must come from a trusted source (the chain): the proof
    authenticates roots, not size labels. A shrinking size is inconsistent too.
    """
    try:
        merkle.verify_consistency(old_size, new_size, old_root, new_root, proof)
    except ProofError as exc:
        return Finding(
            FindingCode.CHECKPOINT_INCONSISTENT,
            "error",
            f"checkpoint of size {new_size} does not extend the one of size {old_size}: "
            f"{exc.detail}",
            None,
            {
                "oldSize": old_size,
                "newSize": new_size,
                "oldRoot": _hex(bytes(old_root)),
                "newRoot": _hex(bytes(new_root)),
            },
        )
    return None


#: Supplies the consistency proof between two sizes (e.g. a call to the API).
ProofSource: TypeAlias = Callable[[int, int], Sequence[bytes]]


def verify_consistency_chain(
    checkpoints: Sequence[TreeState],
    proofs: Sequence[Sequence[bytes]] | ProofSource,
) -> list[Finding]:
    """Check each checkpoint against the one before it; one finding per broken link.

    ``checkpoints`` are ``(size, root)`` in the order they were committed. ``proofs``
    is either a list with one consistency proof per consecutive pair
    (``len(checkpoints) - 1`` of them) or a callable ``(old_size, new_size) -> proof``.
    """
    pairs = list(pairwise(checkpoints))
    if not callable(proofs) and len(proofs) != len(pairs):
        raise ValueError(f"{len(pairs)} consecutive pairs of checkpoints but {len(proofs)} proofs")
    findings: list[Finding] = []
    for position, ((old_size, old_root), (new_size, new_root)) in enumerate(pairs):
        proof = proofs(old_size, new_size) if callable(proofs) else proofs[position]
        finding = check_checkpoint_consistency(old_size, old_root, new_size, new_root, proof)
        if finding is not None:
            findings.append(finding)
    return findings


def check_rollback(
    seen: TreeState | None, served: TreeState, proof_from_seen: Sequence[bytes] | None
) -> Finding | None:
    """Compare the tree a log serves now with one the verifier saw (and verified) before.

    * nothing seen before: ``None`` (trust on first use);
    * a smaller tree: ``log-rollback``;
    * the same size with another root: ``split-view``;
    * a larger tree: ``split-view`` unless ``proof_from_seen`` is a valid consistency
      proof from ``seen`` to ``served`` (a missing proof is not a pass).
    """
    if seen is None:
        return None
    seen_size, seen_root = seen
    served_size, served_root = served
    context: dict[str, Any] = {
        "seenSize": seen_size,
        "seenRoot": _hex(bytes(seen_root)),
        "servedSize": served_size,
        "servedRoot": _hex(bytes(served_root)),
    }
    if served_size < seen_size:
        return Finding(
            FindingCode.LOG_ROLLBACK,
            "error",
            f"the log serves a tree of size {served_size}, smaller than the size {seen_size} "
            "seen before",
            None,
            context,
        )
    if served_size == seen_size:
        if bytes(served_root) == bytes(seen_root):
            return None
        return Finding(
            FindingCode.SPLIT_VIEW,
            "error",
            f"the log serves another root for the size {seen_size} seen before",
            None,
            context,
        )
    if proof_from_seen is None:
        return Finding(
            FindingCode.SPLIT_VIEW,
            "error",
            f"no consistency proof shows the served tree of size {served_size} extends the "
            f"one of size {seen_size} seen before",
            None,
            context,
        )
    try:
        merkle.verify_consistency(seen_size, served_size, seen_root, served_root, proof_from_seen)
    except ProofError as exc:
        return Finding(
            FindingCode.SPLIT_VIEW,
            "error",
            f"the served tree of size {served_size} does not extend the one of size "
            f"{seen_size} seen before: {exc.detail}",
            None,
            context,
        )
    return None
