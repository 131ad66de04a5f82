"""The regulator's tools read a trail page after page to the end (`_api.ApiClient.trail`),
and refuse an API whose pages do not move forward."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from scripts import verify_trail
from scripts._api import ApiClient, ApiError
from tests.scripts.support import Story, anchor, api_of, export_trail, regulator_chain
from tests.support.hostile import answering
from tests.support.ledgers import Env


def test_the_tools_read_every_page_of_a_trail(storied: tuple[Env, Story]) -> None:
    env, story = storied
    served = export_trail(env.ledger, story.record)["events"]
    assert len(served) == 7
    with api_of(env) as api:
        api.page_limit = 2
        before = api.requests
        trail = api.trail(story.record)
        assert api.requests - before == 4  # 2 + 2 + 2 + 1
        assert [e.eventId for e in trail.events] == [s.event_id for s in story.events]
        assert trail.recordRef == story.record
        report = verify_trail.verify_from_api(
            story.record, api, regulator_chain(env), now=int(time.time())
        )
    assert report.ok
    assert [line.event.eventId for line in report.events] == [s.event_id for s in story.events]


@pytest.mark.parametrize("following", [0, 3])
def test_an_api_whose_pages_do_not_move_forward_is_refused(following: int) -> None:
    page = json.dumps({"recordRef": "0x" + "01" * 32, "events": [], "next": following})
    with answering(page.encode()) as url:
        client = ApiClient(url, "mtk_x")
        try:
            with pytest.raises(ApiError, match="do not move forward"):
                client.trail(b"\x01" * 32)
        finally:
            client.close()


def _recording(api: ApiClient, on_page: Callable[[int, dict[str, Any]], None]) -> list[Any]:
    """Have ``api`` hand each trail page it reads to ``on_page`` (its number from 1, its
    answer, which it may change) and keep the answers."""
    real = api.get
    pages: list[Any] = []

    def get(path: str, params: dict[str, Any] | None = None) -> Any:
        body = real(path, params)
        if path.endswith("/trail"):
            pages.append(body)
            on_page(len(pages), body)
        return body

    api.get = get  # type: ignore[method-assign]
    return pages


def test_a_trail_in_three_pages_carries_its_index_list_once_and_a_filtered_event_is_found(
    storied: tuple[Env, Story],
) -> None:
    """The index list and proof come with the first page only; the verifier still checks the
    pages together against it: an event filtered out of the second page is trail-incomplete."""
    env, story = storied
    hidden: list[str] = []

    def drop_from_the_second(number: int, body: dict[str, Any]) -> None:
        if number == 2:
            hidden.append(body["events"][0]["eventId"])
            body["events"] = body["events"][1:]

    with api_of(env) as api:
        api.page_limit = 3
        pages = _recording(api, lambda number, body: None)
        clean = verify_trail.verify_from_api(
            story.record, api, regulator_chain(env), now=int(time.time())
        )
        assert clean.ok
        assert [page["index"] is not None for page in pages] == [True, False, False]
        assert len(pages[0]["index"]["leafIndexes"]) == len(story.events) == 7
        pages = _recording(api, drop_from_the_second)
        report = verify_trail.verify_from_api(
            story.record, api, regulator_chain(env), now=int(time.time())
        )
    assert len(pages) == 3
    assert not report.ok
    incomplete = [f for f in report.findings if f.code == "trail-incomplete"]
    assert len(incomplete) == 1
    assert "1 event(s) of the record's trail" in incomplete[0].detail
    assert "were not served" in incomplete[0].detail
    assert len(hidden) == 1
    served = {"0x" + line.event.eventId.hex() for line in report.events}
    assert len(served) == 6
    assert hidden[0] not in served


def test_a_later_page_asked_with_index_true_carries_the_list_and_verify_true_checks_any_page(
    storied: tuple[Env, Story],
) -> None:
    env, story = storied
    with api_of(env) as api:
        path = f"/v1/records/0x{story.record.hex()}/trail"
        first = api.get(path, {"limit": 3})
        second = api.get(path, {"limit": 3, "after": first["next"], "verify": "true"})
        asked = api.get(path, {"limit": 3, "after": first["next"], "index": "true"})
        none = api.get(path, {"limit": 3, "index": "false"})
    assert second["index"] is None
    assert [f["code"] for f in second["findings"] if f["severity"] == "error"] == []
    assert asked["index"] == first["index"]
    assert none["index"] is None


def test_a_checkpoint_landing_while_paging_has_the_last_page_asked_again_with_its_index(
    storied: tuple[Env, Story],
) -> None:
    """The first page's index proof is at the checkpoint before the new one; the later pages'
    bundles at the new one: the client asks once more, with ``index=true``, rather than have
    the verifier report the trail outdated."""
    env, story = storied

    def checkpoint_after_the_first(number: int, body: dict[str, Any]) -> None:
        if number == 1:
            access = env.hospital.access(story.record, env.patient.address)
            env.ledger.submit([env.hospital.sign(access)])
            anchor(env.ledger)

    with api_of(env) as api:
        api.page_limit = 3
        pages = _recording(api, checkpoint_after_the_first)
        trail = api.trail(story.record)
        report = verify_trail.verify_from_api(
            story.record, api, regulator_chain(env), now=int(time.time())
        )
    assert len(trail.events) == 8
    assert [page["index"] is not None for page in pages[:4]] == [True, False, False, True]
    assert trail.index is not None
    assert trail.index.treeSize == pages[3]["index"]["treeSize"] > pages[0]["index"]["treeSize"]
    assert len(trail.index.leafIndexes) == 8
    completeness = {"trail-incomplete", "trail-outdated", "index-proof-missing"}
    assert completeness.isdisjoint(f.code for f in report.findings)
