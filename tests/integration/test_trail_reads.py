"""Reads by record or patient: values that differ only late (as a submitter may choose them:
references and addresses sharing their first 8 bytes) are told apart by every read, the
verifiable index is rebuilt from them exactly, and each read is planned on the record or
patient index rather than walking the log. The indexes hold the whole value, which no
submitter can crowd (an index on a prefix was tried and dropped: benchmarks/ANALYSIS.md,
issue 15, part 6).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils import to_checksum_address
from sqlalchemy import event

from ledger.index import MemoryIndex, keys_of
from ledger.index_store import IndexSequencer
from ledger.service import EventSearch, Viewer
from tests.support.ledgers import Env, open_env

# Two records and two patients, each pair alike in its first 8 bytes: a query on a prefix
# alone would mix them up.
RECORD_A = b"\x5a" * 8 + b"\x01" * 24
RECORD_B = b"\x5a" * 8 + b"\x02" * 24
PATIENT_P = to_checksum_address("0x" + "12" * 8 + "c1" * 12)
PATIENT_Q = to_checksum_address("0x" + "12" * 8 + "c2" * 12)
#: Leaf by leaf: record A is patient P's, record B patient Q's.
ORDER = [(RECORD_A, PATIENT_P), (RECORD_B, PATIENT_Q)] * 2 + [(RECORD_A, PATIENT_P)]
A_LEAVES, B_LEAVES = [0, 2, 4], [1, 3]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    with open_env("embedded", request.param, tmp_path) as environment:
        hospital = environment.hospital
        environment.ledger.submit(
            [hospital.sign(hospital.access(record, patient)) for record, patient in ORDER]
        )
        yield environment


def _leaves(views: Any) -> list[int]:
    return [view.bundle.leafIndex for view in views]


def test_trails_and_pages_hold_only_their_own_events(env: Env) -> None:
    ledger = env.ledger
    assert _leaves(ledger.trail(RECORD_A)) == A_LEAVES
    assert _leaves(ledger.trail(RECORD_B)) == B_LEAVES
    assert _leaves(ledger.trail(RECORD_A, limit=2)) == [0, 2]
    assert _leaves(ledger.trail(RECORD_A, after=2)) == [4]
    assert _leaves(ledger.accesses_of(PATIENT_P)) == A_LEAVES
    assert _leaves(ledger.accesses_of(PATIENT_Q, limit=1)) == [1]
    assert ledger.took_part(RECORD_B, env.hospital.address)
    assert not ledger.took_part(RECORD_B, env.pharmacy.address)


def test_searches_and_a_patients_view_hold_only_their_own_events(env: Env) -> None:
    ledger, regulator = env.ledger, Viewer("regulator")
    assert _leaves(ledger.search_events(EventSearch(record_ref=RECORD_B), regulator)) == B_LEAVES
    assert _leaves(ledger.search_events(EventSearch(patient=PATIENT_P), regulator)) == A_LEAVES
    mine = ledger.search_events(EventSearch(), Viewer("patient", PATIENT_Q))
    assert _leaves(mine) == B_LEAVES
    both = EventSearch(record_ref=RECORD_A, patient=PATIENT_Q)  # no event is both
    assert ledger.search_events(both, regulator) == []


def test_the_verifiable_index_lists_and_rebuilds_each_value_apart(env: Env) -> None:
    """The index's answers list each value's own leaves, and a reload rebuilds the frontiers
    the index was built with, each value's list apart from its look-alike's (a list mixed with
    another would not match its leaf, and the reload would refuse the store)."""
    ledger = env.ledger
    ledger.anchor_now()
    ledger.anchor_now()
    record_answer = ledger.record_index(RECORD_B)
    patient_answer = ledger.patient_index(PATIENT_P)
    assert record_answer is not None
    assert patient_answer is not None
    assert record_answer.leafIndexes == B_LEAVES
    assert patient_answer.leafIndexes == A_LEAVES
    fresh = IndexSequencer(ledger.store)
    fresh.reload()
    reference = MemoryIndex.build([keys_of(patient, record) for record, patient in ORDER])
    assert fresh.head.root == reference.root()
    assert fresh._frontiers == dict(reference.frontiers)


def test_each_read_by_record_or_patient_is_planned_on_its_index(env: Env) -> None:
    """Every statement on ``events`` that a read by record or patient runs, the index's
    answers included, is planned on the record or patient index (the database's own
    ``EXPLAIN``, the values bound as the service binds them; PostgreSQL told to avoid scanning
    the table, so that a usable index shows even in a table of a few rows): the plan, not the
    answers, shows a read that walks the whole log."""
    ledger = env.ledger
    statements: list[tuple[str, Any]] = []
    recording = [True]

    def keep(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        head, _, where = sql.partition("WHERE")
        if recording[0] and "FROM events" in head and ("record_ref" in where or "patient" in where):
            statements.append((sql, params))

    engine = ledger.store.engine
    event.listen(engine, "before_cursor_execute", keep)
    try:
        ledger.trail(RECORD_A, limit=2)
        ledger.trail(RECORD_A, institution=env.pharmacy.address)
        ledger.accesses_of(PATIENT_P, limit=2)
        ledger.took_part(RECORD_B, env.pharmacy.address)
        ledger.search_events(EventSearch(record_ref=RECORD_B), Viewer("regulator"), limit=5)
        ledger.search_events(EventSearch(), Viewer("patient", PATIENT_Q), limit=5)
        ledger.rule_context(ledger.trail(RECORD_B))
        recording[0] = False  # anchoring reads the log its own way
        ledger.anchor_now()
        ledger.anchor_now()
        recording[0] = True
        assert ledger.record_index(RECORD_A) is not None
        assert ledger.patient_index(PATIENT_P) is not None
    finally:
        event.remove(engine, "before_cursor_execute", keep)
    assert len(statements) >= 10
    used = ("ix_events_record_ref_leaf_index", "ix_events_patient_leaf_index")
    with engine.connect() as connection:
        if ledger.store.is_sqlite:
            explain, column = "EXPLAIN QUERY PLAN ", -1
        else:
            connection.exec_driver_sql("SET enable_seqscan = off")
            explain, column = "EXPLAIN ", 0
        for sql, params in statements:
            rows = connection.exec_driver_sql(explain + sql, params)
            plan = " ".join(str(row[column]) for row in rows)
            assert any(name in plan for name in used), (sql, plan)
