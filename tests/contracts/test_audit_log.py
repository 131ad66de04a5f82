"""AuditLog: checkpoints (log root and index root), their on-chain RFC 9162 consistency check,
roles and views.

Proofs come from ``ledger.merkle.MemoryTree``; its roots are cross-checked against the
independent ``pymerkle`` implementation, so the contract is tested against two Python
implementations of RFC 9162, not just ours.
"""

from __future__ import annotations

import hashlib
import random

import pymerkle
import pytest
from eth_abi.abi import decode as abi_decode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3.contract import Contract
from web3.types import TxReceipt

from ledger.chain.artifacts import load_artifact
from ledger.chain.deploy import DEFAULT_ADMIN_ROLE, LOG_OPERATOR_ROLE
from ledger.errors import ProofError
from ledger.merkle import MemoryTree, leaf_hash, node_hash, verify_consistency
from tests.conftest import EmbeddedChain
from tests.contracts.conftest import (
    ZERO_ADDRESS,
    block_time,
    events,
    reverts,
    tx,
    unauthorized,
    view,
)

MAX_SIZE = 2000


def _leaves(count: int, seed: str) -> list[bytes]:
    return [hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(count)]


#: One tree of MAX_SIZE leaves: every size m <= MAX_SIZE is a prefix of it.
TREE = MemoryTree(leaf_hash(d) for d in _leaves(MAX_SIZE, "event"))


def flip(value: bytes, index: int = 0, mask: int = 0x01) -> bytes:
    """``value`` with byte ``index`` xor-ed with ``mask`` (non-zero)."""
    assert mask
    return value[:index] + bytes([value[index] ^ mask]) + value[index + 1 :]


def index_root(size: int) -> bytes:
    """A stand-in for the index root at ``size`` (the contract cannot check how it was built)."""
    return hashlib.sha256(b"index at %d" % size).digest()


def commit(chain: EmbeddedChain, size: int, proof: list[bytes] | None = None) -> TxReceipt:
    """Commit TREE's checkpoint of ``size`` with ``proof`` (default: from the latest)."""
    audit_log = chain.contracts.audit_log
    if proof is None:
        latest = audit_log.functions.latestCheckpoint().call()[0]
        proof = TREE.consistency_proof(latest, size) if latest else []
    return tx(
        chain,
        audit_log.functions.commitCheckpoint(size, TREE.root(size), index_root(size), proof),
        chain.operator,
    )


# --------------------------------------------------------------------------- cross-check


@pytest.mark.parametrize("seed", range(3))
def test_memory_tree_roots_equal_pymerkle(seed: int) -> None:
    """ledger.merkle and pymerkle (sha256, RFC 9162 0x00/0x01 prefixes) agree on every root."""
    rng = random.Random(seed)
    entries = [rng.randbytes(rng.randrange(0, 80)) for _ in range(rng.randrange(1, 300))]
    ours = MemoryTree(leaf_hash(e) for e in entries)
    theirs = pymerkle.InmemoryTree(algorithm="sha256")  # security on: 0x00 / 0x01 prefixes
    for entry in entries:
        theirs.append_entry(entry)
    assert theirs.get_size() == ours.size == len(entries)
    for size in range(1, len(entries) + 1):
        assert ours.root(size) == theirs.get_root(size), size
    # pymerkle's own consistency proofs accept our roots as one log's states.
    for _ in range(10):
        m = rng.randrange(1, len(entries) + 1)
        n = rng.randrange(m, len(entries) + 1)
        proof = theirs.prove_consistency(m, n)
        pymerkle.verify_consistency(ours.root(m), ours.root(n), proof)


def test_hashing_matches_rfc_9162() -> None:
    """Leaf and node hashes are SHA-256 with 0x00 / 0x01 prefixes (what the contract uses)."""
    a, b = b"\x11" * 32, b"\x22" * 32
    assert leaf_hash(a) == hashlib.sha256(b"\x00" + a).digest()
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()
    assert MemoryTree([a, b]).root() == node_hash(a, b)


# --------------------------------------------------------------------------- commits


def test_state_before_any_checkpoint(audit_log: Contract) -> None:
    assert tuple(audit_log.functions.latestCheckpoint().call()) == (
        0,
        b"\x00" * 32,
        b"\x00" * 32,
        0,
        0,
    )
    assert audit_log.functions.checkpointCount().call() == 0


def test_first_checkpoint_without_proof_is_accepted(
    chain: EmbeddedChain, audit_log: Contract
) -> None:
    receipt = commit(chain, 7, [])
    block, when = receipt["blockNumber"], block_time(chain, receipt)
    root = TREE.root(7)
    assert events(audit_log, "CheckpointCommitted", receipt) == [
        {"treeSize": 7, "rootHash": root, "indexRoot": index_root(7), "previousSize": 0}
    ]
    assert tuple(audit_log.functions.latestCheckpoint().call()) == (
        7,
        root,
        index_root(7),
        block,
        when,
    )
    assert tuple(audit_log.functions.checkpointAt(7).call()) == (root, index_root(7))
    assert audit_log.functions.checkpointCount().call() == 1


def test_first_checkpoint_with_proof_reverts(chain: EmbeddedChain, audit_log: Contract) -> None:
    with reverts("ConsistencyProofNotExpected", 2):
        tx(
            chain,
            audit_log.functions.commitCheckpoint(
                5, TREE.root(5), index_root(5), TREE.consistency_proof(2, 5)
            ),
            chain.operator,
        )
    assert audit_log.functions.checkpointCount().call() == 0


@pytest.mark.parametrize("previous", [None, 4])
def test_empty_checkpoint_reverts(
    chain: EmbeddedChain, audit_log: Contract, previous: int | None
) -> None:
    if previous:
        commit(chain, previous)
    with reverts("EmptyCheckpoint"):
        tx(
            chain,
            audit_log.functions.commitCheckpoint(0, TREE.root(0), index_root(0), []),
            chain.operator,
        )


@pytest.mark.parametrize("size", [10, 9, 1])
def test_checkpoint_not_larger_reverts(
    chain: EmbeddedChain, audit_log: Contract, size: int
) -> None:
    commit(chain, 10)
    with reverts("CheckpointNotLarger", 10, size):
        tx(
            chain,
            audit_log.functions.commitCheckpoint(size, TREE.root(size), index_root(size), []),
            chain.operator,
        )
    assert audit_log.functions.checkpointCount().call() == 1


@pytest.mark.parametrize("previous", [None, 4])
@pytest.mark.parametrize("which", ["rootHash", "indexRoot"])
def test_zero_root_reverts(
    chain: EmbeddedChain, audit_log: Contract, previous: int | None, which: str
) -> None:
    """A zero root is no SHA-256 root (and ``checkpointAt`` reads a zero root as "none")."""
    if previous:
        commit(chain, previous)
    root = b"\x00" * 32 if which == "rootHash" else TREE.root(8)
    index = b"\x00" * 32 if which == "indexRoot" else index_root(8)
    proof = TREE.consistency_proof(previous, 8) if previous else []
    with reverts("ZeroRoot"):
        tx(chain, audit_log.functions.commitCheckpoint(8, root, index, proof), chain.operator)
    assert audit_log.functions.checkpointCount().call() == (1 if previous else 0)


def test_index_root_is_kept_as_committed(chain: EmbeddedChain, audit_log: Contract) -> None:
    """The index root is the operator's word, not checked on chain, but kept: a checkpoint's
    size is never committed again, so neither of its roots can change later."""
    commit(chain, 10)
    commit(chain, 20)
    for size in (10, 20):
        with reverts("CheckpointNotLarger", 20, size):
            tx(
                chain,
                audit_log.functions.commitCheckpoint(
                    size, TREE.root(size), index_root(size + 1), []
                ),
                chain.operator,
            )
        assert tuple(audit_log.functions.checkpointAt(size).call()) == (
            TREE.root(size),
            index_root(size),
        )
    assert audit_log.functions.latestCheckpoint().call()[2] == index_root(20)


def test_sequence_of_checkpoints_with_real_proofs(
    chain: EmbeddedChain, audit_log: Contract
) -> None:
    """Real transactions: sizes chosen to hit powers of two, odd sizes and long jumps."""
    sizes = [1, 2, 3, 4, 8, 9, 31, 32, 33, 500, 1024, 1025, 1999, 2000]
    receipts: dict[int, TxReceipt] = {}
    previous = 0
    for size in sizes:
        receipt = commit(chain, size)
        assert events(audit_log, "CheckpointCommitted", receipt) == [
            {
                "treeSize": size,
                "rootHash": TREE.root(size),
                "indexRoot": index_root(size),
                "previousSize": previous,
            }
        ]
        receipts[size] = receipt
        previous = size
    assert audit_log.functions.checkpointCount().call() == len(sizes)
    for size in sizes:
        assert tuple(audit_log.functions.checkpointAt(size).call()) == (
            TREE.root(size),
            index_root(size),
        )
    last = receipts[2000]
    assert tuple(audit_log.functions.latestCheckpoint().call()) == (
        2000,
        TREE.root(2000),
        index_root(2000),
        last["blockNumber"],
        block_time(chain, last),
    )


def test_checkpoint_at_unknown_size_reverts(chain: EmbeddedChain, audit_log: Contract) -> None:
    with reverts("CheckpointNotFound", 5):
        view(audit_log.functions.checkpointAt(5))
    commit(chain, 4)
    commit(chain, 6)
    with reverts("CheckpointNotFound", 5):
        view(audit_log.functions.checkpointAt(5))
    with reverts("CheckpointNotFound", 0):
        view(audit_log.functions.checkpointAt(0))


def test_checkpoint_with_bad_proof_reverts_and_keeps_state(
    chain: EmbeddedChain, audit_log: Contract
) -> None:
    commit(chain, 100)
    before = tuple(audit_log.functions.latestCheckpoint().call())
    proof = TREE.consistency_proof(100, 300)
    bad_proofs = [
        [flip(proof[0]), *proof[1:]],  # one byte changed
        proof[:-1],  # missing element
        [*proof, b"\x00" * 32],  # extra element
        [],  # empty
    ]
    for bad in bad_proofs:
        with reverts("InvalidConsistencyProof", 100, 300):
            tx(
                chain,
                audit_log.functions.commitCheckpoint(300, TREE.root(300), index_root(300), bad),
                chain.operator,
            )
    with reverts("InvalidConsistencyProof", 100, 300):  # a root that rewrites history
        tx(
            chain,
            audit_log.functions.commitCheckpoint(
                300, flip(TREE.root(300), 31), index_root(300), proof
            ),
            chain.operator,
        )
    # A different history of the same length, with its own correct proof, is refused too.
    forked = MemoryTree(TREE.leaf(i) for i in range(99))
    forked.extend(leaf_hash(d) for d in _leaves(201, "fork"))
    with reverts("InvalidConsistencyProof", 100, 300):
        tx(
            chain,
            audit_log.functions.commitCheckpoint(
                300, forked.root(300), index_root(300), forked.consistency_proof(100, 300)
            ),
            chain.operator,
        )
    assert tuple(audit_log.functions.latestCheckpoint().call()) == before
    assert audit_log.functions.checkpointCount().call() == 1
    commit(chain, 300, proof)  # the right proof still goes through
    assert audit_log.functions.latestCheckpoint().call()[0] == 300


# --------------------------------------------------------------------------- property test


def _verify(
    audit_log: Contract, m: int, n: int, old: bytes, new: bytes, proof: list[bytes]
) -> bool:
    result: bool = audit_log.functions.verifyConsistency(m, n, old, new, proof).call()
    return result


class FastVerifier:
    """``verifyConsistency`` through eth-tester's ``call`` directly (no web3 middleware).

    The same EVM execution as ``_verify`` at about half the cost, for the property test;
    ``test_fast_verifier_agrees_with_web3`` checks that both give the same answers.
    """

    def __init__(self, chain: EmbeddedChain) -> None:
        self.tester = chain.tester
        self.audit_log = chain.contracts.audit_log
        self.sender = chain.operator.address

    def __call__(self, m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> bool:
        data = self.audit_log.encode_abi("verifyConsistency", [m, n, old, new, proof])
        result = self.tester.call(
            {"from": self.sender, "to": self.audit_log.address, "data": data, "gas": 10**7}
        )
        (value,) = abi_decode(["bool"], bytes.fromhex(result.removeprefix("0x")))
        return bool(value)


def test_fast_verifier_agrees_with_web3(chain: EmbeddedChain, audit_log: Contract) -> None:
    fast = FastVerifier(chain)
    proof = TREE.consistency_proof(300, 1234)
    old, new = TREE.root(300), TREE.root(1234)
    for args in [
        (300, 1234, old, new, proof),
        (300, 1234, old, flip(new), proof),
        (300, 1234, old, new, proof[:-1]),
    ]:
        assert fast(*args) is _verify(audit_log, *args)
    assert fast(300, 1234, old, new, proof) is True


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # only views: no state
)
@given(data=st.data())
def test_consistency_proofs_property(chain: EmbeddedChain, data: st.DataObject) -> None:
    """For random 0 < m < n <= 2000: our proof verifies on chain, and every mutation fails."""
    verify = FastVerifier(chain)
    n = data.draw(st.integers(2, MAX_SIZE), label="n")
    m = data.draw(st.integers(1, n - 1), label="m")
    old, new = TREE.root(m), TREE.root(n)
    proof = TREE.consistency_proof(m, n)
    assert proof, "0 < m < n always needs a proof"
    assert verify(m, n, old, new, proof) is True

    # One byte changed in any proof element.
    i = data.draw(st.integers(0, len(proof) - 1), label="element")
    byte = data.draw(st.integers(0, 31), label="byte")
    mask = data.draw(st.integers(1, 255), label="mask")
    changed = [*proof[:i], flip(proof[i], byte, mask), *proof[i + 1 :]]
    assert verify(m, n, old, new, changed) is False
    # A wrong new root, a wrong old root.
    assert verify(m, n, old, flip(new, byte, mask), proof) is False
    assert verify(m, n, flip(old, byte, mask), new, proof) is False
    # A wrong old size (the proof and roots of m, presented as another size).
    if n > 2:
        wrong_m = data.draw(st.integers(1, n - 2), label="wrong m")
        wrong_m += wrong_m >= m  # any size in [1, n) but m
        assert verify(wrong_m, n, old, new, proof) is False
    # A wrong new size: RFC 9162 does not always bind it (see the test below), so the
    # contract must give exactly the reference verifier's answer.
    wrong_n = data.draw(st.integers(m + 1, 2 * MAX_SIZE), label="wrong n")
    wrong_n += wrong_n >= n  # any size above m but n
    expected = _reference_accepts(m, wrong_n, old, new, proof)
    assert verify(m, wrong_n, old, new, proof) is expected
    # An empty proof where one is needed; an extra element; a missing element (anywhere).
    assert verify(m, n, old, new, []) is False
    extra = data.draw(st.binary(min_size=32, max_size=32), label="extra")
    at = data.draw(st.integers(0, len(proof)), label="insert at")
    assert verify(m, n, old, new, [*proof[:at], extra, *proof[at:]]) is False
    assert verify(m, n, old, new, [*proof[:i], *proof[i + 1 :]]) is False


def _reference_accepts(m: int, n: int, old: bytes, new: bytes, proof: list[bytes]) -> bool:
    try:
        verify_consistency(m, n, old, new, proof)
    except ProofError:
        return False
    return True


def test_new_size_is_bound_only_up_to_the_proof_shape(audit_log: Contract) -> None:
    """A known property of RFC 9162 (§2.1.4.2), not a deviation of the contract.

    The verification walks the proof with the shape that ``(old_size, new_size)`` imply;
    sizes whose shapes coincide give the same computation. So the proof from 3 to 5 also
    "proves" 3 to 6, 7 and 8 with the same roots, on chain as in the Python reference.
    The chain therefore binds every checkpoint's root to the previous root, but trusts the
    operator for the tree size that labels it; the size is authenticated off chain (the
    operator's signed checkpoints), as in Certificate Transparency's signed tree heads.
    Wrong *old* sizes are always refused (the old root is rebuilt from the proof).
    """
    proof = TREE.consistency_proof(3, 5)
    old, new = TREE.root(3), TREE.root(5)
    for n in (5, 6, 7, 8):
        assert _verify(audit_log, 3, n, old, new, proof) is True
        assert _reference_accepts(3, n, old, new, proof) is True
    for n in (4, 9, 16):
        assert _verify(audit_log, 3, n, old, new, proof) is False
        assert _reference_accepts(3, n, old, new, proof) is False
    for m in (1, 2, 4):
        assert _verify(audit_log, m, 5, old, new, proof) is False


def test_verify_consistency_edge_sizes(audit_log: Contract) -> None:
    root1, root2 = TREE.root(1), TREE.root(2)
    assert _verify(audit_log, 1, 2, root1, root2, TREE.consistency_proof(1, 2)) is True
    assert _verify(audit_log, 0, 2, TREE.root(0), root2, []) is False
    assert _verify(audit_log, 0, 2, TREE.root(0), root2, TREE.consistency_proof(1, 2)) is False
    assert _verify(audit_log, 2, 2, root2, root2, []) is False
    assert _verify(audit_log, 2, 1, root2, root1, [root1]) is False
    # Non-increasing sizes are never "consistent", whatever the proof.
    proof = TREE.consistency_proof(5, 9)
    assert _verify(audit_log, 9, 9, TREE.root(9), TREE.root(9), proof) is False
    assert _verify(audit_log, 9, 5, TREE.root(9), TREE.root(5), proof) is False
    big = 2**64 - 1
    assert _verify(audit_log, big - 1, big, root1, root2, [root1] * 64) is False


def test_property_proofs_also_commit_as_transactions(chain: EmbeddedChain) -> None:
    """A few random (m, n) pairs through real commitCheckpoint transactions."""
    rng = random.Random(2)
    for _ in range(4):
        n = rng.randrange(2, MAX_SIZE + 1)
        m = rng.randrange(1, n)
        snapshot = chain.tester.take_snapshot()
        commit(chain, m, [])
        receipt = commit(chain, n, TREE.consistency_proof(m, n))
        assert receipt["status"] == 1
        assert chain.contracts.audit_log.functions.latestCheckpoint().call()[0] == n
        chain.tester.revert_to_snapshot(snapshot)


# --------------------------------------------------------------------------- roles


def test_commit_checkpoint_refuses_non_operator(chain: EmbeddedChain, audit_log: Contract) -> None:
    for caller in (chain.fresh_account(), chain.admin, chain.registrar):
        with reverts(*unauthorized(caller.address, LOG_OPERATOR_ROLE)):
            tx(
                chain,
                audit_log.functions.commitCheckpoint(1, TREE.root(1), index_root(1), []),
                caller,
            )
    assert audit_log.functions.checkpointCount().call() == 0


def test_constructor_refuses_zero_admin(chain: EmbeddedChain) -> None:
    artifact = load_artifact("AuditLog")
    factory = chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    with reverts("ZeroAddress"):
        tx(chain, factory.constructor(ZERO_ADDRESS), chain.admin)


def test_admin_grants_and_revokes_log_operator(chain: EmbeddedChain, audit_log: Contract) -> None:
    operator = chain.fresh_account()
    tx(chain, audit_log.functions.grantRole(LOG_OPERATOR_ROLE, operator.address), chain.admin)
    assert audit_log.functions.hasRole(LOG_OPERATOR_ROLE, operator.address).call() is True
    tx(chain, audit_log.functions.commitCheckpoint(1, TREE.root(1), index_root(1), []), operator)
    tx(chain, audit_log.functions.revokeRole(LOG_OPERATOR_ROLE, operator.address), chain.admin)
    with reverts(*unauthorized(operator.address, LOG_OPERATOR_ROLE)):
        tx(
            chain,
            audit_log.functions.commitCheckpoint(
                2, TREE.root(2), index_root(2), TREE.consistency_proof(1, 2)
            ),
            operator,
        )
    assert audit_log.functions.checkpointCount().call() == 1
    for caller in (chain.operator, operator):
        with reverts(*unauthorized(caller.address, DEFAULT_ADMIN_ROLE)):
            tx(chain, audit_log.functions.grantRole(LOG_OPERATOR_ROLE, caller.address), caller)
    assert audit_log.functions.LOG_OPERATOR_ROLE().call() == LOG_OPERATOR_ROLE
