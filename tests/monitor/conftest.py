"""Fixtures of the monitor's tests: a ledger on the embedded chain holding a clean, anchored
story (built once per module, put back before each test), the API in process, and a monitor
over both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.chain.reader import ChainReader, DeploymentSpec
from ledger.supervision import RuleSet, builtin_rules
from scripts._api import ApiClient
from scripts.monitor.core import Monitor, MonitorSettings
from scripts.monitor.store import Store
from tests.scripts.support import (
    Story,
    api_of,
    embedded_node_rpc,
    restore_db,
    snapshot_db,
    tell_story,
)
from tests.support.ledgers import Env, open_env


@dataclass
class World:
    env: Env
    story: Story
    backup: Path
    snapshot: object


@pytest.fixture(scope="module")
def _world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    path = tmp_path_factory.mktemp("monitor-story")
    with open_env("embedded", "sqlite", path) as environment:
        story = tell_story(environment)
        snapshot_db(environment.ledger, path / "story.db")
        assert environment.ledger.tester is not None
        yield World(
            environment, story, path / "story.db", environment.ledger.tester.take_snapshot()
        )


@pytest.fixture
def world(_world: World) -> World:
    restore_db(_world.env.ledger, _world.backup)
    assert _world.env.ledger.tester is not None
    _world.env.ledger.tester.revert_to_snapshot(_world.snapshot)
    return _world


@pytest.fixture
def api(world: World) -> Iterator[ApiClient]:
    with api_of(world.env) as client:
        yield client


def reader_of(env: Env) -> ChainReader:
    return ChainReader.connect(
        embedded_node_rpc(env), DeploymentSpec.from_deployment(env.ledger.deployment)
    )


def make_monitor(env: Env, api: ApiClient, path: Path, **settings: int) -> Monitor:
    return Monitor(
        Store(path),
        api,
        reader_of(env),
        RuleSet(builtin_rules()),
        MonitorSettings(**{"recheck": 0, **settings}),
    )
