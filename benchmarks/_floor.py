"""The physical floor of HTTP ingest: what any server must do per event, and nothing else.

A bare ASGI app (no framework, no authentication, no rules, no receipts signed): for each
``POST /v1/events`` it parses the batch into the same event models medtrail uses (one
``model_validate_json`` of the body), computes each event's EIP-712 digest, recovers each
signature once (and compares the signer with the event's institution), then stores the batch
durably in one transaction — the next leaf index read under the write lock, the events
inserted in one statement (``executemany``: event id, digest, signature, body), the counter
moved, the commit before the answer — on the same store medtrail uses (SQLite in WAL mode
with ``synchronous=FULL`` in a file of its own, or a table of its own in the PostgreSQL
database). It answers ``{"receipts": [{"leafIndex": n}, ...]}``.

    FLOOR_DATABASE_URL=sqlite:///floor.db FLOOR_CHAIN_ID=31337 FLOOR_AUDIT_LOG=0x... \
        python -m benchmarks._server --floor --port 8123 --workers 2

The benchmark runs it with the same uvicorn, workers, batches and load generator as medtrail's
own server, side by side, so that medtrail's CPU per event can be quoted as a multiple of it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import BaseModel, Field

from ledger.eip712 import recover
from ledger.events import SignedEvent, audit_log_domain

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS floor_events (leaf_index BIGINT PRIMARY KEY, "
    "event_id BYTEA NOT NULL UNIQUE, digest BYTEA NOT NULL, signature BYTEA NOT NULL, "
    "body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS floor_counter (id INTEGER PRIMARY KEY, next_index BIGINT)",
)


class _Batch(BaseModel):
    events: list[SignedEvent] = Field(min_length=1)


class _Store:
    """One connection per worker process; one write transaction per batch."""

    def __init__(self, url: str) -> None:
        self.sqlite = url.startswith("sqlite")
        self.mark = "?" if self.sqlite else "%s"
        if self.sqlite:
            path = url.split(":///", 1)[1]
            self.db: Any = sqlite3.connect(path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            schema = [s.replace("BYTEA", "BLOB") for s in _SCHEMA]
        else:
            import psycopg

            self.db = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
            schema = list(_SCHEMA)
        for statement in schema:
            self._run(statement)
        self._run("INSERT INTO floor_counter (id, next_index) VALUES (1, 0) ON CONFLICT DO NOTHING")
        if not self.sqlite:
            self.db.commit()

    def _run(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.db.execute(sql, params)

    def insert(self, rows: list[tuple[bytes, bytes, bytes, str]]) -> int:
        """Store ``rows`` after the log's last leaf; the first leaf index."""
        m = self.mark
        insert = (
            "INSERT INTO floor_events (leaf_index, event_id, digest, signature, body) "
            f"VALUES ({m}, {m}, {m}, {m}, {m})"
        )
        if self.sqlite:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                first = self.db.execute("SELECT next_index FROM floor_counter WHERE id = 1")
                start = int(first.fetchone()[0])
                self.db.executemany(insert, [(start + i, *row) for i, row in enumerate(rows)])
                self.db.execute(
                    "UPDATE floor_counter SET next_index = ? WHERE id = 1", (start + len(rows),)
                )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return start
        with self.db.transaction(), self.db.cursor() as cursor:
            cursor.execute("SELECT next_index FROM floor_counter WHERE id = 1 FOR UPDATE")
            start = int(cursor.fetchone()[0])
            cursor.executemany(insert, [(start + i, *row) for i, row in enumerate(rows)])
            cursor.execute(
                "UPDATE floor_counter SET next_index = %s WHERE id = 1", (start + len(rows),)
            )
        return start


class FloorApp:
    """The ASGI app."""

    def __init__(self) -> None:
        self.domain = audit_log_domain(
            int(os.environ["FLOOR_CHAIN_ID"]), os.environ["FLOOR_AUDIT_LOG"]
        )
        self.store = _Store(os.environ["FLOOR_DATABASE_URL"])

    def ingest(self, body: bytes) -> bytes:
        batch = _Batch.model_validate_json(body).events
        rows = []
        for signed in batch:
            digest = signed.digest(self.domain)
            if recover(digest, signed.signature) != signed.event.institution:
                raise ValueError("not signed by its institution")
            rows.append(
                (signed.event.eventId, digest, signed.signature, signed.event.model_dump_json())
            )
        start = self.store.insert(rows)
        receipts = ",".join(f'{{"leafIndex":{start + i}}}' for i in range(len(rows)))
        return b'{"receipts":[' + receipts.encode() + b"]}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, answer = 200, b"{}"
        if scope["method"] == "POST":
            chunks = []
            more = True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            try:
                answer = self.ingest(b"".join(chunks))
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                status, answer = 422, str(exc).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def app_factory() -> FloorApp:
    return FloorApp()
