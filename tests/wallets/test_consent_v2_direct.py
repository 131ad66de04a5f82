"""Consent version 2 without the operator (issue 17): the wallet keeps every grant it signs and
revokes it, or cancels the ones not committed yet, straight on the ConsentRegistryV2 through a
JSON-RPC node (anvil) — `wallet revoke --direct`, `wallet cancel-signatures --direct`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3

from api.cli import cli
from ledger.chain.consent_client import ConsentV2, deploy_consent_v2
from ledger.consent import SignedGrant, consent_domain_v2
from ledger.events import Purpose
from ledger.rules import GrantStatus
from tests.support.anvil import Anvil, anvil_available
from tests.wallets.conftest import FAST_N, PASSPHRASE
from wallets import Wallet
from wallets.consent import sign_grant_v2
from wallets.grants import GRANTS_FILE, LocalGrants

pytestmark = pytest.mark.anvil

RECORD = b"\x42" * 32


@pytest.fixture(scope="module")
def node() -> Iterator[Anvil]:
    if not anvil_available():
        pytest.skip("anvil is not installed (run `make node`)")
    with Anvil() as running:
        yield running


@dataclass
class Setup:
    node: Anvil
    registry: ConsentV2
    wallet_dir: Path
    patient: LocalAccount
    #: A second account of the same wallet, funded: it sends and pays.
    payer: LocalAccount
    kept: LocalGrants

    def sign(self, **terms: object) -> SignedGrant:
        now = self.node.timestamp()
        values: dict[str, object] = {
            "grantee": self.node.accounts[5].address,
            "record_ref": RECORD,
            "purposes": [Purpose.TREATMENT],
            "expires_at": now + 86_400,
            "now": now,
        }
        values.update(terms)
        grant = sign_grant_v2(self.patient, self.registry.domain, **values)  # type: ignore[arg-type]
        self.kept.keep(self.registry.domain, grant)
        return grant

    def commit(self, grant: SignedGrant) -> None:
        self.registry.commit([grant.commitment(self.registry.domain)], self.node.accounts[1])

    def status(self, grant: SignedGrant) -> GrantStatus:
        return self.registry.status_at(
            grant.grant_id(self.registry.domain),
            grant,
            patient=self.patient.address,
            grantee=grant.grantee,
            record_ref=RECORD,
            purpose=0,
            time=self.node.timestamp(),
        )

    def run(self, *args: str) -> Result:
        env = {
            "MEDTRAIL_WALLET_DIR": str(self.wallet_dir),
            "MEDTRAIL_WALLET_PASSPHRASE": PASSPHRASE,
            "MEDTRAIL_WALLET_SCRYPT_N": str(FAST_N),
            "MEDTRAIL_API_URL": "http://127.0.0.1:9",  # the service is down: never asked
        }
        return CliRunner().invoke(cli, ["wallet", *args], env=env)


@pytest.fixture
def setup(node: Anvil, tmp_path: Path) -> Setup:
    w3 = Web3(HTTPProvider(node.url))
    registry = ConsentV2(w3, deploy_consent_v2(w3, node.accounts[0]))
    wallet, _words = Wallet.create(tmp_path / "wallet", PASSPHRASE, accounts=2, scrypt_n=FAST_N)
    patient = wallet.account(wallet.addresses()[0], PASSPHRASE)
    payer = wallet.account(wallet.addresses()[1], PASSPHRASE)
    node.set_balance(payer.address, 10**18)
    return Setup(node, registry, tmp_path / "wallet", patient, payer, LocalGrants(wallet.directory))


def _hex(grant: SignedGrant, setup: Setup) -> str:
    return "0x" + grant.commitment(setup.registry.domain).hex()


def test_revoke_direct_from_another_account_with_the_service_down(setup: Setup) -> None:
    grant = setup.sign()
    setup.commit(grant)
    assert setup.status(grant) is GrantStatus.VALID
    result = setup.run(
        "revoke", "--direct", "--rpc-url", setup.node.url, "--sender", setup.payer.address,
        "--json", _hex(grant, setup),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["sender"] == setup.payer.address
    assert answer["commitment"] == _hex(grant, setup)
    revoked_at = setup.registry.revoked_at(grant.revocation_hash)
    assert answer["revokedAt"] == revoked_at > 0
    assert setup.status(grant) is GrantStatus.REVOKED
    # Once revoked, again is refused before anything is sent.
    again = setup.run("revoke", "--direct", "--rpc-url", setup.node.url, _hex(grant, setup))
    assert again.exit_code == 1
    assert "revoked on chain already" in again.stderr


def test_revoke_direct_by_the_patients_own_account_and_decimal_id(setup: Setup) -> None:
    setup.node.set_balance(setup.patient.address, 10**18)
    grant = setup.sign()
    setup.commit(grant)
    grant_id = str(grant.grant_id(setup.registry.domain))
    result = setup.run("revoke", "--direct", "--rpc-url", setup.node.url, grant_id)
    assert result.exit_code == 0, result.output
    assert f"Grant {_hex(grant, setup)} revoked on chain" in result.stdout
    assert f"sent by {setup.patient.address}" in result.stdout
    assert setup.status(grant) is GrantStatus.REVOKED


def test_cancel_direct_revokes_only_what_is_not_committed_nor_revoked(setup: Setup) -> None:
    committed, waiting, revoked = setup.sign(), setup.sign(), setup.sign()
    setup.commit(committed)
    done = setup.run(
        "revoke", "--direct", "--rpc-url", setup.node.url, "--sender", setup.payer.address,
        _hex(revoked, setup),
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    result = setup.run(
        "cancel-signatures", "--direct", "--rpc-url", setup.node.url,
        "--sender", setup.payer.address, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cancelled = [row["commitment"] for row in json.loads(result.stdout)["cancelled"]]
    assert cancelled == [_hex(waiting, setup)]
    assert setup.registry.revoked_at(waiting.revocation_hash) > 0
    assert setup.registry.revoked_at(committed.revocation_hash) == 0
    # The operator commits the signature it sat on: it never covers anything.
    setup.commit(waiting)
    assert setup.status(waiting) is GrantStatus.REVOKED
    assert setup.status(committed) is GrantStatus.VALID
    # Nothing left to cancel.
    empty = setup.run(
        "cancel-signatures", "--direct", "--rpc-url", setup.node.url,
        "--sender", setup.payer.address,
    )  # fmt: skip
    assert empty.exit_code == 0, empty.output
    assert "nothing to cancel" in empty.stdout


# --------------------------------------------------------------------------- error paths


def _fails(result: Result, message: str) -> None:
    assert result.exit_code != 0, result.output
    assert message in result.output + result.stderr
    assert "Traceback" not in result.output


def test_direct_needs_a_node(setup: Setup) -> None:
    grant = setup.sign()
    _fails(setup.run("revoke", "--direct", _hex(grant, setup)), "--direct needs --rpc-url")
    _fails(setup.run("cancel-signatures", "--direct"), "--direct needs --rpc-url")


def test_rpc_options_without_direct_are_refused(setup: Setup) -> None:
    _fails(setup.run("revoke", "--rpc-url", setup.node.url, "1"), "go with --direct")
    _fails(setup.run("cancel-signatures", "--sender", setup.payer.address), "go with --direct")


def test_a_grant_this_wallet_does_not_keep(setup: Setup) -> None:
    result = setup.run("revoke", "--direct", "--rpc-url", setup.node.url, "0x" + "ab" * 32)
    _fails(result, "this wallet keeps no grant 0x" + "ab" * 32)


def test_a_grant_id_that_is_no_id(setup: Setup) -> None:
    _fails(setup.run("revoke", "--direct", "0x1234"), "is not a grant id")
    _fails(setup.run("revoke", "--direct", "abc"), "is not a grant id")
    _fails(setup.run("revoke", "--direct", "0"), "is not a grant id")


def test_a_node_that_does_not_answer(setup: Setup) -> None:
    grant = setup.sign()
    result = setup.run("revoke", "--direct", "--rpc-url", "http://127.0.0.1:9", _hex(grant, setup))
    _fails(result, "the chain at http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("chain_id", "contract", "message"),
    [
        (5, "registry", "is on chain 31337, the grant's registry on chain 5"),
        (31337, "an account", "is not medtrail's ConsentRegistryV2"),
    ],
)
def test_a_node_of_another_chain_or_no_registry_at_the_address(
    setup: Setup, chain_id: int, contract: str, message: str
) -> None:
    address = setup.registry.address if contract == "registry" else setup.node.accounts[7].address
    elsewhere = consent_domain_v2(chain_id, address)
    grant = sign_grant_v2(
        setup.patient, elsewhere, grantee=setup.node.accounts[5].address, record_ref=None,
        purposes=[Purpose.TREATMENT], expires_at=setup.node.timestamp() + 86_400,
        now=setup.node.timestamp(),
    )  # fmt: skip
    setup.kept.keep(elsewhere, grant)
    commitment = "0x" + grant.commitment(elsewhere).hex()
    result = setup.run("revoke", "--direct", "--rpc-url", setup.node.url, commitment)
    _fails(result, message)


def test_a_sender_with_no_funds(setup: Setup) -> None:
    grant = setup.sign()  # the patient's own account holds nothing
    result = setup.run("revoke", "--direct", "--rpc-url", setup.node.url, _hex(grant, setup))
    _fails(result, "the chain at")
    assert setup.registry.revoked_at(grant.revocation_hash) == 0


def test_a_sender_not_in_the_wallet(setup: Setup) -> None:
    grant = setup.sign()
    result = setup.run(
        "revoke", "--direct", "--rpc-url", setup.node.url,
        "--sender", setup.node.accounts[3].address, _hex(grant, setup),
    )  # fmt: skip
    _fails(result, "account-not-found")


def test_a_grant_of_another_account_of_the_wallet(setup: Setup) -> None:
    grant = setup.sign()
    result = setup.run(
        "revoke", "--direct", "--rpc-url", setup.node.url,
        "--account", setup.payer.address, _hex(grant, setup),
    )  # fmt: skip
    _fails(result, f"the grant is {setup.patient.address}'s")


def test_an_unreadable_copy_is_one_clear_error(setup: Setup) -> None:
    (setup.wallet_dir / GRANTS_FILE).write_text("{not json", encoding="utf-8")
    result = setup.run("revoke", "--direct", "--rpc-url", setup.node.url, "0x" + "ab" * 32)
    _fails(result, "is unreadable")
