"""The wallet's side of consent version 2 (issue 17): one ordinary account signs grants, derives
every revocation secret again from its key, and any sender can present it on chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from eth_account import Account

from api.cli import cli
from ledger.chain.consent_client import ConsentV2, deploy_consent_v2
from ledger.consent import consent_domain_v2, typed_data_v2
from ledger.errors import ProofError
from ledger.events import Purpose
from ledger.rules import GrantStatus
from tests.conftest import EmbeddedChain
from tests.wallets.conftest import FAST_N, PASSPHRASE
from wallets import Wallet
from wallets.consent import revocation_root_v2, revocation_secret_v2, sign_grant_v2
from wallets.errors import InvalidConsentRequest

RECORD = b"\x42" * 32


def test_one_account_grants_and_anyone_revokes_with_the_secret_it_derives(
    chain: EmbeddedChain,
) -> None:
    registry = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
    patient = Account.create()  # a wallet's one account, never funded
    grantee = chain.fresh_account().address
    now = chain.now()
    grant = sign_grant_v2(
        patient,
        registry.domain,
        grantee=grantee,
        record_ref=RECORD,
        purposes=[Purpose.TREATMENT],
        expires_at=now + 86_400,
        now=now,
    )
    assert grant.deadline == now + 3600
    relayer = chain.fresh_account()
    registry.commit([grant.commitment(registry.domain)], relayer)
    grant_id = grant.grant_id(registry.domain)
    query = {
        "patient": patient.address,
        "grantee": grantee,
        "record_ref": RECORD,
        "purpose": 0,
    }
    assert registry.status_at(grant_id, grant, time=chain.now(), **query) is GrantStatus.VALID
    # Later, on another device: the same account derives the same secret.
    secret = revocation_secret_v2(Account.from_key(patient.key), registry.domain, grant.salt)
    receipt = registry.revoke(secret, chain.fresh_account())
    revoked_at = int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])
    assert registry.status_at(grant_id, grant, time=revoked_at, **query) is GrantStatus.REVOKED


def test_the_root_is_per_account_and_per_registry(chain: EmbeddedChain) -> None:
    first = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
    second = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
    alice, bob = Account.create(), Account.create()
    assert revocation_root_v2(alice, first.domain) == revocation_root_v2(alice, first.domain)
    assert revocation_root_v2(alice, first.domain) != revocation_root_v2(bob, first.domain)
    assert revocation_root_v2(alice, first.domain) != revocation_root_v2(alice, second.domain)


@pytest.mark.parametrize(
    ("terms", "message"),
    [
        ({"purposes": []}, "at least one purpose"),
        ({"expires_at": 1}, "the window is empty"),
        ({"grantee": "0xnothex"}, "grantee"),
    ],
)
def test_bad_terms_are_refused_before_signing(
    chain: EmbeddedChain, terms: dict[str, object], message: str
) -> None:
    registry = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
    values: dict[str, object] = {
        "grantee": "0x" + "ab" * 20,
        "record_ref": None,
        "purposes": [Purpose.TREATMENT],
        "expires_at": chain.now() + 86_400,
    }
    values.update(terms)
    with pytest.raises(InvalidConsentRequest, match=message):
        sign_grant_v2(Account.create(), registry.domain, **values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the command line


def _run(wallet_dir: Path, *args: str) -> Result:
    env = {
        "MEDTRAIL_WALLET_DIR": str(wallet_dir),
        "MEDTRAIL_WALLET_PASSPHRASE": PASSPHRASE,
        "MEDTRAIL_WALLET_SCRYPT_N": str(FAST_N),
    }
    return CliRunner().invoke(cli, ["wallet", "revocation-secret", *args], env=env)


def test_the_wallet_gives_the_revocation_to_send_without_the_service(
    chain: EmbeddedChain, tmp_path: Path
) -> None:
    registry = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
    wallet, _words = Wallet.create(tmp_path / "wallet", PASSPHRASE, scrypt_n=FAST_N)
    account = wallet.account(None, PASSPHRASE)
    grantee = chain.fresh_account().address
    grant = sign_grant_v2(
        account,
        registry.domain,
        grantee=grantee,
        record_ref=None,
        purposes=[Purpose.TREATMENT],
        expires_at=chain.now() + 86_400,
        now=chain.now(),
    )
    registry.commit([grant.commitment(registry.domain)], chain.fresh_account())
    grant_file = tmp_path / "grant.json"
    grant_file.write_text(json.dumps(grant.as_json()), encoding="utf-8")
    args = ["--grant", str(grant_file), "--registry", registry.address]
    result = _run(tmp_path / "wallet", *args, "--chain-id", str(chain.w3.eth.chain_id), "--json")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["to"] == registry.address
    # Any funded address sends it, as it would from MetaMask or a relayer: no service involved.
    sender = chain.fresh_account()
    tx = {
        "to": answer["to"],
        "data": answer["data"],
        "gas": 100_000,
        "gasPrice": chain.w3.eth.gas_price,
        "nonce": chain.w3.eth.get_transaction_count(sender.address),
        "chainId": chain.w3.eth.chain_id,
    }
    tx_hash = chain.w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    receipt = chain.w3.eth.wait_for_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    revoked_at = int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])
    status = registry.status_at(
        grant.grant_id(registry.domain),
        grant,
        patient=account.address,
        grantee=grantee,
        record_ref=b"\x01" * 32,
        purpose=0,
        time=revoked_at,
    )
    assert status is GrantStatus.REVOKED
    # For another chain, the same account derives another secret: refused, not sent wrong.
    other = _run(tmp_path / "wallet", *args, "--chain-id", "5")
    assert other.exit_code == 1
    assert "another ConsentRegistryV2 or chain" in other.stderr


def test_a_grant_of_another_patient_or_no_grant_is_one_clear_error(tmp_path: Path) -> None:
    Wallet.create(tmp_path / "wallet", PASSPHRASE, scrypt_n=FAST_N)
    domain = consent_domain_v2(31337, "0x" + "c0" * 20)
    stranger = sign_grant_v2(
        Account.create(),
        domain,
        grantee="0x" + "ab" * 20,
        record_ref=None,
        purposes=[Purpose.TREATMENT],
        expires_at=2_000_000_000,
        now=1_800_000_000,
    )
    grant_file = tmp_path / "grant.json"
    grant_file.write_text(json.dumps(stranger.as_json()), encoding="utf-8")
    common = ["--registry", domain.verifying_contract, "--chain-id", "31337"]
    result = _run(tmp_path / "wallet", "--grant", str(grant_file), *common)
    assert result.exit_code == 1
    assert f"the grant is {stranger.patient}'s" in result.stderr
    missing = _run(tmp_path / "wallet", "--grant", str(tmp_path / "none.json"), *common)
    assert missing.exit_code == 1
    assert "cannot read the grant" in missing.stderr
    assert "Traceback" not in missing.output


# --------------------------------------------------------------------------- served typed data

REGISTRY = "0x" + "c0" * 20


def _served(**changes: object) -> dict[str, object]:
    """``GET /v1/typed-data``'s ``consentV2``, with ``section__key`` changed."""
    document = typed_data_v2(consent_domain_v2(31337, REGISTRY))
    for path, value in changes.items():
        section, key = path.split("__")
        target = document[section]
        assert isinstance(target, dict)
        target[key] = value
    return {"consentV2": document}


def test_the_served_v2_domain_is_adopted_when_it_is_the_contracts() -> None:
    from wallets.consent import consent_v2_domain

    domain = consent_v2_domain(_served(), chain_id=31337, registry=REGISTRY)
    assert domain == consent_domain_v2(31337, REGISTRY)
    assert consent_v2_domain({"domains": {}}, chain_id=31337) is None  # a v1-only deployment


@pytest.mark.parametrize(
    ("changes", "registry", "message"),
    [
        ({"domain__version": "1"}, None, "version '1', expected 'medtrail' version '2'"),
        ({"domain__chainId": 5}, None, "on chain 5, expected 31337"),
        ({"domain__verifyingContract": "0x12"}, None, "verifyingContract"),
        ({}, "0x" + "d0" * 20, "expected 0xD0"),
        ({"types__Grant": [{"name": "patient", "type": "address"}]}, None, "types.Grant"),
        ({"types__RevocationKey": []}, None, "types.RevocationKey"),
        ({"types__EIP712Domain": []}, None, "EIP712Domain"),
    ],
)
def test_a_served_v2_domain_other_than_the_contracts_is_refused(
    changes: dict[str, object], registry: str | None, message: str
) -> None:
    from wallets.consent import consent_v2_domain
    from wallets.errors import TypedDataMismatch

    with pytest.raises(TypedDataMismatch, match=message):
        consent_v2_domain(_served(**changes), chain_id=31337, registry=registry)
    with pytest.raises(TypedDataMismatch, match="must be an object"):
        consent_v2_domain({"consentV2": []}, chain_id=31337)


def test_a_grant_to_oneself_or_to_zero_is_refused_before_signing() -> None:
    patient = Account.create()
    domain = consent_domain_v2(31337, REGISTRY)
    for grantee in (patient.address, "0x" + "00" * 20):
        with pytest.raises(InvalidConsentRequest, match="not zero nor yourself"):
            sign_grant_v2(
                patient, domain, grantee=grantee, record_ref=None,
                purposes=[Purpose.TREATMENT], expires_at=2_000_000_000, now=1_800_000_000,
            )  # fmt: skip


def test_a_v2_grant_the_service_calls_expired_is_listed_expired_not_pending_or_active() -> None:
    """A grant never committed by its deadline (or committed after it) covers nothing: the
    wallet shows the service's verdict, not 'pending' forever nor 'active' by its window."""
    from wallets.service import grant_status

    now = 1_800_000_000
    window = {"version": 2, "notBefore": now - 60, "expiresAt": now + 86_400}
    uncommitted = {**window, "committedAt": None, "status": "expired"}
    late = {**window, "committedAt": now - 10, "status": "expired"}
    waiting = {**window, "committedAt": None, "status": "pending"}
    committed = {**window, "committedAt": now - 10, "status": "active"}
    assert grant_status(uncommitted, now) == "expired"
    assert grant_status(late, now) == "expired"
    assert grant_status(waiting, now) == "pending"
    assert grant_status(committed, now) == "active"


@pytest.mark.parametrize(
    ("call", "value", "message"),
    [
        ("commit", [b"\x01" * 31], "commitment must be 32 bytes"),
        ("commit", [b"\x01" * 32, "0x" + "01" * 32], "commitment must be 32 bytes"),
        ("revoke", b"\x01" * 33, "revocation secret must be 32 bytes"),
    ],
)
def test_a_value_that_is_not_32_bytes_is_refused_before_any_transaction(
    chain: EmbeddedChain, call: str, value: object, message: str
) -> None:
    """The wallet's direct calls and the service's relayed ones build the same checked call."""
    registry = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
    sender = chain.fresh_account()
    nonce = chain.w3.eth.get_transaction_count(sender.address)
    with pytest.raises(ProofError, match=message):
        getattr(registry, call)(value, sender)
    assert chain.w3.eth.get_transaction_count(sender.address) == nonce  # nothing was sent
