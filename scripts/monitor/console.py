"""The supervision console: a small web page the monitor serves (127.0.0.1 by default).

Standard library only (``http.server``): the regulator's tools install light. Every path but
the login page needs a console token, as a bearer token or as the cookie the login page sets
(HttpOnly, SameSite=Strict); each token names a supervisor, who signs the decisions made
with it. The page and its script are files of this package (no CDN).
It reads the monitor's SQLite file (its own connection per request; WAL lets the monitor
write meanwhile) and writes one thing: the supervisors' decisions on emergency accesses.

JSON answers: ``/api/status``, ``/api/alerts?after=N``, ``/api/findings``,
``/api/institutions``, ``/api/emergencies``, ``POST /api/emergencies/{eventId}``
(``{"decision", "note"}``), ``/api/decisions`` (a FHIR Bundle of AuditEvents, one per decision),
``/api/trail/{recordRef}?format=json|fhir|csv``, ``/api/patients/{address}/trail?format=…``
(a record's and a patient's trails, proven whole by the monitor's own index:
:mod:`scripts.monitor.trails`); ``/metrics`` (Prometheus). Errors are
RFC 9457 problem documents.
"""

from __future__ import annotations

import bisect
import hmac
import io
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from ledger import index
from ledger.completeness import CompletenessCode
from ledger.eip712 import parse_address, to_checksum_address
from ledger.errors import LedgerError, MalformedEventError
from ledger.events import SignedEvent
from ledger.verify import Finding
from ledger.wire import IndexProofOut
from scripts._api import ApiClient, ApiError
from scripts._common import EventLine, Report
from scripts._csv_export import write_csv
from scripts._fhir import write_fhir_bundle
from scripts.monitor import trails
from scripts.monitor.alerts import metrics_text
from scripts.monitor.store import Store

__all__ = ["DECISIONS", "Console", "decision_audit_event"]

COOKIE = "medtrail_monitor"
#: What a supervisor may decide of an emergency access.
DECISIONS = ("justified", "not-justified", "referred")
MAX_NOTE = 2000
_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")
#: Mirror rows read per query by position.
_ROWS_PER_QUERY = 500
_STATIC = {"console.js": "text/javascript", "console.css": "text/css"}


def _instant(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def decision_audit_event(row: dict[str, Any]) -> dict[str, Any]:
    """A supervisor's decision as a FHIR R4 ``AuditEvent``: who decided what of which
    emergency access, when, with the note."""
    outcome = {"justified": "0", "referred": "4", "not-justified": "8"}[row["decision"]]
    return {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"medtrail-decision:{row['id']}")),
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110100",
            "display": "Application Activity",
        },
        "subtype": [{"system": "urn:medtrail:supervision", "code": "emergency-access-review"}],
        "action": "E",
        "recorded": _instant(row["decidedAt"]),
        "outcome": outcome,
        "outcomeDesc": f"{row['decision']}: {row['note']}",
        "agent": [
            {
                "who": {"display": row["supervisor"]},
                "requestor": True,
            }
        ],
        "source": {"observer": {"display": "medtrail-monitor"}},
        "entity": [
            {
                "what": {
                    "identifier": {"system": "urn:medtrail:event-id", "value": row["eventId"]}
                },
                "description": "the emergency (break-glass) access reviewed",
            }
        ],
    }


class _Problem(Exception):
    def __init__(self, status: HTTPStatus, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def credentials(
    supervisor: str, own_token: str, others: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Token → supervisor from the console's own ``own_token`` for ``supervisor`` and ``others``
    (supervisor → token), or :class:`ValueError`: every token at least 16 characters, no token
    given to two supervisors, every name non-empty, and ``supervisor`` not named again in
    ``others`` (that entry would silently replace the console's own token)."""
    others = others or {}
    if supervisor in others:
        raise ValueError(
            f"{supervisor!r} is the console's own supervisor (--supervisor): its token is "
            "--console-token, not an entry of the file"
        )
    found: dict[str, str] = {}
    for name, token in {supervisor: own_token, **others}.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError("a supervisor's name is non-empty text")
        if not isinstance(token, str) or len(token) < 16:
            raise ValueError(f"the console token of {name!r} is at least 16 characters")
        if token in found:
            raise ValueError(f"{found[token]!r} and {name!r} have the same console token")
        found[token] = name
    return found


def _keep_operators_lies(store: Store, findings: list[Finding]) -> None:
    """An operator's list of a key's leaves that is not the list the monitor's own index holds
    (``trail-incomplete``: a leaf left out, added or moved, another key's list, events the
    index holds answered as none) is kept as the monitor's finding and alerted, once (a
    finding's key is what it says: asked again, the same lie is not reported twice), as what
    the monitor finds by itself is. Only that code: an older or missing answer may be the
    operator's lag, and stays in the answer."""
    lies = [f for f in findings if f.code == CompletenessCode.TRAIL_INCOMPLETE]
    if lies:
        now = int(time.time())
        with store.step():
            for finding in lies:
                store.add_finding(finding, now)


class Console:
    """Serves the console for the monitor's file at ``path`` (:meth:`start`, :meth:`stop`)."""

    def __init__(
        self,
        path: Path,
        token: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8787,
        lag: Callable[[], dict[str, Any]] | None = None,
        supervisor: str = "supervisor",
        supervisors: Mapping[str, str] | None = None,
        api: ApiClient | None = None,
    ) -> None:
        #: The operator's API, asked for the list of a record's or a patient's leaves (None: the
        #: console reads its mirror's rows instead, a scan of the whole mirror).
        self.api = api
        #: Each credential and the supervisor it names (who signs the decisions made with it):
        #: ``token`` for ``supervisor``, and ``supervisors`` (name → token) besides.
        self.credentials = credentials(supervisor, token, supervisors)
        self.path = path
        self.token = token
        self.lag = lag or (lambda: {})
        self.supervisor = supervisor
        console = self

        class Handler(_Handler):
            owner = console

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- reading the store ----------------------------------------------------------------

    def store(self) -> Store:
        return Store(self.path)

    def status(self, store: Store) -> dict[str, Any]:
        db = store.db
        latest = db.execute(
            "SELECT size, timestamp, block, verified FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        head = store.get("head")
        counts: dict[str, int] = {"error": 0, "review": 0, "warning": 0}
        for (_code, severity), n in store.finding_counts().items():
            counts[severity] = counts.get(severity, 0) + n
        now = int(time.time())
        return {
            "logSize": head[0] if head else 0,
            "verified": int(store.get("verified", 0)),
            "latestCheckpoint": None
            if latest is None
            else {
                "treeSize": latest[0],
                "minedAt": latest[1],
                "ageSeconds": max(0, now - int(latest[1])),
                "block": latest[2],
                "verified": bool(latest[3]),
            },
            "lag": self.lag(),
            "sources": {
                source: ("down" if store.get(f"down:{source}") is not None else "up")
                for source in ("api", "chain")
            },
            "findings": counts,
            "identity": store.get("identity"),
        }

    def emergencies(self, store: Store) -> list[dict[str, Any]]:
        rows = store.db.execute(
            "SELECT f.event_id, f.context, e.record_ref, e.leaf FROM findings f "
            "LEFT JOIN entries e ON e.pos = f.pos "
            "WHERE f.code = 'emergency-access' ORDER BY f.id"
        ).fetchall()
        decided: dict[bytes, dict[str, Any]] = {}
        for row in self.decision_rows(store):
            decided[bytes.fromhex(row["eventId"][2:])] = row
        result = []
        for event_id, context, record_ref, leaf in rows:
            data = json.loads(context)
            result.append(
                {
                    "eventId": "0x" + bytes(event_id).hex(),
                    "institution": data.get("institution"),
                    "custodian": data.get("custodian"),
                    "reasonHash": data.get("reasonHash"),
                    "occurredAt": data.get("occurredAt"),
                    "recordRef": None if record_ref is None else "0x" + bytes(record_ref).hex(),
                    "leafIndex": leaf,
                    "decision": decided.get(bytes(event_id)),
                }
            )
        return result

    def institutions(self, store: Store, days: int = 14) -> list[dict[str, Any]]:
        """Per institution, over the last ``days`` days of events (by ``occurredAt``, up to the
        latest one mirrored): events by type per day, the emergency-access and not-covered
        rates (of its accesses), and its events' anchoring delay (first verified checkpoint's
        block time minus ``receivedAt``: mean and worst)."""
        db = store.db
        (latest,) = db.execute("SELECT MAX(occurred_at) FROM entries").fetchone()
        if latest is None:
            return []
        since = int(latest) - days * 86_400
        checkpoints = db.execute(
            "SELECT size, timestamp FROM checkpoints WHERE verified = 1 ORDER BY size"
        ).fetchall()
        sizes = [int(size) for size, _ in checkpoints]
        by: dict[str, dict[str, Any]] = {}
        rows = db.execute(
            "SELECT pos, institution, event_type, occurred_at, received_at FROM entries "
            "WHERE occurred_at >= ? AND institution IS NOT NULL ORDER BY pos",
            (since,),
        )
        for pos, institution, event_type, occurred_at, received_at in rows:
            item = by.setdefault(
                institution,
                {"institution": institution, "perDay": {}, "accesses": 0, "delays": []},
            )
            day = datetime.fromtimestamp(int(occurred_at), UTC).date().isoformat()
            per_type = item["perDay"].setdefault(day, {})
            per_type[event_type] = per_type.get(event_type, 0) + 1
            if event_type == "RecordAccess":
                item["accesses"] += 1
            at = bisect.bisect_right(sizes, int(pos))
            if at < len(sizes):
                item["delays"].append(int(checkpoints[at][1]) - int(received_at))
        flagged = db.execute(
            "SELECT e.institution, f.code, COUNT(*) FROM findings f JOIN entries e "
            "ON e.pos = f.pos WHERE f.code IN ('emergency-access', "
            "'consent-not-covered') AND e.occurred_at >= ? GROUP BY e.institution, f.code",
            (since,),
        ).fetchall()
        counts = {(i, c): int(n) for i, c, n in flagged}
        result = []
        for institution, item in sorted(by.items()):
            accesses = item.pop("accesses")
            delays = item.pop("delays")
            for code, key in (
                ("emergency-access", "emergencyRate"),
                ("consent-not-covered", "notCoveredRate"),
            ):
                count = counts.get((institution, code), 0)
                item[key] = round(count / accesses, 4) if accesses else 0.0
            item["anchoringDelay"] = (
                {"mean": round(sum(delays) / len(delays), 1), "max": max(delays)}
                if delays
                else None
            )
            result.append(item)
        return result

    def decision_rows(self, store: Store) -> list[dict[str, Any]]:
        rows = store.db.execute(
            "SELECT id, event_id, decision, note, supervisor, decided_at FROM decisions ORDER BY id"
        ).fetchall()
        return [
            {
                "id": i,
                "eventId": "0x" + bytes(e).hex(),
                "decision": d,
                "note": n,
                "supervisor": s,
                "decidedAt": t,
            }
            for i, e, d, n, s, t in rows
        ]

    def supervisor_of(self, token: str) -> str | None:
        """The supervisor ``token`` is the credential of (None: none); every credential is
        compared, each in constant time."""
        found = None
        for known, name in self.credentials.items():
            if hmac.compare_digest(token.encode(), known.encode()):
                found = name
        return found

    def decide(
        self, store: Store, event_id: bytes, body: Any, supervisor: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Problem(HTTPStatus.BAD_REQUEST, "the body is a JSON object")
        decision, note = body.get("decision"), body.get("note", "")
        if decision not in DECISIONS:
            raise _Problem(
                HTTPStatus.UNPROCESSABLE_ENTITY, f"decision is one of {', '.join(DECISIONS)}"
            )
        if not isinstance(note, str) or len(note) > MAX_NOTE:
            raise _Problem(
                HTTPStatus.UNPROCESSABLE_ENTITY, f"note is text of at most {MAX_NOTE} characters"
            )
        known = store.db.execute(
            "SELECT 1 FROM findings WHERE code = 'emergency-access' AND event_id = ?", (event_id,)
        ).fetchone()
        if known is None:
            raise _Problem(HTTPStatus.NOT_FOUND, "no emergency access with this eventId")
        now = int(time.time())
        who = supervisor or self.supervisor
        with store.step():
            cursor = store.db.execute(
                "INSERT INTO decisions (event_id, decision, note, supervisor, decided_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (event_id, decision, note, who, now),
            )
        return {
            "id": cursor.lastrowid,
            "eventId": "0x" + event_id.hex(),
            "decision": decision,
            "note": note,
            "supervisor": who,
            "decidedAt": now,
        }

    def trail_report(self, store: Store, record_ref: bytes) -> Report:
        """A record's trail (its events and their findings) as the monitor verified it, proven
        whole by its own index (:meth:`_key_report`), the operator's list from its trail's
        first page."""
        api = self.api
        return self._key_report(
            store,
            _Key(
                index.record_key(record_ref),
                "the record",
                "record_ref",
                record_ref,
                {"recordRef": "0x" + record_ref.hex()},
                "the monitor has mirrored no event of this record",
            ),
            None if api is None else lambda: api.record_index(record_ref),
        )

    def patient_report(self, store: Store, patient: str) -> Report:
        """A patient's trail (every event about them) as the monitor verified it, proven whole
        by its own index (:meth:`_key_report`), the operator's list from ``/v1/events``."""
        api = self.api
        return self._key_report(
            store,
            _Key(
                index.patient_key(patient),
                "the patient",
                "patient",
                patient,
                {"patient": patient},
                "the monitor has mirrored no event about this patient",
            ),
            None if api is None else lambda: api.patient_index(patient),
        )

    def _key_report(
        self, store: Store, key: _Key, ask: Callable[[], IndexProofOut | None] | None
    ) -> Report:
        """A key's trail as the monitor verified it, proven whole by its own index
        (:mod:`scripts.monitor.trails`): the list of leaves from the operator (``ask``; None:
        no operator) below the index's size, checked against the monitor's own index (else
        read from the mirror, and what was wrong reported); the mirror's later entries by
        position."""
        started = time.perf_counter()
        db = store.db
        db.execute("BEGIN")  # one snapshot: the index's size, root and nodes agree
        try:
            size, root, proof = store.index().lookup(key.key)
            row = db.execute(
                "SELECT index_root FROM checkpoints WHERE size = ?", (size,)
            ).fetchone()
        finally:
            db.execute("COMMIT")
        own = trails.OwnIndex(
            key.key, key.what, size, root, proof, None if row is None else bytes(row[0])
        )
        findings = trails.own_root_findings(own)
        leaves: list[int] | None = None
        head = None
        if not size:
            leaves, source = [], "the monitor's mirror (no checkpoint verified yet)"
        elif ask is None:
            source = "the monitor's mirror (no operator to ask)"
        else:
            served: trails.ListCheck | None = None
            try:
                served = trails.check_served(ask(), own)
            except ApiError as exc:
                if exc.context.get("status") == HTTPStatus.NOT_FOUND:
                    served = trails.check_unknown(own)  # the operator knows no event of the key
                else:
                    source = f"the monitor's mirror (the operator did not answer: {exc.detail})"
            if served is not None:
                leaves, head = served.leaves, served.head
                findings += served.findings
                _keep_operators_lies(store, served.findings)
                source = (
                    "the monitor's mirror (the operator's list is not the whole list)"
                    if leaves is None
                    else "the operator's list, checked against the monitor's own index"
                )
        # The mirror has no index on the column (state formats 2 and 3 dropped them): below the
        # index's size a scan, above it a range of positions (the rowid).
        where = f"FROM entries WHERE {key.column} = ? AND pos"
        if leaves is None:  # a scan of the mirror: the operator's list is not to be had
            leaves = [
                int(pos)
                for (pos,) in db.execute(f"SELECT pos {where} < ? ORDER BY pos", (key.value, size))
            ]
            head, found = trails.check_list(leaves, own, "the mirror")
            findings += found
        tail = [
            int(pos)
            for (pos,) in db.execute(f"SELECT pos {where} >= ? ORDER BY pos", (key.value, size))
        ]
        positions = leaves + tail
        if not positions and not findings:
            raise _Problem(HTTPStatus.NOT_FOUND, key.none)
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(positions), _ROWS_PER_QUERY):
            chunk = positions[start : start + _ROWS_PER_QUERY]
            marks = ",".join("?" * len(chunk))
            rows += db.execute(
                "SELECT leaf, raw, digest, record_ref FROM entries "  # noqa: S608
                f"WHERE pos IN ({marks}) ORDER BY pos",
                chunk,
            ).fetchall()
        lines = _event_lines(store, rows)
        return Report(
            tool="monitor",
            subject={
                **key.subject,
                "log": _log_name(store),
                "source": source,
                "completeness": trails.completeness_text(own, head, len(tail)),
            },
            chain=None,
            events=lines,
            findings=findings + [f for line in lines for f in line.findings],
            stats={"events": len(lines), "seconds": round(time.perf_counter() - started, 4)},
        )


@dataclass(frozen=True)
class _Key:
    """A trail's key in the monitor's index, and how the mirror and the report name it."""

    key: bytes
    #: Whose key it is, for a person ("the record").
    what: str
    #: The mirror's column holding it, and its value there.
    column: Literal["record_ref", "patient"]
    value: bytes | str
    #: The report's subject (besides the log, the source, the completeness).
    subject: dict[str, Any]
    #: The 404's detail when the mirror holds no event of it.
    none: str


def _log_name(store: Store) -> str:
    identity = store.get("identity") or {}
    return f"AuditLog {identity.get('auditLog')} on chain {identity.get('chainId')}"


def _event_lines(store: Store, rows: list[tuple[Any, ...]]) -> list[EventLine]:
    """Mirror rows (leaf, raw entry, digest, record) as a report's lines, each with the
    findings the monitor keeps about its event and the first verified checkpoint covering it."""
    sizes = [
        int(s)
        for (s,) in store.db.execute(
            "SELECT size FROM checkpoints WHERE verified = 1 ORDER BY size"
        )
    ]
    lines: list[EventLine] = []
    for leaf, raw, digest, record_ref in rows:
        entry = json.loads(raw)
        signed = SignedEvent.model_validate(entry["event"])
        own = [
            Finding(code, severity, detail, event_id, json.loads(context))
            for code, severity, detail, event_id, context in store.db.execute(
                "SELECT code, severity, detail, event_id, context FROM findings "
                "WHERE event_id = ? ORDER BY id",
                (signed.event_id,),
            )
        ]
        at = bisect.bisect_right(sizes, int(leaf))
        lines.append(
            EventLine(
                event=signed.event,
                leaf_index=int(leaf),
                digest=bytes(digest),
                signature=signed.signature,
                record_ref=None if record_ref is None else bytes(record_ref),
                consent=str(entry.get("consent", "")),
                anchored_in=sizes[at] if at < len(sizes) else None,
                findings=own,
            )
        )
    return lines


class _Handler(BaseHTTPRequestHandler):
    owner: Console
    server_version = "medtrail-monitor"
    #: Who the request's credential names (set once it is checked).
    supervisor = ""

    def log_message(self, format: str, *args: Any) -> None:
        return None

    # -- plumbing -------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, document: Any, status: int = 200) -> None:
        self._send(status, json.dumps(document).encode(), "application/json")

    def _problem(self, status: HTTPStatus, detail: str) -> None:
        document = {
            "type": "about:blank",
            "title": status.phrase,
            "status": int(status),
            "detail": detail,
        }
        self._send(int(status), json.dumps(document).encode(), "application/problem+json")

    def _authorized(self) -> str | None:
        """The supervisor the request's credential names (None: no valid credential)."""
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            found = self.owner.supervisor_of(header[7:])
            if found is not None:
                return found
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        morsel = cookie.get(COOKIE)
        return None if morsel is None else self.owner.supervisor_of(morsel.value)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        try:
            if parts.path == "/login":
                self._login(method)
                return
            supervisor = self._authorized()
            if supervisor is None:
                if method == "GET" and parts.path == "/":
                    self._send(200, _asset("login.html"), "text/html; charset=utf-8")
                    return
                raise _Problem(HTTPStatus.UNAUTHORIZED, "the console token is needed")
            self.supervisor = supervisor
            self._route(method, parts.path, parse_qs(parts.query))
        except _Problem as problem:
            self._problem(problem.status, problem.detail)
        except (sqlite3.Error, ValidationError, ValueError, LedgerError) as exc:
            self._problem(HTTPStatus.SERVICE_UNAVAILABLE, f"the monitor's state: {exc}")

    def _login(self, method: str) -> None:
        if method != "POST":
            self._send(200, _asset("login.html"), "text/html; charset=utf-8")
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(min(length, 4096)).decode(errors="replace"))
        token = (form.get("token") or [""])[0]
        if self.owner.supervisor_of(token) is None:
            raise _Problem(HTTPStatus.UNAUTHORIZED, "wrong console token")
        self._send(
            303,
            b"",
            "text/plain",
            Location="/",
            Set_Cookie=f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/",
        )

    def _route(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        owner = self.owner
        if method == "GET" and path == "/":
            self._send(200, _asset("console.html"), "text/html; charset=utf-8")
            return
        if method == "GET" and path.startswith("/static/"):
            name = path.removeprefix("/static/")
            if name not in _STATIC:
                raise _Problem(HTTPStatus.NOT_FOUND, "no such asset")
            self._send(200, _asset(name), _STATIC[name] + "; charset=utf-8")
            return
        store = owner.store()
        try:
            self._answer(store, method, path, query)
        finally:
            store.close()

    def _answer(self, store: Store, method: str, path: str, query: dict[str, list[str]]) -> None:
        owner = self.owner
        if method == "GET" and path == "/api/status":
            self._json(owner.status(store))
        elif method == "GET" and path == "/api/alerts":
            after = _int((query.get("after") or ["0"])[0], "after")
            self._json([a.body for a in store.alerts_after(after, limit=200)])
        elif method == "GET" and path == "/api/findings":
            order = {"error": 0, "review": 1, "warning": 2}
            items = sorted(
                store.findings(limit=500),
                key=lambda s: (order.get(s.finding.severity, 3), -s.id),
            )
            self._json([{"id": s.id, "foundAt": s.found_at, **s.finding.to_json()} for s in items])
        elif method == "GET" and path == "/api/institutions":
            self._json(owner.institutions(store))
        elif method == "GET" and path == "/api/emergencies":
            self._json(owner.emergencies(store))
        elif method == "POST" and path.startswith("/api/emergencies/"):
            event_id = _hex32(path.removeprefix("/api/emergencies/"), "eventId")
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(min(length, 16_384)) or b"null")
            except ValueError:
                raise _Problem(HTTPStatus.BAD_REQUEST, "the body is not JSON") from None
            self._json(owner.decide(store, event_id, body, self.supervisor), status=201)
        elif method == "GET" and path == "/api/decisions":
            rows = owner.decision_rows(store)
            bundle = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": decision_audit_event(row)} for row in rows],
            }
            self._send(
                200,
                json.dumps(bundle, indent=2).encode(),
                "application/fhir+json",
                Content_Disposition='attachment; filename="decisions.fhir.json"',
            )
        elif method == "GET" and path.startswith("/api/trail/"):
            record = _hex32(path.removeprefix("/api/trail/"), "recordRef")
            form = _format(query)
            report = owner.trail_report(store, record)
            self._trail(report, f"trail-0x{record.hex()[:12]}", form)
        elif method == "GET" and path.startswith("/api/patients/") and path.endswith("/trail"):
            patient = _address(path.removeprefix("/api/patients/").removesuffix("/trail"))
            form = _format(query)
            report = owner.patient_report(store, patient)
            self._trail(report, f"patient-trail-{patient[:12]}", form)
        elif method == "GET" and path == "/metrics":
            self._send(200, metrics_text(store, owner.lag()), "text/plain; version=0.0.4")
        else:
            raise _Problem(HTTPStatus.NOT_FOUND, f"no {method} {path}")

    def _trail(self, report: Report, name: str, form: str) -> None:
        if form == "json":
            self._json(report.to_json())
        elif form == "fhir":
            out = io.StringIO()
            write_fhir_bundle(report, out, indent=2)
            self._send(
                200,
                out.getvalue().encode(),
                "application/fhir+json",
                Content_Disposition=f'attachment; filename="{name}.fhir.json"',
            )
        else:  # csv (_format)
            out = io.StringIO()
            write_csv(report, out)
            self._send(
                200,
                out.getvalue().encode(),
                "text/csv; charset=utf-8",
                Content_Disposition=f'attachment; filename="{name}.csv"',
            )


def _int(value: str, name: str) -> int:
    if not value.isdigit():
        raise _Problem(HTTPStatus.BAD_REQUEST, f"{name} is a number")
    return int(value)


def _format(query: dict[str, list[str]]) -> str:
    form = (query.get("format") or ["json"])[0]
    if form not in ("json", "fhir", "csv"):
        raise _Problem(HTTPStatus.BAD_REQUEST, "format is json, fhir or csv")
    return form


def _address(value: str) -> str:
    """A patient's address from the path, checksummed (EIP-55) as the mirror keeps it."""
    try:
        return to_checksum_address(parse_address(value, "patient"))
    except MalformedEventError as exc:
        raise _Problem(
            HTTPStatus.BAD_REQUEST,
            f"{exc.detail} (an address is 0x and 40 hex digits; mixed case must be EIP-55)",
        ) from None


def _hex32(value: str, name: str) -> bytes:
    if not _HEX32.fullmatch(value):
        raise _Problem(HTTPStatus.BAD_REQUEST, f"{name} is 0x and 64 hex digits")
    return bytes.fromhex(value[2:])


def _asset(name: str) -> bytes:
    return resources.files("scripts.monitor").joinpath("static", name).read_bytes()
