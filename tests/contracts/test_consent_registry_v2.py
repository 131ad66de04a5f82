"""ConsentRegistryV2 (issue 17): commitments and revocation marks, and the one coverage rule.

Each custom error has its test; the contract has no roles (anyone may commit or revoke), and
the tests show why that is safe: a commitment means nothing without the patient's signature,
a revocation needs the patient's secret. The EIP-712 messages are signed with eth-account's
reference implementation from the struct string as the contract hashes it, and compared with
``ledger.consent``'s own hashing.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3.contract import Contract

from ledger.chain.consent_client import ConsentV2, deploy_consent_v2
from ledger.consent import (
    GRANT_V2,
    SignedGrant,
    new_grant,
    revocation_hash,
    revocation_root,
    revocation_secret,
)
from ledger.rules import GrantStatus
from tests.conftest import EmbeddedChain
from tests.contracts.conftest import (
    Kind,
    block_time,
    deploy_test_contract,
    events,
    high_s_twin,
    reverts,
    sign,
    struct_fields,
    tx,
)

#: The struct string exactly as ConsentRegistryV2.sol hashes it into GRANT_TYPEHASH.
GRANT_V2_TYPE = (
    "Grant(address patient,address grantee,bytes32 recordRef,uint256 purposes,"
    "uint64 notBefore,uint64 expiresAt,uint256 deadline,bytes32 salt,bytes32 revocationHash)"
)
RECORD = b"\x11" * 32
OTHER_RECORD = b"\x22" * 32
TREATMENT, PAYMENT, RESEARCH = 0, 1, 3
DAY = 86_400


def reference_message(grant: SignedGrant, chain_id: int, contract: str) -> dict[str, Any]:
    """The grant as a full EIP-712 message for eth-account, independently of ledger.eip712."""
    primary, fields = struct_fields(GRANT_V2_TYPE)
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            primary: fields,
        },
        "primaryType": primary,
        "domain": {
            "name": "medtrail",
            "version": "2",
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(contract),
        },
        "message": dict(zip((f["name"] for f in fields), grant.values(), strict=True)),
    }


class World:
    """A deployed ConsentRegistryV2, a patient with a revocation root, a relayer."""

    def __init__(self, chain: EmbeddedChain, grantee: LocalAccount) -> None:
        self.chain = chain
        self.registry = ConsentV2(chain.w3, deploy_consent_v2(chain.w3, chain.admin))
        self.contract: Contract = self.registry.contract
        self.patient = chain.fresh_account()
        self.grantee = grantee
        self.relayer = chain.fresh_account()
        self.root = revocation_root(secrets.token_bytes(65))

    def grant(self, *, patient: LocalAccount | None = None, **terms: Any) -> SignedGrant:
        """A grant by the patient (or ``patient``), signed with eth-account."""
        signer = patient or self.patient
        now = self.chain.now()
        values: dict[str, Any] = {
            "root": self.root,
            "patient": terms.pop("patient_address", signer.address),
            "grantee": self.grantee.address,
            "record_ref": RECORD,
            "purposes": 1 << TREATMENT,
            "not_before": now,
            "expires_at": now + 30 * DAY,
            "deadline": now + DAY,
            "now": now,
        }
        values.update(terms)
        grant = new_grant(**values)
        message = reference_message(grant, self.chain.w3.eth.chain_id, self.registry.address)
        return grant.signed(sign(bytes(signer.key), message))

    def commit(self, *grants: SignedGrant) -> int:
        """Commit ``grants`` in one transaction from the relayer; the block time."""
        commitments = [g.commitment(self.registry.domain) for g in grants]
        receipt = self.registry.commit(commitments, self.relayer)
        return block_time(self.chain, receipt)

    def secret(self, grant: SignedGrant) -> bytes:
        return revocation_secret(self.root, grant.salt)

    def status(self, grant: SignedGrant, time: int, **access: Any) -> GrantStatus:
        query: dict[str, Any] = {
            "patient": grant.patient,
            "grantee": self.grantee.address,
            "record_ref": RECORD,
            "purpose": TREATMENT,
            "time": time,
        }
        query.update(access)
        grant_id = query.pop("grant_id", grant.grant_id(self.registry.domain))
        return self.registry.status_at(grant_id, grant, **query)


@pytest.fixture
def world(chain: EmbeddedChain, register: Any) -> World:
    return World(chain, register(Kind.PHARMACY, "Corner Pharmacy"))


# --------------------------------------------------------------------------- hashing


def test_digest_and_commitment_agree_with_eth_account_and_ledger(world: World) -> None:
    grant = world.grant()
    assert world.contract.functions.GRANT_TYPEHASH().call() == GRANT_V2.type_hash
    assert GRANT_V2.type_string == GRANT_V2_TYPE
    domain = world.registry.domain
    assert world.contract.functions.DOMAIN_SEPARATOR().call() == domain.separator
    assert world.contract.functions.grantDigest(grant.values()).call() == grant.digest(domain)
    assert world.contract.functions.commitmentOf(grant.values()).call() == grant.commitment(domain)
    # eth-account signed the reference message; the contract accepts it over its digest.
    committed = world.commit(grant)
    assert world.status(grant, committed) is GrantStatus.VALID


def test_revocation_secret_is_bound_to_root_and_salt() -> None:
    root = revocation_root(b"\x01" * 65)
    salt_a, salt_b = b"\xaa" * 32, b"\xbb" * 32
    assert revocation_secret(root, salt_a) != revocation_secret(root, salt_b)
    assert revocation_root(b"\x02" * 65) != root
    assert revocation_hash(revocation_secret(root, salt_a)) != revocation_secret(root, salt_a)


# --------------------------------------------------------------------------- commit


def test_commit_records_the_block_time_and_names_nothing_but_the_commitment(
    world: World,
) -> None:
    first, second = world.grant(), world.grant()
    c1, c2 = (g.commitment(world.registry.domain) for g in (first, second))
    receipt = world.registry.commit([c1, c2], world.relayer)
    at = block_time(world.chain, receipt)
    assert world.registry.committed_at(c1) == at
    assert world.registry.committed_at(c2) == at
    assert events(world.contract, "GrantCommitted", receipt) == [
        {"commitment": c1},
        {"commitment": c2},
    ]


def test_commit_again_keeps_the_first_time_and_emits_nothing(world: World) -> None:
    grant = world.grant()
    commitment = grant.commitment(world.registry.domain)
    first = world.commit(grant)
    world.chain.travel(first + 100)
    receipt = world.registry.commit([commitment], world.relayer)
    assert events(world.contract, "GrantCommitted", receipt) == []
    assert world.registry.committed_at(commitment) == first


def test_commit_of_nothing_reverts(world: World) -> None:
    with reverts("EmptyBatch"):
        world.registry.commit([], world.relayer)


def test_commit_of_a_zero_commitment_reverts_with_its_position(world: World) -> None:
    good = world.grant().commitment(world.registry.domain)
    with reverts("ZeroCommitment", 1):
        world.registry.commit([good, bytes(32)], world.relayer)
    assert world.registry.committed_at(good) == 0  # the whole batch was refused


# --------------------------------------------------------------------------- revoke


def test_revoke_by_anyone_holding_the_secret_records_the_block_time(world: World) -> None:
    grant = world.grant()
    world.commit(grant)
    stranger = world.chain.fresh_account()  # not the patient's address: any relayer
    receipt = world.registry.revoke(world.secret(grant), stranger)
    at = block_time(world.chain, receipt)
    assert world.registry.revoked_at(grant.revocation_hash) == at
    assert events(world.contract, "GrantRevoked", receipt) == [
        {"revocationHash": grant.revocation_hash}
    ]


def test_revoke_twice_reverts(world: World) -> None:
    grant = world.grant()
    world.registry.revoke(world.secret(grant), world.relayer)
    with reverts("AlreadyRevoked", grant.revocation_hash):
        world.registry.revoke(world.secret(grant), world.relayer)


def test_a_wrong_secret_revokes_nothing_of_the_grant(world: World) -> None:
    grant = world.grant()
    committed = world.commit(grant)
    world.registry.revoke(secrets.token_bytes(32), world.relayer)
    world.chain.travel(committed + 10)
    assert world.status(grant, committed + 5) is GrantStatus.VALID


# --------------------------------------------------------------------------- the rule


def test_grant_status_at_answers_every_case(world: World, register: Any) -> None:
    now = world.chain.now()
    grant = world.grant(
        purposes=(1 << TREATMENT) | (1 << PAYMENT), not_before=now + 100, expires_at=now + 1000
    )
    committed = world.commit(grant)
    t = now + 200
    status = world.status
    assert status(grant, t) is GrantStatus.VALID
    assert status(grant, t, purpose=PAYMENT) is GrantStatus.VALID
    assert status(grant, committed - 1) is GrantStatus.NOT_YET_GRANTED
    assert status(grant, t, patient=world.relayer.address) is GrantStatus.WRONG_PATIENT
    other = register(Kind.HOSPITAL, "Other Hospital")
    assert status(grant, t, grantee=other.address) is GrantStatus.WRONG_GRANTEE
    assert status(grant, t, record_ref=OTHER_RECORD) is GrantStatus.OUT_OF_SCOPE
    assert status(grant, t, purpose=RESEARCH) is GrantStatus.PURPOSE_NOT_COVERED
    assert status(grant, now + 99) is GrantStatus.NOT_YET_VALID
    assert status(grant, now + 1000) is GrantStatus.EXPIRED
    assert status(grant, now + 999) is GrantStatus.VALID
    assert status(grant, t, grant_id=1) is GrantStatus.NOT_FOUND
    # Revoked from its block on, not before.
    world.chain.travel(now + 300)
    revoked = block_time(world.chain, world.registry.revoke(world.secret(grant), world.relayer))
    assert status(grant, revoked - 1) is GrantStatus.VALID
    assert status(grant, revoked) is GrantStatus.REVOKED


def test_a_grant_for_every_record_covers_any_record(world: World) -> None:
    grant = world.grant(record_ref=bytes(32))
    committed = world.commit(grant)
    assert world.status(grant, committed, record_ref=OTHER_RECORD) is GrantStatus.VALID


def test_an_uncommitted_grant_is_not_found(world: World) -> None:
    grant = world.grant()
    assert world.status(grant, world.chain.now()) is GrantStatus.NOT_FOUND


def test_a_grant_committed_after_its_deadline_is_void(world: World) -> None:
    now = world.chain.now()
    grant = world.grant(deadline=now + 10)
    world.chain.travel(now + 11)
    committed = world.commit(grant)
    assert world.status(grant, committed) is GrantStatus.COMMITTED_TOO_LATE


def test_a_revocation_before_the_commitment_voids_the_grant(world: World) -> None:
    """The equivalent of version 1's nonce increase: a signed grant not yet on chain is
    cancelled for good by revoking it first."""
    grant = world.grant()
    world.registry.revoke(world.secret(grant), world.relayer)
    committed = world.commit(grant)
    assert world.status(grant, committed) is GrantStatus.REVOKED
    assert world.status(grant, committed + 5) is GrantStatus.REVOKED


def test_a_signature_by_another_key_is_invalid(world: World) -> None:
    forger = world.chain.fresh_account()
    forged = world.grant(patient=forger, patient_address=world.patient.address)
    committed = world.commit(forged)
    assert world.status(forged, committed) is GrantStatus.INVALID_SIGNATURE


def test_a_high_s_twin_signature_is_invalid(world: World) -> None:
    grant = world.grant()
    twin = grant.signed(high_s_twin(grant.signature))
    committed = world.commit(grant)
    assert world.status(grant, committed) is GrantStatus.VALID
    assert world.status(twin, committed) is GrantStatus.INVALID_SIGNATURE


def test_an_altered_grant_is_another_commitment(world: World) -> None:
    grant = world.grant()
    committed = world.commit(grant)
    wider = SignedGrant(*grant.values()[:3], 0b111111, *grant.values()[4:], grant.signature)
    original_id = grant.grant_id(world.registry.domain)
    assert world.status(wider, committed, grant_id=original_id) is GrantStatus.NOT_FOUND


def test_a_contract_wallet_grant_is_checked_with_erc1271(world: World) -> None:
    owner = world.chain.fresh_account()
    wallet = deploy_test_contract(world.chain, "TestERC1271Wallet", owner, owner.address)
    grant = world.grant(patient=owner, patient_address=wallet.address)
    committed = world.commit(grant)
    assert world.status(grant, committed) is GrantStatus.VALID
    stranger = world.chain.fresh_account()
    forged = world.grant(patient=stranger, patient_address=wallet.address)
    world.commit(forged)
    assert world.status(forged, world.chain.now()) is GrantStatus.INVALID_SIGNATURE


def test_anyone_may_commit_and_it_grants_nothing_without_the_patients_signature(
    world: World,
) -> None:
    stranger = world.chain.fresh_account()
    unsigned = world.grant().signed(b"")
    receipt = tx(
        world.chain,
        world.contract.functions.commit([unsigned.commitment(world.registry.domain)]),
        stranger,
    )
    assert receipt["status"] == 1
    assert world.status(unsigned, world.chain.now()) is GrantStatus.INVALID_SIGNATURE
