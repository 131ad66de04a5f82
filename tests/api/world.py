"""A running API over a real Ledger (embedded chain) with every role the API knows.

* institution A: hospital holding record ``record_a`` of patient P (events ``event_a``…);
* institution B: another hospital holding record ``record_b`` of patient Q (``event_b``);
* a regulator (the bootstrap key), patients P and Q signed in with SIWE;
* grant ``grant_p``: P lets B read ``record_a`` for treatment (B never used it); a version-2
  grant, kept and committed, when the world is opened with ``embedded_consent_v2=True``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import bootstrap_admin_key, create_app
from api.auth import Credentials
from ledger.chain.client import GrantRequest
from ledger.chain.embedded import funded_account
from ledger.consent import SignedGrant, new_grant, revocation_root, revocation_secret
from ledger.events import InstitutionKind, Purpose, RecordAccess, SignedEvent, purposes_mask
from ledger.siwe import SiweMessage
from tests.support.actors import Institution, Patient
from tests.support.ledgers import Env, open_env, pending_timestamp

ROLES = ("anonymous", "institution_a", "institution_b", "regulator", "patient_p", "patient_q")


def hex0x(value: bytes) -> str:
    return "0x" + value.hex()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event_json(signed: SignedEvent) -> dict[str, Any]:
    return signed.model_dump(mode="json")


def siwe_text(
    client: TestClient,
    account: Any,
    *,
    nonce: str | None = None,
    domain: str | None = None,
    chain_id: int | None = None,
    issued_at: datetime | None = None,
    expiration_time: datetime | None = None,
) -> str:
    """An EIP-4361 message for this API, with a fresh nonce unless one is given."""
    info = client.get("/v1/auth/nonce").json()
    message = SiweMessage(
        domain=domain or info["domain"],
        address=account.address,
        statement="Sign in to medtrail.",
        uri=f"http://{info['domain']}",
        chain_id=chain_id or info["chainId"],
        nonce=nonce or info["nonce"],
        issued_at=issued_at or datetime.now(UTC),
        expiration_time=expiration_time,
    )
    return message.to_text()


def personal_sign(account: Any, text: str) -> str:
    return hex0x(bytes(account.sign_message(encode_defunct(text=text)).signature))


def sign_in(client: TestClient, account: Any, **kw: Any) -> str:
    """A patient session token for ``account`` (through the real SIWE endpoints)."""
    text = siwe_text(client, account, **kw)
    answer = client.post(
        "/v1/auth/siwe", json={"message": text, "signature": personal_sign(account, text)}
    )
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["token"]
    return token


@dataclass
class World:
    env: Env
    app: FastAPI
    client: TestClient
    regulator_key: str
    a: Institution
    b: Institution
    p: Patient
    q: Patient
    keys: dict[str, str]
    record_a: bytes
    record_b: bytes
    event_a: bytes
    event_b: bytes
    grant_p: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ledger(self) -> Any:
        return self.env.ledger

    def headers(self, role: str) -> dict[str, str]:
        if role == "anonymous":
            return {}
        return bearer(self.keys[role])

    def credentials(self) -> Credentials:
        return Credentials(self.ledger.store)

    def institution_key(self, inst: Institution) -> str:
        _info, token = self.credentials().issue_key("institution", inst.address, inst.name)
        return token

    def submit(self, inst: Institution, *events: Any) -> list[dict[str, Any]]:
        answer = self.client.post(
            "/v1/events",
            json={"events": [event_json(inst.sign(e)) for e in events]},
            headers=bearer(self.keys_of(inst)),
        )
        assert answer.status_code == 200, answer.text
        receipts: list[dict[str, Any]] = answer.json()["receipts"]
        return receipts

    def keys_of(self, inst: Institution) -> str:
        for role, who in (("institution_a", self.a), ("institution_b", self.b)):
            if who is inst:
                return self.keys[role]
        key = self.extra.get(f"key:{inst.address}")
        if key is None:
            key = self.institution_key(inst)
            self.extra[f"key:{inst.address}"] = key
        return str(key)

    def grant_values(
        self, patient: Patient, grantee: str, record: bytes, **kw: Any
    ) -> dict[str, Any]:
        ledger = self.ledger
        now = ledger.chain.latest_timestamp()
        values: dict[str, Any] = {
            "grantee": grantee,
            "record_ref": record,
            "purposes": purposes_mask([Purpose.TREATMENT]),
            "not_before": now - 60,
            "expires_at": now + 86400,
            "nonce": ledger.chain.consent_nonce(patient.address),
            "deadline": now + 600,
        }
        values.update(kw)
        return values

    def grant_body(
        self, patient: Patient, grantee: str, record: bytes, **kw: Any
    ) -> dict[str, Any]:
        """A ``POST /v1/grants`` body signed by ``patient`` with their current nonce."""
        values = self.grant_values(patient, grantee, record, **kw)
        signature = patient.sign_grant(self.ledger.consent_domain, **values)
        return {
            "patient": patient.address,
            "grantee": values["grantee"],
            "recordRef": hex0x(values["record_ref"]),
            "purposes": values["purposes"],
            "notBefore": values["not_before"],
            "expiresAt": values["expires_at"],
            "deadline": values["deadline"],
            "signature": hex0x(signature),
        }

    def relay_grant(self, patient: Patient, grantee: str, record: bytes) -> int:
        """A grant made directly through the ledger (set-up, not under test)."""
        values = self.grant_values(patient, grantee, record)
        signature = patient.sign_grant(self.ledger.consent_domain, **values)
        request = GrantRequest(
            grantee=grantee,
            record_ref=record,
            purposes=values["purposes"],
            not_before=values["not_before"],
            expires_at=values["expires_at"],
        )
        info = self.ledger.relay_grant(patient.address, request, values["deadline"], signature)
        return int(info.grant_id)

    def revoke_body(self, patient: Patient, grant_id: int, **kw: Any) -> dict[str, Any]:
        now = self.ledger.chain.latest_timestamp()
        values = {
            "grant_id": grant_id,
            "nonce": self.ledger.chain.consent_nonce(patient.address),
            "deadline": now + 600,
            **kw,
        }
        signature = patient.sign_revoke(self.ledger.consent_domain, **values)
        return {"deadline": values["deadline"], "signature": hex0x(signature)}

    # -- consent version 2 (a world opened with embedded_consent_v2=True) -------------------

    def revocation_root(self, patient: Patient) -> bytes:
        """The patient's revocation root (what their wallet derives from one signature)."""
        key = f"root:{patient.address}"
        if key not in self.extra:
            self.extra[key] = revocation_root(secrets.token_bytes(65))
        root: bytes = self.extra[key]
        return root

    def grant_v2(
        self,
        patient: Patient,
        grantee: str,
        record: bytes,
        *,
        signer: Any = None,
        purposes: Any = (Purpose.TREATMENT,),
        **terms: Any,
    ) -> SignedGrant:
        """A version-2 grant signed by ``patient`` (or ``signer``), not sent anywhere."""
        now = self.ledger.chain.latest_timestamp()
        values: dict[str, Any] = {
            "not_before": now - 60,
            "expires_at": now + 86400,
            "deadline": now + 600,
            **terms,
        }
        grant = new_grant(
            root=self.revocation_root(patient),
            patient=patient.address,
            grantee=grantee,
            record_ref=record,
            purposes=list(purposes),
            now=now,
            **values,
        )
        key = (signer or patient.account).key
        return grant.sign(self.ledger.consent_v2_domain, bytes(key))

    def secret_of(self, patient: Patient, grant: SignedGrant) -> bytes:
        return revocation_secret(self.revocation_root(patient), grant.salt)

    def keep_grant_v2(self, patient: Patient, grantee: str, record: bytes) -> int:
        """A version-2 grant kept and committed directly through the ledger (set-up)."""
        view, _new = self.ledger.accept_grant_v2(self.grant_v2(patient, grantee, record))
        self.ledger.commit_grants_now()
        return int(view.grant_id)

    def access_under(self, grant_id: int) -> tuple[RecordAccess, str]:
        """B reads ``record_a`` (P's, held by A) under ``grant_id``, now (chain time), through
        the API; the access and the consent label ingest gave it."""
        event = self.b.access(
            self.record_a,
            self.p.address,
            custodian=self.a.address,
            grantId=grant_id,
            occurredAt=self.ledger.chain.latest_timestamp(),
        )
        (receipt,) = self.submit(self.b, event)
        return event, str(receipt["consent"])

    def revoke_v2_on_chain(
        self, patient: Patient, grant: SignedGrant, *, at: int | None = None
    ) -> int:
        """The patient revokes a version-2 grant straight on chain, from an address of their
        own, in a later second than anything logged so far (embedded chain), or in a block of
        time ``at`` (ahead of the clock); the revocation's block time."""
        ledger = self.ledger
        assert ledger.tester is not None
        sender = funded_account(ledger.chain.w3)
        # The next transaction's block is at the time travelled to.
        ledger.tester.time_travel(ledger.chain.latest_timestamp() + 1 if at is None else at)
        consent_v2 = ledger.chain.consent_v2
        assert consent_v2 is not None
        consent_v2.revoke(self.secret_of(patient, grant), sender)
        return consent_v2.revoked_at(grant.revocation_hash)

    def access_revoked_in_flight(self) -> tuple[RecordAccess, dict[str, Any], SignedGrant]:
        """The race of a revocation in flight: B reads ``record_a`` under a new version-2 grant
        of P's, the access dated two seconds ahead of the clock (within the future skew);
        ingest asks the chain, which holds no revocation yet: covered. Then P's revocation is
        mined in a block of the access's very second, so the chain now says the grant was
        revoked at ``occurredAt``. The access, its receipt and the grant."""
        ledger = self.ledger
        grant = self.grant_v2(self.p, self.b.address, self.record_a)
        view, _new = ledger.accept_grant_v2(grant)
        ledger.commit_grants_now()
        ledger.catch_up_clock()
        at = pending_timestamp(ledger) + 2
        event = self.b.access(
            self.record_a,
            self.p.address,
            custodian=self.a.address,
            grantId=int(view.grant_id),
            occurredAt=at,
        )
        (receipt,) = self.submit(self.b, event)
        assert receipt["consent"] == "covered"
        revoked_at = self.revoke_v2_on_chain(self.p, grant, at=at)
        assert receipt["receivedAt"] <= revoked_at == at
        ledger.catch_up_clock()
        return event, receipt, grant

    def new_institution(self, kind: InstitutionKind = InstitutionKind.HOSPITAL) -> Institution:
        return self.env.institution(f"Inst {time.monotonic_ns() % 10**9}", kind)


@contextmanager
def open_world(tmp_path: Path, store_backend: str = "sqlite", **settings: Any) -> Iterator[World]:
    with open_env("embedded", store_backend, tmp_path, **settings) as env:
        ledger = env.ledger
        regulator_key = bootstrap_admin_key(ledger)
        app = create_app(ledger)
        client = TestClient(app)
        a = env.hospital
        b = env.institution("Other Hospital", InstitutionKind.HOSPITAL)
        p, q = env.patient, Patient()
        credentials = Credentials(ledger.store)
        keys = {
            "regulator": regulator_key,
            "institution_a": credentials.issue_key("institution", a.address, a.name)[1],
            "institution_b": credentials.issue_key("institution", b.address, b.name)[1],
        }
        record_a, record_b = a.record("mrn-a"), b.record("mrn-b")
        # Events happen at chain time: institutions are registered from their block's time on.
        at = ledger.chain.latest_timestamp()
        access_a = a.access(record_a, p.address, occurredAt=at)
        access_b = b.access(record_b, q.address, occurredAt=at)
        world = World(
            env=env,
            app=app,
            client=client,
            regulator_key=regulator_key,
            a=a,
            b=b,
            p=p,
            q=q,
            keys=keys,
            record_a=record_a,
            record_b=record_b,
            event_a=access_a.eventId,
            event_b=access_b.eventId,
            grant_p=0,
        )
        world.submit(a, access_a, a.prescription(record_a, p.address, occurredAt=at))
        world.submit(b, access_b)
        if ledger.takes_v2:
            world.grant_p = world.keep_grant_v2(p, b.address, record_a)
        else:
            world.grant_p = world.relay_grant(p, b.address, record_a)
        ledger.anchor_now()
        ledger.anchor_now()
        keys["patient_p"] = sign_in(client, p.account)
        keys["patient_q"] = sign_in(client, q.account)
        yield world


def fresh_account() -> Any:
    return Account.create()


def later(seconds: int) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)
