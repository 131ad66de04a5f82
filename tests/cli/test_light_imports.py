"""What each entry point imports: the read path and the regulator's tools never import the
service's dependencies (they install without them: .ci/run proves it in a fresh venv), and
`--help` imports nothing it does not show (`medtrail wallet --help` took ~8 s importing web3
and eth-tester for nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: The service's dependencies (the `service` extra): never imported by the light path.
SERVICE = ("web3", "eth_tester", "eth", "fastapi", "starlette", "sqlalchemy", "sqlmodel",
           "alembic", "psycopg", "uvicorn", "prometheus_client")  # fmt: skip


def _imported(code: str) -> set[str]:
    """The top-level modules imported by running ``code`` in a fresh interpreter."""
    probe = (
        "import sys, json\n"
        f"{code}\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _help(module: str, function: str, *args: str) -> str:
    return (
        f"sys.argv = ['x', {', '.join(repr(a) for a in args)}]\n"
        f"from {module} import {function}\n"
        f"try:\n    {function}()\nexcept SystemExit:\n    pass"
    )


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(
            "import ledger.chain.reader, ledger.trail, ledger.wire, ledger.audit", id="read-path"
        ),
        pytest.param("import wallets.service, wallets.cli", id="wallet"),
        pytest.param("import scripts.verify_trail, scripts.audit_log", id="tools"),
    ],
)
def test_the_read_path_imports_none_of_the_services_dependencies(code: str) -> None:
    assert _imported(code).isdisjoint(SERVICE)


@pytest.mark.parametrize(
    "code",
    [
        pytest.param(_help("api.cli", "main", "wallet", "--help"), id="medtrail wallet --help"),
        pytest.param(_help("scripts.verify_trail", "main", "--help"), id="verify_trail --help"),
        pytest.param(_help("scripts.audit_log", "main", "--help"), id="audit_log --help"),
    ],
)
def test_help_imports_neither_the_chain_libraries_nor_the_wallets(code: str) -> None:
    imported = _imported(code)
    assert imported.isdisjoint(SERVICE)
    assert "eth_account" not in imported  # seconds of py_ecc for a help text
    assert "eth_abi" not in imported  # imported by the reader on its first call


def test_a_service_command_without_the_service_extra_says_how_to_install_it() -> None:
    """In the light install `medtrail serve` says which extra it needs (exit 2), rather than
    a traceback: here fastapi is hidden from the interpreter as the light install lacks it."""
    probe = (
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'fastapi':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "sys.argv = ['medtrail', 'serve']\n"
        "from api.cli import main\n"
        "main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'medtrail[service]'" in done.stderr
    assert "fastapi is missing" in done.stderr
    assert "Traceback" not in done.stderr
