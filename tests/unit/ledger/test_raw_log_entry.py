"""A log entry as the audit reads it: its event validated in the same pass (issue 15), kept raw
only when malformed."""

from __future__ import annotations

import json
import os

import pytest
from pydantic import ValidationError

from ledger.eip712 import address_of
from ledger.events import (
    Action,
    Purpose,
    RecordAccess,
    SignedEvent,
    audit_log_domain,
    sign_event,
)
from ledger.wire import RawLogEntryOut

DOMAIN = audit_log_domain(31337, "0x" + "11" * 20)


def _signed() -> SignedEvent:
    key = os.urandom(32)
    me = address_of(key)
    event = RecordAccess(
        eventId=os.urandom(32),
        recordRef=os.urandom(32),
        custodian=me,
        patient="0x" + "22" * 20,
        institution=me,
        actor=os.urandom(32),
        action=Action.READ,
        purpose=Purpose.TREATMENT,
        grantId=0,
        reasonHash=bytes(32),
        occurredAt=1_700_000_000,
    )
    return sign_event(event, DOMAIN, key)


def _line(event: object) -> str:
    return json.dumps(
        {
            "leafIndex": 3,
            "eventDigest": "0x" + "ab" * 32,
            "receivedAt": 1_700_000_001,
            "consent": "custodian",
            "event": event,
        }
    )


def test_a_well_formed_event_is_validated_with_its_entry() -> None:
    signed = _signed()
    entry = RawLogEntryOut.model_validate_json(_line(json.loads(signed.model_dump_json())))
    assert isinstance(entry.event, SignedEvent)
    assert entry.signed_event() is entry.event
    assert entry.signed_event() == signed
    assert entry.raw_event() == json.loads(signed.model_dump_json())


def test_a_malformed_event_is_kept_raw_and_refused_when_asked_for() -> None:
    raw = json.loads(_signed().model_dump_json())
    raw["event"]["occurredAt"] = "yesterday"
    entry = RawLogEntryOut.model_validate_json(_line(raw))
    assert entry.event == raw
    assert entry.raw_event() == raw
    with pytest.raises(ValidationError):
        entry.signed_event()


def test_an_entry_round_trips_through_the_mirror_line() -> None:
    signed = _signed()
    entry = RawLogEntryOut.model_validate_json(_line(json.loads(signed.model_dump_json())))
    again = RawLogEntryOut.model_validate_json(entry.model_dump_json())
    assert again.signed_event() == signed
    assert again.eventDigest == entry.eventDigest
