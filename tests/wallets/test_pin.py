"""The wallet pins its deployment as the regulator does: the contracts the patient configured,
else the first a service names (saved in the wallet directory once a command succeeded); a
service that names other contracts is refused before anything is signed or verified. (The
wallet used to take the contract addresses from each answer of the service.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from eth_account import Account

from api.cli import cli
from ledger.chain.model import Deployment, DeploymentMismatch, DeploymentSpec
from tests.wallets.api_env import Service
from tests.wallets.conftest import PASSPHRASE
from wallets import Wallet
from wallets.pin import PIN_FILE, DeploymentPin


def _deployment(**changes: object) -> Deployment:
    base = Deployment(
        chain_id=31337,
        institution_registry="0x" + "11" * 20,
        audit_log="0x" + "22" * 20,
        consent_registry="0x" + "33" * 20,
        block_number=7,
        sources_hash="0xab",
    )
    return base.model_copy(update=changes)


def test_the_first_deployment_is_pinned_only_when_saved(tmp_path: Path) -> None:
    pin = DeploymentPin(tmp_path)
    served = _deployment()
    assert pin.trusted(served, "svc") == served.trusted()
    assert not (tmp_path / PIN_FILE).exists()  # nothing succeeded yet
    pin.save(served)
    assert Deployment.read(tmp_path / PIN_FILE) == served
    assert pin.trusted(served, "svc") == served.trusted()
    moved = _deployment(audit_log=Account.create().address)
    with pytest.raises(DeploymentMismatch, match="differs in AuditLog") as refused:
        pin.trusted(moved, "http://svc")
    assert "pinned on first use" in refused.value.detail
    with pytest.raises(DeploymentMismatch, match="chain id"):
        pin.trusted(_deployment(chain_id=1), "svc")
    pin.save(moved)  # a pin is never overwritten
    assert Deployment.read(tmp_path / PIN_FILE) == served


def test_configured_contracts_win_and_are_never_pinned(tmp_path: Path) -> None:
    served = _deployment()
    configured = DeploymentPin(tmp_path, DeploymentSpec.from_deployment(served))
    assert configured.trusted(served, "svc") == served.trusted()
    configured.save(served)
    assert not (tmp_path / PIN_FILE).exists()
    addresses = DeploymentSpec(
        served.institution_registry, served.audit_log, Account.create().address
    )
    with pytest.raises(DeploymentMismatch, match=r"contracts you configured .*ConsentRegistry"):
        DeploymentPin(tmp_path, addresses).trusted(served, "svc")


def test_a_service_naming_other_contracts_than_the_pin_is_refused(
    service: Service, wallet: Wallet
) -> None:
    with wallet.connect(service.url, PASSPHRASE) as patient:
        patient.grants()
    pinned = wallet.directory / PIN_FILE
    assert Deployment.read(pinned) == service.env.ledger.deployment
    # The service now names other contracts (here: the pin says so).
    other = service.env.ledger.deployment.model_copy(
        update={"consent_registry": Account.create().address}
    )
    pinned.write_text(other.model_dump_json())
    with (
        wallet.connect(service.url, PASSPHRASE) as patient,
        pytest.raises(DeploymentMismatch, match="names other contracts"),
    ):
        patient.sign_in()  # refused before a sign-in message is signed


def test_the_cli_takes_a_deployment_file_and_refuses_a_wrong_one(
    service: Service, wallet: Wallet, tmp_path: Path
) -> None:
    served = tmp_path / "served.json"  # GET /v1/deployment, saved as served
    served.write_text(json.dumps(service.env.ledger.deployment.model_dump(mode="json")))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        service.env.ledger.deployment.model_copy(
            update={"audit_log": Account.create().address}
        ).model_dump_json()
    )
    env = {
        "MEDTRAIL_WALLET_DIR": str(wallet.directory),
        "MEDTRAIL_API_URL": service.url,
        "MEDTRAIL_WALLET_PASSPHRASE": PASSPHRASE,
    }
    runner = CliRunner()
    ok = runner.invoke(cli, ["wallet", "grants", "--deployment-file", str(served)], env=env)
    assert ok.exit_code == 0, ok.output
    assert not (wallet.directory / PIN_FILE).exists()  # configured: nothing pinned
    refused = runner.invoke(cli, ["wallet", "grants", "--deployment-file", str(wrong)], env=env)
    assert refused.exit_code == 1
    assert "names other contracts than the contracts you configured" in refused.stderr
    assert "[deployment-mismatch]" in refused.stderr
    half = runner.invoke(cli, ["wallet", "grants", "--audit-log", "0x" + "22" * 20], env=env)
    assert half.exit_code == 1
    assert "give all three" in half.stderr
