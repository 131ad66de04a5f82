"""A medtrail deployment on anvil, ledgers over it, and institutions that sign events.

Events are signed with the production code (``ledger.events.sign_event``); the institutions
are registered on chain through the ledger, like a regulator's admin call would.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from pydantic import SecretStr

from benchmarks._common import python_env
from ledger.chain.client import deploy_to_rpc
from ledger.chain.deploy import Deployment
from ledger.consent import SignedGrant, new_grant, revocation_key_typed_data, revocation_root
from ledger.eip712 import Domain
from ledger.events import (
    Action,
    InstitutionKind,
    InsuranceClaim,
    InsurancePayment,
    PrescriptionDispensed,
    PrescriptionIssued,
    Purpose,
    RecordAccess,
    SignedEvent,
    audit_log_domain,
    sign_event,
)
from ledger.refs import record_ref, staff_ref
from ledger.service import Ledger
from ledger.settings import Settings
from tests.support.anvil import Anvil


@dataclass(frozen=True)
class Chain:
    """One medtrail deployment on the run's anvil, and the keys that use it."""

    anvil: Anvil
    deployment: Deployment
    deployment_file: Path
    operator: LocalAccount
    registrar: LocalAccount

    @property
    def domain(self) -> Domain:
        return audit_log_domain(self.deployment.chain_id, self.deployment.audit_log)

    def settings(self, database_url: str, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "mode": "rpc",
            "rpc_url": self.anvil.url,
            "deployment_file": self.deployment_file,
            "operator_key": SecretStr(self.operator.key.hex()),
            "registrar_key": SecretStr(self.registrar.key.hex()),
            "database_url": database_url,
            "anchor_interval": 3600.0,
            "institution_cache_ttl": 3600.0,
            "confirmations": 1,
            **overrides,
        }
        return Settings(**values)

    def environment(self, database_url: str, **overrides: str) -> dict[str, str]:
        """The same settings as ``MEDTRAIL_*`` variables, for a server in another process."""
        env = python_env({k: v for k, v in os.environ.items() if not k.startswith("MEDTRAIL_")})
        env.update(
            {
                "MEDTRAIL_MODE": "rpc",
                "MEDTRAIL_RPC_URL": self.anvil.url,
                "MEDTRAIL_DEPLOYMENT_FILE": str(self.deployment_file),
                "MEDTRAIL_OPERATOR_KEY": self.operator.key.hex(),
                "MEDTRAIL_REGISTRAR_KEY": self.registrar.key.hex(),
                "MEDTRAIL_DATABASE_URL": database_url,
                "MEDTRAIL_ANCHOR_INTERVAL": "3600",
                "MEDTRAIL_INSTITUTION_CACHE_TTL": "3600",
                "MEDTRAIL_CONFIRMATIONS": "1",
                **overrides,
            }
        )
        return env

    def open(self, database_url: str, **overrides: Any) -> Ledger:
        return Ledger.open(self.settings(database_url, **overrides))


def deploy(anvil: Anvil, workdir: Path, name: str) -> Chain:
    """Deploy medtrail's three contracts on ``anvil`` (dev accounts 0: admin, 1: operator,
    2: registrar) and write the deployment file."""
    admin, operator, registrar = anvil.accounts[:3]
    deployment = deploy_to_rpc(
        anvil.url,
        admin,
        admin=admin.address,
        log_operator=operator.address,
        registrars=[registrar.address],
    )
    path = workdir / f"deployment-{name}.json"
    deployment.write(path)
    return Chain(anvil, deployment, path, operator, registrar)


@dataclass
class Institution:
    """A hospital, pharmacy or insurer with its signing key."""

    name: str
    kind: InstitutionKind
    domain: Domain
    key: bytes = field(default_factory=lambda: os.urandom(32))
    ref_key: bytes = field(default_factory=lambda: os.urandom(32))
    address: str = field(init=False)

    def __post_init__(self) -> None:
        self.address = str(Account.from_key(self.key).address)

    def sign(self, event: Any) -> SignedEvent:
        return sign_event(event, self.domain, self.key)

    def record(self, local_id: str) -> bytes:
        return record_ref(self.ref_key, local_id)

    def access(
        self, record: bytes, patient: str, occurred_at: int, **overrides: Any
    ) -> RecordAccess:
        values: dict[str, Any] = {
            "eventId": os.urandom(32),
            "recordRef": record,
            "custodian": self.address,
            "patient": patient,
            "institution": self.address,
            "actor": staff_ref(self.ref_key, "dr-1"),
            "action": Action.READ,
            "purpose": Purpose.TREATMENT,
            "grantId": 0,
            "reasonHash": bytes(32),
            "occurredAt": occurred_at,
            **overrides,
        }
        return RecordAccess(**values)

    def prescription(
        self, record: bytes, patient: str, occurred_at: int, fills: int = 1
    ) -> PrescriptionIssued:
        return PrescriptionIssued(
            eventId=os.urandom(32),
            recordRef=record,
            patient=patient,
            institution=self.address,
            prescriber=staff_ref(self.ref_key, "dr-1"),
            contentHash=os.urandom(32),
            fills=fills,
            validUntil=occurred_at + 30 * 86_400,
            occurredAt=occurred_at,
        )

    def dispense(self, rx: PrescriptionIssued, occurred_at: int) -> PrescriptionDispensed:
        return PrescriptionDispensed(
            eventId=os.urandom(32),
            prescriptionId=rx.eventId,
            patient=rx.patient,
            institution=self.address,
            pharmacist=staff_ref(self.ref_key, "ph-1"),
            fillNumber=1,
            contentHash=os.urandom(32),
            occurredAt=occurred_at,
        )

    def claim(self, service: Any, insurer: str, occurred_at: int) -> InsuranceClaim:
        return InsuranceClaim(
            eventId=os.urandom(32),
            serviceRef=service.eventId,
            patient=service.patient,
            institution=self.address,
            insurer=insurer,
            amount=1250,
            contentHash=os.urandom(32),
            occurredAt=occurred_at,
        )

    def payment(self, claim: InsuranceClaim, occurred_at: int) -> InsurancePayment:
        return InsurancePayment(
            eventId=os.urandom(32),
            claimId=claim.eventId,
            patient=claim.patient,
            institution=self.address,
            payee=claim.institution,
            amount=claim.amount,
            contentHash=os.urandom(32),
            occurredAt=occurred_at,
        )


def registered_hospitals(ledger: Ledger, label: str, count: int = 4) -> list[Institution]:
    """``count`` hospitals named ``"{label} {i}"``, registered on the ledger's chain (ingest
    refuses events signed before their signer's registration: sign after this)."""
    hospitals = [
        Institution(f"{label} {i}", InstitutionKind.HOSPITAL, ledger.domain) for i in range(count)
    ]
    for inst in hospitals:
        ledger.register_institution(inst.address, inst.kind, inst.name)
    return hospitals


def patients(count: int, seed: int = 7) -> list[str]:
    """``count`` patient addresses (never signing here, so random bytes will do)."""
    rng = random.Random(seed)
    return [str(Account.from_key(rng.randbytes(32)).address) for _ in range(count)]


def custodian_accesses(
    hospital: Institution,
    count: int,
    *,
    records: int = 1000,
    seed: int = 1,
    occurred_at: int | None = None,
    seconds: int = 1,
) -> list[SignedEvent]:
    """``count`` signed reads by ``hospital`` of its own records (no grant needed): the
    bulk of a hospital's traffic. Records are drawn from a pool of ``records``, each with
    its own patient. ``occurred_at`` defaults to a few seconds from now: never before the
    hospital's registration, which may have been mined this very second (ingest refuses an
    event dated before its signer was registered), and well within ingest's future skew.
    ``seconds``: the events are dated over that many seconds from ``occurred_at`` (event
    ``i`` at ``occurred_at + i % seconds``), as a real log's are."""
    if seconds < 1:
        raise ValueError(f"seconds must be at least 1, got {seconds}")
    rng = random.Random(seed)
    people = patients(records, seed)
    refs = [hospital.record(f"mrn-{seed}-{i}") for i in range(records)]
    now = int(time.time()) + 5 if occurred_at is None else occurred_at
    events = []
    for n in range(count):
        i = rng.randrange(records)
        events.append(hospital.sign(hospital.access(refs[i], people[i], now + n % seconds)))
    return events


def batch_body(events: list[SignedEvent]) -> bytes:
    """The body of ``POST /v1/events``."""
    return b'{"events":[' + b",".join(e.model_dump_json().encode() for e in events) + b"]}"


def keep_grant(
    ledger: Ledger, patient_key: bytes, grantee: str, record: bytes, purpose: Purpose
) -> SignedGrant:
    """The patient signs a version-2 grant of ``purpose`` on ``record`` to ``grantee``; the
    service keeps it and commits it on chain (what ``POST /v1/grants`` and the worker do)."""
    domain = ledger.consent_v2_domain
    if domain is None:
        raise RuntimeError("the benchmark's deployment has no ConsentRegistryV2")
    patient = Account.from_key(patient_key)
    now = ledger.chain.latest_timestamp()
    key_signature = Account.sign_typed_data(
        patient_key,
        full_message=revocation_key_typed_data(domain, patient.address),
    ).signature
    grant = new_grant(
        root=revocation_root(bytes(key_signature)),
        patient=patient.address,
        grantee=grantee,
        record_ref=record,
        purposes=[purpose],
        not_before=now - 60,
        expires_at=now + 86_400,
        deadline=now + 600,
        now=now,
    ).sign(domain, patient_key)
    ledger.accept_grant_v2(grant)
    ledger.commit_grants_now()
    return grant
