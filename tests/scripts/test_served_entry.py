"""An entry of a page the API served, as the monitor and the audit's mirror keep it (issue 18):
validated as pydantic validates it, and kept as a line that reads back as the same entry —
the item itself when it is in medtrail's form, the model's JSON otherwise."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from ledger.eip712 import to_checksum_address
from ledger.wire import RawLogEntryOut
from scripts._api import ApiError
from scripts.audit_log import entry_of_line, served_entry
from tests.unit.ledger.test_plain_events import _assert_same, _entry_line, claim_entry


def test_an_entry_in_medtrails_form_is_kept_as_it_was_served() -> None:
    item = claim_entry()
    entry, line = served_entry(item)
    assert json.loads(line) == item
    assert line == json.dumps(item, separators=(",", ":"))
    _assert_same(entry, RawLogEntryOut.model_validate(item))


def test_an_entry_in_another_form_its_fields_take_is_kept_as_served() -> None:
    item = claim_entry()
    patient = to_checksum_address("0x" + "ab" * 20)
    assert patient.lower() != patient
    item["event"]["event"]["patient"] = patient.lower()  # valid, not the checksummed form
    entry, line = served_entry(item)
    assert json.loads(line)["event"]["event"]["patient"] == patient.lower()  # as served
    assert entry.signed_event().event.patient == patient  # the model's canonical form
    _assert_same(entry_of_line(line.encode()), entry)


def test_an_entry_only_pydantic_reads_is_kept_as_its_models_json() -> None:
    item = {**claim_entry(), "note": "a field the wire's models ignore"}
    entry, line = served_entry(item)
    assert line == entry.model_dump_json()
    assert "note" not in json.loads(line)
    _assert_same(entry, RawLogEntryOut.model_validate(item))


def test_a_malformed_entry_is_the_apis_error_with_pydantics_reason() -> None:
    item = claim_entry()
    item["leafIndex"] = -1
    with pytest.raises(ApiError, match="the API served a malformed log entry"):
        served_entry(item)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_entry_line())
def test_what_is_kept_reads_back_as_the_entry_pydantic_makes(line: str) -> None:
    try:
        item = json.loads(line)
    except ValueError:
        return  # a page that is not JSON never reaches an entry
    try:
        slow = RawLogEntryOut.model_validate(item)
    except ValidationError:
        with pytest.raises(ApiError):
            served_entry(item)
        return
    entry, kept = served_entry(item)
    _assert_same(entry, slow)
    _assert_same(entry_of_line(kept.encode()), slow)
