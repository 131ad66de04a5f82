"""Open a real :class:`~ledger.service.Ledger` on any chain backend and store backend."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from pydantic import SecretStr

from ledger.chain.client import deploy_to_rpc
from ledger.events import InstitutionKind
from ledger.service import Ledger
from ledger.settings import Settings
from tests.support.actors import Institution, Patient
from tests.support.anvil import Anvil
from tests.support.postgres import fresh_database

FUNDING_WEI = 100 * 10**18


@dataclass
class Env:
    """A running ledger with a registered hospital, pharmacy, insurer and a patient."""

    ledger: Ledger
    hospital: Institution
    pharmacy: Institution
    insurer: Institution
    patient: Patient
    chain_backend: str
    store_backend: str

    def institution(self, name: str, kind: InstitutionKind, register: bool = True) -> Institution:
        inst = Institution(name, kind, self.ledger.domain)
        if register:
            self.ledger.register_institution(inst.address, kind, name)
        return inst


def store_url(store_backend: str, tmp_path: Path, stack: ExitStack) -> str:
    if store_backend == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return stack.enter_context(fresh_database())


@contextmanager
def open_env(
    chain_backend: str,
    store_backend: str,
    tmp_path: Path,
    anvil: Anvil | None = None,
    **settings: Any,
) -> Iterator[Env]:
    """A fresh ledger (new contracts, new database) with three registered institutions."""
    with ExitStack() as stack:
        url = store_url(store_backend, tmp_path, stack)
        base: dict[str, Any] = {
            "database_url": url,
            "anchor_interval": 3600.0,
            "institution_cache_ttl": 0.0,
            "confirmations": 1,
            "embedded_clock_sync": False,  # tests stamp events with chain time when it matters
            **settings,
        }
        if chain_backend == "embedded":
            config = Settings(mode="embedded", **base)
        else:
            assert anvil is not None
            operator, registrar = Account.create(), Account.create()
            for account in (operator, registrar):
                anvil.set_balance(account.address, FUNDING_WEI)
            admin = anvil.accounts[0]
            deployment = deploy_to_rpc(
                anvil.url,
                admin,
                admin=admin.address,
                log_operator=operator.address,
                registrars=[registrar.address],
            )
            deployment_file = tmp_path / "deployment.json"
            deployment.write(deployment_file)
            config = Settings(
                mode="rpc",
                rpc_url=anvil.url,
                deployment_file=deployment_file,
                operator_key=SecretStr(operator.key.hex()),
                registrar_key=SecretStr(registrar.key.hex()),
                **base,
            )
        ledger = Ledger.open(config)
        stack.callback(ledger.close)
        env = Env(
            ledger=ledger,
            hospital=Institution("General Hospital", InstitutionKind.HOSPITAL, ledger.domain),
            pharmacy=Institution("Corner Pharmacy", InstitutionKind.PHARMACY, ledger.domain),
            insurer=Institution("Health Insurer", InstitutionKind.INSURER, ledger.domain),
            patient=Patient(),
            chain_backend=chain_backend,
            store_backend=store_backend,
        )
        for inst in (env.hospital, env.pharmacy, env.insurer):
            ledger.register_institution(inst.address, inst.kind, inst.name)
        yield env
