# ruff: noqa: N815  (field names are the wire's camelCase names, on purpose)
"""Request and response models of the HTTP API (docs/wire.md is the contract).

Requests forbid unknown fields. Responses are built from the ledger's typed values and
described here for OpenAPI; binary values are ``0x`` hex, addresses EIP-55, times unix seconds.
The answers the wallet and the regulator's tools read (events and bundles, trails, accesses,
the log, checkpoints, the deployment) are defined once, in :mod:`ledger.wire`, and imported
here; the others are the API's own.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictInt,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ledger.chain.model import Deployment
from ledger.events import Address, Bytes32, PurposeField, SignedEvent
from ledger.text import unsafe_character

# The answers the wallet and the tools read: defined once, in ledger.wire (re-exported).
from ledger.wire import AccessesOut as AccessesOut
from ledger.wire import CheckpointOut as CheckpointOut
from ledger.wire import CheckpointsOut as CheckpointsOut
from ledger.wire import ConsistencyOut as ConsistencyOut
from ledger.wire import EventOut as EventOut
from ledger.wire import FindingOut as FindingOut
from ledger.wire import InclusionOut as InclusionOut
from ledger.wire import LogEntriesOut as LogEntriesOut
from ledger.wire import LogEntryOut as LogEntryOut
from ledger.wire import LogHeadOut as LogHeadOut
from ledger.wire import TrailOut as TrailOut

# --------------------------------------------------------------------------- field types

MAX_GRANT_SIGNATURE_BYTES = 2048


def _hex_data(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if not isinstance(value, str) or value[:2] not in ("0x", "0X"):
        raise PydanticCustomError("hex", "must be a 0x-prefixed hex string")
    digits = value[2:]
    if len(digits) % 2 or not digits or len(digits) > 2 * MAX_GRANT_SIGNATURE_BYTES:
        raise PydanticCustomError(
            "hex", "must be 1..{limit} bytes of hex", {"limit": MAX_GRANT_SIGNATURE_BYTES}
        )
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise PydanticCustomError("hex", "must contain only hex digits after 0x") from None


#: A variable-length signature (65 bytes for a key; any length for an ERC-1271 wallet).
HexSignature = Annotated[
    bytes,
    PlainValidator(_hex_data),
    PlainSerializer(lambda v: "0x" + v.hex(), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^0x([0-9a-fA-F]{2})+$",
            "maxLength": 2 + 2 * MAX_GRANT_SIGNATURE_BYTES,
        }
    ),
]


def _printable(value: str) -> str:
    character = unsafe_character(value)
    if character is not None:
        raise PydanticCustomError(
            "text",
            "must be one line of printable text (it holds {character})",
            {"character": character},
        )
    return value


#: Free text (names, labels): no control characters, line separators, bidirectional
#: overrides or surrogates (see :mod:`ledger.text`).
PrintableText = Annotated[str, AfterValidator(_printable)]

Uint64 = Annotated[StrictInt, Field(ge=0, le=2**64 - 1)]
Uint256 = Annotated[StrictInt, Field(ge=0, le=2**256 - 1)]
Hex32 = Annotated[str, Field(pattern="^0x[0-9a-f]{64}$")]
HexSig65 = Annotated[str, Field(pattern="^0x[0-9a-f]{130}$")]
AddressOut = Annotated[str, Field(pattern="^0x[0-9a-fA-F]{40}$")]


class _In(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Out(BaseModel):
    """A response body (documented strictly: no undocumented fields)."""

    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- events


class EventBatch(_In):
    """Signed events to append to the log, in order (all-or-nothing)."""

    events: list[SignedEvent] = Field(min_length=1)


class ReceiptBatchOut(_Out):
    """The receipt's place in its batch: the operator signed the batch once (EIP-712
    ``ReceiptBatch(firstLeaf, count, receivedAt, anchorBy, root)``, AuditLog domain)."""

    firstLeaf: Uint64 = Field(description="The batch's first leaf.")
    count: Uint64 = Field(description="How many leaves the batch holds.")
    root: Hex32 = Field(description="RFC 9162 root over the batch's receipt leaves.")
    path: list[Hex32] = Field(
        description="This receipt's inclusion proof, at leafIndex - firstLeaf, in that tree."
    )


class ReceiptOut(_Out):
    """The operator's signed receipt for one event (EIP-712, AuditLog domain): over its
    batch's ``ReceiptBatch`` (with ``batch``), or over this ``Receipt`` alone (receipts issued
    before batch receipts). See docs/wire.md "Receipts"."""

    eventId: Hex32
    eventDigest: Hex32
    leafIndex: Uint64
    receivedAt: Uint64
    anchorBy: Uint64 = Field(description="The operator promises an on-chain anchor by then.")
    signature: HexSig65
    consent: str
    duplicate: bool = Field(description="The event was stored before: its original receipt.")
    batch: ReceiptBatchOut | None = None


class ReceiptsOut(_Out):
    receipts: list[ReceiptOut]


# --------------------------------------------------------------------------- log


#: ``GET /v1/deployment``: the deployment file's format (:class:`ledger.chain.model.Deployment`).
DeploymentOut = Deployment


class TypedDataOut(_Out):
    """EIP-712 domains and types of events, grants, revocations and receipts."""

    domains: dict[str, dict[str, Any]]
    domainSeparators: dict[str, Hex32]
    types: dict[str, list[dict[str, str]]]
    primaryTypes: dict[str, dict[str, Any]]
    enums: dict[str, dict[str, int]]
    consentV2: dict[str, Any] | None = Field(
        default=None,
        description="Consent version 2's domain and types (`Grant`, `RevocationKey`); absent "
        "when the deployment has no ConsentRegistryV2.",
    )


# --------------------------------------------------------------------------- consent


class GrantIn(_In):
    """A grant the patient signed (EIP-712 ``Grant``, ConsentRegistry domain) with their
    current consent nonce; the service relays it and pays the gas."""

    patient: Address
    grantee: Address
    recordRef: Bytes32 = Field(description="0x00…00 = every record of the patient.")
    purposes: Annotated[StrictInt, Field(ge=1, le=2**256 - 1)] = Field(
        description="Bitmask: bit p covers purpose p (see typed-data enums)."
    )
    notBefore: Uint64
    expiresAt: Uint64
    deadline: Uint256
    signature: HexSignature


class RevokeIn(_In):
    """A revocation the grant's patient signed (EIP-712 ``Revoke``) with their current nonce."""

    deadline: Uint256
    signature: HexSignature


class GrantOut(_Out):
    """A consent grant as the ConsentRegistry holds it now."""

    grantId: Annotated[StrictInt, Field(ge=1)]
    patient: AddressOut
    grantee: AddressOut
    recordRef: Hex32
    allRecords: bool
    purposes: Uint256
    purposeNames: list[str]
    notBefore: Uint64
    expiresAt: Uint64
    createdAt: Uint64
    revokedAt: Uint64
    revoked: bool


class GrantV2In(_In):
    """A consent-version-2 grant the patient signed (EIP-712 ``Grant``, domain ``consentV2`` of
    ``GET /v1/typed-data``): ``SignedGrant.as_json()``. The service keeps it and commits its
    commitment on chain; nothing of it but that hash reaches the chain."""

    patient: Address
    grantee: Address
    recordRef: Bytes32 = Field(description="0x00…00 = every record of the patient.")
    purposes: Annotated[StrictInt, Field(ge=1, le=2**256 - 1)] = Field(
        description="Bitmask: bit p covers purpose p (see typed-data enums)."
    )
    notBefore: Uint64
    expiresAt: Uint64
    deadline: Uint256 = Field(description="The commitment must be on chain by then.")
    salt: Bytes32 = Field(description="32 random bytes: make the commitment unguessable.")
    revocationHash: Bytes32 = Field(description="keccak256 of the grant's revocation secret.")
    signature: HexSignature


class RevokeV2In(_In):
    """The revocation secret of a version-2 grant (``medtrail wallet revocation-secret``)."""

    secret: Bytes32


class GrantV2Out(_Out):
    """A consent-version-2 grant the patient signed, with what the chain says of it now."""

    version: Literal[2]
    grantId: Annotated[StrictInt, Field(ge=1)] = Field(
        description="The commitment as a number (above 2^53: JavaScript reads `commitment`)."
    )
    commitment: Hex32
    patient: AddressOut
    grantee: AddressOut
    recordRef: Hex32
    allRecords: bool
    purposes: Uint256
    purposeNames: list[str]
    notBefore: Uint64
    expiresAt: Uint64
    deadline: Uint256
    salt: Hex32
    revocationHash: Hex32
    signature: Annotated[str, Field(pattern="^0x([0-9a-f]{2})+$")]
    committedAt: Uint64 | None = Field(description="Block time of the commitment; null: not yet.")
    revokedAt: Uint64 | None = Field(description="Block time of the revocation; null: none.")
    revoked: bool
    status: Literal["pending", "active", "revoked", "expired"]


class GrantsOut(_Out):
    """One page of a patient's grants the caller may see, by id: version 1's (small
    counters), then version 2's (commitments)."""

    patient: AddressOut
    grants: list[GrantOut | GrantV2Out]
    next: Annotated[StrictInt, Field(ge=1)] | None = Field(
        description="The `after` of the following page (the id of this page's last grant); "
        "null on the last page."
    )


class ConsentNonceOut(_Out):
    patient: AddressOut
    nonce: Uint256


class AccessDecisionIn(_In):
    """May ``grantee`` be given this record of ``patient`` for ``purpose`` at ``at``?"""

    grantee: Address
    patient: Address
    recordRef: Bytes32
    purpose: PurposeField
    at: Uint64 | None = Field(default=None, description="Unix time; default: now.")


class AccessDecisionOut(_Out):
    permit: bool
    grantId: Annotated[StrictInt, Field(ge=1)] | None = Field(
        description="The grant relied on (permit)."
    )
    reason: str = Field(description="`covered`, `no-grant`, or why the best grant fails.")
    at: Uint64


# --------------------------------------------------------------------------- admin

InstitutionKindName = Literal["hospital", "pharmacy", "insurer"]


class InstitutionIn(_In):
    """An institution to register on chain (its signing address, kind and name)."""

    address: Address
    kind: InstitutionKindName
    name: PrintableText = Field(
        min_length=1, max_length=64, description="1..64 UTF-8 bytes of printable text."
    )

    @field_validator("name")
    @classmethod
    def _name_bytes(cls, value: str) -> str:
        if len(value.encode("utf-8")) > 64:
            raise ValueError("the name must be at most 64 bytes in UTF-8")
        return value


class InstitutionOut(_Out):
    address: AddressOut
    kind: Literal["hospital", "pharmacy", "insurer"]
    name: str
    active: bool
    registeredAt: Uint64
    transactionHash: Hex32 | None = Field(default=None, description="Of the change just made.")


class ApiKeyIn(_In):
    """An API key to issue: a regulator's, or an institution's bound to its address."""

    role: Literal["institution", "regulator"]
    institution: Address | None = Field(
        default=None, description="Required for (and only for) an institution key."
    )
    label: PrintableText = Field(
        min_length=1, max_length=200, description="Printable text, on one line."
    )

    @model_validator(mode="after")
    def _institution_iff_role(self) -> ApiKeyIn:
        if (self.role == "institution") != (self.institution is not None):
            raise ValueError("`institution` is required for an institution key, and only then")
        return self


class ApiKeyOut(_Out):
    keyId: str
    role: Literal["institution", "regulator"]
    institution: AddressOut | None
    label: str
    createdAt: Uint64
    revokedAt: Uint64 | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The bearer token. Shown once: it is stored hashed.")


class ApiKeysOut(_Out):
    """One page of the API keys, oldest first."""

    keys: list[ApiKeyOut]
    next: Annotated[str, Field(pattern="^[0-9a-f]{16}$")] | None = Field(
        description="The `after` of the following page (the `keyId` of this page's last key); "
        "null on the last page."
    )


# --------------------------------------------------------------------------- auth


class NonceOut(_Out):
    """A single-use nonce for a Sign-In with Ethereum message to this service."""

    nonce: str
    expiresAt: Uint64
    domain: str = Field(description="The `domain` the message must name.")
    chainId: StrictInt = Field(description="The `Chain ID` the message must name.")


class SiweIn(_In):
    """An EIP-4361 message and its EIP-191 (``personal_sign``) signature."""

    message: str = Field(min_length=1, max_length=16_384)
    signature: Annotated[str, Field(pattern="^0x[0-9a-fA-F]{130}$")]


class SessionOut(_Out):
    token: str = Field(description="Send as `Authorization: Bearer <token>`.")
    tokenType: Literal["Bearer"]
    address: AddressOut
    expiresAt: Uint64


class WhoAmIOut(_Out):
    role: Literal["regulator", "institution", "patient"]
    credentialId: str
    address: AddressOut | None
    expiresAt: Uint64 | None


# --------------------------------------------------------------------------- system


class HealthOut(_Out):
    status: Literal["ok"]


class ReadyOut(_Out):
    status: Literal["ready"]
    checks: dict[str, str]
    blockNumber: Uint64
