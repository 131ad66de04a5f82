"""`medtrail wallet grant / grants / revoke / cancel-signatures` on a consent-version-2
deployment (issue 17), end to end: the real API (uvicorn) and its embedded chain with a
ConsentRegistryV2; on anvil, a revocation the patient sends straight to the chain."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from api.cli import cli
from tests.wallets.api_env import Service, running_service
from tests.wallets.conftest import FAST_N, PASSPHRASE
from wallets import Wallet
from wallets.client import MedtrailClient
from wallets.errors import WalletError
from wallets.grants import GRANTS_FILE, LocalGrants
from wallets.pin import PIN_FILE
from wallets.service import PatientSession


@pytest.fixture(scope="module")
def service_v2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("v2"), embedded_consent_v2=True) as running:
        yield running


def _run(service: Service, wallet_dir: Path, *args: str) -> Result:
    env = {
        "MEDTRAIL_WALLET_DIR": str(wallet_dir),
        "MEDTRAIL_WALLET_PASSPHRASE": PASSPHRASE,
        "MEDTRAIL_WALLET_SCRYPT_N": str(FAST_N),
        "MEDTRAIL_API_URL": service.url,
    }
    return CliRunner().invoke(cli, ["wallet", *args], env=env)


def _grant(service: Service, wallet_dir: Path, *extra: str) -> Result:
    return _run(
        service, wallet_dir, "grant", "--to", service.clinic.address, "--all-records",
        "--purpose", "treatment", "--days", "30", "--json", *extra,
    )  # fmt: skip


def _listed(service: Service, wallet_dir: Path) -> dict[str, dict[str, object]]:
    result = _run(service, wallet_dir, "grants", "--json")
    assert result.exit_code == 0, result.output
    return {str(g["commitment"]): g for g in json.loads(result.stdout)["grants"]}


def test_grant_is_kept_then_committed_then_revoked_by_its_secret(
    service_v2: Service, wallet: Wallet
) -> None:
    ledger = service_v2.env.ledger
    made = _grant(service_v2, wallet.directory)
    assert made.exit_code == 0, made.output
    grant = json.loads(made.stdout)
    assert (grant["version"], grant["status"]) == (2, "pending")
    assert grant["granteeName"] == "Riverside Clinic"
    # The wallet kept its own copy, the one the service holds.
    [kept] = LocalGrants(wallet.directory).all()
    assert "0x" + kept.commitment.hex() == grant["commitment"]
    assert kept.grant.as_json() == {k: grant[k] for k in kept.grant.as_json()}
    assert oct((wallet.directory / GRANTS_FILE).stat().st_mode & 0o777) == "0o600"
    # Said in words: named by its commitment, pending until the service commits it.
    text = _run(
        service_v2, wallet.directory, "grant", "--to", service_v2.clinic.address,
        "--record", "0x" + "42" * 32, "--purpose", "research", "--days", "7",
    )  # fmt: skip
    assert text.exit_code == 0, text.output
    second = "0x" + LocalGrants(wallet.directory).all()[1].commitment.hex()
    assert f"Grant {second} signed, kept in the wallet and sent" in text.stdout
    assert "(pending)" in text.stdout
    assert "does not appear in your history" in text.stderr

    ledger.commit_grants_now()
    assert _listed(service_v2, wallet.directory)[grant["commitment"]]["status"] == "active"
    table = _run(service_v2, wallet.directory, "grants")
    assert grant["commitment"] in table.stdout
    assert "active" in table.stdout

    revoked = _run(service_v2, wallet.directory, "revoke", grant["commitment"])
    assert revoked.exit_code == 0, revoked.output
    assert f"Grant {grant['commitment']} revoked on chain" in revoked.stdout
    view = ledger.grant_v2(int(grant["grantId"]))
    assert view is not None
    assert view.revoked_at
    assert _listed(service_v2, wallet.directory)[grant["commitment"]]["status"] == "revoked"
    # Again: refused by the wallet, nothing sent.
    again = _run(service_v2, wallet.directory, "revoke", str(grant["grantId"]))
    assert again.exit_code == 1
    assert "is revoked already" in again.stderr


def test_cancel_signatures_revokes_what_the_operator_has_not_committed(
    service_v2: Service, wallet: Wallet
) -> None:
    ledger = service_v2.env.ledger
    committed = json.loads(_grant(service_v2, wallet.directory).stdout)
    ledger.commit_grants_now()
    waiting = json.loads(_grant(service_v2, wallet.directory).stdout)
    result = _run(service_v2, wallet.directory, "cancel-signatures", "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert [g["commitment"] for g in answer["cancelled"]] == [waiting["commitment"]]
    assert answer["notAtService"] == []
    # The operator commits the signature it sat on: it is revoked, never active.
    ledger.commit_grants_now()
    listed = _listed(service_v2, wallet.directory)
    assert listed[waiting["commitment"]]["status"] == "revoked"
    assert listed[committed["commitment"]]["status"] == "active"
    nothing = _run(service_v2, wallet.directory, "cancel-signatures")
    assert nothing.exit_code == 0, nothing.output
    assert "nothing to cancel" in nothing.stdout


def test_a_grant_the_service_refuses_stays_kept_and_listed_as_not_at_the_service(
    service_v2: Service, wallet: Wallet
) -> None:
    stranger = "0x" + "5a" * 20  # no institution: the service refuses it (409)
    result = _run(
        service_v2, wallet.directory, "grant", "--to", stranger, "--all-records",
        "--purpose", "treatment", "--days", "30", "--skip-institution-check",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "the service refused" in result.stderr
    assert "Traceback" not in result.output
    [kept] = LocalGrants(wallet.directory).all()
    commitment = "0x" + kept.commitment.hex()
    assert _listed(service_v2, wallet.directory)[commitment]["status"] == "not-at-service"
    cancel = _run(service_v2, wallet.directory, "cancel-signatures")
    assert cancel.exit_code == 0, cancel.output
    assert f"Grant {commitment} (kept in this wallet) is unknown to the service" in cancel.stdout
    revoke = _run(service_v2, wallet.directory, "revoke", commitment)
    assert revoke.exit_code == 1
    assert "the service does not hold grant" in revoke.stderr
    assert "--direct" in revoke.stderr


def test_a_grant_id_the_service_does_not_know_and_a_bad_one(
    service_v2: Service, wallet: Wallet
) -> None:
    unknown = _run(service_v2, wallet.directory, "revoke", "0x" + "ab" * 32)
    assert unknown.exit_code == 1
    assert "HTTP 404" in unknown.stderr
    bad = _run(service_v2, wallet.directory, "revoke", "0xzz")
    assert bad.exit_code == 2
    assert "is not a grant id" in bad.output


def test_a_service_naming_another_consent_registry_v2_than_pinned_is_refused(
    service_v2: Service, wallet: Wallet
) -> None:
    served = service_v2.env.ledger.deployment
    pinned = served.model_copy(update={"consent_registry_v2": "0x" + "77" * 20})
    pinned.write(wallet.directory / PIN_FILE)
    result = _grant(service_v2, wallet.directory)
    assert result.exit_code == 1
    assert "names ConsentRegistryV2" in result.stderr
    assert not (wallet.directory / GRANTS_FILE).exists()  # nothing signed
    # Pinned before the deployment had version 2: refused too, until re-pinned.
    served.model_copy(update={"consent_registry_v2": None}).write(wallet.directory / PIN_FILE)
    before = _grant(service_v2, wallet.directory)
    assert before.exit_code == 1
    assert "none: refusing to sign consent" in before.stderr


def test_the_configured_addresses_name_the_v2_registry(service_v2: Service, wallet: Wallet) -> None:
    d = service_v2.env.ledger.deployment
    addresses = [
        "--institution-registry", d.institution_registry, "--audit-log", d.audit_log,
        "--consent-registry", d.consent_registry,
    ]  # fmt: skip
    without = _grant(service_v2, wallet.directory, *addresses)
    assert without.exit_code == 1
    assert "names ConsentRegistryV2" in without.stderr
    assert d.consent_registry_v2 is not None
    made = _grant(
        service_v2, wallet.directory, *addresses, "--consent-registry-v2", d.consent_registry_v2
    )
    assert made.exit_code == 0, made.output
    alone = _grant(service_v2, wallet.directory, "--consent-registry-v2", d.consent_registry_v2)
    assert alone.exit_code == 1
    assert "goes with the three other addresses" in alone.stderr


@pytest.mark.anvil
def test_on_anvil_a_revocation_sent_straight_to_the_chain_shows_at_the_service(
    tmp_path: Path, wallet: Wallet
) -> None:
    from tests.support.anvil import Anvil, anvil_available

    if not anvil_available():
        pytest.skip("anvil is not installed (run `make node`)")
    with Anvil() as node, running_service(tmp_path, node, embedded_consent_v2=True) as service:
        made = _grant(service, wallet.directory)
        assert made.exit_code == 0, made.output
        grant = json.loads(made.stdout)
        service.env.ledger.commit_grants_now()
        me = wallet.default_address
        node.set_balance(me, 10**18)
        direct = _run(
            service, wallet.directory, "revoke", "--direct", "--rpc-url", node.url, "--json",
            grant["commitment"],
        )  # fmt: skip
        assert direct.exit_code == 0, direct.output
        assert json.loads(direct.stdout)["sender"] == me
        listed = _listed(service, wallet.directory)[grant["commitment"]]
        assert listed["status"] == "revoked"
        # The chain's block time of the patient's own transaction, read back by the service.
        assert listed["revokedAt"] == json.loads(direct.stdout)["revokedAt"]
        # Through the service now: refused as revoked already, nothing sent.
        again = _run(service, wallet.directory, "revoke", grant["commitment"])
        assert again.exit_code == 1
        assert "is revoked already" in again.stderr


# --------------------------------------------------------------------------- a lying service


class _Rewriting(httpx.HTTPTransport):
    """The real service, with the JSON answers to ``method path`` rewritten by ``change``."""

    def __init__(self, method: str, path: str, change: Callable[[dict[str, Any]], None]) -> None:
        super().__init__()
        self.target, self.change = (method, path), change

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = super().handle_request(request)
        if (request.method, request.url.path) != self.target:
            return answer
        body = json.loads(answer.read())
        self.change(body)
        return httpx.Response(answer.status_code, json=body)


def _session(service: Service, wallet: Wallet, transport: httpx.BaseTransport) -> PatientSession:
    client = MedtrailClient(service.url, transport=transport)
    account = wallet.account(None, PASSPHRASE)
    return PatientSession(client, account, kept=LocalGrants(wallet.directory))


def test_revoke_from_the_services_copy_when_the_wallet_kept_none(
    service_v2: Service, wallet: Wallet
) -> None:
    grant = json.loads(_grant(service_v2, wallet.directory).stdout)
    service_v2.env.ledger.commit_grants_now()
    (wallet.directory / GRANTS_FILE).unlink()  # signed on another device, say
    result = _run(service_v2, wallet.directory, "revoke", grant["commitment"])
    assert result.exit_code == 0, result.output
    view = service_v2.env.ledger.grant_v2(int(grant["grantId"]))
    assert view is not None
    assert view.revoked_at


def test_a_served_grant_that_is_not_the_one_committed_is_not_revoked(
    service_v2: Service, wallet: Wallet
) -> None:
    grant = json.loads(_grant(service_v2, wallet.directory).stdout)
    (wallet.directory / GRANTS_FILE).unlink()
    path = f"/v1/grants/{grant['grantId']}"

    def other_salt(body: dict[str, Any]) -> None:
        body["salt"] = "0x" + "01" * 32

    lying = _session(service_v2, wallet, _Rewriting("GET", path, other_salt))
    with lying as patient, pytest.raises(WalletError, match="refusing to derive its revocation"):
        patient.revoke(int(grant["grantId"]))
    view = service_v2.env.ledger.grant_v2(int(grant["grantId"]))
    assert view is not None
    assert view.revoked_at is None


def test_a_service_answering_with_another_grant_is_reported_and_the_grant_kept(
    service_v2: Service, wallet: Wallet
) -> None:
    def another(body: dict[str, Any]) -> None:
        body["commitment"] = "0x" + "ee" * 32

    transport = _Rewriting("POST", "/v1/grants", another)
    lying = _session(service_v2, wallet, transport)
    with lying as patient, pytest.raises(WalletError, match="with another grant") as caught:
        patient.grant(service_v2.clinic.address, purposes=["treatment"], expires_at=2_000_000_000)
    [kept] = LocalGrants(wallet.directory).all()
    assert "0x" + kept.commitment.hex() in caught.value.detail
