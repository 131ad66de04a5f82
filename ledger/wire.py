# ruff: noqa: N815  (field names are the wire's camelCase names, on purpose)
"""The wire's answers that the wallet and the regulator's tools read, defined once.

These are the response shapes of ``docs/wire.md`` that leave the service to be verified
elsewhere: events with their proof bundles, a record's trail, a patient's accesses, the log's
head, entries and proofs, checkpoints, and the deployment. The API documents its answers with
them (``api.schemas`` uses these very models as response models), the wallet and the tools
parse what they are served with them: one definition, so the three cannot drift apart.

Binary values are 0x-hex on the wire and ``bytes`` once parsed, addresses EIP-55. The models
are documented strictly (``additionalProperties: false``: the service sends nothing else, and
the tests check every answer against them with ``extra="forbid"``) but parse leniently
(``extra="ignore"``): a client keeps working when a later service adds a field. A
:class:`~ledger.verify.ProofBundle` is strict either way: it is what gets verified.

The deployment is :class:`ledger.chain.model.Deployment`, one format for ``GET
/v1/deployment``, ``medtrail deploy``'s file, the service, the wallet and the tools. Pydantic
only: nothing here does I/O.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictInt,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from ledger.chain.model import Deployment
from ledger.events import Address, Bytes32, EventType, SignedEvent
from ledger.verify import ProofBundle

__all__ = [
    "MAX_LOOKUP_PROOF",
    "AccessesOut",
    "CheckpointOut",
    "CheckpointsOut",
    "ConsistencyOut",
    "Deployment",
    "EventOut",
    "FindingOut",
    "InclusionOut",
    "IndexProofOut",
    "ListHeadOut",
    "LogEntriesOut",
    "LogEntryOut",
    "LogHeadOut",
    "RawLogEntriesOut",
    "RawLogEntryOut",
    "TrailOut",
    "WireModel",
]

Uint64 = Annotated[StrictInt, Field(ge=0, le=2**64 - 1)]
#: The ``after`` of the following page (the key of this page's last item); null on the last.
NextLeaf = Annotated[
    Uint64 | None,
    Field(
        description="The `after` of the following page (the leaf index of this page's last "
        "event); null on the last page."
    ),
]


class WireModel(BaseModel):
    """An answer of the API: documented without extra fields, parsed ignoring them."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, json_schema_extra={"additionalProperties": False}
    )


# --------------------------------------------------------------------------- the index

#: The longest encoded lookup proof (docs/index.md §4): depth, a 256-bit bitmap, 256 siblings,
#: the terminal, another leaf's key and value hash.
MAX_LOOKUP_PROOF: Final = 2 + 32 + 256 * 32 + 1 + 64


def _proof_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):  # built in Python, not parsed from JSON
        if len(value) > MAX_LOOKUP_PROOF:
            raise PydanticCustomError("too_long", "longer than any lookup proof")
        return bytes(value)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise PydanticCustomError("hex", "must be 0x-hex")
    if len(value) > 2 + 2 * MAX_LOOKUP_PROOF:
        raise PydanticCustomError("too_long", "longer than any lookup proof")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise PydanticCustomError("hex", "must be 0x-hex (whole bytes)") from None


#: An encoded lookup proof (``ledger.index.LookupProof.to_bytes``): checked by the verifier,
#: which reports a malformed one as a finding, not refused here.
LookupProofHex = Annotated[
    bytes,
    PlainValidator(_proof_bytes),
    PlainSerializer(lambda value: "0x" + value.hex(), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^0x([0-9a-fA-F]{2})*$",
            "maxLength": 2 + 2 * MAX_LOOKUP_PROOF,
            "description": "The lookup proof, encoded as docs/index.md §4 says.",
        }
    ),
]


class ListHeadOut(WireModel):
    """A key's list head (docs/index.md §2): its number of entries and the RFC 9162 root over
    them as 8-byte big-endian integers."""

    size: Uint64
    root: Bytes32


class IndexProofOut(WireModel):
    """The verifiable index's answer for one key (a record or a patient) at one checkpoint:
    the **whole** list of the leaf indexes of its events (an empty list: the key is absent)
    and the lookup proof that it is the list the index root committed on chain at
    ``treeSize`` holds (docs/index.md §4). A client reads the index root from the chain
    itself, checks the proof and that every listed leaf was served (complete), and that the
    checkpoint is the chain's latest (not an older copy of the log). The list covers the
    key's events at leaves below ``treeSize``; later events are not anchored yet."""

    key: Bytes32 = Field(
        description="The index key: SHA-256 of a tag and the recordRef or the patient's address "
        "(docs/index.md §1)."
    )
    treeSize: Uint64 = Field(description="The size of the on-chain checkpoint the proof is at.")
    indexRoot: Bytes32 = Field(
        description="The index root that checkpoint commits (verify against the chain's)."
    )
    leafIndexes: list[Uint64] = Field(
        description="Every leaf index of the key's events below `treeSize`, increasing."
    )
    head: ListHeadOut = Field(description="The head of `leafIndexes` (recomputed by clients).")
    proof: LookupProofHex


# --------------------------------------------------------------------------- events


class FindingOut(WireModel):
    """One thing verification found (:meth:`ledger.verify.Finding.to_json`)."""

    code: str
    severity: Literal["error", "review", "warning"]
    detail: str
    eventId: Bytes32 | None
    context: dict[str, Any]


class EventOut(WireModel):
    """One event, its status, and its proof bundle (``GET /v1/events/{id}``, the items of a
    trail and of a patient's accesses)."""

    eventId: Bytes32
    type: EventType
    status: Literal["pending", "anchored", "confirmed"]
    consent: str
    receivedAt: Uint64
    recordRef: Bytes32 | None = None
    bundle: ProofBundle
    integrity: list[FindingOut] = Field(
        default_factory=list,
        description="The service's own check of this bundle against the checkpoint it names: "
        "empty, unless the store was altered behind the service's back (then the errors found; "
        "the bundle must not be trusted).",
    )
    findings: list[FindingOut] | None = Field(
        default=None, description="Only with `verify=true` on a trail."
    )


_INDEX_DOC = (
    "The index proof of the whole list at the checkpoint the bundles are proved against, on "
    "the first page (or any page asked with `index=true`): a client checks completeness across "
    "all the pages with it; null on the other pages, when no checkpoint is anchored yet, or "
    "when the caller may not see the whole list."
)


class TrailOut(WireModel):
    """One page of the events about a record the caller may see, in log order; all bundles of
    one page are proved against one checkpoint (an exported trail: every page, joined)."""

    recordRef: Bytes32
    events: list[EventOut]
    next: NextLeaf = None
    index: IndexProofOut | None = Field(default=None, description=_INDEX_DOC)
    findings: list[FindingOut] | None = Field(
        default=None,
        description="Only with `verify=true`: findings about the page as a whole (events out "
        "of log order, served twice, or of another record; the trail incomplete).",
    )


class AccessesOut(WireModel):
    """One page of the accesses to a patient's records, in log order."""

    patient: Address
    accesses: list[EventOut]
    next: NextLeaf = None
    index: IndexProofOut | None = Field(
        default=None,
        description="The index proof of the patient's whole history (every event about them, "
        "not only accesses: `GET /v1/events?patient=` serves it) at the checkpoint the bundles "
        "are proved against, on the first page (or any page asked with `index=true`); null on "
        "the other pages, and when none is anchored yet.",
    )


# --------------------------------------------------------------------------- the log


class LogHeadOut(WireModel):
    """``GET /v1/log/head``: the integrated tree (may be ahead of the chain)."""

    treeSize: Uint64
    rootHash: Bytes32


class _LogEntry(WireModel):
    leafIndex: Uint64
    eventDigest: Bytes32
    receivedAt: Uint64
    consent: str


class LogEntryOut(_LogEntry):
    """One entry of ``GET /v1/log/entries``."""

    event: SignedEvent


class RawLogEntryOut(_LogEntry):
    """A :class:`LogEntryOut` whose event may be malformed: the whole-log audit reports a
    malformed one as a finding rather than refuse the page. The event is validated in the same
    pass as the entry (once: issue 15) and kept as the JSON object it was only when it is not
    a valid :class:`SignedEvent` (:meth:`signed_event` then says why)."""

    event: Annotated[SignedEvent | dict[str, Any], Field(union_mode="left_to_right")]

    def signed_event(self) -> SignedEvent:
        """The entry's event, validated (``ValidationError`` when malformed)."""
        if isinstance(self.event, SignedEvent):
            return self.event
        return SignedEvent.model_validate(self.event)

    def raw_event(self) -> dict[str, Any]:
        """The event as a JSON object (a valid one in its canonical wire form)."""
        if isinstance(self.event, SignedEvent):
            return self.event.model_dump(mode="json")
        return self.event


class _LogEntries(WireModel):
    start: Uint64
    treeSize: Uint64
    next: Uint64 | None = Field(description="The next `start` to ask for; null at the end.")


class LogEntriesOut(_LogEntries):
    """``GET /v1/log/entries?start=N&limit=M``."""

    entries: list[LogEntryOut]


class RawLogEntriesOut(_LogEntries):
    """A page of entries as the audit reads it (each entry checked on its own)."""

    entries: list[dict[str, Any]]


class ConsistencyOut(WireModel):
    """``GET /v1/log/consistency?from=M&to=N``."""

    model_config = ConfigDict(populate_by_name=True)

    from_: Uint64 = Field(alias="from")
    to: Uint64
    proof: list[Bytes32]


class InclusionOut(WireModel):
    """``GET /v1/log/inclusion?leafIndex=I&treeSize=N``."""

    leafIndex: Uint64
    treeSize: Uint64
    proof: list[Bytes32]


class CheckpointOut(WireModel):
    """A checkpoint the operator made, and how far it got to the chain."""

    treeSize: Uint64
    rootHash: Bytes32
    indexRoot: Bytes32 | None = Field(
        default=None,
        description="The root of the verifiable index at `treeSize`, committed with `rootHash` "
        "(docs/index.md); null for a checkpoint made before the index existed.",
    )
    status: Literal["pending", "sent", "anchored", "confirmed", "superseded"]
    previousSize: Uint64
    transactionHash: Bytes32 | None
    blockNumber: Uint64 | None

    @property
    def mined(self) -> bool:
        """Whether the operator says it is on chain (``anchored`` or ``confirmed``)."""
        return self.status in ("anchored", "confirmed")


class CheckpointsOut(WireModel):
    """One page of the checkpoints, by tree size."""

    checkpoints: list[CheckpointOut]
    next: Uint64 | None = Field(
        description="The `after` of the following page (the tree size of this page's last "
        "checkpoint); null on the last page."
    )
