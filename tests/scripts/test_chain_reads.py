"""The regulator's batched chain reads give the contracts' own answers, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
from _chain import _GRANT_STATUS_AT, _WAS_ACTIVE_AT, DeploymentSpec, RegulatorChain, _batch_results

from ledger.audit import FactNeeds, GrantQuery, InstitutionStatus
from ledger.chain.client import Chain
from ledger.chain.deploy import DeploymentMismatch
from ledger.chain.tx import ChainError
from ledger.events import InstitutionKind, Purpose
from ledger.rules import GrantStatus
from tests.scripts.support import (
    Story,
    advance_chain,
    chain_now,
    regulator_chain,
    relay_grant,
    revoke_grant,
)
from tests.support.anvil import Anvil, free_port
from tests.support.ledgers import Env


def test_the_selectors_are_the_contracts() -> None:
    from ledger.chain.artifacts import load_artifact
    from ledger.eip712 import keccak

    def selectors(name: str) -> set[bytes]:
        out = set()
        for item in load_artifact(name).abi:
            if item.get("type") == "function":
                types = ",".join(i["type"] for i in item["inputs"])
                out.add(keccak(f"{item['name']}({types})".encode())[:4])
        return out

    assert _WAS_ACTIVE_AT in selectors("InstitutionRegistry")
    assert _GRANT_STATUS_AT in selectors("ConsentRegistry")


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


def test_embedded_reads_match_the_chain_client(storied: tuple[Env, Story]) -> None:
    env, story = storied
    _compare(env, regulator_chain(env), story)


@pytest.mark.anvil
def test_batched_json_rpc_reads_match_the_chain_client(
    anvil_env: Env, scripts_anvil: Anvil
) -> None:
    from tests.scripts.support import tell_story

    story = tell_story(anvil_env)
    advance_chain(anvil_env, story.t0 + 10)
    regulator = RegulatorChain.connect(
        scripts_anvil.url, DeploymentSpec.from_deployment(anvil_env.ledger.deployment)
    )
    regulator.batch_size = 7  # several batches
    _compare(anvil_env, regulator, story)
    assert regulator.round_trips < 30  # batched, not one request per question


@pytest.mark.anvil
def test_a_wrong_or_unreachable_chain_is_refused(anvil_env: Env, scripts_anvil: Anvil) -> None:
    deployment = anvil_env.ledger.deployment
    spec = DeploymentSpec.from_deployment(deployment)
    with pytest.raises(ChainError):
        RegulatorChain.connect(f"http://127.0.0.1:{free_port()}", spec, timeout=2)
    wrong_id = DeploymentSpec(
        spec.institution_registry, spec.audit_log, spec.consent_registry, chain_id=1
    )
    with pytest.raises(DeploymentMismatch, match="chain id"):
        RegulatorChain.connect(scripts_anvil.url, wrong_id)
    swapped = DeploymentSpec(spec.consent_registry, spec.audit_log, spec.institution_registry)
    with pytest.raises(DeploymentMismatch):
        RegulatorChain.connect(scripts_anvil.url, swapped)


def test_batch_answers_are_matched_by_id_and_errors_refused() -> None:
    word = "0x" + "00" * 31 + "01"
    zero = "0x" + "00" * 32
    answers: list[Any] = [{"id": 2, "result": zero}, {"id": 1, "result": word}]
    assert list(_batch_results(answers, 2)) == [bytes.fromhex(word[2:]), bytes(32)]
    with pytest.raises(ChainError, match="refused"):
        list(_batch_results([{"id": 1, "error": {"code": -32000, "message": "boom"}}], 1))
    with pytest.raises(ChainError):
        list(_batch_results([{"id": 1, "result": word}], 2))
    with pytest.raises(ChainError, match="not a word"):
        list(_batch_results([{"id": 1, "result": "0x01"}], 1))


def test_a_read_only_regulator_holds_no_key(storied: tuple[Env, Story]) -> None:
    env, _story = storied
    regulator = regulator_chain(env)
    assert isinstance(regulator.chain, Chain)
    assert regulator.chain.operator is None
    assert regulator.chain.registrar is None
