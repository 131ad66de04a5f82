"""The SQL filter a trail is read with (:func:`ledger.service.events_visible_to`) and the one
visibility rule (:func:`ledger.visibility.institution_may_see`) agree, on every mix of
signers, counterparties, custodians and callers (property test, SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from ledger.service import events_visible_to
from ledger.store import Store
from ledger.store.models import EventRow
from ledger.visibility import institution_may_see
from tests.support.postgres import fresh_database

_EVENTS = EventRow.__table__  # type: ignore[attr-defined]

#: A few institutions, so that callers, signers, counterparties and custodians often meet.
ADDRESSES = [f"0x{n:040x}" for n in (0xA, 0xB, 0xC, 0xD)]
RECORD = b"\x07" * 32
OTHER_RECORD = b"\x08" * 32

address = st.sampled_from(ADDRESSES)
#: (signer, counterparty, of the record under test?) for each event, in log order.
events = st.lists(st.tuples(address, st.none() | address, st.booleans()), max_size=12)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path_factory.mktemp('visibility') / 'ledger.db'}")
        store.migrate()
        yield store
        store.dispose()
        return
    with fresh_database() as url:
        store = Store(url)
        store.migrate()
        yield store
        store.dispose()


def put(store: Store, rows: list[tuple[str, str | None, bool]]) -> None:
    with store.write() as connection:
        connection.execute(_EVENTS.delete())
        if rows:
            connection.execute(
                _EVENTS.insert(),
                [
                    {
                        "leaf_index": leaf,
                        "event_id": leaf.to_bytes(32, "big"),
                        "event_type": "RecordAccess",
                        "institution": signer,
                        "patient": ADDRESSES[0],
                        "record_ref": RECORD if ours else OTHER_RECORD,
                        "counterparty": other,
                        "digest": bytes(32),
                        "signature": bytes(65),
                        "body": "{}",
                        "occurred_at": 0,
                        "received_at": 0,
                        "anchor_by": 0,
                        "consent_status": "custodian",
                        "receipt_signature": bytes(65),
                    }
                    for leaf, (signer, other, ours) in enumerate(rows)
                ],
            )


@given(rows=events, caller=address, custodian=st.none() | address)
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_the_sql_filter_is_the_visibility_rule(
    store: Store,
    rows: list[tuple[str, str | None, bool]],
    caller: str,
    custodian: str | None,
) -> None:
    put(store, rows)
    with store.read() as connection:
        served = list(
            connection.execute(
                select(_EVENTS.c.leaf_index)
                .where(_EVENTS.c.record_ref == RECORD, events_visible_to(caller, custodian))
                .order_by(_EVENTS.c.leaf_index)
            ).scalars()
        )
    expected = [
        leaf
        for leaf, (signer, other, ours) in enumerate(rows)
        if ours and institution_may_see(caller, signer, other, custodian)
    ]
    assert served == expected


@pytest.mark.parametrize(
    ("caller", "signer", "other", "custodian", "visible"),
    [
        # the custodian sees every event of its record
        ("0xA", "0xB", None, "0xA", True),
        ("0xA", "0xB", "0xC", "0xA", True),
        # another institution: what it signed, and what names it
        ("0xB", "0xB", None, "0xA", True),
        ("0xB", "0xC", "0xB", "0xA", True),
        ("0xB", "0xA", None, "0xA", False),
        ("0xB", "0xC", "0xD", "0xA", False),
        # no custodian known: only the parties
        ("0xB", "0xB", None, None, True),
        ("0xB", "0xC", None, None, False),
    ],
)
def test_the_rule_by_example(
    caller: str, signer: str, other: str | None, custodian: str | None, visible: bool
) -> None:
    assert institution_may_see(caller, signer, other, custodian) is visible
