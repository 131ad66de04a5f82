"""Scale-out: exactly one active sequencer/anchor worker per log, with fail-over (issue 3
"Scale-out", DESIGN §6.2-6.3).

On PostgreSQL two worker *processes* (``tests/support/worker_proc.py``) run over the same
database and the same anvil deployment while threads ingest events: one is active, the other
stands by; ``kill -9`` of the active one releases its advisory lock with its session and the
other takes over within seconds; at the end nothing is lost or anchored twice. On SQLite the
lease is an ``flock`` beside the database file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import pytest
from sqlalchemy import select, text

from ledger.anchor import ANCHORED, CONFIRMED
from ledger.ingest import Receipt
from ledger.store import Store
from ledger.worker import WorkerLease
from tests.support.anchoring import CHECKPOINTS, assert_sound
from tests.support.anvil import Anvil
from tests.support.ledgers import Env, open_env
from tests.support.postgres import SKIP_REASON, fresh_database, postgres_url

REPO = Path(__file__).resolve().parents[2]
ACTIVE = "now the active sequencer/anchor worker"

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, poll: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


# --------------------------------------------------------------------------- processes


@dataclass
class WorkerProcess:
    """One ``tests.support.worker_proc`` process and its log."""

    name: str
    log_path: Path
    process: subprocess.Popen[bytes]
    _log: IO[bytes]

    @classmethod
    def spawn(cls, name: str, directory: Path, env: dict[str, str]) -> WorkerProcess:
        log_path = directory / f"{name}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.worker_proc",
                "--name",
                name,
                "--max-seconds",
                "75",
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        return cls(name, log_path, process, log)

    def lines(self, needle: str) -> list[float]:
        """Times of the log lines containing ``needle``."""
        text_ = self.log_path.read_text(errors="replace")
        return [float(line.split()[0]) for line in text_.splitlines() if needle in line]

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.name} ---\n" + self.log_path.read_text(errors="replace")[-chars:]

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive:
            self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float = 20.0) -> int:
        if self.alive:
            self.process.terminate()
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def close(self) -> None:
        self.kill()
        self._log.close()


def worker_environment(env: Env) -> dict[str, str]:
    settings = env.ledger.settings
    assert settings.operator_key is not None
    assert settings.rpc_url is not None
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")},
        "PYTHONPATH": str(REPO),
        "MEDTRAIL_MODE": "rpc",
        "MEDTRAIL_DATABASE_URL": settings.database_url,
        "MEDTRAIL_RPC_URL": settings.rpc_url,
        "MEDTRAIL_RPC_TIMEOUT": "5",
        "MEDTRAIL_DEPLOYMENT_FILE": str(settings.deployment_file),
        "MEDTRAIL_OPERATOR_KEY": settings.operator_key.get_secret_value(),
        "MEDTRAIL_ANCHOR_INTERVAL": "0.5",
        "MEDTRAIL_CONFIRMATIONS": "1",
        "MEDTRAIL_INSTITUTION_CACHE_TTL": "3600",
    }


# --------------------------------------------------------------------------- ingest load


@dataclass
class Ingest:
    """Threads submitting batches of accesses (every fifth batch resent: duplicates)."""

    env: Env
    threads: int = 3
    batch: int = 4
    stop: threading.Event = field(default_factory=threading.Event)
    receipts: list[Receipt] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _running: list[threading.Thread] = field(default_factory=list)

    def _run(self, index: int) -> None:
        hospital, patient = self.env.hospital, self.env.patient.address
        record = hospital.record(f"mrn-{index}")
        previous = None
        count = 0
        while not self.stop.is_set():
            count += 1
            if previous is not None and count % 5 == 0:
                signed = previous  # a client resending after a timeout
            else:
                signed = [
                    hospital.sign(hospital.access(record, patient)) for _ in range(self.batch)
                ]
            try:
                self.receipts.extend(self.env.ledger.submit(signed))
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)
                return
            previous = signed
            self.stop.wait(0.02)

    def start(self) -> None:
        for index in range(self.threads):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._running.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self._running:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self._running)
        assert not self.errors, self.errors

    @property
    def events(self) -> int:
        return len({r.event_id for r in self.receipts})


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres_env(tmp_path: Path, anvil_node: Anvil) -> Iterator[Env]:
    if postgres_url() is None:
        pytest.skip(SKIP_REASON)
    with open_env("anvil", "postgres", tmp_path, anvil_node, institution_cache_ttl=3600.0) as env:
        yield env


@pytest.mark.anvil
@pytest.mark.postgres
def test_two_worker_processes_one_active_and_fail_over_on_kill(
    postgres_env: Env, tmp_path: Path
) -> None:
    env = postgres_env
    ledger = env.ledger
    environment = worker_environment(env)
    ingest = Ingest(env)
    with ExitStack() as stack:
        workers = [WorkerProcess.spawn(name, tmp_path, environment) for name in ("first", "second")]
        for worker in workers:
            stack.callback(worker.close)
        stack.callback(ingest.stop.set)

        def logs() -> str:
            return "\n".join(worker.tail() for worker in workers)

        try:
            # Both up; exactly one takes the lease.
            wait_for(
                "both workers to open the ledger",
                lambda: all(w.lines("standing by") for w in workers) or None,
                timeout=45,
            )
            active = wait_for(
                "an active worker", lambda: [w for w in workers if w.lines(ACTIVE)], timeout=10
            )
            time.sleep(1.0)  # the other keeps polling for the lease meanwhile
            active = [w for w in workers if w.lines(ACTIVE)]
            assert len(active) == 1, logs()
            [first] = active
            [second] = [w for w in workers if w is not first]

            ingest.start()
            wait_for(
                "a checkpoint by the first worker",
                lambda: (
                    (ledger.chain.latest_checkpoint() is not None and ingest.events > 8) or None
                ),
                timeout=20,
            )
            time.sleep(0.5)
            assert not second.lines(ACTIVE), logs()

            # kill -9 the active worker: its session ends, the lock with it.
            killed_at = time.time()
            os.kill(first.process.pid, signal.SIGKILL)
            first.process.wait(10)
            [took_over] = wait_for(
                "the standby to take over", lambda: second.lines(ACTIVE), timeout=10
            )
            takeover = took_over - killed_at
            assert 0 <= takeover < 5, logs()

            time.sleep(1.5)  # more events for the new active worker
            ingest.finish()
            total = ingest.events
            assert total > 0

            def anchored_everything() -> bool:
                latest = ledger.chain.latest_checkpoint()
                if latest is None or latest.tree_size != total:
                    return False
                with ledger.store.read() as connection:
                    status = connection.execute(
                        select(CHECKPOINTS.c.status).where(CHECKPOINTS.c.tree_size == total)
                    ).scalar()
                return status in (ANCHORED, CONFIRMED)

            wait_for("every event to be anchored", anchored_everything, timeout=30)
            assert second.terminate() == 0, logs()
        except BaseException:
            print(logs())
            raise

    # One active at a time: the first from its start until it was killed, then the second.
    assert len(first.lines(ACTIVE)) == 1
    assert len(second.lines(ACTIVE)) == 1
    assert all(t < killed_at for t in first.lines("sent (tx"))
    assert all(t >= took_over for t in second.lines("sent (tx"))
    assert first.lines("sent (tx")
    assert second.lines("sent (tx")

    found = assert_sound(ledger.store, ledger.log, ledger.chain, ingest.receipts)
    assert found.events == total
    assert any(r.duplicate for r in ingest.receipts)
    print(
        f"\n{total} events, {len(ingest.receipts)} receipts, checkpoints {found.sizes}, "
        f"take-over {takeover:.2f} s after kill -9"
    )


@pytest.mark.postgres
def test_the_postgres_lease_is_exclusive_and_dies_with_its_session() -> None:
    with ExitStack() as stack:
        url = stack.enter_context(fresh_database())
        stores = [Store(url), Store(url)]
        for store in stores:
            stack.callback(store.dispose)
        first, second = (WorkerLease(store) for store in stores)
        assert first.acquire()
        assert first.held()
        assert not second.acquire()
        assert not second.held()
        first.release()
        assert second.acquire()
        assert not first.acquire()

        # The holder's session is killed (as when its process dies): the lease is gone.
        assert second._connection is not None
        backend = second._connection.execute(text("SELECT pg_backend_pid()")).scalar()
        second._connection.commit()
        with stores[0].engine.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
        assert not second.held()
        assert first.acquire()
        first.release()
        second.release()


# --------------------------------------------------------------------------- SQLite


def test_the_sqlite_lease_is_an_exclusive_file_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with ExitStack() as stack:
        stores = [Store(url), Store(url)]
        for store in stores:
            stack.callback(store.dispose)
        first, second = (WorkerLease(store) for store in stores)
        stack.callback(first.release)
        stack.callback(second.release)
        assert first.acquire()
        assert first.held()
        assert not second.acquire()
        assert not second.held()
        assert not second.acquire()
        first.release()
        assert second.acquire()
        assert second.held()
        assert not first.acquire()
        second.release()
        assert first.acquire()


def test_the_sqlite_lease_is_released_when_its_process_dies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from ledger.store import Store
        from ledger.worker import WorkerLease
        lease = WorkerLease(Store({url!r}))
        assert lease.acquire()
        print("held", flush=True)
        time.sleep(30)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", holder],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    store = Store(url)
    lease = WorkerLease(store)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"held"
        assert not lease.acquire()
        process.kill()
        process.wait(10)
        assert lease.acquire()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
        lease.release()
        store.dispose()


def test_a_pass_failing_again_and_again_does_not_slow_anchoring(tmp_path: Path) -> None:
    """The grant committer (any `also` pass) failing on every try backs off on its own: the
    anchor pass keeps its poll, so anchoring keeps its promised time."""
    from ledger.chain.model import ChainError
    from ledger.worker import run_worker

    with open_env("embedded", "sqlite", tmp_path) as env:
        worker = env.ledger.anchor
        calls = {"anchor": 0, "failing": 0}
        step = worker.step

        def anchor_step() -> object:
            calls["anchor"] += 1
            return step()

        def failing() -> None:
            calls["failing"] += 1
            raise ChainError("the chain refuses the commit")

        worker.step = anchor_step  # type: ignore[method-assign]
        stop = threading.Event()
        runner = threading.Thread(
            target=run_worker,
            args=(worker, stop),
            kwargs={"poll": 0.05, "max_backoff": 10.0, "also": [("failing", failing)]},
        )
        runner.start()
        time.sleep(1.6)
        stop.set()
        runner.join(timeout=10)
    # Backing off 0.05, 0.1, 0.2, 0.4, 0.8 s: at most 6 tries in 1.6 s; the anchor pass, on
    # its poll of 0.05 s, many more (a shared backoff held it to the same 6).
    assert calls["failing"] <= 6
    assert calls["anchor"] >= 12
