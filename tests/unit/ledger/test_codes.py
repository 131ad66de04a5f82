"""ledger.codes: one table of every code, and everything that must agree with it.

The table is the single source of each code's description, HTTP status and severity: these
tests fail when an error class raises a code the table lacks (or answers with another
status), when a finding is reported with a code or severity the table does not give it, when
``GET /problems`` or the findings catalogue of docs/regulator.md differ from the table.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from types import ModuleType

import pytest

import api
import ledger
import scripts
import wallets
from api.problems import REVERT_STATUS, catalogue
from ledger.codes import (
    CODES,
    FINDINGS_BEGIN,
    FINDINGS_END,
    REVERTS,
    Code,
    findings_markdown,
    regulator_doc,
    revert_status,
    severity_of,
)
from ledger.errors import LedgerError
from wallets.errors import WalletError

ROOT = Path(__file__).resolve().parents[3]
REGULATOR_DOC = ROOT / "docs" / "regulator.md"


def _modules() -> Iterator[ModuleType]:
    """Every module of the ledger, api, wallets and scripts packages (migrations aside)."""
    for package in (ledger, api, wallets, scripts):
        yield package
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if ".migrations" not in info.name:
                yield importlib.import_module(info.name)


MODULES = list(_modules())


def _subclasses(root: type) -> list[type]:
    found, stack = [], [root]
    while stack:
        cls = stack.pop()
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return found


ERRORS = _subclasses(LedgerError)
WALLET_ERRORS = _subclasses(WalletError)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------- the table itself


def test_codes_are_stable_kebab_case_and_described() -> None:
    for code, entry in CODES.items():
        assert entry.code == code
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", code), code
        assert entry.description.strip() == entry.description, code
        assert entry.title, code
        assert entry.reported_by, f"{code} is used by nobody"
        assert entry.status is None or 400 <= entry.status < 600, code
        assert (entry.severity is None) == (not entry.found_by), code


def test_title_is_the_first_clause_without_asides() -> None:
    entry = Code("x", "A thing (aside) is wrong: more. And more.", status=400)
    assert entry.title == "A thing is wrong"
    assert CODES["fills-exceeded"].title == "A dispense goes beyond the prescription's fills"


def test_reported_by() -> None:
    assert CODES["fills-exceeded"].reported_by == ("refusal", "finding")
    assert CODES["pending"].reported_by == ("finding",)
    assert CODES["forbidden"].reported_by == ("refusal",)
    assert CODES["wrong-passphrase"].reported_by == ("wallet",)
    assert CODES["api-error"].reported_by == ("refusal", "wallet")
    assert CODES["cannot-verify"].reported_by == ("tool",)


def test_severity_of() -> None:
    assert severity_of("emergency-access") == "review"
    assert severity_of("signer-mismatch") == "error"
    with pytest.raises(KeyError, match="not a finding"):
        severity_of("forbidden")
    with pytest.raises(KeyError):
        severity_of("no-such-code")


# --------------------------------------------------------------------------- refusals


def _is_tool(cls: type) -> bool:
    """An error of the regulator's tools (scripts/): an exit status, not an HTTP answer."""
    return cls.__module__.split(".")[0] == "scripts"


@pytest.mark.parametrize("cls", ERRORS, ids=_name)
def test_every_error_class_has_its_code_and_status_in_the_table(cls: type[LedgerError]) -> None:
    entry = CODES.get(cls.code)
    assert entry is not None, f"{_name(cls)} raises {cls.code!r}, which ledger.codes lacks"
    assert cls.__doc__, _name(cls)
    if _is_tool(cls):
        assert entry.tool, f"{cls.code!r} is a tool's error: mark it so in the table"
        return
    assert entry.status is not None, f"{cls.code!r} is raised but has no HTTP status"
    assert cls.status == entry.status, f"{_name(cls)}: status {cls.status}, table {entry.status}"


def test_every_status_in_the_table_is_raised_by_some_class() -> None:
    raised = {cls.code for cls in ERRORS if not _is_tool(cls)}
    answered = {code for code, entry in CODES.items() if entry.status is not None}
    assert answered - raised == set(), "codes /problems lists that nothing raises"


def test_classes_take_status_and_description_from_the_table() -> None:
    from ledger.rules import FillAlreadyDispensed, RuleViolation
    from ledger.siwe import SiweMalformedError

    assert (FillAlreadyDispensed.status, RuleViolation.status) == (409, 422)
    assert SiweMalformedError.status == 400
    assert FillAlreadyDispensed.__doc__ == CODES["fill-already-dispensed"].description
    assert FillAlreadyDispensed("x").diagnostics() == {
        "code": "fill-already-dispensed",
        "detail": "x",
    }


def test_problems_catalogue_is_the_table() -> None:
    kinds = catalogue()
    assert set(kinds) == {code for code, entry in CODES.items() if entry.status is not None}
    for code, kind in kinds.items():
        entry = CODES[code]
        assert (kind.status, kind.title) == (entry.status, entry.title)
        assert kind.description.startswith(entry.description)


def test_revert_statuses_come_from_the_table() -> None:
    assert {name: revert.status for name, revert in REVERTS.items()} == REVERT_STATUS
    assert revert_status("InvalidValidityWindow") == 422
    assert revert_status("GranteeNotActive") == 409
    assert revert_status("CheckpointNotLarger") == 409  # not relayed: a conflict by default
    description = catalogue()["contract-reverted"].description
    for name, revert in REVERTS.items():
        assert f"{name} → {revert.status}" in description


def test_reverts_are_the_contracts_errors() -> None:
    from ledger.chain.artifacts import load_artifact

    for revert in REVERTS.values():
        abi = load_artifact(revert.contract).abi
        errors = {item["name"] for item in abi if item.get("type") == "error"}
        assert revert.error in errors, f"{revert.contract} has no error {revert.error}"


# --------------------------------------------------------------------------- wallet errors


@pytest.mark.parametrize("cls", WALLET_ERRORS, ids=_name)
def test_every_wallet_error_is_in_the_table(cls: type[WalletError]) -> None:
    entry = CODES.get(cls.code)
    assert entry is not None, f"{_name(cls)} exits with {cls.code!r}, which ledger.codes lacks"
    assert entry.wallet, f"{cls.code!r} is a wallet error: mark it so in the table"
    assert cls.__doc__, _name(cls)


# --------------------------------------------------------------------------- findings


def _finding_enums() -> list[type[StrEnum]]:
    """The enums the verifiers name their finding codes with (``FindingCode``,
    ``AuditCode``…): every StrEnum of the ledger whose name ends with ``Code``."""
    enums = {
        value
        for module in MODULES
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, StrEnum)
        and value.__name__.endswith("Code")
        and value.__module__.startswith("ledger.")
    }
    return sorted(enums, key=_name)


def test_every_finding_code_is_in_the_table() -> None:
    enums = _finding_enums()
    assert len(enums) >= 2  # FindingCode and AuditCode, wherever they live
    for enum in enums:
        for member in enum:
            entry = CODES.get(member.value)
            assert entry is not None, f"{_name(enum)}.{member.name}: {member.value!r} missing"
            assert entry.severity is not None, f"{member.value!r} has no severity"
            assert member.name.lower().replace("_", "-") == member.value


def test_every_finding_in_the_table_is_reported_by_something() -> None:
    from ledger.rules import RuleViolation

    reported = {member.value for enum in _finding_enums() for member in enum}
    reported |= {cls.code for cls in _subclasses(RuleViolation)}
    findings = {code for code, entry in CODES.items() if entry.severity is not None}
    assert findings - reported == set()


_FINDING = re.compile(
    r"Finding\(\s*(?:\w+Code\.(?P<member>[A-Z_]+)|\"(?P<code>[a-z-]+)\"),\s*"
    r"\"(?P<severity>error|review|warning)\""
)


def _reported_severities() -> list[tuple[str, str, str]]:
    """``(file, code, severity)`` of every finding made with a literal code and severity."""
    found = set()
    for package in ("ledger", "api", "wallets", "scripts"):
        for source in sorted((ROOT / package).rglob("*.py")):
            for match in _FINDING.finditer(source.read_text()):
                member, code = match["member"], match["code"]
                name = code or member.lower().replace("_", "-")
                found.add((str(source.relative_to(ROOT)), name, match["severity"]))
    return sorted(found)


#: Findings made today with another severity than the table's, each with why (strict xfail:
#: the test fails when it is fixed, so the entry is removed with the fix).
_KNOWN_DRIFT: dict[tuple[str, str, str], str] = {}


def _severity_cases() -> list[object]:
    cases: list[object] = []
    for case in _reported_severities():
        reason = _KNOWN_DRIFT.get(case)
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        cases.append(pytest.param(*case, marks=marks, id=":".join(case)))
    return cases


def test_the_scan_sees_the_verifiers_findings() -> None:
    codes = {code for _file, code, _severity in _reported_severities()}
    assert {"digest-mismatch", "emergency-access", "pending", "split-view"} <= codes


@pytest.mark.parametrize(("source", "code", "severity"), _severity_cases())
def test_findings_are_reported_with_the_tables_severity(
    source: str, code: str, severity: str
) -> None:
    entry = CODES.get(code)
    assert entry is not None, f"{source} reports {code!r}, which ledger.codes lacks"
    assert entry.severity == severity, f"{source} reports {code!r} as {severity}"


# --------------------------------------------------------------------------- the regulator's doc


def test_the_regulators_findings_catalogue_is_generated_from_the_table() -> None:
    text = REGULATOR_DOC.read_text(encoding="utf-8")
    assert regulator_doc(text) == text, "run `python -m ledger.codes` to regenerate it"
    section = text[text.index(FINDINGS_BEGIN) : text.index(FINDINGS_END)]
    for code, entry in CODES.items():
        assert (f"| `{code}` |" in section) == (entry.severity is not None), code


def test_findings_markdown() -> None:
    table = findings_markdown(
        [
            Code("b-thing", "B | pipe.", severity="warning", found_by=frozenset({"log"})),
            Code("a-thing", "A.", severity="error", found_by=frozenset({"trail", "log"})),
            Code("c-thing", "C.", status=400),
        ]
    )
    assert table == (
        "| code | severity | found by | what it means |\n"
        "|---|---|---|---|\n"
        "| `a-thing` | error | both | A. |\n"
        "| `b-thing` | warning | log | B \\| pipe. |\n"
    )


def test_regulator_doc_needs_its_markers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no generated findings section"):
        regulator_doc("# no markers\n")
    path = tmp_path / "doc.md"
    path.write_text(f"intro\n{FINDINGS_BEGIN}\nstale\n{FINDINGS_END}\nrest\n")
    from ledger.codes import main

    assert main([str(path)]) == 0
    assert (
        path.read_text() == f"intro\n{FINDINGS_BEGIN}\n{findings_markdown()}{FINDINGS_END}\nrest\n"
    )
