"""Where the monitor's alerts go: a JSON-lines file, a webhook, Prometheus metrics.

Alerts are queued in the store's outbox in the same transaction as what they report; they
are delivered after it commits. Each alert carries its ``id`` (increasing):

* the JSON-lines stream (:class:`JsonLines`) appends each alert once: at start it reads the
  last id it wrote back from the file, so that a crash between the write and anything after
  it neither loses nor repeats a line;
* the webhook (:class:`Webhook`) POSTs each alert as JSON, signed with HMAC-SHA256 over the
  body with a shared secret (header ``X-Medtrail-Signature: sha256=<hex>``, and
  ``X-Medtrail-Alert-Id``), retried with exponential backoff until the receiver answers 2xx;
  delivery is at least once (a crash after the POST and before it is marked sends it again:
  the receiver drops an id it has seen);
* the metrics (:func:`metrics_text`) are read from the store when scraped: findings by code
  and severity, entries and checkpoints verified, lag, sources up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ledger.fileio import append_durably
from scripts.monitor.store import Store

__all__ = ["SIGNATURE_HEADER", "JsonLines", "Webhook", "metrics_text", "sign"]

SIGNATURE_HEADER = "X-Medtrail-Signature"
ALERT_ID_HEADER = "X-Medtrail-Alert-Id"
#: Seconds before the first retry; doubled each time, at most :data:`MAX_BACKOFF`.
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 300.0


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class JsonLines:
    """Appends each alert once to a JSON-lines file (synced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.last = _last_id(path)

    def deliver(self, store: Store) -> int:
        """Append the alerts after the last one written; how many."""
        alerts = store.alerts_after(self.last)
        if not alerts:
            return 0
        text = "".join(json.dumps(a.body, sort_keys=True) + "\n" for a in alerts)
        append_durably(self.path, text)
        self.last = alerts[-1].id
        return len(alerts)


def _last_id(path: Path) -> int:
    """The id of the last complete line of ``path`` (a torn last line is cut off)."""
    if not path.exists():
        return 0
    raw = path.read_bytes()
    end = raw.rfind(b"\n")
    if end + 1 != len(raw):  # a torn write: drop it, it is written again
        with path.open("r+b") as handle:
            handle.truncate(end + 1)
        raw = raw[: end + 1]
    lines = raw.splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


class Webhook:
    """POSTs each alert, signed, retried with backoff."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        *,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.secret = secret
        self._client = client or httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def deliver(self, store: Store, now: float | None = None) -> int:
        """Send every due alert not delivered yet, in order, stopping at the first failure
        (which is retried after its backoff). Returns how many were delivered."""
        at = time.time() if now is None else now
        rows = store.db.execute(
            "SELECT id, body, webhook_attempts, webhook_next FROM alerts WHERE webhook_done = 0 "
            "ORDER BY id LIMIT 1000"
        ).fetchall()
        sent = 0
        for alert_id, body, attempts, next_try in rows:
            if next_try > at:
                break
            payload = body.encode()
            try:
                response = self._client.post(
                    self.url,
                    content=payload,
                    headers={
                        "Content-Type": "application/json",
                        SIGNATURE_HEADER: sign(self.secret, payload),
                        ALERT_ID_HEADER: str(alert_id),
                    },
                )
                ok = 200 <= response.status_code < 300
            except httpx.HTTPError:
                ok = False
            if ok:
                store.db.execute("UPDATE alerts SET webhook_done = 1 WHERE id = ?", (alert_id,))
                sent += 1
                continue
            delay = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** int(attempts))
            store.db.execute(
                "UPDATE alerts SET webhook_attempts = webhook_attempts + 1, webhook_next = ? "
                "WHERE id = ?",
                (at + delay, alert_id),
            )
            break
        return sent


class _StoreCollector(Collector):
    def __init__(self, store: Store, lag: dict[str, Any]) -> None:
        self.store = store
        self.lag = lag

    def collect(self) -> Any:
        findings = CounterMetricFamily(
            "medtrail_monitor_findings",
            "Findings the monitor made, by code and severity.",
            labels=["code", "severity"],
        )
        for (code, severity), count in sorted(self.store.finding_counts().items()):
            findings.add_metric([code, severity], count)
        yield findings
        verified = CounterMetricFamily(
            "medtrail_monitor_entries_verified", "Log entries the monitor verified."
        )
        verified.add_metric([], int(self.store.get("verified", 0)))
        yield verified
        (checkpoints,) = self.store.db.execute(
            "SELECT COUNT(*) FROM checkpoints WHERE verified = 1"
        ).fetchone()
        done = CounterMetricFamily(
            "medtrail_monitor_checkpoints_verified", "On-chain checkpoints the monitor verified."
        )
        done.add_metric([], int(checkpoints))
        yield done
        lag_entries = GaugeMetricFamily(
            "medtrail_monitor_lag_entries", "Entries of the served log not verified yet."
        )
        lag_entries.add_metric([], int(self.lag.get("entries") or 0))
        yield lag_entries
        lag_checkpoints = GaugeMetricFamily(
            "medtrail_monitor_lag_checkpoints", "On-chain checkpoints not verified yet."
        )
        lag_checkpoints.add_metric([], int(self.lag.get("checkpoints") or 0))
        yield lag_checkpoints
        age = self.lag.get("checkpointAge")
        if age is not None:
            gauge = GaugeMetricFamily(
                "medtrail_monitor_checkpoint_age_seconds",
                "Seconds since the latest on-chain checkpoint was mined.",
            )
            gauge.add_metric([], int(age))
            yield gauge
        up = GaugeMetricFamily(
            "medtrail_monitor_source_up",
            "1 when the source answers the monitor, 0 when it is down.",
            labels=["source"],
        )
        for source in ("api", "chain"):
            up.add_metric([source], 0 if self.store.get(f"down:{source}") is not None else 1)
        yield up


def metrics_text(store: Store, lag: dict[str, Any]) -> bytes:
    """The Prometheus text exposition of the monitor's metrics, read from ``store`` now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StoreCollector(store, lag))
    return generate_latest(registry)
