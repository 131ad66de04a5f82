"""The wallet's HTTP client and library operations (``Wallet.connect``) against the real API
on the embedded chain; and a grant signed by eth-account alone, from the served definitions,
accepted by the API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

from ledger.events import Purpose
from tests.wallets.api_env import Service, running_service
from tests.wallets.conftest import PASSPHRASE
from wallets import Wallet
from wallets.client import ApiError, ApiUnreachable, MedtrailClient
from wallets.errors import InvalidConsentRequest, WalletError
from wallets.service import InstitutionNotActive, UnknownInstitution


def test_sign_in_names_the_api_authority_and_chain(service: Service) -> None:
    account = Account.create()
    with MedtrailClient(service.url) as client:
        session = client.sign_in(account)
        assert session.address == account.address
        assert session.expires_at > time.time()
        assert "mtp_" not in repr(session)
        who = httpx.get(
            f"{service.url}/v1/auth/whoami", headers={"Authorization": f"Bearer {session.token}"}
        ).json()
        assert who["role"] == "patient"
        assert who["address"] == account.address


def test_sign_in_refuses_a_service_announcing_another_domain(service: Service) -> None:
    with (
        MedtrailClient(service.url, siwe_domain="medtrail.example:443") as client,
        pytest.raises(WalletError, match="refusing to sign a sign-in for another site"),
    ):
        client.sign_in(Account.create())


def test_an_unreachable_api_is_a_clear_error() -> None:
    with (
        MedtrailClient("http://127.0.0.1:9", timeout=2) as client,
        pytest.raises(ApiUnreachable, match="cannot be reached"),
    ):
        client.typed_data()


def test_a_grant_signed_by_eth_account_from_the_served_definitions_is_accepted(
    service: Service,
) -> None:
    """ethers/viem style: domain, types without EIP712Domain, message; built only from
    GET /v1/typed-data and the consent nonce, signed by eth-account, relayed by the API."""
    patient = Account.create()
    served = httpx.get(f"{service.url}/v1/typed-data").json()
    domain = served["domains"]["consentRegistry"]
    types = {"Grant": served["types"]["Grant"]}
    nonce = httpx.get(f"{service.url}/v1/patients/{patient.address}/consent-nonce").json()
    now = int(time.time())
    message: dict[str, Any] = {
        "patient": patient.address,
        "grantee": service.clinic.address,
        "recordRef": bytes(32),
        "purposes": 1 << served["enums"]["Purpose"]["TREATMENT"],
        "notBefore": now - 60,
        "expiresAt": now + 86400,
        "nonce": nonce["nonce"],
        "deadline": now + 600,
    }
    signed = Account.sign_typed_data(
        patient.key, domain_data=domain, message_types=types, message_data=message
    )
    with MedtrailClient(service.url) as client:
        session = client.sign_in(patient)
    body = {
        **{k: v for k, v in message.items() if k != "nonce"},
        "recordRef": "0x" + bytes(32).hex(),
        "signature": "0x" + bytes(signed.signature).hex(),
    }
    answer = httpx.post(
        f"{service.url}/v1/grants",
        json=body,
        headers={"Authorization": f"Bearer {session.token}"},
    )
    assert answer.status_code == 201, answer.text
    grant = answer.json()
    assert grant["patient"] == patient.address
    assert grant["grantee"] == service.clinic.address
    assert grant["allRecords"] is True
    assert grant["purposeNames"] == ["treatment"]


def test_library_grant_grants_revoke(service: Service, wallet: Wallet) -> None:
    record = service.env.hospital.record("mrn-lib")
    with wallet.connect(service.url, PASSPHRASE) as patient:
        made = patient.grant(
            service.clinic.address,
            purposes=["treatment", Purpose.RESEARCH],
            expires_at=int(time.time()) + 3600,
            record_ref=record,
        )
        assert made["status"] == "active"
        assert made["recordRef"] == "0x" + record.hex()
        assert made["purposeNames"] == ["treatment", "research"]
        everything = patient.grants()
        assert [g["grantId"] for g in everything] == [made["grantId"]]
        revoked = patient.revoke(made["grantId"])
        assert revoked["revoked"] is True
        assert patient.grant_info(made["grantId"])["status"] == "revoked"


def test_cancel_signatures_makes_an_outstanding_signature_unusable(
    service: Service, wallet: Wallet
) -> None:
    from wallets.consent import sign_grant

    with wallet.connect(service.url, PASSPHRASE) as patient:
        typed = patient.typed_data()
        nonce = patient.client.consent_nonce(patient.address)
        now = int(time.time())
        pending = sign_grant(
            patient.account,
            typed,
            grantee=service.clinic.address,
            purposes=[Purpose.TREATMENT],
            expires_at=now + 3600,
            nonce=nonce,
            deadline=now + 600,
        )
        result = patient.cancel_signatures()
        assert result["previousNonce"] == nonce
        assert result["nonce"] == nonce + 1000
        with pytest.raises(ApiError) as refused:
            patient.client.relay_grant(patient.sign_in(), pending)
        assert refused.value.status == 422
        assert refused.value.problem.get("error") == "InvalidSignature"


def test_library_refuses_bad_grants_before_signing(service: Service, wallet: Wallet) -> None:
    now = int(time.time())
    with wallet.connect(service.url, PASSPHRASE) as patient:
        with pytest.raises(InvalidConsentRequest, match="in the past"):
            patient.grant(service.clinic.address, purposes=["treatment"], expires_at=now - 1)
        with pytest.raises(InvalidConsentRequest, match="after the expiry"):
            patient.grant(
                service.clinic.address,
                purposes=["treatment"],
                expires_at=now + 100,
                not_before=now + 200,
            )
        with pytest.raises(InvalidConsentRequest, match="unknown purpose"):
            patient.grant(service.clinic.address, purposes=["fun"], expires_at=now + 100)
        with pytest.raises(UnknownInstitution):
            patient.grant(Account.create().address, purposes=["treatment"], expires_at=now + 100)
        assert patient.grants() == []


def test_library_refuses_a_suspended_institution(service: Service, wallet: Wallet) -> None:
    from ledger.events import InstitutionKind

    suspended = service.env.institution("Closed Clinic", InstitutionKind.HOSPITAL)
    service.env.ledger.suspend_institution(suspended.address)
    with wallet.connect(service.url, PASSPHRASE) as patient:
        with pytest.raises(InstitutionNotActive, match="suspended"):
            patient.grant(
                suspended.address, purposes=["treatment"], expires_at=int(time.time()) + 100
            )
        with pytest.raises(ApiError, match="GranteeNotActive") as refused:
            patient.grant(
                suspended.address,
                purposes=["treatment"],
                expires_at=int(time.time()) + 100,
                check_grantee=False,
            )
        assert refused.value.status == 409


def test_library_accesses_are_verified(service: Service, wallet: Wallet) -> None:
    env = service.env
    me = wallet.default_address
    record = env.hospital.record("mrn-acc")
    with wallet.connect(service.url, PASSPHRASE) as patient:
        made = patient.grant(
            service.clinic.address,
            purposes=["treatment"],
            expires_at=int(time.time()) + 3600,
            record_ref=record,
            # the embedded chain's clock may lag the wall clock
            not_before=env.ledger.chain.latest_timestamp() - 60,
        )
        own = service.access(env.hospital, me, record)
        covered = service.access(
            service.clinic, me, record, grant_id=made["grantId"], custodian=env.hospital.address
        )
        service.anchor()
        emergency = service.access(
            service.clinic, me, record, custodian=env.hospital.address
        )  # no grant named, not anchored yet
        report = patient.accesses()
    assert report.trust == "service"
    assert "pass --rpc-url" in report.note
    by_id = {e.event_id: e for e in report.entries}
    assert set(by_id) == {"0x" + x.hex() for x in (own, covered, emergency)}
    first, second, third = (by_id["0x" + x.hex()] for x in (own, covered, emergency))
    assert first.consent == "custodian"
    assert second.consent == "covered"
    assert third.consent == "emergency"
    assert second.institution == service.clinic.address
    assert second.institution_name == "Riverside Clinic"
    assert (second.action, second.purpose) == ("read", "treatment")
    assert (first.anchored, second.anchored, third.anchored) == (True, True, False)
    assert (first.proof, second.proof, third.proof) == ("verified", "verified", "pending")
    assert report.ok


@pytest.mark.anvil
def test_accesses_checked_against_the_chain(tmp_path: Path, wallet: Wallet) -> None:
    """With an RPC node, the wallet reads each checkpoint root from the chain itself."""
    from tests.support.anvil import Anvil, anvil_available

    if not anvil_available():
        pytest.skip("anvil is not installed (run `make node`)")
    with Anvil() as node, running_service(tmp_path, node) as service:
        env = service.env
        me = wallet.default_address
        record = env.hospital.record("mrn-chain")
        event = service.access(env.hospital, me, record)
        service.anchor()
        with wallet.connect(service.url, PASSPHRASE) as patient:
            report = patient.accesses(rpc_url=node.url)
            assert report.trust == "chain"
            assert node.url in report.note
            [entry] = report.entries
            assert entry.event_id == "0x" + event.hex()
            assert (entry.anchored, entry.proof) == (True, "verified")
            with pytest.raises(WalletError, match="cannot check proofs against the chain"):
                patient.accesses(rpc_url="http://127.0.0.1:9")
