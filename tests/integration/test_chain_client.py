"""The chain client, the same tests on the embedded chain and on anvil over JSON-RPC."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from ledger.chain.client import (
    AnchorChain,
    BroadcastOutcome,
    Chain,
    CheckpointRoots,
    GrantRequest,
    GrantStatus,
    InstitutionKind,
    SignedTx,
    SignerNotConfigured,
    rpc_chain,
)
from ledger.chain.deploy import Deployment, DeploymentMismatch
from ledger.chain.tx import ChainError, ContractReverted, bump_fee
from ledger.errors import MalformedEventError, ProofError
from ledger.merkle import MemoryTree
from tests.integration.conftest import Harness, deploy_on_anvil, requires_anvil
from tests.support.anvil import Anvil, free_port

ZERO_REF = b"\x00" * 32
RECORD = bytes.fromhex("11" * 32)
OTHER_RECORD = bytes.fromhex("22" * 32)
TREATMENT, PAYMENT, RESEARCH = 0, 1, 3

# The struct strings exactly as ConsentRegistry.sol hashes them.
GRANT_FIELDS = [
    ("address", "patient"),
    ("address", "grantee"),
    ("bytes32", "recordRef"),
    ("uint256", "purposes"),
    ("uint64", "notBefore"),
    ("uint64", "expiresAt"),
    ("uint256", "nonce"),
    ("uint256", "deadline"),
]
REVOKE_FIELDS = [
    ("address", "patient"),
    ("uint256", "grantId"),
    ("uint256", "nonce"),
    ("uint256", "deadline"),
]
INCREASE_NONCE_FIELDS = [
    ("address", "patient"),
    ("uint256", "newNonce"),
    ("uint256", "nonce"),
    ("uint256", "deadline"),
]


def sign_consent(
    chain: Chain,
    patient: LocalAccount,
    primary: str,
    fields: list[tuple[str, str]],
    message: dict[str, Any],
) -> bytes:
    """The patient's EIP-712 signature, made by eth-account in the ConsentRegistry domain."""
    full_message = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            primary: [{"type": t, "name": n} for t, n in fields],
        },
        "primaryType": primary,
        "domain": {
            "name": "medtrail",
            "version": "1",
            "chainId": chain.chain_id,
            "verifyingContract": chain.deployment.consent_registry,
        },
        "message": {"patient": patient.address, **message},
    }
    return bytes(Account.sign_typed_data(patient.key, full_message=full_message).signature)


def sign_grant(
    chain: Chain, patient: LocalAccount, request: GrantRequest, *, nonce: int, deadline: int
) -> bytes:
    message = {
        "grantee": request.grantee,
        "recordRef": request.record_ref,
        "purposes": request.purposes,
        "notBefore": request.not_before,
        "expiresAt": request.expires_at,
        "nonce": nonce,
        "deadline": deadline,
    }
    return sign_consent(chain, patient, "Grant", GRANT_FIELDS, message)


def sign_revoke(
    chain: Chain, patient: LocalAccount, grant_id: int, *, nonce: int, deadline: int
) -> bytes:
    message = {"grantId": grant_id, "nonce": nonce, "deadline": deadline}
    return sign_consent(chain, patient, "Revoke", REVOKE_FIELDS, message)


def sign_increase_nonce(
    chain: Chain, patient: LocalAccount, new_nonce: int, *, nonce: int, deadline: int
) -> bytes:
    message = {"newNonce": new_nonce, "nonce": nonce, "deadline": deadline}
    return sign_consent(chain, patient, "IncreaseNonce", INCREASE_NONCE_FIELDS, message)


#: The index root the checkpoints of these tests commit (the contract cannot check it).
INDEX_ROOT = b"\x1d" * 32


def leaves(start: int, stop: int) -> list[bytes]:
    """Distinct 32-byte leaves (stand-ins for event digests)."""
    return [i.to_bytes(32, "big") for i in range(start, stop)]


def commit(chain: Chain, tree: MemoryTree, previous: int) -> bytes:
    """Commit the checkpoint of the whole ``tree`` after the one of size ``previous``."""
    proof = tree.consistency_proof(previous, tree.size) if previous else []
    signed = chain.sign_checkpoint(tree.size, tree.root(), INDEX_ROOT, proof)
    tx_hash = chain.broadcast(signed)
    mined = chain.wait_mined(tx_hash)
    assert mined is not None
    assert mined.succeeded
    return tx_hash


# --------------------------------------------------------------------------- checkpoints


def test_a_fresh_deployment_has_no_checkpoint(chain_client: Harness) -> None:
    chain = chain_client.chain
    assert isinstance(chain, AnchorChain)
    assert chain.latest_checkpoint() is None
    assert chain.checkpoint_at(1) is None
    assert chain.checkpoint_at(0) is None
    assert chain.checkpoint_events() == []
    assert chain.find_checkpoint_tx(1) is None


def test_checkpoints_are_signed_broadcast_mined_and_read_back(chain_client: Harness) -> None:
    chain = chain_client.chain
    tree = MemoryTree(leaves(0, 3))
    first = tree.root()

    signed = chain.sign_checkpoint(3, first, INDEX_ROOT, [])
    assert SignedTx.from_raw(signed.raw) == signed
    assert signed.nonce == chain.operator_nonce("latest")
    assert chain.mined(signed.tx_hash) is None  # signed, not sent
    assert chain.broadcast(signed) == signed.tx_hash
    mined = chain.wait_mined(signed.tx_hash)
    assert mined is not None
    assert mined.status == 1
    assert mined.block_number == chain.block_number()
    assert chain.block_hash(mined.block_number) == mined.block_hash
    assert chain.block_hash(mined.block_number + 1000) is None

    latest = chain.latest_checkpoint()
    assert latest is not None
    assert (latest.tree_size, latest.root_hash, latest.block_number) == (
        3,
        first,
        mined.block_number,
    )
    assert latest.timestamp == chain.latest_timestamp()
    assert latest.index_root == INDEX_ROOT
    assert chain.checkpoint_at(3) == CheckpointRoots(3, first, INDEX_ROOT)

    tree.extend(leaves(3, 7))
    second_tx = commit(chain, tree, 3)
    second = chain.latest_checkpoint()
    assert second is not None
    assert (second.tree_size, second.root_hash) == (7, tree.root())
    assert chain.checkpoint_at(7) == CheckpointRoots(7, tree.root(), INDEX_ROOT)
    assert chain.checkpoint_at(3) == CheckpointRoots(3, first, INDEX_ROOT)
    assert chain.checkpoint_at(5) is None
    # A commit's block and time are in its log.
    assert chain.checkpoint_commit(3) == (latest, signed.tx_hash)
    assert chain.checkpoint_commit(7, second.block_number) == (second, second_tx)
    assert chain.checkpoint_commit(7, second.block_number + 1) is None
    assert chain.checkpoint_commit(5) is None

    events = chain.checkpoint_events()
    assert events == [(latest, signed.tx_hash), (second, second_tx)]
    assert chain.checkpoint_events(from_block=second.block_number) == [(second, second_tx)]
    assert chain.checkpoint_events(to_block=latest.block_number) == [(latest, signed.tx_hash)]
    # Paging by block range gives the same answer.
    paged = Chain(chain.w3, chain.deployment, None, log_page_size=1)
    assert paged.checkpoint_events() == events
    assert chain.find_checkpoint_tx(3) == signed.tx_hash
    assert chain.find_checkpoint_tx(7) == second_tx
    assert chain.find_checkpoint_tx(5) is None


def test_broadcasting_the_same_transaction_twice_is_harmless(chain_client: Harness) -> None:
    chain = chain_client.chain
    signed = chain.sign_checkpoint(1, b"\x01" * 32, INDEX_ROOT, [])
    assert chain.submit(signed).outcome is BroadcastOutcome.SENT
    # At once: anvil may still have it in its pool (it mines right after answering).
    soon = chain.submit(signed)
    assert soon.tx_hash == signed.tx_hash
    assert soon.outcome in {BroadcastOutcome.ALREADY_KNOWN, BroadcastOutcome.ALREADY_MINED}
    assert chain.wait_mined(signed.tx_hash) is not None
    again = chain.submit(signed)  # mined: the node says "nonce too low"
    assert again.outcome is BroadcastOutcome.ALREADY_MINED
    assert chain.broadcast_raw(signed.raw) == signed.tx_hash
    assert len(chain.checkpoint_events()) == 1
    assert chain.operator_nonce("latest") == signed.nonce + 1


def test_a_stuck_checkpoint_is_replaced_with_the_same_nonce(chain_client: Harness) -> None:
    with chain_client.manual_chain() as manual:
        chain = manual.chain
        root = b"\x02" * 32
        stuck = chain.sign_checkpoint(1, root, INDEX_ROOT, [])
        assert chain.submit(stuck).outcome is BroadcastOutcome.SENT
        # Sent again while pending: anvil says "already imported"; eth-tester takes it again.
        assert chain.submit(stuck).outcome in {
            BroadcastOutcome.ALREADY_KNOWN,
            BroadcastOutcome.SENT,
        }
        assert chain.mined(stuck.tx_hash) is None
        assert chain.latest_checkpoint() is None

        replacement = chain.sign_checkpoint(
            1, root, INDEX_ROOT, [], nonce=stuck.nonce, fee_bump=1, replacing=stuck
        )
        assert replacement.nonce == stuck.nonce
        assert replacement.tx_hash != stuck.tx_hash
        assert replacement.max_fee_per_gas >= bump_fee(stuck.max_fee_per_gas)
        assert replacement.max_priority_fee_per_gas >= bump_fee(stuck.max_priority_fee_per_gas)
        assert chain.submit(replacement).outcome is BroadcastOutcome.SENT

        manual.mine()
        outcomes = [chain.mined(stuck.tx_hash), chain.mined(replacement.tx_hash)]
        assert [m is not None for m in outcomes] == [False, True]
        assert len(chain.checkpoint_events()) == 1
        assert chain.latest_checkpoint() is not None
        assert chain.find_checkpoint_tx(1) == replacement.tx_hash
        # The worker re-broadcasting either after a restart learns what happened to it.
        assert chain.submit(stuck).outcome is BroadcastOutcome.NONCE_CONSUMED
        assert chain.submit(replacement).outcome is BroadcastOutcome.ALREADY_MINED
        assert chain.operator_nonce("latest") == stuck.nonce + 1


def test_an_underpriced_replacement_is_reported(chain_client: Harness) -> None:
    if chain_client.backend == "embedded":
        pytest.skip("eth-tester replaces a pending transaction whatever the fees")
    with chain_client.manual_chain() as manual:
        chain = manual.chain
        pending = chain.sign_checkpoint(1, b"\x03" * 32, INDEX_ROOT, [], fee_bump=2)
        chain.broadcast(pending)
        cheaper = chain.sign_checkpoint(1, b"\x04" * 32, INDEX_ROOT, [], nonce=pending.nonce)
        assert cheaper.max_priority_fee_per_gas < pending.max_priority_fee_per_gas
        assert chain.submit(cheaper).outcome is BroadcastOutcome.UNDERPRICED
        manual.mine()
        assert chain.mined(pending.tx_hash) is not None
        assert chain.mined(cheaper.tx_hash) is None


def test_fee_bumps_compound_by_at_least_an_eighth(chain_client: Harness) -> None:
    chain = chain_client.chain
    base = chain.sign_checkpoint(1, b"\x05" * 32, INDEX_ROOT, [])
    bumped = chain.sign_checkpoint(1, b"\x05" * 32, INDEX_ROOT, [], fee_bump=3)
    assert bumped.nonce == base.nonce  # nothing was sent
    # No block in between, so the node suggests the same fees both times.
    assert bumped.max_fee_per_gas == bump_fee(base.max_fee_per_gas, 3)
    assert bumped.max_priority_fee_per_gas == bump_fee(base.max_priority_fee_per_gas, 3)
    assert bumped.max_priority_fee_per_gas * 512 >= base.max_priority_fee_per_gas * 729
    assert [bump_fee(100, n) for n in range(4)] == [100, 113, 128, 144]
    assert bump_fee(0) == 1


def test_reverts_surface_with_the_decoded_custom_error(chain_client: Harness) -> None:
    chain = chain_client.chain
    tree = MemoryTree(leaves(0, 3))
    nonce = chain.operator_nonce()
    with pytest.raises(ContractReverted) as info:
        chain.sign_checkpoint(0, tree.root(), INDEX_ROOT, [])
    assert info.value.error == "EmptyCheckpoint"
    with pytest.raises(ContractReverted) as info:
        chain.sign_checkpoint(3, tree.root(), INDEX_ROOT, [tree.root()])
    assert (info.value.error, info.value.args_) == ("ConsistencyProofNotExpected", (1,))
    with pytest.raises(ContractReverted) as info:
        chain.sign_checkpoint(3, tree.root(), bytes(32), [])
    assert info.value.error == "ZeroRoot"
    with pytest.raises(ProofError, match="index root must be 32 bytes"):
        chain.sign_checkpoint(3, tree.root(), INDEX_ROOT[:31], [])
    assert chain.operator_nonce() == nonce  # nothing was signed or sent

    commit(chain, tree, 0)
    with pytest.raises(ContractReverted) as info:
        chain.sign_checkpoint(2, tree.root(), INDEX_ROOT, [])
    assert (info.value.error, info.value.args_) == ("CheckpointNotLarger", (3, 2))
    assert info.value.code == "contract-reverted"

    tree.extend(leaves(3, 7))
    wrong = [bytes(32)] * len(tree.consistency_proof(3, 7))
    with pytest.raises(ContractReverted) as info:
        chain.sign_checkpoint(7, tree.root(), INDEX_ROOT, wrong)
    assert (info.value.error, info.value.args_) == ("InvalidConsistencyProof", (3, 7))

    stranger = chain_client.fresh_account()
    as_stranger = Chain(chain.w3, chain.deployment, stranger)
    with pytest.raises(ContractReverted) as info:
        as_stranger.sign_checkpoint(7, tree.root(), INDEX_ROOT, tree.consistency_proof(3, 7))
    assert info.value.error == "AccessControlUnauthorizedAccount"
    assert info.value.args_[0] == stranger.address

    read_only = Chain(chain.w3, chain.deployment, None)
    with pytest.raises(SignerNotConfigured):
        read_only.sign_checkpoint(7, tree.root(), INDEX_ROOT, tree.consistency_proof(3, 7))
    assert read_only.latest_checkpoint() == chain.latest_checkpoint()


# --------------------------------------------------------------------------- institutions


def test_institutions_are_registered_suspended_and_reinstated(chain_client: Harness) -> None:
    chain = chain_client.chain
    hospital = Account.create().address
    assert not chain.institution(hospital).registered
    assert not chain.is_active(hospital)

    tx_hash = chain.register_institution(hospital, InstitutionKind.HOSPITAL, "St. Mary")
    registered = chain.mined(tx_hash)
    assert registered is not None
    info = chain.institution(hospital.lower())
    assert (info.address, info.kind, info.active, info.name) == (
        hospital,
        InstitutionKind.HOSPITAL,
        True,
        "St. Mary",
    )
    t_registered = info.registered_at
    assert t_registered == chain.latest_timestamp()

    chain_client.travel(t_registered + 100)
    chain.suspend_institution(hospital)
    t_suspended = chain.latest_timestamp()
    assert not chain.is_active(hospital)
    assert not chain.institution(hospital).active

    chain_client.travel(t_suspended + 100)
    chain.reinstate_institution(hospital)
    t_reinstated = chain.latest_timestamp()
    assert chain.is_active(hospital)

    hospital_kind = InstitutionKind.HOSPITAL
    assert not chain.was_active_at(hospital, hospital_kind, t_registered - 1)
    assert chain.was_active_at(hospital, hospital_kind, t_registered)
    assert chain.was_active_at(hospital, hospital_kind, t_suspended - 1)
    assert not chain.was_active_at(hospital, hospital_kind, t_suspended)
    assert not chain.was_active_at(hospital, hospital_kind, t_reinstated - 1)
    assert chain.was_active_at(hospital, hospital_kind, t_reinstated)
    assert not chain.was_active_at(hospital, InstitutionKind.PHARMACY, t_reinstated)

    with pytest.raises(ContractReverted) as info_:
        chain.register_institution(hospital, InstitutionKind.PHARMACY, "again")
    assert (info_.value.error, info_.value.args_) == ("InstitutionAlreadyRegistered", (hospital,))
    with pytest.raises(ContractReverted) as info_:
        chain.reinstate_institution(hospital)
    assert info_.value.error == "InstitutionNotSuspended"

    no_registrar = Chain(chain.w3, chain.deployment, chain_client.operator)
    with pytest.raises(SignerNotConfigured):
        no_registrar.suspend_institution(hospital)


# --------------------------------------------------------------------------- consent


def test_consent_is_relayed_checked_and_revoked(chain_client: Harness) -> None:
    chain = chain_client.chain
    hospital, pharmacy = Account.create().address, Account.create().address
    chain.register_institution(hospital, InstitutionKind.HOSPITAL, "Hospital")
    chain.register_institution(pharmacy, InstitutionKind.PHARMACY, "Pharmacy")
    patient = Account.create()  # holds no ether: the operator pays
    now = chain.latest_timestamp()
    deadline = now + 3600

    assert chain.consent_nonce(patient.address) == 0
    request = GrantRequest(hospital, RECORD, (1 << TREATMENT) | (1 << PAYMENT), now, now + 86_400)
    signature = sign_grant(chain, patient, request, nonce=0, deadline=deadline)
    grant_id, tx_hash = chain.relay_grant(patient.address, request, deadline, signature)
    mined = chain.mined(tx_hash)
    assert mined is not None
    assert mined.succeeded
    assert chain.consent_nonce(patient.address) == 1

    grant = chain.grant(grant_id)
    assert grant is not None
    created = grant.created_at
    assert (grant.patient, grant.grantee, grant.record_ref, grant.purposes) == (
        patient.address,
        hospital,
        RECORD,
        request.purposes,
    )
    assert (grant.not_before, grant.expires_at, grant.revoked_at) == (now, now + 86_400, 0)
    assert not grant.revoked
    assert chain.grant(grant_id + 1) is None
    assert chain.grant(0) is None

    def status(**changes: Any) -> GrantStatus:
        args: dict[str, Any] = {
            "grant_id": grant_id,
            "patient": patient.address,
            "grantee": hospital,
            "record_ref": RECORD,
            "purpose": TREATMENT,
            "t": created,
        }
        args.update(changes)
        return chain.grant_status_at(**args)

    assert status() is GrantStatus.VALID
    assert status(purpose=PAYMENT) is GrantStatus.VALID
    assert status(t=created - 1) is GrantStatus.NOT_YET_GRANTED
    assert status(grantee=pharmacy) is GrantStatus.WRONG_GRANTEE
    assert status(patient=pharmacy) is GrantStatus.WRONG_PATIENT
    assert status(record_ref=OTHER_RECORD) is GrantStatus.OUT_OF_SCOPE
    assert status(purpose=RESEARCH) is GrantStatus.PURPOSE_NOT_COVERED
    assert status(t=now + 86_400) is GrantStatus.EXPIRED
    assert status(grant_id=grant_id + 1) is GrantStatus.NOT_FOUND
    assert GrantStatus.NOT_YET_GRANTED.label == "not-yet-granted"
    assert GrantStatus.PURPOSE_NOT_COVERED.label == "purpose-not-covered"

    # The same signature again: its nonce is used up.
    with pytest.raises(ContractReverted) as info:
        chain.relay_grant(patient.address, request, deadline, signature)
    assert (info.value.error, info.value.args_) == ("InvalidSignature", (patient.address,))

    # A second grant (every record, to the pharmacy), and another patient's grant.
    everything = GrantRequest(pharmacy, ZERO_REF, 1 << TREATMENT, now, now + 86_400)
    second_id, _ = chain.relay_grant(
        patient.address,
        everything,
        deadline,
        sign_grant(chain, patient, everything, nonce=1, deadline=deadline),
    )
    other = Account.create()
    chain.relay_grant(
        other.address,
        request,
        deadline,
        sign_grant(chain, other, request, nonce=0, deadline=deadline),
    )
    grants = chain.grants_of(patient.address)
    assert [g.grant_id for g in grants] == [grant_id, second_id]
    assert grants[1].all_records
    assert [g.patient for g in chain.grants_of(other.address)] == [other.address]
    assert chain.grants_of(Account.create().address) == []

    # Relayed revocation, later (anvil gives blocks of the same second the same timestamp).
    chain_client.travel(created + 10)
    revoke_tx = chain.relay_revoke(
        patient.address,
        grant_id,
        deadline,
        sign_revoke(chain, patient, grant_id, nonce=2, deadline=deadline),
    )
    assert chain.mined(revoke_tx) is not None
    revoked = chain.grant(grant_id)
    assert revoked is not None
    assert revoked.revoked
    assert status(t=revoked.revoked_at) is GrantStatus.REVOKED
    assert status(t=revoked.revoked_at - 1) is GrantStatus.VALID
    assert [g.revoked for g in chain.grants_of(patient.address)] == [True, False]
    with pytest.raises(ContractReverted) as info:
        chain.relay_revoke(
            patient.address,
            grant_id,
            deadline,
            sign_revoke(chain, patient, grant_id, nonce=3, deadline=deadline),
        )
    assert info.value.error == "GrantAlreadyRevoked"

    # A signature made for nonce 3, then cancelled by a relayed nonce increase.
    pending = sign_revoke(chain, patient, second_id, nonce=3, deadline=deadline)
    chain.relay_increase_nonce(
        patient.address,
        10,
        deadline,
        sign_increase_nonce(chain, patient, 10, nonce=3, deadline=deadline),
    )
    assert chain.consent_nonce(patient.address) == 10
    with pytest.raises(ContractReverted) as info:
        chain.relay_revoke(patient.address, second_id, deadline, pending)
    assert info.value.error == "InvalidSignature"
    assert chain.consent_nonce(patient.address) == 10  # nothing was sent


def test_relayed_requests_past_their_deadline_are_refused(chain_client: Harness) -> None:
    chain = chain_client.chain
    hospital = Account.create().address
    chain.register_institution(hospital, InstitutionKind.HOSPITAL, "Hospital")
    patient = Account.create()
    now = chain.latest_timestamp()
    request = GrantRequest(hospital, RECORD, 1 << TREATMENT, now, now + 86_400)
    deadline = now + 60
    signature = sign_grant(chain, patient, request, nonce=0, deadline=deadline)
    chain_client.travel(deadline + 1)
    with pytest.raises(ContractReverted) as info:
        chain.relay_grant(patient.address, request, deadline, signature)
    assert (info.value.error, info.value.args_) == ("SignatureExpired", (deadline,))
    assert chain.grants_of(patient.address) == []


def test_a_grant_request_is_checked_before_it_reaches_the_chain() -> None:
    with pytest.raises(MalformedEventError, match="recordRef"):
        GrantRequest(Account.create().address, b"short", 1, 0, 1)
    with pytest.raises(MalformedEventError, match="expires_at"):
        GrantRequest(Account.create().address, ZERO_REF, 1, 0, -1)


# --------------------------------------------------------------------------- connecting


def test_an_unreachable_chain_is_a_chain_error_quickly() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    deployment = Deployment(
        chain_id=31337,
        institution_registry="0x" + "11" * 20,
        audit_log="0x" + "22" * 20,
        consent_registry="0x" + "33" * 20,
        block_number=1,
        sources_hash="0x00",
    )
    started = time.monotonic()
    with pytest.raises(ChainError) as info:
        rpc_chain(url, deployment, None, timeout=2)
    assert time.monotonic() - started < 2
    assert url in str(info.value)
    assert info.value.status == 503


@pytest.mark.anvil
def test_a_chain_without_the_contracts_is_a_deployment_mismatch(anvil_node: Anvil) -> None:
    empty = Deployment(
        chain_id=anvil_node.chain_id,
        institution_registry=Account.create().address,
        audit_log=Account.create().address,
        consent_registry=Account.create().address,
        block_number=0,
        sources_hash="0x00",
    )
    with pytest.raises(DeploymentMismatch, match="no contract at"):
        rpc_chain(anvil_node.url, empty, None)
    with pytest.raises(DeploymentMismatch, match="the chain has id 31337"):
        rpc_chain(anvil_node.url, empty.model_copy(update={"chain_id": 1}), None)


@pytest.mark.anvil
@requires_anvil
def test_a_node_going_down_and_coming_back(tmp_path: Path) -> None:
    # A node of its own, keeping its chain in a state file across the restart.
    with Anvil(state_file=tmp_path / "state.json") as node:
        deployment, _admin, operator, _registrar = deploy_on_anvil(node)
        chain = rpc_chain(node.url, deployment, operator, timeout=2)
        tree = MemoryTree(leaves(0, 2))
        commit(chain, tree, 0)
        tree.extend(leaves(2, 5))
        signed = chain.sign_checkpoint(5, tree.root(), INDEX_ROOT, tree.consistency_proof(2, 5))

        node.stop()
        for read in (chain.block_number, chain.latest_checkpoint):
            with pytest.raises(ChainError, match=f"the chain at {node.url} is unreachable"):
                read()
        with pytest.raises(ChainError):
            chain.broadcast(signed)
        with pytest.raises(ChainError, match=node.url):
            rpc_chain(node.url, deployment, operator, timeout=2)

        node.start()  # same port, same chain
        assert chain.checkpoint_at(2) is not None
        assert chain.submit(signed).outcome is BroadcastOutcome.SENT
        assert chain.wait_mined(signed.tx_hash) is not None
        latest = chain.latest_checkpoint()
        assert latest is not None
        assert latest.tree_size == 5
