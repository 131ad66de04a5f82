"""A resumed audit re-checks what it mirrored (``--recheck``): an entry edited or deleted
behind the service's back after an earlier run mirrored it is ``entry-changed``; the report
says what was re-checked, or that nothing was."""

from __future__ import annotations

import json
import random
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scripts import audit_log
from scripts._common import Report, render_table
from scripts.audit_log import LogIdentity, Mirror, Recheck, StateFile, audit, recheck_ranges
from tests.scripts.support import Story, api_of, delete_event, regulator_chain, rewrite_body
from tests.support.ledgers import Env


def run(env: Env, tmp_path: Path, *, recheck: Recheck, api: bool = True, **kw: Any) -> Report:
    deployment = env.ledger.deployment
    identity = LogIdentity(deployment.chain_id, deployment.audit_log)
    with api_of(env) as client:
        return audit(
            Mirror(tmp_path / "mirror.jsonl", identity),
            api=client if api else None,
            chain=regulator_chain(env),
            state=StateFile(tmp_path / "state.json", identity),
            now=int(time.time()),
            page_size=3,
            recheck=recheck,
            **kw,
        )


def test_an_amount_edited_after_the_mirror_is_found_when_re_checked(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    first = run(env, tmp_path, recheck="all")
    assert first.ok, first.errors
    assert first.stats["recheck"] == "nothing re-checked: no entry was mirrored before this run"
    claim = story.events[4].event
    rewrite_body(env.ledger, claim, amount=99_00)  # 25.00 claimed becomes 99.00
    report = run(env, tmp_path, recheck="all")
    assert report.exit_status == 1
    (changed,) = report.errors
    assert changed.code == "entry-changed"
    assert changed.event_id == claim.eventId
    assert changed.context == {
        "leafIndex": 4,
        "changed": {"event.event.amount": {"mirrored": 25_00, "served": 99_00}},
    }
    assert "leaf 4 is served now with another event.event.amount" in changed.detail
    # The finding is the claim's: the claim is listed among the offending events.
    assert claim.eventId in {line.event_id for line in report.events}
    assert report.stats["recheckedEntries"] == 7
    assert report.stats["recheckDiffered"] == 1
    assert report.stats["recheck"] == (
        "all 7 entries mirrored before this run fetched again and compared (leaves 0-6): 1 differed"
    )
    assert "recheck: all 7 entries mirrored before this run" in render_table(report)
    # The mirror keeps what was first served (the evidence), not the edit.
    assert '"amount":2500' in (tmp_path / "mirror.jsonl").read_text().replace(" ", "")


def test_without_a_re_check_the_edit_is_missed_and_the_report_says_so(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    assert run(env, tmp_path, recheck=0).ok
    rewrite_body(env.ledger, story.events[4].event, amount=99_00)
    report = run(env, tmp_path, recheck=0)
    assert report.ok
    assert "entry-changed" not in report.codes
    assert report.stats["recheck"] == "nothing re-checked (--recheck 0)"
    assert report.stats["recheckedEntries"] == 0
    assert "recheck: nothing re-checked (--recheck 0)" in render_table(report)


def test_a_row_deleted_after_the_mirror_is_found_when_re_checked(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    assert run(env, tmp_path, recheck=0).ok
    delete_event(env.ledger, story.events[3].event_id)
    report = run(env, tmp_path, recheck="all")
    (changed,) = report.findings_of("entry-changed")
    assert changed.event_id == story.events[3].event_id
    assert changed.context == {"leafIndex": 3, "served": None}
    assert "no longer served" in changed.detail


def test_a_consent_label_changed_after_the_mirror_is_found(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    assert run(env, tmp_path, recheck=0).ok
    from sqlalchemy import text

    with env.ledger.store.write() as connection:
        connection.execute(
            text("UPDATE events SET consent_status = 'covered' WHERE event_id = :id"),
            {"id": story.events[6].event_id},  # the emergency access, relabelled
        )
    (changed,) = run(env, tmp_path, recheck="all").findings_of("entry-changed")
    assert changed.context["changed"] == {"consent": {"mirrored": "emergency", "served": "covered"}}


def test_a_sample_re_checks_some_entries_and_names_them(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, story = storied
    assert run(env, tmp_path, recheck=0).ok
    rewrite_body(env.ledger, story.events[4].event, amount=1)
    found = 0
    for seed in range(12):
        report = run(env, tmp_path, recheck=2, recheck_rng=random.Random(seed))
        assert report.stats["recheckedEntries"] in (1, 2)  # two leaves, or the last one alone
        sentence = report.stats["recheck"]
        assert sentence.startswith("a random sample of ")
        assert "of the 7 entries mirrored before this run" in sentence
        if "entry-changed" in report.codes:
            found += 1
            assert "(leaves 4-5)" in sentence
            assert sentence.endswith(": 1 differed")
        else:
            assert sentence.endswith(": none differed")
    assert 0 < found < 12  # some samples hit the edited leaf, others do not


def test_an_offline_audit_says_nothing_was_re_checked(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    env, _story = storied
    assert run(env, tmp_path, recheck="all").ok
    report = run(env, tmp_path, recheck="all", api=False)
    assert report.stats["recheck"] == "nothing re-checked: the API was not read (--offline)"


@pytest.mark.parametrize(
    ("upto", "recheck", "page"),
    [(1, 5, 3), (10, 3, 1000), (10, 4, 3), (1000, 10, 1000), (2500, 1500, 1000), (7, 2, 3)],
)
def test_sample_ranges_are_sorted_disjoint_and_as_large_as_asked(
    upto: int, recheck: int, page: int
) -> None:
    for seed in range(50):
        ranges = recheck_ranges(upto, recheck, page, random.Random(seed))
        leaves = [leaf for start, end in ranges for leaf in range(start, end)]
        assert leaves == sorted(set(leaves))
        assert all(0 <= leaf < upto for leaf in leaves)
        assert all(end - start >= 1 for start, end in ranges)
        assert all(a[1] < b[0] for a, b in pairwise(ranges))  # merged
        # About `recheck` entries: whole runs of min(page, recheck) leaves, the log's last
        # run possibly shorter.
        block = min(page, recheck)
        assert min(recheck, upto) - block < len(leaves) <= max(recheck, block) + block


def test_every_leaf_is_sometimes_sampled() -> None:
    rng = random.Random(7)
    seen: set[int] = set()
    for _ in range(400):
        for start, end in recheck_ranges(100, 10, 1000, rng):
            seen.update(range(start, end))
    assert seen == set(range(100))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recheck", "some"], "'some' is not 'all' nor a number of entries"),
        (["--recheck", "-3"], "is not 'all' nor a number of entries"),
        (["--offline", "--recheck", "all"], "--offline takes no --recheck"),
    ],
)
def test_a_bad_recheck_option_is_a_usage_error(
    args: list[str], message: str, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        audit_log.main,
        [*args, "--mirror", str(tmp_path / "m.jsonl"), "--no-chain"],
        env={"MEDTRAIL_API_URL": ""},
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.anvil
def test_the_command_re_checks_by_default(
    anvil_env: Env, scripts_anvil: Any, tmp_path: Path
) -> None:
    """As a command: the default re-checks (a log this small, whole); --recheck 0 says that
    nothing was."""
    from tests.scripts.support import tell_story
    from tests.scripts.test_cli import EXIT_FINDINGS, EXIT_OK, chain_args, serve, tool

    story = tell_story(anvil_env)
    files = ["--mirror", str(tmp_path / "m.jsonl"), "--state", str(tmp_path / "s.json")]
    with serve(anvil_env.ledger) as (url, key):
        common = ["--api", url, "--api-key", key, *files]
        common += chain_args(anvil_env, scripts_anvil, tmp_path)
        first = tool("audit_log", *common)
        assert first.returncode == EXIT_OK, first.stderr + first.stdout
        assert "recheck: nothing re-checked: no entry was mirrored before this run" in first.stdout
        rewrite_body(anvil_env.ledger, story.events[4].event, amount=99_00)
        skipped = tool("audit_log", *common, "--recheck", "0")
        assert skipped.returncode == EXIT_OK, skipped.stderr + skipped.stdout
        assert "recheck: nothing re-checked (--recheck 0)" in skipped.stdout
        found = tool("audit_log", *common, "--json")
    assert found.returncode == EXIT_FINDINGS, found.stderr
    report = json.loads(found.stdout)
    assert report["summary"]["counts"]["error"] == {"entry-changed": 1}
    assert report["stats"]["recheck"].startswith("all 7 entries mirrored before this run")
