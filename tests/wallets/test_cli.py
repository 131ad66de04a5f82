"""``medtrail wallet …`` through the real API on the embedded chain (uvicorn + CliRunner).

Every bad input is its own test: a clear message, a non-zero exit, and the wallet directory
byte for byte as it was (no keystore half-written or replaced).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from eth_account import Account

from api.cli import cli
from ledger.events import InstitutionKind
from tests.wallets.api_env import Service, running_service
from tests.wallets.conftest import FAST_N, OTHER_PASSPHRASE, PASSPHRASE
from wallets import Wallet
from wallets.keystore import encrypt_key
from wallets.mnemonic import derive_account

MNEMONIC = (
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("service")) as running:
        yield running


class Cli:
    """Runs ``medtrail wallet …`` with a wallet directory, the API and a passphrase."""

    def __init__(self, wallet_dir: Path, api: str) -> None:
        self.wallet_dir = wallet_dir
        self.env = {
            "MEDTRAIL_WALLET_DIR": str(wallet_dir),
            "MEDTRAIL_API_URL": api,
            "MEDTRAIL_WALLET_PASSPHRASE": PASSPHRASE,
            "MEDTRAIL_WALLET_SCRYPT_N": str(FAST_N),
        }

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Result:
        runner = CliRunner()
        return runner.invoke(
            cli, ["wallet", *args], env={**self.env, **env}, input=input, catch_exceptions=False
        )

    def ok(self, *args: str, **env: str) -> Result:
        result = self(*args, **env)
        assert result.exit_code == 0, result.output + result.stderr
        return result

    def json(self, *args: str, **env: str) -> Any:
        return json.loads(self.ok(*args, "--json", **env).stdout)

    def fails(self, *args: str, **env: str) -> Result:
        before = snapshot(self.wallet_dir)
        result = self(*args, **env)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert snapshot(self.wallet_dir) == before
        return result


def snapshot(directory: Path) -> dict[str, bytes]:
    if not directory.exists():
        return {}
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def run(tmp_path: Path, service: Service) -> Cli:
    return Cli(tmp_path / "wallet", service.url)


@pytest.fixture
def patient(run: Cli) -> str:
    """A created wallet; its first address."""
    data = run.json("create")
    address: str = data["addresses"][0]
    return address


# --------------------------------------------------------------------------- keys


def test_create_shows_the_mnemonic_once_with_the_warning(run: Cli) -> None:
    result = run.ok("create", "--accounts", "2")
    assert "WRITE THESE WORDS DOWN" in result.stderr
    words = [line.strip() for line in result.stdout.splitlines() if len(line.split()) == 12]
    assert len(words) == 1
    wallet = Wallet.open(run.wallet_dir)
    assert len(wallet.addresses()) == 2
    assert derive_account(words[0], 0).address == wallet.addresses()[0]
    listed = run.ok("list").stdout
    assert words[0] not in listed
    assert all(a in listed for a in wallet.addresses())
    assert json.loads(run.ok("list", "--json").stdout)["accounts"][1]["index"] == 1


def test_create_refuses_an_existing_wallet(run: Cli, patient: str) -> None:
    result = run.fails("create")
    assert "exists already" in result.stderr


def test_import_mnemonic_from_the_environment(run: Cli) -> None:
    data = run.json("import-mnemonic", MEDTRAIL_WALLET_MNEMONIC=MNEMONIC)
    assert data["accounts"][0]["address"] == derive_account(MNEMONIC, 0).address


def test_import_mnemonic_from_the_prompt(run: Cli) -> None:
    result = run("import-mnemonic", input=MNEMONIC + "\n")
    assert result.exit_code == 0, result.output
    assert derive_account(MNEMONIC, 0).address in result.stdout
    assert MNEMONIC not in result.stdout


def test_import_key_creates_then_adds(run: Cli, patient: str) -> None:
    key = Account.create()
    data = run.json("import-key", MEDTRAIL_WALLET_PRIVATE_KEY=key.key.hex())
    assert [a["address"] for a in data["accounts"]] == [patient, key.address]
    other = Account.create()
    result = run.fails(
        "import-key",
        MEDTRAIL_WALLET_PRIVATE_KEY=other.key.hex(),
        MEDTRAIL_WALLET_PASSPHRASE=OTHER_PASSPHRASE,
    )
    assert "passphrase" in result.stderr


def test_import_key_refuses_a_bad_key(run: Cli) -> None:
    result = run.fails("import-key", MEDTRAIL_WALLET_PRIVATE_KEY="0x1234")
    assert "private key" in result.stderr
    assert not run.wallet_dir.exists()


# --------------------------------------------------------------------------- consent


def test_grant_grants_revoke(run: Cli, patient: str, service: Service) -> None:
    record = "0x" + service.env.hospital.record("mrn-cli").hex()
    to = service.clinic.address
    out = run.ok(
        "grant", "--to", to, "--record", record, "--purpose", "treatment", "--days", "30"
    ).stdout
    assert "relayed and recorded on chain" in out
    assert "Riverside Clinic (" in out
    assert "active" in out
    made = run.json(
        "grant", "--to", to, "--all-records", "--purpose", "payment", "--purpose",
        "research", "--expires", "2099-01-01",
    )  # fmt: skip
    assert made["status"] == "active"
    assert made["allRecords"] is True
    assert made["purposeNames"] == ["payment", "research"]
    assert made["expiresAt"] == 4070908800
    listed = run.json("grants")["grants"]
    assert [g["status"] for g in listed] == ["active", "active"]
    first = listed[0]["grantId"]
    assert "revoked on chain" in run.ok("revoke", str(first)).stdout
    table = run.ok("grants").stdout
    assert "revoked" in table
    assert "active" in table
    assert run.json("grants")["grants"][0]["status"] == "revoked"


def test_grant_not_before_in_the_future(run: Cli, patient: str, service: Service) -> None:
    start = int(time.time()) + 86400
    made = run.json(
        "grant", "--to", service.clinic.address, "--all-records", "--purpose", "treatment",
        "--not-before", str(start), "--days", "30",
    )  # fmt: skip
    assert made["notBefore"] == start
    assert made["status"] == "not-yet-active"


def test_cancel_signatures(run: Cli, patient: str, service: Service) -> None:
    before = service.env.ledger.consent_nonce(patient)
    out = run.ok("cancel-signatures").stdout
    assert "Outstanding signatures cancelled" in out
    assert service.env.ledger.consent_nonce(patient) == before + 1000
    # signing still works after the nonce jump
    run.ok(
        "grant", "--to", service.clinic.address, "--all-records", "--purpose", "treatment",
        "--days", "1",
    )  # fmt: skip


def test_sign_in(run: Cli, patient: str) -> None:
    assert f"signed in as {patient}" in run.ok("sign-in").stdout
    data = run.json("sign-in", "--print-token")
    assert data["address"] == patient
    assert data["token"].startswith("mtp_")
    assert "token" not in run.json("sign-in")


def test_accesses_table_and_json(run: Cli, patient: str, service: Service) -> None:
    env = service.env
    record = env.hospital.record("mrn-who")
    # The embedded chain's clock may lag the wall clock: start the grant before its time.
    start = str(env.ledger.chain.latest_timestamp() - 60)
    made = run.json(
        "grant", "--to", service.clinic.address, "--record", "0x" + record.hex(),
        "--purpose", "treatment", "--days", "1", "--not-before", start,
    )  # fmt: skip
    service.access(env.hospital, patient, record)
    service.access(
        service.clinic, patient, record, grant_id=made["grantId"], custodian=env.hospital.address
    )
    service.anchor()
    service.access(service.clinic, patient, record, custodian=env.hospital.address)
    result = run.ok("accesses")
    out = result.stdout
    assert "Riverside Clinic" in out
    assert "General Hospital" in out
    for word in ("covered", "emergency", "custodian", "treatment", "read", "verified", "pending"):
        assert word in out, word
    assert "proof checked against the service's checkpoint (pass --rpc-url" in out
    data = run.json("accesses")
    assert data["trust"] == "service"
    assert data["ok"] is True
    assert [(a["consent"], a["anchored"], a["proof"]) for a in data["accesses"]] == [
        ("custodian", True, "verified"),
        ("covered", True, "verified"),
        ("emergency", False, "pending"),
    ]


def test_accesses_lists_the_whole_history_with_its_records(
    run: Cli, patient: str, service: Service
) -> None:
    """Not only accesses: a prescription about the patient and its dispense are listed, each
    with its kind and record, and the history is said to be complete against the index."""
    env = service.env
    record = env.hospital.record("mrn-history")
    rx = env.hospital.prescription(record, patient)
    fill = env.pharmacy.dispense(rx)
    env.ledger.submit([env.hospital.sign(rx), env.pharmacy.sign(fill)])
    service.anchor()
    data = run.json("accesses")
    assert [(e["kind"], e["action"], e["recordRef"]) for e in data["events"]] == [
        ("prescription", "prescribed", "0x" + record.hex()),
        ("dispense", "dispensed", "0x" + record.hex()),
    ]
    assert data["accesses"] == []
    assert [e["consentText"] for e in data["events"]] == ["no consent needed"] * 2
    assert data["completeness"]["proven"] is True
    assert data["ok"] is True
    out = run.ok("accesses").stdout
    assert "EVENT" in out
    assert "RECORD" in out
    for word in ("prescription", "dispense", "Corner Pharmacy", f"0x{record.hex()[:4]}…"):
        assert word in out, word
    assert "Complete by the service's own index root" in out
    assert "lists 2 event(s) about you" in out


def test_grants_name_their_institutions_and_an_unseen_record_is_warned_of(
    run: Cli, patient: str, service: Service
) -> None:
    env = service.env
    seen = env.hospital.record("mrn-seen")
    service.access(env.hospital, patient, seen)
    start = str(env.ledger.chain.latest_timestamp() - 60)
    grant = ("grant", "--to", service.clinic.address, "--purpose", "treatment", "--days", "1",
             "--not-before", start)  # fmt: skip
    known = run.ok(*grant, "--record", "0x" + seen.hex())
    assert "warning" not in known.stderr
    typo = "0x" + "ab" * 32  # a reference no event about this patient names
    unknown = run.ok(*grant, "--record", typo)
    assert f"warning: record {typo} does not appear in your history" in unknown.stderr
    assert "warning" in run.json(*grant, "--record", typo)
    listed = run.json("grants")["grants"]
    assert {g["granteeName"] for g in listed} == {"Riverside Clinic"}
    assert "Riverside Clinic (" in run.ok("grants").stdout


def test_no_accesses(run: Cli, patient: str) -> None:
    assert "Nothing about" in run.ok("accesses").stdout


# --------------------------------------------------------------------------- bad input


def test_wrong_passphrase(run: Cli, patient: str, service: Service) -> None:
    result = run.fails("grants", MEDTRAIL_WALLET_PASSPHRASE=OTHER_PASSPHRASE)
    assert "wrong-passphrase" in result.stderr
    data = json.loads(
        run.fails("grants", "--json", MEDTRAIL_WALLET_PASSPHRASE=OTHER_PASSPHRASE).stdout
    )
    assert data["error"]["code"] == "wrong-passphrase"


def _keystore(wallet_dir: Path) -> Path:
    [path] = (wallet_dir / "keystore").iterdir()
    return path


def test_corrupt_keystore(run: Cli, patient: str) -> None:
    path = _keystore(run.wallet_dir)
    path.write_bytes(path.read_bytes()[:40])
    result = run.fails("grants")
    assert "corrupt-keystore" in result.stderr
    assert "not JSON" in result.stderr


def test_foreign_keystore(run: Cli, patient: str) -> None:
    """A pbkdf2 keystore (not what medtrail writes) and a keystore of another key."""
    path = _keystore(run.wallet_dir)
    foreign = Account.encrypt(Account.create().key, PASSPHRASE, kdf="pbkdf2", iterations=2)
    path.write_text(json.dumps(foreign))
    assert "not a scrypt keystore" in run.fails("grants").stderr
    other = encrypt_key(Account.create().key, PASSPHRASE, scrypt_n=FAST_N)
    other["address"] = patient[2:].lower()
    path.write_text(json.dumps(other))
    result = run.fails("grants")
    assert "corrupt-keystore" in result.stderr
    assert "holds the key of" in result.stderr


def test_unknown_institution(run: Cli, patient: str) -> None:
    result = run.fails(
        "grant", "--to", Account.create().address, "--all-records", "--purpose", "treatment",
        "--days", "1",
    )  # fmt: skip
    assert "not a registered institution" in result.stderr
    assert "unknown-institution" in result.stderr


def test_expiry_in_the_past(run: Cli, patient: str, service: Service) -> None:
    result = run.fails(
        "grant", "--to", service.clinic.address, "--all-records", "--purpose", "treatment",
        "--expires", "2020-01-01",
    )  # fmt: skip
    assert "in the past" in result.stderr


def test_not_before_after_expiry(run: Cli, patient: str, service: Service) -> None:
    result = run.fails(
        "grant", "--to", service.clinic.address, "--all-records", "--purpose", "treatment",
        "--expires", "2098-01-01", "--not-before", "2099-01-01",
    )  # fmt: skip
    assert "after the expiry" in result.stderr


def test_bad_grant_arguments(run: Cli, patient: str, service: Service) -> None:
    to = service.clinic.address
    cases = [
        ("exactly one of --record", ["--purpose", "treatment", "--days", "1"]),
        ("exactly one of --expires", ["--all-records", "--purpose", "treatment"]),
        ("unknown purpose", ["--all-records", "--purpose", "fun", "--days", "1"]),
        ("must be a date", ["--all-records", "--purpose", "treatment", "--expires", "soon"]),
    ]
    for message, args in cases:
        assert message in run.fails("grant", "--to", to, *args).stderr


def test_suspended_grantee(run: Cli, patient: str, service: Service) -> None:
    closed = service.env.institution("Closed Clinic", InstitutionKind.HOSPITAL)
    service.env.ledger.suspend_institution(closed.address)
    args = ["grant", "--to", closed.address, "--all-records", "--purpose", "treatment"]
    assert "is suspended" in run.fails(*args, "--days", "1").stderr


def test_a_grant_the_chain_refused(run: Cli, patient: str, service: Service) -> None:
    """The pre-check skipped: the chain refuses, the API's problem detail is shown."""
    closed = service.env.institution("Shut Clinic", InstitutionKind.HOSPITAL)
    service.env.ledger.suspend_institution(closed.address)
    result = run.fails(
        "grant", "--to", closed.address, "--all-records", "--purpose", "treatment", "--days",
        "1", "--skip-institution-check",
    )  # fmt: skip
    assert "the service refused" in result.stderr
    assert "GranteeNotActive" in result.stderr
    assert "HTTP 409" in result.stderr
    assert run.json("grants")["grants"] == []


def test_revoke_someone_elses_grant(run: Cli, patient: str) -> None:
    assert "HTTP 404" in run.fails("revoke", "999999").stderr


def test_api_unreachable(run: Cli, patient: str) -> None:
    result = run.fails("grants", MEDTRAIL_API_URL="http://127.0.0.1:9")
    assert "cannot be reached" in result.stderr
    assert "api-unreachable" in result.stderr


def test_no_api_url(run: Cli, patient: str) -> None:
    assert "no API URL" in run.fails("grants", MEDTRAIL_API_URL="").stderr


def test_no_wallet(run: Cli) -> None:
    assert "wallet-not-found" in run.fails("grants").stderr


# ------------------------------------------------------------------ consent errors (issue 14)


def test_revoke_twice_is_one_clear_error(run: Cli, patient: str, service: Service) -> None:
    made = run.json(
        "grant", "--to", service.clinic.address, "--all-records", "--purpose", "treatment",
        "--days", "1",
    )  # fmt: skip
    run.ok("revoke", str(made["grantId"]))
    result = run.fails("revoke", str(made["grantId"]))
    assert f"grant {made['grantId']} is revoked already" in result.stderr
    assert "GrantAlreadyRevoked(" not in result.stderr
    assert "[invalid-consent-request]" in result.stderr


def test_grant_to_a_malformed_address_is_refused_before_the_service_is_asked(
    run: Cli, patient: str
) -> None:
    # No service at all: the check is local.
    result = run.fails(
        "grant", "--to", "0xnothex", "--all-records", "--purpose", "treatment", "--days", "1",
        MEDTRAIL_API_URL="http://127.0.0.1:9",
    )  # fmt: skip
    assert "--to: '0xnothex' is not an address" in result.stderr
    assert "[invalid-consent-request]" in result.stderr


@pytest.mark.parametrize("days", ["100000000", "36526", "1000000000000"])
def test_grant_for_too_many_days_is_refused(
    run: Cli, patient: str, service: Service, days: str
) -> None:
    result = run.fails(
        "grant", "--to", service.clinic.address, "--all-records", "--purpose", "treatment",
        "--days", days,
    )  # fmt: skip
    assert "a grant lasts at most 36525 days" in result.stderr
    assert "[invalid-consent-request]" in result.stderr
    assert run.json("grants")["grants"] == []


def test_grant_expiring_too_far_ahead_is_refused(run: Cli, patient: str, service: Service) -> None:
    result = run.fails(
        "grant", "--to", service.clinic.address, "--all-records", "--purpose", "treatment",
        "--expires", "9999-01-01",
    )  # fmt: skip
    assert "a grant lasts at most 36525 days" in result.stderr


def test_the_wallets_longest_grant_is_the_ledgers() -> None:
    from ledger.consent import MAX_GRANT_SECONDS
    from wallets.cli import _MAX_GRANT_DAYS

    assert _MAX_GRANT_DAYS == MAX_GRANT_SECONDS // 86_400
