"""The medtrail service as a real subprocess, for the fault and load suites (tests/faults,
tests/load).

    python -m tests.support.service_proc --max-seconds 120

runs the real CLI (``medtrail serve``: uvicorn + the anchor worker) from the ``MEDTRAIL_*``
environment (with ``MEDTRAIL_FAULT=<point>``, an anchor worker that kills the process at that
step: :mod:`tests.support.faulty_anchor`), but can never outlive a test run: it dies with its parent
(``PR_SET_PDEATHSIG``) and exits by itself after ``--max-seconds``.

:class:`Service` starts it on a free 127.0.0.1 port, waits for ``/healthz``, and stops it
(``kill -9`` for a crash, SIGTERM otherwise). :func:`service_env` builds its environment
from an in-process :class:`~tests.support.ledgers.Env` (the same database and deployment),
:func:`api_keys` issues the API keys the clients use, :func:`run_audit` runs the
regulator's ``scripts/audit_log.py`` against it.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from tests.support.lifetime import die_with_parent

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")

#: Seconds a service subprocess may live at most (it exits by itself after that).
DEFAULT_MAX_SECONDS = 150.0


# --------------------------------------------------------------------------- the launcher


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    args = parser.parse_args(argv)
    die_with_parent()
    limit = threading.Timer(args.max_seconds, os._exit, args=(3,))
    limit.daemon = True
    limit.start()
    from api.cli import main as cli_main
    from tests.support.faulty_anchor import arm

    arm()  # MEDTRAIL_FAULT=<point>: the anchor worker kills this process there (fault suite)
    if os.environ.get("MEDTRAIL_MODE", "embedded") == "embedded":
        from tests.support import gas

        gas.install()  # the in-process chain deploys in fewer executions (tests/support/gas.py)
    sys.argv = ["medtrail", "-v", "serve"]
    cli_main()


# --------------------------------------------------------------------------- test side


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, poll: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


_RUNNING: weakref.WeakSet[Service] = weakref.WeakSet()


@atexit.register
def _kill_all() -> None:
    for service in list(_RUNNING):
        with contextlib.suppress(Exception):
            service.kill()


@dataclass(eq=False)
class Service:
    """One ``medtrail serve`` subprocess on 127.0.0.1:``port``, logging to ``log_path``."""

    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    _log: IO[bytes]

    @classmethod
    def start(
        cls,
        env: dict[str, str],
        log_path: Path,
        *,
        port: int,
        max_seconds: float = DEFAULT_MAX_SECONDS,
        ready_timeout: float = 120.0,
        wait_ready: bool = True,
    ) -> Service:
        log = log_path.open("ab")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.support.service_proc",
                "--max-seconds",
                str(max_seconds),
            ],
            cwd=REPO,
            env={**env, "MEDTRAIL_HOST": "127.0.0.1", "MEDTRAIL_PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        service = cls(port, log_path, process, log)
        _RUNNING.add(service)
        if not wait_ready:  # e.g. armed to crash during its first anchor pass
            return service
        try:
            wait_for("the service to answer /healthz", service._healthy, ready_timeout, 0.05)
        except BaseException:
            service.kill()
            print(service.tail())
            raise
        return service

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def _healthy(self) -> bool:
        import httpx

        if not self.alive:
            raise AssertionError(f"the service exited early:\n{self.tail()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself; its return code (-9: it was killed)."""
        return self.process.wait(timeout)

    def kill(self) -> None:
        """``kill -9``: a crash."""
        if self.alive:
            os.kill(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self._close()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not stop in time."""
        if self.alive:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._close()

    def _close(self) -> None:
        _RUNNING.discard(self)
        with contextlib.suppress(Exception):
            self._log.close()

    def tail(self, chars: int = 4000) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- service log {self.log_path} ---\n{text[-chars:]}"


def service_env(env: Any, **overrides: str) -> dict[str, str]:
    """The ``MEDTRAIL_*`` environment of a service over ``env``'s database and deployment
    (rpc mode), anchoring every half second with one confirmation."""
    settings = env.ledger.settings
    assert settings.operator_key is not None
    assert settings.rpc_url is not None
    values = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")},
        "PYTHONPATH": str(REPO),
        "MEDTRAIL_MODE": "rpc",
        "MEDTRAIL_DATABASE_URL": settings.database_url,
        "MEDTRAIL_RPC_URL": settings.rpc_url,
        "MEDTRAIL_RPC_TIMEOUT": "2",
        "MEDTRAIL_DEPLOYMENT_FILE": str(settings.deployment_file),
        "MEDTRAIL_OPERATOR_KEY": settings.operator_key.get_secret_value(),
        "MEDTRAIL_ANCHOR_INTERVAL": "0.5",
        "MEDTRAIL_CONFIRMATIONS": "1",
        "MEDTRAIL_INSTITUTION_CACHE_TTL": "3600",
        "MEDTRAIL_MAX_BATCH": "5000",
    }
    if settings.registrar_key is not None:
        values["MEDTRAIL_REGISTRAR_KEY"] = settings.registrar_key.get_secret_value()
    values.update(overrides)
    return values


def api_keys(env: Any, institutions: Iterable[Any]) -> dict[str, str]:
    """A regulator key (``"regulator"``) and one key per institution (by address)."""
    from api.app import bootstrap_admin_key
    from api.auth import Credentials

    credentials = Credentials(env.ledger.store)
    keys = {"regulator": bootstrap_admin_key(env.ledger)}
    for institution in institutions:
        _info, token = credentials.issue_key("institution", institution.address, institution.name)
        keys[institution.address] = token
    return keys


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def anchored_all(env: Any, total: int) -> bool:
    """The chain's latest checkpoint covers ``total`` events and the store knows it."""
    from sqlalchemy import select

    from ledger.anchor import ANCHORED, CONFIRMED
    from tests.support.anchoring import CHECKPOINTS

    latest = env.ledger.chain.latest_checkpoint()
    if latest is None or latest.tree_size != total:
        return False
    with env.ledger.store.read() as connection:
        status = connection.execute(
            select(CHECKPOINTS.c.status).where(CHECKPOINTS.c.tree_size == total)
        ).scalar()
    return status in (ANCHORED, CONFIRMED)


def run_audit(
    env: Any, service: Service, regulator_key: str, directory: Path, name: str = "audit"
) -> tuple[int, str]:
    """The regulator's ``scripts/audit_log.py`` (its click command, run in this process to
    spare a second interpreter start) against the running service over HTTP and the chain
    over JSON-RPC: ``(exit status, output)``. ``name`` names its mirror and state files (a
    new name: a regulator auditing for the first time)."""
    from click.testing import CliRunner

    from scripts.audit_log import main as audit_main

    settings = env.ledger.settings
    result = CliRunner().invoke(
        audit_main,
        [
            "--api",
            service.url,
            "--api-key",
            regulator_key,
            "--rpc-url",
            str(settings.rpc_url),
            "--deployment-file",
            str(settings.deployment_file),
            "--mirror",
            str(directory / f"{name}-mirror.jsonl"),
            "--state",
            str(directory / f"{name}-state.json"),
            "--no-progress",
            "--json",
        ],
        env={k: None for k in os.environ if k.startswith("MEDTRAIL_")},
    )
    return result.exit_code, result.output[-8000:]


if __name__ == "__main__":
    main()
