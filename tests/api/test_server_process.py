"""Attacks on a real ``medtrail serve`` process (embedded mode): it answers, and stays up."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
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


# --------------------------------------------------------------------------- issue 12, item 9


def half_open(port: int, count: int, head: bytes) -> list[socket.socket]:
    """``count`` connections that send ``head`` and never finish their request."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if head:
            sock.sendall(head)
        held.append(sock)
    return held


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closed ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service that gives a client 2 s to send its request head."""
    directory = tmp_path_factory.mktemp("impatient")
    running = Service.start(
        embedded_env(directory, MEDTRAIL_HEADER_TIMEOUT="2"),
        directory / "service.log",
        port=free_port(),
    )
    try:
        yield running
    finally:
        running.stop()


def test_connections_that_never_finish_their_headers_are_closed(impatient: Service) -> None:
    """900 such connections were all still held after 25 s: now each is closed once its head
    is late, and the server answers others meanwhile and after."""
    started = time.monotonic()
    silent = half_open(impatient.port, 100, b"")
    partial = half_open(impatient.port, 200, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    trickle = half_open(impatient.port, 20, b"GET /healthz HTTP/1.1\r\n")
    try:
        assert httpx.get(impatient.url + "/healthz", timeout=10).status_code == 200
        for sock in trickle[:5]:  # a byte a second keeps no connection alive past the timeout
            for _ in range(3):
                time.sleep(0.3)
                with contextlib.suppress(OSError):
                    sock.sendall(b"X")
        deadline = started + 2 + 5
        for sock in silent + partial + trickle:
            assert closed_by_server(sock, max(deadline - time.monotonic(), 0.1))
        assert time.monotonic() - started < 2 + 5
    finally:
        for sock in silent + partial + trickle:
            sock.close()
    assert impatient.alive, impatient.tail()
    answer = httpx.get(impatient.url + "/healthz", timeout=10)
    assert answer.status_code == 200


def test_a_slow_but_complete_request_is_served(impatient: Service) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as sock:
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            sock.sendall(part)
            time.sleep(0.5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        # The connection is kept alive, and the next request is timed from its first byte.
        time.sleep(1.5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service that holds at most 20 connections."""
    directory = tmp_path_factory.mktemp("bounded")
    running = Service.start(
        embedded_env(directory, MEDTRAIL_MAX_CONNECTIONS="20", MEDTRAIL_HEADER_TIMEOUT="30"),
        directory / "service.log",
        port=free_port(),
    )
    try:
        yield running
    finally:
        running.stop()


def test_connections_over_the_bound_are_refused_with_a_problem(bounded: Service) -> None:
    held = half_open(bounded.port, 20, b"GET /healthz HTTP/1.1\r\n")
    try:
        time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", bounded.port), timeout=10) as extra:
            answer = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := extra.recv(4096):
                    answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), answer
        assert b"content-type: application/problem+json" in head
        assert b"retry-after: 1" in head
        problem = json.loads(body)
        assert problem["code"] == "server-busy"
        assert problem["limit"] == 20
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    assert httpx.get(bounded.url + "/healthz", timeout=10).status_code == 200


def test_workers_are_refused_in_embedded_mode(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve", "--workers", "2"],
        cwd=REPO,
        env=embedded_env(tmp_path, MEDTRAIL_PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "rpc mode" in result.stderr
    assert "MEDTRAIL_WORKERS (--workers)" in result.stderr
    assert "Traceback" not in result.stderr
