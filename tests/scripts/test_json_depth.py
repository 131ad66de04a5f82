"""The regulator's tools refuse JSON nested deeper than they accept — bundles, mirrors, state
files, and answers of the API and of the chain node — with a clear error (a deep document
once overflowed the parser's stack)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.chain.model import ChainError, Deployment, DeploymentMismatch
from ledger.chain.rpc import JsonRpc
from ledger.recursion import cap_recursion_limit
from scripts._api import ApiClient, ApiError
from scripts._common import ToolError
from scripts.audit_log import LogIdentity, Mirror, StateFile
from scripts.verify_trail import load_bundle_file
from tests.support.hostile import BOMB, answering

# Today's parser must fail with RecursionError here, not crash the test process.
cap_recursion_limit()

IDENTITY = LogIdentity(31337, "0x" + "11" * 20)


def test_a_nested_bundle_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trail.json"
    path.write_bytes(b'{"events": ' + BOMB)
    with pytest.raises(ToolError, match=r"not JSON.*nests deeper"):
        load_bundle_file(path)


def test_a_mirror_with_a_nested_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mirror.jsonl"
    path.write_bytes(BOMB + b"\n")
    with pytest.raises(ToolError, match="malformed header"):
        Mirror(path, IDENTITY)


def test_a_nested_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b'{"medtrailAuditState": ' + BOMB)
    with pytest.raises(ToolError):
        StateFile(path, IDENTITY).load()


@pytest.mark.parametrize("status", [200, 500])
def test_a_nested_answer_of_the_api_is_refused(status: int) -> None:
    with answering(BOMB, status) as url:
        client = ApiClient(url, "mtk_x")
        try:
            with pytest.raises(ApiError):
                client.get("/v1/log/head")
        finally:
            client.close()


def test_a_nested_answer_of_the_chain_node_is_refused() -> None:
    with answering(BOMB) as url:
        rpc = JsonRpc(url)
        try:
            with pytest.raises(ChainError, match="not JSON"):
                rpc.call("eth_blockNumber", [])
        finally:
            rpc.close()


def test_a_nested_deployment_file_is_refused(tmp_path: Path) -> None:
    """Read by the service and the tools through pydantic, whose parser bounds nesting itself
    (whatever the interpreter's recursion limit)."""
    path = tmp_path / "deployment.json"
    path.write_bytes(b'{"chain_id": ' + BOMB)
    with pytest.raises(
        DeploymentMismatch, match=r"not a medtrail deployment file.*recursion limit"
    ):
        Deployment.read(path)
