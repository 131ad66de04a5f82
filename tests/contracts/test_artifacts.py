"""The committed contract artifacts are exactly what the pinned compiler makes of the sources."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ledger.chain.artifacts import ALL_CONTRACT_NAMES, load_artifact

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")
SOLC_INSTALLED = (ROOT / "node_modules" / "solc" / "package.json").is_file()


@pytest.mark.node
@pytest.mark.skipif(
    NODE is None or not SOLC_INSTALLED, reason="needs Node.js and `npm ci` (the pinned solc)"
)
def test_committed_artifacts_match_a_fresh_build(tmp_path: Path) -> None:
    out, test_out = tmp_path / "artifacts", tmp_path / "test-artifacts"
    assert NODE is not None
    subprocess.run(
        [NODE, "contracts/build.mjs", "--out", str(out), "--test-out", str(test_out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    for built_dir, committed_dir in (
        (out, ROOT / "ledger" / "artifacts"),
        (test_out, ROOT / "tests" / "artifacts"),
    ):
        built = sorted(p.name for p in built_dir.glob("*.json"))
        committed = sorted(p.name for p in committed_dir.glob("*.json"))
        assert built == committed, "the set of contracts changed: run `make contracts`"
        for name in built:
            fresh = json.loads((built_dir / name).read_text())
            kept = json.loads((committed_dir / name).read_text())
            assert fresh == kept, f"{name} is stale: run `make contracts` and commit the result"


def test_every_contract_has_an_artifact_stamped_with_the_pinned_compiler() -> None:
    lock = json.loads((ROOT / "package-lock.json").read_text())
    solc_version = lock["packages"]["node_modules/solc"]["version"]
    for name in ALL_CONTRACT_NAMES:
        artifact = load_artifact(name)
        assert artifact.compiler_version.startswith(solc_version + "+commit.")
        assert artifact.bytecode.startswith("0x")
        assert len(artifact.bytecode) > 100
        assert any(item.get("type") == "constructor" for item in artifact.abi)
