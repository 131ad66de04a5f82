"""Deploying the contracts (role hand-over) and checking a deployment against a chain."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3

from ledger.chain.artifacts import load_artifact
from ledger.chain.deploy import (
    DEFAULT_ADMIN_ROLE,
    LOG_OPERATOR_ROLE,
    REGISTRAR_ROLE,
    Contracts,
    Deployment,
    DeploymentMismatch,
    bind,
    deploy,
)
from ledger.chain.embedded import (
    LockedEthereumTesterProvider,
    embedded_rpc,
    embedded_web3,
    funded_account,
)
from ledger.chain.reader import ChainReader, DeploymentSpec
from ledger.chain.tx import ContractReverted, call_or_raise, send
from tests.conftest import EmbeddedChain
from tests.contracts.conftest import (
    ZERO_ADDRESS,
    Kind,
    deploy_test_contract,
    reverts,
    send_tx,
    unauthorized,
)


@dataclass(frozen=True)
class HandedOver:
    w3: Web3
    deployer: LocalAccount
    admin: LocalAccount
    operator: LocalAccount
    registrars: tuple[LocalAccount, ...]
    deployment: Deployment
    contracts: Contracts


@pytest.fixture(scope="module")
def handed_over() -> HandedOver:
    """A fresh chain where the deployer hands the admin role to another address."""
    w3, _ = embedded_web3()
    deployer, admin, operator, r1, r2 = (funded_account(w3) for _ in range(5))
    deployment = deploy(
        w3,
        deployer,
        admin=admin.address,
        log_operator=operator.address,
        registrars=[r1.address, r2.address],
    )
    return HandedOver(w3, deployer, admin, operator, (r1, r2), deployment, bind(w3, deployment))


# --------------------------------------------------------------------------- deploy


def test_deploy_hands_admin_over_and_grants_roles(handed_over: HandedOver) -> None:
    h = handed_over
    institutions, audit_log = h.contracts.institutions, h.contracts.audit_log
    for contract in (institutions, audit_log):
        assert contract.functions.hasRole(DEFAULT_ADMIN_ROLE, h.admin.address).call() is True
        assert contract.functions.hasRole(DEFAULT_ADMIN_ROLE, h.deployer.address).call() is False
    for registrar in h.registrars:
        assert institutions.functions.hasRole(REGISTRAR_ROLE, registrar.address).call() is True
    assert institutions.functions.hasRole(REGISTRAR_ROLE, h.deployer.address).call() is False
    assert audit_log.functions.hasRole(LOG_OPERATOR_ROLE, h.operator.address).call() is True
    assert audit_log.functions.hasRole(LOG_OPERATOR_ROLE, h.deployer.address).call() is False
    # ConsentRegistry has no roles at all: nobody administers patients' grants.
    assert not any(item.get("name") in {"hasRole", "grantRole"} for item in h.contracts.consent.abi)
    assert h.contracts.consent.functions.institutions().call() == institutions.address
    assert h.deployment.chain_id == h.w3.eth.chain_id
    assert 0 < h.deployment.block_number <= h.w3.eth.block_number


def test_deployer_cannot_administer_after_hand_over(handed_over: HandedOver) -> None:
    h = handed_over
    for contract, role in (
        (h.contracts.institutions, REGISTRAR_ROLE),
        (h.contracts.audit_log, LOG_OPERATOR_ROLE),
    ):
        with reverts(*unauthorized(h.deployer.address, DEFAULT_ADMIN_ROLE)):
            send_tx(h.w3, contract.functions.grantRole(role, h.deployer.address), h.deployer)
    with reverts(*unauthorized(h.deployer.address, REGISTRAR_ROLE)):
        send_tx(
            h.w3,
            h.contracts.institutions.functions.register(h.deployer.address, Kind.HOSPITAL, "H"),
            h.deployer,
        )


def test_new_admin_administers_after_hand_over(handed_over: HandedOver) -> None:
    h = handed_over
    newcomer = funded_account(h.w3)
    institutions = h.contracts.institutions
    send_tx(h.w3, institutions.functions.grantRole(REGISTRAR_ROLE, newcomer.address), h.admin)
    assert institutions.functions.hasRole(REGISTRAR_ROLE, newcomer.address).call() is True
    send_tx(h.w3, institutions.functions.revokeRole(REGISTRAR_ROLE, newcomer.address), h.admin)
    assert institutions.functions.hasRole(REGISTRAR_ROLE, newcomer.address).call() is False
    send_tx(
        h.w3,
        h.contracts.institutions.functions.register(newcomer.address, Kind.INSURER, "I"),
        h.registrars[1],
    )
    assert institutions.functions.isActive(newcomer.address).call() is True


def test_deploy_includes_consent_registry_v2(handed_over: HandedOver) -> None:
    """Consent version 2 (issue 17): deployed with the rest and named in the deployment,
    whose file reads back the same."""
    h = handed_over
    address = h.deployment.consent_registry_v2
    assert address is not None
    assert load_artifact("ConsentRegistryV2").matches_code(bytes(h.w3.eth.get_code(address)))
    assert Deployment.model_validate_json(h.deployment.model_dump_json()) == h.deployment
    assert h.deployment.model_dump()["consentRegistryV2"] == address


def test_a_version_1_only_deployment_and_its_old_file(tmp_path: Path) -> None:
    """``consent_v2=False`` deploys no ConsentRegistryV2; a file written before it (no
    ``consentRegistryV2``) reads as version 1 only and writes back byte for byte."""
    w3, _ = embedded_web3()
    deployer = funded_account(w3)
    deployment = deploy(
        w3, deployer, admin=deployer.address, log_operator=deployer.address, registrars=[],
        consent_v2=False,
    )  # fmt: skip
    assert deployment.consent_registry_v2 is None
    path = tmp_path / "deployment.json"
    deployment.write(path)
    old = path.read_text(encoding="utf-8")
    assert "consentRegistryV2" not in old
    assert Deployment.read(path) == deployment
    Deployment.read(path).write(path)
    assert path.read_text(encoding="utf-8") == old


def test_deploy_with_deployer_as_admin_keeps_admin(chain: EmbeddedChain) -> None:
    """tests/conftest.py deploys with admin == deployer: nothing is renounced."""
    for contract in (chain.contracts.institutions, chain.contracts.audit_log):
        assert contract.functions.hasRole(DEFAULT_ADMIN_ROLE, chain.admin.address).call() is True


# --------------------------------------------------------------------------- the code check


def check_deployment(w3: Web3, deployment: Deployment) -> None:
    """The reader's check of a deployment (chain id, then the code at each address) on the
    embedded chain behind ``w3``."""
    provider = w3.provider
    assert isinstance(provider, LockedEthereumTesterProvider)
    ChainReader.connect(embedded_rpc(provider), DeploymentSpec.from_deployment(deployment))


def test_check_deployment_accepts_the_real_deployments(
    chain: EmbeddedChain, handed_over: HandedOver
) -> None:
    check_deployment(chain.w3, chain.deployment)
    check_deployment(handed_over.w3, handed_over.deployment)


def test_check_deployment_refuses_wrong_chain_id(chain: EmbeddedChain) -> None:
    wrong = chain.deployment.model_copy(update={"chain_id": chain.deployment.chain_id + 1})
    with pytest.raises(DeploymentMismatch, match="chain"):
        check_deployment(chain.w3, wrong)


@pytest.mark.parametrize("field", ["institution_registry", "audit_log", "consent_registry"])
def test_check_deployment_refuses_address_without_code(chain: EmbeddedChain, field: str) -> None:
    empty = chain.fresh_account().address
    wrong = chain.deployment.model_copy(update={field: empty})
    with pytest.raises(DeploymentMismatch, match="no contract"):
        check_deployment(chain.w3, wrong)


@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("institution_registry", "audit_log"),
        ("audit_log", "consent_registry"),
        ("consent_registry", "institution_registry"),
    ],
)
def test_check_deployment_refuses_another_contract(
    chain: EmbeddedChain, field: str, other: str
) -> None:
    wrong = chain.deployment.model_copy(update={field: getattr(chain.deployment, other)})
    with pytest.raises(DeploymentMismatch, match="is not medtrail's"):
        check_deployment(chain.w3, wrong)


def test_check_deployment_refuses_a_foreign_contract(chain: EmbeddedChain) -> None:
    wallet = deploy_test_contract(chain, "TestERC1271Wallet", chain.admin, chain.admin.address)
    wrong = chain.deployment.model_copy(update={"audit_log": wallet.address})
    with pytest.raises(DeploymentMismatch, match="is not medtrail's AuditLog"):
        check_deployment(chain.w3, wrong)


def test_check_deployment_refuses_a_deployment_on_another_chain(
    chain: EmbeddedChain, handed_over: HandedOver
) -> None:
    """Same chain id (both embedded), other chain: the addresses hold nothing here."""
    assert handed_over.deployment.chain_id == chain.deployment.chain_id
    if handed_over.deployment.audit_log == chain.deployment.audit_log:
        pytest.skip("same deployer nonce on both chains: addresses coincide")
    with pytest.raises(DeploymentMismatch):
        check_deployment(chain.w3, handed_over.deployment)


# --------------------------------------------------------------------------- ledger.chain.tx


def test_tx_helpers_raise_contract_reverted_on_the_embedded_chain(chain: EmbeddedChain) -> None:
    """``send`` and ``call_or_raise`` turn a custom error into ``ContractReverted``.

    web3's EthereumTesterProvider raises eth-tester's ``TransactionFailed`` (revert data as a
    repr string), not ``ContractLogicError``; every revert test here relies on the decoding,
    addresses checksummed as web3 returns them everywhere else.
    """
    register = chain.contracts.institutions.functions.register(ZERO_ADDRESS, Kind.HOSPITAL, "H")
    with pytest.raises(ContractReverted) as sent:
        send(chain.w3, register, chain.registrar)
    assert (sent.value.error, sent.value.args_) == ("ZeroAddress", ())
    with pytest.raises(ContractReverted) as called:
        call_or_raise(chain.contracts.audit_log.functions.checkpointAt(5))
    assert (called.value.error, called.value.args_) == ("CheckpointNotFound", (5,))
    stranger = chain.fresh_account()
    with pytest.raises(ContractReverted) as denied:
        send(
            chain.w3,
            chain.contracts.audit_log.functions.commitCheckpoint(1, b"1" * 32, b"2" * 32, []),
            stranger,
        )
    assert denied.value.args_ == (stranger.address, LOG_OPERATOR_ROLE)
