"""Prometheus metrics of one API process (its own registry: several apps may share a process).

* ``medtrail_http_requests_total{method,route,status}`` and
  ``medtrail_http_request_duration_seconds{method,route}`` — every request, by route template;
* ``medtrail_events_ingested_total{type}`` — events stored (duplicates not counted);
* ``medtrail_event_refusals_total{code}`` — events (or whole batches) refused, by problem code;
* ``medtrail_ingest_seconds`` — time to check and store one batch;
* ``medtrail_log_tree_size``, ``medtrail_log_anchored_size``, ``medtrail_log_confirmed_size``
  — read from the store at scrape time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ledger.errors import LedgerError
from ledger.service import Ledger

log = logging.getLogger("medtrail.api")


class _LogCollector(Collector):
    """The log's sizes, read when scraped."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def collect(self) -> Iterator[Metric]:
        try:
            tree_size = self.ledger.log.head().size
            anchored, confirmed = self.ledger.anchor_state()
        except LedgerError as exc:
            log.warning("metrics: the store did not answer: %s", exc.detail)
            return
        for name, doc, value in (
            ("medtrail_log_tree_size", "Events integrated into the Merkle tree.", tree_size),
            (
                "medtrail_log_anchored_size",
                "Tree size of the latest checkpoint mined on chain.",
                anchored,
            ),
            (
                "medtrail_log_confirmed_size",
                "Tree size of the latest confirmed checkpoint.",
                confirmed,
            ),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            yield gauge


class Metrics:
    """The metrics of one app."""

    def __init__(self, ledger: Ledger) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "medtrail_http_requests",
            "HTTP requests, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "medtrail_http_request_duration_seconds",
            "HTTP request duration, by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.events_ingested = Counter(
            "medtrail_events_ingested",
            "Events stored by POST /v1/events (duplicates not counted), by type.",
            ["type"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "medtrail_event_refusals",
            "Events refused by POST /v1/events, by problem code.",
            ["code"],
            registry=self.registry,
        )
        self.ingest_seconds = Histogram(
            "medtrail_ingest_seconds",
            "Time to check and store one batch of events.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.registry.register(_LogCollector(ledger))

    def render(self) -> bytes:
        return generate_latest(self.registry)
