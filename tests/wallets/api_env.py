"""A real medtrail API (uvicorn on 127.0.0.1, embedded chain) for the wallet's client and CLI
tests, and helpers to put accesses in the log."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ledger.events import InstitutionKind
from tests.support.actors import Institution
from tests.support.anvil import Anvil
from tests.support.ledgers import Env, open_env
from tests.support.server import serving


@dataclass
class Service:
    env: Env
    url: str
    regulator_key: str
    #: A second hospital, the grantee in the tests.
    clinic: Institution

    @property
    def ledger(self) -> object:
        return self.env.ledger

    def access(
        self, by: Institution, patient: str, record: bytes, grant_id: int = 0, custodian: str = ""
    ) -> bytes:
        """Submit a RecordAccess by ``by`` to ``patient``'s ``record``; its event id."""
        ledger = self.env.ledger
        event = by.access(
            record,
            patient,
            custodian=custodian or None,
            grantId=grant_id,
            # a break-glass access (no grant, not the custodian) must say why
            reasonHash=b"\x01" * 32 if custodian and not grant_id else bytes(32),
            occurredAt=ledger.chain.latest_timestamp(),
        )
        ledger.submit([by.sign(event)])
        return bytes(event.eventId)

    def anchor(self) -> None:
        """Anchor everything submitted so far (sent, then confirmed)."""
        self.env.ledger.anchor_now()
        self.env.ledger.anchor_now()


@contextmanager
def running_service(
    tmp_path: Path, anvil: Anvil | None = None, **settings: Any
) -> Iterator[Service]:
    """``settings``: the ledger's (``embedded_consent_v2=True``: a consent-version-2 deployment)."""
    backend = "embedded" if anvil is None else "anvil"
    with open_env(backend, "sqlite", tmp_path, anvil, **settings) as env:
        clinic = env.institution("Riverside Clinic", InstitutionKind.HOSPITAL)
        with serving(env.ledger, worker=False) as (url, key):
            # The API expects sign-ins for its own authority (``siwe_domain``); the test
            # server's port is only known now.
            env.ledger.settings.siwe_domain = urlsplit(url).netloc
            yield Service(env, url, key, clinic)
