"""Plug-in supervision rules, as docs/regulator.md shows a province writing one: loaded by
``--rules module:function``, run with the built-in ones; a bad plug-in is refused clearly."""

from __future__ import annotations

import hashlib
import hmac
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.supervision import ObservedEvent, SupervisionSettings
from scripts._common import ToolError
from scripts.monitor.alerts import sign
from scripts.monitor.rules import load_rules
from tests.unit.ledger.test_rules import CUSTODIAN, NOW, prescription

DOC = Path(__file__).resolve().parents[2] / "docs" / "regulator.md"


def _python_block(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)\n\s*```", DOC.read_text(), re.DOTALL)
    (block,) = [b for b in blocks if containing in b]
    return "\n".join(line.removeprefix("  ") for line in block.splitlines())


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "office_rules.py").write_text(_python_block("night_prescriptions"))
    (tmp_path / "bad_rules.py").write_text(
        "from ledger.supervision import Rule\n"
        "def nothing(settings):\n    return 42\n"
        "def taken(settings):\n"
        "    return Rule('digest-mismatch', 'error', 'Mine.', on_event=lambda e, m: [])\n"
    )
    sys.path.insert(0, str(tmp_path))
    yield tmp_path
    sys.path.remove(str(tmp_path))
    for name in ("office_rules", "bad_rules"):
        sys.modules.pop(name, None)


def test_the_documented_plugin_runs_beside_the_builtin_rules(plugin_dir: Path) -> None:
    rules = load_rules(
        SupervisionSettings(), ["office_rules:night_prescriptions"], entry_point_rules=False
    )
    assert rules.codes == (
        "prescription-without-access",
        "emergency-access-rate",
        "checkpoint-late",
        "night-prescription",
    )
    night = NOW - NOW % 86_400 + 3 * 3600
    event = prescription(institution=CUSTODIAN, occurredAt=night)
    memory: dict[str, dict[str, object]] = {}
    found = rules.on_event(
        ObservedEvent(0, event, event.recordRef, night), lambda code: memory.setdefault(code, {})
    )
    assert sorted(str(f.code) for f in found) == [
        "night-prescription",
        "prescription-without-access",
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("office_rules", "module:function"),
        ("no_such_module:f", "cannot import"),
        ("office_rules:absent", "no function"),
        ("bad_rules:nothing", "made no Rule"),
        ("bad_rules:taken", "one of medtrail's own codes"),
    ],
)
def test_a_bad_plugin_is_refused_clearly(plugin_dir: Path, name: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        load_rules(SupervisionSettings(), [name], entry_point_rules=False)


def test_the_documented_webhook_check_accepts_the_monitors_signature() -> None:
    namespace: dict[str, object] = {}
    exec(_python_block("def genuine"), namespace)
    genuine = namespace["genuine"]
    body, secret = b'{"id": 1}', b"s3cret"
    assert genuine(body, sign(secret, body), secret)  # type: ignore[operator]
    assert not genuine(body + b" ", sign(secret, body), secret)  # type: ignore[operator]
    assert sign(secret, body) == "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
