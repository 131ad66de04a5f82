"""Pure, fast EIP-712 hashing and secp256k1 signing / recovery.

Only what medtrail's flat structs need: static field types (``address``, ``bool``,
``bytes1``..``bytes32``, ``uint8``..``uint256``), no nested structs, no arrays. No web3.

* :func:`keccak` uses the C ``safe-pysha3`` module when present (about 7x faster than the
  pycryptodome backend that ``eth_hash.auto`` picks), then pycryptodome, then eth-hash.
* :class:`StructType` precomputes ``encodeType`` and ``typeHash`` and encodes each field
  with a hand-written 32-byte-word encoder; :meth:`StructType.encode_data_abi` is the
  reference eth-abi encoding of the same values (the tests check they agree bit for bit).
* :func:`recover` is strict, like OpenZeppelin's ``ECDSA.recover``: 65-byte ``r ‖ s ‖ v``
  with ``v`` in {27, 28} only (``0``/``1`` and 64-byte ERC-2098 signatures are refused,
  as the contracts refuse them), ``0 < r < n``, ``0 < s <= n/2`` (no malleable high-s).
* :func:`check_signature` is the one signature check of medtrail (events, receipts, sign-in
  messages; the service, the wallet and the regulator's tools): digest, signature and the
  expected signer in; the signer it recovers to if another, or :class:`SignatureError`.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from operator import call
from typing import Any, Final

from coincurve import PrivateKey, PublicKey
from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

from ledger.errors import MalformedEventError, SignatureError

__all__ = [
    "DOMAIN_FIELDS",
    "DOMAIN_TYPE_HASH",
    "DOMAIN_TYPE_STRING",
    "KECCAK_BACKEND",
    "SECP256K1_HALF_N",
    "SECP256K1_N",
    "Domain",
    "StructType",
    "address_of",
    "check_signature",
    "digest",
    "keccak",
    "parse_address",
    "recover",
    "sign_digest",
    "to_checksum_address",
    "typed_data_message",
]


# --------------------------------------------------------------------------- keccak


def _pick_keccak() -> tuple[Callable[[bytes], bytes], str]:
    try:
        sha3: Any = importlib.import_module("sha3")
        keccak_256 = sha3.keccak_256
        if keccak_256(b"").hexdigest() == (
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        ):

            def _pysha3(data: bytes) -> bytes:
                return keccak_256(data).digest()  # type: ignore[no-any-return]

            return _pysha3, "safe-pysha3"
    except ImportError:
        pass
    try:
        from Crypto.Hash import keccak as _cryptodome_keccak

        new = _cryptodome_keccak.new

        def _cryptodome(data: bytes) -> bytes:
            return new(data=data, digest_bits=256).digest()

        return _cryptodome, "pycryptodome"
    except ImportError:  # pragma: no cover - eth-account always brings one backend
        from eth_hash.auto import keccak as _auto

        def _eth_hash(data: bytes) -> bytes:
            return bytes(_auto(data))

        return _eth_hash, "eth-hash-auto"


_keccak, KECCAK_BACKEND = _pick_keccak()


def keccak(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's, not NIST SHA3-256) of ``data``."""
    return _keccak(data)


# --------------------------------------------------------------------------- addresses

_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_HIGH_NIBBLE: Final = frozenset("89abcdef")


@lru_cache(maxsize=4096)
def _checksum(address: bytes) -> str:
    lower = address.hex()
    hashed = keccak(lower.encode("ascii")).hex()
    return "0x" + "".join(
        c.upper() if h in _HIGH_NIBBLE else c for c, h in zip(lower, hashed[:40], strict=True)
    )


def to_checksum_address(address: bytes | str) -> str:
    """The EIP-55 checksummed form of a 20-byte address (bytes or 0x-hex of any case).

    A mixed-case string must already carry a valid checksum.
    """
    return _checksum(parse_address(address))


def parse_address(value: Any, field: str = "address") -> bytes:
    """A 20-byte address from bytes or a ``0x``-hex string.

    All-lowercase and all-uppercase hex are accepted as is; mixed case must be a valid
    EIP-55 checksum. Raises :class:`MalformedEventError` (its detail starts with
    ``field``). Parsed strings are cached (institutions and patients recur).
    """
    if type(value) is str:
        try:
            return _parse_address_text(value)
        except ValueError as exc:
            raise MalformedEventError(f"{field}: {exc}", field=field) from None
    if isinstance(value, bytes | bytearray):
        if len(value) != 20:
            raise MalformedEventError(
                f"{field}: an address must be 20 bytes, got {len(value)}", field=field
            )
        return bytes(value)
    if isinstance(value, str):  # a str subclass: not cached
        return parse_address(str(value), field)
    raise MalformedEventError(
        f"{field}: an address must be a 0x-hex string, got {type(value).__name__}",
        field=field,
    )


@lru_cache(maxsize=65536)
def _parse_address_text(value: str) -> bytes:
    """Parse 0x-hex; raises ``ValueError`` with a message (exceptions are not cached)."""
    if value[:2] not in ("0x", "0X"):
        raise ValueError("an address must start with 0x")
    digits = value[2:]
    if len(digits) != 40:
        raise ValueError(f"an address must have 40 hex digits after 0x, got {len(digits)}")
    if not _HEX_DIGITS.issuperset(digits):
        raise ValueError("an address must contain only hex digits")
    raw = bytes.fromhex(digits)
    mixed_case = not (digits.islower() or digits.isupper() or digits.isdigit())
    if mixed_case and _checksum(raw)[2:] != digits:
        raise ValueError(f"invalid EIP-55 checksum (expected {_checksum(raw)})")
    return raw


# --------------------------------------------------------------------------- struct types

_UINT_RE: Final = re.compile(r"uint(\d+)")
_BYTES_RE: Final = re.compile(r"bytes(\d+)")

#: Canonicalises one field value (validating it) for eth-abi.
_Canon = Callable[[Any], Any]
#: Canonicalises and encodes one field value as a 32-byte word.
_Word = Callable[[Any], bytes]


def _uint_codec(field: str, bits: int) -> tuple[_Canon, _Word]:
    limit = 1 << bits

    def canon(value: Any) -> int:
        if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
            raise MalformedEventError(
                f"{field}: uint{bits} must be an int, got {type(value).__name__}", field=field
            )
        if not 0 <= value < limit:
            raise MalformedEventError(f"{field}: {value} out of range for uint{bits}", field=field)
        return int(value)

    def word(value: Any) -> bytes:
        if type(value) is not int and (not isinstance(value, int) or isinstance(value, bool)):
            canon(value)  # raises
        if not 0 <= value < limit:
            canon(value)  # raises
        return int(value).to_bytes(32, "big")

    return canon, word


def _bytes_codec(field: str, size: int) -> tuple[_Canon, _Word]:
    pad = bytes(32 - size)

    def canon(value: Any) -> bytes:
        if isinstance(value, bytes | bytearray):
            if len(value) != size:
                raise MalformedEventError(
                    f"{field}: bytes{size} must be exactly {size} bytes, got {len(value)}",
                    field=field,
                )
            return bytes(value)
        if isinstance(value, str):
            if value[:2] not in ("0x", "0X"):
                raise MalformedEventError(
                    f"{field}: bytes{size} must be bytes or 0x-hex", field=field
                )
            digits = value[2:]
            if len(digits) != 2 * size or not _HEX_DIGITS.issuperset(digits):
                raise MalformedEventError(
                    f"{field}: bytes{size} must be 0x followed by {2 * size} hex digits",
                    field=field,
                )
            return bytes.fromhex(digits)
        raise MalformedEventError(
            f"{field}: bytes{size} must be bytes or 0x-hex, got {type(value).__name__}",
            field=field,
        )

    if size == 32:

        def word(value: Any) -> bytes:
            if type(value) is bytes and len(value) == 32:
                return value
            return canon(value)

    else:

        def word(value: Any) -> bytes:
            return canon(value) + pad

    return canon, word


def _address_codec(field: str) -> tuple[_Canon, _Word]:
    zeros = bytes(12)

    def canon(value: Any) -> bytes:
        return parse_address(value, field)

    def word(value: Any) -> bytes:
        if type(value) is str:
            try:
                return zeros + _parse_address_text(value)  # cached
            except ValueError:
                pass  # parse_address raises with the field name
        elif type(value) is bytes and len(value) == 20:
            return zeros + value
        return zeros + parse_address(value, field)

    return canon, word


def _bool_codec(field: str) -> tuple[_Canon, _Word]:
    true_word = (1).to_bytes(32, "big")
    false_word = bytes(32)

    def canon(value: Any) -> bool:
        if not isinstance(value, bool):
            raise MalformedEventError(
                f"{field}: bool must be True or False, got {type(value).__name__}", field=field
            )
        return value

    def word(value: Any) -> bytes:
        return true_word if canon(value) else false_word

    return canon, word


def _codec(field: str, sol_type: str) -> tuple[_Canon, _Word]:
    if sol_type == "address":
        return _address_codec(field)
    if sol_type == "bool":
        return _bool_codec(field)
    if m := _UINT_RE.fullmatch(sol_type):
        bits = int(m.group(1))
        if bits % 8 == 0 and 8 <= bits <= 256:
            return _uint_codec(field, bits)
    if m := _BYTES_RE.fullmatch(sol_type):
        size = int(m.group(1))
        if 1 <= size <= 32:
            return _bytes_codec(field, size)
    raise ValueError(f"unsupported EIP-712 field type {sol_type!r} for {field!r}")


def _json_value(sol_type: str, canonical: Any) -> Any:
    """A canonical value in typed-data JSON form (hex bytes, checksummed address, int)."""
    if sol_type == "address":
        return _checksum(canonical)
    if sol_type.startswith("bytes"):
        return "0x" + canonical.hex()
    return canonical


class StructType:
    """A flat EIP-712 struct type with precomputed ``encodeType`` and ``typeHash``.

    ``values`` given to the hashing methods are either a mapping by field name (exactly
    the struct's fields) or a sequence in field order. Accepted per type: ``uintN`` an
    int (not bool; IntEnum is fine); ``address`` 20 bytes or 0x-hex (checksum checked when
    mixed case); ``bytesN`` N bytes or 0x + 2N hex digits; ``bool`` a bool.
    Anything else raises :class:`MalformedEventError`.
    """

    __slots__ = (
        "_canons",
        "_index",
        "_words",
        "abi_types",
        "field_names",
        "fields",
        "name",
        "type_hash",
        "type_string",
    )

    def __init__(self, name: str, fields: Sequence[tuple[str, str]]) -> None:
        if not name.isidentifier():
            raise ValueError(f"invalid struct name {name!r}")
        names = [f for f, _ in fields]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate field names in {name}")
        self.name: str = name
        self.fields: tuple[tuple[str, str], ...] = tuple((f, t) for f, t in fields)
        self.field_names: tuple[str, ...] = tuple(names)
        self.abi_types: tuple[str, ...] = tuple(t for _, t in fields)
        self.type_string: str = f"{name}(" + ",".join(f"{t} {f}" for f, t in fields) + ")"
        self.type_hash: bytes = keccak(self.type_string.encode("ascii"))
        codecs = [_codec(f, t) for f, t in fields]
        self._canons: tuple[_Canon, ...] = tuple(c for c, _ in codecs)
        self._words: tuple[_Word, ...] = tuple(w for _, w in codecs)
        self._index: frozenset[str] = frozenset(names)

    def __repr__(self) -> str:
        return f"StructType({self.type_string!r})"

    # -- value plumbing ---------------------------------------------------------------

    def _ordered(self, values: Mapping[str, Any] | Sequence[Any]) -> Sequence[Any]:
        if type(values) is tuple and len(values) == len(self.field_names):
            return values  # the hot path (models pass tuples); skips the ABC checks
        if isinstance(values, Mapping):
            try:
                ordered = [values[f] for f in self.field_names]
            except KeyError as exc:
                missing = [f for f in self.field_names if f not in values]
                raise MalformedEventError(
                    f"{self.name}: missing field(s) {', '.join(missing)}", missing=missing
                ) from exc
            if len(values) != len(ordered):
                extra = sorted(str(k) for k in values if k not in self._index)
                raise MalformedEventError(
                    f"{self.name}: unknown field(s) {', '.join(extra)}", extra=extra
                )
            return ordered
        if isinstance(values, str | bytes):
            raise MalformedEventError(f"{self.name}: values must be a mapping or a sequence")
        if len(values) != len(self.field_names):
            raise MalformedEventError(
                f"{self.name}: expected {len(self.field_names)} values, got {len(values)}"
            )
        return values

    def canonical(self, values: Mapping[str, Any] | Sequence[Any]) -> tuple[Any, ...]:
        """Validated values in field order: ints, 20-byte addresses, bytes, bools."""
        ordered = self._ordered(values)
        return tuple(c(v) for c, v in zip(self._canons, ordered, strict=True))

    # -- hashing ------------------------------------------------------------------------

    def encode_data(self, values: Mapping[str, Any] | Sequence[Any]) -> bytes:
        """``encodeData``: the concatenated 32-byte words (without the type hash)."""
        return b"".join(map(call, self._words, self._ordered(values)))

    def encode_data_abi(self, values: Mapping[str, Any] | Sequence[Any]) -> bytes:
        """Reference ``encodeData`` through eth-abi (slower; equal to :meth:`encode_data`)."""
        from eth_abi.abi import encode  # only here: its import costs the tools' start-up

        return encode(self.abi_types, self.canonical(values))

    def hash_struct(self, values: Mapping[str, Any] | Sequence[Any]) -> bytes:
        """``hashStruct = keccak(typeHash ‖ encodeData)``."""
        return _keccak(self.type_hash + b"".join(map(call, self._words, self._ordered(values))))

    # -- typed-data JSON ----------------------------------------------------------------

    def types_json(self) -> list[dict[str, str]]:
        """The ``types[name]`` entry of a typed-data document."""
        return [{"name": f, "type": t} for f, t in self.fields]

    def message_json(self, values: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
        """The ``message`` of a typed-data document: hex bytes, checksummed addresses, ints."""
        canonical = self.canonical(values)
        return {f: _json_value(t, v) for (f, t), v in zip(self.fields, canonical, strict=True)}


# --------------------------------------------------------------------------- domain

DOMAIN_FIELDS: Final = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
)
DOMAIN_TYPE_STRING: Final = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
DOMAIN_TYPE_HASH: Final = keccak(DOMAIN_TYPE_STRING.encode("ascii"))


@dataclass(frozen=True)
class Domain:
    """An EIP-712 domain ``(name, version, chainId, verifyingContract)``.

    ``verifying_contract`` is normalised to its EIP-55 checksum; ``separator`` is cached.
    """

    name: str
    version: str
    chain_id: int
    verifying_contract: str

    def __post_init__(self) -> None:
        if not isinstance(self.chain_id, int) or isinstance(self.chain_id, bool):
            raise MalformedEventError("chain_id must be an int")
        if not 0 < self.chain_id < 1 << 256:
            raise MalformedEventError(f"chain_id {self.chain_id} out of range")
        address = parse_address(self.verifying_contract, "verifyingContract")
        object.__setattr__(self, "verifying_contract", _checksum(address))

    @cached_property
    def separator(self) -> bytes:
        """``hashStruct(EIP712Domain)``, the domain separator."""
        return keccak(
            DOMAIN_TYPE_HASH
            + keccak(self.name.encode("utf-8"))
            + keccak(self.version.encode("utf-8"))
            + self.chain_id.to_bytes(32, "big")
            + bytes(12)
            + bytes.fromhex(self.verifying_contract[2:])
        )

    def as_json(self) -> dict[str, Any]:
        """The ``domain`` of a typed-data document."""
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


def digest(domain_separator: bytes, struct_hash: bytes) -> bytes:
    """The EIP-712 digest ``keccak(0x19 ‖ 0x01 ‖ domainSeparator ‖ hashStruct)``."""
    if len(domain_separator) != 32 or len(struct_hash) != 32:
        raise ValueError("domain separator and struct hash must be 32 bytes each")
    return _keccak(b"\x19\x01" + domain_separator + struct_hash)


def typed_data_message(
    domain: Domain, struct_type: StructType, values: Mapping[str, Any] | Sequence[Any]
) -> dict[str, Any]:
    """A complete typed-data document for ``eth_signTypedData_v4`` / eth-account.

    Pass it as ``Account.sign_typed_data(key, full_message=...)`` or to MetaMask. (ethers
    and viem take ``domain``, ``types`` without ``EIP712Domain``, and ``message``.)
    """
    return {
        "types": {
            "EIP712Domain": [{"name": f, "type": t} for f, t in DOMAIN_FIELDS],
            struct_type.name: struct_type.types_json(),
        },
        "primaryType": struct_type.name,
        "domain": domain.as_json(),
        "message": struct_type.message_json(values),
    }


# --------------------------------------------------------------------------- secp256k1

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
#: The largest accepted ``s`` (EIP-2 / OpenZeppelin ``ECDSA``): ``n // 2``.
SECP256K1_HALF_N: Final = SECP256K1_N // 2

_CTX: Final = GLOBAL_CONTEXT.ctx


def sign_digest(digest: bytes, private_key: bytes) -> bytes:
    """Sign a 32-byte digest: 65 bytes ``r ‖ s ‖ v`` with ``v`` in {27, 28} and low ``s``.

    Deterministic (RFC 6979 nonces, libsecp256k1's default), so equal to eth-account's
    signature of the same digest. Raises ``ValueError`` for a bad digest or key.
    """
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise ValueError("the digest must be 32 bytes")
    if not isinstance(private_key, bytes) or len(private_key) != 32:
        raise ValueError("the private key must be 32 bytes")
    # The low-level call skips deriving the public key (half the cost of PrivateKey()).
    if not lib.secp256k1_ec_seckey_verify(_CTX, private_key):
        raise ValueError("invalid secp256k1 private key")
    signature = ffi.new("secp256k1_ecdsa_recoverable_signature *")
    if not lib.secp256k1_ecdsa_sign_recoverable(
        _CTX, signature, digest, private_key, ffi.NULL, ffi.NULL
    ):  # pragma: no cover - only fails for an invalid key, checked above
        raise ValueError("signing failed")
    output = ffi.new("unsigned char[64]")
    recid = ffi.new("int *")
    lib.secp256k1_ecdsa_recoverable_signature_serialize_compact(_CTX, output, recid, signature)
    if recid[0] > 1:  # pragma: no cover - needs r >= n, probability ~2**-127
        raise ValueError("signature with an overflowing r; cannot express with v in {27, 28}")
    return bytes(ffi.buffer(output, 64)) + bytes((27 + recid[0],))


def recover(digest: bytes, signature: bytes) -> str:
    """The checksummed address that signed ``digest``, or :class:`SignatureError`.

    Refuses (each with its own message): a length other than 65; ``v`` not 27 or 28;
    ``r`` or ``s`` zero or >= n; ``s > n/2`` (high-s, malleable); a signature from which
    no public key recovers.
    """
    if len(digest) != 32:
        raise ValueError("the digest must be 32 bytes")
    if not isinstance(signature, bytes | bytearray):
        raise SignatureError("the signature must be bytes")
    if len(signature) != 65:
        raise SignatureError(
            f"a signature must be 65 bytes (r ‖ s ‖ v), got {len(signature)}",
            length=len(signature),
        )
    v = signature[64]
    if v not in (27, 28):
        raise SignatureError(f"signature v must be 27 or 28, got {v}", v=v)
    r = int.from_bytes(signature[:32], "big")
    if not 0 < r < SECP256K1_N:
        raise SignatureError("signature r must be in [1, n-1]")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < s < SECP256K1_N:
        raise SignatureError("signature s must be in [1, n-1]")
    if s > SECP256K1_HALF_N:
        raise SignatureError("signature s is in the upper half of the curve order (malleable)")
    try:
        public = PublicKey.from_signature_and_message(
            bytes(signature[:64]) + bytes((v - 27,)), bytes(digest), hasher=None
        )
    except ValueError as exc:
        raise SignatureError("no public key recovers from this signature") from exc
    return _checksum(keccak(public.format(compressed=False)[1:])[12:])


def check_signature(digest: bytes, signature: bytes, expected: str) -> str | None:
    """The one signature check: None when ``expected`` signed ``digest``, else the address the
    signature recovers to. Raises :class:`SignatureError` (as :func:`recover` says why) for
    a malformed or malleable signature, or one from which no key recovers.

    ``expected`` is compared as an EIP-55 address (any case of the same address matches).
    """
    signer = recover(digest, signature)
    return None if signer == to_checksum_address(expected) else signer


def address_of(private_key: bytes) -> str:
    """The checksummed Ethereum address of a 32-byte secp256k1 private key."""
    public = PrivateKey(private_key).public_key.format(compressed=False)[1:]
    return _checksum(keccak(public)[12:])
