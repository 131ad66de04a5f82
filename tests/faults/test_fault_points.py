"""The fault suite's kill switch lives in test code only (tests/support/faulty_anchor.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ledger.service
from ledger.anchor import AnchorWorker
from tests.support.faulty_anchor import POINTS, FaultyAnchorWorker, arm

ROOT = Path(__file__).resolve().parents[2]


def test_production_code_has_no_fault_hook() -> None:
    hooks = [
        f"{source.relative_to(ROOT)}:{number}"
        for package in ("ledger", "api", "wallets", "scripts")
        for source in sorted((ROOT / package).rglob("*.py"))
        for number, line in enumerate(source.read_text().splitlines(), 1)
        if "MEDTRAIL_FAULT" in line or "SIGKILL" in line
    ]
    assert hooks == []


def test_every_fault_point_wraps_a_step_of_the_real_worker() -> None:
    """A renamed step would leave its fault point dead: each override must override."""
    overridden = {
        name
        for name, value in vars(FaultyAnchorWorker).items()
        if callable(value) and not name.startswith("__") and name != "_hit"
    }
    assert overridden == {"_start", "_advance_index", "_broadcast", "_adopt", "_mark_anchored"}
    assert all(callable(getattr(AnchorWorker, name, None)) for name in overridden)


def test_arming(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger.service, "AnchorWorker", AnchorWorker)
    assert arm({}) is None
    assert ledger.service.AnchorWorker is AnchorWorker  # type: ignore[attr-defined]
    with pytest.raises(SystemExit, match="not one of"):
        arm({"MEDTRAIL_FAULT": "after-everything"})
    assert ledger.service.AnchorWorker is AnchorWorker  # type: ignore[attr-defined]
    for point in POINTS:
        assert arm({"MEDTRAIL_FAULT": point}) == point
        armed = ledger.service.AnchorWorker  # type: ignore[attr-defined]
        assert issubclass(armed, FaultyAnchorWorker)
        assert armed.fault == point
