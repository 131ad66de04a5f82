"""Each tampering the audit detects, done to a real service (uvicorn, HTTP) on anvil
(JSON-RPC) while medtrail-monitor follows it as a subprocess: its alert appears live, in the
monitor's alert stream. (A forged signature, with a kill -9, is in :mod:`test_live`; the same
tamperings against the in-process service, each finding's details, in :mod:`test_core`.)"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.events import SignedEvent
from tests.integration.conftest import ANVIL_MISSING
from tests.monitor.test_live import alerts, codes, start, wait_until
from tests.scripts.support import (
    Story,
    anchor,
    chain_now,
    delete_event,
    restore_db,
    rewrite_body,
    snapshot_db,
    tell_story,
)
from tests.support.anvil import Anvil, anvil_available
from tests.support.ledgers import Env, open_env
from tests.support.server import serving


@dataclass
class Live:
    env: Env
    story: Story
    path: Path
    monitor: subprocess.Popen[bytes]

    def accesses(self, count: int, start: int = 0) -> list[SignedEvent]:
        env, t = self.env, chain_now(self.env)
        return [
            env.hospital.sign(
                env.hospital.access(self.story.record, env.patient.address, occurredAt=t + n)
            )
            for n in range(start, start + count)
        ]

    def verified(self) -> int:
        """Entries the monitor has verified and kept (its cursor, from its state file)."""
        try:
            with closing(sqlite3.connect(self.path / "monitor.db", timeout=30)) as db:
                row = db.execute("SELECT value FROM meta WHERE key = 'served'").fetchone()
        except sqlite3.OperationalError:  # the monitor has not created its file yet
            return 0
        return 0 if row is None else int(json.loads(row[0])[0])

    def wait_verified(self, size: int) -> None:
        wait_until(f"{size} entries verified", lambda: self.verified() >= size, self.path)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The monitor stopped (SIGSTOP) while the store is changed, so that it reads the
        result, not a state half-way."""
        self.monitor.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.monitor.send_signal(signal.SIGCONT)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """A fresh service on a fresh anvil, its clean story told, and the monitor following it
    (caught up: the story's emergency access alerted, for review)."""
    if not anvil_available():
        pytest.skip(ANVIL_MISSING)
    with (
        Anvil() as node,
        open_env("anvil", "sqlite", tmp_path, node, institution_cache_ttl=60.0) as env,
        serving(env.ledger, worker=False) as (url, key),
    ):
        story = tell_story(env)
        monitor = start(env, url, key, tmp_path)
        world = Live(env, story, tmp_path, monitor)
        try:
            world.wait_verified(len(story.events))
            wait_until("the clean story", lambda: "emergency-access" in codes(tmp_path), tmp_path)
            yield world
        finally:
            monitor.send_signal(signal.SIGTERM)
            monitor.wait(timeout=20)


def rewritten_before_it_is_read(live: Live) -> None:
    (signed,) = live.accesses(1)
    with live.paused():
        live.env.ledger.submit([signed])
        rewrite_body(live.env.ledger, signed.event, action=3)
        anchor(live.env.ledger)


def rewritten_after_it_was_mirrored(live: Live) -> None:
    rewrite_body(live.env.ledger, live.story.events[0].event, action=3)


def deleted_before_it_is_read(live: Live) -> None:
    first, second = live.accesses(2)
    with live.paused():
        live.env.ledger.submit([first, second])
        anchor(live.env.ledger)
        delete_event(live.env.ledger, first.event_id)


def rolled_back(live: Live) -> None:
    """The operator restores an older copy of its store."""
    backup = live.path / "backup.db"
    snapshot_db(live.env.ledger, backup)
    live.env.ledger.submit(live.accesses(2))
    anchor(live.env.ledger)
    live.wait_verified(len(live.story.events) + 2)
    restore_db(live.env.ledger, backup)


def split_view(live: Live) -> None:
    """History rewritten past what the monitor verified: an older copy of the store, then
    other events in their place (a head of the same size with another root)."""
    backup = live.path / "backup.db"
    snapshot_db(live.env.ledger, backup)
    live.env.ledger.submit(live.accesses(2))
    live.env.ledger.log.integrate_all()
    live.wait_verified(len(live.story.events) + 2)
    with live.paused():
        restore_db(live.env.ledger, backup)
        live.env.ledger.submit(live.accesses(2, start=10))
        live.env.ledger.log.integrate_all()


def wrong_index_root(live: Live) -> None:
    """The operator anchors the log's right root beside an index root that is not its index's."""
    ledger = live.env.ledger
    previous = ledger.chain.latest_checkpoint()
    assert previous is not None
    ledger.submit(live.accesses(1))
    ledger.log.integrate_all()
    head = ledger.log.head()
    proof = ledger.log.consistency_proof(previous.tree_size, head.size)
    signed = ledger.chain.sign_checkpoint(head.size, head.root, bytes([9]) * 32, proof)
    ledger.chain.wait_mined(ledger.chain.broadcast(signed))


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (rewritten_before_it_is_read, "digest-mismatch"),
        (rewritten_after_it_was_mirrored, "entry-changed"),
        (deleted_before_it_is_read, "entry-missing"),
        (rolled_back, "log-rollback"),
        (split_view, "split-view"),
        (wrong_index_root, "index-root-mismatch"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_each_tampering_raises_its_alert_live(
    live: Live, tamper: Callable[[Live], None], code: str
) -> None:
    before = len(alerts(live.path))
    assert all(a.get("severity") != "error" for a in alerts(live.path))
    tamper(live)
    wait_until(code, lambda: code in codes(live.path)[before:], live.path)
    raised = [a for a in alerts(live.path)[before:] if a["code"] == code]
    assert raised[0]["severity"] == "error"
