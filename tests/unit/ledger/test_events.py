"""ledger.events: models, wire format, typed-data definitions, interop with eth-account."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_account import Account
from eth_account._utils.encode_typed_data.encoding_and_hashing import hash_domain
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ledger.eip712 import SECP256K1_N, Domain, digest, keccak, recover
from ledger.errors import MalformedEventError, SignatureError
from ledger.events import (
    EVENT_MODELS,
    EVENT_STRUCTS,
    GRANT,
    INCREASE_NONCE,
    RECEIPT,
    RECEIPT_BATCH,
    REVOKE,
    SIGNER_KINDS,
    Action,
    EventBase,
    EventType,
    InstitutionKind,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    Purpose,
    RecordAccess,
    SignedEvent,
    audit_log_domain,
    consent_domain,
    event_typed_data,
    grant_digest,
    grant_typed_data,
    purposes_from_mask,
    purposes_mask,
    revoke_digest,
    revoke_typed_data,
    sign_event,
    typed_data_definitions,
)

AUDIT_LOG = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
CONSENT = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
CHAIN_ID = 31337
DOMAIN = audit_log_domain(CHAIN_ID, AUDIT_LOG)
CONSENT_DOMAIN = consent_domain(CHAIN_ID, CONSENT)
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
HOSPITAL = Account.from_key(KEY)
PATIENT = Account.from_key(b"\x11" * 32)
OTHER = Account.from_key(b"\x22" * 32)
FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The protocol strings, copied here on purpose: contracts and clients depend on them.
PROTOCOL = {
    "RecordAccess": "RecordAccess(bytes32 eventId,bytes32 recordRef,address custodian,"
    "address patient,address institution,bytes32 actor,uint8 action,uint8 purpose,"
    "uint256 grantId,bytes32 reasonHash,uint64 occurredAt)",
    "PrescriptionIssued": "PrescriptionIssued(bytes32 eventId,bytes32 recordRef,address patient,"
    "address institution,bytes32 prescriber,bytes32 contentHash,uint16 fills,uint64 validUntil,"
    "uint64 occurredAt)",
    "PrescriptionDispensed": "PrescriptionDispensed(bytes32 eventId,bytes32 prescriptionId,"
    "address patient,address institution,bytes32 pharmacist,uint16 fillNumber,"
    "bytes32 contentHash,uint64 occurredAt)",
    "InsuranceClaim": "InsuranceClaim(bytes32 eventId,bytes32 serviceRef,address patient,"
    "address institution,address insurer,uint256 amount,bytes32 contentHash,uint64 occurredAt)",
    "InsurancePayment": "InsurancePayment(bytes32 eventId,bytes32 claimId,address patient,"
    "address institution,address payee,uint256 amount,bytes32 contentHash,uint64 occurredAt)",
    "Grant": "Grant(address patient,address grantee,bytes32 recordRef,uint256 purposes,"
    "uint64 notBefore,uint64 expiresAt,uint256 nonce,uint256 deadline)",
    "Revoke": "Revoke(address patient,uint256 grantId,uint256 nonce,uint256 deadline)",
    "IncreaseNonce": "IncreaseNonce(address patient,uint256 newNonce,uint256 nonce,"
    "uint256 deadline)",
    "Receipt": "Receipt(bytes32 eventDigest,uint64 leafIndex,uint64 receivedAt,uint64 anchorBy)",
    "ReceiptBatch": "ReceiptBatch(uint64 firstLeaf,uint64 count,uint64 receivedAt,"
    "uint64 anchorBy,bytes32 root)",
}

# ----------------------------------------------------------------------------- strategies

hex32 = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())
nonzero_hex32 = hex32.filter(lambda h: int(h, 16) != 0)
address = (
    st.binary(min_size=20, max_size=20)
    .filter(any)
    .map(lambda b: to_checksum_address("0x" + b.hex()))
)
uint16_pos = st.integers(min_value=1, max_value=2**16 - 1)
uint64_pos = st.integers(min_value=1, max_value=2**64 - 1)
uint256 = st.integers(min_value=0, max_value=2**256 - 1)
uint256_pos = st.integers(min_value=1, max_value=2**256 - 1)

EVENT_FIELDS: dict[EventType, dict[str, st.SearchStrategy[Any]]] = {
    EventType.RECORD_ACCESS: {
        "eventId": nonzero_hex32,
        "recordRef": hex32,
        "custodian": address,
        "patient": address,
        "institution": address,
        "actor": hex32,
        "action": st.sampled_from([int(a) for a in Action]),
        "purpose": st.sampled_from([int(p) for p in Purpose]),
        "grantId": uint256,
        "reasonHash": hex32,
        "occurredAt": uint64_pos,
    },
    EventType.PRESCRIPTION_ISSUED: {
        "eventId": nonzero_hex32,
        "recordRef": hex32,
        "patient": address,
        "institution": address,
        "prescriber": hex32,
        "contentHash": hex32,
        "fills": uint16_pos,
        "validUntil": uint64_pos,
        "occurredAt": uint64_pos,
    },
    EventType.PRESCRIPTION_DISPENSED: {
        "eventId": nonzero_hex32,
        "prescriptionId": hex32,
        "patient": address,
        "institution": address,
        "pharmacist": hex32,
        "fillNumber": uint16_pos,
        "contentHash": hex32,
        "occurredAt": uint64_pos,
    },
    EventType.INSURANCE_CLAIM: {
        "eventId": nonzero_hex32,
        "serviceRef": hex32,
        "patient": address,
        "institution": address,
        "insurer": address,
        "amount": uint256_pos,
        "contentHash": hex32,
        "occurredAt": uint64_pos,
    },
    EventType.INSURANCE_PAYMENT: {
        "eventId": nonzero_hex32,
        "claimId": hex32,
        "patient": address,
        "institution": address,
        "payee": address,
        "amount": uint256_pos,
        "contentHash": hex32,
        "occurredAt": uint64_pos,
    },
}


def event_json(kind: EventType) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(EVENT_FIELDS[kind])


def sample(kind: EventType, **overrides: Any) -> dict[str, Any]:
    """A fixed valid event JSON of ``kind`` signed by HOSPITAL's address."""
    base: dict[str, Any] = {
        "eventId": "0x" + "01" * 32,
        "recordRef": "0x" + "02" * 32,
        "custodian": HOSPITAL.address,
        "patient": PATIENT.address,
        "institution": HOSPITAL.address,
        "actor": "0x" + "03" * 32,
        "action": 1,
        "purpose": 0,
        "grantId": 0,
        "reasonHash": "0x" + "00" * 32,
        "occurredAt": 1_700_000_000,
        "prescriber": "0x" + "04" * 32,
        "contentHash": "0x" + "05" * 32,
        "fills": 3,
        "validUntil": 1_800_000_000,
        "prescriptionId": "0x" + "06" * 32,
        "pharmacist": "0x" + "07" * 32,
        "fillNumber": 1,
        "serviceRef": "0x" + "08" * 32,
        "insurer": OTHER.address,
        "amount": 12_345,
        "claimId": "0x" + "09" * 32,
        "payee": OTHER.address,
    }
    values = {f: base[f] for f in EVENT_STRUCTS[kind].field_names}
    values.update(overrides)
    return values


def eth_account_digest(full_message: dict[str, Any]) -> bytes:
    return bytes(_hash_eip191_message(encode_typed_data(full_message=full_message)))


# ----------------------------------------------------------------------------- protocol


def test_struct_strings_are_the_protocol() -> None:
    structs = {**{t.value: s for t, s in EVENT_STRUCTS.items()}, "Grant": GRANT}
    structs |= {"Revoke": REVOKE, "IncreaseNonce": INCREASE_NONCE, "Receipt": RECEIPT}
    structs |= {"ReceiptBatch": RECEIPT_BATCH}
    assert {name: s.type_string for name, s in structs.items()} == PROTOCOL
    for name, s in structs.items():
        assert s.name == name
        assert s.type_hash == keccak(PROTOCOL[name].encode())


def test_enums_are_fixed() -> None:
    assert {a.name: a.value for a in Action} == {
        "CREATE": 0, "READ": 1, "WRITE": 2, "EXPORT": 3, "PRINT": 4, "SHARE": 5
    }  # fmt: skip
    assert {p.name: p.value for p in Purpose} == {
        "TREATMENT": 0, "PAYMENT": 1, "OPERATIONS": 2, "RESEARCH": 3, "PUBLIC_HEALTH": 4,
        "LEGAL": 5,
    }  # fmt: skip
    assert {k.name: k.value for k in InstitutionKind} == {
        "NONE": 0, "HOSPITAL": 1, "PHARMACY": 2, "INSURER": 3
    }  # fmt: skip
    assert [t.value for t in EventType] == list(PROTOCOL)[:5]


def test_signer_kinds() -> None:
    h, p, i = InstitutionKind.HOSPITAL, InstitutionKind.PHARMACY, InstitutionKind.INSURER
    assert dict(SIGNER_KINDS) == {
        EventType.RECORD_ACCESS: {h, p, i},  # whoever accessed the record
        EventType.PRESCRIPTION_ISSUED: {h},
        EventType.PRESCRIPTION_DISPENSED: {p},
        EventType.INSURANCE_CLAIM: {h, p},
        EventType.INSURANCE_PAYMENT: {i},
    }
    assert all(isinstance(v, frozenset) for v in SIGNER_KINDS.values())


def test_models_follow_struct_field_order() -> None:
    for kind, model in EVENT_MODELS.items():
        assert tuple(model.model_fields) == EVENT_STRUCTS[kind].field_names
        assert model.event_type is kind
        assert model.struct is EVENT_STRUCTS[kind]


# ----------------------------------------------------------------------------- purposes


@given(st.sets(st.sampled_from(list(Purpose))))
def test_purposes_mask_round_trip(purposes: set[Purpose]) -> None:
    mask = purposes_mask(purposes)
    assert mask == sum(1 << p for p in purposes)
    assert purposes_from_mask(mask) == sorted(purposes)


def test_purposes_errors() -> None:
    assert purposes_mask([Purpose.PAYMENT, 1, Purpose.RESEARCH]) == 0b1010
    assert purposes_from_mask(0b100001) == [Purpose.TREATMENT, Purpose.LEGAL]
    with pytest.raises(MalformedEventError, match="unknown purpose 6"):
        purposes_mask([6])
    with pytest.raises(MalformedEventError, match="must be an int"):
        purposes_mask([True])
    with pytest.raises(MalformedEventError, match="unknown bits 0x40"):
        purposes_from_mask(0b1000001)
    with pytest.raises(MalformedEventError, match="negative"):
        purposes_from_mask(-1)
    with pytest.raises(MalformedEventError, match="must be an int"):
        purposes_from_mask("3")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- wire format


@pytest.mark.parametrize("kind", list(EventType))
@FAST
@given(data=st.data())
def test_json_round_trip_and_digest(kind: EventType, data: st.DataObject) -> None:
    event = data.draw(event_json(kind))
    signed = sign_event(EVENT_MODELS[kind].model_validate(event), DOMAIN, KEY)
    wire = signed.model_dump_json()
    assert json.loads(wire) == {"type": kind.value, "event": event, "signature": ANY_HEX65}
    again = SignedEvent.model_validate_json(wire)
    assert again == signed
    assert again.model_dump_json() == wire
    assert SignedEvent.model_validate(json.loads(wire)) == signed
    # the wire event is exactly the typed-data message eth-account hashes
    full = event_typed_data(again, DOMAIN)
    assert full["message"] == event
    assert again.digest(DOMAIN) == eth_account_digest(full)
    assert again.signer(DOMAIN) == HOSPITAL.address
    assert again.institution == event["institution"]
    assert again.event_id == bytes.fromhex(event["eventId"][2:])


class _AnyHex65:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith("0x") and len(other) == 132

    __hash__ = None  # type: ignore[assignment]


ANY_HEX65 = _AnyHex65()


@pytest.mark.parametrize("kind", list(EventType))
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_eth_account_signed_events_recover(kind: EventType, data: st.DataObject) -> None:
    event = data.draw(event_json(kind))
    full = event_typed_data(EVENT_MODELS[kind].model_validate(event), DOMAIN)
    theirs = Account.sign_typed_data(KEY, full_message=full)
    wire = {"type": kind.value, "event": event, "signature": "0x" + theirs.signature.hex()}
    signed = SignedEvent.model_validate(wire)
    assert signed.signer(DOMAIN) == HOSPITAL.address
    # our signer is deterministic and identical to eth-account's
    assert sign_event(signed.event, DOMAIN, KEY).signature == bytes(theirs.signature)
    # another domain (chain, contract) gives another digest and another signer
    other = audit_log_domain(CHAIN_ID + 1, AUDIT_LOG)
    assert signed.signer(other) != HOSPITAL.address


def test_python_side_construction_and_normalisation() -> None:
    event = RecordAccess.model_validate(
        sample(
            EventType.RECORD_ACCESS,
            patient=PATIENT.address.lower(),
            recordRef="0X" + "AB" * 32,
            action=Action.SHARE,
        )
    )
    assert event.patient == PATIENT.address  # checksummed
    assert event.recordRef == b"\xab" * 32  # stored as bytes
    assert event.action is Action.SHARE
    assert event.model_dump()["recordRef"] == b"\xab" * 32
    assert event.model_dump(mode="json")["recordRef"] == "0x" + "ab" * 32
    assert event.model_dump(mode="json")["action"] == 5
    # bytes and 20-byte addresses work from Python too
    same = RecordAccess.model_validate(
        {**event.model_dump(), "custodian": bytes.fromhex(HOSPITAL.address[2:])}
    )
    assert same == event
    with pytest.raises(ValidationError, match="frozen"):
        event.grantId = 5  # type: ignore[misc]


def test_signer_rejects_high_s_from_the_wire() -> None:
    signed = sign_event(
        PrescriptionIssued.model_validate(sample(EventType.PRESCRIPTION_ISSUED)), DOMAIN, KEY
    )
    r, s, v = (
        signed.signature[:32],
        int.from_bytes(signed.signature[32:64], "big"),
        signed.signature[64],
    )
    high = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
    wire = {**signed.model_dump(mode="json"), "signature": "0x" + high.hex()}
    malleated = SignedEvent.model_validate(wire)  # the model checks the format only
    with pytest.raises(SignatureError, match="upper half"):
        malleated.signer(DOMAIN)
    assert recover(signed.digest(DOMAIN), signed.signature) == HOSPITAL.address


def test_wrong_signer_is_visible() -> None:
    event = InsurancePayment.model_validate(sample(EventType.INSURANCE_PAYMENT))
    signed = sign_event(event, DOMAIN, b"\x33" * 32)
    assert signed.signer(DOMAIN) != signed.institution


# ----------------------------------------------------------------------------- validation


def errors_of(data: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        SignedEvent.model_validate(data)
    return [dict(e) for e in info.value.errors()]


def wire(kind: EventType = EventType.RECORD_ACCESS, **overrides: Any) -> dict[str, Any]:
    return {"type": kind.value, "event": sample(kind, **overrides), "signature": "0x" + "1b" * 65}


def test_sample_wire_is_valid() -> None:
    for kind in EventType:
        assert SignedEvent.model_validate(wire(kind)).type is kind


FIELD_ERRORS = [
    # (event type, field, bad value, error type, message fragment)
    ("RecordAccess", "recordRef", "0x" + "zz" * 32, "bytes32", "only hex digits"),
    ("RecordAccess", "recordRef", "0x" + "ab" * 31, "bytes32", "got 62 hex digits"),
    ("RecordAccess", "recordRef", "0x" + "ab" * 33, "bytes32", "got 66 hex digits"),
    ("RecordAccess", "recordRef", "ab" * 32, "bytes32", "start with 0x"),
    ("RecordAccess", "recordRef", "0x" + "ab" * 31 + " a", "bytes32", "only hex digits"),
    ("RecordAccess", "recordRef", 5, "bytes32", "0x-prefixed hex"),
    ("RecordAccess", "eventId", "0x" + "00" * 32, "bytes32_zero", "must not be zero"),
    (
        "RecordAccess",
        "custodian",
        "0x5FbDB2315678afecb367f032d93F642f64180aA3",
        "address",
        "checksum",
    ),
    ("RecordAccess", "custodian", "0x5fbdb2315678afecb367f032d93f642f64180a", "address", "40 hex"),
    ("RecordAccess", "custodian", "5fbdb2315678afecb367f032d93f642f64180aa3", "address", "0x"),
    ("RecordAccess", "custodian", "0x5fbdb2315678afecb367f032d93f642f64180aag", "address", "hex"),
    ("RecordAccess", "patient", "0x" + "00" * 20, "address_zero", "zero address"),
    ("RecordAccess", "patient", 7, "address", "0x-hex string"),
    ("RecordAccess", "action", 6, "enum", "Input should be"),
    ("RecordAccess", "action", -1, "enum", "Input should be"),
    ("RecordAccess", "action", "1", "enum_int", "must be an integer"),
    ("RecordAccess", "action", True, "enum_int", "must be an integer"),
    ("RecordAccess", "purpose", 6, "enum", "Input should be"),
    ("RecordAccess", "purpose", 1.0, "enum_int", "must be an integer"),
    ("RecordAccess", "grantId", -1, "greater_than_equal", "greater than or equal to 0"),
    ("RecordAccess", "grantId", 2**256, "less_than_equal", "less than or equal"),
    ("RecordAccess", "grantId", "1", "int_type", "valid integer"),
    ("RecordAccess", "occurredAt", 0, "greater_than_equal", "greater than or equal to 1"),
    ("RecordAccess", "occurredAt", 2**64, "less_than_equal", "less than or equal"),
    ("RecordAccess", "occurredAt", 1.5, "int_type", "valid integer"),
    ("RecordAccess", "occurredAt", True, "int_type", "valid integer"),
    ("PrescriptionIssued", "fills", 0, "greater_than_equal", "greater than or equal to 1"),
    ("PrescriptionIssued", "fills", 2**16, "less_than_equal", "less than or equal to 65535"),
    ("PrescriptionIssued", "validUntil", 0, "greater_than_equal", "greater than or equal to 1"),
    ("PrescriptionDispensed", "fillNumber", 0, "greater_than_equal", "greater than or equal"),
    ("InsuranceClaim", "amount", 0, "greater_than_equal", "greater than or equal to 1"),
    ("InsuranceClaim", "insurer", "0x" + "00" * 20, "address_zero", "zero address"),
    ("InsurancePayment", "amount", 2**256, "less_than_equal", "less than or equal"),
    ("InsurancePayment", "payee", None, "address", "0x-hex string"),
]


@pytest.mark.parametrize(("kind", "field", "bad", "error_type", "fragment"), FIELD_ERRORS)
def test_field_errors(kind: str, field: str, bad: Any, error_type: str, fragment: str) -> None:
    errors = errors_of(wire(EventType(kind), **{field: bad}))
    assert len(errors) == 1, errors
    (error,) = errors
    assert error["loc"] == ("event", kind, field)
    assert error["type"] == error_type
    assert fragment in error["msg"]
    # the same from JSON text
    with pytest.raises(ValidationError) as info:
        SignedEvent.model_validate_json(json.dumps(wire(EventType(kind), **{field: bad})))
    assert info.value.errors()[0]["type"] == error_type


def test_unknown_type() -> None:
    data = wire()
    data["type"] = "RecordDeleted"
    errors = errors_of(data)
    assert [e["loc"] for e in errors] == [("type",), ("event",)]
    assert errors[0]["type"] == "enum"
    assert "'RecordAccess'" in errors[0]["msg"]
    assert errors[1]["type"] == "unknown_event_type"
    assert "'type' is missing or is not one of" in errors[1]["msg"]


def test_missing_type() -> None:
    data = wire()
    del data["type"]
    errors = errors_of(data)
    assert errors[0]["loc"] == ("type",)
    assert errors[0]["type"] == "missing"


def test_type_and_event_fields_disagree() -> None:
    # a PrescriptionIssued body declared as RecordAccess: reported against RecordAccess
    data = wire(EventType.PRESCRIPTION_ISSUED)
    data["type"] = "RecordAccess"
    kinds = {(e["loc"][-1], e["type"]) for e in errors_of(data)}
    assert ("custodian", "missing") in kinds
    assert ("prescriber", "extra_forbidden") in kinds


def test_python_type_mismatch() -> None:
    event = RecordAccess.model_validate(sample(EventType.RECORD_ACCESS))
    with pytest.raises(ValidationError, match="does not match the event"):
        SignedEvent(type=EventType.INSURANCE_CLAIM, event=event, signature=b"\x1b" * 65)


def test_extra_and_missing_fields() -> None:
    data = wire()
    data["event"]["note"] = "hello"
    (error,) = errors_of(data)
    assert (error["loc"], error["type"]) == (("event", "RecordAccess", "note"), "extra_forbidden")

    data = wire()
    del data["event"]["occurredAt"]
    (error,) = errors_of(data)
    assert (error["loc"], error["type"]) == (("event", "RecordAccess", "occurredAt"), "missing")

    data = wire()
    data["chainId"] = 1
    (error,) = errors_of(data)
    assert (error["loc"], error["type"]) == (("chainId",), "extra_forbidden")

    data = wire()
    del data["signature"]
    (error,) = errors_of(data)
    assert (error["loc"], error["type"]) == (("signature",), "missing")


@pytest.mark.parametrize(
    ("signature", "fragment"),
    [
        ("0x" + "1b" * 64, "got 128 hex digits"),
        ("0x" + "1b" * 66, "got 132 hex digits"),
        ("1b" * 65, "start with 0x"),
        ("0x" + "zz" * 65, "only hex digits"),
    ],
)
def test_signature_format_errors(signature: str, fragment: str) -> None:
    data = wire()
    data["signature"] = signature
    (error,) = errors_of(data)
    assert error["loc"] == ("signature",)
    assert error["type"] == "signature"
    assert fragment in error["msg"]


def test_event_not_an_object() -> None:
    data = wire()
    data["event"] = [1, 2]
    (error,) = errors_of(data)
    assert error["loc"] == ("event", "RecordAccess")
    assert error["type"] == "model_type"


def test_json_schema_builds() -> None:
    schema = SignedEvent.model_json_schema()
    assert set(schema["properties"]) == {"type", "event", "signature"}
    ra = schema["$defs"]["RecordAccess"]
    assert ra["additionalProperties"] is False
    assert ra["properties"]["recordRef"]["pattern"] == "^0x[0-9a-fA-F]{64}$"


# ----------------------------------------------------------------------------- typed data


def test_typed_data_definitions_document() -> None:
    doc = typed_data_definitions(CHAIN_ID, AUDIT_LOG.lower(), CONSENT)
    json.dumps(doc)  # JSON-ready
    assert doc["domains"]["auditLog"] == {
        "name": "medtrail",
        "version": "1",
        "chainId": CHAIN_ID,
        "verifyingContract": AUDIT_LOG,
    }
    assert doc["domains"]["consentRegistry"]["verifyingContract"] == CONSENT
    for key, domain in doc["domains"].items():
        assert doc["domainSeparators"][key] == "0x" + bytes(hash_domain(domain)).hex()
    assert set(doc["types"]) == {"EIP712Domain", *PROTOCOL}
    for name, entry in doc["primaryTypes"].items():
        assert entry["encodeType"] == PROTOCOL[name]
        assert entry["typeHash"] == "0x" + keccak(PROTOCOL[name].encode()).hex()
        consent_types = ("Grant", "Revoke", "IncreaseNonce")
        expected = "consentRegistry" if name in consent_types else "auditLog"
        assert entry["domain"] == expected
    assert doc["primaryTypes"]["InsuranceClaim"]["signerKinds"] == ["hospital", "pharmacy"]
    assert doc["enums"]["Purpose"]["LEGAL"] == 5


def _values_for(struct_name: str) -> dict[str, Any]:
    if struct_name in {t.value for t in EventType}:
        return sample(EventType(struct_name))
    return {
        "Grant": {
            "patient": PATIENT.address,
            "grantee": HOSPITAL.address,
            "recordRef": "0x" + "00" * 32,
            "purposes": 0b11,
            "notBefore": 1,
            "expiresAt": 2**64 - 1,
            "nonce": 0,
            "deadline": 2**256 - 1,
        },
        "Revoke": {"patient": PATIENT.address, "grantId": 7, "nonce": 1, "deadline": 99},
        "IncreaseNonce": {"patient": PATIENT.address, "newNonce": 9, "nonce": 1, "deadline": 99},
        "Receipt": {
            "eventDigest": "0x" + "aa" * 32,
            "leafIndex": 0,
            "receivedAt": 1_700_000_000,
            "anchorBy": 1_700_000_060,
        },
        "ReceiptBatch": {
            "firstLeaf": 1000,
            "count": 1000,
            "receivedAt": 1_700_000_000,
            "anchorBy": 1_700_000_060,
            "root": "0x" + "bb" * 32,
        },
    }[struct_name]


@pytest.mark.parametrize("primary", list(PROTOCOL))
def test_message_built_from_definitions_recovers(primary: str) -> None:
    """A client that only has the served document can sign; our code recovers the signer."""
    doc = json.loads(json.dumps(typed_data_definitions(CHAIN_ID, AUDIT_LOG, CONSENT)))
    entry = doc["primaryTypes"][primary]
    full = {
        "types": {"EIP712Domain": doc["types"]["EIP712Domain"], primary: doc["types"][primary]},
        "primaryType": primary,
        "domain": doc["domains"][entry["domain"]],
        "message": _values_for(primary),
    }
    signed = Account.sign_typed_data(KEY, full_message=full)
    # ethers/viem style: domain, types without EIP712Domain, message
    split = Account.sign_typed_data(
        KEY,
        domain_data=full["domain"],
        message_types={primary: doc["types"][primary]},
        message_data=full["message"],
    )
    assert split.signature == signed.signature
    structs = {**{t.value: s for t, s in EVENT_STRUCTS.items()}, "Grant": GRANT}
    structs |= {"Revoke": REVOKE, "IncreaseNonce": INCREASE_NONCE, "Receipt": RECEIPT}
    structs |= {"ReceiptBatch": RECEIPT_BATCH}
    # the digest from the served domain separator alone
    separator = bytes.fromhex(doc["domainSeparators"][entry["domain"]][2:])
    ours = digest(separator, structs[primary].hash_struct(full["message"]))
    domain = DOMAIN if entry["domain"] == "auditLog" else CONSENT_DOMAIN
    assert ours == digest(domain.separator, structs[primary].hash_struct(full["message"]))
    assert ours == eth_account_digest(full)
    assert recover(ours, bytes(signed.signature)) == HOSPITAL.address


def test_grant_and_revoke_helpers() -> None:
    grant = {
        "patient": PATIENT.address,
        "grantee": HOSPITAL.address,
        "record_ref": b"\x00" * 32,
        "purposes": [Purpose.TREATMENT, Purpose.RESEARCH],
        "not_before": 1_700_000_000,
        "expires_at": 1_800_000_000,
        "nonce": 0,
        "deadline": 1_700_000_600,
    }
    full = grant_typed_data(CONSENT_DOMAIN, **grant)
    assert full["primaryType"] == "Grant"
    assert full["domain"]["verifyingContract"] == CONSENT
    assert full["message"]["purposes"] == 0b1001
    assert full["message"]["recordRef"] == "0x" + "00" * 32
    signed = PATIENT.sign_typed_data(full_message=full)
    assert eth_account_digest(full) == grant_digest(CONSENT_DOMAIN, **grant)
    assert (
        recover(grant_digest(CONSENT_DOMAIN, **grant), bytes(signed.signature)) == PATIENT.address
    )
    # the mask may be given directly; unknown bits are refused
    assert grant_digest(CONSENT_DOMAIN, **{**grant, "purposes": 0b1001}) == grant_digest(
        CONSENT_DOMAIN, **grant
    )
    with pytest.raises(MalformedEventError, match="unknown bits"):
        grant_typed_data(CONSENT_DOMAIN, **{**grant, "purposes": 1 << 9})

    revoke = {"patient": PATIENT.address, "grant_id": 3, "nonce": 1, "deadline": 1_700_000_600}
    full = revoke_typed_data(CONSENT_DOMAIN, **revoke)
    signed = PATIENT.sign_typed_data(full_message=full)
    assert (
        recover(revoke_digest(CONSENT_DOMAIN, **revoke), bytes(signed.signature)) == PATIENT.address
    )
    # the grant domain is not the event domain: a grant signature never verifies as an event
    assert revoke_digest(DOMAIN, **revoke) != revoke_digest(CONSENT_DOMAIN, **revoke)


def test_event_typed_data_accepts_models_and_signed_events() -> None:
    event = InsuranceClaim.model_validate(sample(EventType.INSURANCE_CLAIM))
    signed = sign_event(event, DOMAIN, KEY)
    assert event_typed_data(event, DOMAIN) == event_typed_data(signed, DOMAIN)
    assert isinstance(signed.event, EventBase)


def test_domains() -> None:
    assert Domain("medtrail", "1", CHAIN_ID, AUDIT_LOG) == DOMAIN
    assert CONSENT_DOMAIN.verifying_contract == CONSENT
    assert DOMAIN.separator != CONSENT_DOMAIN.separator
    dispensed = PrescriptionDispensed.model_validate(sample(EventType.PRESCRIPTION_DISPENSED))
    assert dispensed.digest(DOMAIN) != dispensed.digest(CONSENT_DOMAIN)
