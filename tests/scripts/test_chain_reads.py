"""The regulator's batched chain reads give the contracts' own answers, on both backends:
the embedded chain (behind a JSON-RPC shim) and anvil, compared with the service's own web3
chain client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from _chain import (
    _CHECKPOINT_AT,
    _CHECKPOINT_COMMITTED,
    _CHECKPOINT_NOT_FOUND,
    _GRANT_STATUS_AT,
    _INSTITUTION_OF,
    _LATEST_CHECKPOINT,
    _WAS_ACTIVE_AT,
    ChainError,
    DeploymentMismatch,
    DeploymentSpec,
    RegulatorChain,
)

from ledger.audit import FactNeeds, GrantQuery, InstitutionStatus
from ledger.chain.artifacts import load_artifact
from ledger.eip712 import keccak
from ledger.events import InstitutionKind, Purpose
from ledger.rules import GrantStatus
from tests.scripts.support import (
    EmbeddedNode,
    Story,
    advance_chain,
    anchor,
    chain_now,
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

    assert _WAS_ACTIVE_AT in selectors("InstitutionRegistry")
    assert _INSTITUTION_OF in selectors("InstitutionRegistry")
    assert _GRANT_STATUS_AT in selectors("ConsentRegistry")
    assert {_LATEST_CHECKPOINT, _CHECKPOINT_AT} <= selectors("AuditLog")
    assert _CHECKPOINT_NOT_FOUND in selectors("AuditLog", "error")
    assert _CHECKPOINT_COMMITTED in _signatures("AuditLog", "event")


def _compare(env: Env, regulator: RegulatorChain, story: Story) -> None:
    """Ask both ways: the batched reads and the service's own chain client, one by one."""
    chain = env.ledger.chain
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
        expected = chain.grant_status_at(*query)
        assert regulator.grant_status(query) == expected, query
    for address, at in institutions:
        info = chain.institution(address)
        active = info.kind != InstitutionKind.NONE and chain.was_active_at(address, info.kind, at)
        got = regulator.institution_at(address, at)
        if at < info.registered_at or info.kind == InstitutionKind.NONE:
            assert got == InstitutionStatus(InstitutionKind.NONE, False)
        else:
            assert got == InstitutionStatus(info.kind, active), (address, at)
    assert regulator.institution_at(env.hospital.address, suspended_at + 1).active is False
    assert regulator.institution_at(env.hospital.address, story.t0).active is True
    assert regulator.grant_status(grants[0]) in set(GrantStatus)
    for address in people:
        assert regulator.institution(address) == _institution(env, address)
    assert regulator.institution(env.hospital.address).name == "General Hospital"
    _compare_checkpoints(env, regulator)


def _institution(env: Env, address: str) -> Any:
    """The service's answer, as the regulator's dataclass (same fields)."""
    from _chain import InstitutionInfo

    info = env.ledger.chain.institution(address)
    return InstitutionInfo(info.address, info.kind, info.active, info.registered_at, info.name)


def _compare_checkpoints(env: Env, regulator: RegulatorChain) -> None:
    chain = env.ledger.chain
    expected = chain.checkpoint_events()
    assert len(expected) >= 2
    got = regulator.checkpoint_events()
    assert [(c.tree_size, c.root_hash, c.block_number, c.timestamp, tx) for c, tx in got] == [
        (c.tree_size, c.root_hash, c.block_number, c.timestamp, tx) for c, tx in expected
    ]
    latest = chain.latest_checkpoint()
    assert latest is not None
    regulator.refresh()
    assert regulator.latest_checkpoint() == _checkpoint(latest)
    for checkpoint, _tx in expected:
        fresh = type(regulator)(regulator.rpc, regulator.deployment)  # no cache
        assert fresh.checkpoint_at(checkpoint.tree_size) == _checkpoint(checkpoint)
    for size in (0, 3, latest.tree_size + 1, 2**64):
        assert chain.checkpoint_at(size) is None
        assert regulator.checkpoint_at(size) is None  # CheckpointNotFound (or out of range)
    assert regulator.block_timestamp() == chain.latest_timestamp()


def _checkpoint(checkpoint: Any) -> Any:
    from _chain import OnChainCheckpoint

    return OnChainCheckpoint(
        checkpoint.tree_size, checkpoint.root_hash, checkpoint.block_number, checkpoint.timestamp
    )


def _second_checkpoint(env: Env, story: Story) -> None:
    """One more event anchored: two checkpoints on chain, of sizes 7 and 8."""
    hospital = env.hospital
    event = hospital.access(story.record, env.patient.address, occurredAt=chain_now(env))
    env.ledger.submit([hospital.sign(event)])
    anchor(env.ledger)


def test_embedded_reads_match_the_chain_client(storied: tuple[Env, Story]) -> None:
    env, story = storied
    _second_checkpoint(env, story)
    _compare(env, regulator_chain(env), story)


@pytest.mark.anvil
def test_batched_json_rpc_reads_match_the_chain_client(
    anvil_env: Env, scripts_anvil: Anvil
) -> None:
    from tests.scripts.support import tell_story

    story = tell_story(anvil_env)
    _second_checkpoint(anvil_env, story)
    advance_chain(anvil_env, story.t0 + 10)
    regulator = RegulatorChain.connect(
        scripts_anvil.url, DeploymentSpec.from_deployment(anvil_env.ledger.deployment)
    )
    regulator.batch_size = 7  # several batches
    regulator.log_page_size = 3  # several eth_getLogs pages
    _compare(anvil_env, regulator, story)
    assert regulator.round_trips < 60  # batched, not one request per question


@pytest.mark.anvil
def test_a_wrong_or_unreachable_chain_is_refused(anvil_env: Env, scripts_anvil: Anvil) -> None:
    deployment = anvil_env.ledger.deployment
    spec = DeploymentSpec.from_deployment(deployment)
    with pytest.raises(ChainError, match="is unreachable"):
        RegulatorChain.connect(f"http://127.0.0.1:{free_port()}", spec, timeout=2)
    wrong_id = DeploymentSpec(
        spec.institution_registry, spec.audit_log, spec.consent_registry, chain_id=1
    )
    with pytest.raises(DeploymentMismatch, match="chain id"):
        RegulatorChain.connect(scripts_anvil.url, wrong_id)
    swapped = DeploymentSpec(spec.consent_registry, spec.audit_log, spec.institution_registry)
    with pytest.raises(DeploymentMismatch, match="is not medtrail's InstitutionRegistry"):
        RegulatorChain.connect(scripts_anvil.url, swapped)
    nothing_there = DeploymentSpec(
        spec.institution_registry, spec.audit_log, anvil_env.hospital.address
    )
    with pytest.raises(DeploymentMismatch, match="no contract at"):
        RegulatorChain.connect(scripts_anvil.url, nothing_there)


def test_the_regulator_only_reads(storied: tuple[Env, Story]) -> None:
    """Every request the tools make is one of the read methods: no key, no transaction."""
    env, story = storied
    _second_checkpoint(env, story)
    node = EmbeddedNode(env.ledger.chain.w3)
    client = httpx.Client(transport=httpx.MockTransport(node))
    spec = DeploymentSpec.from_deployment(env.ledger.deployment)
    regulator = RegulatorChain.connect(EmbeddedNode.URL, spec, client=client)
    _compare(env, regulator, story)
    assert set(node.methods) == {
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
    """As the service's client does: a refused eth_getLogs range is halved until it passes."""
    env, story = storied
    _second_checkpoint(env, story)
    node = EmbeddedNode(env.ledger.chain.w3)
    ranges: list[int] = []

    def picky(request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        if isinstance(payload, dict) and payload["method"] == "eth_getLogs":
            query = payload["params"][0]
            width = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
            ranges.append(width)
            if width > 4:
                error = {"code": -32005, "message": "query returned more than 10000 results"}
                return httpx.Response(
                    200, json={"jsonrpc": "2.0", "id": payload["id"], "error": error}
                )
        return node(request)

    spec = DeploymentSpec.from_deployment(env.ledger.deployment)
    client = httpx.Client(transport=httpx.MockTransport(picky))
    regulator = RegulatorChain.connect(EmbeddedNode.URL, spec, client=client)
    got = [(c.tree_size, tx) for c, tx in regulator.checkpoint_events()]
    assert got == [(c.tree_size, tx) for c, tx in env.ledger.chain.checkpoint_events()]
    accepted = [width for width in ranges if width <= 4]
    assert ranges[0] > 4  # refused, then halved until narrow enough
    assert ranges[-len(accepted) :] == accepted  # then kept narrow to the end
    assert sum(accepted) == ranges[0]  # every block of the range scanned once
    assert len(got) == 2
