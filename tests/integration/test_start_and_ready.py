"""Starting and probing against a real node (issue 14): a failed first start leaves the store
free for the next attempt; ``/readyz`` answers within its bound when the node hangs, naming
the check that timed out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from ledger.chain.client import deploy_to_rpc
from ledger.service import Ledger
from ledger.settings import ConfigurationError, Settings
from ledger.store import Store
from tests.integration.conftest import FUNDING_WEI, requires_anvil
from tests.support.anvil import Anvil
from tests.support.ledgers import open_env

pytestmark = requires_anvil


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


def test_a_failed_first_start_does_not_bind_the_store(anvil: Anvil, tmp_path: Path) -> None:
    """An operator key without the role stops the first start; the store stays unbound, so
    the same database starts with the right key (before: bound to the deployment until
    dropped by hand)."""
    right, wrong = Account.create(), Account.create()
    for account in (right, wrong):
        anvil.set_balance(account.address, FUNDING_WEI)
    deployment = deploy_to_rpc(
        anvil.url,
        anvil.accounts[0],
        admin=anvil.accounts[0].address,
        log_operator=right.address,
        registrars=[],
    )
    path = tmp_path / "deployment.json"
    deployment.write(path)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"

    def settings(operator: Account) -> Settings:
        return Settings(
            mode="rpc",
            rpc_url=anvil.url,
            deployment_file=path,
            database_url=url,
            operator_key=SecretStr(operator.key.hex()),
            confirmations=1,
        )

    with pytest.raises(ConfigurationError):
        Ledger.open(settings(wrong))
    store = Store(url)
    try:
        assert store.get_meta("deployment") is None
    finally:
        store.dispose()
    ledger = Ledger.open(settings(right))
    try:
        assert ledger.store.get_meta("deployment") is not None
    finally:
        ledger.close()


def test_readyz_answers_within_its_bound_when_the_node_hangs(tmp_path: Path) -> None:
    """A node that accepts connections but never answers (SIGSTOP): before, /readyz took
    ~52 s; now it answers 503 within MEDTRAIL_READINESS_TIMEOUT, saying the chain timed out."""
    with (
        Anvil() as node,
        open_env("anvil", "sqlite", tmp_path, anvil=node, readiness_timeout=2.0) as env,
    ):
        client = TestClient(create_app(env.ledger))
        assert client.get("/readyz").status_code == 200
        node.freeze()
        try:
            started = time.monotonic()
            answer = client.get("/readyz")
            took = time.monotonic() - started
        finally:
            node.thaw()
        assert answer.status_code == 503, answer.text
        assert took < 3.5, took
        checks = answer.json()["checks"]
        assert checks["store"] == "ok"
        assert checks["chain"] == "timed out: no answer within 2 s"
        assert "chain" in answer.json()["detail"]
        # Back to ready once the node answers again (the hung checks end on their own).
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "not ready again after the node came back"
            time.sleep(0.5)
