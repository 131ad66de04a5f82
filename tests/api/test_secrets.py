"""No RPC credentials in any answer or log line (issue 12, item 6).

Hosted nodes put their API key in the RPC URL's path, query or user-info; with the chain
unreachable, the public ``/readyz`` once showed that URL whole, and so did the service's
start-up error. The service reaches anvil here through a gateway that answers on any path,
as a hosted provider does; stopping the gateway makes the chain unreachable.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from fastapi.testclient import TestClient

from api.app import bootstrap_admin_key, create_app
from ledger.service import Ledger
from tests.support.anvil import Anvil, anvil_available, free_port
from tests.support.gateway import gateway
from tests.support.ledgers import open_env
from tests.support.service_proc import REPO

SECRETS = ("pw-SECRET-1", "PATHSECRET2", "QUERYSECRET3", "tenant-SECRET-4")


def secret_url(base: str) -> str:
    """``base`` (``http://127.0.0.1:port``) with a key in every place providers put one."""
    host = base.removeprefix("http://")
    return f"http://tenant-SECRET-4:pw-SECRET-1@{host}/v3/PATHSECRET2?apikey=QUERYSECRET3"


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked in:\n{text}"


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    if not anvil_available():
        pytest.skip("anvil is not installed (run `make node`)")
    with Anvil() as node:
        yield node


def test_with_the_chain_unreachable_nothing_shows_the_rpc_urls_secrets(
    anvil: Anvil, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        open_env("anvil", "sqlite", tmp_path, anvil) as env,
        gateway(anvil.url) as (base, server),
    ):
        settings = env.ledger.settings.model_copy(update={"rpc_url": secret_url(base)})
        ledger = Ledger.open(settings)
        try:
            client = TestClient(create_app(ledger))
            assert client.get("/readyz").status_code == 200
            key = bootstrap_admin_key(ledger)
            server.shutdown()
            server.server_close()
            with caplog.at_level(logging.INFO):
                ready = client.get("/readyz")
                institution = client.get(
                    f"/v1/institutions/{Account.create().address}",
                    headers={"Authorization": f"Bearer {key}"},
                )
        finally:
            ledger.close()
    assert ready.status_code == 503
    chain = ready.json()["checks"]["chain"]
    assert chain.startswith("unreachable")
    assert_no_secret(ready.text)
    assert institution.status_code == 503, institution.text
    assert institution.json()["code"] == "chain-unavailable"
    assert_no_secret(institution.text)
    assert_no_secret(caplog.text)
    assert "chain-unavailable" in institution.text


def test_the_start_up_error_names_the_endpoint_by_its_origin_only(tmp_path: Path) -> None:
    """``medtrail serve`` against a node that does not answer: one line, no secret."""
    port = free_port()
    deployment = tmp_path / "deployment.json"
    deployment.write_text(
        '{"chain_id": 31337, "institution_registry": "0x' + "11" * 20 + '", '
        '"audit_log": "0x' + "22" * 20 + '", "consent_registry": "0x' + "33" * 20 + '", '
        '"block_number": 0, "sources_hash": "0x00"}'
    )
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "-v", "serve"],
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")},
            "PYTHONPATH": str(REPO),
            "MEDTRAIL_MODE": "rpc",
            "MEDTRAIL_RPC_URL": secret_url(f"http://127.0.0.1:{port}"),
            "MEDTRAIL_RPC_TIMEOUT": "2",
            "MEDTRAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "MEDTRAIL_DEPLOYMENT_FILE": str(deployment),
            "MEDTRAIL_OPERATOR_KEY": Account.create().key.hex(),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"http://127.0.0.1:{port}" in result.stderr
    assert "unreachable" in result.stderr
    assert "Traceback" not in result.stderr
    assert_no_secret(result.stdout + result.stderr)


def test_a_served_chain_is_announced_by_its_origin_only(anvil: Anvil, tmp_path: Path) -> None:
    """The start-up message names the chain's endpoint as ``scheme://host:port``."""
    with open_env("anvil", "sqlite", tmp_path, anvil) as env, gateway(anvil.url) as (base, _):
        settings = env.ledger.settings
        assert settings.operator_key is not None
        process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "-v", "serve"],
            cwd=REPO,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")},
                "PYTHONPATH": str(REPO),
                "MEDTRAIL_MODE": "rpc",
                "MEDTRAIL_RPC_URL": secret_url(base),
                "MEDTRAIL_DATABASE_URL": settings.database_url,
                "MEDTRAIL_DEPLOYMENT_FILE": str(settings.deployment_file),
                "MEDTRAIL_OPERATOR_KEY": settings.operator_key.get_secret_value(),
                "MEDTRAIL_PORT": str(free_port()),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        try:
            assert process.stdout is not None
            while not any("AuditLog" in line for line in lines):
                line = process.stdout.readline()
                if not line:
                    break
                lines.append(line)
        finally:
            process.terminate()
            output, _ = process.communicate(timeout=30)
    text = "".join(lines) + output
    assert f"chain 31337 at {base}, AuditLog" in text, text
    assert_no_secret(text)
