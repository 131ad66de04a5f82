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

from api.routes.events import _plain_batch, parse_batch
from api.schemas import EventBatch
from tests.unit.ledger.test_plain_events import (
    _assert_same,
    _broken,
    _event_document,
    _odd_values,
    claim_entry,
)


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
    slow: EventBatch | None = None
    try:
        slow = EventBatch.model_validate_json(body)
    except ValidationError as exc:
        pydantic_errors = exc.errors(include_url=False)
    fast = _plain_batch(body)
    if slow is None:
        assert fast is None  # never builds what pydantic refuses
        assert _refusal(body) == _pydantics(pydantic_errors)  # pydantic's own refusal
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
        fast = _plain_batch(body.encode())
        assert fast is not None
        _assert_same(fast, batch)


def test_a_repeated_key_is_read_as_pydantic_reads_it() -> None:
    first, second = json.dumps([_signed(0)]), json.dumps([_signed(1)])
    body = f'{{"events": {first}, "events": {second}}}'.encode()
    slow = EventBatch.model_validate_json(body)
    assert slow.events[0].event_id == bytes.fromhex(f"{2:064x}")  # the last one counts
    fast = _plain_batch(body)
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
    assert _plain_batch(body) is None
    with pytest.raises(ValidationError) as refused:
        EventBatch.model_validate_json(body)
    assert _refusal(body) == _pydantics(refused.value.errors(include_url=False))


def test_an_empty_body_is_a_missing_body() -> None:
    assert _refusal(b"") == [
        {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
    ]
