"""ledger.refs: keyed opaque references and the bytes32 hex helpers."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import LedgerError, MalformedEventError, WeakKeyError
from ledger.refs import (
    MIN_KEY_BYTES,
    RECORD_REF_LABEL,
    STAFF_REF_LABEL,
    from_hex32,
    keyed_ref,
    record_ref,
    staff_ref,
    to_hex32,
)

KEY = b"k" * 32
keys = st.binary(min_size=MIN_KEY_BYTES, max_size=64)
ids = st.text(min_size=1, max_size=40)


@given(keys, ids)
def test_deterministic_and_documented_construction(key: bytes, local_id: str) -> None:
    ref = record_ref(key, local_id)
    assert len(ref) == 32
    assert ref == record_ref(key, local_id)
    expected = hmac.new(key, RECORD_REF_LABEL + b"\x00" + local_id.encode(), hashlib.sha256)
    assert ref == expected.digest()
    assert staff_ref(key, local_id) == keyed_ref(key, STAFF_REF_LABEL, local_id)


@given(keys, keys, ids)
def test_key_dependent(key_a: bytes, key_b: bytes, local_id: str) -> None:
    if key_a != key_b:
        assert record_ref(key_a, local_id) != record_ref(key_b, local_id)


@given(ids)
def test_label_separated(local_id: str) -> None:
    assert record_ref(KEY, local_id) != staff_ref(KEY, local_id)


def test_distinct_ids_distinct_refs() -> None:
    refs = {record_ref(KEY, f"MRN-{i}") for i in range(200)}
    assert len(refs) == 200
    assert record_ref(KEY, "MRN-1") != record_ref(KEY, "mrn-1")
    assert b"MRN-1" not in record_ref(KEY, "MRN-1")


@pytest.mark.parametrize("length", [0, 1, 8, MIN_KEY_BYTES - 1])
def test_short_key_rejected(length: int) -> None:
    with pytest.raises(WeakKeyError, match="at least 16 bytes") as info:
        record_ref(b"x" * length, "MRN-1")
    assert isinstance(info.value, LedgerError)
    assert info.value.code == "weak-key"
    with pytest.raises(WeakKeyError):
        staff_ref(b"x" * length, "S-1")


def test_min_key_accepted_and_non_bytes_key_rejected() -> None:
    assert len(record_ref(b"x" * MIN_KEY_BYTES, "MRN-1")) == 32
    assert record_ref(bytearray(KEY), "a") == record_ref(KEY, "a")  # type: ignore[arg-type]
    with pytest.raises(WeakKeyError, match="bytes"):
        record_ref("k" * 32, "MRN-1")  # type: ignore[arg-type]


def test_empty_or_non_str_id_rejected() -> None:
    with pytest.raises(MalformedEventError, match="non-empty"):
        record_ref(KEY, "")
    with pytest.raises(MalformedEventError, match="non-empty"):
        staff_ref(KEY, 42)  # type: ignore[arg-type]


def test_bad_labels_rejected() -> None:
    with pytest.raises(ValueError, match="label"):
        keyed_ref(KEY, b"", "x")
    with pytest.raises(ValueError, match="label"):
        keyed_ref(KEY, b"a\x00b", "x")


@given(st.binary(min_size=32, max_size=32))
def test_hex32_round_trip(raw: bytes) -> None:
    text = to_hex32(raw)
    assert text == "0x" + raw.hex()
    assert from_hex32(text) == raw
    assert from_hex32(text.upper().replace("0X", "0x")) == raw


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ab" * 32, "start with 0x"),
        ("0x" + "ab" * 31, "got 62"),
        ("0x" + "ab" * 33, "got 66"),
        ("0x" + "ab" * 31 + "zz", "only hex digits"),
        ("0x" + "ab" * 31 + " a", "only hex digits"),
        (b"\x00" * 32, "0x-hex string"),
    ],
)
def test_from_hex32_errors(text: object, fragment: str) -> None:
    with pytest.raises(MalformedEventError, match=fragment):
        from_hex32(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [b"", b"\x00" * 31, b"\x00" * 33, "0x" + "00" * 32])
def test_to_hex32_errors(value: object) -> None:
    with pytest.raises(MalformedEventError, match="exactly 32 bytes"):
        to_hex32(value)  # type: ignore[arg-type]
