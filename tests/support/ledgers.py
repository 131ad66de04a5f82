"""Open a real :class:`~ledger.service.Ledger` on any chain backend and store backend."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from pydantic import SecretStr

from ledger.chain.client import GrantRequest, deploy_to_rpc
from ledger.events import InstitutionKind, Purpose, purposes_mask
from ledger.service import Ledger
from ledger.settings import Settings
from tests.support.actors import Clock, Institution, Patient
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
    #: What the actors date their events by: after every registration made here.
    clock: Clock

    def institution(self, name: str, kind: InstitutionKind, register: bool = True) -> Institution:
        inst = Institution(name, kind, self.ledger.domain, clock=self.clock)
        if register:
            self.ledger.register_institution(inst.address, kind, name)
            self.clock.after(self.ledger.chain.latest_timestamp())
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
        clock = Clock()
        env = Env(
            ledger=ledger,
            hospital=Institution(
                "General Hospital", InstitutionKind.HOSPITAL, ledger.domain, clock=clock
            ),
            pharmacy=Institution(
                "Corner Pharmacy", InstitutionKind.PHARMACY, ledger.domain, clock=clock
            ),
            insurer=Institution(
                "Health Insurer", InstitutionKind.INSURER, ledger.domain, clock=clock
            ),
            patient=Patient(),
            chain_backend=chain_backend,
            store_backend=store_backend,
            clock=clock,
        )
        for inst in (env.hospital, env.pharmacy, env.insurer):
            ledger.register_institution(inst.address, inst.kind, inst.name)
        clock.after(ledger.chain.latest_timestamp())
        yield env


# --------------------------------------------------------------------------- consent


def relay_grant(
    env: Env,
    grantee: str,
    record: bytes,
    purposes: Sequence[Purpose] = (Purpose.TREATMENT,),
    *,
    lifetime: int = 86_400,
) -> int:
    """The patient grants ``grantee`` access to ``record`` for ``lifetime`` seconds (signed
    with eth-account), relayed by the operator; returns the grant's id."""
    ledger, patient = env.ledger, env.patient
    now = ledger.chain.latest_timestamp()
    values: dict[str, Any] = {
        "grantee": grantee,
        "record_ref": record,
        "purposes": purposes_mask(purposes),
        "not_before": now - 60,
        "expires_at": now + lifetime,
        "nonce": ledger.chain.consent_nonce(patient.address),
        "deadline": now + 600,
    }
    signature = patient.sign_grant(ledger.consent_domain, **values)
    request = GrantRequest(
        grantee=grantee,
        record_ref=record,
        purposes=values["purposes"],
        not_before=values["not_before"],
        expires_at=values["expires_at"],
    )
    return ledger.relay_grant(patient.address, request, values["deadline"], signature).grant_id


def revoke_grant(env: Env, grant_id: int) -> int:
    """The patient revokes the grant, relayed by the operator; returns the revocation's
    block time."""
    ledger, patient = env.ledger, env.patient
    now = ledger.chain.latest_timestamp()
    nonce = ledger.chain.consent_nonce(patient.address)
    signature = patient.sign_revoke(
        ledger.consent_domain, grant_id=grant_id, nonce=nonce, deadline=now + 600
    )
    revoked_at = ledger.relay_revoke(patient.address, grant_id, now + 600, signature).revoked_at
    assert revoked_at, f"grant {grant_id} was not revoked"
    return revoked_at
