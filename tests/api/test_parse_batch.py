"""``POST /v1/events``'s body parser (issue 15): the fast path against pydantic itself.

``api.routes.events.parse_batch`` builds a batch in the form clients write it from its parsed
JSON (``_plain_batch``, over the audit's own fast path for events) and leaves any other body to
``EventBatch.model_validate_json``. What the fast path takes, pydantic must take and make the
same model of; what it leaves, the client must get pydantic's own refusal for.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from pydantic_core import from_json

from api.routes.events import _plain_batch
from api.routes.events import parse_batch as parse_within
from api.schemas import EventBatch
from ledger.ingest import BatchTooLarge
from tests.unit.ledger.test_plain_events import (
    _assert_same,
    _broken,
    _event_document,
    _odd_values,
    claim_entry,
)


def parse_batch(body: bytes) -> EventBatch:
    return parse_within(body, 1000)


def _fast(body: bytes) -> EventBatch | None:
    """What the fast path makes of ``body`` (None: it leaves it to pydantic)."""
    try:
        data = from_json(body)
    except ValueError:
        return None
    return _plain_batch(data)


@st.composite
def _body(draw: st.DrawFn) -> bytes:
    """A batch body: one to three events, each well formed or broken one field at a time, and
    the wrapper itself sometimes broken (another key, no list, an empty one, trailing bytes)."""
    events: Any = draw(st.lists(_event_document().flatmap(_broken), min_size=1, max_size=3))
    how = draw(st.sampled_from(["none", "none", "none", "extra", "events", "empty", "outer"]))
    document: Any = {"events": events}
    if how == "extra":
        document[draw(st.sampled_from(["extra", "Events", "event"]))] = draw(_odd_values)
    elif how == "events":
        document["events"] = draw(st.one_of(_odd_values, st.just(events[0])))
    elif how == "empty":
        document["events"] = []
    elif how == "outer":
        document = draw(st.one_of(_odd_values, st.just(events)))
    text = json.dumps(document)
    return draw(st.sampled_from([text, text + " ", " " + text, text[:-1], text + "x"])).encode()


def _named(value: Any) -> str:
    return (
        f"{type(value).__name__}: {value}" if isinstance(value, Exception) else type(value).__name__
    )


def _comparable(errors: Any) -> Any:
    """Errors as JSON would carry them: an exception in an error's context, or an object in its
    input, compares by identity (each by its type, and an exception's message)."""
    return json.loads(json.dumps(list(errors), default=_named))


def _refusal(body: bytes) -> Any:
    with pytest.raises(RequestValidationError) as refused:
        parse_batch(body)
    return _comparable(refused.value.errors())


def _pydantics(errors: Any) -> Any:
    """pydantic's errors as ``parse_batch`` locates them: under ``body``."""
    return _comparable({**e, "loc": ("body", *e["loc"])} for e in errors)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_body())
def test_what_the_fast_path_takes_pydantic_takes_and_builds_the_same(body: bytes) -> None:
    _check_body(body)


def _check_body(body: bytes) -> None:
    """What the fast path builds of ``body``, pydantic builds the same; what pydantic refuses,
    the fast path leaves, and the client gets pydantic's own refusal."""
    slow: EventBatch | None = None
    errors: list[Any] = []
    try:
        slow = EventBatch.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    fast = _fast(body)
    if slow is None:
        assert fast is None
        assert _refusal(body) == _pydantics(errors)
        return
    if fast is not None:
        _assert_same(fast, slow)
    _assert_same(parse_batch(body), slow)


def _signed(n: int) -> dict[str, Any]:
    event: dict[str, Any] = claim_entry()["event"]
    event["event"]["eventId"] = "0x" + f"{n + 1:064x}"
    return event


def test_a_batch_as_clients_write_it_takes_the_fast_path() -> None:
    batch = EventBatch.model_validate({"events": [_signed(n) for n in range(3)]})
    for body in (batch.model_dump_json(), json.dumps(batch.model_dump(mode="json"))):
        fast = _fast(body.encode())
        assert fast is not None
        _assert_same(fast, batch)


def test_a_repeated_key_is_read_as_pydantic_reads_it() -> None:
    first, second = json.dumps([_signed(0)]), json.dumps([_signed(1)])
    body = f'{{"events": {first}, "events": {second}}}'.encode()
    slow = EventBatch.model_validate_json(body)
    assert slow.events[0].event_id == bytes.fromhex(f"{2:064x}")  # the last one counts
    fast = _fast(body)
    assert fast is not None
    _assert_same(fast, slow)


@pytest.mark.parametrize(
    "body",
    [
        b'{"events": []}',
        b'{"events": {}}',
        b"[]",
        b"null",
        b'{"events": [1]}',
        b'{"events": [], "x": 1}',
        b"\xff\xfe",
        b'{"events": [' + json.dumps(_signed(0)).encode() + b"]",  # not closed
    ],
)
def test_a_body_not_in_the_clients_form_gets_pydantics_refusal(body: bytes) -> None:
    assert _fast(body) is None
    with pytest.raises(ValidationError) as refused:
        EventBatch.model_validate_json(body)
    assert _refusal(body) == _pydantics(refused.value.errors(include_url=False))


def test_an_empty_body_is_a_missing_body() -> None:
    assert _refusal(b"") == [
        {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(_event_document(), min_size=1, max_size=3))
def test_a_batch_of_well_formed_events_always_takes_the_fast_path(
    events: list[dict[str, Any]],
) -> None:
    body = json.dumps({"events": events}).encode()
    fast = _fast(body)
    assert fast is not None
    _assert_same(fast, EventBatch.model_validate_json(body))


def _access_text(**replaced: str) -> str:
    """One signed insurance claim as JSON text, with some members' raw text replaced."""
    members = {k: json.dumps(v) for k, v in _signed(0)["event"].items()}
    members.update(replaced)
    event = "{" + ", ".join(f'"{k}": {v}' for k, v in members.items()) + "}"
    outer = {k: json.dumps(v) for k, v in _signed(0).items() if k != "event"}
    return "{" + ", ".join([f'"event": {event}', *(f'"{k}": {v}' for k, v in outer.items())]) + "}"


_AMOUNT = json.dumps(_signed(0)["event"]["amount"])


@pytest.mark.parametrize(
    "event",
    [
        _access_text(amount=f'"x", "amount": {_AMOUNT}'),  # a repeated key: the last counts
        _access_text(amount=f'{_AMOUNT}, "amount": "x"'),
        _access_text(amount=", ".join([_AMOUNT] * 20).replace(", ", ', "amount": ')),
        _access_text(contentHash='"\\u0030x' + "06" * 32 + '"'),  # an escape in hex
        _access_text(amount="-0"),
        _access_text(amount="1.0"),
        _access_text(amount="1e3"),
        _access_text(amount="NaN"),
        _access_text(amount="Infinity"),
        _access_text(amount=str(2**256)),
        _access_text(amount="1" * 5000),
        _access_text(serviceRef='"0x' + "02" * 31 + '\\ud800"'),  # a lone surrogate
        _access_text(serviceRef='"0x' + "02" * 31 + '\\u0000"'),
    ],
)
def test_json_edge_cases_are_read_as_pydantic_reads_them(event: str) -> None:
    for body in (
        f'{{"events": [{event}]}}'.encode(),
        b"\xef\xbb\xbf" + f'{{"events": [{event}]}}'.encode(),  # a byte order mark
        f'{{"events": [{event}] }}  \n'.encode(),
    ):
        _check_body(body)


def test_more_events_than_the_limit_are_refused_for_their_number_unvalidated() -> None:
    with pytest.raises(BatchTooLarge) as refused:
        parse_within(b'{"events": [0, 0, 0]}', 2)
    assert refused.value.context == {"limit": 2}
    assert "3 events" in refused.value.detail
    with pytest.raises(RequestValidationError):  # at the limit: validated, and refused so
        parse_within(b'{"events": [0, 0]}', 2)
    valid = EventBatch.model_validate({"events": [_signed(n) for n in range(3)]})
    with pytest.raises(BatchTooLarge):  # valid events too, as ingest would
        parse_within(valid.model_dump_json().encode(), 2)
    assert len(parse_within(valid.model_dump_json().encode(), 3).events) == 3
