"""Consent version 2 tells the chain nothing about who is whose patient (issue 17), on anvil.

The consent flow runs on a real node: a patient signs grants to institutions off chain, the
service commits them (one batch and one alone), the patient revokes one straight on chain from
an address of their choosing, with the service out of the picture. Then the test reads every
transaction of every block the flow produced — sender, recipient, every calldata byte — and
every log, and finds:

* no patient address, no grantee or other registered institution, no record reference,
  anywhere in those bytes;
* every byte accounted for: each transaction is ``commit(bytes32[])`` or ``revoke(bytes32)``
  of ConsentRegistryV2, each log a ``GrantCommitted`` or ``GrantRevoked`` with one 32-byte
  topic and no data, so the purposes and windows cannot hide anywhere;
* none of those 32-byte values matches what a dictionary attack over the registered
  institutions, the known patient address, the records, every purpose set and even the true
  window and deadline computes (hashes of the pairs, the version-1 and version-2 struct
  hashes, digests and commitments with guessable salts);
* nothing shared between two grants of the one patient.

And the time-aware answer still holds after all that: a revocation sent while the service is
stopped is honoured once it is back.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3

from ledger.chain.consent import CommittedConsent, GrantBook
from ledger.chain.consent_client import ConsentV2, deploy_consent_v2
from ledger.chain.deploy import bind
from ledger.chain.tx import send
from ledger.consent import (
    GRANT_V2,
    SignedGrant,
    commitment_of,
    new_grant,
    revocation_key_typed_data,
    revocation_root,
    revocation_secret,
)
from ledger.eip712 import digest, keccak
from ledger.events import GRANT, InstitutionKind, Purpose
from ledger.rules import GrantStatus
from tests.integration.conftest import deploy_on_anvil, requires_anvil
from tests.support.anvil import Anvil

pytestmark = [pytest.mark.anvil, requires_anvil]

DAY = 86_400
INSTITUTIONS = (
    ("Provincial Oncology Centre", InstitutionKind.HOSPITAL),
    ("Infectious Diseases (HIV) Clinic", InstitutionKind.HOSPITAL),
    ("Corner Pharmacy", InstitutionKind.PHARMACY),
    ("Health Insurer", InstitutionKind.INSURER),
    ("General Hospital", InstitutionKind.HOSPITAL),
)
RECORDS = (b"\x5a" * 32, keccak(b"patient's oncology record"), keccak(b"HIV test result"))


@dataclass
class Flow:
    """What the consent flow put on chain, and what the attacker knows."""

    w3: Web3
    registry: ConsentV2
    patient: LocalAccount
    institutions: list[LocalAccount]
    grants: list[SignedGrant]
    first_block: int
    last_block: int
    book: GrantBook
    root: bytes
    revoked: SignedGrant
    revoked_at: int


def _fund(node: Anvil) -> LocalAccount:
    account: LocalAccount = Account.create()
    node.set_balance(account.address, 10**20)
    return account


@pytest.fixture(scope="module")
def flow() -> Iterator[Flow]:
    with Anvil() as node:
        deployment, admin, operator, registrar = deploy_on_anvil(node)
        w3 = Web3(HTTPProvider(node.url))
        contracts = bind(w3, deployment)
        institutions: list[LocalAccount] = []
        for name, kind in INSTITUTIONS:
            institution: LocalAccount = Account.create()
            register = contracts.institutions.functions.register(
                institution.address, int(kind), name
            )
            send(w3, register, registrar)
            institutions.append(institution)
        registry = ConsentV2(w3, deploy_consent_v2(w3, admin))
        first_block = w3.eth.block_number + 1

        # The patient: one key (one browser-wallet account), never funded, never sending.
        patient: LocalAccount = Account.create()
        key_signature = Account.sign_typed_data(
            patient.key, full_message=revocation_key_typed_data(registry.domain, patient.address)
        ).signature
        root = revocation_root(bytes(key_signature))
        now = node.timestamp()

        def signed(grantee: LocalAccount, record: bytes, purposes: list[Purpose]) -> SignedGrant:
            grant = new_grant(
                root=root,
                patient=patient.address,
                grantee=grantee.address,
                record_ref=record,
                purposes=purposes,
                not_before=now,
                expires_at=now + 90 * DAY,
                deadline=now + DAY,
                now=now,
            )
            return grant.sign(registry.domain, bytes(patient.key))

        oncology, hiv, pharmacy = institutions[:3]
        grants = [
            signed(oncology, RECORDS[1], [Purpose.TREATMENT]),
            signed(hiv, bytes(32), [Purpose.TREATMENT, Purpose.RESEARCH]),
            signed(pharmacy, RECORDS[0], [Purpose.TREATMENT, Purpose.PAYMENT]),
            signed(oncology, RECORDS[2], [Purpose.PUBLIC_HEALTH]),
        ]
        book = GrantBook(registry.domain, grants)
        # The service commits: three in one batch, one alone.
        registry.commit([g.commitment(registry.domain) for g in grants[:3]], operator)
        registry.commit([grants[3].commitment(registry.domain)], operator)

        # The service stops. The patient revokes the HIV clinic's grant straight on chain,
        # from an address of their choosing (a relayer or a throwaway key: not their own).
        revoked = grants[1]
        burner = _fund(node)
        node.time_travel(node.timestamp() + 3600)
        receipt = registry.revoke(revocation_secret(root, revoked.salt), burner)
        revoked_at = int(w3.eth.get_block(receipt["blockNumber"])["timestamp"])
        last_block = w3.eth.block_number
        yield Flow(
            w3,
            registry,
            patient,
            institutions,
            grants,
            first_block,
            last_block,
            book,
            root,
            revoked,
            revoked_at,
        )


def _transactions(flow: Flow) -> list[dict[str, Any]]:
    found = []
    for number in range(flow.first_block, flow.last_block + 1):
        block = flow.w3.eth.get_block(number, full_transactions=True)
        found.extend(dict(t) for t in block["transactions"])  # type: ignore[arg-type]
    assert len(found) == 3  # two commits, one revocation
    return found


def _logs(flow: Flow) -> list[dict[str, Any]]:
    logs = flow.w3.eth.get_logs({"fromBlock": flow.first_block, "toBlock": flow.last_block})
    return [dict(log) for log in logs]


def _every_byte(flow: Flow) -> bytes:
    """Every byte the consent flow put on chain, concatenated (with separators)."""
    parts: list[bytes] = []
    for t in _transactions(flow):
        parts += [bytes.fromhex(t["from"][2:]), bytes.fromhex(t["to"][2:]), bytes(t["input"])]
    for log in _logs(flow):
        parts += [bytes.fromhex(log["address"][2:]), bytes(log["data"])]
        parts += [bytes(topic) for topic in log["topics"]]
    return b"\xff".join(parts)


def _words(flow: Flow) -> set[bytes]:
    """The free 32-byte values the flow put on chain (commitments, the secret, the hash)."""
    values: set[bytes] = set()
    for t in _transactions(flow):
        data = bytes(t["input"])
        values.update(data[4 + i : 36 + i] for i in range(0, len(data) - 4, 32))
    for log in _logs(flow):
        values.update(bytes(topic) for topic in log["topics"][1:])
    return values


def test_no_patient_institution_or_record_in_any_byte_on_chain(flow: Flow) -> None:
    on_chain = _every_byte(flow)
    needles = {"patient": bytes.fromhex(flow.patient.address[2:])}
    for (name, _), institution in zip(INSTITUTIONS, flow.institutions, strict=True):
        needles[name] = bytes.fromhex(institution.address[2:])
    for i, record in enumerate(RECORDS):
        needles[f"record {i}"] = record
        needles[f"hash of record {i}"] = keccak(record)
    for name, needle in needles.items():
        assert needle not in on_chain, f"the chain holds the {name}"


def test_every_byte_is_a_commit_a_revocation_or_their_events(flow: Flow) -> None:
    contract = flow.registry.contract
    commitments = {g.commitment(flow.registry.domain) for g in flow.grants}
    secret = revocation_secret(flow.root, flow.revoked.salt)
    calls = []
    for t in _transactions(flow):
        assert t["to"] == flow.registry.address
        fn, args = contract.decode_function_input(t["input"])
        # Re-encoding the decoded call gives the calldata back: no byte is left over.
        assert bytes(t["input"]) == bytes.fromhex(
            contract.encode_abi(fn.fn_name, args=list(args.values()))[2:]
        )
        calls.append((fn.fn_name, args))
    assert calls[0][0] == calls[1][0] == "commit"
    assert {bytes(c) for c in calls[0][1]["commitments"] + calls[1][1]["commitments"]} == (
        commitments
    )
    assert calls[2] == ("revoke", {"secret": secret})
    topics = {
        keccak(b"GrantCommitted(bytes32)"): commitments,
        keccak(b"GrantRevoked(bytes32)"): {flow.revoked.revocation_hash},
    }
    for log in _logs(flow):
        assert log["address"] == flow.registry.address
        assert bytes(log["data"]) == b""
        signature, value = (bytes(topic) for topic in log["topics"])
        assert value in topics[signature]


def _dictionary(flow: Flow) -> set[bytes]:
    """What an attacker who knows the patient's address, every registered institution, the
    records and even each grant's true window, deadline and revocation hash would compute."""
    patient = flow.patient.address
    domain = flow.registry.domain
    v1_domain_separators = {domain.separator}
    guesses: set[bytes] = set()
    windows = {(g.not_before, g.expires_at, g.deadline, g.revocation_hash) for g in flow.grants}
    purpose_sets = range(1, 1 << len(Purpose))
    refs = (bytes(32), *RECORDS)
    for institution in flow.institutions:
        grantee = institution.address
        pair = encode(["address", "address"], [patient, grantee])
        guesses |= {keccak(pair), keccak(bytes.fromhex(patient[2:] + grantee[2:]))}
        for ref in refs:
            guesses.add(keccak(encode(["address", "address", "bytes32"], [patient, grantee, ref])))
            for mask, (nb, ea, dl, rh) in itertools.product(purpose_sets, windows):
                for salt in (bytes(32), keccak(bytes.fromhex(patient[2:])), ref):
                    struct_hash = GRANT_V2.hash_struct(
                        (patient, grantee, ref, mask, nb, ea, dl, salt, rh)
                    )
                    grant_digest = digest(domain.separator, struct_hash)
                    guesses |= {struct_hash, grant_digest, commitment_of(grant_digest, salt)}
                v1 = GRANT.hash_struct((patient, grantee, ref, mask, nb, ea, 0, dl))
                guesses |= {v1} | {digest(s, v1) for s in v1_domain_separators}
    guesses.add(keccak(bytes.fromhex(patient[2:])))
    return guesses


def test_a_dictionary_attack_matches_nothing_on_chain(flow: Flow) -> None:
    on_chain = _words(flow)
    assert len(on_chain) >= 5
    guesses = _dictionary(flow)
    assert len(guesses) > 10_000
    assert on_chain.isdisjoint(guesses)
    # The attack is the right one: a grant with a guessable salt would be found at once.
    grant = flow.grants[0]
    assert grant.commitment(flow.registry.domain) in on_chain
    weak = dataclasses.replace(grant, salt=bytes(32))
    assert weak.commitment(flow.registry.domain) in guesses


def test_two_grants_of_one_patient_share_nothing_on_chain(flow: Flow) -> None:
    domain = flow.registry.domain
    first, second = flow.grants[0], flow.grants[3]  # same patient, same institution
    a = {first.commitment(domain), first.revocation_hash}
    b = {second.commitment(domain), second.revocation_hash}
    assert a.isdisjoint(b)
    assert first.salt != second.salt


def test_a_revocation_sent_while_the_service_was_stopped_is_honoured_when_it_is_back(
    flow: Flow,
) -> None:
    # The service comes back with the grants it keeps (its book) and nothing else: it never
    # saw the revocation, and needs not have.
    service = CommittedConsent(ConsentV2(flow.w3, flow.registry.address), flow.book)
    hiv = flow.institutions[1]
    grant_id = flow.revoked.grant_id(flow.registry.domain)

    def status(at: int) -> GrantStatus:
        return service.grant_status_at(
            grant_id, flow.patient.address, hiv.address, RECORDS[2], int(Purpose.TREATMENT), at
        )

    assert status(flow.revoked_at - 1) is GrantStatus.VALID
    assert status(flow.revoked_at) is GrantStatus.REVOKED
    # The other grants are untouched.
    oncology = flow.grants[0]
    assert (
        service.grant_status_at(
            oncology.grant_id(flow.registry.domain),
            flow.patient.address,
            flow.institutions[0].address,
            RECORDS[1],
            int(Purpose.TREATMENT),
            flow.revoked_at + 10,
        )
        is GrantStatus.VALID
    )
