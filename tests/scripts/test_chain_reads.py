"""The one chain reader (ledger.chain.reader) gives the contracts' own answers, on both
backends: the embedded chain (in process, through ledger.chain.embedded.EmbeddedNode) and
anvil over JSON-RPC. The oracle is web3: the same view functions called through web3's own
ABI codec and provider, one by one."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.audit import FactNeeds, GrantQuery, InstitutionStatus
from ledger.chain.abi import error_selector, event_topic, function
from ledger.chain.artifacts import load_artifact
from ledger.chain.model import (
    ChainError,
    CheckpointRoots,
    DeploymentMismatch,
    InstitutionInfo,
    OnChainCheckpoint,
)
from ledger.chain.reader import ChainReader, ChainView, DeploymentSpec
from ledger.chain.rpc import JsonRpc, RpcError
from ledger.eip712 import keccak
from ledger.events import InstitutionKind, Purpose
from ledger.rules import GrantStatus
from tests.scripts.support import (
    Handler,
    Story,
    advance_chain,
    anchor,
    chain_now,
    embedded_node_rpc,
    regulator_chain,
)
from tests.support.anvil import Anvil, free_port
from tests.support.ledgers import Env, relay_grant, revoke_grant


def _signatures(name: str, kind: str) -> set[bytes]:
    out = set()
    for item in load_artifact(name).abi:
        if item.get("type") == kind:
            types = ",".join(i["type"] for i in item["inputs"])
            out.add(keccak(f"{item['name']}({types})".encode()))
    return out


def test_the_selectors_are_the_contracts() -> None:
    def selectors(name: str, kind: str = "function") -> set[bytes]:
        return {signature[:4] for signature in _signatures(name, kind)}

    assert function("InstitutionRegistry", "wasActiveAt").selector in selectors(
        "InstitutionRegistry"
    )
    assert function("ConsentRegistry", "grantStatusAt").selector in selectors("ConsentRegistry")
    assert function("AuditLog", "checkpointAt").selector in selectors("AuditLog")
    assert error_selector("AuditLog", "CheckpointNotFound") in selectors("AuditLog", "error")
    assert event_topic("AuditLog", "CheckpointCommitted") in _signatures("AuditLog", "event")
    with pytest.raises(LookupError, match="no"):
        function("AuditLog", "noSuchFunction")


class Web3Oracle:
    """The contracts' answers through web3 (its own ABI codec and provider), one call each."""

    def __init__(self, env: Env) -> None:
        self.contracts = env.ledger.chain.contracts
        self.w3 = env.ledger.chain.w3

    def grant_status(self, q: GrantQuery) -> GrantStatus:
        fn = self.contracts.consent.functions.grantStatusAt(
            q.grant_id, q.patient, q.grantee, q.record_ref, q.purpose, q.at
        )
        return GrantStatus(fn.call())

    def institution(self, address: str) -> InstitutionInfo:
        kind, active, registered_at, name = self.contracts.institutions.functions.institutionOf(
            address
        ).call()
        return InstitutionInfo(address, InstitutionKind(kind), active, registered_at, name)

    def was_active_at(self, address: str, kind: int, at: int) -> bool:
        return bool(self.contracts.institutions.functions.wasActiveAt(address, kind, at).call())

    def checkpoint_events(self) -> list[tuple[int, bytes, bytes, int, int, bytes]]:
        logs = self.contracts.audit_log.events.CheckpointCommitted().get_logs(from_block=0)
        return [
            (
                int(e["args"]["treeSize"]),
                bytes(e["args"]["rootHash"]),
                bytes(e["args"]["indexRoot"]),
                int(e["blockNumber"]),
                int(self.w3.eth.get_block(e["blockNumber"])["timestamp"]),
                bytes(e["transactionHash"]),
            )
            for e in sorted(logs, key=lambda e: (e["blockNumber"], e["logIndex"]))
        ]

    def grant_ids_of(self, patient: str) -> list[int]:
        receipts = self.contracts.consent.events.GrantCreated().get_logs(
            from_block=0, argument_filters={"patient": patient}
        )
        return sorted({int(e["args"]["grantId"]) for e in receipts})


def _compare(env: Env, regulator: ChainView, story: Story) -> None:
    """Ask both ways: the batched reads, and web3 one call at a time."""
    oracle = Web3Oracle(env)
    pharmacy = env.pharmacy.address
    revoked = relay_grant(env, pharmacy, story.record)
    revoked_at = revoke_grant(env, revoked)
    purposes = [Purpose.TREATMENT, Purpose.RESEARCH]
    times = [story.t0 - 100, story.t0, revoked_at - 1, revoked_at, revoked_at + 5]
    grants = [
        GrantQuery(g, env.patient.address, grantee, story.record, int(p), t)
        for g in (story.grant_id, revoked, 999)
        for grantee in (pharmacy, env.insurer.address)
        for p in purposes
        for t in times
    ]
    env.ledger.suspend_institution(env.hospital.address)
    suspended_at = chain_now(env)
    people = [env.hospital.address, pharmacy, env.insurer.address, env.patient.address]
    moments = [story.t0 - 10_000, story.t0, suspended_at - 1, suspended_at, suspended_at + 1]
    institutions = [(a, t) for a in people for t in moments]
    regulator.prefetch(FactNeeds(frozenset(institutions), frozenset(grants)))
    for query in grants:
        assert regulator.grant_status(query) == oracle.grant_status(query), query
    for address, at in institutions:
        info = oracle.institution(address)
        got = regulator.institution_at(address, at)
        if at < info.registered_at or info.kind == InstitutionKind.NONE:
            assert got == InstitutionStatus(InstitutionKind.NONE, False)
        else:
            active = oracle.was_active_at(address, int(info.kind), at)
            assert got == InstitutionStatus(info.kind, active), (address, at)
    assert regulator.institution_at(env.hospital.address, suspended_at + 1).active is False
    assert regulator.institution_at(env.hospital.address, story.t0).active is True
    assert regulator.grant_status(grants[0]) in set(GrantStatus)
    for address in people:
        assert regulator.institution(address) == oracle.institution(address)
    assert regulator.institution(env.hospital.address).name == "General Hospital"
    reader = regulator.reader
    assert reader.grant_ids_of(env.patient.address) == oracle.grant_ids_of(env.patient.address)
    assert revoked in reader.grant_ids_of(env.patient.address)
    grant = reader.grant(revoked)
    assert grant is not None
    assert (grant.revoked_at, grant.grantee, grant.record_ref) == (
        revoked_at,
        pharmacy,
        story.record,
    )
    assert reader.grant(10_000) is None  # GrantNotFound
    assert reader.grant(0) is None
    _compare_checkpoints(env, regulator)


def _compare_checkpoints(env: Env, regulator: ChainView) -> None:
    expected = Web3Oracle(env).checkpoint_events()
    assert len(expected) >= 2
    got = regulator.checkpoint_events()
    assert [
        (c.tree_size, c.root_hash, c.index_root, c.block_number, c.timestamp, tx) for c, tx in got
    ] == expected
    latest = regulator.reader.latest_checkpoint()
    assert latest is not None
    regulator.refresh()
    assert regulator.latest_checkpoint() == latest
    assert (latest.tree_size, latest.root_hash, latest.index_root) == expected[-1][:3]
    for size, root, index_root, block, timestamp, tx in expected:
        fresh = ChainView(regulator.reader)  # no cache
        assert fresh.checkpoint_at(size) == CheckpointRoots(size, root, index_root)
        assert regulator.reader.checkpoint_commit(size) == (
            OnChainCheckpoint(size, root, index_root, block, timestamp),
            tx,
        )
        assert regulator.reader.find_checkpoint_tx(size, block) == tx
    for size in (0, 3, latest.tree_size + 1, 2**64):
        assert regulator.checkpoint_at(size) is None  # CheckpointNotFound (or out of range)
        assert regulator.reader.find_checkpoint_tx(size) is None
    assert regulator.block_timestamp() == env.ledger.chain.w3.eth.get_block("latest")["timestamp"]


def _second_checkpoint(env: Env, story: Story) -> None:
    """One more event anchored: two checkpoints on chain, of sizes 7 and 8."""
    hospital = env.hospital
    event = hospital.access(story.record, env.patient.address, occurredAt=chain_now(env))
    env.ledger.submit([hospital.sign(event)])
    anchor(env.ledger)


def test_embedded_reads_match_the_contracts(storied: tuple[Env, Story]) -> None:
    env, story = storied
    _second_checkpoint(env, story)
    _compare(env, regulator_chain(env), story)


@pytest.mark.anvil
def test_batched_json_rpc_reads_match_the_contracts(anvil_env: Env, scripts_anvil: Anvil) -> None:
    from tests.scripts.support import tell_story

    story = tell_story(anvil_env)
    _second_checkpoint(anvil_env, story)
    advance_chain(anvil_env, story.t0 + 10)
    regulator = ChainView.connect(
        scripts_anvil.url,
        DeploymentSpec.from_deployment(anvil_env.ledger.deployment),
        batch_size=7,  # several batches
        log_page_size=3,  # several eth_getLogs pages
    )
    _compare(anvil_env, regulator, story)
    assert regulator.round_trips < 80  # batched, not one request per question


@pytest.mark.anvil
def test_a_wrong_or_unreachable_chain_is_refused(anvil_env: Env, scripts_anvil: Anvil) -> None:
    deployment = anvil_env.ledger.deployment
    spec = DeploymentSpec.from_deployment(deployment)
    with pytest.raises(ChainError, match="is unreachable"):
        ChainView.connect(f"http://127.0.0.1:{free_port()}", spec, timeout=2)
    wrong_id = DeploymentSpec(
        spec.institution_registry, spec.audit_log, spec.consent_registry, chain_id=1
    )
    with pytest.raises(DeploymentMismatch, match="chain has id"):
        ChainView.connect(scripts_anvil.url, wrong_id)
    swapped = DeploymentSpec(spec.consent_registry, spec.audit_log, spec.institution_registry)
    with pytest.raises(DeploymentMismatch, match="is not medtrail's InstitutionRegistry"):
        ChainView.connect(scripts_anvil.url, swapped)
    nothing_there = DeploymentSpec(
        spec.institution_registry, spec.audit_log, anvil_env.hospital.address
    )
    with pytest.raises(DeploymentMismatch, match="no contract at"):
        ChainView.connect(scripts_anvil.url, nothing_there)


def _spy(methods: list[str]) -> Any:
    def wrap(node: Handler) -> Handler:
        def handler(payload: Any) -> Any:
            for request in payload if isinstance(payload, list) else [payload]:
                methods.append(request["method"])
            return node(payload)

        return handler

    return wrap


def test_the_reader_only_reads(storied: tuple[Env, Story]) -> None:
    """Every request a reader makes is one of the read methods: no key, no transaction."""
    env, story = storied
    _second_checkpoint(env, story)
    methods: list[str] = []
    spec = DeploymentSpec.from_deployment(env.ledger.deployment)
    regulator = ChainView(ChainReader.connect(embedded_node_rpc(env, _spy(methods)), spec))
    _compare(env, regulator, story)
    assert set(methods) == {
        "eth_chainId",
        "eth_getCode",
        "eth_call",
        "eth_blockNumber",
        "eth_getLogs",
        "eth_getBlockByNumber",
    }


def test_a_node_refusing_wide_log_ranges_is_asked_narrower_ones(
    storied: tuple[Env, Story],
) -> None:
    """A refused eth_getLogs range is halved until it passes."""
    env, story = storied
    _second_checkpoint(env, story)
    ranges: list[int] = []

    def picky(node: Handler) -> Handler:
        def handler(payload: Any) -> Any:
            if isinstance(payload, dict) and payload["method"] == "eth_getLogs":
                query = payload["params"][0]
                width = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
                ranges.append(width)
                if width > 4:
                    error = {"code": -32005, "message": "query returned more than 10000 results"}
                    return {"jsonrpc": "2.0", "id": payload["id"], "error": error}
            return node(payload)

        return handler

    spec = DeploymentSpec.from_deployment(env.ledger.deployment)
    regulator = ChainView(ChainReader.connect(embedded_node_rpc(env, picky), spec))
    got = [(c.tree_size, tx) for c, tx in regulator.checkpoint_events()]
    assert got == [(size, tx) for size, _r, _i, _b, _t, tx in Web3Oracle(env).checkpoint_events()]
    accepted = [width for width in ranges if width <= 4]
    assert ranges[0] > 4  # refused, then halved until narrow enough
    assert ranges[-len(accepted) :] == accepted  # then kept narrow to the end
    assert sum(accepted) == ranges[0]  # every block of the range scanned once
    assert len(got) == 2


def test_the_embedded_node_answers_as_a_json_rpc_node(storied: tuple[Env, Story]) -> None:
    """What a node answers to what it cannot do: a missing block is null, an unknown method
    -32601, a revert error 3 with its data, malformed parameters -32602."""
    env, _story = storied
    rpc: JsonRpc = embedded_node_rpc(env)
    assert rpc.call("eth_getBlockByNumber", [hex(10**6), False]) is None
    with pytest.raises(ChainError, match=r"not found \(code -32601\)"):
        rpc.call("eth_sendRawTransaction", ["0x00"])
    data = "0x" + function("AuditLog", "checkpointAt").encode(12345).hex()
    audit_log = env.ledger.deployment.audit_log
    with pytest.raises(RpcError) as info:
        rpc.call("eth_call", [{"to": audit_log, "data": data}, "latest"])
    assert info.value.rpc_code == 3
    revert = info.value.revert_data()
    assert revert is not None
    assert revert[:4] == error_selector("AuditLog", "CheckpointNotFound")
    with pytest.raises(ChainError, match=r"invalid params: .*\(code -32602\)"):
        rpc.call("eth_getBlockByNumber", ["0xnot-hex", False])
    assert rpc.call("eth_getLogs", [{"fromBlock": "0x100000", "toBlock": "latest"}]) == []


def test_institution_statuses_cost_one_history_read_whatever_the_times_asked(
    storied: tuple[Env, Story],
) -> None:
    """An audit asks about every second its events are dated at: each institution's history is
    read once, and every time is answered from it as the contract's ``wasActiveAt`` would."""
    env, story = storied
    oracle = Web3Oracle(env)
    env.ledger.suspend_institution(env.hospital.address)
    suspended_at = chain_now(env)
    people = [env.hospital.address, env.pharmacy.address, env.insurer.address]

    def asked(times: list[int]) -> list[str]:
        methods: list[str] = []
        spec = DeploymentSpec.from_deployment(env.ledger.deployment)
        view = ChainView(ChainReader.connect(embedded_node_rpc(env, _spy(methods)), spec))
        needs = frozenset((a, t) for a in people for t in times)
        before = len(methods)
        view.prefetch(FactNeeds(needs, frozenset()))
        prefetched = len(methods)
        for address, at in needs:
            info = oracle.institution(address)
            expected = InstitutionStatus(InstitutionKind.NONE, False)
            if at >= info.registered_at:
                active = oracle.was_active_at(address, int(info.kind), at)
                expected = InstitutionStatus(info.kind, active)
            assert view.institution_at(address, at) == expected, (address, at)
        assert len(methods) == prefetched  # every time answered from what was prefetched
        return methods[before:]

    few = asked([story.t0, suspended_at])
    many = asked([*range(story.t0 - 5, story.t0 + 60), *range(suspended_at - 5, suspended_at + 5)])
    assert many == few  # the same requests for 75 seconds as for 2, none after the prefetch
    assert few.count("eth_call") == 2 * len(people)  # institutionOf and historyOf, each once


def test_a_refreshed_view_reads_the_histories_again(storied: tuple[Env, Story]) -> None:
    """A status change mined after a view read a history is seen once the view is refreshed
    (a time asked about may be after the change: an event dated ahead of the chain)."""
    env, _story = storied
    view = regulator_chain(env)
    hospital = env.hospital.address
    later = chain_now(env) + 600
    assert view.institution_at(hospital, later).active
    env.ledger.suspend_institution(hospital)
    assert chain_now(env) <= later
    assert view.institution_at(hospital, later).active  # the history read before, until...
    view.refresh()
    assert not view.institution_at(hospital, later).active
