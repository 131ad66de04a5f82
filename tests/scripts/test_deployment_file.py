"""A deployment file the tools cannot use is one clear line and exit status 2 (not a dump of
every field pydantic missed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scripts import audit_log, verify_trail

CASES = {
    "not JSON": ("{not json", "1 error(s), first: the file: Invalid JSON"),
    "another document": ('{"a": 1}', "7 error(s), first: chainId: Field required"),
    "a bad address": (
        '{"chainId": 1, "institutionRegistry": "0x12", "auditLog": "0x12", '
        '"consentRegistry": "0x12", "blockNumber": 0, "sourcesHash": "0x00"}',
        "first: institutionRegistry:",
    ),
}


def _run(tool: str, deployment: Path, tmp_path: Path) -> tuple[int, str]:
    if tool == "verify_trail":
        command = verify_trail.main
        args = ["0x" + "11" * 32, "--bundle", str(tmp_path / "trail.json")]
        args += ["--rpc-url", "http://127.0.0.1:9"]
    else:
        command = audit_log.main
        args = ["--offline", "--no-chain", "--mirror", str(tmp_path / "m.jsonl")]
    result = CliRunner().invoke(
        command, [*args, "--deployment-file", str(deployment)], env={"MEDTRAIL_API_URL": ""}
    )
    return result.exit_code, result.output


@pytest.mark.parametrize("tool", ["verify_trail", "audit_log"])
@pytest.mark.parametrize("case", CASES)
def test_a_malformed_deployment_file_is_one_clear_line(
    tool: str, case: str, tmp_path: Path
) -> None:
    text, words = CASES[case]
    path = tmp_path / "deployment.json"
    path.write_text(text)
    status, output = _run(tool, path, tmp_path)
    assert status == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {path} is not a medtrail deployment file (as `medtrail deploy` writes it or "
        f"GET /v1/deployment serves it): {errors[0].split('serves it): ', 1)[1]}"
    ]
    assert words in errors[0]
    assert "errors.pydantic.dev" not in output
    assert len(output.splitlines()) == 2  # the error, and "Result: NOT VERIFIED"


@pytest.mark.parametrize("tool", ["verify_trail", "audit_log"])
def test_a_missing_deployment_file_says_so(tool: str, tmp_path: Path) -> None:
    status, output = _run(tool, tmp_path / "nowhere.json", tmp_path)
    assert status == 2, output
    assert "nowhere.json not found" in output
