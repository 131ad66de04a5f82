"""medtrail's contracts as ABI values: calls, events and custom errors, from the artifacts.

Everything a reader encodes or decodes comes from the committed artifacts' ABIs
(:mod:`ledger.chain.artifacts`) through ``eth_abi``, never from a hand-kept layout: a
:class:`Function` knows its selector and its input and output types, an event its topic, and
:func:`decode_revert` turns any revert data into a :class:`ContractReverted` naming the
contract's custom error. Decoding is strict (``eth_abi``'s: padding, booleans, lengths and
pointers are checked) and a malformed answer is a :class:`~ledger.chain.model.ChainError`,
never a wrong value.

Nothing here talks to a node, and web3 is not imported: the regulator's tools and the wallet
read the chain with this and :mod:`ledger.chain.rpc` alone. ``eth_abi`` itself is imported on
first use (it costs a few hundred milliseconds that a ``--help`` should not pay).
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from ledger.chain.artifacts import ALL_CONTRACT_NAMES, load_artifact
from ledger.chain.model import ChainError
from ledger.eip712 import keccak, to_checksum_address
from ledger.errors import LedgerError

__all__ = [
    "ContractReverted",
    "Function",
    "decode_revert",
    "error_selector",
    "event_topic",
    "function",
    "revert_data_of_tester",
]


class ContractReverted(LedgerError):
    """A contract call reverted; ``error`` is the custom error's name, ``args`` its arguments."""

    code = "contract-reverted"
    status = 409

    def __init__(self, error: str, args: tuple[Any, ...], detail: str | None = None) -> None:
        super().__init__(detail or f"contract reverted with {error}{args!r}", error=error)
        self.error = error
        self.args_ = args


def _canonical_type(item: dict[str, Any]) -> str:
    kind = str(item["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in item["components"])
        return f"({inner}){kind[5:]}"
    return kind


def _item(contract: str, kind: str, name: str) -> dict[str, Any]:
    found = [
        item
        for item in load_artifact(contract).abi
        if item.get("type") == kind and item.get("name") == name
    ]
    if len(found) != 1:
        raise LookupError(f"{contract} has {len(found)} {kind}s named {name!r}, not one")
    return found[0]


def _signature(name: str, types: Sequence[str]) -> bytes:
    return f"{name}({','.join(types)})".encode("ascii")


@dataclass(frozen=True)
class Function:
    """One function of a contract's ABI: what to send, and how to read the answer."""

    contract: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def selector(self) -> bytes:
        return keccak(_signature(self.name, self.inputs))[:4]

    def encode(self, *args: Any) -> bytes:
        """The calldata of a call with ``args`` (in the ABI's order)."""
        from eth_abi.abi import encode

        return self.selector + encode(list(self.inputs), list(args))

    def encode_calls(self, calls: Sequence[tuple[Any, ...]], varying: int) -> list[bytes]:
        """:meth:`encode` of each call, cheaper where calls differ only in argument
        ``varying``, which must be of a static type: the first of them is encoded whole, and
        the others are that calldata with the argument's own encoding in place of its words,
        where the ABI puts a static argument (in the head, after the heads of the arguments
        before it). Issue 15: ``grantStatusAt`` asked for many accesses under one grant, its
        struct and signature encoded again for each (~65 µs a call, ~27 for the access)."""
        from eth_abi.abi import encode

        kind = self.inputs[varying]
        size = _static_size(kind)
        if size is None:
            raise ValueError(f"argument {varying} of {self.name} is of a dynamic type ({kind})")
        start = len(self.selector) + sum(_static_size(k) or 32 for k in self.inputs[:varying])
        whole: dict[tuple[Any, ...], bytes] = {}
        encoded: list[bytes] = []
        for args in calls:
            key = (*args[:varying], *args[varying + 1 :])
            try:
                first = whole.get(key)
            except TypeError:  # an argument that cannot be a key: encoded whole
                encoded.append(self.encode(*args))
                continue
            if first is None:
                first = whole[key] = self.encode(*args)
                encoded.append(first)
                continue
            words = encode([kind], [args[varying]])
            encoded.append(first[:start] + words + first[start + size :])
        return encoded

    def decode(self, data: bytes, what: str | None = None) -> tuple[Any, ...]:
        """The outputs of an answer, strictly decoded; :class:`ChainError` when ``data`` is
        not an encoding of them. Addresses come back EIP-55 checksummed."""
        from eth_abi.abi import decode
        from eth_abi.exceptions import DecodingError

        label = what or f"{self.contract}.{self.name}"
        try:
            values = decode(list(self.outputs), bytes(data))
        except (DecodingError, ValueError, OverflowError) as exc:
            raise ChainError(
                f"{label} answered data that is not an encoding of its outputs "
                f"({', '.join(self.outputs)}): {exc}"
            ) from exc
        return tuple(
            _checksummed(kind, value) for kind, value in zip(self.outputs, values, strict=True)
        )


def _checksummed(kind: str, value: Any) -> Any:
    """``value`` of ABI type ``kind`` with every address in it EIP-55 checksummed (eth_abi
    gives them in lowercase), tuples and arrays included."""
    if kind == "address":
        return to_checksum_address(value)
    if kind.endswith("]"):
        inner = kind[: kind.rindex("[")]
        return tuple(_checksummed(inner, item) for item in value)
    if kind.startswith("("):
        components = _split_components(kind[1:-1])
        return tuple(_checksummed(c, item) for c, item in zip(components, value, strict=True))
    return value


@cache
def _static_size(kind: str) -> int | None:
    """The bytes a value of ABI type ``kind`` takes in place (a static type's whole encoding);
    None for a dynamic type (its place holds an offset)."""
    from eth_abi.grammar import TupleType, parse

    def size(parsed: Any) -> int:
        if isinstance(parsed, TupleType):
            base = sum(size(component) for component in parsed.components)
        else:
            base = 32
        for dimension in parsed.arrlist or ():
            base *= dimension[0]
        return base

    parsed = parse(kind)
    return None if parsed.is_dynamic else size(parsed)


def _split_components(inner: str) -> list[str]:
    """The component types of a tuple type's inside: ``uint8,(address,bool)[]`` → two."""
    parts: list[str] = []
    depth, start = 0, 0
    for position, character in enumerate(inner):
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
        elif character == "," and depth == 0:
            parts.append(inner[start:position])
            start = position + 1
    if inner:
        parts.append(inner[start:])
    return parts


@cache
def function(contract: str, name: str) -> Function:
    """Function ``name`` of ``contract`` (one of :data:`~ledger.chain.artifacts.CONTRACT_NAMES`)
    as its artifact's ABI declares it."""
    item = _item(contract, "function", name)
    return Function(
        contract,
        name,
        tuple(_canonical_type(i) for i in item["inputs"]),
        tuple(_canonical_type(o) for o in item["outputs"]),
    )


@cache
def event_topic(contract: str, name: str) -> bytes:
    """The first topic (signature hash) of event ``name`` of ``contract``."""
    item = _item(contract, "event", name)
    return keccak(_signature(name, [_canonical_type(i) for i in item["inputs"]]))


@cache
def error_selector(contract: str, name: str) -> bytes:
    """The 4-byte selector of custom error ``name`` of ``contract``."""
    item = _item(contract, "error", name)
    return keccak(_signature(name, [_canonical_type(i) for i in item["inputs"]]))[:4]


@dataclass(frozen=True)
class _ErrorAbi:
    name: str
    types: tuple[str, ...]


@cache
def _error_table() -> dict[bytes, _ErrorAbi]:
    """Selector → custom error, over every medtrail contract and Solidity's own errors."""
    table: dict[bytes, _ErrorAbi] = {}
    for name in ALL_CONTRACT_NAMES:
        for item in load_artifact(name).abi:
            if item.get("type") != "error":
                continue
            types = tuple(_canonical_type(i) for i in item["inputs"])
            table[keccak(_signature(item["name"], types))[:4]] = _ErrorAbi(item["name"], types)
    table[keccak(b"Error(string)")[:4]] = _ErrorAbi("Error", ("string",))
    table[keccak(b"Panic(uint256)")[:4]] = _ErrorAbi("Panic", ("uint256",))
    return table


def decode_revert(data: str | bytes | dict[str, Any] | None) -> ContractReverted:
    """Turn revert data (bytes, 0x-hex, or a node's ``{"data": …}``) into a
    :class:`ContractReverted` naming the custom error and its arguments."""
    from eth_abi.abi import decode

    if isinstance(data, dict):
        data = data.get("data")
    raw = (
        bytes.fromhex(data[2:] if data.startswith("0x") else data)
        if isinstance(data, str)
        else data
    )
    if not raw or len(raw) < 4:
        return ContractReverted("Revert", ())
    abi = _error_table().get(raw[:4])
    if abi is None:
        return ContractReverted("UnknownError", ("0x" + raw.hex(),))
    try:
        values = decode(list(abi.types), raw[4:])
    except Exception:  # malformed revert payload: report it rather than crash
        return ContractReverted(abi.name, ("0x" + raw[4:].hex(),))
    args = tuple(_checksummed(kind, value) for kind, value in zip(abi.types, values, strict=True))
    return ContractReverted(abi.name, args)


def revert_data_of_tester(exc: BaseException) -> bytes | None:
    """The revert data of eth-tester's ``TransactionFailed``, if ``exc`` is one (None if not).

    eth-tester raises it with the raw data as its argument, or (through web3's provider) with
    the message ``execution reverted: b'...'`` — the *repr* of the data — and the original
    exception, still holding the data (possibly wrapped in py-evm's ``Revert``), as its
    ``__context__``.
    """
    if type(exc).__name__ != "TransactionFailed":
        return None
    for candidate in (exc.__context__, exc):
        while isinstance(candidate, BaseException) and candidate.args:
            first = candidate.args[0]
            if isinstance(first, bytes | bytearray):
                return bytes(first)
            candidate = first if isinstance(first, BaseException) else None
    message = str(exc.args[0]) if exc.args else ""
    _, _, literal = message.rpartition("execution reverted: ")
    if literal.startswith(("b'", 'b"')):
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            return b""
        return bytes(value) if isinstance(value, bytes) else b""
    return b""
