"""The audit's fast path for events and mirror lines (issue 15) against pydantic itself.

``ledger.events.signed_event_from_json`` builds a :class:`SignedEvent` from parsed JSON
without pydantic's validation, and ``scripts.audit_log.entry_of_line`` a mirror's
:class:`RawLogEntryOut`; each must take only what pydantic takes, and make the same model of
it (the same values, of the same types, the same fields set). Documents are generated
well-formed, then broken one field at a time with values near every boundary the fields'
validators draw (lengths, prefixes, case, checksums, zero, integer ranges, JSON types).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from ledger.eip712 import to_checksum_address
from ledger.events import (
    EVENT_MODELS,
    Action,
    EventType,
    Purpose,
    SignedEvent,
    built_model,
    signed_event_from_json,
)
from ledger.wire import RawLogEntryOut
from scripts.audit_log import entry_of_line

# --------------------------------------------------------------------------- documents

_bytes32 = st.binary(min_size=32, max_size=32)
_address = st.binary(min_size=20, max_size=20).filter(any).map(to_checksum_address)


def _hex(raw: bytes) -> str:
    return "0x" + raw.hex()


_FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "Bytes32": _bytes32.map(_hex),
    "NonZeroBytes32": _bytes32.filter(any).map(_hex),
    "Address": _address,
    "ActionField": st.sampled_from([a.value for a in Action]),
    "PurposeField": st.sampled_from([p.value for p in Purpose]),
    "Uint256": st.integers(0, 2**256 - 1),
    "PositiveUint16": st.integers(1, 2**16 - 1),
    "PositiveUint64": st.integers(1, 2**64 - 1),
    "PositiveUint256": st.integers(1, 2**256 - 1),
}


def _annotation(model: type[BaseModel], name: str) -> str:
    for klass in model.__mro__:
        found = getattr(klass, "__annotations__", {}).get(name)
        if found is not None:
            return str(found)
    raise AssertionError(name)


@st.composite
def _event_document(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(list(EventType)))
    model = EVENT_MODELS[kind]
    event = {name: draw(_FIELD_VALUES[_annotation(model, name)]) for name in model.model_fields}
    signature = _hex(draw(st.binary(min_size=65, max_size=65)))
    return {"type": kind.value, "event": event, "signature": signature}


_HEX_DIGITS = "0123456789abcdefABCDEF"


@st.composite
def _odd_hex(draw: st.DrawFn) -> str:
    """Hex-looking strings near what the hex fields take: any prefix, length, case, a stray
    character or whitespace."""
    size = draw(st.sampled_from([19, 20, 21, 31, 32, 33, 64, 65, 66]))
    digits = draw(st.text(alphabet=_HEX_DIGITS, min_size=2 * size - 1, max_size=2 * size + 1))
    for _ in range(draw(st.integers(0, 2))):  # two spaces and 2 * size - 2 digits: 66 long
        at = draw(st.integers(0, len(digits)))
        stray = draw(st.sampled_from([" ", "\n", "g", "Z", "é", "\x00"]))
        digits = digits[:at] + stray + digits[at:]
    prefix = draw(st.sampled_from(["0x", "0X", "", "x0", "00", " 0x"]))
    return prefix + digits


_odd_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([2**16 - 1, 2**16, 2**64 - 1, 2**64, 2**256 - 1, 2**256, -(2**64)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1.0, 3.0]),
    st.text(max_size=8),
    _odd_hex(),
    _bytes32.map(_hex),
    _bytes32.map(lambda b: "0X" + b.hex().upper()),
    _address,
    _address.map(str.lower),
    _address.map(lambda a: "0x" + a[2:].upper()),
    _address.map(lambda a: a[:2] + a[2:].swapcase()),  # a broken checksum (mostly)
    st.just("0x" + "00" * 20),
    st.just("0x" + "00" * 32),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(0, 3), max_size=2),
)


@st.composite
def _broken(draw: st.DrawFn, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (a signed event) with one thing changed, or none."""
    doc = json.loads(json.dumps(document))
    event = doc["event"]
    how = draw(st.sampled_from(["none", "field", "field", "field", "drop", "extra", "outer"]))
    if how == "field":
        event[draw(st.sampled_from(sorted(event)))] = draw(_odd_values)
    elif how == "drop":
        del event[draw(st.sampled_from(sorted(event)))]
    elif how == "extra":
        target = draw(st.sampled_from([doc, event]))
        target[draw(st.sampled_from(["extra", "eventId", "type", "Type"]))] = draw(_odd_values)
    elif how == "outer":
        key = draw(st.sampled_from(["type", "event", "signature"]))
        if draw(st.booleans()):
            del doc[key]
        else:
            doc[key] = draw(st.one_of(_odd_values, st.sampled_from([t.value for t in EventType])))
    return doc


# --------------------------------------------------------------------------- sameness


def _assert_same(fast: Any, slow: Any) -> None:
    """The same model: equal, of the same types all the way down, the same fields set."""
    assert type(fast) is type(slow)
    if isinstance(slow, BaseModel):
        assert fast == slow
        assert fast.__pydantic_fields_set__ == slow.__pydantic_fields_set__
        assert fast.__pydantic_extra__ == slow.__pydantic_extra__
        assert fast.__pydantic_private__ == slow.__pydantic_private__
        assert list(fast.__dict__) == list(slow.__dict__)
        for name in type(slow).model_fields:
            _assert_same(getattr(fast, name), getattr(slow, name))
        assert fast.model_dump_json() == slow.model_dump_json()
        try:
            expected = hash(slow)
        except TypeError:  # a raw (malformed) event is a dict
            with pytest.raises(TypeError):
                hash(fast)
        else:
            assert hash(fast) == expected
    else:
        assert fast == slow


def _check_event(text: str) -> SignedEvent | None:
    fast = signed_event_from_json(from_json(text))
    if fast is not None:  # taken: pydantic takes it too, and makes the same model
        _assert_same(fast, SignedEvent.model_validate_json(text))
    return fast


# --------------------------------------------------------------------------- the events


@settings(max_examples=300, deadline=None)
@given(_event_document())
def test_a_well_formed_event_is_built_as_pydantic_builds_it(document: dict[str, Any]) -> None:
    assert _check_event(json.dumps(document)) is not None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_event_document().flatmap(_broken))
def test_what_the_fast_path_takes_pydantic_takes_and_builds_the_same(
    document: dict[str, Any],
) -> None:
    _check_event(json.dumps(document))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eventId", "0x" + "00" * 32),  # NonZeroBytes32
        ("recordRef", "0x" + "ab" * 31 + "  "),  # whitespace that fromhex would skip
        ("recordRef", "0x" + "ab" * 15 + " " + "ab" * 16 + " "),
        ("recordRef", "0x" + "ab" * 32 + "ab"),
        ("patient", "0x" + "00" * 20),
        ("action", True),  # a bool is not an integer here
        ("action", 1.0),
        ("action", 99),
        ("grantId", 2**256),
        ("occurredAt", 0),
        ("occurredAt", "5"),
    ],
)
def test_values_the_validators_refuse_are_left_to_pydantic(field: str, value: Any) -> None:
    document = {
        "type": "RecordAccess",
        "event": {
            "eventId": "0x" + "01" * 32,
            "recordRef": "0x" + "02" * 32,
            "custodian": to_checksum_address("0x" + "33" * 20),
            "patient": to_checksum_address("0x" + "44" * 20),
            "institution": to_checksum_address("0x" + "33" * 20),
            "actor": "0x" + "05" * 32,
            "action": 1,
            "purpose": 0,
            "grantId": 0,
            "reasonHash": "0x" + "00" * 32,
            "occurredAt": 1_700_000_000,
        },
        "signature": "0x" + "07" * 65,
    }
    assert _check_event(json.dumps(document)) is not None
    document["event"][field] = value
    assert _check_event(json.dumps(document)) is None
    with pytest.raises(ValidationError):
        SignedEvent.model_validate_json(json.dumps(document))


# --------------------------------------------------------------------------- mirror lines


@st.composite
def _entry_line(draw: st.DrawFn) -> str:
    event = draw(_event_document().flatmap(_broken))
    entry: dict[str, Any] = {
        "leafIndex": draw(st.one_of(st.integers(0, 2**64 - 1), _odd_values)),
        "eventDigest": draw(st.one_of(_bytes32.map(_hex), _odd_values)),
        "receivedAt": draw(st.one_of(st.integers(0, 2**64 - 1), _odd_values)),
        "consent": draw(st.one_of(st.sampled_from(["custodian", "covered"]), _odd_values)),
        "event": event,
    }
    if draw(st.booleans()):
        del entry[draw(st.sampled_from(sorted(entry)))]
    if draw(st.booleans()):
        entry["extra"] = 1  # ignored by the wire's models
    line = json.dumps(entry)
    return draw(st.sampled_from([line, line[:-1], line + " ", " " + line, line + "x"]))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_entry_line())
def test_a_mirror_line_reads_as_pydantic_reads_it(line: str) -> None:
    raw = line.encode()
    refused: ValidationError | None = None
    try:
        slow = RawLogEntryOut.model_validate_json(raw)
    except ValidationError as exc:
        refused = exc
    if refused is None:
        _assert_same(entry_of_line(raw), slow)
        return
    with pytest.raises(ValidationError) as same:
        entry_of_line(raw)
    assert same.value.errors() == refused.errors()  # the same message, from pydantic itself
    assert str(same.value) == str(refused)


def claim_entry() -> dict[str, Any]:
    """A log entry as medtrail serves it: an insurance claim, in every field's own form."""
    return {
        "leafIndex": 7,
        "eventDigest": "0x" + "ab" * 32,
        "receivedAt": 1_700_000_001,
        "consent": "not-required",
        "event": {
            "type": "InsuranceClaim",
            "event": {
                "eventId": "0x" + "01" * 32,
                "serviceRef": "0x" + "02" * 32,
                "patient": to_checksum_address("0x" + "44" * 20),
                "institution": to_checksum_address("0x" + "33" * 20),
                "insurer": to_checksum_address("0x" + "55" * 20),
                "amount": 12_345,
                "contentHash": "0x" + "06" * 32,
                "occurredAt": 1_700_000_000,
            },
            "signature": "0x" + "07" * 65,
        },
    }


def test_a_line_as_the_mirror_writes_it_takes_the_fast_path() -> None:
    entry = RawLogEntryOut.model_validate_json(json.dumps(claim_entry()))
    line = entry.model_dump_json().encode()  # the model's JSON, as the mirror keeps another form
    assert signed_event_from_json(from_json(line)["event"]) is not None
    _assert_same(entry_of_line(line), entry)


def test_built_models_share_one_fields_set_and_a_copy_leaves_it_alone() -> None:
    first = entry_of_line(json.dumps(claim_entry()).encode())
    second = entry_of_line(json.dumps({**claim_entry(), "leafIndex": 8}).encode())
    everything = set(RawLogEntryOut.model_fields)
    # One set per class (a set per model was a quarter of the audit's memory for the events).
    assert first.model_fields_set is second.model_fields_set
    assert first.event.event.model_fields_set is second.event.event.model_fields_set
    copied = first.model_copy(update={"leafIndex": 9})
    assert copied.model_fields_set is not first.model_fields_set
    assert (copied.leafIndex, first.leafIndex, second.leafIndex) == (9, 7, 8)
    assert first.model_fields_set == second.model_fields_set == everything
    with pytest.raises(ValidationError, match="frozen"):  # nothing can add to the shared set
        first.leafIndex = 10


def test_built_model_makes_frozen_models_only() -> None:
    class Open(BaseModel):
        value: int

    with pytest.raises(TypeError, match="frozen models only"):
        built_model(Open, {"value": 1})


def test_built_model_needs_every_field() -> None:
    # Its one set says every field is set: a model missing one would claim it all the same.
    values = claim_entry()["event"]["event"]
    with pytest.raises(ValueError, match="every field of SignedEvent"):
        built_model(SignedEvent, {"type": EventType.INSURANCE_CLAIM, "event": values})
