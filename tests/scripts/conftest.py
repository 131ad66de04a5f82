"""Fixtures of the regulator tools' tests.

``env``: a fresh ledger on the embedded chain (in process: the tools are called as
functions, the chain object handed over, since a subprocess cannot reach it).
``anvil_env``: a fresh ledger on an anvil node of this package's own (JSON-RPC: the tools run
as subprocesses too). The node is not the session's shared one: other tests move its clock,
and these events must carry times close to the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import ANVIL_MISSING
from tests.scripts.support import Story, restore_db, snapshot_db, tell_story
from tests.support.anvil import Anvil, anvil_available
from tests.support.ledgers import Env, open_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with open_env("embedded", "sqlite", tmp_path) as environment:
        yield environment


@dataclass
class _StoryWorld:
    env: Env
    story: Story
    backup: Path
    snapshot: object


@pytest.fixture(scope="module")
def _story_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_StoryWorld]:
    path = tmp_path_factory.mktemp("story")
    with open_env("embedded", "sqlite", path) as environment:
        story = tell_story(environment)
        snapshot_db(environment.ledger, path / "story.db")
        assert environment.ledger.tester is not None
        snapshot = environment.ledger.tester.take_snapshot()
        yield _StoryWorld(environment, story, path / "story.db", snapshot)


@pytest.fixture
def storied(_story_world: _StoryWorld) -> tuple[Env, Story]:
    """A ledger on the embedded chain holding :func:`tell_story`'s clean trail, anchored;
    built once per module, and put back (store and chain) before each test."""
    world = _story_world
    restore_db(world.env.ledger, world.backup)
    assert world.env.ledger.tester is not None
    world.env.ledger.tester.revert_to_snapshot(world.snapshot)
    return world.env, world.story


@pytest.fixture(scope="session")
def scripts_anvil() -> Iterator[Anvil]:
    if not anvil_available():
        pytest.skip(ANVIL_MISSING)
    with Anvil() as node:
        yield node


@pytest.fixture
def anvil_env(tmp_path: Path, scripts_anvil: Anvil) -> Iterator[Env]:
    with open_env("anvil", "sqlite", tmp_path, scripts_anvil, institution_cache_ttl=60.0) as e:
        yield e
