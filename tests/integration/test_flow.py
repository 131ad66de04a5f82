"""The whole flow on every chain backend and store backend (issue 3's "done when").

Register institutions, relay a grant, ingest accesses, a prescription, its dispense, a claim
and its payment, anchor, fetch proofs, and verify them with the pure module against the root
read from the chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from ledger import merkle
from ledger.events import Purpose
from ledger.store.models import node_key
from ledger.verify import verify_bundle
from tests.support.ledgers import Env, open_env, relay_grant
from tests.support.service_proc import wait_for

BACKENDS = [
    pytest.param(("embedded", "sqlite"), id="embedded-sqlite"),
    pytest.param(("embedded", "postgres"), id="embedded-postgres", marks=pytest.mark.postgres),
    pytest.param(("anvil", "sqlite"), id="anvil-sqlite", marks=pytest.mark.anvil),
    pytest.param(
        ("anvil", "postgres"), id="anvil-postgres", marks=[pytest.mark.anvil, pytest.mark.postgres]
    ),
]


@pytest.fixture(params=BACKENDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    chain_backend, store_backend = request.param
    anvil = request.getfixturevalue("anvil_node") if chain_backend == "anvil" else None
    with open_env(chain_backend, store_backend, tmp_path, anvil) as environment:
        yield environment


def test_the_whole_flow_anchors_and_verifies_against_the_chain(env: Env) -> None:
    ledger, hospital, pharmacy, insurer = env.ledger, env.hospital, env.pharmacy, env.insurer
    patient = env.patient.address
    record = hospital.record("mrn-0042")

    # The patient lets the pharmacy read this record for treatment.
    grant_id = relay_grant(env, pharmacy.address, record, [Purpose.TREATMENT])
    assert ledger.grant(grant_id).patient == patient

    own_read = hospital.access(record, patient)
    rx = hospital.prescription(record, patient, fills=2)
    pharmacy_read = pharmacy.access(
        record,
        patient,
        custodian=hospital.address,
        grantId=grant_id,
        occurredAt=ledger.chain.latest_timestamp(),  # the grant exists from its block's time on
    )
    fill = pharmacy.dispense(rx, fill=1)
    claim = pharmacy.claim(fill, insurer.address, amount=25_00)
    pay = insurer.payment(claim, amount=20_00)
    batch = [hospital.sign(own_read), hospital.sign(rx), pharmacy.sign(pharmacy_read)]
    receipts = ledger.submit(batch) + ledger.submit(
        [pharmacy.sign(fill), pharmacy.sign(claim), insurer.sign(pay)]
    )
    assert [r.leaf_index for r in receipts] == list(range(6))
    assert [r.consent for r in receipts[:3]] == ["custodian", "not-applicable", "covered"]

    # Nothing is anchored yet.
    assert ledger.event(own_read.eventId).status == "pending"

    status = ledger.anchor_now()
    assert status.tree_size == 6
    # anvil mines the checkpoint's transaction on its own time: on a loaded machine the
    # block may come a moment after the transaction was sent.
    on_chain = wait_for("checkpoint 6 on chain", ledger.chain.latest_checkpoint, timeout=30)
    assert on_chain.tree_size == 6
    ledger.anchor_now()  # follow the transaction to its block; one confirmation needed

    trail = ledger.trail(record)
    assert [v.event_id for v in trail] == [
        e.eventId for e in (own_read, rx, pharmacy_read, fill, claim, pay)
    ]
    for view in trail:
        assert view.status == "confirmed"
        findings = verify_bundle(
            view.bundle,
            domain=ledger.domain,
            trusted_size=on_chain.tree_size,
            trusted_root=on_chain.root_hash,
            operator=ledger.operator.address,
        )
        assert findings == [], findings

    # The tree the chain holds is exactly the digests of the served events, in order.
    tree = merkle.MemoryTree(merkle.leaf_hash(r.event_digest) for r in receipts)
    assert tree.root() == on_chain.root_hash

    # More events; the next checkpoint must be consistent with the first (the contract checks).
    second = hospital.access(record, patient, action=2)
    ledger.submit([hospital.sign(second)])
    ledger.anchor_now()
    wait_for(
        "checkpoint 7 on chain",
        lambda: (cp := ledger.chain.latest_checkpoint()) is not None and cp.tree_size == 7,
        timeout=30,
    )
    proof = ledger.log.consistency_proof(6, 7)
    merkle.verify_consistency(6, 7, on_chain.root_hash, ledger.log.root_at(7), proof)


def test_a_second_anchor_pass_with_nothing_new_commits_nothing(env: Env) -> None:
    ledger = env.ledger
    record = env.hospital.record("mrn-1")
    ledger.submit([env.hospital.sign(env.hospital.access(record, env.patient.address))])
    ledger.anchor_now()
    ledger.anchor_now()
    ledger.anchor_now()
    checkpoints = ledger.checkpoints()
    assert [(c.tree_size, c.status) for c in checkpoints] == [(1, "confirmed")]


def test_a_checkpoint_is_confirmed_only_after_its_confirmations(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with open_env("embedded", "sqlite", tmp_path, confirmations=3) as env:
        ledger = env.ledger
        event = env.hospital.access(env.hospital.record("mrn-9"), env.patient.address)
        ledger.submit([env.hospital.sign(event)])
        ledger.anchor_now()
        ledger.anchor_now()
        assert ledger.event(event.eventId).status == "anchored"
        assert ledger.tester is not None
        ledger.tester.mine_blocks(1)
        ledger.anchor_now()
        assert ledger.event(event.eventId).status == "anchored"  # 2 of 3 blocks
        ledger.tester.mine_blocks(1)
        ledger.anchor_now()
        assert ledger.event(event.eventId).status == "confirmed"


def test_the_service_reports_a_row_edited_behind_its_back_instead_of_serving_it_silently(
    tmp_path: Path,
) -> None:
    with open_env("embedded", "sqlite", tmp_path) as env:
        ledger, hospital = env.ledger, env.hospital
        record = hospital.record("mrn-7")
        events = [hospital.access(record, env.patient.address, action=a) for a in (0, 1, 2)]
        ledger.submit([hospital.sign(e) for e in events])
        ledger.anchor_now()
        ledger.anchor_now()
        assert all(view.status == "confirmed" for view in ledger.trail(record))
        assert all(view.integrity == () for view in ledger.trail(record))

        with ledger.store.write() as connection:  # a DBA "fixes" the action of one access
            connection.execute(
                text("UPDATE events SET body = replace(body, :old, :new) WHERE event_id = :id"),
                {"old": '"action":1', "new": '"action":4', "id": events[1].eventId},
            )
        views = {view.event_id: view for view in ledger.trail(record)}
        assert views[events[0].eventId].integrity == ()
        codes = {f.code for f in views[events[1].eventId].integrity}
        assert {"digest-mismatch", "inclusion-invalid"} <= codes


def _swap_leaves(connection: Any, a: int, b: int) -> None:
    for old, new in ((a, -1), (b, a), (-1, b)):
        connection.execute(
            text("UPDATE events SET leaf_index = :new WHERE leaf_index = :old"),
            {"old": old, "new": new},
        )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("signature", "signer-mismatch"),
        ("digest", "digest-mismatch"),
        ("leaf index", "inclusion-invalid"),
        ("tree node", "inclusion-invalid"),
    ],
)
def test_a_bundle_served_before_is_checked_again_once_its_rows_change(
    tmp_path: Path, edit: str, expected: str
) -> None:
    """The service remembers bundles it verified; an edit to anything a bundle is built from
    (the event's row, a tree node) must still be reported on the next read, and the next."""
    with open_env("embedded", "sqlite", tmp_path) as env:
        ledger, hospital = env.ledger, env.hospital
        record = hospital.record("mrn-8")
        signed = [hospital.sign(hospital.access(record, env.patient.address)) for _ in range(3)]
        ledger.submit(signed)
        ledger.anchor_now()
        ledger.anchor_now()
        for _ in range(2):  # served twice: verified, then remembered
            views = ledger.trail(record)
            assert [(view.status, view.integrity) for view in views] == [("confirmed", ())] * 3
        target, other = (ledger.event(s.event_id).bundle for s in signed[1:])
        with ledger.store.write() as connection:
            if edit == "signature":
                connection.execute(
                    text("UPDATE events SET signature = :value WHERE leaf_index = :leaf"),
                    {"value": other.event.signature, "leaf": target.leafIndex},
                )
            elif edit == "digest":
                connection.execute(
                    text("UPDATE events SET digest = :value WHERE leaf_index = :leaf"),
                    {"value": other.eventDigest, "leaf": target.leafIndex},
                )
            elif edit == "leaf index":
                _swap_leaves(connection, target.leafIndex, other.leafIndex)
            else:
                (level, index), *_ = merkle.inclusion_plan(
                    target.leafIndex, target.treeSize
                ).node_ids()
                connection.execute(
                    text("UPDATE tree_nodes SET hash = :hash WHERE key = :key"),
                    {"hash": b"\x07" * 32, "key": node_key(level, index)},
                )
        for _ in range(2):  # failures are never remembered as sound
            findings = ledger.event(target.event.event_id).integrity
            assert expected in {f.code for f in findings}, findings
