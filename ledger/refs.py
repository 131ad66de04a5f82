"""Keyed opaque references, and the 32-byte hex helpers shared by the hashing code.

An institution never sends a raw local identifier (a medical record number, a staff
number) to the ledger. It sends ``HMAC-SHA256(key, label ‖ 0x00 ‖ utf8(local_id))``
instead, where ``key`` is a secret only the institution holds (at least 16 bytes) and
``label`` separates the kinds of reference, so a record id and a staff id that happen to
be equal never give the same reference. The institution can recompute a reference to
look a record up; nobody without the key can invert or even test a guess.
"""

from __future__ import annotations

import hashlib
import hmac

from ledger.errors import MalformedEventError, WeakKeyError

__all__ = [
    "MIN_KEY_BYTES",
    "RECORD_REF_LABEL",
    "STAFF_REF_LABEL",
    "ZERO32",
    "from_hex32",
    "keyed_ref",
    "record_ref",
    "staff_ref",
    "to_hex32",
]

#: The shortest accepted HMAC key (128 bits).
MIN_KEY_BYTES = 16
#: Domain-separation label of record references (``recordRef``, ``serviceRef``).
RECORD_REF_LABEL = b"medtrail/record-ref/v1"
#: Domain-separation label of staff references (``actor``, ``prescriber``, ``pharmacist``).
STAFF_REF_LABEL = b"medtrail/staff-ref/v1"
#: 32 zero bytes ("none" for ``reasonHash``, "all records" for a grant's ``recordRef``).
ZERO32 = bytes(32)

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def keyed_ref(key: bytes, label: bytes, local_id: str) -> bytes:
    """``HMAC-SHA256(key, label ‖ 0x00 ‖ utf8(local_id))``: a 32-byte opaque reference.

    ``label`` must not contain a zero byte (it is the separator), ``local_id`` must not be
    empty. Raises :class:`WeakKeyError` for a key shorter than :data:`MIN_KEY_BYTES`.
    """
    if not isinstance(key, bytes | bytearray):
        raise WeakKeyError("the reference key must be bytes")
    if len(key) < MIN_KEY_BYTES:
        raise WeakKeyError(
            f"the reference key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}",
            key_bytes=len(key),
        )
    if not label or b"\x00" in label:
        raise ValueError("a reference label must be non-empty and contain no zero byte")
    if not isinstance(local_id, str) or not local_id:
        raise MalformedEventError("a local identifier must be a non-empty string")
    message = label + b"\x00" + local_id.encode("utf-8")
    return hmac.new(bytes(key), message, hashlib.sha256).digest()


def record_ref(key: bytes, local_id: str) -> bytes:
    """The opaque ``recordRef`` of an institution's local record id."""
    return keyed_ref(key, RECORD_REF_LABEL, local_id)


def staff_ref(key: bytes, staff_id: str) -> bytes:
    """The opaque staff reference (``actor``, ``prescriber``, ``pharmacist``) of a staff id."""
    return keyed_ref(key, STAFF_REF_LABEL, staff_id)


def to_hex32(value: bytes) -> str:
    """32 bytes as ``0x`` + 64 lowercase hex digits (the wire form of ``bytes32``)."""
    if not isinstance(value, bytes | bytearray) or len(value) != 32:
        raise MalformedEventError("a bytes32 value must be exactly 32 bytes")
    return "0x" + value.hex()


def from_hex32(text: str) -> bytes:
    """Parse ``0x`` + 64 hex digits (either case) into 32 bytes.

    Raises :class:`MalformedEventError` naming what is wrong (prefix, length, digit).
    """
    if not isinstance(text, str):
        raise MalformedEventError(
            f"a bytes32 value must be a 0x-hex string, got {type(text).__name__}"
        )
    if len(text) != 66 or text[:2] not in ("0x", "0X"):
        if text[:2] not in ("0x", "0X"):
            raise MalformedEventError("a bytes32 value must start with 0x")
        raise MalformedEventError(
            f"a bytes32 value must have 64 hex digits after 0x, got {len(text) - 2}"
        )
    digits = text[2:]
    if not _HEX_DIGITS.issuperset(digits):
        raise MalformedEventError("a bytes32 value must contain only hex digits")
    return bytes.fromhex(digits)
