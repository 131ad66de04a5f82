"""The anchor worker under faults (issue 3 "Chain and anchoring", DESIGN §6.3).

Each scenario drives :meth:`AnchorWorker.step` by hand, with a fake clock where timing
matters, and injects the fault at a precise point: a crash (an exception from a wrapped chain
method or from the store, then a new worker or a new :class:`Ledger` over the same database
and chain), a node going down, a transaction the node forgets, a stuck transaction, a nonce
taken by another operator transaction, a reorg, a store edited behind the service's back.
Every scenario ends with :func:`tests.support.anchoring.assert_sound`: every acknowledged
event in the log exactly once, each checkpoint on chain once, the chain's latest checkpoint
the store's latest anchored one.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import Engine, event, update

from ledger.anchor import ANCHORED, CONFIRMED, SENT, AnchorWorker, LogDivergedError
from ledger.chain.client import Broadcast, Chain, GrantRequest, SignedTx, deploy_to_rpc
from ledger.chain.deploy import Deployment, DeploymentMismatch
from ledger.chain.tx import ChainError
from ledger.events import Purpose, purposes_mask
from ledger.ingest import Receipt
from ledger.log import MerkleLog
from ledger.service import Ledger
from ledger.store import Store
from ledger.store.models import TreeNode, node_key
from tests.integration.conftest import ANVIL_MISSING, requires_anvil
from tests.support.anchoring import (
    FakeClock,
    assert_sound,
    checkpoint_rows,
    checkpoint_txs,
    submit_accesses,
)
from tests.support.anvil import Anvil, anvil_available
from tests.support.ledgers import Env, open_env

_NODES = TreeNode.__table__  # type: ignore[attr-defined]

BACKENDS = [
    pytest.param("embedded", id="embedded"),
    pytest.param("anvil", id="anvil", marks=pytest.mark.anvil),
]


class Crash(Exception):
    """The process dies here (raised from a wrapped chain method or from the store)."""


# --------------------------------------------------------------------------- the rig


@dataclass
class Rig:
    """A ledger, and an anchor worker over it on a fake clock that can be "restarted".

    A restart is a new process: over anvil, a new :class:`Ledger` opened with the same
    settings (same database, same deployment file); on the embedded chain, which only lives
    in this process, a new store connection, Merkle log and worker over the same chain.
    """

    env: Env
    clock: FakeClock
    stack: ExitStack
    worker_options: dict[str, Any]
    ledger: Ledger = field(init=False)
    store: Store = field(init=False)
    log: MerkleLog = field(init=False)
    worker: AnchorWorker = field(init=False)

    def __post_init__(self) -> None:
        self.ledger = self.env.ledger
        self._use(self.ledger.store)

    @property
    def chain(self) -> Chain:
        return self.ledger.chain

    def _use(self, store: Store) -> None:
        self.store = store
        self.log = MerkleLog(store)
        self.worker = AnchorWorker(
            store, self.log, self.ledger.chain, clock=self.clock, **self.worker_options
        )

    def restart(self) -> None:
        if self.env.chain_backend == "anvil":
            ledger = Ledger.open(self.ledger.settings)
            self.stack.callback(ledger.close)
            self.ledger = ledger
            self._use(ledger.store)
        else:
            store = Store(self.ledger.settings.database_url)
            self.stack.callback(store.dispose)
            self._use(store)

    def submit(self, count: int) -> list[Receipt]:
        # Ingest through the ledger first opened: other API processes keep running.
        return submit_accesses(self.env, count)

    def mined(self, tx_hash: bytes) -> None:
        """Wait for ``tx_hash`` (anvil answers before it mines)."""
        assert self.chain.wait_mined(tx_hash, timeout=10) is not None

    def sound(self, receipts: list[Receipt], **kw: Any) -> None:
        assert_sound(self.store, self.log, self.chain, receipts, **kw)


@contextmanager
def open_rig(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str,
    *,
    node: Anvil | None = None,
    worker: dict[str, Any] | None = None,
    **settings: Any,
) -> Iterator[Rig]:
    if backend == "anvil" and node is None:
        node = request.getfixturevalue("anvil_node")
    options = {"interval": 3600.0, "batch_events": 10_000, "confirmations": 1, "tx_timeout": 60.0}
    options.update(worker or {})
    with ExitStack() as stack:
        env = stack.enter_context(open_env(backend, "sqlite", tmp_path, node, **settings))
        yield Rig(env, FakeClock(), stack, options)


@contextmanager
def replaced(obj: object, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    """Shadow a method of one object (not its class) for the duration."""
    setattr(obj, name, replacement)
    try:
        yield
    finally:
        delattr(obj, name)


@contextmanager
def store_fails_once(engine: Engine, statement_prefix: str) -> Iterator[list[str]]:
    """The store raises :class:`Crash` at the first statement starting with the prefix."""
    fired: list[str] = []

    def hook(*args: Any) -> None:
        statement: str = args[2]
        if not fired and statement.lstrip().upper().startswith(statement_prefix.upper()):
            fired.append(statement)
            raise Crash(f"the store died at {statement.split()[0]}")

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield fired
    finally:
        event.remove(engine, "before_cursor_execute", hook)


def die(*_args: object, **_kwargs: object) -> Any:
    """A wrapped method at which the process dies."""
    raise Crash


def statuses(store: Store) -> list[tuple[int, str]]:
    return [(row.tree_size, row.status) for row in checkpoint_rows(store)]


# --------------------------------------------------------------------------- 1. restarts

CRASH_POINTS = ["sequenced", "recorded", "broadcast", "mined"]


@pytest.mark.parametrize("crash", CRASH_POINTS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_restart_after_a_crash_at_each_step_anchors_once(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, crash: str
) -> None:
    with open_rig(request, tmp_path, backend) as rig:
        receipts = rig.submit(3)
        chain = rig.chain

        if crash == "sequenced":  # the batch is in the tree, nothing is signed
            with replaced(chain, "sign_checkpoint", die), pytest.raises(Crash):
                rig.worker.step(force=True)
            assert rig.log.head().size == 3
            assert checkpoint_rows(rig.store) == []

        elif crash == "recorded":  # the signed transaction is stored, never broadcast
            with replaced(chain, "submit", die), pytest.raises(Crash):
                rig.worker.step(force=True)
            assert statuses(rig.store) == [(3, SENT)]
            assert chain.mined(checkpoint_txs(rig.store)[0].tx_hash) is None

        elif crash == "broadcast":  # broadcast, then dead before seeing the receipt
            real = chain.submit

            def send_then_die(signed: SignedTx) -> Broadcast:
                real(signed)
                raise Crash

            with replaced(chain, "submit", send_then_die), pytest.raises(Crash):
                rig.worker.step(force=True)
            assert statuses(rig.store) == [(3, SENT)]

        else:  # mined, and the store died while recording it
            rig.worker.step(force=True)
            rig.mined(checkpoint_txs(rig.store)[0].tx_hash)
            with store_fails_once(rig.store.engine, "UPDATE checkpoints") as fired:
                with pytest.raises(Crash):
                    rig.worker.step()
                assert fired
            assert statuses(rig.store) == [(3, SENT)]
            assert chain.latest_checkpoint().tree_size == 3  # type: ignore[union-attr]

        recorded = checkpoint_txs(rig.store)
        rig.restart()

        broadcasts: list[bytes] = []
        real_submit = rig.chain.submit

        def spy(signed: SignedTx) -> Broadcast:
            broadcasts.append(signed.tx_hash)
            return real_submit(signed)

        with replaced(rig.chain, "submit", spy):
            rig.worker.step(force=True)
            txs = checkpoint_txs(rig.store)
            if crash == "sequenced":
                assert len(txs) == 1
                assert broadcasts == [txs[0].tx_hash]
            elif crash == "recorded":
                # The very transaction recorded before the crash, not a new one.
                assert txs == recorded
                assert broadcasts == [recorded[0].tx_hash]
            else:  # already on chain: adopted, nothing sent
                assert txs == recorded
                assert broadcasts == []
            rig.mined(txs[0].tx_hash)
            rig.worker.step()
        assert statuses(rig.store) == [(3, CONFIRMED)]
        assert rig.chain.find_checkpoint_tx(3) == txs[0].tx_hash
        rig.sound(receipts)

        # The log goes on from the recovered checkpoint (the contract checks consistency).
        receipts += rig.submit(2)
        rig.worker.step(force=True)
        rig.mined(checkpoint_txs(rig.store, 5)[0].tx_hash)
        rig.worker.step()
        assert statuses(rig.store) == [(3, CONFIRMED), (5, CONFIRMED)]
        assert len(checkpoint_txs(rig.store)) == 2
        rig.sound(receipts)


@pytest.mark.anvil
def test_a_restart_finds_the_new_ledger_ready_on_the_same_chain(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Over anvil the restart is a real `Ledger.open`: it also checks the log against the
    chain and serves proofs against the checkpoint the crashed process committed."""
    with open_rig(request, tmp_path, "anvil") as rig:
        receipts = rig.submit(2)
        real = rig.chain.submit

        def send_then_die(signed: SignedTx) -> Broadcast:
            real(signed)
            raise Crash

        with replaced(rig.chain, "submit", send_then_die), pytest.raises(Crash):
            rig.ledger.anchor_now()
        rig.restart()
        rig.mined(checkpoint_txs(rig.store)[0].tx_hash)
        view = rig.ledger.event(receipts[0].event_id)
        assert view.status == "pending"  # not recorded yet
        rig.ledger.anchor_now()
        view = rig.ledger.event(receipts[0].event_id)
        assert view.status == "confirmed"
        assert view.bundle.checkpoint is not None
        assert view.bundle.checkpoint.treeSize == 2


# --------------------------------------------------------------------------- 2. triggers


def test_checkpoints_wait_for_the_interval_or_the_batch_unless_forced(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with open_rig(request, tmp_path, "embedded", worker={"interval": 60, "batch_events": 5}) as rig:
        clock, step = rig.clock, rig.worker.step
        receipts = rig.submit(1)
        # The log was never anchored: the first events are due at once.
        assert step().action == "sent checkpoint 1"
        assert step().confirmed_size == 1

        receipts += rig.submit(3)  # 4 events, 3 new: fewer than the batch
        clock.advance(10)
        status = step()
        assert (status.tree_size, status.chain_size, status.in_flight) == (4, 1, None)
        clock.advance(49)  # 59 s after the last checkpoint
        assert step().in_flight is None
        assert rig.chain.latest_checkpoint().tree_size == 1  # type: ignore[union-attr]
        clock.advance(1)  # 60 s: the interval
        assert step().action == "sent checkpoint 4"
        assert step().confirmed_size == 4

        receipts += rig.submit(4)  # 4 new: not yet a batch
        clock.advance(1)
        assert step().in_flight is None
        receipts += rig.submit(1)  # 5 new: a batch, long before the interval
        assert step().action == "sent checkpoint 9"
        assert step().confirmed_size == 9

        receipts += rig.submit(1)  # 1 new, 1 s later: forced
        clock.advance(1)
        assert step().in_flight is None
        assert step(force=True).action == "sent checkpoint 10"
        assert step(force=True).confirmed_size == 10
        assert step(force=True).in_flight is None  # nothing new: nothing sent, forced or not

        assert [size for size, _ in statuses(rig.store)] == [1, 4, 9, 10]
        rig.sound(receipts)


# --------------------------------------------------------------------------- 3. RPC failure


@pytest.mark.anvil
@requires_anvil
def test_the_chain_going_away_stops_anchoring_not_ingest(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    node = Anvil(state_file=tmp_path / "chain-state.json")
    with (
        node,
        open_rig(
            request, tmp_path, "anvil", node=node, institution_cache_ttl=3600.0, rpc_timeout=0.5
        ) as rig,
    ):
        ledger = rig.ledger
        receipts = rig.submit(2)  # also fills the institution cache
        ledger.anchor_now()
        rig.mined(checkpoint_txs(rig.store)[0].tx_hash)
        ledger.anchor_now()
        assert statuses(rig.store) == [(2, CONFIRMED)]

        # Down: anchoring fails with a chain error, ingest and reads go on.
        node.stop()
        started = time.monotonic()
        with pytest.raises(ChainError):
            ledger.anchor_now()
        assert time.monotonic() - started < 5
        receipts += rig.submit(3)
        assert ledger.event(receipts[-1].event_id).status == "pending"
        assert ledger.event(receipts[0].event_id).status == "confirmed"

        # Back (same port, same chain): anchoring resumes where it was.
        node.start()
        ledger.anchor_now()
        rig.mined(checkpoint_txs(rig.store, 5)[0].tx_hash)
        ledger.anchor_now()
        assert statuses(rig.store) == [(2, CONFIRMED), (5, CONFIRMED)]
        rig.sound(receipts)

        # Down between recording the transaction and broadcasting it.
        receipts += rig.submit(1)
        real = rig.chain.submit

        def node_dies_first(signed: SignedTx) -> Broadcast:
            node.stop()
            return real(signed)

        with replaced(rig.chain, "submit", node_dies_first), pytest.raises(ChainError):
            ledger.anchor_now()
        assert statuses(rig.store)[-1] == (6, SENT)
        recorded = checkpoint_txs(rig.store, 6)
        node.start()
        ledger.anchor_now()  # re-broadcasts what it recorded
        rig.mined(recorded[0].tx_hash)
        ledger.anchor_now()
        assert checkpoint_txs(rig.store, 6) == recorded
        assert statuses(rig.store)[-1] == (6, CONFIRMED)

        # Hung (accepts connections, never answers): a chain error after the RPC timeout.
        receipts += rig.submit(1)
        node.freeze()
        try:
            started = time.monotonic()
            with pytest.raises(ChainError):
                ledger.anchor_now()
            # web3 retries a timed-out request a few times: seconds, not a hang.
            assert time.monotonic() - started < 15
            receipts += rig.submit(1)
        finally:
            node.thaw()
        ledger.anchor_now()
        rig.mined(checkpoint_txs(rig.store, 8)[0].tx_hash)
        ledger.anchor_now()
        assert [size for size, _ in statuses(rig.store)] == [2, 5, 6, 8]
        rig.sound(receipts)


# --------------------------------------------------------------------------- 4-6. manual mining


@pytest.fixture(scope="module")
def manual_node() -> Iterator[Anvil]:
    """An anvil that mines only when told (shared by the module; each test deploys anew)."""
    if not anvil_available():
        pytest.skip(ANVIL_MISSING)
    with Anvil(no_mining=True) as node:
        yield node


@contextmanager
def manual_rig(
    request: pytest.FixtureRequest, tmp_path: Path, node: Anvil, **worker: Any
) -> Iterator[Rig]:
    node.set_automine(True)  # deploying and registering wait for receipts
    try:
        with open_rig(request, tmp_path, "anvil", node=node, worker=worker) as rig:
            node.set_automine(False)
            yield rig
    finally:
        node.set_automine(True)


def operator_pool(node: Anvil, rig: Rig) -> dict[int, str]:
    """The operator's pending transactions in the node's pool: nonce -> hash."""
    pending: dict[str, dict[str, Any]] = node.pool().get("pending", {})
    ours: dict[str, Any] = next(
        (v for k, v in pending.items() if k.lower() == rig.ledger.operator.address.lower()), {}
    )
    return {int(nonce): tx["hash"] for nonce, tx in ours.items()}


@pytest.mark.anvil
def test_a_transaction_the_node_dropped_is_broadcast_again(
    request: pytest.FixtureRequest, tmp_path: Path, manual_node: Anvil
) -> None:
    with manual_rig(request, tmp_path, manual_node) as rig:
        receipts = rig.submit(2)
        rig.worker.step(force=True)
        [recorded] = checkpoint_txs(rig.store)
        assert operator_pool(manual_node, rig) == {recorded.nonce: "0x" + recorded.tx_hash.hex()}

        manual_node.drop_transaction(recorded.tx_hash)
        assert operator_pool(manual_node, rig) == {}
        status = rig.worker.step()
        assert status.action == "waiting for checkpoint 2"
        assert operator_pool(manual_node, rig) == {recorded.nonce: "0x" + recorded.tx_hash.hex()}

        manual_node.mine()
        rig.worker.step()
        assert statuses(rig.store) == [(2, CONFIRMED)]
        assert checkpoint_txs(rig.store) == [recorded]
        assert rig.chain.find_checkpoint_tx(2) == recorded.tx_hash
        rig.sound(receipts)


@pytest.mark.anvil
def test_a_stuck_transaction_is_replaced_with_the_same_nonce(
    request: pytest.FixtureRequest, tmp_path: Path, manual_node: Anvil
) -> None:
    with manual_rig(request, tmp_path, manual_node, tx_timeout=30) as rig:
        receipts = rig.submit(2)
        rig.worker.step(force=True)
        rig.clock.advance(29)
        assert rig.worker.step().action == "waiting for checkpoint 2"
        assert len(checkpoint_txs(rig.store)) == 1

        rig.clock.advance(1)  # tx_timeout without a receipt
        assert rig.worker.step().action == "replaced checkpoint 2 transaction"
        first, second = checkpoint_txs(rig.store)
        assert (first.nonce, first.fee_bump) == (second.nonce, 0)
        assert second.fee_bump == 1
        old, new = SignedTx.from_raw(first.raw), SignedTx.from_raw(second.raw)
        assert new.max_priority_fee_per_gas > old.max_priority_fee_per_gas
        assert new.max_fee_per_gas > old.max_fee_per_gas
        assert operator_pool(manual_node, rig) == {new.nonce: "0x" + new.tx_hash.hex()}

        manual_node.mine()
        rig.worker.step()
        assert rig.chain.mined(first.tx_hash) is None
        assert rig.chain.mined(second.tx_hash) is not None
        assert statuses(rig.store) == [(2, CONFIRMED)]
        assert rig.chain.find_checkpoint_tx(2) == second.tx_hash
        assert rig.chain.operator_nonce("latest") == new.nonce + 1  # one transaction mined
        rig.sound(receipts)


def relay_a_grant(env: Env) -> None:
    """A relayed consent grant: a transaction of the operator key."""
    ledger, patient = env.ledger, env.patient
    now = ledger.chain.latest_timestamp()
    values: dict[str, Any] = {
        "grantee": env.pharmacy.address,
        "record_ref": env.hospital.record("mrn-1"),
        "purposes": purposes_mask([Purpose.TREATMENT]),
        "not_before": now - 60,
        "expires_at": now + 86400,
        "nonce": ledger.chain.consent_nonce(patient.address),
        "deadline": now + 600,
    }
    signature = patient.sign_grant(ledger.consent_domain, **values)
    request = GrantRequest(
        grantee=values["grantee"],
        record_ref=values["record_ref"],
        purposes=values["purposes"],
        not_before=values["not_before"],
        expires_at=values["expires_at"],
    )
    ledger.relay_grant(patient.address, request, values["deadline"], signature)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_nonce_taken_by_a_relayed_grant_is_planned_again(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    with open_rig(request, tmp_path, backend) as rig:
        receipts = rig.submit(2)
        with replaced(rig.chain, "submit", die), pytest.raises(Crash):
            rig.worker.step(force=True)
        [lost] = checkpoint_txs(rig.store)
        assert rig.chain.operator_nonce() == lost.nonce
        relay_a_grant(rig.env)  # takes the nonce the checkpoint was signed with
        assert rig.chain.operator_nonce("latest") == lost.nonce + 1

        # Not forced, the clock still: a checkpoint waiting to be re-planned is due at once.
        status = rig.worker.step()
        assert status.action == "sent checkpoint 2"
        lost_again, fresh = checkpoint_txs(rig.store)
        assert lost_again == lost
        assert fresh.nonce == lost.nonce + 1
        rig.mined(fresh.tx_hash)
        rig.worker.step()
        assert statuses(rig.store) == [(2, CONFIRMED)]
        assert rig.chain.mined(lost.tx_hash) is None
        assert rig.chain.find_checkpoint_tx(2) == fresh.tx_hash
        rig.sound(receipts)


@pytest.mark.anvil
def test_a_nonce_taken_from_a_replaced_transaction_is_planned_again_once(
    request: pytest.FixtureRequest, tmp_path: Path, manual_node: Anvil
) -> None:
    """The checkpoint was sent, stuck and replaced; then another transaction of the operator
    key took the nonce: the worker signs once more with the next nonce, and never goes back
    to the dead attempts."""
    with manual_rig(request, tmp_path, manual_node, tx_timeout=30) as rig:
        receipts = rig.submit(2)
        rig.worker.step(force=True)
        rig.clock.advance(30)
        rig.worker.step()  # replaced (same nonce, fee bump 1)
        stuck, replacement = checkpoint_txs(rig.store)
        nonce = stuck.nonce

        # Another tool of the operator sends a transfer with that nonce, paying more: mined.
        fees = SignedTx.from_raw(replacement.raw)
        other = Account.sign_transaction(
            {
                "to": Account.create().address,
                "value": 1,
                "gas": 21_000,
                "nonce": nonce,
                "maxFeePerGas": 2 * fees.max_fee_per_gas,
                "maxPriorityFeePerGas": 2 * fees.max_priority_fee_per_gas,
                "chainId": rig.chain.chain_id,
                "type": 2,
            },
            rig.ledger.operator.key,
        )
        rig.chain.w3.eth.send_raw_transaction(other.raw_transaction)
        manual_node.mine()
        assert rig.chain.mined(bytes(other.hash)) is not None

        assert rig.worker.step().action == "sent checkpoint 2"
        fresh = checkpoint_txs(rig.store)[-1]
        assert fresh.nonce == nonce + 1
        # Until it is mined, the worker waits for the fresh attempt; the dead ones stay dead.
        for _ in range(3):
            rig.clock.advance(1)
            assert rig.worker.step().action == "waiting for checkpoint 2"
        assert len(checkpoint_txs(rig.store)) == 3
        assert operator_pool(manual_node, rig) == {nonce + 1: "0x" + fresh.tx_hash.hex()}

        manual_node.mine()
        rig.worker.step()
        assert statuses(rig.store) == [(2, CONFIRMED)]
        assert rig.chain.find_checkpoint_tx(2) == fresh.tx_hash
        assert rig.chain.operator_nonce("latest") == nonce + 2  # the transfer and one checkpoint
        rig.sound(receipts)


# --------------------------------------------------------------------------- 7. reorgs


@pytest.mark.parametrize("new_blocks", [2, 0], ids=["height-reached-again", "shorter-chain"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reorged_checkpoint_is_anchored_again_and_confirmed_only_when_deep(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, new_blocks: int
) -> None:
    """``new_blocks`` after the reorg: 2, the checkpoint's height exists again with another
    block; 0, the chain is back to the block the checkpoint was signed on, so signing again
    gives the very same transaction (same nonce, fees and gas)."""
    with open_rig(request, tmp_path, backend, worker={"confirmations": 3}) as rig:
        ledger = rig.ledger
        if backend == "embedded":
            tester = ledger.tester
            assert tester is not None
            snapshot: Any = tester.take_snapshot()

            def mine(blocks: int) -> None:
                tester.mine_blocks(blocks)

            def reorg() -> None:
                tester.revert_to_snapshot(snapshot)
        else:
            node: Anvil = request.getfixturevalue("anvil_node")
            snapshot = node.snapshot()
            mine = node.mine

            def reorg() -> None:
                assert node.revert(snapshot)

        receipts = rig.submit(3)
        event_id = receipts[0].event_id
        rig.worker.step(force=True)
        [first] = checkpoint_txs(rig.store)
        rig.mined(first.tx_hash)
        assert rig.worker.step().confirmed_size == 0
        block = checkpoint_rows(rig.store)[0].block_number
        assert block is not None
        assert statuses(rig.store) == [(3, ANCHORED)]
        assert ledger.event(event_id).status == "anchored"
        mine(1)
        rig.worker.step()
        assert ledger.event(event_id).status == "anchored"  # 2 of 3 blocks

        # The block holding the checkpoint leaves the chain.
        reorg()
        if new_blocks:
            mine(new_blocks)
            assert rig.chain.block_number() >= block
            assert rig.chain.block_hash(block) != checkpoint_rows(rig.store)[0].block_hash
        else:
            assert rig.chain.block_number() == block - 1
        assert rig.chain.latest_checkpoint() is None
        status = rig.worker.step()  # clock still: no interval to wait for
        assert status.action == "sent checkpoint 3"
        assert status.confirmed_size == 0
        assert ledger.event(event_id).status == "pending"
        again = checkpoint_txs(rig.store)[-1]
        rig.mined(again.tx_hash)

        rig.worker.step()
        assert statuses(rig.store) == [(3, ANCHORED)]
        anchored_in = checkpoint_rows(rig.store)[0].block_number
        assert anchored_in is not None
        for depth in (2, 3):
            assert ledger.event(event_id).status == "anchored"
            mine(1)
            rig.worker.step()
            assert rig.chain.block_number() - anchored_in + 1 == depth
        assert ledger.event(event_id).status == "confirmed"
        assert statuses(rig.store) == [(3, CONFIRMED)]
        assert rig.chain.find_checkpoint_tx(3) == again.tx_hash
        rig.sound(receipts)


# --------------------------------------------------------------------------- 8. divergence


def test_a_tampered_tree_stops_the_worker(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    with open_rig(request, tmp_path, "embedded") as rig:
        rig.submit(3)
        rig.worker.step(force=True)
        rig.worker.step()
        with rig.store.write() as connection:
            # A node the root of size 3 is folded from (leaves 0-1).
            connection.execute(
                update(_NODES).where(_NODES.c.key == node_key(1, 0)).values(hash=b"\xee" * 32)
            )
        rig.submit(1)
        with pytest.raises(LogDivergedError, match=r"size 3 has root .* the store was altered"):
            rig.worker.step(force=True)
        assert rig.chain.latest_checkpoint().tree_size == 3  # type: ignore[union-attr]
        assert [size for size, _ in statuses(rig.store)] == [3]


@pytest.mark.anvil
def test_a_store_that_is_not_the_chains_log_refuses_to_start(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    with open_rig(request, tmp_path, "anvil") as rig:
        settings = rig.ledger.settings
        database = Path(settings.database_url.removeprefix("sqlite:///"))
        rig.submit(2)
        rig.ledger.anchor_now()
        rig.mined(checkpoint_txs(rig.store)[0].tx_hash)
        rig.ledger.anchor_now()
        backup = tmp_path / "backup.db"
        with sqlite3.connect(database) as connection:
            connection.execute("VACUUM INTO ?", (str(backup),))
        rig.submit(3)
        rig.ledger.anchor_now()
        rig.mined(checkpoint_txs(rig.store, 5)[0].tx_hash)
        rig.ledger.anchor_now()
        rig.ledger.close()

        # A tree node edited behind the service's back (leaves 0-3, under the root of 5).
        tampered = Store(settings.database_url)
        with tampered.write() as connection:
            connection.execute(
                update(_NODES).where(_NODES.c.key == node_key(2, 0)).values(hash=b"\x01" * 32)
            )
        tampered.dispose()
        with pytest.raises(LogDivergedError, match="latest checkpoint \\(size 5\\) is not this"):
            Ledger.open(settings)

        # The store restored from a backup older than the chain's checkpoint: events lost.
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(backup, database)
        with pytest.raises(LogDivergedError, match="refusing to start"):
            Ledger.open(settings)
        restored = Store(settings.database_url)
        rig.stack.callback(restored.dispose)
        worker = AnchorWorker(restored, MerkleLog(restored), rig.chain)
        with pytest.raises(LogDivergedError, match="size 5 but the store's log has only 2"):
            worker.step()
        assert [size for size, _ in statuses(restored)] == [2]


@pytest.mark.anvil
def test_a_store_of_another_deployment_refuses_to_start(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    node: Anvil = request.getfixturevalue("anvil_node")
    with open_rig(request, tmp_path, "anvil") as rig:
        settings = rig.ledger.settings
        first: Deployment = rig.ledger.deployment
        admin = node.accounts[0]
        second = deploy_to_rpc(
            node.url,
            admin,
            admin=admin.address,
            log_operator=rig.ledger.operator.address,
            registrars=[admin.address],
        )
        other_file = tmp_path / "other-deployment.json"
        second.write(other_file)
        with pytest.raises(DeploymentMismatch) as info:
            Ledger.open(settings.model_copy(update={"deployment_file": other_file}))
        message = str(info.value)
        assert f"belongs to the contracts at AuditLog {first.audit_log}" in message
        assert f"the chain holds AuditLog {second.audit_log}" in message
        assert "MEDTRAIL_DEPLOYMENT_FILE" in message
