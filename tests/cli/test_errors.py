"""Every mistake a newcomer makes with ``medtrail serve``, ``deploy`` and ``api-key create``
is one clear message and a non-zero exit, never a traceback (issue 14): the README's own
placeholders, a plain path or another database as ``MEDTRAIL_DATABASE_URL``, a missing or
malformed key, a busy port.

Each case runs the console entry point (:func:`api.cli.main`, what ``.venv/bin/medtrail``
runs) in process, with its own environment; one case runs the real command as a process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from pydantic import ValidationError

from api.cli import main
from ledger.settings import Settings
from tests.support.service_proc import REPO

#: Anvil's first dev key: well-formed, funded nowhere here.
KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ADDRESS = Account.from_key(KEY).address


@dataclass(frozen=True)
class Outcome:
    status: int
    output: str


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return port


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def run(
    args: list[str],
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Outcome:
    """``medtrail ARGS`` in ``tmp_path`` with only ``env`` of the ``MEDTRAIL_*`` variables."""
    for name in list(os.environ):
        if name.startswith("MEDTRAIL_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["medtrail", *args])
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # noqa: SIM115 - no terminal, as in CI
    status = 0
    try:
        main()
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return Outcome(status, captured.out + captured.err)


def deploy_args(port: int, *, admin: str = ADDRESS) -> list[str]:
    return [
        "deploy",
        "--rpc-url",
        f"http://127.0.0.1:{port}",
        "--admin",
        admin,
        "--log-operator",
        ADDRESS,
    ]


#: (case, arguments (PORT: a closed port; BUSY: a busy one), environment, exit status, the
#: message's words).
CASES = [
    (
        "deploy with the README's placeholder address",
        [
            "deploy",
            "--rpc-url",
            "http://127.0.0.1:PORT",
            "--admin",
            "0xAdmin",
            "--log-operator",
            ADDRESS,
        ],
        {"MEDTRAIL_DEPLOYER_KEY": KEY},
        2,
        "'0xAdmin' is not an Ethereum address",
    ),
    (
        "deploy with a registrar placeholder",
        [
            "deploy",
            "--rpc-url",
            "http://127.0.0.1:PORT",
            "--admin",
            ADDRESS,
            "--log-operator",
            ADDRESS,
            "--registrar",
            "0xRegulator…",
        ],
        {"MEDTRAIL_DEPLOYER_KEY": KEY},
        2,
        "is not an Ethereum address",
    ),
    (
        "deploy without a deployer key and no terminal to ask at",
        [
            "deploy",
            "--rpc-url",
            "http://127.0.0.1:PORT",
            "--admin",
            ADDRESS,
            "--log-operator",
            ADDRESS,
        ],
        {},
        2,
        "MEDTRAIL_DEPLOYER_KEY is not set",
    ),
    (
        "deploy with the README's placeholder key",
        [
            "deploy",
            "--rpc-url",
            "http://127.0.0.1:PORT",
            "--admin",
            ADDRESS,
            "--log-operator",
            ADDRESS,
        ],
        {"MEDTRAIL_DEPLOYER_KEY": "0x…"},
        2,
        "MEDTRAIL_DEPLOYER_KEY must be a 32-byte private key in hex",
    ),
    (
        "deploy with a node URL without its scheme",
        ["deploy", "--rpc-url", "127.0.0.1:8545", "--admin", ADDRESS, "--log-operator", ADDRESS],
        {"MEDTRAIL_DEPLOYER_KEY": KEY},
        2,
        "--rpc-url must be an http:// or https:// URL",
    ),
    (
        "deploy to a node that is not running",
        [
            "deploy",
            "--rpc-url",
            "http://127.0.0.1:PORT",
            "--admin",
            ADDRESS,
            "--log-operator",
            ADDRESS,
        ],
        {"MEDTRAIL_DEPLOYER_KEY": KEY},
        1,
        "is unreachable",
    ),
    (
        "serve with a plain path as the database",
        ["serve", "--port", "PORT"],
        {"MEDTRAIL_DATABASE_URL": "/var/lib/medtrail/ledger.db"},
        2,
        "MEDTRAIL_DATABASE_URL must be a URL: sqlite:///path/to/file.db",
    ),
    (
        "serve with a MySQL URL",
        ["serve", "--port", "PORT"],
        {"MEDTRAIL_DATABASE_URL": "mysql://medtrail:secret@db/medtrail"},
        2,
        "names a 'mysql' database",
    ),
    (
        "serve in rpc mode without an operator key",
        ["serve", "--port", "PORT"],
        {"MEDTRAIL_MODE": "rpc", "MEDTRAIL_RPC_URL": "http://127.0.0.1:PORT"},
        2,
        "MEDTRAIL_OPERATOR_KEY is required in rpc mode",
    ),
    (
        "serve in rpc mode with the README's placeholder operator key",
        ["serve", "--port", "PORT"],
        {
            "MEDTRAIL_MODE": "rpc",
            "MEDTRAIL_RPC_URL": "http://127.0.0.1:PORT",
            "MEDTRAIL_OPERATOR_KEY": "0x…",
        },
        2,
        "MEDTRAIL_OPERATOR_KEY must be a 32-byte private key in hex",
    ),
    (
        "serve in rpc mode before deploying",
        ["serve", "--port", "PORT"],
        {
            "MEDTRAIL_MODE": "rpc",
            "MEDTRAIL_RPC_URL": "http://127.0.0.1:PORT",
            "MEDTRAIL_OPERATOR_KEY": KEY,
            "MEDTRAIL_DATABASE_URL": "sqlite:///ledger.db",
        },
        2,
        "run `medtrail deploy` first",
    ),
    (
        "serve on a busy port",
        ["serve", "--port", "BUSY"],
        {"MEDTRAIL_DATABASE_URL": "sqlite:///ledger.db"},
        2,
        "the port is in use",
    ),
    (
        "an API key in a MySQL database",
        ["api-key", "create", "--label", "regulator"],
        {"MEDTRAIL_DATABASE_URL": "mysql://db/medtrail"},
        2,
        "names a 'mysql' database",
    ),
    (
        "an institution's API key for the README's placeholder address",
        ["api-key", "create", "--role", "institution", "--institution", "0x…", "--label", "x"],
        {"MEDTRAIL_DATABASE_URL": "sqlite:///ledger.db"},
        2,
        "'0x…' is not an Ethereum address",
    ),
]


@pytest.mark.parametrize(
    ("args", "env", "status", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_a_mistake_is_one_clear_message_and_a_nonzero_exit(
    args: list[str],
    env: dict[str, str],
    status: int,
    words: str,
    closed_port: int,
    busy_port: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fill(text: str) -> str:
        return text.replace("PORT", str(closed_port)).replace("BUSY", str(busy_port))

    outcome = run(
        [fill(a) for a in args],
        {k: fill(v) for k, v in env.items()},
        tmp_path,
        monkeypatch,
        capsys,
    )
    assert outcome.status == status, outcome.output
    assert words in outcome.output, outcome.output
    assert "Traceback" not in outcome.output
    assert "serving on" not in outcome.output  # nothing claims to serve that does not
    assert "secret" not in outcome.output  # a URL's password is never repeated
    assert KEY[2:] not in outcome.output  # nor a key


def test_the_real_command_prints_no_traceback(tmp_path: Path) -> None:
    """The console script itself (not only :func:`main` in process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")}
    env["MEDTRAIL_DEPLOYER_KEY"] = KEY
    answer = subprocess.run(
        [sys.executable, "-m", "api.cli", *deploy_args(1, admin="0xAdmin…")],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert answer.returncode == 2, answer.stderr
    assert "is not an Ethereum address" in answer.stderr
    assert "Traceback" not in answer.stderr + answer.stdout


@pytest.mark.parametrize(
    ("given", "used"),
    [
        (
            "postgres://medtrail:pw@db:5432/medtrail",
            "postgresql+psycopg://medtrail:pw@db:5432/medtrail",
        ),
        ("postgresql://medtrail@db/medtrail", "postgresql+psycopg://medtrail@db/medtrail"),
        ("PostgreSQL+psycopg://db/medtrail", "postgresql+psycopg://db/medtrail"),
        ("sqlite:///.medtrail/x.db", "sqlite:///.medtrail/x.db"),
    ],
)
def test_the_usual_postgres_spellings_mean_medtrails_driver(given: str, used: str) -> None:
    assert Settings(database_url=given).database_url == used


@pytest.mark.parametrize(
    "given", ["ledger.db", "mysql://db/m", "postgresql+asyncpg://db/m", "sqlite://"]
)
def test_other_databases_are_refused_without_repeating_the_url(given: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(database_url=given + "?password=hunter22")
    assert "hunter22" not in str(caught.value.errors()[0]["msg"])


@pytest.mark.postgres
def test_api_key_create_takes_a_postgres_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``postgres://…`` as people write it reaches the real database."""
    from tests.support.postgres import fresh_database

    with fresh_database() as url:
        usual = "postgres://" + url.split("://", 1)[1]
        outcome = run(
            ["api-key", "create", "--label", "regulator"],
            {"MEDTRAIL_DATABASE_URL": usual},
            tmp_path,
            monkeypatch,
            capsys,
        )
    assert outcome.status == 0, outcome.output
    assert outcome.output.strip().splitlines()[-1].startswith("mtk_")
