"""FHIR R4 export of a verification report, for health-IT systems.

A ``Bundle`` of type ``collection`` holding, for the whole trail or the whole log:

* one ``AuditEvent`` of type *Audit Log Used* summing the verification up (first);
* one ``AuditEvent`` per verified event — every event, in log order — (DICOM type *Patient
  Record* for accesses, *Order Record* for prescriptions and insurance, the medtrail event
  type as subtype), whose ``outcome`` carries the verification result (``0`` nothing wrong,
  ``4`` warnings only, ``8`` findings of severity error) and whose entities carry the event
  id, the record reference and the patient's wallet address, with the event's findings as
  entity details;
* one ``Provenance`` per event signature: the institution as author, its EIP-712 signature
  (secp256k1, 65 bytes) as a *Source Signature*;
* one ``AuditEvent`` of type *Security Alert* per finding about the trail or the log as a
  whole (attached to no event).

Identifiers are the ledger's own (institution and patient addresses, opaque record
references, event ids) under ``urn:medtrail:*`` systems. Nothing personal is added: the
ledger holds none. :func:`write_fhir_bundle` writes the bundle as it makes it, one resource
at a time (a whole log's export takes no more memory than one event's); the resources
validate as FHIR R4 (``fhir.resources``, in the tests).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

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
from ledger.verify import Finding
from scripts._common import EventLine, Report, describe, hex_

__all__ = ["fhir_bundle", "fhir_resources", "write_fhir_bundle"]

DCM = "http://dicom.nema.org/resources/ontology/DCM"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SIGNATURE_TYPE = "urn:iso-astm:E1762-95:2013"

EVENT_TYPE_SYSTEM = "urn:medtrail:event-type"
FINDING_SYSTEM = "urn:medtrail:finding"
INSTITUTION_SYSTEM = "urn:medtrail:institution"
PATIENT_SYSTEM = "urn:medtrail:patient"
RECORD_SYSTEM = "urn:medtrail:record-ref"
EVENT_SYSTEM = "urn:medtrail:event-id"
STAFF_SYSTEM = "urn:medtrail:staff-ref"
LOG_SYSTEM = "urn:medtrail:audit-log"

_NAMESPACE = uuid.UUID("8c3b5c1e-3f6a-5b7e-9a52-6d6564747261")

_PURPOSE = {
    Purpose.TREATMENT: ("TREAT", "treatment"),
    Purpose.PAYMENT: ("HPAYMT", "healthcare payment"),
    Purpose.OPERATIONS: ("HOPERAT", "healthcare operations"),
    Purpose.RESEARCH: ("HRESCH", "healthcare research"),
    Purpose.PUBLIC_HEALTH: ("PUBHLTH", "public health"),
    Purpose.LEGAL: ("HLEGAL", "legal"),
}
_ACTION = {
    Action.CREATE: "C",
    Action.READ: "R",
    Action.WRITE: "U",
    Action.EXPORT: "R",
    Action.PRINT: "R",
    Action.SHARE: "R",
}


def _instant(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def _identifier(system: str, value: str) -> dict[str, Any]:
    return {"system": system, "value": value}


def _institution(address: str, names: dict[str, str]) -> dict[str, Any]:
    reference: dict[str, Any] = {"identifier": _identifier(INSTITUTION_SYSTEM, address)}
    if address in names:
        reference["display"] = names[address]
    return reference


def _outcome(findings: list[Finding]) -> tuple[str, str]:
    severities = {f.severity for f in findings}
    if "error" in severities:
        code = "8"
    elif "warning" in severities:
        code = "4"
    else:
        code = "0"
    if not findings:
        return code, "verified against the chain: nothing wrong"
    text = "; ".join(f"{f.severity} {f.code}: {f.detail}" for f in findings)
    return code, text


def _staff(event: EventBase) -> bytes | None:
    if isinstance(event, RecordAccess):
        return event.actor
    if isinstance(event, PrescriptionIssued):
        return event.prescriber
    if isinstance(event, PrescriptionDispensed):
        return event.pharmacist
    return None


def _audit_event(line: EventLine, report: Report, observer: dict[str, Any]) -> dict[str, Any]:
    event = line.event
    if isinstance(event, RecordAccess):
        kind = {"system": DCM, "code": "110110", "display": "Patient Record"}
        action = _ACTION[Action(event.action)]
    else:
        kind = {"system": DCM, "code": "110109", "display": "Order Record"}
        action = "E" if isinstance(event, InsurancePayment) else "C"
    outcome, description = _outcome(line.findings)
    agents: list[dict[str, Any]] = []
    staff = _staff(event)
    agents.append(
        {
            "who": _institution(event.institution, report.names),
            "requestor": staff is None,
        }
    )
    if staff is not None:
        agents.append(
            {
                "who": {"identifier": _identifier(STAFF_SYSTEM, "0x" + staff.hex())},
                "requestor": True,
            }
        )
    details = [
        {"type": "leafIndex", "valueString": str(line.leaf_index)},
        {"type": "eventDigest", "valueString": hex_(line.digest)},
        {"type": "consent", "valueString": line.consent},
        {
            "type": "anchoredInCheckpoint",
            "valueString": "pending" if line.anchored_in is None else str(line.anchored_in),
        },
        {"type": "summary", "valueString": describe(event)},
    ]
    details += [
        {"type": f"finding:{f.severity}", "valueString": f"{f.code}: {f.detail}"}
        for f in line.findings
    ]
    entities: list[dict[str, Any]] = [
        {
            "what": {"identifier": _identifier(EVENT_SYSTEM, hex_(event.eventId) or "")},
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "detail": details,
        },
        {
            "what": {"identifier": _identifier(PATIENT_SYSTEM, event.patient)},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        },
    ]
    if line.record_ref is not None:
        entities.append(
            {
                "what": {"identifier": _identifier(RECORD_SYSTEM, hex_(line.record_ref) or "")},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": _uuid("event", str(line.leaf_index), hex_(event.eventId) or ""),
        "type": kind,
        "subtype": [
            {"system": EVENT_TYPE_SYSTEM, "code": event.event_type.value},
        ],
        "action": action,
        "recorded": _instant(event.occurredAt),
        "outcome": outcome,
        "outcomeDesc": description,
        "agent": agents,
        "source": observer,
        "entity": entities,
    }
    if isinstance(event, RecordAccess):
        code, display = _PURPOSE[Purpose(event.purpose)]
        resource["purposeOfEvent"] = [
            {"coding": [{"system": ACT_REASON, "code": code, "display": display}]}
        ]
    return resource


def _provenance(line: EventLine, target: str, report: Report) -> dict[str, Any]:
    event = line.event
    who = _institution(event.institution, report.names)
    operation = "EXECUTE" if isinstance(event, InsuranceClaim | InsurancePayment) else "CREATE"
    return {
        "resourceType": "Provenance",
        "id": _uuid("provenance", str(line.leaf_index), hex_(event.eventId) or ""),
        "target": [{"reference": f"urn:uuid:{target}"}],
        "recorded": _instant(event.occurredAt),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": operation}]},
        "agent": [
            {
                "type": {
                    "coding": [{"system": PARTICIPANT, "code": "author", "display": "Author"}]
                },
                "who": who,
            }
        ],
        "signature": [
            {
                "type": [
                    {
                        "system": SIGNATURE_TYPE,
                        "code": "1.2.840.10065.1.12.1.14",
                        "display": "Source Signature",
                    }
                ],
                "when": _instant(event.occurredAt),
                "who": who,
                "data": base64.b64encode(line.signature).decode("ascii"),
            }
        ],
    }


def _alert(finding: Finding, report: Report, observer: dict[str, Any], n: int) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "id": _uuid("alert", report.tool, str(report.checked_at), str(n)),
        "type": {"system": DCM, "code": "110113", "display": "Security Alert"},
        "subtype": [{"system": FINDING_SYSTEM, "code": str(finding.code)}],
        "action": "E",
        "recorded": _instant(report.checked_at),
        "outcome": "8" if finding.severity == "error" else "4",
        "outcomeDesc": f"{finding.severity} {finding.code}: {finding.detail}",
        "agent": [{"who": {"display": f"medtrail regulator ({report.tool})"}, "requestor": True}],
        "source": observer,
        "entity": [
            {
                "what": observer["observer"],
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "detail": _details(finding.context),
            }
        ],
    }


def _details(values: dict[str, Any] | Any) -> list[dict[str, str]]:
    """Entity details from a mapping (FHIR strings are never empty: empty values are left
    out; nested values as JSON)."""
    details = []
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        if text.strip():
            details.append({"type": str(key), "valueString": text})
    return details


def _summary(report: Report, observer: dict[str, Any]) -> dict[str, Any]:
    outcome, _ = _outcome(report.findings)
    errors = len(report.errors)
    description = (
        f"{report.tool}: {report.stats.get('events', len(report.events))} event(s) verified "
        f"against the chain; {errors} error(s), {len(report.findings) - errors} other finding(s)"
    )
    return {
        "resourceType": "AuditEvent",
        "id": _uuid("summary", report.tool, str(report.checked_at), str(report.subject)),
        "type": {"system": DCM, "code": "110101", "display": "Audit Log Used"},
        "subtype": [{"system": FINDING_SYSTEM, "code": report.tool}],
        "action": "E",
        "recorded": _instant(report.checked_at),
        "outcome": outcome,
        "outcomeDesc": description,
        "agent": [{"who": {"display": f"medtrail regulator ({report.tool})"}, "requestor": True}],
        "source": observer,
        "entity": [
            {
                "what": observer["observer"],
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
                "detail": _details(report.subject),
            }
        ],
    }


def fhir_resources(report: Report) -> Iterator[dict[str, Any]]:
    """The bundle's resources, made one at a time: the summary, then each event's AuditEvent
    and Provenance in log order, then a Security Alert per finding attached to no event."""
    chain = report.chain or {}
    log_id = f"eip155:{chain.get('chainId', '?')}:{chain.get('auditLog', '?')}"
    observer = {
        "observer": {
            "identifier": _identifier(LOG_SYSTEM, log_id),
            "display": "medtrail AuditLog",
        },
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    yield _summary(report, observer)
    for line in report.every_event():
        audit = _audit_event(line, report, observer)
        yield audit
        yield _provenance(line, audit["id"], report)
    for n, finding in enumerate(report.log_findings()):
        yield _alert(finding, report, observer, n)


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}


def _bundle(report: Report) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "id": _uuid("bundle", report.tool, str(report.checked_at), str(report.subject)),
        "type": "collection",
        "timestamp": _instant(report.checked_at),
    }


def fhir_bundle(report: Report) -> dict[str, Any]:
    """The report as a FHIR R4 ``Bundle`` (type ``collection``), in memory (for a whole log,
    prefer :func:`write_fhir_bundle`)."""
    return {**_bundle(report), "entry": [_entry(r) for r in fhir_resources(report)]}


def write_fhir_bundle(report: Report, stream: TextIO, *, indent: int | None = None) -> None:
    """Write :func:`fhir_bundle`'s JSON to ``stream`` as it is made, one entry at a time
    (``indent``: each entry on lines of its own, indented, for a person; else compact)."""
    item, key = (",", ": ") if indent is not None else (",", ":")
    head = json.dumps(_bundle(report), separators=(item, key))
    stream.write(f"{head[:-1]}{item}{json.dumps('entry')}{key}[")
    joint = ",\n" if indent is not None else ","
    for n, resource in enumerate(fhir_resources(report)):
        text = json.dumps(_entry(resource), indent=indent, separators=(item, key))
        stream.write((joint if n else joint[1:]) + text)
    stream.write("]}\n")
