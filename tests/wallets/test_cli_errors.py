"""Every bad input to the wallet's commands (consent commands aside: their own tests) is one
clear message and a non-zero exit, never a traceback, with the wallet directory byte for
byte as it was.

One sweep: each case prepares what it needs (a wallet, a corrupt file, a server that is not
medtrail…), runs one ``medtrail wallet …`` command through the real API on the embedded
chain, and asserts its message, its code and its exit status. ``sign-in`` stands for every
command that talks to the service (they share how the wallet, the passphrase, the service
and the contracts are found and checked).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner
from eth_account import Account

from api.cli import cli
from tests.support.anvil import free_port
from tests.wallets.api_env import Service
from tests.wallets.conftest import FAST_N, OTHER_PASSPHRASE, PASSPHRASE
from wallets import Wallet


@dataclass
class Run:
    """One command: its arguments, environment (over the defaults) and standard input."""

    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    input: str | None = None


@dataclass
class World:
    tmp: Path
    service: Service
    other_server: str

    @property
    def wallet_dir(self) -> Path:
        return self.tmp / "wallet"

    def wallet(self) -> Wallet:
        wallet, _words = Wallet.create(self.wallet_dir, PASSPHRASE, scrypt_n=FAST_N)
        return wallet


@dataclass(frozen=True)
class Case:
    prepare: Callable[[World], Run]
    message: str
    code: str | None  # the wallet's error code, shown as [code]; None: a usage error
    status: int = 1


class _NotMedtrail(BaseHTTPRequestHandler):
    """Answers every GET with a web page (a service that is not medtrail)."""

    def do_GET(self) -> None:
        body = b"<html><body>Welcome</body></html>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return None


@pytest.fixture(scope="module")
def other_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotMedtrail)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _with_wallet(run: Run) -> Callable[[World], Run]:
    def prepare(world: World) -> Run:
        world.wallet()
        return run

    return prepare


def _deployment_file(text: str) -> Callable[[World], Run]:
    def prepare(world: World) -> Run:
        world.wallet()
        path = world.tmp / "deployment.json"
        path.write_text(text)
        return Run(["sign-in", "--deployment-file", str(path)])

    return prepare


def _pinned(edit: Callable[[dict[str, object]], str]) -> Callable[[World], Run]:
    """A wallet whose pinned deployment (deployment.json in its directory) was changed."""

    def prepare(world: World) -> Run:
        world.wallet()
        served = world.service.env.ledger.deployment.model_dump(mode="json", by_alias=True)
        (world.wallet_dir / "deployment.json").write_text(edit(served))
        return Run(["sign-in"])

    return prepare


def _corrupt_index(world: World) -> Run:
    world.wallet()
    (world.wallet_dir / "wallet.json").write_text("{not json")
    return Run(["list"])


def _imported_twice(world: World) -> Run:
    wallet = world.wallet()
    key = Account.create().key
    wallet.import_key(world.wallet_dir, key, PASSPHRASE, scrypt_n=FAST_N)
    return Run(["import-key"], {"MEDTRAIL_WALLET_PRIVATE_KEY": key.hex()})


def _file_as_wallet_dir(world: World) -> Run:
    world.tmp.joinpath("a-file").write_text("")
    return Run(["list", "--wallet-dir", str(world.tmp / "a-file")])


def _unreachable(world: World) -> Run:
    world.wallet()
    return Run(["sign-in"], {"MEDTRAIL_API_URL": f"http://127.0.0.1:{free_port()}"})


def _not_medtrail(world: World) -> Run:
    world.wallet()
    return Run(["sign-in"], {"MEDTRAIL_API_URL": world.other_server})


NO_PASSPHRASE = {"MEDTRAIL_WALLET_PASSPHRASE": ""}


def contracts(audit_log: str, institutions: str, consent: str) -> list[str]:
    return [
        *("--audit-log", audit_log),
        *("--institution-registry", institutions),
        *("--consent-registry", consent),
    ]


ADDRESS = "0x" + "ab" * 20

CASES: dict[str, Case] = {
    # ------------------------------------------------------------------ a new wallet
    "create: a short passphrase, at the prompt": Case(
        lambda w: Run(["create"], NO_PASSPHRASE, input="short\n"),
        "the passphrase must have at least 8 characters",
        "weak-passphrase",
    ),
    "create: a short passphrase, from the environment": Case(
        lambda w: Run(["create"], {"MEDTRAIL_WALLET_PASSPHRASE": "short"}),
        "the passphrase must have at least 8 characters",
        "weak-passphrase",
    ),
    "create: two passphrases that differ, then no more input": Case(
        lambda w: Run(["create"], NO_PASSPHRASE, input=f"{PASSPHRASE}\n{OTHER_PASSPHRASE}\n"),
        "no passphrase: set MEDTRAIL_WALLET_PASSPHRASE or run in a terminal",
        "passphrase-required",
    ),
    "create: a wallet exists already": Case(
        _with_wallet(Run(["create"])), "a wallet exists already in", "wallet-exists"
    ),
    "create: a directory that cannot be made": Case(
        lambda w: Run(["create", "--wallet-dir", "/proc/medtrail-wallet"]),
        "cannot create a wallet in /proc/medtrail-wallet",
        "keystore-write-failed",
    ),
    "import-mnemonic: not a mnemonic": Case(
        lambda w: Run(["import-mnemonic"], {"MEDTRAIL_WALLET_MNEMONIC": "correct horse battery"}),
        "a mnemonic has 12, 15, 18, 21 or 24 words, got 3",
        "invalid-mnemonic",
    ),
    "import-mnemonic: a wallet exists already": Case(
        _with_wallet(
            Run(["import-mnemonic"], {"MEDTRAIL_WALLET_MNEMONIC": " ".join(["abandon"] * 12)})
        ),
        "a wallet exists already in",
        "wallet-exists",
    ),
    "import-key: not a key": Case(
        lambda w: Run(["import-key"], {"MEDTRAIL_WALLET_PRIVATE_KEY": "0x1234"}),
        "a private key is 32 bytes: 64 hex digits",
        "invalid-private-key",
    ),
    "import-key: the wrong passphrase for the wallet": Case(
        _with_wallet(
            Run(
                ["import-key"],
                {
                    "MEDTRAIL_WALLET_PRIVATE_KEY": "0x" + "11" * 32,
                    "MEDTRAIL_WALLET_PASSPHRASE": OTHER_PASSPHRASE,
                },
            )
        ),
        "wrong passphrase",
        "wrong-passphrase",
    ),
    "import-key: a key the wallet holds already": Case(
        _imported_twice, "the wallet already holds", "duplicate-account"
    ),
    # ------------------------------------------------------------------ the wallet itself
    "list: no wallet": Case(lambda w: Run(["list"]), "no wallet in", "wallet-not-found"),
    "list: a wallet index that is not JSON": Case(_corrupt_index, "cannot read", "corrupt-wallet"),
    "list: a file given as the wallet directory": Case(
        _file_as_wallet_dir, "is a file", None, status=2
    ),
    "new-account: no wallet": Case(
        lambda w: Run(["new-account"]), "no wallet in", "wallet-not-found"
    ),
    "new-account: a wrong passphrase": Case(
        _with_wallet(Run(["new-account"], {"MEDTRAIL_WALLET_PASSPHRASE": OTHER_PASSPHRASE})),
        "wrong passphrase",
        "wrong-passphrase",
    ),
    "sign-in: no wallet": Case(lambda w: Run(["sign-in"]), "no wallet in", "wallet-not-found"),
    "sign-in: a wrong passphrase": Case(
        _with_wallet(Run(["sign-in"], {"MEDTRAIL_WALLET_PASSPHRASE": OTHER_PASSPHRASE})),
        "wrong passphrase (or the keystore was altered)",
        "wrong-passphrase",
    ),
    "sign-in: a wrong passphrase, at the prompt": Case(
        _with_wallet(Run(["sign-in"], NO_PASSPHRASE, input=OTHER_PASSPHRASE + "\n")),
        "wrong passphrase",
        "wrong-passphrase",
    ),
    "sign-in: no passphrase and no terminal": Case(
        _with_wallet(Run(["sign-in"], NO_PASSPHRASE)),
        "no passphrase: set MEDTRAIL_WALLET_PASSPHRASE",
        "passphrase-required",
    ),
    "sign-in: a malformed account": Case(
        _with_wallet(Run(["sign-in", "--account", "0x123"])),
        "'0x123' is not an address",
        "account-not-found",
    ),
    "sign-in: an account the wallet does not hold": Case(
        _with_wallet(Run(["sign-in", "--account", ADDRESS])),
        "the wallet has no account",
        "account-not-found",
    ),
    # ------------------------------------------------------------------ the service
    "sign-in: no API URL": Case(
        _with_wallet(Run(["sign-in"], {"MEDTRAIL_API_URL": "", "MEDTRAIL_URL": ""})),
        "no API URL: pass --api or set MEDTRAIL_API_URL",
        "wallet-error",
    ),
    "sign-in: an API URL that is not one": Case(
        _with_wallet(Run(["sign-in", "--api", "not a url"])),
        "the API URL must be http(s)://host[:port], got 'not a url'",
        "wallet-error",
    ),
    "sign-in: an ftp URL": Case(
        _with_wallet(Run(["sign-in", "--api", "ftp://127.0.0.1"])),
        "the API URL must be http(s)://host[:port]",
        "wallet-error",
    ),
    "sign-in: an unreachable service": Case(_unreachable, "cannot be reached", "api-unreachable"),
    "sign-in: a server that is not medtrail": Case(
        _not_medtrail,
        "answered GET /v1/deployment with something that is not JSON",
        "api-error",
    ),
    "sign-in: another site's sign-in domain": Case(
        _with_wallet(Run(["sign-in", "--siwe-domain", "bank.example"])),
        "refusing to sign a sign-in for another site",
        "wallet-error",
    ),
    # ------------------------------------------------------------------ the contracts
    "sign-in: a deployment file that does not exist": Case(
        _with_wallet(Run(["sign-in", "--deployment-file", "/nonexistent/deployment.json"])),
        "deployment file /nonexistent/deployment.json not found",
        "deployment-mismatch",
    ),
    "sign-in: a deployment file that is not JSON": Case(
        _deployment_file("{not json"),
        "is not a medtrail deployment file (as `medtrail deploy` writes it or GET "
        "/v1/deployment serves it): 1 error(s), first: the file: Invalid JSON",
        "deployment-mismatch",
    ),
    "sign-in: a deployment file of something else": Case(
        _deployment_file('{"name": "not a deployment"}'),
        "is not a medtrail deployment file",
        "deployment-mismatch",
    ),
    "sign-in: one contract address of three": Case(
        _with_wallet(Run(["sign-in", "--audit-log", ADDRESS])),
        "give all three of --institution-registry, --audit-log and --consent-registry",
        "wallet-error",
    ),
    "sign-in: malformed contract addresses": Case(
        _with_wallet(Run(["sign-in", *contracts("0x12", "0x12", "0x12")])),
        "the contract addresses are malformed",
        "deployment-mismatch",
    ),
    "sign-in: contracts the service does not use": Case(
        _with_wallet(Run(["sign-in", *contracts(ADDRESS, "0x" + "cd" * 20, ADDRESS)])),
        "names other contracts than the contracts you configured",
        "deployment-mismatch",
    ),
    "sign-in: a pinned deployment the service no longer names": Case(
        _pinned(lambda d: json.dumps({**d, "auditLog": ADDRESS})),
        "names other contracts than the contracts this wallet pinned on first use",
        "deployment-mismatch",
    ),
    "sign-in: a pinned deployment that is not JSON": Case(
        _pinned(lambda d: "{not json"),
        "deployment.json is not a medtrail deployment file",
        "deployment-mismatch",
    ),
}


def _files(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        return {}
    return {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("name", CASES)
def test_a_bad_input_is_one_clear_message_and_a_non_zero_exit(
    name: str, tmp_path: Path, service: Service, other_server: str
) -> None:
    case = CASES[name]
    world = World(tmp_path, service, other_server)
    run = case.prepare(world)
    before = _files(world.wallet_dir)
    env = {
        "MEDTRAIL_WALLET_DIR": str(world.wallet_dir),
        "MEDTRAIL_API_URL": service.url,
        "MEDTRAIL_WALLET_PASSPHRASE": PASSPHRASE,
        "MEDTRAIL_WALLET_SCRYPT_N": str(FAST_N),
        **run.env,
    }
    result = CliRunner().invoke(cli, ["wallet", *run.args], env=env, input=run.input)
    assert result.exit_code == case.status, result.output
    assert isinstance(result.exception, SystemExit)  # not an exception escaping the command
    assert "Traceback" not in result.output
    assert case.message in result.stderr, result.stderr
    if case.code is None:
        assert "Usage:" in result.stderr
    else:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, result.stderr
        assert errors[0].endswith(f"[{case.code}]"), errors[0]
        assert case.message in errors[0]
    assert _files(world.wallet_dir) == before  # nothing written, nothing half-replaced
    assert PASSPHRASE not in result.output


def test_a_short_passphrase_is_refused_before_it_is_asked_twice(tmp_path: Path) -> None:
    env = {"MEDTRAIL_WALLET_DIR": str(tmp_path / "w"), "MEDTRAIL_WALLET_SCRYPT_N": str(FAST_N)}
    env["MEDTRAIL_WALLET_PASSPHRASE"] = ""
    result = CliRunner().invoke(cli, ["wallet", "create"], env=env, input="short\nshort\n")
    assert result.exit_code == 1
    assert "New wallet passphrase" in result.output
    assert "Repeat for confirmation" not in result.output
    # A good one is asked twice, and asked again when the two differ.
    result = CliRunner().invoke(
        cli,
        ["wallet", "create", "--json"],
        env=env,
        input=f"{PASSPHRASE}\n{OTHER_PASSPHRASE}\n{PASSPHRASE}\n{PASSPHRASE}\n",
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("Repeat for confirmation") == 2
    assert "do not match" in result.output
    assert Wallet.open(tmp_path / "w").addresses()


def test_json_errors_are_machine_readable_too(tmp_path: Path, service: Service) -> None:
    env = {"MEDTRAIL_WALLET_DIR": str(tmp_path / "none"), "MEDTRAIL_API_URL": service.url}
    result = CliRunner().invoke(cli, ["wallet", "sign-in", "--json"], env=env)
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"]["code"] == "wallet-not-found"


@pytest.mark.parametrize("seconds", [10**13, 2**63 - 1, -(10**13)])
def test_a_time_beyond_the_calendar_is_shown_as_seconds(seconds: int) -> None:
    """A grant expiring in 100,000,000 days (the chain takes it) or a service's session time
    out of range is shown as it is, not a traceback of every command that prints it."""
    from wallets.cli import _when

    assert _when(seconds) == f"{seconds} (unix seconds)"
    assert _when(4070908800) == "2099-01-01 00:00 UTC"
