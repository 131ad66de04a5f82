"""What the regulator's tools share: configuration, reports, output formats, exit statuses.

Exit statuses (the same for every tool):

* ``0`` — verified, nothing wrong (findings of severity ``review`` or ``warning`` alone,
  e.g. emergency accesses to look at, are not wrong);
* ``1`` — verified, and something is wrong (at least one finding of severity ``error``);
* ``2`` — could not verify: the API or the chain unreachable, a bad input file, a bad
  option, a deployment that is not medtrail's. Never reported as "all good".
"""

from __future__ import annotations

import functools
import gc
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, ParamSpec, TypeAlias

import click
from pydantic import ValidationError

from ledger import fileio
from ledger.audit import count_findings
from ledger.chain.reader import ChainView, DeploymentSpec
from ledger.eip712 import to_checksum_address
from ledger.errors import LedgerError, MalformedEventError
from ledger.events import (
    Action,
    EventBase,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    Purpose,
    RecordAccess,
)
from ledger.trail_options import max_backdate_option as max_backdate_option
from ledger.trail_options import max_merge_delay_option as max_merge_delay_option
from ledger.verify import Finding
from scripts._api import ApiError

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_UNVERIFIED = 2

#: The start of both tools' ``--help`` epilog (click's ``\b`` keeps the lines as they are).
EXIT_STATUS_HELP = """\b
Exit status:
  0  verified, nothing wrong (emergency accesses are listed for review, not failures)
  1  verified, and something is wrong (at least one finding of severity "error")
  2  could not verify (API or chain unreachable, bad input, unknown contracts)

\b
Every flag may come from the environment: MEDTRAIL_API_URL, MEDTRAIL_API_KEY,
MEDTRAIL_RPC_URL, MEDTRAIL_DEPLOYMENT_FILE (or MEDTRAIL_AUDIT_LOG, MEDTRAIL_CONSENT_REGISTRY,
MEDTRAIL_INSTITUTION_REGISTRY, MEDTRAIL_CHAIN_ID), MEDTRAIL_CONSENT_REGISTRY_V2,
"""

OutputFormat: TypeAlias = Literal["table", "json", "fhir", "csv"]

P = ParamSpec("P")


class ToolError(LedgerError):
    """Verification could not be done (bad input, missing configuration): exit status 2."""

    code = "cannot-verify"
    status = 2


# --------------------------------------------------------------------------- reports


def hex_(value: bytes | None) -> str | None:
    return None if value is None else "0x" + bytes(value).hex()


@dataclass
class EventLine:
    """One event as a report lists it, with its findings."""

    event: EventBase
    leaf_index: int
    digest: bytes
    signature: bytes
    record_ref: bytes | None
    consent: str
    anchored_in: int | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def event_id(self) -> bytes:
        return self.event.eventId

    @property
    def worst(self) -> str:
        severities = {f.severity for f in self.findings}
        for severity in ("error", "review", "warning"):
            if severity in severities:
                return severity
        return "ok"

    def to_json(self) -> dict[str, Any]:
        event = self.event
        return {
            "eventId": hex_(event.eventId),
            "type": event.event_type.value,
            "leafIndex": self.leaf_index,
            "occurredAt": event.occurredAt,
            "institution": event.institution,
            "patient": event.patient,
            "recordRef": hex_(self.record_ref),
            "eventDigest": hex_(self.digest),
            "consent": self.consent,
            "anchoredInCheckpoint": self.anchored_in,
            "summary": describe(event),
            "result": self.worst,
            "findings": [f.to_json() for f in self.findings],
        }


@dataclass
class Report:
    """What a tool verified and found.

    ``events`` are the events the table and the JSON list: every event of a trail, the
    offending ones of a whole-log audit. ``findings`` are all the findings, those of the
    events included (the same objects as in the events' lines).
    """

    tool: str
    subject: dict[str, Any]
    chain: dict[str, Any] | None
    events: list[EventLine]
    findings: list[Finding]
    stats: dict[str, Any] = field(default_factory=dict)
    #: Display names of institutions (read from the chain's registry).
    names: dict[str, str] = field(default_factory=dict)
    checked_at: int = field(default_factory=lambda: int(time.time()))
    #: Every event verified, in log order, made one at a time when asked (the exports of a
    #: whole log write them as they come); None: ``events`` are every event.
    all_events: Callable[[], Iterator[EventLine]] | None = None

    def every_event(self) -> Iterator[EventLine]:
        """Every event verified, in log order (what the FHIR and CSV exports hold)."""
        return iter(self.events) if self.all_events is None else self.all_events()

    def log_findings(self) -> list[Finding]:
        """The findings about the trail or the log as a whole: those attached to no event."""
        attached = {id(f) for line in self.events for f in line.findings}
        return [f for f in self.findings if id(f) not in attached]

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def exit_status(self) -> int:
        return EXIT_OK if self.ok else EXIT_FINDINGS

    @property
    def codes(self) -> set[str]:
        return {str(f.code) for f in self.findings}

    def findings_of(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def to_json(self) -> dict[str, Any]:
        counts = count_findings(self.findings)
        return {
            "tool": self.tool,
            "ok": self.ok,
            "exitStatus": self.exit_status,
            "checkedAt": self.checked_at,
            "subject": self.subject,
            "chain": self.chain,
            "summary": {
                "events": self.stats.get("events", len(self.events)),
                "errors": sum(counts["error"].values()),
                "reviews": sum(counts["review"].values()),
                "warnings": sum(counts["warning"].values()),
                "counts": counts,
            },
            "stats": self.stats,
            "events": [line.to_json() for line in self.events],
            "findings": [f.to_json() for f in self.findings],
        }


# --------------------------------------------------------------------------- descriptions


def utc(timestamp: int) -> str:
    """``2025-01-31 12:00:00`` (UTC)."""
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(timestamp)


def short(value: str | bytes | None, names: Mapping[str, str] | None = None) -> str:
    """``0x1234…abcd`` (with the registry name of an institution, when known)."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else "0x" + value.hex()
    abbreviated = text if len(text) <= 14 else f"{text[:6]}…{text[-4:]}"
    name = (names or {}).get(text)
    return f"{abbreviated} {name}" if name else abbreviated


def describe(event: EventBase) -> str:
    """A short human description of an event."""
    if isinstance(event, RecordAccess):
        action = Action(event.action).name.lower()
        purpose = Purpose(event.purpose).name.lower().replace("_", " ")
        if event.institution == event.custodian:
            basis = "custodian"
        elif event.grantId == 0:
            basis = "emergency, no grant"
        else:
            basis = f"grant {event.grantId}"
        return f"{action} for {purpose} ({basis})"
    if isinstance(event, PrescriptionIssued):
        return f"{event.fills} fill(s), valid until {utc(event.validUntil)[:10]}"
    if isinstance(event, PrescriptionDispensed):
        return f"fill {event.fillNumber} of {short(event.prescriptionId)}"
    if isinstance(event, InsuranceClaim):
        return f"claims {event.amount} for {short(event.serviceRef)}"
    if isinstance(event, InsurancePayment):
        return f"pays {event.amount} on {short(event.claimId)}"
    return event.event_type.value  # pragma: no cover - the five types are above


# --------------------------------------------------------------------------- table output

_MARK = {"error": "ERROR", "review": "REVIEW", "warning": "warn", "ok": "ok"}


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    return lines


def render_table(report: Report) -> str:
    """The report for people: header, one row per event, the findings, the verdict."""
    out: list[str] = []
    title = {"verify_trail": "record trail verification", "audit_log": "whole-log audit"}
    out.append(f"medtrail {title.get(report.tool, report.tool)} — {utc(report.checked_at)} UTC")
    for key, value in report.subject.items():
        out.append(f"  {key}: {value}")
    if report.chain is not None:
        for key, value in report.chain.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            out.append(f"  {key}: {value}")
    out.append("")
    if report.events:
        rows = []
        for line in report.events:
            event = line.event
            codes = sorted({str(f.code) for f in line.findings})
            result = _MARK[line.worst] + (": " + ", ".join(codes) if codes else "")
            anchoring = "pending" if line.anchored_in is None else f"@{line.anchored_in}"
            rows.append(
                [
                    str(line.leaf_index),
                    utc(event.occurredAt),
                    event.event_type.value,
                    short(event.institution, report.names),
                    describe(event),
                    anchoring,
                    result,
                ]
            )
        headers = ["leaf", "occurred (UTC)", "type", "institution", "what", "anchor", "result"]
        out += _table(rows, headers)
        out.append("")
    counts = count_findings(report.findings)
    total = {severity: sum(c.values()) for severity, c in counts.items()}
    if report.findings:
        out.append(
            f"Findings: {total['error']} error(s), {total['review']} for review, "
            f"{total['warning']} warning(s)"
        )
        for severity in ("error", "review", "warning"):
            for code, count in counts[severity].items():
                out.append(f"  {_MARK[severity]:6} {code:28} {count}")
        out.append("")
        for finding in report.findings:
            where = f"event {short(finding.event_id)}: " if finding.event_id else ""
            out.append(f"  {_MARK[finding.severity]:6} [{finding.code}] {where}{finding.detail}")
        out.append("")
    for key, value in report.stats.items():
        if key != "events":
            out.append(f"  {key}: {value}")
    verdict = (
        "OK: nothing wrong"
        + (f" ({total['review']} item(s) for review)" if total["review"] else "")
        if report.ok
        else f"FAILED: {total['error']} error(s)"
    )
    out.append(f"Result: {verdict} — {report.stats.get('events', len(report.events))} event(s)")
    return "\n".join(out)


def emit(report: Report, output: OutputFormat) -> None:
    """Print ``report`` in the chosen format on stdout. The exports (FHIR, CSV) are written
    as they are made, one event at a time: a whole log's export takes no more memory than
    one event's."""
    if output == "json":
        click.echo(json_text(report.to_json()))
    elif output == "fhir":
        from scripts._fhir import write_fhir_bundle

        stdout = sys.stdout
        write_fhir_bundle(report, stdout, indent=2 if stdout.isatty() else None)
        stdout.flush()
    elif output == "csv":
        from scripts._csv_export import write_csv

        stdout = sys.stdout
        write_csv(report, stdout)
        stdout.flush()
    else:
        click.echo(render_table(report))


def json_text(document: Any) -> str:
    """JSON for stdout: indented for a person at a terminal, on one line for a pipe or a file
    (``json`` encodes indented output in pure Python: 5-10x slower on a large report)."""
    if sys.stdout.isatty():
        return json.dumps(document, indent=2)
    return json.dumps(document, separators=(",", ":"))


# --------------------------------------------------------------------------- files


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably (:func:`ledger.fileio.atomic_write`),
    creating its directory first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fileio.atomic_write(path, text)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ChainOptions:
    """What :func:`chain_options` read from the command line (or the environment): the
    regulator's own endpoint and where it trusts the contracts to be."""

    rpc_url: str | None
    deployment_file: Path | None
    institution_registry: str | None
    audit_log: str | None
    consent_registry: str | None
    consent_registry_v2: str | None
    chain_id: int | None
    from_block: int | None
    rpc_timeout: float

    def spec(self) -> DeploymentSpec:
        """Where the contracts are: the deployment file, or all three addresses (and
        ConsentRegistryV2's: the file's ``consentRegistryV2``, or ``--consent-v2``). Missing
        both is a :class:`ToolError`, never a guess."""
        given = self.consent_registry_v2
        given = None if given is None else _address(given, "--consent-v2")
        if self.deployment_file is not None:
            try:
                spec = DeploymentSpec.read(self.deployment_file)
            except LedgerError as exc:  # its one-line reason (Deployment.read)
                raise ToolError(exc.detail) from None
            if self.chain_id is not None and self.chain_id != spec.chain_id:
                raise ToolError(
                    f"--chain-id {self.chain_id} but the deployment file is for chain "
                    f"{spec.chain_id}"
                )
            named = spec.consent_registry_v2
            if given is not None and named is not None and given != named:
                raise ToolError(
                    f"--consent-v2 {given} but the deployment file names the ConsentRegistryV2 "
                    f"{named}"
                )
            return replace(
                spec,
                from_block=spec.from_block if self.from_block is None else self.from_block,
                consent_registry_v2=named or given,
            )
        institution, audit, consent = (
            self.institution_registry,
            self.audit_log,
            self.consent_registry,
        )
        if institution and audit and consent:
            return DeploymentSpec(
                institution, audit, consent, self.chain_id, self.from_block or 0, given
            )
        raise ToolError(
            "say where the contracts are: --deployment-file (MEDTRAIL_DEPLOYMENT_FILE), or all "
            "of --institution-registry, --audit-log and --consent-registry "
            "(MEDTRAIL_INSTITUTION_REGISTRY, MEDTRAIL_AUDIT_LOG, MEDTRAIL_CONSENT_REGISTRY)"
        )

    def endpoint(self) -> str:
        """The regulator's own JSON-RPC endpoint (a :class:`ToolError` if none is given)."""
        if not self.rpc_url:
            raise ToolError("give your own chain endpoint: --rpc-url (MEDTRAIL_RPC_URL)")
        return self.rpc_url

    def connect(self, spec: DeploymentSpec | None = None) -> ChainView:
        """A view of the chain at :meth:`endpoint`, of the contracts of ``spec`` (None:
        :meth:`spec`'s)."""
        spec = self.spec() if spec is None else spec
        return ChainView.connect(self.endpoint(), spec, timeout=self.rpc_timeout)


def _address(value: str, option: str) -> str:
    try:
        return to_checksum_address(value)
    except MalformedEventError as exc:
        raise ToolError(f"{option}: {exc.detail}") from exc


def chain_summary(chain: ChainView) -> dict[str, Any]:
    deployment = chain.trusted
    summary = {
        "chainId": deployment.chain_id,
        "auditLog": deployment.audit_log,
        "institutionRegistry": deployment.institution_registry,
        "consentRegistry": deployment.consent_registry,
    }
    if deployment.consent_registry_v2 is not None:
        summary["consentRegistryV2"] = deployment.consent_registry_v2
    return summary


def institution_names(chain: ChainView | None, addresses: Iterable[str]) -> dict[str, str]:
    """The registry names of addresses already looked up (no extra chain reads)."""
    if chain is None:
        return {}
    known = chain.known_institutions()
    names = {}
    for address in addresses:
        info = known.get(address)
        if info is not None and info.name:
            names[address] = info.name
    return names


# --------------------------------------------------------------------------- the CLI frame


def fail(message: str) -> NoReturn:
    """Print ``message`` and exit with "could not verify"."""
    click.secho(f"error: {message}", fg="red", err=True)
    click.secho("Result: NOT VERIFIED (exit status 2)", fg="red", err=True)
    sys.exit(EXIT_UNVERIFIED)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a tool holds a whole log, then what it built
    frozen (the whole-log audit, around its run).

    The audit builds the whole log in memory, a few tens of objects per event, all alive until
    it ends: each of the collector's passes would only walk them again (with the thresholds of
    :func:`ledger.gc_tuning.tune`, ~8 µs per event of the offline audit, issue 15), and the
    workers forked meanwhile would copy the pages it touches. Reference counting still frees
    everything that is not in a reference cycle, and the audit makes none per event (parsing,
    findings, the rules' state are plain trees of objects)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def guarded(body: Callable[P, None]) -> Callable[P, None]:
    """Run a tool's body; any failure exits with status 2 and one clear message.

    Status 1 means "findings": an unexpected exception must never be mistaken for it, nor
    for a pass.
    """

    @functools.wraps(body)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            body(*args, **kwargs)
        except (SystemExit, click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except KeyboardInterrupt:
            # Not click's "Aborted!" with status 1, which would read as "findings".
            fail("interrupted: nothing was verified")
        except ApiError as exc:
            fail(f"could not read the API: {exc.detail}")
        except LedgerError as exc:
            fail(exc.detail)
        except ValidationError as exc:
            fail(f"bad input: {exc}")
        except OSError as exc:
            fail(str(exc))
        except Exception as exc:
            if os.environ.get("MEDTRAIL_DEBUG"):
                traceback.print_exc()
            fail(f"unexpected failure, nothing was verified: {type(exc).__name__}: {exc}")

    return wrapper


def chain_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The options naming the regulator's chain endpoint and the contracts it trusts, given
    to the command as one ``chain`` argument (:class:`ChainOptions`)."""
    options = [
        click.option(
            "--rpc-url",
            envvar="MEDTRAIL_RPC_URL",
            metavar="URL",
            help="Your own JSON-RPC endpoint of the chain [env MEDTRAIL_RPC_URL].",
        ),
        click.option(
            "--deployment-file",
            envvar="MEDTRAIL_DEPLOYMENT_FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Deployment JSON naming the contracts (as written by `medtrail deploy`) "
            "[env MEDTRAIL_DEPLOYMENT_FILE].",
        ),
        click.option(
            "--institution-registry",
            envvar="MEDTRAIL_INSTITUTION_REGISTRY",
            metavar="ADDRESS",
            help="InstitutionRegistry address, instead of a deployment file.",
        ),
        click.option(
            "--audit-log",
            envvar="MEDTRAIL_AUDIT_LOG",
            metavar="ADDRESS",
            help="AuditLog address, instead of a deployment file.",
        ),
        click.option(
            "--consent-registry",
            envvar="MEDTRAIL_CONSENT_REGISTRY",
            metavar="ADDRESS",
            help="ConsentRegistry address, instead of a deployment file.",
        ),
        click.option(
            "--consent-v2",
            "consent_registry_v2",
            envvar="MEDTRAIL_CONSENT_REGISTRY_V2",
            metavar="ADDRESS",
            help="ConsentRegistryV2 address (consent version 2), when the deployment file does "
            "not name one (consentRegistryV2) [env MEDTRAIL_CONSENT_REGISTRY_V2].",
        ),
        click.option(
            "--chain-id",
            envvar="MEDTRAIL_CHAIN_ID",
            type=int,
            help="Expected chain id (default: your node's) [env MEDTRAIL_CHAIN_ID].",
        ),
        click.option(
            "--from-block",
            envvar="MEDTRAIL_FROM_BLOCK",
            type=click.IntRange(min=0),
            help="First block to scan for checkpoints (default: the deployment's block).",
        ),
        click.option(
            "--rpc-timeout",
            envvar="MEDTRAIL_RPC_TIMEOUT",
            type=click.FloatRange(min=0.1),
            default=10.0,
            show_default=True,
            help="Seconds per JSON-RPC request.",
        ),
    ]

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        chain = ChainOptions(**{name: kwargs.pop(name) for name in _CHAIN_FIELDS})
        return function(*args, chain=chain, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


_CHAIN_FIELDS = tuple(ChainOptions.__dataclass_fields__)


def output_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` / ``--fhir`` / ``--csv`` / table (default)."""
    function = click.option(
        "--csv",
        "output",
        flag_value="csv",
        help="Print every event verified as CSV, one row each with its findings, for "
        "spreadsheets (columns: docs/regulator.md).",
    )(function)
    function = click.option(
        "--fhir",
        "output",
        flag_value="fhir",
        help="Print every event verified as a FHIR R4 Bundle: an AuditEvent and a Provenance "
        "each, findings with their events, the others as Security Alert AuditEvents.",
    )(function)
    function = click.option(
        "--json", "output", flag_value="json", help="Print the report as JSON, for machines."
    )(function)
    return click.option(
        "--table",
        "output",
        flag_value="table",
        default=True,
        help="Print a readable table (the default).",
    )(function)
