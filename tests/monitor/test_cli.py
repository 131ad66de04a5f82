"""medtrail-monitor's command line: what it refuses before it starts (usage errors exit 2
with one message, never a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scripts.monitor.cli import main

BASE = ["--api", "http://127.0.0.1:9", "--rpc-url", "http://127.0.0.1:9"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--webhook", "http://127.0.0.1:9/hook"], {}, "--webhook needs --webhook-secret"),
        ([], {}, "the console needs --console-token"),
        (["--console-token", "short"], {}, "at least 16 characters"),
        (["--console", "nowhere", "--console-token", "x" * 20], {}, "give HOST:PORT"),
        (["--cache", "-1", "--console", "off"], {}, "Invalid value for '--cache'"),
    ],
)
def test_refused_before_it_starts(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    result = CliRunner().invoke(
        main,
        [*BASE, "--state", str(tmp_path / "m.db"), *args],
        env={"MEDTRAIL_MONITOR_TOKEN": "", **env},
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_no_chain_endpoint_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--api", "http://127.0.0.1:9", "--console", "off"])
    assert result.exit_code == 2
    assert "--rpc-url" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ('["a list"]', "is not a JSON object of supervisor name to token"),
        ('{"Dr Wang": "' + "x" * 20 + '"}', "have the same console token"),
    ],
)
def test_a_supervisors_file_that_cannot_be_used_is_refused(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "supervisors.json"
    path.write_text(content)
    result = CliRunner().invoke(
        main,
        [
            *(*BASE, "--state", str(tmp_path / "m.db")),
            *("--console-token", "x" * 20, "--supervisors", str(path)),
        ],
        env={"MEDTRAIL_MONITOR_TOKEN": ""},
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
