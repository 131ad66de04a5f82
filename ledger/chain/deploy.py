"""Deploying medtrail's contracts and binding to a deployment.

A :class:`Deployment` (chain id and addresses) is what ``medtrail deploy`` writes to a file and
what the service reads to find its contracts on a JSON-RPC chain;
:meth:`ledger.chain.reader.ChainReader.connect` refuses a chain that does not hold exactly
those contracts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract

from ledger.chain.artifacts import load_artifact
from ledger.chain.model import ChainError
from ledger.chain.model import Deployment as Deployment  # (re-exported: its old home)
from ledger.chain.model import DeploymentMismatch as DeploymentMismatch
from ledger.chain.reader import LOG_OPERATOR_ROLE as LOG_OPERATOR_ROLE  # (re-exported)
from ledger.chain.reader import REGISTRAR_ROLE as REGISTRAR_ROLE
from ledger.chain.tx import send

DEFAULT_ADMIN_ROLE = b"\x00" * 32


@dataclass(frozen=True)
class Contracts:
    """web3 contract objects bound to one deployment."""

    w3: Web3
    deployment: Deployment
    institutions: Contract
    audit_log: Contract
    consent: Contract


def bind(w3: Web3, deployment: Deployment) -> Contracts:
    """Contract objects for ``deployment`` (no chain access)."""

    def at(name: str, address: str) -> Contract:
        return w3.eth.contract(address=to_checksum_address(address), abi=load_artifact(name).abi)

    return Contracts(
        w3=w3,
        deployment=deployment,
        institutions=at("InstitutionRegistry", deployment.institution_registry),
        audit_log=at("AuditLog", deployment.audit_log),
        consent=at("ConsentRegistry", deployment.consent_registry),
    )


def _deploy_one(w3: Web3, deployer: LocalAccount, name: str, *args: object) -> ChecksumAddress:
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    receipt = send(w3, factory.constructor(*args), deployer)
    address = receipt["contractAddress"]
    if address is None:
        raise ChainError(f"deploying {name} produced no contract address")
    return to_checksum_address(address)


def deploy(
    w3: Web3,
    deployer: LocalAccount,
    *,
    admin: str,
    log_operator: str,
    registrars: Sequence[str],
    consent_v2: bool = True,
) -> Deployment:
    """Deploy the contracts, grant the roles, and hand the admin role to ``admin``.

    ``consent_v2``: also deploy ConsentRegistryV2 (no roles), which then takes every new grant
    (docs/upgrading.md); False deploys a version-1-only deployment, as before it.

    The deployer administers the contracts only for the time it takes to grant the roles; if
    ``admin`` is another address, the deployer renounces its admin role at the end.
    """
    registry = _deploy_one(w3, deployer, "InstitutionRegistry", deployer.address)
    audit_log = _deploy_one(w3, deployer, "AuditLog", deployer.address)
    consent = _deploy_one(w3, deployer, "ConsentRegistry", registry)
    consent_v2_address = _deploy_one(w3, deployer, "ConsentRegistryV2") if consent_v2 else None
    first_block = w3.eth.block_number
    deployment = Deployment(
        chain_id=w3.eth.chain_id,
        institution_registry=registry,
        audit_log=audit_log,
        consent_registry=consent,
        block_number=first_block,
        sources_hash=load_artifact("AuditLog").sources_hash,
        consent_registry_v2=consent_v2_address,
    )
    contracts = bind(w3, deployment)
    for registrar in registrars:
        send(w3, contracts.institutions.functions.grantRole(REGISTRAR_ROLE, registrar), deployer)
    send(w3, contracts.audit_log.functions.grantRole(LOG_OPERATOR_ROLE, log_operator), deployer)
    if to_checksum_address(admin) != deployer.address:
        for contract in (contracts.institutions, contracts.audit_log):
            send(w3, contract.functions.grantRole(DEFAULT_ADMIN_ROLE, admin), deployer)
            send(
                w3,
                contract.functions.renounceRole(DEFAULT_ADMIN_ROLE, deployer.address),
                deployer,
            )
    return deployment
