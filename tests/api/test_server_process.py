"""Attacks on a real ``medtrail serve`` process (embedded mode): it answers, and stays up."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.anvil import free_port
from tests.support.service_proc import REPO, Service


def embedded_env(directory: Path, **overrides: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")},
        "PYTHONPATH": str(REPO),
        "MEDTRAIL_MODE": "embedded",
        "MEDTRAIL_DATABASE_URL": f"sqlite:///{directory / 'embedded.db'}",
        **overrides,
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("served")
    running = Service.start(embedded_env(directory), directory / "service.log", port=free_port())
    try:
        yield running
    finally:
        running.stop()


# --------------------------------------------------------------------------- issue 12, item 1


@pytest.mark.parametrize("path", ["/v1/auth/siwe", "/v1/events"])
def test_a_deeply_nested_body_is_refused_and_the_server_stays_up(
    service: Service, path: str
) -> None:
    """90,000 nested ``[`` once segfaulted the process (the C JSON parser ran out of stack)."""
    for body in (b"[" * 90_000, b"[" * 90_000 + b"]" * 90_000):
        answer = httpx.post(
            service.url + path,
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "json-too-deep"
        assert service.alive, service.tail()
        assert httpx.get(service.url + "/healthz", timeout=10).status_code == 200
