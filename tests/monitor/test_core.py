"""The monitor over a real ledger (embedded chain, API in process): a clean log raises
nothing but its review findings; each tampering the audit detects is found live."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger import index
from ledger.chain.reader import ChainReader, DeploymentSpec
from ledger.errors import LedgerError
from ledger.events import InstitutionKind, SignedEvent
from ledger.supervision import Memory, ObservedEvent, Rule, RuleSet
from ledger.verify import Finding, FindingCode
from scripts._api import ApiClient
from scripts.monitor import core
from scripts.monitor.core import Monitor, MonitorSettings
from scripts.monitor.store import Store
from tests.monitor.conftest import World, make_monitor, reader_of
from tests.scripts.support import (
    advance_chain,
    anchor,
    chain_now,
    delete_event,
    embedded_node_rpc,
    granted_read,
    insert_event,
    restore_db,
    rewrite_body,
)
from tests.support.actors import Institution
from tests.support.ledgers import relay_grant, revoke_grant


def test_a_clean_log_raises_only_its_emergency_review(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    monitor = make_monitor(world.env, api, tmp_path / "m.db")
    report = monitor.step()
    assert report.verified == len(world.story.events)
    assert report.checkpoints == 1
    assert report.down == []
    found = monitor.store.findings()
    assert sorted(f.finding.code for f in found) == ["emergency-access"]
    assert monitor.lag()["entries"] == 0
    again = monitor.step()
    assert (again.verified, again.alerts) == (0, 0)


#: Limits under which an event anchored 10,000 s after its occurredAt is backdated.
TIGHT = {"max_backdate": 100, "max_merge_delay": 100}


def found(monitor: Monitor) -> list[str]:
    return sorted(str(f.finding.code) for f in monitor.store.findings())


def new_access(world: World, t: int) -> SignedEvent:
    env, story = world.env, world.story
    event = env.hospital.access(story.record, env.patient.address, occurredAt=t)
    return env.hospital.sign(event)


def test_an_event_rewritten_in_the_store_before_the_monitor_reads_it_is_found(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    monitor = make_monitor(world.env, api, tmp_path / "m.db")
    monitor.step()
    signed = new_access(world, chain_now(world.env))
    world.env.ledger.submit([signed])
    rewrite_body(world.env.ledger, signed.event, action=3)
    anchor(world.env.ledger)
    report = monitor.step()
    assert report.verified == 1
    codes = set(found(monitor))
    assert {"digest-mismatch", "checkpoint-root-mismatch"} <= codes
    assert {
        f.finding.event_id for f in monitor.store.findings() if f.finding.code == "digest-mismatch"
    } == {signed.event_id}


def test_an_event_rewritten_after_the_monitor_mirrored_it_is_found_by_the_recheck(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    monitor = make_monitor(world.env, api, tmp_path / "m.db", recheck=1000)
    monitor.step()
    assert "entry-changed" not in found(monitor)
    rewrite_body(world.env.ledger, world.story.events[0].event, action=3)
    monitor.step()
    (changed,) = [f.finding for f in monitor.store.findings() if f.finding.code == "entry-changed"]
    assert changed.event_id == world.story.events[0].event_id
    assert "event.event.action" in changed.context["changed"]


def test_a_row_deleted_before_the_monitor_reads_it_is_found(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    monitor = make_monitor(world.env, api, tmp_path / "m.db")
    monitor.step()
    t = chain_now(world.env)
    first, second = new_access(world, t), new_access(world, t + 1)
    world.env.ledger.submit([first, second])
    anchor(world.env.ledger)
    delete_event(world.env.ledger, first.event_id)
    monitor.step()
    codes = found(monitor)
    assert "entry-missing" in codes
    assert "head-mismatch" in codes
    (missing,) = [f.finding for f in monitor.store.findings() if f.finding.code == "entry-missing"]
    assert missing.context["from"] == len(world.story.events)


def test_a_forged_signature_is_found(world: World, api: ApiClient, tmp_path: Path) -> None:
    env, story = world.env, world.story
    monitor = make_monitor(env, api, tmp_path / "m.db")
    monitor.step()
    forger = Institution("Forger", InstitutionKind.HOSPITAL, env.ledger.domain)
    fake = env.hospital.access(story.record, env.patient.address, occurredAt=chain_now(env))
    insert_event(env.ledger, forger.sign(fake), consent="custodian")
    anchor(env.ledger)
    monitor.step()
    assert [
        (f.finding.code, f.finding.event_id)
        for f in monitor.store.findings()
        if f.finding.severity == "error"
    ] == [(FindingCode.SIGNER_MISMATCH, fake.eventId)]


def test_a_step_that_fails_midway_keeps_nothing_of_it_and_the_next_run_reports_once(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    """A rule that raises on the emergency access: the page's transaction is rolled back (as
    a kill -9 would lose it); a monitor started again on the same file verifies the page
    once, and every finding is alerted once."""

    def explode(observed: ObservedEvent, memory: Memory) -> list[Finding]:
        if observed.emergency:
            raise RuntimeError("crash")
        return []

    bomb = Rule(
        "bomb", "review", "Explodes on an emergency access.", on_event=explode, origin="test"
    )
    path = tmp_path / "m.db"
    crashing = Monitor(
        Store(path), api, reader_of(world.env), RuleSet([bomb]), MonitorSettings(recheck=0)
    )
    with pytest.raises(RuntimeError, match="crash"):
        crashing.step()
    assert crashing.store.findings() == []
    assert crashing.store.get("nextLeaf", 0) == 0
    crashing.store.close()
    monitor = make_monitor(world.env, api, path)
    report = monitor.step()
    assert report.verified == len(world.story.events)
    alerts = monitor.store.alerts_after(0)
    finding_alerts = [a.body["findingId"] for a in alerts if a.body["kind"] == "finding"]
    assert sorted(finding_alerts) == sorted(f.id for f in monitor.store.findings())
    assert monitor.step().alerts == 0


def test_the_api_going_down_and_up_is_reported_once_each(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    monitor = make_monitor(world.env, api, tmp_path / "m.db")
    real = monitor.api
    monitor.api = ApiClient("http://127.0.0.1:9", None, timeout=0.5)
    assert monitor.step().down == ["api"]
    assert monitor.step().alerts == 0  # still down: said once
    monitor.api = real
    monitor.step()
    statuses = [a.body for a in monitor.store.alerts_after(0) if a.body["kind"] == "status"]
    assert [(s["code"], s["source"]) for s in statuses] == [
        ("source-down", "api"),
        ("source-up", "api"),
    ]
    assert "unreachable" in statuses[0]["error"]


def test_two_worker_processes_verify_as_one(world: World, api: ApiClient, tmp_path: Path) -> None:
    monitor = make_monitor(world.env, api, tmp_path / "m.db", jobs=2)
    try:
        assert monitor.step().verified == len(world.story.events)
        assert found(monitor) == ["emergency-access"]
    finally:
        monitor.close()


def test_a_state_file_of_another_log_is_refused(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    store = Store(tmp_path / "m.db")
    with store.step():
        store.put("identity", {"chainId": 1, "auditLog": "0x" + "ab" * 20})
    store.close()
    with pytest.raises(LedgerError, match="belongs to AuditLog 0xabab"):
        make_monitor(world.env, api, tmp_path / "m.db")


def test_events_are_not_called_late_while_the_chain_does_not_answer(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    """The chain down, the log read: entries are verified, but none is reported
    not-anchored-in-time (the checkpoints that cover them could not be read)."""

    def no_blocks(node: Any) -> Any:
        def handle(payload: Any) -> Any:
            calls = payload if isinstance(payload, list) else [payload]
            if any(call.get("method") == "eth_blockNumber" for call in calls):
                raise OSError("the node stopped answering")
            return node(payload)

        return handle

    monitor = make_monitor(world.env, api, tmp_path / "m.db", max_merge_delay=0)
    monitor.reader = ChainReader.connect(
        embedded_node_rpc(world.env, no_blocks),
        DeploymentSpec.from_deployment(world.env.ledger.deployment),
    )
    report = monitor.step()
    assert report.down == ["chain"]
    assert report.verified == len(world.story.events)
    assert "not-anchored-in-time" not in found(monitor)


def more_events(world: World, count: int, start: int) -> list[SignedEvent]:
    t = chain_now(world.env)
    return [new_access(world, t + start + n) for n in range(count)]


def test_a_log_rolled_back_is_found(world: World, api: ApiClient, tmp_path: Path) -> None:
    """The operator restores an older copy of its store: the log serves fewer events than
    the monitor verified (and the chain holds a checkpoint beyond them)."""
    monitor = make_monitor(world.env, api, tmp_path / "m.db")
    monitor.step()
    world.env.ledger.submit(more_events(world, 2, 0))
    anchor(world.env.ledger)
    monitor.step()
    assert found(monitor) == ["emergency-access"]
    restore_db(world.env.ledger, world.backup)
    monitor.step()
    (rollback,) = [f.finding for f in monitor.store.findings() if f.finding.code == "log-rollback"]
    assert (rollback.context["servedSize"], rollback.context["seenSize"]) == (7, 9)


def test_a_split_view_is_found(world: World, api: ApiClient, tmp_path: Path) -> None:
    """The operator rewrites history past what the monitor verified: an older copy of its
    store, then other events in their place — a head of the same size with another root."""
    monitor = make_monitor(world.env, api, tmp_path / "m.db")
    world.env.ledger.submit(more_events(world, 2, 0))
    world.env.ledger.log.integrate_all()
    monitor.step()
    assert "split-view" not in found(monitor)
    restore_db(world.env.ledger, world.backup)
    world.env.ledger.submit(more_events(world, 2, 10))
    world.env.ledger.log.integrate_all()
    monitor.step()
    (split,) = [f.finding for f in monitor.store.findings() if f.finding.code == "split-view"]
    assert split.context["seenSize"] == split.context["servedSize"] == 9


def _extended(monitor: Monitor) -> list[int]:
    """Record how many events each update of the monitor's stored index appends."""
    sizes: list[int] = []
    extend = monitor.index.extend

    def counting(events: Any) -> Any:
        events = list(events)
        sizes.append(len(events))
        return extend(events)

    monitor.index.extend = counting  # type: ignore[method-assign]
    return sizes


def test_a_restarted_monitor_resumes_the_index_from_its_store(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    """The index is on disk at the last checkpoint verified: a monitor started again extends
    it with the next checkpoint's events only, and finds its root right."""
    path = tmp_path / "m.db"
    first = make_monitor(world.env, api, path)
    first.step()
    story_size = len(world.story.events)
    assert (first.index.size, first.anchored.size) == (story_size, story_size)
    stored_root = first.index.root()
    first.store.close()
    world.env.ledger.submit([new_access(world, chain_now(world.env) + 1)])
    anchor(world.env.ledger)
    again = make_monitor(world.env, api, path)
    assert (again.index.size, again.index.root()) == (story_size, stored_root)
    sizes = _extended(again)
    assert again.step().checkpoints == 1
    assert sizes == [1]
    assert found(again) == ["emergency-access"]


def test_a_checkpoint_verified_in_chunks_ends_where_one_pass_does(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    """A checkpoint's entries are verified a chunk at a time (its memory is a chunk's): the
    index is extended chunk by chunk, and the index, the anchored tree, the rules' state and
    the findings end as a monitor verifying it in one pass leaves them."""
    whole = make_monitor(world.env, api, tmp_path / "whole.db")
    whole.step()
    chunked = make_monitor(world.env, api, tmp_path / "chunked.db", checkpoint_chunk=3)
    sizes = _extended(chunked)
    assert chunked.step().checkpoints == 1
    story_size = len(world.story.events)
    assert sizes == [min(3, story_size - start) for start in range(0, story_size, 3)]
    assert (chunked.index.size, chunked.index.root()) == (whole.index.size, whole.index.root())
    assert chunked.anchored.root() == whole.anchored.root()
    assert found(chunked) == found(whole) == ["emergency-access"]
    state = "SELECT space, key, value FROM kv ORDER BY space, key"
    assert chunked.store.db.execute(state).fetchall() == whole.store.db.execute(state).fetchall()


def test_a_state_kept_before_the_index_was_stored_has_it_rebuilt_once(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    path = tmp_path / "m.db"
    first = make_monitor(world.env, api, path)
    first.step()
    root = first.index.root()
    with first.store.step():  # the state as an earlier monitor kept it
        first.store.db.execute("DELETE FROM index_nodes")
        first.store.db.execute("DELETE FROM index_lists")
        first.store.db.execute("DELETE FROM meta WHERE key = 'index'")
    first.store.close()
    again = make_monitor(world.env, api, path)
    assert (again.index.size, again.index.root()) == (len(world.story.events), root)
    sizes = _extended(again)
    again.store.close()
    assert sizes == []
    assert make_monitor(world.env, api, path).index.root() == root


@pytest.mark.parametrize("chunk", [10_000, 1])
def test_a_checkpoint_whose_index_root_is_not_the_logs_index_is_found(
    world: World, api: ApiClient, tmp_path: Path, chunk: int
) -> None:
    monitor = make_monitor(world.env, api, tmp_path / "m.db", checkpoint_chunk=chunk)
    monitor.step()
    ledger = world.env.ledger
    ledger.submit([new_access(world, chain_now(world.env) + 1)])
    ledger.log.integrate_all()
    head = ledger.log.head()
    previous = monitor.anchored.size
    wrong = bytes([9]) * 32  # the operator anchors the right log root with another index root
    proof = ledger.log.consistency_proof(previous, head.size)
    signed = ledger.chain.sign_checkpoint(head.size, head.root, wrong, proof)
    ledger.chain.wait_mined(ledger.chain.broadcast(signed))
    assert monitor.step().checkpoints == 1
    (mismatch,) = [f.finding for f in monitor.store.findings() if f.finding.severity == "error"]
    assert mismatch.code == "index-root-mismatch"
    assert mismatch.context["indexRoot"] == "0x" + wrong.hex()
    assert mismatch.context["treeSize"] == head.size
    assert mismatch.context["rebuiltRoot"] == "0x" + monitor.index.root().hex()


def test_events_not_kept_in_memory_are_parsed_again_from_the_mirror_at_their_checkpoint(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    """With no room for pending events (as after a restart), a checkpoint's events are read
    back from the mirror: the same verdicts."""
    monitor = make_monitor(world.env, api, tmp_path / "m.db", pending=0)
    report = monitor.step()
    assert (report.verified, report.checkpoints) == (len(world.story.events), 1)
    assert monitor._pending == {}
    assert found(monitor) == ["emergency-access"]


def new_prescription(world: World, t: int) -> SignedEvent:
    env, story = world.env, world.story
    event = env.hospital.prescription(story.record, env.patient.address, fills=1, occurredAt=t)
    return env.hospital.sign(event)


@pytest.mark.parametrize("make", [new_access, new_prescription], ids=["access", "prescription"])
@pytest.mark.parametrize(("pending", "chunk"), [(20_000, 10_000), (0, 10_000), (20_000, 2)])
def test_an_event_anchored_long_after_its_date_is_backdated_whether_kept_or_read_again(
    world: World,
    api: ApiClient,
    tmp_path: Path,
    pending: int,
    chunk: int,
    make: Callable[[World, int], SignedEvent],
) -> None:
    """At its checkpoint an event is judged on its eventId and occurredAt (kept, or read
    again from the mirror), whatever chunk of the checkpoint it falls in, whatever its type:
    the same ``backdated``."""
    monitor = make_monitor(
        world.env, api, tmp_path / "m.db", **TIGHT, pending=pending, checkpoint_chunk=chunk
    )
    monitor.step()
    assert found(monitor) == ["emergency-access"]
    late = make(world, chain_now(world.env) + 1)
    world.env.ledger.submit([late])
    world.env.ledger.log.integrate_all()
    monitor.step()  # verified, not anchored yet
    advance_chain(world.env, chain_now(world.env) + 10_000)
    anchor(world.env.ledger)
    assert monitor.step().checkpoints == 1
    errors = [f.finding for f in monitor.store.findings() if f.finding.severity == "error"]
    assert [(f.code, f.event_id) for f in errors] == [("backdated", late.event_id)]


@pytest.mark.parametrize(("pending", "chunk"), [(20_000, 10_000), (0, 10_000), (0, 1)])
def test_an_access_anchored_after_its_grant_ended_is_reviewed_whether_kept_or_read_again(
    world: World, api: ApiClient, tmp_path: Path, pending: int, chunk: int
) -> None:
    """An access covered by a grant when it happened, whose grant was revoked before a
    checkpoint covered it: ``access-logged-after-grant-end`` at that checkpoint, from the event
    kept in memory or parsed again from the mirror."""
    env, story = world.env, world.story
    monitor = make_monitor(env, api, tmp_path / "m.db", pending=pending, checkpoint_chunk=chunk)
    monitor.step()
    grant_id = relay_grant(env, env.pharmacy.address, story.record)
    read = granted_read(env, story.record, grant_id, chain_now(env) + 1)
    env.ledger.submit([env.pharmacy.sign(read)])
    env.ledger.log.integrate_all()
    monitor.step()  # verified while its grant holds, not anchored yet
    advance_chain(env, read.occurredAt + 5)
    revoke_grant(env, grant_id)
    anchor(env.ledger)
    assert monitor.step().checkpoints == 1
    review = [f.finding for f in monitor.store.findings() if f.finding.event_id == read.eventId]
    assert [(f.code, f.severity) for f in review] == [("access-logged-after-grant-end", "review")]


@pytest.mark.parametrize(("pending", "chunk"), [(20_000, 10_000), (0, 10_000), (2, 10_000), (2, 2)])
def test_a_checkpoints_findings_are_stored_in_the_order_of_their_entries(
    world: World, api: ApiClient, tmp_path: Path, pending: int, chunk: int
) -> None:
    """Alerts are numbered as findings are stored: a checkpoint's come in the order of the
    entries they are about, whether each entry was kept in memory or read again from the
    mirror (here: all, none, or the first two kept; one chunk, or chunks of two)."""
    env, story = world.env, world.story
    monitor = make_monitor(
        env, api, tmp_path / "m.db", **TIGHT, pending=pending, checkpoint_chunk=chunk
    )
    monitor.step()
    grant_id = relay_grant(env, env.pharmacy.address, story.record)
    t = chain_now(env) + 1
    first = new_access(world, t)
    read = env.pharmacy.sign(granted_read(env, story.record, grant_id, t))
    last = new_prescription(world, t)
    env.ledger.submit([first, read, last])
    env.ledger.log.integrate_all()
    monitor.step()  # verified, not anchored yet
    advance_chain(env, t + 10_000)
    revoke_grant(env, grant_id)
    anchor(env.ledger)
    seen = len(monitor.store.findings())
    assert monitor.step().checkpoints == 1
    ours = {first.event_id, read.event_id, last.event_id}
    stored = [
        f
        for f in sorted(monitor.store.findings(), key=lambda f: f.id)[seen:]
        if f.finding.event_id in ours  # (the checkpoint's own, e.g. checkpoint-late, come first)
    ]
    assert [(str(f.finding.code), f.finding.event_id) for f in stored] == [
        ("backdated", first.event_id),
        ("backdated", read.event_id),
        ("access-logged-after-grant-end", read.event_id),
        ("backdated", last.event_id),
    ]


@pytest.mark.parametrize("pending", [0, 2])
def test_a_checkpoint_parses_again_only_the_accesses_it_was_not_left_in_memory(
    world: World, api: ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pending: int
) -> None:
    """Read back from the mirror, an event other than a record access is judged on its
    eventId and occurredAt alone without being parsed; an access is parsed (its consent may be
    a grant) and held only if it is."""
    parsed: list[str] = []
    real = core._parsed_event

    def counting(raw: str) -> SignedEvent:
        signed = real(raw)
        parsed.append(signed.event.event_type.value)
        return signed

    monkeypatch.setattr(core, "_parsed_event", counting)
    monitor = make_monitor(world.env, api, tmp_path / "m.db", pending=pending)
    assert monitor.step().checkpoints == 1
    read_again = world.story.events[pending:]  # the first ``pending`` were kept in memory
    accesses = [e for e in read_again if e.event.event_type.value == "RecordAccess"]
    assert 0 < len(accesses) < len(read_again)
    assert parsed == ["RecordAccess"] * len(accesses)
    assert found(monitor) == ["emergency-access"]


def _entries_per_commit(monitor: Monitor) -> list[int]:
    """Watch the store's statements: how many mirror rows each committed transaction wrote
    (those that wrote any)."""
    runs: list[int] = []
    current = [0]

    def trace(statement: str) -> None:
        if statement.startswith("INSERT INTO entries"):
            current[0] += 1
        elif statement == "COMMIT":
            if current[0]:
                runs.append(current[0])
            current[0] = 0
        elif statement == "ROLLBACK":
            current[0] = 0

    monitor.store.db.set_trace_callback(trace)
    return runs


@pytest.mark.parametrize(
    ("step_events", "step_seconds", "runs"),
    [(4, 60.0, [4, 4, 2]), (1000, 60.0, [10]), (1000, 0.0, [2, 2, 2, 2, 2])],
)
def test_a_monitor_behind_the_log_commits_runs_of_pages_and_one_page_when_caught_up(
    world: World,
    api: ApiClient,
    tmp_path: Path,
    step_events: int,
    step_seconds: float,
    runs: list[int],
) -> None:
    """Ten entries behind, pages of 2: pages are committed together up to ``step_events``
    events or ``step_seconds``; then, caught up, a new entry is committed on its own (its
    alert goes out at once)."""
    monitor = make_monitor(world.env, api, tmp_path / "m.db", page_size=2)
    monitor.settings = MonitorSettings(
        recheck=0, page_size=2, step_events=step_events, step_seconds=step_seconds
    )
    monitor.step()
    world.env.ledger.submit(more_events(world, 10, 0))
    world.env.ledger.log.integrate_all()
    committed = _entries_per_commit(monitor)
    assert monitor.step().verified == 10
    assert committed == runs
    assert monitor.lag()["entries"] == 0
    assert monitor.store.get("verified") == len(world.story.events) + 10
    world.env.ledger.submit(more_events(world, 1, 10))
    world.env.ledger.log.integrate_all()
    assert monitor.step().verified == 1
    assert committed == [*runs, 1]


class _FailingApi(ApiClient):
    """The real API, whose log entries stop answering after ``pages`` pages."""

    def __init__(self, real: ApiClient, pages: int) -> None:
        self.__dict__.update(real.__dict__)
        self.pages = pages

    def entries(self, start: int, limit: int) -> Any:
        if self.pages == 0:
            raise httpx.ConnectError("the API stopped answering")
        self.pages -= 1
        return super().entries(start, limit)


def test_a_page_that_cannot_be_fetched_keeps_the_pages_of_its_run_before_it(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    """In a run of pages, the third cannot be fetched: the two before it are committed, the
    API is reported down; the next step goes on from there and alerts each finding once."""
    path = tmp_path / "m.db"
    monitor = make_monitor(world.env, api, path)
    monitor.settings = MonitorSettings(recheck=0, page_size=2, step_events=1000)
    monitor.api = _FailingApi(api, pages=2)
    report = monitor.step()
    assert report.down == ["api"]
    assert report.verified == 4
    assert monitor.store.get("nextLeaf") == 4
    assert monitor.store.get("verified") == 4
    monitor.api = api
    report = monitor.step()
    assert report.verified == len(world.story.events) - 4
    assert found(monitor) == ["emergency-access"]
    finding_alerts = [
        a.body["findingId"] for a in monitor.store.alerts_after(0) if a.body["kind"] == "finding"
    ]
    assert sorted(finding_alerts) == sorted(f.id for f in monitor.store.findings())


def test_a_run_of_pages_that_fails_midway_keeps_nothing_of_it(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    """A rule raises on a later page of a run: the whole run is rolled back (as a kill -9
    would lose it), then done again once, its findings alerted once."""
    calls = [0]

    def explode(observed: ObservedEvent, memory: Memory) -> list[Finding]:
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("crash")
        return []

    bomb = Rule("bomb", "review", "Explodes on the fifth event.", on_event=explode, origin="test")
    path = tmp_path / "m.db"
    crashing = Monitor(
        Store(path),
        api,
        reader_of(world.env),
        RuleSet([bomb]),
        MonitorSettings(recheck=0, page_size=2, step_events=1000),
    )
    with pytest.raises(RuntimeError, match="crash"):
        crashing.step()
    assert crashing.store.get("nextLeaf", 0) == 0
    assert crashing.store.db.execute("SELECT COUNT(*) FROM entries").fetchone() == (0,)
    crashing.store.close()
    monitor = make_monitor(world.env, api, path, page_size=2)
    assert monitor.step().verified == len(world.story.events)
    assert found(monitor) == ["emergency-access"]
    assert len(monitor.store.alerts_after(0)) == 1


def test_index_keys_remembered_for_a_few_pairs_give_the_logs_index_root(
    world: World, api: ApiClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The checkpoint's index root (checked against the chain's) needs every key right, the
    # ones remembered (the story's events share one record) as the ones computed; then more
    # pairs than are remembered (two here) evict the oldest and are computed again.
    monkeypatch.setattr(core, "KEYS_CACHE", 2)
    monitor = make_monitor(world.env, api, tmp_path / "m.db")
    report = monitor.step()
    assert (report.verified, report.checkpoints) == (len(world.story.events), 1)
    assert found(monitor) == ["emergency-access"]
    assert len(monitor._keys) <= 2
    for event in world.story.events:
        inner = event.event
        for record_ref in (world.story.record, None, bytes(32), b"\x01" * 32):
            assert monitor._event_keys(inner, record_ref) == index.event_keys(inner, record_ref)
            assert len(monitor._keys) <= 2


def test_a_page_with_a_malformed_entry_keeps_nothing_and_says_the_api_is_wrong(
    world: World, api: ApiClient, tmp_path: Path
) -> None:
    monitor = make_monitor(world.env, api, tmp_path / "m.db")
    real_entries = api.entries

    def tampered(start: int, limit: int) -> Any:
        page = real_entries(start, limit)
        page.entries[1] = {**page.entries[1], "leafIndex": "one"}
        return page

    monitor.api.entries = tampered  # type: ignore[method-assign]
    assert monitor.step().down == ["api"]
    assert monitor.store.get("nextLeaf", 0) == 0
    assert monitor.store.db.execute("SELECT COUNT(*) FROM entries").fetchone() == (0,)
    (status,) = [a.body for a in monitor.store.alerts_after(0) if a.body["kind"] == "status"]
    assert "the API served a malformed log entry" in status["error"]
    monitor.api.entries = real_entries  # type: ignore[method-assign]
    assert monitor.step().verified == len(world.story.events)
    assert found(monitor) == ["emergency-access"]
