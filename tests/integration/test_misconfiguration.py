"""A misconfigured service says so, naming the setting, instead of failing silently (issue 12,
item 11): keys the contracts do not accept stop it at start; a missing registrar key is a 503
for registrations; a role revoked while it runs makes it not ready."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import bootstrap_admin_key, create_app
from ledger.chain.client import deploy_to_rpc, http_web3
from ledger.chain.consent_client import deploy_consent_v2
from ledger.chain.deploy import LOG_OPERATOR_ROLE, REGISTRAR_ROLE, Deployment, DeploymentMismatch
from ledger.chain.tx import send
from ledger.events import InstitutionKind
from ledger.service import AnchoringUnavailable, Ledger
from ledger.settings import ConfigurationError, Settings
from tests.integration.conftest import FUNDING_WEI, requires_anvil
from tests.support.actors import Institution, Patient
from tests.support.anvil import Anvil, free_port
from tests.support.service_proc import REPO

pytestmark = requires_anvil


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


def deploy(anvil: Anvil, tmp_path: Path, *, log_operator: str, registrars: list[str]) -> Path:
    """Fresh contracts whose roles go to ``log_operator`` and ``registrars``; the deployment
    file's path."""
    deployment = deploy_to_rpc(
        anvil.url,
        anvil.accounts[0],
        admin=anvil.accounts[0].address,
        log_operator=log_operator,
        registrars=registrars,
    )
    path = tmp_path / "deployment.json"
    deployment.write(path)
    return path


def settings(
    anvil: Anvil,
    tmp_path: Path,
    deployment: Path,
    operator: LocalAccount,
    registrar: LocalAccount | None,
) -> Settings:
    return Settings(
        mode="rpc",
        rpc_url=anvil.url,
        deployment_file=deployment,
        database_url=f"sqlite:///{tmp_path / 'ledger.db'}",
        operator_key=SecretStr(operator.key.hex()),
        registrar_key=SecretStr(registrar.key.hex()) if registrar is not None else None,
        confirmations=1,
    )


def funded(anvil: Anvil) -> LocalAccount:
    account: LocalAccount = Account.create()
    anvil.set_balance(account.address, FUNDING_WEI)
    return account


def test_an_operator_key_without_the_operator_role_refuses_to_start(
    anvil: Anvil, tmp_path: Path
) -> None:
    operator, registrar = funded(anvil), funded(anvil)
    deployment = deploy(
        anvil, tmp_path, log_operator=Account.create().address, registrars=[registrar.address]
    )
    with pytest.raises(ConfigurationError) as refused:
        Ledger.open(settings(anvil, tmp_path, deployment, operator, registrar))
    detail = refused.value.detail
    assert "MEDTRAIL_OPERATOR_KEY" in detail
    assert operator.address in detail
    assert "LOG_OPERATOR_ROLE" in detail


def test_a_registrar_key_without_the_registrar_role_refuses_to_start(
    anvil: Anvil, tmp_path: Path
) -> None:
    operator, registrar = funded(anvil), funded(anvil)
    deployment = deploy(anvil, tmp_path, log_operator=operator.address, registrars=[])
    with pytest.raises(ConfigurationError) as refused:
        Ledger.open(settings(anvil, tmp_path, deployment, operator, registrar))
    assert "MEDTRAIL_REGISTRAR_KEY" in refused.value.detail
    assert registrar.address in refused.value.detail
    assert "REGISTRAR_ROLE" in refused.value.detail


def test_medtrail_serve_refuses_with_one_line_naming_the_setting(
    anvil: Anvil, tmp_path: Path
) -> None:
    operator = funded(anvil)
    deployment = deploy(anvil, tmp_path, log_operator=Account.create().address, registrars=[])
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        cwd=REPO,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")},
            "PYTHONPATH": str(REPO),
            "MEDTRAIL_MODE": "rpc",
            "MEDTRAIL_RPC_URL": anvil.url,
            "MEDTRAIL_DEPLOYMENT_FILE": str(deployment),
            "MEDTRAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
            "MEDTRAIL_OPERATOR_KEY": operator.key.hex(),
            "MEDTRAIL_PORT": str(free_port()),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr  # a configuration error
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: MEDTRAIL_OPERATOR_KEY is the key of " + operator.address)
    assert "serving on" not in result.stdout


@pytest.fixture
def without_registrar(anvil: Anvil, tmp_path: Path) -> Iterator[tuple[Ledger, TestClient, str]]:
    """A service in rpc mode whose operator holds its role and that has no registrar key."""
    operator = funded(anvil)
    deployment = deploy(anvil, tmp_path, log_operator=operator.address, registrars=[])
    ledger = Ledger.open(settings(anvil, tmp_path, deployment, operator, None))
    try:
        yield ledger, TestClient(create_app(ledger)), bootstrap_admin_key(ledger)
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/institutions"),
        ("POST", "/v1/institutions/{address}/suspend"),
        ("POST", "/v1/institutions/{address}/reinstate"),
    ],
)
def test_without_a_registrar_key_registrations_answer_503_naming_the_setting(
    without_registrar: tuple[Ledger, TestClient, str], method: str, path: str
) -> None:
    ledger, client, key = without_registrar
    address = Account.create().address
    answer = client.request(
        method,
        path.format(address=address),
        json={"address": address, "kind": "hospital", "name": "General"}
        if path == "/v1/institutions"
        else None,
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == "registrar-not-configured"
    assert body["setting"] == "MEDTRAIL_REGISTRAR_KEY"
    assert "MEDTRAIL_REGISTRAR_KEY" in body["detail"]
    assert not ledger.institution(address).registered


def test_an_operator_role_revoked_while_running_makes_the_service_not_ready(
    anvil: Anvil, without_registrar: tuple[Ledger, TestClient, str]
) -> None:
    ledger, client, _key = without_registrar
    assert client.get("/readyz").json()["checks"]["anchoring"] == "ok"
    audit_log = ledger.chain.contracts.audit_log
    send(
        ledger.chain.w3,
        audit_log.functions.revokeRole(LOG_OPERATOR_ROLE, ledger.operator.address),
        anvil.accounts[0],
    )
    answer = client.get("/readyz")
    assert answer.status_code == 503
    anchoring = answer.json()["checks"]["anchoring"]
    assert "MEDTRAIL_OPERATOR_KEY" in anchoring
    assert ledger.operator.address in anchoring


def test_an_operator_role_revoked_while_running_stops_the_receipts(
    anvil: Anvil, tmp_path: Path
) -> None:
    operator = funded(anvil)
    deployment = deploy(anvil, tmp_path, log_operator=operator.address, registrars=[])
    ledger = Ledger.open(settings(anvil, tmp_path, deployment, operator, None))
    try:
        ledger.role_ttl = 0.0  # ask the chain at every submission
        hospital = Institution("H", InstitutionKind.HOSPITAL, ledger.domain)
        send(
            ledger.chain.w3,
            ledger.chain.contracts.institutions.functions.grantRole(
                REGISTRAR_ROLE, anvil.accounts[0].address
            ),
            anvil.accounts[0],
        )
        send(
            ledger.chain.w3,
            ledger.chain.contracts.institutions.functions.register(
                hospital.address, int(InstitutionKind.HOSPITAL), "H"
            ),
            anvil.accounts[0],
        )
        at = ledger.chain.latest_timestamp()
        record, patient = hospital.record("mrn-1"), Patient().address
        first = hospital.sign(hospital.access(record, patient, occurredAt=at))
        assert ledger.submit([first])[0].leaf_index == 0
        send(
            ledger.chain.w3,
            ledger.chain.contracts.audit_log.functions.revokeRole(
                LOG_OPERATOR_ROLE, operator.address
            ),
            anvil.accounts[0],
        )
        later = hospital.sign(hospital.access(record, patient, occurredAt=at + 1))
        with pytest.raises(AnchoringUnavailable) as refused:
            ledger.submit([later])
        assert refused.value.status == 503
        assert "MEDTRAIL_OPERATOR_KEY" in refused.value.detail
        assert ledger.entries(0, 10)[-1].event_id == first.event_id  # nothing promised
    finally:
        ledger.close()


# --------------------------------------------------------------------------- consent version 2


def test_a_deployment_naming_another_contract_as_consent_v2_refuses_to_start(
    anvil: Anvil, tmp_path: Path
) -> None:
    operator = funded(anvil)
    path = deploy(anvil, tmp_path, log_operator=operator.address, registrars=[])
    deployment = Deployment.read(path)
    wrong = deployment.model_copy(update={"consent_registry_v2": deployment.consent_registry})
    wrong.write(path)
    with pytest.raises(DeploymentMismatch, match="is not medtrail's ConsentRegistryV2"):
        Ledger.open(settings(anvil, tmp_path, path, operator, None))


def test_an_old_deployment_runs_version_1_then_takes_consent_v2_once_added(
    anvil: Anvil, tmp_path: Path
) -> None:
    """docs/upgrading.md: a deployment file written before version 2 loads (version 1 only);
    adding a ConsentRegistryV2 to it later keeps the same store and log."""
    operator = funded(anvil)
    path = tmp_path / "deployment.json"
    old = deploy_to_rpc(
        anvil.url,
        anvil.accounts[0],
        admin=anvil.accounts[0].address,
        log_operator=operator.address,
        registrars=[],
        consent_v2=False,
    )
    old.write(path)
    assert "consentRegistryV2" not in path.read_text(encoding="utf-8")
    ledger = Ledger.open(settings(anvil, tmp_path, path, operator, None))
    try:
        assert not ledger.takes_v2
        assert "consentV2" not in ledger.typed_data()
    finally:
        ledger.close()

    v2 = deploy_consent_v2(http_web3(anvil.url), anvil.accounts[0])
    old.model_copy(update={"consent_registry_v2": v2}).write(path)
    ledger = Ledger.open(settings(anvil, tmp_path, path, operator, None))
    try:
        assert ledger.takes_v2
        assert ledger.typed_data()["consentV2"]["domain"]["verifyingContract"] == v2
        recorded = Deployment.model_validate_json(ledger.store.get_meta("deployment") or "")
        assert recorded.consent_registry_v2 == v2
    finally:
        ledger.close()
