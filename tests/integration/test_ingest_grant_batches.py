"""Ingest asks the chain about a batch's grants at once (issue 15).

An access by another institution than the record's custodian is labelled by its grant's
on-chain state at ``occurredAt``. Asked one access at a time through web3, each cost ~2.7 ms of
the service's CPU; the service now asks every grant question of a batch in one JSON-RPC batch
through its own reader, and the answers must be exactly the ones asked one at a time: version 2
grants kept by the service, a revoked one, version 1 grants, unknown and impossible ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ledger.chain.consent import CommittedConsent, ReaderConsent
from ledger.chain.embedded import funded_account
from ledger.chain.model import ChainError
from ledger.consent import SignedGrant, revocation_root, revocation_secret
from ledger.consent_store import StoredGrants
from ledger.events import Purpose, RecordAccess, SignedEvent
from ledger.rules import GrantQuery, GrantStatus, consent_of, grant_query
from tests.support.consent_v2 import service_grant
from tests.support.ledgers import Env, grant_request, open_env

DAY = 86_400
ROOT = revocation_root(b"\x09" * 65)


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    with open_env("embedded", request.param, tmp_path, embedded_consent_v2=True) as environment:
        yield environment


def kept(env: Env, grantee: str, record: bytes, purposes: list[Purpose]) -> SignedGrant:
    """A version-2 grant the patient signed, kept by the service and committed on chain."""
    grant = service_grant(env, grantee, record, root=ROOT, purposes=purposes)
    env.ledger.accept_grant_v2(grant)
    assert env.ledger.commit_grants_now() == 1
    return grant


def version_1_grant(env: Env, grantee: str, record: bytes, purposes: list[Purpose]) -> int:
    """A version-1 grant on the deployment's ConsentRegistry (one made before the deployment
    took version 2: the service relays no more of them), straight through the chain."""
    request, deadline, signature = grant_request(env, grantee, record, purposes)
    return env.ledger.chain.relay_grant(env.patient.address, request, deadline, signature)[0]


def pharmacy_accesses(env: Env, record: bytes, grant_ids: list[int]) -> list[SignedEvent]:
    """The pharmacy's accesses to ``record`` under each grant id, each at its own second."""
    t = env.ledger.chain.latest_timestamp()
    return [
        env.pharmacy.sign(
            env.pharmacy.access(
                record, env.patient.address, env.hospital.address, grantId=cited, occurredAt=t + i
            )
        )
        for i, cited in enumerate(grant_ids)
    ]


def grant_id(env: Env, grant: SignedGrant) -> int:
    assert env.ledger.consent_v2_domain is not None
    return grant.grant_id(env.ledger.consent_v2_domain)


def one_by_one(env: Env, events: list[SignedEvent]) -> list[str]:
    """Each access's consent label, its grant asked on its own (the reference)."""
    grants = env.ledger.ingestor.grants
    labels = []
    for signed in events:
        event = signed.event
        assert isinstance(event, RecordAccess)
        query = grant_query(event)
        status = None if query is None else GrantStatus(int(grants.grant_status_at(*query)))
        labels.append(consent_of(event, status).label)
    return labels


def spy(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[Any]:
    """Record the arguments of every call of ``owner.name`` (then call it)."""
    calls: list[Any] = []
    original = getattr(owner, name)

    def recorded(self: Any, *args: Any) -> Any:
        calls.append(args)
        return original(self, *args)

    monkeypatch.setattr(owner, name, recorded)
    return calls


def test_a_batch_asks_about_all_its_grants_in_one_batch(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = env.hospital.record("mrn-1")
    patient = env.patient.address
    pharmacy = kept(env, env.pharmacy.address, record, [Purpose.TREATMENT])
    insurer = kept(env, env.insurer.address, record, [Purpose.PAYMENT])
    t = env.ledger.chain.latest_timestamp()
    custodian = env.hospital.address
    events = [
        *(
            env.pharmacy.sign(
                env.pharmacy.access(
                    record,
                    patient,
                    custodian,
                    grantId=grant_id(env, pharmacy),
                    occurredAt=t + i,
                )
            )
            for i in range(20)
        ),
        *(
            env.insurer.sign(
                env.insurer.access(
                    record,
                    patient,
                    custodian,
                    grantId=grant_id(env, insurer),
                    purpose=Purpose.PAYMENT,
                    occurredAt=t + i,
                )
            )
            for i in range(10)
        ),
        # Under another institution's grant: not covered (wrong grantee), still stored.
        env.pharmacy.sign(
            env.pharmacy.access(
                record, patient, custodian, grantId=grant_id(env, insurer), occurredAt=t
            )
        ),
        *(env.hospital.sign(env.hospital.access(record, patient, occurredAt=t)) for _ in range(5)),
    ]
    expected = one_by_one(env, events)
    asked = spy(monkeypatch, ReaderConsent, "statuses")
    read_one = spy(monkeypatch, StoredGrants, "signed_grant")
    read_many = spy(monkeypatch, StoredGrants, "signed_grants")
    receipts = env.ledger.submit(events)
    assert [len(questions) for (questions,) in asked] == [31]  # one batch, every grant access
    assert [set(ids) for (ids,) in read_many] == [
        {grant_id(env, pharmacy), grant_id(env, insurer)}  # one read of the store for both
    ]
    assert read_one == []
    assert [r.consent for r in receipts] == expected
    assert expected == ["covered"] * 30 + ["not-covered:wrong-grantee"] + ["custodian"] * 5


def test_batched_answers_are_the_answers_asked_one_at_a_time(env: Env) -> None:
    record = env.hospital.record("mrn-2")
    other_record = env.hospital.record("mrn-3")
    patient = env.patient.address
    active = kept(env, env.pharmacy.address, record, [Purpose.TREATMENT])
    revoked = kept(env, env.pharmacy.address, record, [Purpose.TREATMENT, Purpose.PAYMENT])
    env.ledger.chain.consent_v2.revoke(
        revocation_secret(ROOT, revoked.salt), funded_account(env.ledger.chain.w3)
    )
    revoked_at = env.ledger.chain.latest_timestamp()
    version_1 = version_1_grant(env, env.insurer.address, record, [Purpose.PAYMENT])
    ids = [grant_id(env, active), grant_id(env, revoked), version_1, 12345, 2**256]
    times = [active.not_before - 1, revoked_at - 1, revoked_at, active.expires_at]
    queries = [
        GrantQuery(grant, patient, grantee, ref, int(purpose), at)
        for grant in ids
        for grantee in (env.pharmacy.address, env.insurer.address)
        for ref in (record, other_record)
        for purpose in (Purpose.TREATMENT, Purpose.PAYMENT)
        for at in times
    ]
    grants = env.ledger.ingestor.grants
    assert isinstance(grants, CommittedConsent)
    batched = grants.grant_statuses(queries)
    assert batched == [GrantStatus(int(grants.grant_status_at(*q))) for q in queries]
    # Every kind of answer is among them: the comparison is not of one status with itself.
    assert {
        GrantStatus.VALID,
        GrantStatus.REVOKED,
        GrantStatus.NOT_FOUND,
        GrantStatus.WRONG_GRANTEE,
        GrantStatus.PURPOSE_NOT_COVERED,
        GrantStatus.NOT_YET_GRANTED,
        GrantStatus.OUT_OF_SCOPE,
        GrantStatus.EXPIRED,
    } <= set(batched)


def test_when_the_batched_question_fails_each_access_asks_on_its_own(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = env.hospital.record("mrn-4")
    grant = kept(env, env.pharmacy.address, record, [Purpose.TREATMENT])
    events = pharmacy_accesses(env, record, [grant_id(env, grant)] * 3)

    def unreachable(self: CommittedConsent, queries: Any) -> list[GrantStatus]:
        raise ChainError("the node did not answer the batch")

    monkeypatch.setattr(CommittedConsent, "grant_statuses", unreachable)
    asked = spy(monkeypatch, CommittedConsent, "grant_status_at")
    receipts = env.ledger.submit(events)
    assert [r.consent for r in receipts] == ["covered"] * 3
    assert len(asked) == 3


def test_a_version_1_deployment_asks_its_batch_s_grants_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment made before version 2: the grant source is the chain client itself."""
    with open_env("embedded", "sqlite", tmp_path) as v1:
        record = v1.hospital.record("mrn-v1")
        granted = version_1_grant(v1, v1.pharmacy.address, record, [Purpose.TREATMENT])
        events = pharmacy_accesses(v1, record, [granted] * 6 + [granted + 1])
        expected = one_by_one(v1, events)
        asked = spy(monkeypatch, type(v1.ledger.chain), "grant_statuses")
        receipts = v1.ledger.submit(events)
        assert [len(questions) for (questions,) in asked] == [7]
        assert [r.consent for r in receipts] == expected
        assert expected == ["covered"] * 6 + ["not-covered:not-found"]
