"""Fixtures of the API tests: a :class:`~tests.api.world.World` per test module."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

# Starlette's TestClient on httpx warns that it prefers httpx2; the client works as it is.
warnings.filterwarnings("ignore", message=".*httpx2.*")

from tests.api.world import World, open_world  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One running API per test module (tests create fresh objects for what they change)."""
    with open_world(tmp_path_factory.mktemp("world")) as built:
        yield built
