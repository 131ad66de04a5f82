"""The regulator's tools read a trail page after page to the end (`_api.ApiClient.trail`),
and refuse an API whose pages do not move forward."""

from __future__ import annotations

import json
import time

import pytest

from scripts import verify_trail
from scripts._api import ApiClient, ApiError
from tests.scripts.support import Story, api_of, export_trail, regulator_chain
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
