"""One trail, three verifiers, the same findings: the regulator's verify_trail (from the API),
the API's own ``verify=true``, and the patient's ``wallet accesses`` (with the chain) all run
:func:`ledger.trail.verify_trail`. A clean trail and a tampered one (an event rewritten behind
the service's back, an access under a revoked grant slipped in, a checkpoint the chain never
saw) are fed to all three on anvil.

Before there was one verifier, the three disagreed: the API proved a bundle naming a
checkpoint the chain does not hold against the latest root instead of reporting
``checkpoint-not-on-chain``, and neither the API nor the wallet bounded ``occurredAt`` by the
anchoring time nor judged the wallet's accesses by the rules."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from ledger.chain.reader import ChainView, DeploymentSpec
from ledger.events import Purpose
from ledger.service import Ledger
from scripts import verify_trail
from scripts._api import ApiClient
from tests.scripts.support import advance_chain, chain_now, h, insert_event, rewrite_body
from tests.support.anvil import Anvil
from tests.support.ledgers import relay_grant, revoke_grant
from tests.wallets.api_env import Service, running_service
from tests.wallets.conftest import FAST_N, PASSPHRASE
from wallets.wallet import Wallet

pytestmark = pytest.mark.anvil

#: One finding, as the three compare: (event id or None, code, severity).
Seen = tuple[str | None, str, str]


def _order(seen: Seen) -> tuple[str, str, str]:
    """Findings about the whole answer (no event id) first."""
    return (seen[0] or "", seen[1], seen[2])


@dataclass
class World:
    service: Service
    anvil: Anvil
    wallet: Wallet
    record: bytes

    @property
    def ledger(self) -> Ledger:
        ledger = self.service.env.ledger
        assert isinstance(ledger, Ledger)
        return ledger


@pytest.fixture
def world(tmp_path: Path, scripts_anvil: Anvil) -> Iterator[World]:
    with running_service(tmp_path, scripts_anvil) as service:
        env = service.env
        key = "0x" + bytes(env.patient.account.key).hex()
        wallet = Wallet.import_key(tmp_path / "wallet", key, PASSPHRASE, scrypt_n=FAST_N)
        record = env.hospital.record("mrn-one")
        yield World(service, scripts_anvil, wallet, record)


def _anchor(ledger: Ledger) -> None:
    size = ledger.anchor_now().tree_size
    deadline = time.monotonic() + 30
    while (latest := ledger.chain.latest_checkpoint()) is None or latest.tree_size < size:
        assert time.monotonic() < deadline, "not mined"
        time.sleep(0.02)
    ledger.anchor_now()


def _seen(event_id: bytes | str | None, code: str, severity: str) -> Seen:
    if isinstance(event_id, bytes):
        event_id = "0x" + event_id.hex()
    return (event_id, code, severity)


def by_the_tool(world: World, *, operator: bool) -> list[Seen]:
    """``verify_trail`` from the API; with ``operator``, the receipts are checked against the
    operator's address too (as the API does; the wallet does not know it)."""
    ledger = world.ledger
    spec = DeploymentSpec.from_deployment(ledger.deployment)
    with (
        ChainView.connect(world.anvil.url, spec) as chain,
        ApiClient(world.service.url, world.service.regulator_key) as api,
    ):
        report = verify_trail.verify_from_api(
            world.record,
            api,
            chain,
            now=int(time.time()),
            operator=ledger.operator.address if operator else None,
        )
    return sorted((_seen(f.event_id, f.code, f.severity) for f in report.findings), key=_order)


def by_the_api(world: World) -> list[Seen]:
    answer = httpx.get(
        f"{world.service.url}/v1/records/0x{world.record.hex()}/trail",
        params={"verify": "true", "limit": 1000},
        headers={"Authorization": f"Bearer {world.service.regulator_key}"},
    )
    assert answer.status_code == 200, answer.text
    page = answer.json()
    found = [_seen(f["eventId"], f["code"], f["severity"]) for f in page["findings"]]
    for event in page["events"]:
        found += [_seen(f["eventId"], f["code"], f["severity"]) for f in event["findings"]]
    return sorted(found, key=_order)


def by_the_wallet(world: World) -> list[Seen]:
    with world.wallet.connect(world.service.url, PASSPHRASE) as patient:
        report = patient.accesses(rpc_url=world.anvil.url)
    assert report.trust == "chain"
    found = [_seen(f["eventId"], f["code"], f["severity"]) for f in report.findings]
    for entry in report.entries:
        found += [_seen(f["eventId"], f["code"], f["severity"]) for f in entry.findings]
    return sorted(found, key=_order)


def three_ways(world: World) -> list[Seen]:
    """The findings of the three, checked to be the same: the tool and the API both check the
    operator's receipts, the tool and the wallet neither."""
    api = by_the_api(world)
    assert by_the_tool(world, operator=True) == api, "the API's verify=true differs"
    tool = by_the_tool(world, operator=False)
    assert by_the_wallet(world) == tool, "the wallet differs from verify_trail"
    return api


def test_a_clean_and_a_tampered_trail_give_the_same_findings_everywhere(world: World) -> None:
    env, ledger = world.service.env, world.ledger
    hospital, pharmacy, patient = env.hospital, env.pharmacy, env.patient.address
    other = env.institution("Other Hospital", env.hospital.kind)
    grant = relay_grant(env, pharmacy.address, world.record)
    t0 = chain_now(env) + 1
    own = hospital.access(world.record, patient, occurredAt=t0)
    covered = pharmacy.access(
        world.record, patient, custodian=hospital.address, grantId=grant, occurredAt=t0 + 1
    )
    emergency = other.access(
        world.record, patient, custodian=hospital.address, reasonHash=h("er"), occurredAt=t0 + 2
    )
    ledger.submit([hospital.sign(own), pharmacy.sign(covered), other.sign(emergency)])
    _anchor(ledger)
    advance_chain(env, t0 + 3)

    clean = three_ways(world)
    assert clean == [("0x" + emergency.eventId.hex(), "emergency-access", "review")]

    # Tampered behind the service's back: the custodian's access rewritten; an access under
    # a revoked grant slipped in (with the operator's receipt); then a checkpoint the chain
    # never saw recorded as anchored, so that every bundle is proved against it.
    rewrite_body(ledger, own, purpose=Purpose.RESEARCH)
    revoked = relay_grant(env, pharmacy.address, world.record)
    revoked_at = revoke_grant(env, revoked)
    late = pharmacy.access(
        world.record, patient, custodian=hospital.address, grantId=revoked, occurredAt=revoked_at
    )
    # Received after the revocation was mined (one of the same second would be in flight:
    # consent-revoked-in-flight, for review).
    insert_event(ledger, pharmacy.sign(late), consent="covered", received_at=revoked_at + 1)
    _anchor(ledger)
    stranger = env.institution("Stranger Clinic", env.hospital.kind)
    # Dated at the chain's time, after its signer's registration (the relays and checkpoints
    # above mined blocks: on anvil, t0 + 4 may be before it).
    unrelated = stranger.access(
        stranger.record("mrn-x"), "0x" + "77" * 20, occurredAt=chain_now(env)
    )
    ledger.submit([stranger.sign(unrelated)])
    head = ledger.log.integrate_all()
    latest = ledger.chain.latest_checkpoint()
    assert latest is not None
    assert head.size > latest.tree_size
    with ledger.store.write() as connection:
        connection.execute(
            text(
                "INSERT INTO checkpoints (tree_size, root, status, created_at, previous_size, "
                "tx_hash, block_number) VALUES (:size, :root, 'anchored', :now, :previous, "
                ":tx, :block)"
            ),
            {
                "size": head.size,
                "root": head.root,
                "now": int(time.time()),
                "previous": latest.tree_size,
                "tx": b"\x01" * 32,
                "block": latest.block_number,
            },
        )

    tampered = three_ways(world)
    codes = {code for _id, code, _severity in tampered}
    assert {
        "checkpoint-not-on-chain",
        "digest-mismatch",
        "signer-mismatch",
        "receipt-invalid",
        "consent-not-covered",
        "emergency-access",
    } <= codes
    not_on_chain = {event for event, code, _s in tampered if code == "checkpoint-not-on-chain"}
    assert len(not_on_chain) == 4  # every bundle names the checkpoint the chain never saw
