"""ledger.eip712 against the reference implementations (eth-account, eth-abi, eth-utils)."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from eth_account import Account
from eth_account._utils.encode_typed_data.encoding_and_hashing import hash_domain
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_hash.auto import keccak as reference_keccak
from eth_utils.address import to_checksum_address as reference_checksum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.eip712 import (
    DOMAIN_TYPE_HASH,
    KECCAK_BACKEND,
    SECP256K1_HALF_N,
    SECP256K1_N,
    Domain,
    StructType,
    address_of,
    digest,
    keccak,
    parse_address,
    recover,
    sign_digest,
    to_checksum_address,
    typed_data_message,
)
from ledger.errors import MalformedEventError, SignatureError
from ledger.events import EVENT_STRUCTS, GRANT, RECEIPT, REVOKE

ALL_STRUCTS = [*EVENT_STRUCTS.values(), GRANT, REVOKE, RECEIPT]
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
ACCOUNT = Account.from_key(KEY)
DOMAIN = Domain("medtrail", "1", 31337, "0x5fbdb2315678afecb367f032d93f642f64180aa3")
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- strategies

addresses = st.binary(min_size=20, max_size=20)
private_keys = st.integers(min_value=1, max_value=SECP256K1_N - 1).map(
    lambda k: k.to_bytes(32, "big")
)


def value_strategy(sol_type: str) -> st.SearchStrategy[Any]:
    if sol_type == "address":
        # bytes, lowercase hex and checksummed hex are all accepted
        return addresses.flatmap(
            lambda a: st.sampled_from([a, "0x" + a.hex(), reference_checksum("0x" + a.hex())])
        )
    if sol_type == "bool":
        return st.booleans()
    if sol_type.startswith("uint"):
        bits = int(sol_type[4:])
        edge = st.sampled_from([0, 1, (1 << bits) - 1])
        return st.one_of(edge, st.integers(min_value=0, max_value=(1 << bits) - 1))
    if sol_type.startswith("bytes"):
        size = int(sol_type[5:])
        raw = st.binary(min_size=size, max_size=size)
        return raw.flatmap(lambda b: st.sampled_from([b, "0x" + b.hex(), "0x" + b.hex().upper()]))
    raise AssertionError(sol_type)


def struct_values(struct: StructType) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f: value_strategy(t) for f, t in struct.fields})


domains = st.builds(
    Domain,
    name=st.sampled_from(["medtrail", "other", "ü-nicode"]),
    version=st.sampled_from(["1", "2"]),
    chain_id=st.integers(min_value=1, max_value=2**64),
    verifying_contract=addresses.map(lambda a: "0x" + a.hex()),
)


def eth_account_digest(full_message: dict[str, Any]) -> bytes:
    return bytes(_hash_eip191_message(encode_typed_data(full_message=full_message)))


# ----------------------------------------------------------------------------- keccak


def test_keccak_known_vectors() -> None:
    assert keccak(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    assert keccak(b"abc").hex() == (
        "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
    )
    assert keccak(b"abc") != hashlib.sha3_256(b"abc").digest()  # Keccak, not NIST SHA-3
    assert KECCAK_BACKEND in {"safe-pysha3", "pycryptodome", "eth-hash-auto"}


@given(st.binary(max_size=600))
def test_keccak_matches_eth_hash(data: bytes) -> None:
    assert keccak(data) == reference_keccak(data)


# ----------------------------------------------------------------------------- addresses


@given(addresses)
def test_checksum_matches_eth_utils(raw: bytes) -> None:
    expected = reference_checksum("0x" + raw.hex())
    assert to_checksum_address(raw) == expected
    assert to_checksum_address("0x" + raw.hex()) == expected
    assert to_checksum_address("0x" + raw.hex().upper()) == expected
    assert parse_address(expected) == raw


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5fbdb2315678afecb367f032d93f642f64180aa3", "start with 0x"),
        ("0x5fbdb2315678afecb367f032d93f642f64180a", "40 hex digits"),
        ("0x5fbdb2315678afecb367f032d93f642f64180aa3aa", "40 hex digits"),
        ("0x5fbdb2315678afecb367f032d93f642f64180ag3", "hex digits"),
        ("0x5fbdb2315678afecb367f032d93f642f 4180aa3", "hex digits"),
        ("0x5FbDB2315678afecb367f032d93F642f64180aA3", "checksum"),
        (b"\x01" * 19, "20 bytes"),
        (12345, "0x-hex string"),
    ],
)
def test_parse_address_rejects(value: Any, message: str) -> None:
    with pytest.raises(MalformedEventError, match=message) as info:
        parse_address(value, "patient")
    assert info.value.detail.startswith("patient: ")
    assert info.value.code == "malformed-event"


# ----------------------------------------------------------------------------- struct types


def test_type_string_and_hash() -> None:
    struct = StructType("Revoke", [("patient", "address"), ("grantId", "uint256")])
    assert struct.type_string == "Revoke(address patient,uint256 grantId)"
    assert struct.type_hash == reference_keccak(b"Revoke(address patient,uint256 grantId)")
    domain_type = (
        b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    assert reference_keccak(domain_type) == DOMAIN_TYPE_HASH


@pytest.mark.parametrize("bad", ["string", "bytes", "uint7", "uint264", "bytes33", "int256", "X[]"])
def test_unsupported_field_types(bad: str) -> None:
    with pytest.raises(ValueError, match="unsupported"):
        StructType("S", [("a", bad)])


def test_duplicate_fields_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        StructType("S", [("a", "uint8"), ("a", "uint16")])


KITCHEN_SINK = StructType(
    "Sink",
    [
        ("a", "address"),
        ("b", "bool"),
        ("c", "bytes1"),
        ("d", "bytes7"),
        ("e", "bytes32"),
        ("f", "uint8"),
        ("g", "uint16"),
        ("h", "uint64"),
        ("i", "uint256"),
    ],
)


@given(struct_values(KITCHEN_SINK))
def test_hand_encoder_equals_eth_abi(values: dict[str, Any]) -> None:
    words = KITCHEN_SINK.encode_data(values)
    assert words == KITCHEN_SINK.encode_data_abi(values)
    assert len(words) == 32 * len(KITCHEN_SINK.fields)
    ordered = [values[f] for f in KITCHEN_SINK.field_names]
    assert KITCHEN_SINK.encode_data(ordered) == words
    assert KITCHEN_SINK.hash_struct(tuple(ordered)) == keccak(KITCHEN_SINK.type_hash + words)


# One invalid value per field kind: both encoders refuse it (identical domains).
INVALID = [
    ("a", b"\x00" * 21),
    ("a", "0x" + "ab" * 19),
    ("a", "0xAbcdef0000000000000000000000000000000000"),  # bad checksum (mixed case)
    ("a", 5),
    ("b", 1),
    ("b", None),
    ("c", b""),
    ("c", b"\x00\x00"),
    ("d", "0x" + "00" * 8),
    ("e", b"\x00" * 31),
    ("e", "00" * 32),
    ("e", "0x" + "zz" * 32),
    ("e", 0),
    ("f", 256),
    ("f", -1),
    ("f", True),
    ("f", 1.0),
    ("f", "1"),
    ("g", 1 << 16),
    ("h", 1 << 64),
    ("i", 1 << 256),
    ("i", -(1 << 255)),
]


@pytest.mark.parametrize(("field", "bad"), INVALID)
def test_invalid_values_refused_by_both_encoders(field: str, bad: Any) -> None:
    values: dict[str, Any] = {
        "a": b"\x01" * 20,
        "b": True,
        "c": b"\x02",
        "d": b"\x03" * 7,
        "e": b"\x04" * 32,
        "f": 5,
        "g": 6,
        "h": 7,
        "i": 8,
    }
    KITCHEN_SINK.encode_data(values)  # the base values are fine
    values[field] = bad
    with pytest.raises(MalformedEventError, match=f"^{field}: ") as info:
        KITCHEN_SINK.encode_data(values)
    assert info.value.context["field"] == field
    with pytest.raises(MalformedEventError, match=f"^{field}: "):
        KITCHEN_SINK.encode_data_abi(values)
    with pytest.raises(MalformedEventError):
        KITCHEN_SINK.hash_struct(values)


def test_missing_extra_and_count_errors() -> None:
    struct = StructType("S", [("a", "uint8"), ("b", "uint8")])
    with pytest.raises(MalformedEventError, match="missing field"):
        struct.hash_struct({"a": 1})
    with pytest.raises(MalformedEventError, match=r"unknown field.*c"):
        struct.hash_struct({"a": 1, "b": 2, "c": 3})
    with pytest.raises(MalformedEventError, match="expected 2 values"):
        struct.hash_struct((1, 2, 3))
    with pytest.raises(MalformedEventError, match="expected 2 values"):
        struct.hash_struct([1])
    with pytest.raises(MalformedEventError, match="mapping or a sequence"):
        struct.hash_struct(b"ab")


# ----------------------------------------------------------------------------- domain, digests


@FAST
@given(domains)
def test_domain_separator_matches_eth_account(domain: Domain) -> None:
    assert domain.separator == bytes(hash_domain(domain.as_json()))
    assert domain.verifying_contract == reference_checksum(domain.verifying_contract)


def test_domain_validation() -> None:
    with pytest.raises(MalformedEventError):
        Domain("medtrail", "1", 0, DOMAIN.verifying_contract)
    with pytest.raises(MalformedEventError):
        Domain("medtrail", "1", True, DOMAIN.verifying_contract)
    with pytest.raises(MalformedEventError, match="verifyingContract"):
        Domain("medtrail", "1", 1, "0x1234")
    assert DOMAIN.verifying_contract == "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def test_digest_layout() -> None:
    sep, h = b"\x01" * 32, b"\x02" * 32
    assert digest(sep, h) == keccak(b"\x19\x01" + sep + h)
    with pytest.raises(ValueError, match="32 bytes"):
        digest(sep, h[:31])


@pytest.mark.parametrize("struct", ALL_STRUCTS, ids=lambda s: s.name)
@FAST
@given(data=st.data(), domain=domains)
def test_digest_equals_eth_account(struct: StructType, data: st.DataObject, domain: Domain) -> None:
    values = data.draw(struct_values(struct))
    full = typed_data_message(domain, struct, values)
    ours = digest(domain.separator, struct.hash_struct(values))
    assert ours == eth_account_digest(full)


@pytest.mark.parametrize("struct", ALL_STRUCTS, ids=lambda s: s.name)
@settings(max_examples=8, deadline=None)
@given(data=st.data(), key=private_keys)
def test_eth_account_signature_recovers_and_equals_ours(
    struct: StructType, data: st.DataObject, key: bytes
) -> None:
    values = data.draw(struct_values(struct))
    full = typed_data_message(DOMAIN, struct, values)
    signed = Account.sign_typed_data(key, full_message=full)
    ours = digest(DOMAIN.separator, struct.hash_struct(values))
    assert recover(ours, bytes(signed.signature)) == Account.from_key(key).address
    # both use RFC 6979 deterministic nonces through libsecp256k1: identical bytes
    assert sign_digest(ours, key) == bytes(signed.signature)


def test_typed_data_message_shape() -> None:
    struct = StructType("Revoke", [("patient", "address"), ("grantId", "uint256")])
    doc = typed_data_message(DOMAIN, struct, {"patient": b"\xab" * 20, "grantId": 2**255})
    assert doc == {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Revoke": [
                {"name": "patient", "type": "address"},
                {"name": "grantId", "type": "uint256"},
            ],
        },
        "primaryType": "Revoke",
        "domain": {
            "name": "medtrail",
            "version": "1",
            "chainId": 31337,
            "verifyingContract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        },
        "message": {"patient": reference_checksum("0x" + "ab" * 20), "grantId": 2**255},
    }
    assert type(doc["message"]["grantId"]) is int


# ----------------------------------------------------------------------------- signatures

DIGEST = keccak(b"medtrail test digest")


@settings(max_examples=30, deadline=None)
@given(key=private_keys, message=st.binary(min_size=32, max_size=32))
def test_sign_digest_low_s_and_recovers(key: bytes, message: bytes) -> None:
    signature = sign_digest(message, key)
    assert len(signature) == 65
    assert signature[64] in (27, 28)
    assert int.from_bytes(signature[32:64], "big") <= SECP256K1_HALF_N
    assert recover(message, signature) == address_of(key) == Account.from_key(key).address
    assert bytes(Account.unsafe_sign_hash(message, key).signature) == signature


def test_sign_digest_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="digest"):
        sign_digest(DIGEST[:31], KEY)
    with pytest.raises(ValueError, match="32 bytes"):
        sign_digest(DIGEST, KEY[:31])
    with pytest.raises(ValueError, match="invalid"):
        sign_digest(DIGEST, bytes(32))
    with pytest.raises(ValueError, match="invalid"):
        sign_digest(DIGEST, SECP256K1_N.to_bytes(32, "big"))


def _sig(r: int, s: int, v: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


VALID = sign_digest(DIGEST, KEY)
R = int.from_bytes(VALID[:32], "big")
S = int.from_bytes(VALID[32:64], "big")
V = VALID[64]


def test_valid_signature_recovers() -> None:
    assert recover(DIGEST, VALID) == ACCOUNT.address
    assert recover(DIGEST, bytes(bytearray(VALID))) == ACCOUNT.address
    # a valid signature over another digest recovers some other address; no error
    assert recover(keccak(b"other"), VALID) != ACCOUNT.address


def test_high_s_variant_rejected() -> None:
    """(r, n - s, v flipped) is the same signature, malleated: refused like OpenZeppelin."""
    high = _sig(R, SECP256K1_N - S, 55 - V)
    assert Account._recover_hash(DIGEST, signature=high) == ACCOUNT.address  # mathematically valid
    with pytest.raises(SignatureError, match="upper half") as info:
        recover(DIGEST, high)
    assert info.value.code == "invalid-signature"


@pytest.mark.parametrize("length", [0, 64, 66, 130])
def test_wrong_length_rejected(length: int) -> None:
    with pytest.raises(SignatureError, match="65 bytes"):
        recover(DIGEST, (VALID * 3)[:length])


@pytest.mark.parametrize("v", [0, 1, 26, 29, 35, 255])
def test_bad_v_rejected(v: int) -> None:
    """Only 27/28 (what eth-account emits and the contracts accept); 0/1 are refused."""
    with pytest.raises(SignatureError, match="v must be 27 or 28"):
        recover(DIGEST, VALID[:64] + bytes([v]))


@pytest.mark.parametrize("r", [0, SECP256K1_N, SECP256K1_N + 1, 2**256 - 1])
def test_bad_r_rejected(r: int) -> None:
    with pytest.raises(SignatureError, match="r must be"):
        recover(DIGEST, _sig(r, S, V))


@pytest.mark.parametrize("s", [0, SECP256K1_N, 2**256 - 1])
def test_bad_s_rejected(s: int) -> None:
    with pytest.raises(SignatureError, match="s must be"):
        recover(DIGEST, _sig(R, s, V))


def test_s_at_half_n_is_the_boundary() -> None:
    # n//2 itself is low-s (accepted by the range checks); n//2 + 1 is high-s
    with pytest.raises(SignatureError, match="upper half"):
        recover(DIGEST, _sig(R, SECP256K1_HALF_N + 1, V))
    assert recover(DIGEST, _sig(R, SECP256K1_HALF_N, V)).startswith("0x")


def test_unrecoverable_point_rejected() -> None:
    # x = 5 is not on secp256k1 (5**3 + 7 is a non-residue mod p): no R point exists
    with pytest.raises(SignatureError, match="no public key recovers"):
        recover(DIGEST, _sig(5, S, 27))


def test_non_bytes_signature_rejected() -> None:
    with pytest.raises(SignatureError, match="bytes"):
        recover(DIGEST, "0x" + VALID.hex())  # type: ignore[arg-type]


def test_recover_rejects_bad_digest_length() -> None:
    with pytest.raises(ValueError, match="digest"):
        recover(DIGEST[:31], VALID)


def test_address_of() -> None:
    assert address_of(KEY) == ACCOUNT.address
