"""CSV export of a verification report, for spreadsheets (not named ``_csv``: run as
``python scripts/….py``, the folder comes first on the path and would hide the standard
library's ``_csv``).

One row per event (every event of the trail, or of the whole log, in log order) with its
findings, then one row per finding about the trail or the log as a whole. The columns, in
this order (:data:`COLUMNS`; documented in docs/regulator.md):

===================== =============================================================
``row``               ``event``, or ``log`` for a finding about the trail or log as a whole
``leafIndex``         the event's position in the log (a log finding: the leaf it names)
``eventId``           ``0x`` + 64 hex digits
``type``              ``RecordAccess``, ``PrescriptionIssued``, ``PrescriptionDispensed``,
                      ``InsuranceClaim``, ``InsurancePayment``
``occurredAt``        ISO 8601, UTC (``2026-01-31T12:00:00Z``)
``institution``       the signing institution's address
``institutionName``   its name in the chain's registry
``patient``           the patient's wallet address
``recordRef``         the opaque record reference (accesses and prescriptions)
``summary``           what happened, in a few words
``consent``           the consent status the operator recorded
``anchoredIn``        size of the first on-chain checkpoint holding it, or ``pending``
``eventDigest``       the EIP-712 digest (the log's leaf)
``result``            ``ok``, or the worst finding's severity: ``error``, ``review``,
                      ``warning``
``findingCodes``      the findings' codes, ``;``-separated
``findings``          each finding as ``severity code: detail``, `` | ``-separated
===================== =============================================================

Rows are written as they are made (a whole log's export holds one row in memory at a time).
Cells are **safe against CSV injection** (formula injection): a cell that starts with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return — which a spreadsheet would run as a formula —
is written with a leading ``'``, so that it is shown as the text it is. Institution names come
from the chain's registry, where any registrar may write them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TextIO

from ledger.verify import Finding
from scripts._common import EventLine, Report, describe, hex_

__all__ = ["COLUMNS", "csv_rows", "neutralise", "write_csv"]

COLUMNS: tuple[str, ...] = (
    "row",
    "leafIndex",
    "eventId",
    "type",
    "occurredAt",
    "institution",
    "institutionName",
    "patient",
    "recordRef",
    "summary",
    "consent",
    "anchoredIn",
    "eventDigest",
    "result",
    "findingCodes",
    "findings",
)

#: What a spreadsheet takes for the start of a formula (OWASP's list for CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(cell: str) -> str:
    """``cell``, with a leading ``'`` if a spreadsheet would read it as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _instant(timestamp: int) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(timestamp)


def _findings(findings: Sequence[Finding]) -> tuple[str, str]:
    codes = ";".join(dict.fromkeys(str(f.code) for f in findings))
    text = " | ".join(f"{f.severity} {f.code}: {f.detail}" for f in findings)
    return codes, text


def _event_row(line: EventLine, names: dict[str, str]) -> list[str]:
    event = line.event
    codes, text = _findings(line.findings)
    return [
        "event",
        str(line.leaf_index),
        hex_(event.eventId) or "",
        event.event_type.value,
        _instant(event.occurredAt),
        event.institution,
        names.get(event.institution, ""),
        event.patient,
        hex_(line.record_ref) or "",
        describe(event),
        line.consent,
        "pending" if line.anchored_in is None else str(line.anchored_in),
        hex_(line.digest) or "",
        line.worst,
        codes,
        text,
    ]


def _log_row(finding: Finding) -> list[str]:
    leaf = finding.context.get("leafIndex")
    codes, text = _findings([finding])
    row = ["log", "" if leaf is None else str(leaf), hex_(finding.event_id) or ""]
    row += [""] * (COLUMNS.index("result") - len(row))
    return [*row, finding.severity, codes, text]


def csv_rows(report: Report) -> Iterator[list[str]]:
    """The header, then every event's row, then every log finding's row (neutralised)."""
    yield list(COLUMNS)
    for line in report.every_event():
        yield [neutralise(cell) for cell in _event_row(line, report.names)]
    for finding in report.log_findings():
        yield [neutralise(cell) for cell in _log_row(finding)]


def write_csv(report: Report, stream: TextIO) -> None:
    """Write :func:`csv_rows` to ``stream`` (RFC 4180: CRLF line ends, quoted as needed)."""
    writer = csv.writer(stream)
    for row in csv_rows(report):
        writer.writerow(row)
