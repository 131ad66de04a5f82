"""The README's "Against a real node" section, run as it is written (issue 14).

The commands are read out of the README (and ``make anvil``'s out of the Makefile), so this
test breaks when the docs drift from what works: ``make anvil``'s node, ``medtrail deploy``
with the documented keys, ``medtrail api-key create``, ``medtrail serve`` on SQLite, the
hospital quickstart to a confirmed proof; then the regulator's block of the README —
``GET /v1/deployment`` saved as the deployment file, ``medtrail-verify-trail`` on the
quickstart's record (from the API, and offline from its exported trail) and
``medtrail-audit-log`` on the log — each exiting 0.

Only what a second copy on one machine cannot share is changed: the ports (``8545`` and
``8000`` are replaced by free ones, the API's through ``MEDTRAIL_PORT``), the placeholders
(``mtk_…``: the key ``api-key create`` printed; ``0x<recordRef>``: the quickstart's record),
and the folder (a temporary "clone" with the project's ``.venv`` and ``docs``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.anvil import Anvil, anvil_available, free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

pytestmark = [
    pytest.mark.anvil,
    pytest.mark.skipif(not anvil_available(), reason="anvil is not installed: run `make node`"),
]

_BLOCK = re.compile(r"```sh\n(.*?)\n```", re.DOTALL)


def section(title: str) -> str:
    """The README's section under the heading ``title``, up to the next heading of any level
    at most as deep."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^(#+) {re.escape(title)}\s*$", text, flags=re.MULTILINE)
    assert match, f"the README has no section {title!r}"
    level = len(match[1])
    end = re.compile(rf"^#{{1,{level}}} ", flags=re.MULTILINE).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def blocks(title: str) -> list[str]:
    return _BLOCK.findall(section(title))


def commands(block: str) -> list[str]:
    """A block's shell lines, comments dropped and continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [line.split("  #", 1)[0].split(" # ", 1)[0].rstrip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.lstrip().startswith("#")]


class MakeAnvil(Anvil):
    """The node ``make anvil`` starts (its command from ``make -n anvil``), on a free port."""

    def __init__(self, line: str, port: int) -> None:
        super().__init__(port=port)
        argv = shlex.split(line)
        argv[0] = str(ROOT / argv[0])  # node_modules/.bin/anvil, from the repository root
        argv[argv.index("--port") + 1] = str(port)
        self._argv = argv

    def command(self) -> list[str]:
        return self._argv


def make_anvil_line() -> str:
    dry = subprocess.run(
        ["make", "-n", "--no-print-directory", "anvil"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = [ln for ln in dry.stdout.splitlines() if "bin/anvil " in ln]
    return line


class Shell:
    """A bash running a README block in the background (its own process group), its output
    collected as it comes."""

    def __init__(self, script: str, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.process.poll() is not None:
                self._reader.join(timeout=5)
                raise AssertionError(
                    f"the block exited ({self.process.returncode}) before printing "
                    f"{pattern!r}:\n{self.output}"
                )
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} within {timeout:g} s:\n{self.output}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._reader.join(timeout=5)


def get(url: str, key: str) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def wait_ready(url: str, shell: Shell, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if shell.process.poll() is not None:
            raise AssertionError(f"medtrail serve exited:\n{shell.output}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"the service at {url} was not ready within {timeout:g} s")


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A newcomer's checkout, as far as the README's commands reach: `.venv` and `docs`."""
    work = tmp_path / "clone"
    work.mkdir()
    for name in (".venv", "docs"):
        (work / name).symlink_to(ROOT / name)
    return work


def test_the_readmes_real_node_section_runs_as_written(clone: Path) -> None:
    node_blocks = blocks("Against a real node (anvil, geth, Besu, an L2)")
    assert len(node_blocks) == 3, "make anvil; deploy and serve; the quickstart"
    start_node, deploy_and_serve, quickstart = node_blocks
    assert commands(start_node) == ["make anvil"]
    rpc_port, api_port = free_port(), free_port()

    def local(text: str) -> str:
        return text.replace("127.0.0.1:8545", f"127.0.0.1:{rpc_port}").replace(
            "127.0.0.1:8000", f"127.0.0.1:{api_port}"
        )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDTRAIL_", "QUICKSTART"))}
    env["MEDTRAIL_PORT"] = str(api_port)  # the README's 8000: `medtrail serve`'s default port
    steps = commands(deploy_and_serve)
    assert steps[-1].startswith(".venv/bin/medtrail serve"), steps[-1]
    assert any(".venv/bin/medtrail deploy " in step for step in steps)
    assert any(".venv/bin/medtrail api-key create " in step for step in steps)
    api = f"http://127.0.0.1:{api_port}"

    line = make_anvil_line()
    assert "--block-time" in line  # blocks follow a checkpoint: it can be confirmed
    with MakeAnvil(line, rpc_port):
        service = Shell(local(deploy_and_serve), clone, env)
        try:
            key = service.wait_for(r"\b(mtk_\S+)", timeout=180)[1]
            wait_ready(api, service)

            # The hospital's quickstart, to a confirmed proof.
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", local(quickstart).replace("mtk_…", key)],
                cwd=clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert "status confirmed" in done.stdout

            # The regulator's tools, on the deployment file the API serves.
            (record,) = {e["recordRef"] for e in get(api + "/v1/events", key)["events"]}
            trail = get(f"{api}/v1/records/{record}/trail?limit=1000", key)
            (clone / "trail.json").write_text(json.dumps(trail))
            (regulator,) = blocks("For regulators: verify a trail, audit the log")[:1]
            script = local(regulator).replace("mtk_…", key).replace("0x<recordRef>", record)
            checked = subprocess.run(
                ["bash", "-euxo", "pipefail", "-c", script],
                cwd=clone,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
        finally:
            service.stop()
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tools = [line for line in checked.stderr.splitlines() if line.startswith("+ .venv/bin/")]
    assert [line.split()[1] for line in tools] == [
        ".venv/bin/medtrail-verify-trail",
        ".venv/bin/medtrail-verify-trail",
        ".venv/bin/medtrail-audit-log",
    ]
    assert checked.stdout.count("Result: OK") == 3, checked.stdout
    served = json.loads((clone / "deployment.json").read_text())
    assert served["chainId"] == 31337
