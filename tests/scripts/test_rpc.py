"""The JSON-RPC client (ledger.chain.rpc) and the reader's strict decoding of the chain's
answers (ledger.chain.reader): every way a node can fail or misanswer is a ChainError with a
clear message, never a wrong answer; the tools then exit with status 2."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from eth_abi.abi import encode as abi_encode

from ledger.chain.abi import error_selector, function
from ledger.chain.deploy import Deployment
from ledger.chain.model import DeploymentMismatch, InstitutionInfo
from ledger.chain.reader import ChainReader, ChainView, DeploymentSpec, TrustedDeployment
from ledger.chain.rpc import ChainError, JsonRpc, RpcError, hex_data, quantity
from ledger.events import InstitutionKind
from tests.scripts.support import Story, export_trail, write_mirror
from tests.support.anvil import free_port
from tests.support.ledgers import Env

URL = "http://node.invalid"
Handler = Callable[[Any], Any]


def rpc_of(handler: Handler, *, status: int = 200) -> JsonRpc:
    """A client whose node answers with ``handler(payload)`` (a JSON document, or ``bytes``
    sent as they are)."""

    def transport(request: httpx.Request) -> httpx.Response:
        answer = handler(json.loads(request.content))
        if isinstance(answer, bytes):
            return httpx.Response(status, content=answer)
        return httpx.Response(status, json=answer)

    return JsonRpc(URL, client=httpx.Client(transport=httpx.MockTransport(transport)))


def ok(payload: Any, result: Any = "0x1") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": payload["id"], "result": result}


# --------------------------------------------------------------------------- answers


def test_single_calls_and_batches_return_the_results_in_the_order_asked() -> None:
    def node(payload: Any) -> Any:
        if isinstance(payload, list):  # answered in reverse order: matched by id
            return [ok(p, hex(p["params"][0])) for p in reversed(payload)]
        return ok(payload, "0x7a69")

    rpc = rpc_of(node)
    assert quantity(rpc.call("eth_chainId", []), "eth_chainId") == 31337
    assert rpc.batch([("echo", [n]) for n in (5, 6, 7)]) == ["0x5", "0x6", "0x7"]
    assert rpc.batch([]) == []
    assert rpc.requests == 2  # the empty batch sends nothing


def test_an_unreachable_node_is_a_chain_error() -> None:
    rpc = JsonRpc(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ChainError, match=r"the chain at http://127\.0\.0\.1:\d+ is unreachable"):
        rpc.call("eth_chainId", [])
    with pytest.raises(ChainError, match="not an http"):
        JsonRpc("ftp://node.example").call("eth_chainId", [])


def test_a_slow_node_is_a_chain_error() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    rpc = JsonRpc(URL, client=httpx.Client(transport=httpx.MockTransport(slow)))
    with pytest.raises(ChainError, match="did not answer eth_chainId in time"):
        rpc.call("eth_chainId", [])


def test_an_error_object_is_an_rpc_error_keeping_code_message_and_data() -> None:
    error = {"code": 3, "message": "execution reverted", "data": "0x2a3c3bd8" + "00" * 32}
    rpc = rpc_of(lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": error})
    with pytest.raises(RpcError, match=r"refused eth_call: execution reverted \(code 3\)") as info:
        rpc.call("eth_call", [])
    assert info.value.rpc_code == 3
    assert info.value.revert_data() == bytes.fromhex("2a3c3bd8" + "00" * 32)
    assert isinstance(info.value, ChainError)
    nested = RpcError("x", data={"message": "reverted", "data": "0x01"})
    assert nested.revert_data() == b"\x01"
    assert RpcError("x", data="not hex").revert_data() is None
    assert RpcError("x").revert_data() is None
    bare = rpc_of(lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": "no"})
    with pytest.raises(RpcError, match="refused eth_chainId: 'no'"):
        bare.call("eth_chainId", [])


@pytest.mark.parametrize(
    ("answer", "status", "message"),
    [
        (b"<html>bad gateway</html>", 502, "answered eth_chainId with HTTP 502"),
        (b"<html>hello</html>", 200, "answered eth_chainId with something that is not JSON"),
        ([1, 2], 200, "not a JSON-RPC answer"),
        ({"jsonrpc": "2.0", "id": 999, "result": "0x1"}, 200, "with id 999, asked 1"),
        ({"jsonrpc": "2.0", "id": 1}, 200, "which has no result"),
    ],
)
def test_a_malformed_answer_is_a_chain_error(answer: Any, status: int, message: str) -> None:
    rpc = rpc_of(lambda _payload: answer, status=status)
    with pytest.raises(ChainError, match=message):
        rpc.call("eth_chainId", [])


def test_an_error_object_with_an_http_error_status_is_still_the_nodes_error() -> None:
    error = {"code": -32601, "message": "the method eth_foo does not exist"}
    rpc = rpc_of(lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": error}, status=400)
    with pytest.raises(RpcError, match="does not exist"):
        rpc.call("eth_foo", [])


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda batch: [ok(p) for p in batch[:-1]], "do not match the requests one for one"),
        (lambda batch: [ok(p) for p in [*batch, batch[0]]], "a repeated id"),
        (lambda batch: [{**ok(p), "id": p["id"] + 100} for p in batch], "one for one"),
        (lambda batch: [{"result": "0x1"} for _ in batch], "no or a repeated id"),
        (lambda batch: ok(batch[0]), "not a list"),
        (
            lambda batch: {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32600, "message": "no"},
            },
            "refused a batch of 3 eth_call requests: no",
        ),
        (
            lambda batch: [
                ok(batch[0]),
                {"jsonrpc": "2.0", "id": batch[1]["id"], "error": {"code": -32000, "message": "x"}},
                ok(batch[2]),
            ],
            "refused eth_call: x",
        ),
    ],
)
def test_a_batch_whose_answers_do_not_match_its_requests_is_refused(
    answer: Handler, message: str
) -> None:
    rpc = rpc_of(answer)
    with pytest.raises(ChainError, match=message):
        rpc.batch([("eth_call", [n]) for n in range(3)])


def test_hex_quantities_and_data_are_parsed_strictly() -> None:
    assert quantity("0x0", "q") == 0
    assert quantity("0x" + "f" * 64, "q") == 2**256 - 1
    assert hex_data("0x", "d") == b""
    assert hex_data("0x00ff", "d") == b"\x00\xff"
    for bad in ("0x", "12", "0x-1", "0x1_0", "0x 1", "0xg", 17, None, "0x" + "f" * 65):
        with pytest.raises(ChainError, match="not a hex quantity"):
            quantity(bad, "q")
    for bad_data in ("0x0", "00ff", "0x00 ff", "0x0g", b"\x00", None):
        with pytest.raises(ChainError, match="not 0x-hex data"):
            hex_data(bad_data, "d")


# --------------------------------------------------------------------------- contract answers


def _institution_answer(kind: int, active: int, registered_at: int, name: bytes) -> bytes:
    body = (
        kind.to_bytes(32, "big")
        + active.to_bytes(32, "big")
        + registered_at.to_bytes(32, "big")
        + (128).to_bytes(32, "big")
        + len(name).to_bytes(32, "big")
        + name.ljust((len(name) + 31) // 32 * 32, b"\0")
    )
    return (32).to_bytes(32, "big") + body


def _deployment() -> TrustedDeployment:
    return TrustedDeployment(31337, "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20, 0)


def _call_answering(result: Any) -> ChainReader:
    """A reader whose node answers every call (single or batched) with ``result``."""

    def node(payload: Any) -> Any:
        if isinstance(payload, list):
            return [ok(p, result) for p in payload]
        return ok(payload, result)

    return ChainReader(rpc_of(node), _deployment())


def test_an_institution_is_decoded_as_eth_abi_encodes_it() -> None:
    address = "0x" + "11" * 20
    encoded = abi_encode(
        ["(uint8,bool,uint64,string)"], [(2, True, 1_700_000_000, "Corner Pharmacy ✚")]
    )
    assert encoded == _institution_answer(2, 1, 1_700_000_000, "Corner Pharmacy ✚".encode())
    assert _call_answering("0x" + encoded.hex()).institution(address) == InstitutionInfo(
        address, InstitutionKind.PHARMACY, True, 1_700_000_000, "Corner Pharmacy ✚"
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_institution_answer(7, 1, 1, b"x"), "unreadable registration"),
        (_institution_answer(1, 2, 1, b"x"), "Boolean must be either 0x0 or 0x1"),
        (_institution_answer(1, 1, 2**64, b"x"), "Padding bytes were not empty"),
        (_institution_answer(1, 1, 1, b"\xff\xfe"), "can't decode byte 0xff"),
        (_institution_answer(1, 1, 1, b"name")[:-32], "Tried to read 32 bytes, only got 0"),
        (_institution_answer(1, 1, 1, b"name")[:100], "Tried to read 32 bytes"),
    ],
)
def test_a_malformed_institution_answer_is_a_chain_error(raw: bytes, message: str) -> None:
    reader = _call_answering("0x" + raw.hex())
    with pytest.raises(ChainError, match=message) as info:
        reader.institution("0x" + "11" * 20)
    if "registration" not in message:
        assert "institutionOf() answered data that is not an encoding of its outputs" in str(
            info.value
        )


def test_a_malformed_checkpoint_answer_is_a_chain_error() -> None:
    for result, message in (
        ("0x" + "00" * 31, "Tried to read 32 bytes"),
        ("0x" + "ff" * 160, "Padding bytes were not empty"),
        ("0x" + "00" * 128, "Tried to read 32 bytes"),  # a version-1 answer: 4 words, not 5
        ("0xzz", "not 0x-hex data"),
    ):
        with pytest.raises(ChainError, match=message):
            _call_answering(result).latest_checkpoint()
    assert _call_answering("0x" + "00" * 160).latest_checkpoint() is None  # size 0: none yet


def test_a_revert_other_than_checkpoint_not_found_is_not_taken_for_none() -> None:
    def reverting(selector: str) -> ChainReader:
        error = {"code": 3, "message": "execution reverted", "data": selector + "00" * 32}
        rpc = rpc_of(lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": error})
        return ChainReader(rpc, _deployment())

    not_found = error_selector("AuditLog", "CheckpointNotFound")
    assert reverting("0x" + not_found.hex()).checkpoint_at(5) is None
    with pytest.raises(RpcError, match="execution reverted"):
        reverting("0xdeadbeef").checkpoint_at(5)


def test_batched_answers_are_words_of_the_right_kind() -> None:
    from ledger.audit import FactNeeds, GrantQuery
    from ledger.rules import GrantStatus

    def answering(result: str) -> ChainView:
        def node(payload: Any) -> Any:
            registration = "0x" + _institution_answer(1, 1, 1, b"H").hex()
            return [
                ok(p, registration if p["params"][0]["data"][2:10] == selector else result)
                for p in payload
            ]

        return ChainView(ChainReader(rpc_of(node), _deployment()))

    selector = function("InstitutionRegistry", "institutionOf").selector.hex()
    address = "0x" + "44" * 20
    institutions = FactNeeds(frozenset({(address, 5)}), frozenset())
    grants = FactNeeds(
        frozenset(), frozenset({GrantQuery(1, address, "0x" + "55" * 20, bytes(32), 0, 5)})
    )

    def history(*changes: tuple[int, int]) -> str:
        """``historyOf``'s answer: a ``(uint64 since, bool active)[]``, words given raw."""
        words = [32, len(changes)] + [word for change in changes for word in change]
        return "0x" + b"".join(w.to_bytes(32, "big") for w in words).hex()

    with pytest.raises(ChainError, match=r"historyOf\(\) answered data that is not an encodi"):
        answering("0x01").prefetch(institutions)
    with pytest.raises(ChainError, match="Boolean must be either 0x0 or 0x1"):
        answering(history((1, 2))).prefetch(institutions)
    with pytest.raises(ChainError, match="unknown status"):
        answering("0x" + "00" * 31 + "63").prefetch(grants)
    chain = answering(history((1, 1), (7, 0)))
    chain.prefetch(institutions)
    assert chain.institution_at(address, 5).active is True  # active since 1, suspended at 7
    assert chain.institution_at(address, 7).active is False
    assert chain.known_institutions()[address].name == "H"
    chain = answering("0x" + "00" * 31 + "01")
    chain.prefetch(grants)
    assert chain.grant_status(next(iter(grants.grants))) is GrantStatus(1)


# --------------------------------------------------------------------------- deployment files


def test_deployment_files_are_read_as_the_service_reads_them(tmp_path: Path) -> None:
    written = Deployment(
        chain_id=31337,
        institution_registry="0x" + "ab" * 20,
        audit_log="0x" + "cd" * 20,
        consent_registry="0x" + "ef" * 20,
        block_number=12,
        sources_hash="0x" + "00" * 32,
    )
    path = tmp_path / "deployment.json"
    written.write(path)
    data = json.loads(path.read_text())
    assert sorted(data) == [  # the wire's spelling: what GET /v1/deployment serves
        "auditLog",
        "blockNumber",
        "chainId",
        "consentRegistry",
        "institutionRegistry",
        "sourcesHash",
    ]
    assert DeploymentSpec.read(path) == DeploymentSpec.from_deployment(written)
    resolved = DeploymentSpec.read(path).resolve(31337)
    assert resolved.audit_log == written.audit_log  # checksummed alike
    assert resolved.block_number == 12

    # A file written before the wire's spelling (snake_case) reads the same.
    old = tmp_path / "old.json"
    old.write_text(json.dumps(written.model_dump(by_alias=False)))
    assert "chain_id" in json.loads(old.read_text())
    assert Deployment.read(old) == written
    assert DeploymentSpec.read(old) == DeploymentSpec.from_deployment(written)

    with pytest.raises(DeploymentMismatch, match="not found; run `medtrail deploy` first"):
        DeploymentSpec.read(tmp_path / "nope.json")
    for broken in (
        {**data, "extra": 1},
        {k: v for k, v in data.items() if k != "sourcesHash"},
        {**data, "auditLog": "0x1234"},
        {**data, "auditLog": data["auditLog"].swapcase().replace("0X", "0x")},  # bad EIP-55
        {**data, "chainId": "one"},
        {**data, "chainId": 0},
        {**data, "audit_log": data["auditLog"]},  # both spellings in one file
    ):
        path.write_text(json.dumps(broken))
        with pytest.raises(DeploymentMismatch, match="is not a medtrail deployment file") as info:
            DeploymentSpec.read(path)
        with pytest.raises(DeploymentMismatch) as theirs:
            Deployment.read(path)  # the service refuses it too, in the same words
        assert info.value.detail == theirs.value.detail
    path.write_text(json.dumps({**data, "audit_log": data["auditLog"]}))
    with pytest.raises(DeploymentMismatch, match="mixes snake_case and camelCase"):
        Deployment.read(path)
    path.write_text("{not json")
    with pytest.raises(DeploymentMismatch, match=r"1 error.*first: the file: Invalid JSON"):
        DeploymentSpec.read(path)


def test_addresses_given_are_checked_and_the_chain_id_too() -> None:
    spec = DeploymentSpec("0x" + "ab" * 20, "0x" + "cd" * 20, "0x" + "ef" * 20, chain_id=5)
    with pytest.raises(DeploymentMismatch, match="the chain has id 1, the deployment was made on"):
        spec.resolve(1)
    assert spec.resolve(5).chain_id == 5
    bad = DeploymentSpec("0x" + "ab" * 20, "not an address", "0x" + "ef" * 20)
    with pytest.raises(DeploymentMismatch, match="the contract addresses are malformed"):
        bad.resolve(5)


# --------------------------------------------------------------------------- the commands


@contextmanager
def fake_node(handler: Handler, status: int = 200) -> Iterator[str]:
    """A JSON-RPC endpoint on 127.0.0.1 answering ``handler(payload)``; yields its URL."""

    class Answering(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            answer = handler(json.loads(self.rfile.read(length)))
            body = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Answering)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _chain_id_then(chain_id: int, batch: Handler) -> Handler:
    def node(payload: Any) -> Any:
        if isinstance(payload, list):
            return batch(payload)
        return ok(payload, hex(chain_id))

    return node


def test_every_chain_failure_makes_the_tools_exit_2_with_one_clear_message(
    storied: tuple[Env, Story], tmp_path: Path
) -> None:
    from scripts import audit_log, verify_trail

    env, story = storied
    ledger = env.ledger
    bundle = tmp_path / "trail.json"
    bundle.write_text(json.dumps(export_trail(ledger, story.record)))
    deployment = tmp_path / "deployment.json"
    ledger.deployment.write(deployment)
    mirror = write_mirror(ledger, tmp_path / "mirror.jsonl")
    chain_id = ledger.deployment.chain_id
    error = {"code": -32000, "message": "header not found"}
    cases: dict[str, tuple[Handler, int, str]] = {
        "error object": (
            lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": error},
            200,
            "the node refused eth_chainId: header not found (code -32000)",
        ),
        "HTTP error": (lambda p: b"bad gateway", 502, "answered eth_chainId with HTTP 502"),
        "not JSON": (lambda p: b"<html>", 200, "answered eth_chainId with something that"),
        "batch mismatch": (
            _chain_id_then(chain_id, lambda batch: [ok(p, "0x") for p in batch[:2]]),
            200,
            "do not match the requests one for one",
        ),
        "no batches": (
            _chain_id_then(
                chain_id,
                lambda batch: {
                    "jsonrpc": "2.0",
                    "id": None,
                    "error": {"code": -32600, "message": "batch"},
                },
            ),
            200,
            "the node refused a batch of 3 eth_getCode requests: batch",
        ),
        "no contracts": (
            _chain_id_then(chain_id, lambda batch: [ok(p, "0x") for p in batch]),
            200,
            "no contract at",
        ),
    }
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MEDTRAIL_")}
    runner = CliRunner()
    for case, (handler, status, message) in cases.items():
        with fake_node(handler, status) as url:
            chain = ["--rpc-url", url, "--deployment-file", str(deployment)]
            verified = runner.invoke(
                verify_trail.main,
                ["0x" + story.record.hex(), "--bundle", str(bundle), *chain],
                env=unset,
            )
            audited = runner.invoke(
                audit_log.main,
                ["--offline", "--mirror", str(mirror), "--state", str(tmp_path / "s.json"), *chain],
                env=unset,
            )
        for result in (verified, audited):
            assert result.exit_code == 2, (case, result.output)
            assert message in result.stderr, (case, result.stderr)
            assert "NOT VERIFIED" in result.stderr, case
            assert "Traceback" not in result.output, case
            assert "Result: OK" not in result.stdout, case
    unreachable = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(
        verify_trail.main,
        [
            "0x" + story.record.hex(),
            "--bundle",
            str(bundle),
            "--rpc-url",
            unreachable,
            "--deployment-file",
            str(deployment),
        ],
        env=unset,
    )
    assert result.exit_code == 2
    assert f"the chain at {unreachable} is unreachable" in result.stderr
    assert not (tmp_path / "s.json").exists()
