"""Open a real :class:`~ledger.service.Ledger` on any chain backend and store backend.

Every :func:`open_env` is a fresh ledger: a new migrated store of its own
(:mod:`tests.support.stores`) and a chain in the state right after medtrail's deployment and
the three institutions' registration. On the embedded chain that state is not rebuilt for
each test: a pool of in-process chains, each deployed and registered once, hands one out
reverted to that state (``revert_to_snapshot``) and its clock moved to now; the ledger is
opened on it by the real :meth:`Ledger.open <ledger.service.Ledger.open>`. A chain in use
(an env still open, say a module's) is never handed out again until it is closed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester
from pydantic import SecretStr

import ledger.service
from ledger.chain.client import Chain, GrantRequest, deploy_to_rpc, embedded_chain
from ledger.chain.deploy import Deployment
from ledger.events import InstitutionKind, Purpose, purposes_mask
from ledger.service import Ledger
from ledger.settings import Settings
from tests.support.actors import Clock, Institution, Patient
from tests.support.anvil import Anvil
from tests.support.stores import migrated_postgres, migrated_sqlite

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


#: The three institutions every env registers: name and kind.
INSTITUTIONS = (
    ("General Hospital", InstitutionKind.HOSPITAL),
    ("Corner Pharmacy", InstitutionKind.PHARMACY),
    ("Health Insurer", InstitutionKind.INSURER),
)


@dataclass
class _ChainTemplate:
    """An embedded chain with medtrail deployed and :data:`INSTITUTIONS` registered, and the
    snapshot of that state."""

    chain: Chain
    tester: EthereumTester
    operator: LocalAccount
    registrar: LocalAccount
    institutions: tuple[LocalAccount, ...]
    snapshot: Any = None
    in_use: bool = False

    @classmethod
    def build(cls, consent_v2: bool) -> _ChainTemplate:
        operator, registrar = Account.create(), Account.create()
        chain, tester = embedded_chain(operator, registrar, consent_v2=consent_v2)
        keys = tuple(Account.create() for _ in INSTITUTIONS)
        for key, (name, kind) in zip(keys, INSTITUTIONS, strict=True):
            chain.register_institution(key.address, kind, name)
        template = cls(chain, tester, operator, registrar, keys)
        template.snapshot = tester.take_snapshot()
        return template

    @property
    def deployment(self) -> Deployment:
        return self.chain.deployment

    def reset(self) -> None:
        """Back to the state right after deployment and registration, the clock at now."""
        self.tester.revert_to_snapshot(self.snapshot)
        latest = int(self.tester.get_block_by_number("latest")["timestamp"])
        # time_travel dates the pending block; mine it, so that the latest block is now too
        # (a test computes deadlines from the latest block's time).
        self.tester.time_travel(max(int(time.time()), latest + 1))
        self.tester.mine_blocks(1)


@dataclass
class _ChainPool:
    templates: list[_ChainTemplate] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @contextmanager
    def checkout(self, consent_v2: bool) -> Iterator[_ChainTemplate]:
        with self.lock:
            free = [
                t
                for t in self.templates
                if not t.in_use and (t.deployment.consent_registry_v2 is not None) == consent_v2
            ]
            template = free[0] if free else None
            if template is None:
                template = _ChainTemplate.build(consent_v2)
                self.templates.append(template)
            template.in_use = True
        try:
            template.reset()
            yield template
        finally:
            template.in_use = False


_POOL = _ChainPool()


@contextmanager
def _on_template(template: _ChainTemplate) -> Iterator[None]:
    """:meth:`Ledger.open` in embedded mode builds its chain on ``template`` (a new
    :class:`Chain` over it, so no client state outlives a test) instead of deploying anew."""

    def reuse(
        operator: LocalAccount, registrar: LocalAccount, *, consent_v2: bool = True
    ) -> tuple[Chain, EthereumTester]:
        assert (template.deployment.consent_registry_v2 is not None) == consent_v2
        assert (operator.address, registrar.address) == (
            template.operator.address,
            template.registrar.address,
        )
        return Chain(template.chain.w3, template.deployment, operator, registrar), template.tester

    with mock.patch.object(ledger.service, "embedded_chain", reuse):
        yield


def store_url(store_backend: str, tmp_path: Path, stack: ExitStack) -> str:
    """A new, migrated store of its own for one test (a copy of a migrated template:
    :mod:`tests.support.stores`)."""
    if store_backend == "sqlite":
        return migrated_sqlite(tmp_path / "ledger.db")
    return stack.enter_context(migrated_postgres())


@contextmanager
def open_env(
    chain_backend: str,
    store_backend: str,
    tmp_path: Path,
    anvil: Anvil | None = None,
    **settings: Any,
) -> Iterator[Env]:
    """A fresh ledger (new contracts, new database) with three registered institutions.

    Consent version 2 (ConsentRegistryV2 in the deployment, taking every new grant) only with
    ``embedded_consent_v2=True`` (on anvil too): the tests of version 1's behaviour run on a
    version-1-only deployment, as a deployment made before version 2 is."""
    settings.setdefault("embedded_consent_v2", False)
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
        registered: tuple[LocalAccount, ...] = ()
        if chain_backend == "embedded":
            template = stack.enter_context(_POOL.checkout(settings["embedded_consent_v2"]))
            registered = template.institutions
            config = Settings(
                mode="embedded",
                operator_key=SecretStr(template.operator.key.hex()),
                registrar_key=SecretStr(template.registrar.key.hex()),
                **base,
            )
            stack.enter_context(_on_template(template))
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
                consent_v2=settings["embedded_consent_v2"],
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
        keys = registered or tuple(Account.create() for _ in INSTITUTIONS)
        hospital, pharmacy, insurer = (
            Institution(name, kind, ledger.domain, account=key, clock=clock)
            for key, (name, kind) in zip(keys, INSTITUTIONS, strict=True)
        )
        env = Env(
            ledger=ledger,
            hospital=hospital,
            pharmacy=pharmacy,
            insurer=insurer,
            patient=Patient(),
            chain_backend=chain_backend,
            store_backend=store_backend,
            clock=clock,
        )
        if not registered:
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
    request, deadline, signature = grant_request(env, grantee, record, purposes, lifetime=lifetime)
    return env.ledger.relay_grant(env.patient.address, request, deadline, signature).grant_id


def grant_request(
    env: Env,
    grantee: str,
    record: bytes,
    purposes: Sequence[Purpose] = (Purpose.TREATMENT,),
    *,
    lifetime: int = 86_400,
) -> tuple[GrantRequest, int, bytes]:
    """A version-1 grant the patient signed (eth-account), for the operator to relay: the
    request, its deadline and the signature."""
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
    return request, values["deadline"], signature


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


def pending_timestamp(ledger: Ledger) -> int:
    """Embedded chain: the time the next block would have (never behind the wall clock)."""
    assert ledger.tester is not None
    return int(ledger.tester.get_block_by_number("pending")["timestamp"])
