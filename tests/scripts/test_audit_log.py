"""scripts/audit_log.py in process: the real API (in-process ASGI client) over a real ledger
on the embedded chain. A clean log audits with nothing wrong; each tampering of issue 6's list
is found; rollbacks and split views are found from the state file, even without the chain."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ledger import index, merkle
from ledger.audit import needed_facts
from ledger.events import InstitutionKind
from ledger.verify import FindingCode
from scripts._common import ChainOptions, Report
from scripts.audit_log import LogIdentity, Mirror, StateFile, _identity_without_chain, audit
from tests.scripts.support import (
    Story,
    advance_chain,
    anchor,
    api_of,
    chain_now,
    delete_event,
    edit_mirror_line,
    granted_read,
    h,
    insert_event,
    regulator_chain,
    restore_db,
    rewrite_body,
    snapshot_db,
    swap_leaves,
    tell_story,
    write_mirror,
)
from tests.support.actors import Institution
from tests.support.ledgers import Env, pending_timestamp, relay_grant, revoke_grant


def identity(env: Env) -> LogIdentity:
    return LogIdentity(env.ledger.deployment.chain_id, env.ledger.deployment.audit_log)


def run(
    env: Env,
    tmp_path: Path,
    *,
    chain: bool = True,
    api: bool = True,
    mirror: str = "mirror.jsonl",
    **kw: Any,
) -> Report:
    ident = identity(env)
    options: dict[str, Any] = {"now": int(time.time()), "page_size": 3}
    with api_of(env) as client:
        return audit(
            Mirror(tmp_path / mirror, ident),
            api=client if api else None,
            chain=regulator_chain(env) if chain else None,
            state=StateFile(tmp_path / "state.json", ident),
            **{**options, **kw},
        )


def errors(report: Report) -> list[str]:
    return sorted({str(f.code) for f in report.errors})


def test_a_clean_log_audits_with_nothing_wrong_and_keeps_its_state(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    report = run(env, tmp_path)
    assert report.ok, report.errors
    assert report.exit_status == 0
    assert report.stats["events"] == len(story.events)
    assert [(str(f.code), f.severity) for f in report.findings] == [("emergency-access", "review")]
    head = env.ledger.log.head()
    state = json.loads((tmp_path / "state.json").read_text())
    assert (state["treeSize"], state["rootHash"]) == (head.size, "0x" + head.root.hex())
    # The offending events only are listed: here the emergency access.
    assert [line.event_id for line in report.events] == [story.events[-1].event_id]


def test_the_mirror_resumes_where_it_stopped(storied: tuple[Env, Story], tmp_path: Path) -> None:
    env, _story = storied
    first = run(env, tmp_path, page_size=2)
    assert first.ok
    assert first.stats["pagesFetched"] == 4  # 7 entries, 2 per page
    # A torn last line (a run killed mid-write) and new events since.
    mirror = tmp_path / "mirror.jsonl"
    with mirror.open("a") as handle:
        handle.write('{"leafIndex": 7, "eventDi')
    more = env.hospital.access(env.hospital.record("mrn-0042"), env.patient.address)
    env.ledger.submit([env.hospital.sign(more.model_copy(update={"occurredAt": chain_now(env)}))])
    anchor(env.ledger)
    second = run(env, tmp_path, page_size=2)
    assert second.ok, second.errors
    assert second.stats["events"] == 8
    assert second.stats["pagesFetched"] == 1  # only what was missing
    lines = mirror.read_text().splitlines()
    assert len(lines) == 1 + 8
    assert [json.loads(line)["leafIndex"] for line in lines[1:]] == list(range(8))


def test_a_row_changed_in_the_database_is_found(storied: tuple[Env, Story], tmp_path: Path) -> None:
    env, story = storied
    access = story.events[2].event
    rewrite_body(env.ledger, access, action=3)  # "read" becomes "export"
    report = run(env, tmp_path)
    assert errors(report) == [
        "checkpoint-root-mismatch",
        FindingCode.DIGEST_MISMATCH,
        "head-mismatch",
        FindingCode.SIGNER_MISMATCH,
    ]
    offending = {f.event_id for f in report.errors if f.event_id is not None}
    assert offending == {access.eventId}
    assert not (tmp_path / "state.json").exists()  # nothing verified to remember


def test_an_event_deleted_is_found(storied: tuple[Env, Story], tmp_path: Path) -> None:
    env, story = storied
    delete_event(env.ledger, story.events[3].event_id)
    report = run(env, tmp_path)
    # A hole in the served leaves; the chain anchored more than is served; the head says
    # more than is served; and the claim on the deleted dispense bills nothing.
    assert errors(report) == [
        "checkpoint-beyond-log",
        "entry-missing",
        "head-mismatch",
        "service-unknown",
    ]
    (missing,) = report.findings_of("entry-missing")
    assert (missing.context["from"], missing.context["to"]) == (3, 3)


def test_an_event_never_signed_by_its_institution_is_found(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    forger = Institution("Forger", InstitutionKind.INSURER, env.ledger.domain)
    claim = story.events[4].event
    fake = env.insurer.payment(claim, amount=1, occurredAt=chain_now(env))  # type: ignore[arg-type]
    insert_event(env.ledger, forger.sign(fake), record_ref=story.record)
    anchor(env.ledger)
    report = run(env, tmp_path)
    # Never signed by the insurer; and, had it been, a second payment of the claim.
    assert errors(report) == ["claim-already-paid", FindingCode.SIGNER_MISMATCH]
    assert {f.event_id for f in report.errors} == {fake.eventId}


@pytest.mark.parametrize("status", ["unregistered", "suspended"])
def test_a_signature_by_an_institution_not_active_then_is_found(
    storied: tuple[Env, Story], tmp_path: Path, status: str
) -> None:
    env, story = storied
    if status == "unregistered":
        signer = Institution("Unlisted Pharmacy", InstitutionKind.PHARMACY, env.ledger.domain)
    else:
        signer = env.pharmacy
        env.ledger.suspend_institution(signer.address)
    fill = signer.dispense(story.prescription, fill=2, occurredAt=chain_now(env) + 1)
    insert_event(env.ledger, signer.sign(fill), record_ref=story.record)
    anchor(env.ledger)
    report = run(env, tmp_path)
    assert errors(report) == [f"institution-{status}"]
    assert report.errors[0].event_id == fill.eventId


def test_accesses_under_revoked_and_out_of_scope_grants_are_found(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    revoked = relay_grant(env, env.pharmacy.address, story.record)
    revoke_grant(env, revoked)
    elsewhere = relay_grant(env, env.pharmacy.address, env.hospital.record("mrn-other"))
    now = chain_now(env) + 1
    bad = [granted_read(env, story.record, grant_id, now) for grant_id in (revoked, elsewhere)]
    receipts = env.ledger.submit([env.pharmacy.sign(e) for e in bad])
    assert [r.consent for r in receipts] == ["not-covered:revoked", "not-covered:out-of-scope"]
    anchor(env.ledger)
    report = run(env, tmp_path)
    assert errors(report) == ["consent-not-covered"]
    found = {f.event_id: f.context["grantStatus"] for f in report.errors}
    assert found == {bad[0].eventId: "revoked", bad[1].eventId: "out-of-scope"}


def test_a_version_1_revocation_mined_in_the_second_of_an_access_is_for_review(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    """Version 1 has the race too: ingest asks ``grantStatusAt`` when it receives the access;
    a revocation mined afterwards in the access's second counts at ``occurredAt``."""
    env, story = storied
    ledger = env.ledger
    grant_id = relay_grant(env, env.pharmacy.address, story.record)
    at = pending_timestamp(ledger) + 2  # dated a little ahead of the clock and the chain
    access = granted_read(env, story.record, grant_id, at)
    (receipt,) = ledger.submit([env.pharmacy.sign(access)])
    assert receipt.consent == "covered"
    assert ledger.tester is not None
    ledger.tester.time_travel(at)  # the revocation's block is at `at`
    assert revoke_grant(env, grant_id) == at
    anchor(ledger)

    report = run(env, tmp_path)

    assert report.errors == [], report.errors
    (finding,) = report.findings_of("consent-revoked-in-flight")
    assert (finding.event_id, finding.severity) == (access.eventId, "review")
    assert finding.context == {
        "grantId": grant_id,
        "grantStatus": "revoked",
        "occurredAt": at,
        "receivedAt": receipt.received_at,
        "revokedAt": at,
    }

    # The revocation's time is read in the same prefetch as the statuses, not when judged.
    with regulator_chain(env) as chain:
        chain.prefetch(needed_facts([access]))
        asked = chain.round_trips
        revocation = chain.grant_revocation(grant_id)
        assert chain.round_trips == asked
    assert revocation is not None
    assert revocation.revoked_at == at


def test_a_dispense_beyond_the_fills_and_a_double_payment_are_found(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    now = chain_now(env)
    third = env.pharmacy.dispense(story.prescription, fill=3, occurredAt=now + 1)
    claim = story.events[4].event
    again = env.insurer.payment(claim, amount=5_00, occurredAt=now + 2)  # type: ignore[arg-type]
    insert_event(env.ledger, env.pharmacy.sign(third), record_ref=story.record)
    insert_event(env.ledger, env.insurer.sign(again), record_ref=story.record)
    anchor(env.ledger)
    report = run(env, tmp_path)
    assert errors(report) == ["claim-already-paid", "fills-exceeded"]
    counts = report.to_json()["summary"]["counts"]["error"]
    assert counts == {"claim-already-paid": 1, "fills-exceeded": 1}


def test_served_events_that_do_not_match_the_anchored_root_are_found(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, _story = storied
    swap_leaves(env.ledger, 0, 2)  # genuine, validly signed events in another order
    report = run(env, tmp_path)
    assert errors(report) == ["checkpoint-root-mismatch", "head-mismatch"]
    (mismatch,) = report.findings_of("checkpoint-root-mismatch")
    assert mismatch.context["treeSize"] == 7


def test_a_checkpoint_whose_root_is_not_the_served_events_is_found(
    env: Env, tmp_path: Path
) -> None:
    ledger = env.ledger
    record = env.hospital.record("mrn-1")
    now = chain_now(env)
    events = [
        env.hospital.access(record, env.patient.address, occurredAt=now + i) for i in range(3)
    ]
    ledger.submit([env.hospital.sign(e) for e in events])
    ledger.log.integrate_all()
    # The operator anchors a root of its own making for the 3 events (the first checkpoint
    # needs no consistency proof, so the contract cannot refuse it).
    signed = ledger.chain.sign_checkpoint(
        3, h("a root of the operator's making"), ledger.anchor.index.advance(3).root, []
    )
    ledger.chain.wait_mined(ledger.chain.broadcast(signed))
    report = run(env, tmp_path)
    assert errors(report) == ["checkpoint-root-mismatch"]
    (mismatch,) = report.errors
    assert mismatch.context["rootHash"] == "0x" + h("a root of the operator's making").hex()
    assert mismatch.context["servedRoot"] == "0x" + ledger.log.root_at(3).hex()


def test_a_checkpoint_whose_index_root_is_not_the_logs_index_is_found(
    env: Env, tmp_path: Path
) -> None:
    """The contract cannot check how an index root was built: the audit rebuilds the index
    from its mirror and compares every root the chain holds."""
    ledger = env.ledger
    record = env.hospital.record("mrn-1")
    now = chain_now(env)
    events = [
        env.hospital.access(record, env.patient.address, occurredAt=now + i) for i in range(3)
    ]
    ledger.submit([env.hospital.sign(e) for e in events])
    ledger.log.integrate_all()
    # The operator anchors the right log root with an index root that leaves an event out.
    wrong = index.MemoryIndex.build(
        [index.keys_of(env.patient.address, record) for _ in range(2)]
        + [index.keys_of(env.patient.address, None)]
    ).root()
    head = ledger.log.head()
    signed = ledger.chain.sign_checkpoint(head.size, head.root, wrong, [])
    ledger.chain.wait_mined(ledger.chain.broadcast(signed))
    report = run(env, tmp_path)
    assert errors(report) == ["index-root-mismatch"]
    (mismatch,) = report.errors
    assert mismatch.context == {
        "treeSize": 3,
        "indexRoot": "0x" + wrong.hex(),
        "rebuiltRoot": "0x" + ledger.anchor.index.advance(3).root.hex(),
    }
    assert report.exit_status == 1
    assert "secondsIndex" in report.stats


def _accesses(env: Env, n: int, local_id: str) -> None:
    record = env.hospital.record(local_id)
    now = chain_now(env)
    env.ledger.submit(
        [
            env.hospital.sign(env.hospital.access(record, env.patient.address, occurredAt=now + i))
            for i in range(n)
        ]
    )
    env.ledger.log.integrate_all()


@pytest.mark.parametrize("chain", [True, False], ids=["with-chain", "no-chain"])
def test_a_rollback_of_the_served_log_is_found(env: Env, tmp_path: Path, chain: bool) -> None:
    _accesses(env, 3, "mrn-1")
    snapshot_db(env.ledger, tmp_path / "backup.db")
    _accesses(env, 2, "mrn-2")
    anchor(env.ledger)
    assert run(env, tmp_path, chain=chain).ok
    restore_db(env.ledger, tmp_path / "backup.db")  # the log now serves 3 events, not 5
    report = run(env, tmp_path, chain=chain, mirror="fresh-mirror.jsonl")
    expected = ["log-rollback"] + (["checkpoint-beyond-log"] if chain else [])
    assert errors(report) == sorted(expected)
    (rollback,) = report.findings_of(FindingCode.LOG_ROLLBACK)
    assert (rollback.context["seenSize"], rollback.context["servedSize"]) == (5, 3)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["treeSize"] == 5  # the rolled-back log is not remembered as verified
    # Resuming the old mirror, which holds more than the log now serves, finds it too.
    assert "log-rollback" in errors(run(env, tmp_path, chain=chain))


def test_a_split_view_is_found_without_the_chain(env: Env, tmp_path: Path) -> None:
    _accesses(env, 3, "mrn-1")
    snapshot_db(env.ledger, tmp_path / "backup.db")
    _accesses(env, 2, "mrn-2")
    assert run(env, tmp_path, chain=False).ok
    restore_db(env.ledger, tmp_path / "backup.db")
    _accesses(env, 2, "mrn-3")  # another history of the same size
    report = run(env, tmp_path, chain=False, mirror="fresh-mirror.jsonl")
    assert errors(report) == [FindingCode.SPLIT_VIEW]
    assert "chain-not-consulted" in report.codes


def test_an_offline_audit_of_a_mirror_needs_no_api(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    mirror = write_mirror(env.ledger, tmp_path / "exported.jsonl")
    report = run(env, tmp_path, api=False, mirror=mirror.name)
    assert report.ok
    assert report.stats["events"] == len(story.events)
    assert report.stats["rootHash"] == "0x" + env.ledger.log.root_at(7).hex()


def test_a_mirror_of_another_log_is_refused(storied: tuple[Env, Story], tmp_path: Path) -> None:
    env, _story = storied
    from scripts._common import ToolError

    path = tmp_path / "mirror.jsonl"
    path.write_text(
        json.dumps({"medtrailMirror": 1, "chainId": 1, "auditLog": "0x" + "11" * 20}) + "\n"
    )
    with pytest.raises(ToolError, match="belongs to the log"):
        Mirror(path, identity(env))


def test_the_recomputed_tree_is_rfc9162(storied: tuple[Env, Story], tmp_path: Path) -> None:
    env, story = storied
    report = run(env, tmp_path)
    digests = [s.digest(env.ledger.domain) for s in story.events]
    expected = merkle.MemoryTree(merkle.leaf_hash(d) for d in digests).root()
    assert report.stats["rootHash"] == "0x" + expected.hex()


@pytest.mark.postgres
def test_tampering_with_a_postgresql_store_is_found(tmp_path: Path) -> None:
    from tests.support.ledgers import open_env

    with open_env("embedded", "postgres", tmp_path) as env:
        story = tell_story(env)
        assert run(env, tmp_path, mirror="clean.jsonl").ok
        rewrite_body(env.ledger, story.events[0].event, action=3)
        forger = Institution("Forger", InstitutionKind.HOSPITAL, env.ledger.domain)
        fake = env.hospital.access(story.record, env.patient.address, occurredAt=chain_now(env))
        insert_event(env.ledger, forger.sign(fake), consent="custodian")
        anchor(env.ledger)  # the forged row is integrated and anchored like any other
        report = run(env, tmp_path, mirror="tampered.jsonl")
        assert report.exit_status == 1
        by_event = {(f.event_id, str(f.code)) for f in report.errors if f.event_id}
        assert (story.events[0].event_id, "signer-mismatch") in by_event
        assert (story.events[0].event_id, "digest-mismatch") in by_event
        assert (fake.eventId, "signer-mismatch") in by_event


def test_a_backdated_event_and_taken_custody_are_found(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    advance_chain(env, chain_now(env) + 200)
    old = env.hospital.access(story.record, env.patient.address, occurredAt=chain_now(env) - 100)
    insert_event(env.ledger, env.hospital.sign(old), consent="custodian")
    taken = env.pharmacy.access(
        story.record,
        env.patient.address,
        custodian=env.pharmacy.address,
        reasonHash=h("mine now"),
        occurredAt=chain_now(env) + 1,
    )
    insert_event(env.ledger, env.pharmacy.sign(taken), consent="custodian")
    anchor(env.ledger)
    report = run(env, tmp_path, max_backdate=30, max_merge_delay=30)
    assert errors(report) == ["backdated", "custodian-mismatch", "custodian-not-hospital"]
    by_code = {str(f.code): f.event_id for f in report.errors}
    assert by_code["backdated"] == old.eventId
    assert by_code["custodian-not-hospital"] == taken.eventId


def test_a_log_identity_taken_from_the_api_is_said_with_its_own_code(env: Env) -> None:
    """Without the chain and without the regulator's own configuration, the log audited is
    the one the API names: a warning of its own (not ``deployment-mismatch``, an error), which
    does not keep the verified tree from being saved."""
    with api_of(env) as api:
        nothing = ChainOptions(None, None, None, None, None, None, None, None, 10.0)
        ident, found = _identity_without_chain(nothing, api)
    deployment = env.ledger.deployment
    assert ident == LogIdentity(deployment.chain_id, deployment.audit_log)
    assert [(f.code, f.severity) for f in found] == [("deployment-from-api", "warning")]


def test_index_roots_beyond_a_malformed_entry_are_said_unchecked(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    """The index cannot be rebuilt past a malformed entry: the checkpoints beyond it are said
    not compared, so the report is not read as an audited index."""
    env, _story = storied
    mirror = write_mirror(env.ledger, tmp_path / "mirror.jsonl")
    edit_mirror_line(mirror, 2, lambda entry: entry["event"]["event"].update(action=99))
    report = audit(
        Mirror(mirror, identity(env)),
        api=None,
        chain=regulator_chain(env),
        state=None,
        now=int(time.time()),
    )
    (unchecked,) = report.findings_of("index-roots-unchecked")
    assert unchecked.severity == "warning"
    assert unchecked.context["malformedLeaf"] == 2
    assert unchecked.context["count"] >= 1
    assert "entry-malformed" in errors(report)
