# ruff: noqa: N815  (field names are the EIP-712 struct's camelCase names, on purpose)
"""The typed events, their EIP-712 struct types, and the typed-data definitions.

The wire form of an event is exactly its EIP-712 ``message``: camelCase field names as in
the struct, ``bytes32`` as ``0x`` + 64 hex digits, addresses as EIP-55 checksummed hex,
integers (enums included) as JSON integers. So a client signs the very JSON it sends::

    {"type": "RecordAccess", "event": {...}, "signature": "0x<65 bytes>"}

Inside Python, ``bytes32`` fields are ``bytes`` (``model_dump()`` gives bytes,
``model_dump(mode="json")`` gives lowercase hex) and addresses are checksummed strings.
Integers are strict: JSON integers only, no strings, floats or booleans.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from functools import cache, lru_cache
from types import MappingProxyType
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Final, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictInt,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ledger.codes import REVERTS
from ledger.eip712 import (
    DOMAIN_FIELDS,
    Domain,
    StructType,
    digest,
    parse_address,
    recover,
    sign_digest,
    to_checksum_address,
    typed_data_message,
)
from ledger.errors import MalformedEventError

__all__ = [
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "EVENT_MODELS",
    "EVENT_STRUCTS",
    "GRANT",
    "INCREASE_NONCE",
    "INSURANCE_CLAIM",
    "INSURANCE_PAYMENT",
    "PRESCRIPTION_DISPENSED",
    "PRESCRIPTION_ISSUED",
    "RECEIPT",
    "RECEIPT_BATCH",
    "RECORD_ACCESS",
    "REVOKE",
    "SIGNER_KINDS",
    "Action",
    "Event",
    "EventBase",
    "EventType",
    "GrantRefusal",
    "InstitutionKind",
    "InsuranceClaim",
    "InsurancePayment",
    "PrescriptionDispensed",
    "PrescriptionIssued",
    "Purpose",
    "RecordAccess",
    "SignedEvent",
    "audit_log_domain",
    "built_model",
    "consent_domain",
    "event_typed_data",
    "grant_digest",
    "grant_refusal",
    "grant_typed_data",
    "plain_hex",
    "purposes_from_mask",
    "purposes_mask",
    "revoke_digest",
    "revoke_typed_data",
    "sign_event",
    "signed_event_from_json",
    "typed_data_definitions",
]

DOMAIN_NAME: Final = "medtrail"
DOMAIN_VERSION: Final = "1"

_M = TypeVar("_M", bound=BaseModel)


# --------------------------------------------------------------------------- enums


class EventType(StrEnum):
    """The five event types; the value is the EIP-712 primary type name."""

    RECORD_ACCESS = "RecordAccess"
    PRESCRIPTION_ISSUED = "PrescriptionIssued"
    PRESCRIPTION_DISPENSED = "PrescriptionDispensed"
    INSURANCE_CLAIM = "InsuranceClaim"
    INSURANCE_PAYMENT = "InsurancePayment"


class Action(IntEnum):
    """What a RecordAccess did to the record (``uint8 action``)."""

    CREATE = 0
    READ = 1
    WRITE = 2
    EXPORT = 3
    PRINT = 4
    SHARE = 5


class Purpose(IntEnum):
    """Why (``uint8 purpose``); a grant's ``purposes`` is a bitmask of ``1 << purpose``."""

    TREATMENT = 0
    PAYMENT = 1
    OPERATIONS = 2
    RESEARCH = 3
    PUBLIC_HEALTH = 4
    LEGAL = 5


class InstitutionKind(IntEnum):
    """An institution's kind, as the InstitutionRegistry contract stores it."""

    NONE = 0
    HOSPITAL = 1
    PHARMACY = 2
    INSURER = 3


_ALL_PURPOSES_MASK: Final = sum(1 << p for p in Purpose)


def purposes_mask(purposes: Iterable[Purpose | int]) -> int:
    """The bitmask of a set of purposes (``1 << purpose`` each); duplicates are harmless."""
    mask = 0
    for purpose in purposes:
        if isinstance(purpose, bool) or not isinstance(purpose, int):
            raise MalformedEventError(f"a purpose must be an int, got {type(purpose).__name__}")
        try:
            mask |= 1 << Purpose(purpose)
        except ValueError:
            raise MalformedEventError(f"unknown purpose {purpose}", purpose=purpose) from None
    return mask


def purposes_from_mask(mask: int) -> list[Purpose]:
    """The purposes of a bitmask, in ascending order; unknown bits are refused."""
    if isinstance(mask, bool) or not isinstance(mask, int):
        raise MalformedEventError(f"a purposes mask must be an int, got {type(mask).__name__}")
    if mask < 0:
        raise MalformedEventError("a purposes mask must not be negative", mask=mask)
    if mask & ~_ALL_PURPOSES_MASK:
        raise MalformedEventError(
            f"purposes mask {mask:#x} has unknown bits {mask & ~_ALL_PURPOSES_MASK:#x}",
            mask=mask,
        )
    return [p for p in Purpose if mask & (1 << p)]


# --------------------------------------------------------------------------- struct types


def _struct(type_string: str) -> StructType:
    name, _, body = type_string.partition("(")
    fields = [tuple(reversed(f.split(" "))) for f in body.rstrip(")").split(",")]
    struct = StructType(name, [(f, t) for f, t in fields])
    assert struct.type_string == type_string, type_string
    return struct


RECORD_ACCESS: Final = _struct(
    "RecordAccess(bytes32 eventId,bytes32 recordRef,address custodian,address patient,"
    "address institution,bytes32 actor,uint8 action,uint8 purpose,uint256 grantId,"
    "bytes32 reasonHash,uint64 occurredAt)"
)
PRESCRIPTION_ISSUED: Final = _struct(
    "PrescriptionIssued(bytes32 eventId,bytes32 recordRef,address patient,address institution,"
    "bytes32 prescriber,bytes32 contentHash,uint16 fills,uint64 validUntil,uint64 occurredAt)"
)
PRESCRIPTION_DISPENSED: Final = _struct(
    "PrescriptionDispensed(bytes32 eventId,bytes32 prescriptionId,address patient,"
    "address institution,bytes32 pharmacist,uint16 fillNumber,bytes32 contentHash,"
    "uint64 occurredAt)"
)
INSURANCE_CLAIM: Final = _struct(
    "InsuranceClaim(bytes32 eventId,bytes32 serviceRef,address patient,address institution,"
    "address insurer,uint256 amount,bytes32 contentHash,uint64 occurredAt)"
)
INSURANCE_PAYMENT: Final = _struct(
    "InsurancePayment(bytes32 eventId,bytes32 claimId,address patient,address institution,"
    "address payee,uint256 amount,bytes32 contentHash,uint64 occurredAt)"
)
#: Consent grant (domain: ConsentRegistry). ``recordRef`` 0 = all the patient's records.
GRANT: Final = _struct(
    "Grant(address patient,address grantee,bytes32 recordRef,uint256 purposes,"
    "uint64 notBefore,uint64 expiresAt,uint256 nonce,uint256 deadline)"
)
#: Consent revocation (domain: ConsentRegistry).
REVOKE: Final = _struct("Revoke(address patient,uint256 grantId,uint256 nonce,uint256 deadline)")
INCREASE_NONCE: Final = _struct(
    "IncreaseNonce(address patient,uint256 newNonce,uint256 nonce,uint256 deadline)"
)
#: The log operator's receipt for an ingested event (domain: AuditLog).
RECEIPT: Final = _struct(
    "Receipt(bytes32 eventDigest,uint64 leafIndex,uint64 receivedAt,uint64 anchorBy)"
)
#: The log operator's one signature over the receipts of an ingested batch (domain:
#: AuditLog): ``root`` is the RFC 9162 root over the ``count`` leaves
#: ``hashStruct(Receipt(...))`` of leaves ``firstLeaf .. firstLeaf + count - 1``
#: (:func:`ledger.verify.check_receipt`).
RECEIPT_BATCH: Final = _struct(
    "ReceiptBatch(uint64 firstLeaf,uint64 count,uint64 receivedAt,uint64 anchorBy,bytes32 root)"
)

EVENT_STRUCTS: Final[Mapping[EventType, StructType]] = MappingProxyType(
    {
        EventType.RECORD_ACCESS: RECORD_ACCESS,
        EventType.PRESCRIPTION_ISSUED: PRESCRIPTION_ISSUED,
        EventType.PRESCRIPTION_DISPENSED: PRESCRIPTION_DISPENSED,
        EventType.INSURANCE_CLAIM: INSURANCE_CLAIM,
        EventType.INSURANCE_PAYMENT: INSURANCE_PAYMENT,
    }
)

#: Which kinds of institution may sign which event. A record access is signed by whoever
#: accessed the record: the custodian hospital, or a pharmacy or insurer under the patient's
#: grant (DESIGN §5 lists hospitals; grants to other kinds would be pointless otherwise).
SIGNER_KINDS: Final[Mapping[EventType, frozenset[InstitutionKind]]] = MappingProxyType(
    {
        EventType.RECORD_ACCESS: frozenset(
            {InstitutionKind.HOSPITAL, InstitutionKind.PHARMACY, InstitutionKind.INSURER}
        ),
        EventType.PRESCRIPTION_ISSUED: frozenset({InstitutionKind.HOSPITAL}),
        EventType.PRESCRIPTION_DISPENSED: frozenset({InstitutionKind.PHARMACY}),
        EventType.INSURANCE_CLAIM: frozenset({InstitutionKind.HOSPITAL, InstitutionKind.PHARMACY}),
        EventType.INSURANCE_PAYMENT: frozenset({InstitutionKind.INSURER}),
    }
)


def audit_log_domain(chain_id: int, audit_log: str) -> Domain:
    """The domain of events and receipts: verifyingContract = the AuditLog contract."""
    return Domain(DOMAIN_NAME, DOMAIN_VERSION, chain_id, audit_log)


def consent_domain(chain_id: int, consent_registry: str) -> Domain:
    """The domain of grants and revocations: verifyingContract = the ConsentRegistry."""
    return Domain(DOMAIN_NAME, DOMAIN_VERSION, chain_id, consent_registry)


# --------------------------------------------------------------------------- field types

_HEX = frozenset("0123456789abcdefABCDEF")
_ZERO_ADDRESS = bytes(20)


def _hex_bytes(value: Any, size: int, what: str) -> bytes:
    if type(value) is str and len(value) == 2 + 2 * size and value[:2] in ("0x", "0X"):
        try:  # fast path; fromhex skips whitespace, so the length check below matters
            raw = bytes.fromhex(value[2:])
        except ValueError:
            pass
        else:
            if len(raw) == size:
                return raw
    if isinstance(value, bytes | bytearray):
        if len(value) != size:
            raise PydanticCustomError(
                what,
                "{what} must be {size} bytes, got {got}",
                {"what": what, "size": size, "got": len(value)},
            )
        return bytes(value)
    if not isinstance(value, str):
        raise PydanticCustomError(
            what, "{what} must be a 0x-prefixed hex string", {"what": what, "size": size}
        )
    if value[:2] not in ("0x", "0X"):
        raise PydanticCustomError(what, "{what} must start with 0x", {"what": what, "size": size})
    digits = value[2:]
    if not _HEX.issuperset(digits):
        raise PydanticCustomError(
            what, "{what} must contain only hex digits after 0x", {"what": what, "size": size}
        )
    if len(digits) != 2 * size:
        raise PydanticCustomError(
            what,
            "{what} must be {size} bytes (0x + {digits} hex digits), got {got} hex digits",
            {"what": what, "size": size, "digits": 2 * size, "got": len(digits)},
        )
    return bytes.fromhex(digits)


def _bytes32(value: Any) -> bytes:
    return _hex_bytes(value, 32, "bytes32")


def _nonzero_bytes32(value: Any) -> bytes:
    raw = _hex_bytes(value, 32, "bytes32")
    if raw == bytes(32):
        raise PydanticCustomError("bytes32_zero", "must not be zero")
    return raw


def _signature(value: Any) -> bytes:
    return _hex_bytes(value, 65, "signature")


def _address(value: Any) -> str:
    if type(value) is str:
        return _address_text(value)  # cached: institutions and patients recur
    return _checked_address(value)


@lru_cache(maxsize=65536)
def _address_text(value: str) -> str:
    """:func:`_address` of a string (raised errors are not cached)."""
    return _checked_address(value)


def _checked_address(value: Any) -> str:
    try:
        raw = parse_address(value, "address")
    except MalformedEventError as exc:
        raise PydanticCustomError("address", exc.detail.removeprefix("address: ")) from None
    if raw == _ZERO_ADDRESS:
        raise PydanticCustomError("address_zero", "must not be the zero address")
    return to_checksum_address(raw)


def _hex_out(value: bytes) -> str:
    return "0x" + value.hex()


def _enum_int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError(
            "enum_int", "must be an integer, got {kind}", {"kind": type(value).__name__}
        )
    return value


_HEX32_SCHEMA: Final = {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}

Bytes32 = Annotated[
    bytes,
    PlainValidator(_bytes32),
    PlainSerializer(_hex_out, return_type=str, when_used="json"),
    WithJsonSchema(_HEX32_SCHEMA),
]
NonZeroBytes32 = Annotated[
    bytes,
    PlainValidator(_nonzero_bytes32),
    PlainSerializer(_hex_out, return_type=str, when_used="json"),
    WithJsonSchema({**_HEX32_SCHEMA, "description": "32 bytes, not all zero"}),
]
Signature65 = Annotated[
    bytes,
    PlainValidator(_signature),
    PlainSerializer(_hex_out, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": "^0x[0-9a-fA-F]{130}$"}),
]
Address = Annotated[
    str,
    PlainValidator(_address),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^0x[0-9a-fA-F]{40}$",
            "description": "EIP-55 address (all-lower/upper accepted), not zero",
        }
    ),
]
Uint16 = Annotated[StrictInt, Field(ge=0, le=2**16 - 1)]
PositiveUint16 = Annotated[StrictInt, Field(ge=1, le=2**16 - 1)]
PositiveUint64 = Annotated[StrictInt, Field(ge=1, le=2**64 - 1)]
Uint256 = Annotated[StrictInt, Field(ge=0, le=2**256 - 1)]
PositiveUint256 = Annotated[StrictInt, Field(ge=1, le=2**256 - 1)]
ActionField = Annotated[Action, BeforeValidator(_enum_int)]
PurposeField = Annotated[Purpose, BeforeValidator(_enum_int)]


# --------------------------------------------------------------------------- event models


class EventBase(BaseModel):
    """Behaviour shared by the five event models (their fields are the struct's, in order)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[EventType]
    struct: ClassVar[StructType]

    if TYPE_CHECKING:  # every event has these (each subclass declares them in struct order)
        eventId: bytes
        patient: str
        institution: str
        occurredAt: int

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        struct = EVENT_STRUCTS[cls.event_type]
        names = tuple(cls.model_fields)
        if names != struct.field_names:  # pragma: no cover - a programming error
            raise TypeError(f"{cls.__name__} fields {names} != struct {struct.field_names}")
        cls.struct = struct

    def struct_values(self) -> tuple[Any, ...]:
        """The field values in struct order, ready for :meth:`StructType.hash_struct`."""
        return tuple(map(self.__dict__.__getitem__, self.struct.field_names))

    def struct_hash(self) -> bytes:
        """``hashStruct`` of the event."""
        return self.struct.hash_struct(self.struct_values())

    def digest(self, domain: Domain) -> bytes:
        """The EIP-712 digest (the log leaf) of the event under ``domain``."""
        return digest(domain.separator, self.struct_hash())

    def typed_data(self, domain: Domain) -> dict[str, Any]:
        """A full typed-data document of the event (for eth-account, MetaMask)."""
        return typed_data_message(domain, self.struct, self.struct_values())


class RecordAccess(EventBase):
    """Someone at ``institution`` touched a record held by ``custodian`` (signed: hospital)."""

    event_type: ClassVar[EventType] = EventType.RECORD_ACCESS

    eventId: NonZeroBytes32
    recordRef: Bytes32
    custodian: Address
    patient: Address
    institution: Address
    actor: Bytes32
    action: ActionField
    purpose: PurposeField
    #: 0 = no grant (the custodian's own staff, or a break-glass access).
    grantId: Uint256
    #: 0 = no reason given (required for break-glass; checked by the rules, not here).
    reasonHash: Bytes32
    occurredAt: PositiveUint64


class PrescriptionIssued(EventBase):
    """A prescription was written (signed: hospital)."""

    event_type: ClassVar[EventType] = EventType.PRESCRIPTION_ISSUED

    eventId: NonZeroBytes32
    recordRef: Bytes32
    patient: Address
    institution: Address
    prescriber: Bytes32
    contentHash: Bytes32
    fills: PositiveUint16
    validUntil: PositiveUint64
    occurredAt: PositiveUint64


class PrescriptionDispensed(EventBase):
    """A prescription was filled (signed: pharmacy); ``prescriptionId`` = its eventId."""

    event_type: ClassVar[EventType] = EventType.PRESCRIPTION_DISPENSED

    eventId: NonZeroBytes32
    prescriptionId: Bytes32
    patient: Address
    institution: Address
    pharmacist: Bytes32
    fillNumber: PositiveUint16
    contentHash: Bytes32
    occurredAt: PositiveUint64


class InsuranceClaim(EventBase):
    """A claim to ``insurer`` (signed: hospital or pharmacy); ``amount`` in minor units."""

    event_type: ClassVar[EventType] = EventType.INSURANCE_CLAIM

    eventId: NonZeroBytes32
    serviceRef: Bytes32
    patient: Address
    institution: Address
    insurer: Address
    amount: PositiveUint256
    contentHash: Bytes32
    occurredAt: PositiveUint64


class InsurancePayment(EventBase):
    """A claim was paid to ``payee`` (signed: insurer); ``claimId`` = the claim's eventId."""

    event_type: ClassVar[EventType] = EventType.INSURANCE_PAYMENT

    eventId: NonZeroBytes32
    claimId: Bytes32
    patient: Address
    institution: Address
    payee: Address
    amount: PositiveUint256
    contentHash: Bytes32
    occurredAt: PositiveUint64


Event = (
    RecordAccess | PrescriptionIssued | PrescriptionDispensed | InsuranceClaim | InsurancePayment
)

EVENT_MODELS: Final[Mapping[EventType, type[EventBase]]] = MappingProxyType(
    {
        EventType.RECORD_ACCESS: RecordAccess,
        EventType.PRESCRIPTION_ISSUED: PrescriptionIssued,
        EventType.PRESCRIPTION_DISPENSED: PrescriptionDispensed,
        EventType.INSURANCE_CLAIM: InsuranceClaim,
        EventType.INSURANCE_PAYMENT: InsurancePayment,
    }
)
_EVENT_TYPE_VALUES: Final = frozenset(t.value for t in EventType)


# --------------------------------------------------------------------------- signed events


class _Tagged:
    """An event payload labelled with its outer ``type``, for the callable discriminator."""

    __slots__ = ("raw", "tag")

    def __init__(self, tag: str, raw: Any) -> None:
        self.tag = tag
        self.raw = raw


def _event_tag(value: Any) -> str | None:
    if isinstance(value, _Tagged):
        return value.tag
    if isinstance(value, EventBase):
        return value.event_type.value
    return None


def _untag(value: Any) -> Any:
    return value.raw if isinstance(value, _Tagged) else value


_EventUnion = Annotated[
    Annotated[RecordAccess, BeforeValidator(_untag), Tag(EventType.RECORD_ACCESS.value)]
    | Annotated[
        PrescriptionIssued, BeforeValidator(_untag), Tag(EventType.PRESCRIPTION_ISSUED.value)
    ]
    | Annotated[
        PrescriptionDispensed,
        BeforeValidator(_untag),
        Tag(EventType.PRESCRIPTION_DISPENSED.value),
    ]
    | Annotated[InsuranceClaim, BeforeValidator(_untag), Tag(EventType.INSURANCE_CLAIM.value)]
    | Annotated[InsurancePayment, BeforeValidator(_untag), Tag(EventType.INSURANCE_PAYMENT.value)],
    Discriminator(
        _event_tag,
        custom_error_type="unknown_event_type",
        custom_error_message=(
            "cannot validate the event: 'type' is missing or is not one of "
            + ", ".join(t.value for t in EventType)
        ),
    ),
]


class SignedEvent(BaseModel):
    """The wire form of a submitted event: ``{"type", "event", "signature"}``.

    ``event`` is validated as the model named by ``type`` (an unknown ``type`` is a
    validation error on ``type``). ``signature`` must be 65 bytes of 0x-hex; whether it is
    well-formed (v, low s) and who signed is only checked by :meth:`signer`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: EventType
    event: _EventUnion
    signature: Signature65

    @model_validator(mode="before")
    @classmethod
    def _tag_event(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "event" in data:
            kind, event = data.get("type"), data["event"]
            if (
                isinstance(kind, str)
                and kind in _EVENT_TYPE_VALUES
                and not isinstance(event, EventBase | _Tagged)
            ):
                return {**data, "event": _Tagged(str(kind), event)}
        return data

    @model_validator(mode="after")
    def _type_matches_event(self) -> SignedEvent:
        if self.event.event_type != self.type:
            raise ValueError(
                f"type {self.type.value!r} does not match the event ({self.event.event_type.value})"
            )
        return self

    @property
    def institution(self) -> str:
        """The institution the event names (who must have signed it)."""
        return self.event.institution

    @property
    def event_id(self) -> bytes:
        """The event's 32-byte id (the idempotency key)."""
        return self.event.eventId

    def struct_hash(self) -> bytes:
        """``hashStruct`` of the event."""
        return self.event.struct_hash()

    def digest(self, domain: Domain) -> bytes:
        """The EIP-712 digest of the event (the log leaf)."""
        return digest(domain.separator, self.event.struct_hash())

    def signer(self, domain: Domain) -> str:
        """The checksummed address that signed the event; :class:`SignatureError` if none."""
        return recover(self.digest(domain), self.signature)


# --------------------------------------------------------------------------- a fast path

# What each field of the event models is, for :func:`signed_event_from_json` (by the name of
# its annotation): 32 bytes of hex, the same not zero, an address, an enum, a range of ints.
_B32, _B32_NONZERO, _ADDRESS, _ENUM, _UINT = range(5)
_PLAIN_KINDS: Final[Mapping[str, tuple[int, Any]]] = MappingProxyType(
    {
        "Bytes32": (_B32, None),
        "NonZeroBytes32": (_B32_NONZERO, None),
        "Address": (_ADDRESS, None),
        "ActionField": (_ENUM, MappingProxyType({m.value: m for m in Action})),
        "PurposeField": (_ENUM, MappingProxyType({m.value: m for m in Purpose})),
        "Uint256": (_UINT, (0, 2**256 - 1)),
        "PositiveUint16": (_UINT, (1, 2**16 - 1)),
        "PositiveUint64": (_UINT, (1, 2**64 - 1)),
        "PositiveUint256": (_UINT, (1, 2**256 - 1)),
    }
)
_ZERO32: Final = bytes(32)


def _plain_fields(model: type[EventBase]) -> tuple[tuple[str, int, Any], ...]:
    annotations = {
        name: annotation
        for klass in reversed(model.__mro__)
        for name, annotation in getattr(klass, "__annotations__", {}).items()
    }
    fields = []
    for name in model.model_fields:
        kind = annotations[name]
        if not isinstance(kind, str) or kind not in _PLAIN_KINDS:  # pragma: no cover
            raise TypeError(f"{model.__name__}.{name}: no fast-path check for {kind!r}")
        fields.append((name, *_PLAIN_KINDS[kind]))
    return tuple(fields)


#: Per event type's name: its enum member, model, field names, and each field's kind.
_PLAIN_EVENTS: Final = MappingProxyType(
    {
        kind.value: (kind, model, frozenset(model.model_fields), _plain_fields(model))
        for kind, model in EVENT_MODELS.items()
    }
)
_SIGNED_FIELDS: Final = frozenset(SignedEvent.model_fields)


_new = object.__new__
_set = object.__setattr__


@cache
def _all_fields(model: type[BaseModel]) -> set[str]:
    """The names of ``model``'s fields: one set per class, shared by the models
    :func:`built_model` makes of it, which must therefore be frozen."""
    if not model.model_config.get("frozen"):
        raise TypeError(f"built_model makes frozen models only, not {model.__name__}")
    return set(model.model_fields)


def built_model(model: type[_M], values: dict[str, Any]) -> _M:
    """A model holding ``values`` (every field, already validated, of a frozen model), made as
    ``model.model_construct(**values)`` makes it, without its per-field bookkeeping.

    Its set of fields set (every field) is one set shared by all the models of its class made
    here: pydantic never changes a frozen model's set (``model_copy`` copies it first), and a
    set per model was a quarter of the whole-log audit's memory for the events (issue 15)."""
    fields = _all_fields(model)
    if len(values) != len(fields):  # the shared set says every field is set
        raise ValueError(f"built_model needs every field of {model.__name__}")
    built = _new(model)
    _set(built, "__dict__", values)
    _set(built, "__pydantic_fields_set__", fields)
    _set(built, "__pydantic_extra__", None)
    _set(built, "__pydantic_private__", None)
    return built


def plain_hex(value: Any, size: int) -> bytes | None:
    """``_hex_bytes(value, size)`` of a JSON value, or None where it would refuse it."""
    if (
        type(value) is not str
        or len(value) != 2 + 2 * size
        or value[0] != "0"
        or value[1] not in "xX"
    ):
        return None
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        return None
    return raw if len(raw) == size else None  # fromhex skips whitespace


def signed_event_from_json(data: Any) -> SignedEvent | None:
    """The :class:`SignedEvent` that ``SignedEvent.model_validate_json`` makes of a JSON
    document, given the document as parsed (``pydantic_core.from_json``), built here when it
    is in the form medtrail writes (every field present, no other, each value one its field
    takes: the same checks, on the same values, as the fields' validators); None otherwise:
    then it must be validated by pydantic, which either makes the same model or says why not.
    Issue 15: the whole-log audit reads every event of the log, and pydantic's validation
    costs more than twice this. ``tests/unit/ledger/test_plain_events.py`` checks that what
    this takes pydantic takes, and makes the same model of."""
    if type(data) is not dict or data.keys() != _SIGNED_FIELDS:
        return None
    kind = data["type"]
    spec = _PLAIN_EVENTS.get(kind) if type(kind) is str else None
    raw = data["event"]
    if spec is None or type(raw) is not dict:
        return None
    event_type, model, names, fields = spec
    if raw.keys() != names:
        return None
    values: dict[str, Any] = {}
    for name, field_kind, detail in fields:
        value = raw[name]
        if field_kind <= _B32_NONZERO:  # _hex_bytes(value, 32), inline: most fields are these
            if (
                type(value) is not str
                or len(value) != 66
                or value[0] != "0"
                or value[1] not in "xX"
            ):
                return None
            try:
                value = bytes.fromhex(value[2:])
            except ValueError:
                return None
            if len(value) != 32 or (field_kind and value == _ZERO32):  # (whitespace skipped)
                return None
        elif field_kind == _ADDRESS:
            if type(value) is not str:
                return None
            try:
                value = _address_text(value)
            except PydanticCustomError:
                return None
        elif field_kind == _UINT:
            low, high = detail
            if type(value) is not int or not low <= value <= high:
                return None
        else:  # _ENUM
            value = detail.get(value) if type(value) is int else None
            if value is None:
                return None
        values[name] = value
    signature = plain_hex(data["signature"], 65)
    if signature is None:
        return None
    event = built_model(model, values)  # values holds every field: ``names``
    return built_model(SignedEvent, {"type": event_type, "event": event, "signature": signature})


def sign_event(event: EventBase, domain: Domain, private_key: bytes) -> SignedEvent:
    """Sign ``event`` under ``domain`` with a 32-byte secp256k1 key."""
    signature = sign_digest(event.digest(domain), private_key)
    return SignedEvent(type=event.event_type, event=event, signature=signature)


# --------------------------------------------------------------------------- typed data


def event_typed_data(event: EventBase | SignedEvent, domain: Domain) -> dict[str, Any]:
    """A full typed-data document for an event (``Account.sign_typed_data(full_message=)``)."""
    inner = event.event if isinstance(event, SignedEvent) else event
    return inner.typed_data(domain)


def _grant_values(
    patient: str | bytes,
    grantee: str | bytes,
    record_ref: bytes | str,
    purposes: int | Iterable[Purpose | int],
    not_before: int,
    expires_at: int,
    nonce: int,
    deadline: int,
) -> dict[str, Any]:
    mask = purposes if isinstance(purposes, int) else purposes_mask(purposes)
    purposes_from_mask(mask)  # refuses unknown bits
    return {
        "patient": patient,
        "grantee": grantee,
        "recordRef": record_ref,
        "purposes": mask,
        "notBefore": not_before,
        "expiresAt": expires_at,
        "nonce": nonce,
        "deadline": deadline,
    }


def grant_typed_data(
    domain: Domain,
    *,
    patient: str | bytes,
    grantee: str | bytes,
    record_ref: bytes | str,
    purposes: int | Iterable[Purpose | int],
    not_before: int,
    expires_at: int,
    nonce: int,
    deadline: int,
) -> dict[str, Any]:
    """A full typed-data ``Grant`` (domain: ConsentRegistry). ``record_ref`` 0 = all records."""
    values = _grant_values(
        patient, grantee, record_ref, purposes, not_before, expires_at, nonce, deadline
    )
    return typed_data_message(domain, GRANT, values)


def grant_digest(
    domain: Domain,
    *,
    patient: str | bytes,
    grantee: str | bytes,
    record_ref: bytes | str,
    purposes: int | Iterable[Purpose | int],
    not_before: int,
    expires_at: int,
    nonce: int,
    deadline: int,
) -> bytes:
    """The EIP-712 digest of a ``Grant`` (what the patient signs)."""
    values = _grant_values(
        patient, grantee, record_ref, purposes, not_before, expires_at, nonce, deadline
    )
    return digest(domain.separator, GRANT.hash_struct(values))


@dataclass(frozen=True)
class GrantRefusal:
    """Why ``ConsentRegistry.grantBySig`` would refuse a grant: its custom ``error`` and the
    ``args`` it would carry (as in the API's ``contract-reverted`` answer)."""

    error: str
    args: tuple[int, ...]

    @property
    def detail(self) -> str:
        """What it means, for the patient (:data:`ledger.codes.REVERTS`)."""
        named = {
            "SignatureExpired": "deadline",
            "InvalidValidityWindow": "notBefore, expiresAt",
            "GrantAlreadyExpired": "expiresAt",
        }.get(self.error)
        values = f" ({named} = {', '.join(map(str, self.args))})" if named else ""
        return f"{REVERTS[self.error].description}{values}"


def grant_refusal(
    *, purposes: int, not_before: int, expires_at: int, deadline: int, now: int
) -> GrantRefusal | None:
    """The refusal ``ConsentRegistry.grantBySig`` would revert with in a block at time ``now``
    for this grant, judged on its own (None: these checks pass) — the contract's checks in
    its order, so the wallet can refuse before signing and the API before relaying:

    1. ``SignatureExpired(deadline)`` when ``now > deadline`` (the deadline's own second is
       still valid);
    2. ``EmptyPurposes()`` when ``purposes == 0``;
    3. ``InvalidValidityWindow(notBefore, expiresAt)`` when ``notBefore >= expiresAt`` (the
       window ``[notBefore, expiresAt)`` must hold at least one second);
    4. ``GrantAlreadyExpired(expiresAt)`` when ``expiresAt <= now``.

    What needs the chain is left to it: the signature itself (``InvalidSignature``, checked
    between 1 and 2) and the grantee's registration (``GranteeNotActive``, last). A time
    ``now`` earlier than the block's (e.g. the latest block's) never refuses what the chain
    would accept: every check here only refuses more as time passes. Out-of-range integers
    are the ABI encoder's business, unknown purpose bits the caller's.
    """
    if now > deadline:
        return GrantRefusal("SignatureExpired", (deadline,))
    if purposes == 0:
        return GrantRefusal("EmptyPurposes", ())
    if not_before >= expires_at:
        return GrantRefusal("InvalidValidityWindow", (not_before, expires_at))
    if expires_at <= now:
        return GrantRefusal("GrantAlreadyExpired", (expires_at,))
    return None


def revoke_typed_data(
    domain: Domain, *, patient: str | bytes, grant_id: int, nonce: int, deadline: int
) -> dict[str, Any]:
    """A full typed-data ``Revoke`` (domain: ConsentRegistry)."""
    values = {"patient": patient, "grantId": grant_id, "nonce": nonce, "deadline": deadline}
    return typed_data_message(domain, REVOKE, values)


def revoke_digest(
    domain: Domain, *, patient: str | bytes, grant_id: int, nonce: int, deadline: int
) -> bytes:
    """The EIP-712 digest of a ``Revoke``."""
    values = {"patient": patient, "grantId": grant_id, "nonce": nonce, "deadline": deadline}
    return digest(domain.separator, REVOKE.hash_struct(values))


_PRIMARY_DOMAINS: Final[Mapping[str, str]] = MappingProxyType(
    {
        **{t.value: "auditLog" for t in EventType},
        GRANT.name: "consentRegistry",
        REVOKE.name: "consentRegistry",
        INCREASE_NONCE.name: "consentRegistry",
        RECEIPT.name: "auditLog",
        RECEIPT_BATCH.name: "auditLog",
    }
)
_ALL_STRUCTS: Final = (
    *EVENT_STRUCTS.values(),
    GRANT,
    REVOKE,
    INCREASE_NONCE,
    RECEIPT,
    RECEIPT_BATCH,
)


def typed_data_definitions(chain_id: int, audit_log: str, consent_registry: str) -> dict[str, Any]:
    """The document served at ``GET /v1/typed-data``.

    * ``domains``: ``auditLog`` (events, receipts) and ``consentRegistry`` (grants,
      revocations), as typed-data ``domain`` objects; ``domainSeparators`` their hashes.
    * ``types``: every struct plus ``EIP712Domain``. MetaMask (``eth_signTypedData_v4``)
      and eth-account want ``{"EIP712Domain": ..., T: types[T]}``; ethers and viem want
      just ``{T: types[T]}`` (they derive the domain type and refuse extra root types).
    * ``primaryTypes``: for each primary type, its domain key, ``encodeType`` string and
      ``typeHash``; for events also the institution kinds allowed to sign.
    * ``enums``: the integer values of ``Action``, ``Purpose`` (bit ``1 << value`` in a
      grant's ``purposes``) and ``InstitutionKind``.
    """
    domains = {
        "auditLog": audit_log_domain(chain_id, audit_log),
        "consentRegistry": consent_domain(chain_id, consent_registry),
    }
    primary: dict[str, Any] = {}
    for struct in _ALL_STRUCTS:
        entry: dict[str, Any] = {
            "domain": _PRIMARY_DOMAINS[struct.name],
            "encodeType": struct.type_string,
            "typeHash": "0x" + struct.type_hash.hex(),
        }
        if struct.name in _EVENT_TYPE_VALUES:
            kinds = SIGNER_KINDS[EventType(struct.name)]
            entry["signerKinds"] = sorted(k.name.lower() for k in kinds)
        primary[struct.name] = entry
    return {
        "domains": {key: d.as_json() for key, d in domains.items()},
        "domainSeparators": {key: "0x" + d.separator.hex() for key, d in domains.items()},
        "types": {
            "EIP712Domain": [{"name": f, "type": t} for f, t in DOMAIN_FIELDS],
            **{s.name: s.types_json() for s in _ALL_STRUCTS},
        },
        "primaryTypes": primary,
        "enums": {
            enum.__name__: {member.name: member.value for member in enum}
            for enum in (Action, Purpose, InstitutionKind)
        },
    }
