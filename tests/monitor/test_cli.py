"""medtrail-monitor's command line: what it refuses before it starts (usage errors exit 2
with one message, never a traceback)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scripts.monitor.cli import main
from scripts.monitor.store import lock_state

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
        ('{"supervisor": "' + "y" * 20 + '"}', "is the console's own supervisor"),
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


#: Enough to get past the arguments' checks (nothing listens there).
CONTRACTS = [
    *("--institution-registry", "0x" + "11" * 20, "--audit-log", "0x" + "22" * 20),
    *("--consent-registry", "0x" + "33" * 20, "--chain-id", "31337"),
]


def _holder(state: Path) -> subprocess.Popen[str]:
    """Another process holding the state's lock as a running monitor does (it says "locked"
    once it holds it)."""
    code = (
        "import sys, time; from pathlib import Path; "
        "from scripts.monitor.store import lock_state; "
        "held = lock_state(Path(sys.argv[1])); print('locked', flush=True); time.sleep(120)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(state)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_monitor_on_the_same_state_is_refused_until_the_first_is_killed(
    tmp_path: Path,
) -> None:
    state = tmp_path / "office" / "m.db"
    holder = _holder(state)
    try:
        result = CliRunner().invoke(
            main, [*BASE, *CONTRACTS, "--state", str(state), "--console", "off", "--once"]
        )
        assert result.exit_code == 2, result.output
        assert f"another monitor is using the state {state}" in result.output
        assert "Traceback" not in result.output
        assert not state.exists()  # refused before opening it
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    # The kernel released the lock of the process killed: a restart takes it.
    with lock_state(state):
        assert (tmp_path / "office" / "m.db.lock").read_text() == f"{os.getpid()}\n"
    # ... and released it when this process let it go: the monitor starts (then finds no
    # chain at its address).
    result = CliRunner().invoke(
        main, [*BASE, *CONTRACTS, "--state", str(state), "--console", "off", "--once"]
    )
    assert result.exit_code == 2
    assert "another monitor" not in result.output
