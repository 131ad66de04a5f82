"""The alert sinks: the JSON-lines stream (each alert once, across restarts and torn
writes), the webhook (signed, retried until accepted, in order), the Prometheus metrics."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ledger.verify import Finding
from scripts.monitor.alerts import SIGNATURE_HEADER, JsonLines, Webhook, metrics_text
from scripts.monitor.store import Store

SECRET = b"shared-secret-of-the-office"


def finding(n: int, code: str = "emergency-access", severity: str = "review") -> Finding:
    return Finding(code, severity, f"finding {n}", bytes([n]) * 32, {"n": n})  # type: ignore[arg-type]


def store_with(path: Path, count: int) -> Store:
    store = Store(path)
    with store.step():
        for n in range(count):
            store.add_finding(finding(n), 1_700_000_000 + n)
    return store


def test_a_finding_found_again_is_kept_and_alerted_once(tmp_path: Path) -> None:
    store = store_with(tmp_path / "m.db", 3)
    with store.step():
        assert store.add_finding(finding(1), 1_800_000_000) is None
    assert [a.body["findingId"] for a in store.alerts_after(0)] == [1, 2, 3]


def test_the_json_lines_stream_writes_each_alert_once_across_restarts(tmp_path: Path) -> None:
    store = store_with(tmp_path / "m.db", 3)
    path = tmp_path / "alerts.jsonl"
    assert JsonLines(path).deliver(store) == 3
    with store.step():
        store.add_finding(finding(7), 1_700_000_100)
    with path.open("a") as handle:
        handle.write('{"id": 4, "torn')  # a crash in the middle of a write
    assert JsonLines(path).deliver(store) == 1  # a new process: reads the last id back
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["id"] for line in lines] == [1, 2, 3, 4]
    assert lines[3]["detail"] == "finding 7"
    assert JsonLines(path).deliver(store) == 0


class Receiver:
    """A webhook receiver on 127.0.0.1 that refuses the first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, Any], str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(503)
                else:
                    receiver.received.append(
                        (json.loads(body), self.headers[SIGNATURE_HEADER], body)
                    )
                    self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(failures=2)
    yield server
    server.server.shutdown()


def test_the_webhook_signs_each_alert_and_retries_until_accepted(
    tmp_path: Path, receiver: Receiver
) -> None:
    store = store_with(tmp_path / "m.db", 2)
    hook = Webhook(receiver.url, SECRET)
    assert hook.deliver(store, now=1000.0) == 0  # refused: retried after 1 s
    assert hook.deliver(store, now=1000.5) == 0  # not due yet: nothing sent
    assert hook.deliver(store, now=1001.0) == 0  # refused again: retried after 2 s more
    assert hook.deliver(store, now=1003.0) == 2
    assert hook.deliver(store, now=1004.0) == 0  # each alert delivered once
    assert [body["id"] for body, _sig, _raw in receiver.received] == [1, 2]
    for _body, signature, raw in receiver.received:
        expected = "sha256=" + hmac.new(SECRET, raw, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, expected)
    hook.close()


def test_an_unreachable_webhook_keeps_the_alerts_for_later(tmp_path: Path) -> None:
    store = store_with(tmp_path / "m.db", 1)
    hook = Webhook("http://127.0.0.1:9/hook", SECRET, timeout=0.5)
    assert hook.deliver(store, now=0.0) == 0
    (attempts,) = store.db.execute("SELECT webhook_attempts FROM alerts").fetchone()
    assert attempts == 1
    hook.close()


def test_metrics_give_findings_by_code_and_severity_and_the_lag(tmp_path: Path) -> None:
    store = store_with(tmp_path / "m.db", 3)
    with store.step():
        store.add_finding(finding(9, "digest-mismatch", "error"), 0)
    text = metrics_text(store, {"entries": 5, "checkpoints": 1, "checkpointAge": 30}).decode()
    assert 'medtrail_monitor_findings_total{code="emergency-access",severity="review"} 3.0' in text
    assert 'medtrail_monitor_findings_total{code="digest-mismatch",severity="error"} 1.0' in text
    assert "medtrail_monitor_lag_entries 5.0" in text
    assert "medtrail_monitor_checkpoint_age_seconds 30.0" in text
    assert 'medtrail_monitor_source_up{source="api"} 1.0' in text
