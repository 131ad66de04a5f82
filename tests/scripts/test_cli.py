"""The tools as commands (``python scripts/… ``), against anvil over JSON-RPC and the real API
served by uvicorn on 127.0.0.1: help, output formats, and the exit statuses — 0 nothing
wrong, 1 findings, 2 could not verify (never a false "all good")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner

from api.app import bootstrap_admin_key, create_app
from ledger.service import Ledger
from tests.scripts.support import REPO, export_trail, rewrite_body, tell_story, write_mirror
from tests.support.anvil import Anvil, free_port
from tests.support.ledgers import Env

EXIT_OK, EXIT_FINDINGS, EXIT_UNVERIFIED = 0, 1, 2


def _start(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")}
    clean.update(env)
    return subprocess.Popen(
        [sys.executable, f"scripts/{name}.py", *args],
        cwd=REPO,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def tool(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python scripts/<name>.py args…`` from the repository root, with no MEDTRAIL_*
    variable of the developer's leaking in (only those given)."""
    return _finish(_start(name, list(args), env))


def tools(name: str, runs: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Several runs of a tool at once (each one pays the interpreter's start)."""
    started = {case: _start(name, args, {}) for case, args in runs.items()}
    return {case: _finish(process) for case, process in started.items()}


@contextmanager
def serve(ledger: Ledger) -> Iterator[tuple[str, str]]:
    """The API on a uvicorn thread at 127.0.0.1; yields (url, regulator key)."""
    key = bootstrap_admin_key(ledger)
    port = free_port()
    config = uvicorn.Config(
        create_app(ledger), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def chain_args(env: Env, anvil: Anvil, tmp_path: Path) -> list[str]:
    return ["--rpc-url", anvil.url, "--deployment-file", str(tmp_path / "deployment.json")]


# --------------------------------------------------------------------------- help


def test_each_tool_explains_itself() -> None:
    helps = {name: _start(name, ["--help"], {}) for name in ("verify_trail", "audit_log")}
    for process in helps.values():
        done = _finish(process)
        assert done.returncode == 0, done.stderr
        _check_help(done.stdout)


def test_the_tools_are_installed_as_commands() -> None:
    """`pip install` puts medtrail-verify-trail and medtrail-audit-log next to the Python that
    runs them: the same commands as `python scripts/<tool>.py`."""
    bin_dir = Path(sys.executable).parent
    for command, module in (
        ("medtrail-verify-trail", "verify_trail"),
        ("medtrail-audit-log", "audit_log"),
    ):
        done = subprocess.run(
            [str(bin_dir / command), "--help"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        _check_help(done.stdout)
        assert done.stdout == _finish(_start(module, ["--help"], {})).stdout.replace(
            f"{module}.py", command
        )


def _check_help(text: str) -> None:
    for words in ("Exit status", "0  verified, nothing wrong", "--json", "--fhir", "--rpc-url"):
        assert words in text
    assert "MEDTRAIL_API_URL" in text


# --------------------------------------------------------------------------- verify_trail


@pytest.fixture
def story_bundle(anvil_env: Env, tmp_path: Path) -> tuple[Env, bytes, Path]:
    story = tell_story(anvil_env)
    path = tmp_path / "trail.json"
    path.write_text(json.dumps(export_trail(anvil_env.ledger, story.record)))
    return anvil_env, story.record, path


@pytest.mark.anvil
def test_a_clean_exported_trail_exits_0(
    story_bundle: tuple[Env, bytes, Path], scripts_anvil: Anvil, tmp_path: Path
) -> None:
    env, record, bundle = story_bundle
    args = ["0x" + record.hex(), "--bundle", str(bundle), *chain_args(env, scripts_anvil, tmp_path)]
    from scripts import verify_trail

    table = CliRunner().invoke(verify_trail.main, args)  # the default output, in process
    assert table.exit_code == EXIT_OK, table.output
    assert "Result: OK: nothing wrong (1 item(s) for review) — 7 event(s)" in table.output
    assert "REVIEW" in table.output
    machine = tool("verify_trail", *args, "--json")
    assert machine.returncode == EXIT_OK
    report = json.loads(machine.stdout)
    assert report["ok"] is True
    assert report["summary"]["reviews"] == 1
    assert len(report["events"]) == 7


@pytest.mark.anvil
def test_the_deployment_the_api_serves_is_a_deployment_file(
    story_bundle: tuple[Env, bytes, Path], scripts_anvil: Anvil, tmp_path: Path
) -> None:
    """`GET /v1/deployment` saved as it is served (curl -o) is what --deployment-file takes:
    both tools accept it (it used to be refused: camelCase on the wire, snake_case in files,
    no sourcesHash served)."""
    import httpx

    env, record, bundle = story_bundle
    with serve(env.ledger) as (url, _key):
        served = httpx.get(f"{url}/v1/deployment").content
    saved = tmp_path / "served.json"
    saved.write_bytes(served)
    assert json.loads(served)["sourcesHash"] == env.ledger.deployment.sources_hash
    chain = ["--rpc-url", scripts_anvil.url, "--deployment-file", str(saved)]
    runs = {
        "verify": ("verify_trail", ["0x" + record.hex(), "--bundle", str(bundle), *chain]),
        "audit": (
            "audit_log",
            ["--offline", "--mirror", str(write_mirror(env.ledger, tmp_path / "m.jsonl")),
             "--state", str(tmp_path / "state.json"), *chain],
        ),
    }  # fmt: skip
    for case, (name, args) in runs.items():
        done = tool(name, *args)
        assert done.returncode == EXIT_OK, (case, done.stdout, done.stderr)
        assert "Result: OK" in done.stdout, case


@pytest.mark.anvil
def test_a_tampered_trail_exits_1(
    story_bundle: tuple[Env, bytes, Path], scripts_anvil: Anvil, tmp_path: Path
) -> None:
    env, record, bundle = story_bundle
    rx = json.loads(bundle.read_text())["events"][1]["bundle"]["event"]["event"]
    assert rx["fills"] == 2
    from ledger.events import PrescriptionIssued

    rewrite_body(env.ledger, PrescriptionIssued.model_validate(rx), fills=9)
    bundle.write_text(json.dumps(export_trail(env.ledger, record)))
    done = tool(
        "verify_trail",
        "0x" + record.hex(),
        "--bundle",
        str(bundle),
        "--json",
        *chain_args(env, scripts_anvil, tmp_path),
    )
    assert done.returncode == EXIT_FINDINGS, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert "signer-mismatch" in report["summary"]["counts"]["error"]


@pytest.mark.anvil
def test_a_trail_that_cannot_be_verified_exits_2(
    story_bundle: tuple[Env, bytes, Path], scripts_anvil: Anvil, tmp_path: Path
) -> None:
    env, record, bundle = story_bundle
    ref = "0x" + record.hex()
    unreachable = f"http://127.0.0.1:{free_port()}"
    chain = chain_args(env, scripts_anvil, tmp_path)
    deployment = chain[2:]
    runs = {
        "chain unreachable": [ref, "--bundle", str(bundle), "--rpc-url", unreachable, *deployment],
        "API unreachable": [ref, "--api", unreachable, *chain],
        "not a bundle": [ref, "--bundle", str(tmp_path / "deployment.json"), *chain],
    }
    for case, done in tools("verify_trail", runs).items():
        assert done.returncode == EXIT_UNVERIFIED, (case, done.stdout, done.stderr)
        assert "Result: OK" not in done.stdout, case
        assert "NOT VERIFIED" in done.stderr, case


@pytest.mark.anvil
def test_every_reason_not_to_verify_exits_2(
    story_bundle: tuple[Env, bytes, Path], scripts_anvil: Anvil, tmp_path: Path
) -> None:
    """The same command in process (click's runner): the exit status is the command's."""
    from scripts import verify_trail

    env, record, bundle = story_bundle
    ref = "0x" + record.hex()
    deployment = env.ledger.deployment
    cases: dict[str, list[str]] = {
        "no contracts named": [ref, "--bundle", str(bundle), "--rpc-url", scripts_anvil.url],
        "no chain named": [ref, "--bundle", str(bundle), "--audit-log", deployment.audit_log],
        "not medtrail's contracts": [
            ref,
            "--bundle",
            str(bundle),
            "--rpc-url",
            scripts_anvil.url,
            "--audit-log",
            env.hospital.address,
            "--consent-registry",
            deployment.consent_registry,
            "--institution-registry",
            deployment.institution_registry,
        ],
        "another chain id": [
            ref,
            "--bundle",
            str(bundle),
            *chain_args(env, scripts_anvil, tmp_path),
            "--chain-id",
            "1",
        ],
        "another record's bundle": [
            "0x" + "ab" * 32,
            "--bundle",
            str(bundle),
            *chain_args(env, scripts_anvil, tmp_path),
        ],
        "a bad record reference": ["0x1234", "--bundle", str(bundle)],
        "no trail source": [ref, *chain_args(env, scripts_anvil, tmp_path)],
        "a missing bundle file": [ref, "--bundle", str(tmp_path / "nope.json")],
    }
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MEDTRAIL_")}
    runner = CliRunner()
    for case, args in cases.items():
        result = runner.invoke(verify_trail.main, args, env=unset)
        assert result.exit_code == EXIT_UNVERIFIED, (case, result.output)
        assert "Result: OK" not in result.output, case


@pytest.mark.anvil
def test_verify_trail_reads_the_api_and_its_configuration_from_the_environment(
    story_bundle: tuple[Env, bytes, Path], scripts_anvil: Anvil, tmp_path: Path
) -> None:
    env, record, _bundle = story_bundle
    with serve(env.ledger) as (url, key):
        config = {
            "MEDTRAIL_API_URL": url,
            "MEDTRAIL_API_KEY": key,
            "MEDTRAIL_RPC_URL": scripts_anvil.url,
            "MEDTRAIL_DEPLOYMENT_FILE": str(tmp_path / "deployment.json"),
            "MEDTRAIL_OPERATOR_ADDRESS": env.ledger.operator.address,
        }
        done = tool("verify_trail", "0x" + record.hex(), "--json", **config)
        assert done.returncode == EXIT_OK, done.stderr
        assert json.loads(done.stdout)["summary"]["events"] == 7
        from scripts import verify_trail

        refused = CliRunner().invoke(
            verify_trail.main, ["0x" + record.hex()], env={**config, "MEDTRAIL_API_KEY": "nope"}
        )
        assert refused.exit_code == EXIT_UNVERIFIED
        assert "401" in refused.output


# --------------------------------------------------------------------------- audit_log


@pytest.mark.anvil
def test_audit_log_exits_0_then_1_then_2(
    anvil_env: Env, scripts_anvil: Anvil, tmp_path: Path
) -> None:
    story = tell_story(anvil_env)
    files = ["--mirror", str(tmp_path / "m.jsonl"), "--state", str(tmp_path / "s.json")]
    with serve(anvil_env.ledger) as (url, key):
        common = [
            "--api",
            url,
            "--api-key",
            key,
            *files,
            *chain_args(anvil_env, scripts_anvil, tmp_path),
        ]
        clean = tool("audit_log", *common, "--page-size", "2", "--progress")
        assert clean.returncode == EXIT_OK, clean.stderr + clean.stdout
        assert "Result: OK" in clean.stdout
        assert "mirroring the log" in clean.stderr  # the progress bar
        assert json.loads((tmp_path / "s.json").read_text())["treeSize"] == 7

        rewrite_body(anvil_env.ledger, story.events[0].event, action=3)
        tampered = tool("audit_log", *common, "--json", "--mirror", str(tmp_path / "m2.jsonl"))
        assert tampered.returncode == EXIT_FINDINGS, tampered.stderr
        counts = json.loads(tampered.stdout)["summary"]["counts"]["error"]
        assert counts["signer-mismatch"] == 1
        assert counts["checkpoint-root-mismatch"] == 1

    gone = tool("audit_log", *common)  # the API is down now
    assert gone.returncode == EXIT_UNVERIFIED
    assert "could not read the API" in gone.stderr


@pytest.mark.anvil
def test_audit_log_exports_fhir(anvil_env: Env, scripts_anvil: Anvil, tmp_path: Path) -> None:
    tell_story(anvil_env)
    files = ["--mirror", str(tmp_path / "m.jsonl"), "--state", str(tmp_path / "s.json")]
    with serve(anvil_env.ledger) as (url, key):
        done = tool(
            "audit_log",
            "--api",
            url,
            "--api-key",
            key,
            "--fhir",
            *files,
            *chain_args(anvil_env, scripts_anvil, tmp_path),
        )
    assert done.returncode == EXIT_OK, done.stderr
    bundle: dict[str, Any] = json.loads(done.stdout)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    resources = [entry["resource"] for entry in bundle["entry"]]
    types = [r["type"]["code"] for r in resources if r["resourceType"] == "AuditEvent"]
    assert types[0] == "110101"  # the audit itself: "Audit Log Used"
    assert "110110" in types  # the emergency access listed for review
