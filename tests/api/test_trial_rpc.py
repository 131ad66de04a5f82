"""The embedded chain read-only over JSON-RPC, for trying the regulator's tools against
``make run`` (issue 14, :mod:`api.trial_rpc`): the reads the tools make are answered, singly
and in batches, by an ordinary JSON-RPC client over HTTP; every write is refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from api.trial_rpc import TrialRpcServer
from ledger.chain.embedded import LockedEthereumTesterProvider
from ledger.chain.model import DeploymentSpec
from ledger.chain.reader import ChainReader
from ledger.eip712 import keccak
from tests.support.ledgers import Env, open_env


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """An embedded ledger with one event anchored (a checkpoint on chain)."""
    with open_env("embedded", "sqlite", tmp_path_factory.mktemp("trial")) as built:
        at = built.ledger.chain.latest_timestamp()
        hospital = built.hospital
        built.ledger.submit(
            [
                hospital.sign(
                    hospital.access(hospital.record("mrn-1"), built.patient.address, occurredAt=at)
                )
            ]
        )
        built.ledger.anchor_now()
        built.ledger.anchor_now()
        yield built


@pytest.fixture(scope="module")
def endpoint(env: Env) -> Iterator[str]:
    provider = env.ledger.chain.w3.provider
    assert isinstance(provider, LockedEthereumTesterProvider)
    with TrialRpcServer(provider, 0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        yield server.url


def rpc(url: str, method: str, params: list[Any] | None = None) -> dict[str, Any]:
    answer = httpx.post(
        url, json={"jsonrpc": "2.0", "id": 7, "method": method, "params": params or []}
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["id"] == 7
    return body


def test_a_json_rpc_client_reads_the_checkpoint_and_calls_the_contract(
    env: Env, endpoint: str
) -> None:
    ledger = env.ledger
    reader = ChainReader.connect(endpoint, DeploymentSpec.from_deployment(ledger.deployment))
    try:
        on_chain = reader.latest_checkpoint()
        assert on_chain is not None
        assert on_chain.tree_size == ledger.log.head().size == 1
        assert on_chain.root_hash == ledger.log.root_at(1)
        assert reader.is_log_operator(ledger.operator.address)  # an eth_call
    finally:
        reader.close()
    # The same eth_call by hand: AuditLog.hasRole(LOG_OPERATOR_ROLE, operator).
    selector = keccak(b"hasRole(bytes32,address)")[:4]
    data = (
        selector
        + keccak(b"LOG_OPERATOR_ROLE")
        + bytes(12)
        + bytes.fromhex(ledger.operator.address[2:])
    )
    answer = rpc(
        endpoint,
        "eth_call",
        [{"to": ledger.deployment.audit_log, "data": "0x" + data.hex()}, "latest"],
    )
    assert int(answer["result"], 16) == 1


def test_batches_are_answered_one_for_one(env: Env, endpoint: str) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_sendRawTransaction", "params": ["0x00"]},
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "eth_getCode",
            "params": [env.ledger.deployment.audit_log, "latest"],
        },
    ]
    answers = httpx.post(endpoint, json=batch).json()
    assert [a["id"] for a in answers] == [1, 2, 3, 4]
    assert int(answers[0]["result"], 16) == env.ledger.deployment.chain_id
    assert int(answers[1]["result"], 16) == env.ledger.chain.block_number()
    assert answers[2]["error"]["code"] == -32601
    assert len(answers[3]["result"]) > 100


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("eth_sendRawTransaction", ["0x00"]),
        ("eth_sendTransaction", [{"from": "0x" + "11" * 20, "to": "0x" + "22" * 20}]),
        ("eth_sign", ["0x" + "11" * 20, "0x00"]),
        ("evm_mine", []),
        ("evm_snapshot", []),
        ("anvil_setBalance", ["0x" + "11" * 20, "0x1"]),
        ("eth_accounts", []),
        ("personal_unlockAccount", ["0x" + "11" * 20, "", 0]),
    ],
)
def test_every_other_method_is_refused_and_changes_nothing(
    env: Env, endpoint: str, method: str, params: list[Any]
) -> None:
    before = env.ledger.chain.block_number()
    answer = rpc(endpoint, method, params)
    assert "result" not in answer
    assert answer["error"]["code"] == -32601
    assert "read-only" in answer["error"]["message"]
    assert "for trying only" in answer["error"]["message"]
    assert env.ledger.chain.block_number() == before


def test_malformed_requests_are_json_rpc_errors(endpoint: str) -> None:
    assert httpx.post(endpoint, content=b"{not json").json()["error"]["code"] == -32700
    assert httpx.post(endpoint, json=[]).json()["error"]["code"] == -32600
    assert httpx.post(endpoint, json={"id": 1}).json()["error"]["code"] == -32600
    assert httpx.post(endpoint, json=[1]).json()[0]["error"]["code"] == -32600
    get = httpx.get(endpoint)
    assert get.status_code == 405
    assert "POST" in get.json()["error"]["message"]
