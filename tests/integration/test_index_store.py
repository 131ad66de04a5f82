"""The verifiable index in the store, kept by the anchor worker (issue 16), on SQLite and
PostgreSQL: each checkpoint commits the index root at exactly its size, the stored index is
the one ``ledger.index.MemoryIndex`` rebuilds from the log, lookups at any retained checkpoint
verify, and the sequencer refuses a store that moved behind its back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select, text

from ledger import index
from ledger.anchor import LogDivergedError
from ledger.index import ListHead, MemoryIndex
from ledger.index_store import (
    EMPTY_HEAD,
    WHOLE_EVERY,
    IndexDiverged,
    IndexSequencer,
    IndexStore,
    decode_tile,
    encode_tile,
    tile_deltas,
    tile_of,
)
from ledger.store.models import CheckpointRow, EventRow
from tests.support.ledgers import Env, open_env

_EVENTS = EventRow.__table__  # type: ignore[attr-defined]
_CHECKPOINTS = CheckpointRow.__table__  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    with open_env("embedded", request.param, tmp_path) as environment:
        yield environment


def _story(env: Env, tag: str, accesses: int = 2) -> None:
    """A record's accesses, a prescription, its dispense, a claim for it and its payment."""
    hospital, pharmacy, insurer = env.hospital, env.pharmacy, env.insurer
    patient = env.patient.address
    record = hospital.record(f"mrn-{tag}")
    rx = hospital.prescription(record, patient, fills=1)
    fill = pharmacy.dispense(rx, fill=1)
    claim = pharmacy.claim(fill, insurer.address, amount=10_00)
    pay = insurer.payment(claim, amount=10_00)
    batch = [hospital.sign(hospital.access(record, patient)) for _ in range(accesses)]
    env.ledger.submit([*batch, hospital.sign(rx)])
    env.ledger.submit([pharmacy.sign(fill), pharmacy.sign(claim), insurer.sign(pay)])


def _anchor(env: Env) -> int:
    env.ledger.anchor_now()
    env.ledger.anchor_now()  # follow the transaction to its block
    latest = env.ledger.chain.latest_checkpoint()
    assert latest is not None
    return latest.tree_size


def _keys_of_log(env: Env, size: int) -> list[tuple[bytes, ...]]:
    with env.ledger.store.read() as connection:
        rows = connection.execute(
            select(_EVENTS.c.patient, _EVENTS.c.record_ref)
            .where(_EVENTS.c.leaf_index < size)
            .order_by(_EVENTS.c.leaf_index)
        ).all()
    return [index.keys_of(p, bytes(r) if r else None) for p, r in rows]


def _leaves(env: Env, clause: object, size: int) -> list[int]:
    with env.ledger.store.read() as connection:
        return list(
            connection.execute(
                select(_EVENTS.c.leaf_index)
                .where(clause, _EVENTS.c.leaf_index < size)  # type: ignore[arg-type]
                .order_by(_EVENTS.c.leaf_index)
            ).scalars()
        )


def test_each_checkpoint_commits_the_index_root_of_the_log_at_its_size(env: Env) -> None:
    _story(env, "a")
    first = _anchor(env)
    _story(env, "b", accesses=3)
    env.ledger.submit(
        [env.hospital.sign(env.hospital.access(env.hospital.record("mrn-a"), env.patient.address))]
    )
    second = _anchor(env)
    assert (first, second) == (6, 14)

    reference = MemoryIndex(history=True)
    stored = IndexStore(env.ledger.store)
    previous = 0
    for size in (first, second):
        keys = _keys_of_log(env, size)[previous:]
        reference.extend(keys)
        previous = size
        on_chain = env.ledger.chain.checkpoint_at(size)
        assert on_chain is not None
        assert on_chain.index_root == reference.root(size)
        assert stored.version(size) is not None
        assert stored.version(size).root == reference.root(size)  # type: ignore[union-attr]
        with env.ledger.store.read() as connection:
            row = connection.execute(
                select(_CHECKPOINTS.c.index_root).where(_CHECKPOINTS.c.tree_size == size)
            ).scalar()
        assert row == reference.root(size)

    # Lookups at both checkpoints: the record, the patient, a key the index does not hold.
    record_a = env.hospital.record("mrn-a")
    patient = env.patient.address
    cases = [
        (index.record_key(record_a), _EVENTS.c.record_ref == record_a),
        (index.patient_key(patient), _EVENTS.c.patient == patient),
        (index.record_key(b"\x42" * 32), _EVENTS.c.record_ref == b"\x42" * 32),
    ]
    for size in (first, second):
        version = stored.version(size)
        assert version is not None
        for key, clause in cases:
            leaves = _leaves(env, clause, size)
            assert leaves == reference.indexes(key, size)
            proof = stored.lookup(key, version)
            assert proof == reference.lookup(key, size)[1]
            index.verify_list_lookup(key, leaves, size, proof, reference.root(size))
    assert _leaves(env, cases[0][1], second) == [0, 1, 2, 3, 4, 5, 13]


def test_the_sequencer_resumes_from_the_store_and_keeps_versions(env: Env) -> None:
    _story(env, "a")
    size = _anchor(env)
    fresh = IndexSequencer(env.ledger.store)  # another process: loads what is stored
    assert fresh.head == env.ledger.anchor.index.head
    assert fresh.advance(size) == fresh.head  # a version: nothing to do
    assert fresh.advance(0) == EMPTY_HEAD
    _story(env, "b")
    env.ledger.log.integrate_all()
    grown = fresh.advance(size + 3)
    assert grown.size == size + 3
    assert fresh.advance(size + 3) == grown
    assert fresh.advance(size) == IndexStore(env.ledger.store).version(size)
    with pytest.raises(IndexDiverged, match="never computed at log size 5"):
        fresh.advance(5)
    # The worker notices the stored index moved under it and reloads before it goes on.
    env.ledger.log.integrate_all()
    assert env.ledger.anchor.index.advance(size + 6).size == size + 6
    reference = MemoryIndex.build(_keys_of_log(env, size + 6))
    assert env.ledger.anchor.index.head.root == reference.root()


def test_events_missing_from_the_store_are_refused(env: Env) -> None:
    _story(env, "a")
    env.ledger.log.integrate_all()
    sequencer = IndexSequencer(env.ledger.store)
    with pytest.raises(IndexDiverged, match=r"holds 6 of the events \[0, 9\)"):
        sequencer.advance(9)
    with env.ledger.store.write() as connection:
        connection.execute(_EVENTS.delete().where(_EVENTS.c.leaf_index == 3))
    with pytest.raises(IndexDiverged, match=r"holds 3 of the events \[0, 6\)"):
        sequencer.advance(6)
    assert IndexStore(env.ledger.store).head() == EMPTY_HEAD  # nothing half-stored


def test_a_concurrent_update_and_an_altered_trie_are_refused(env: Env) -> None:
    _story(env, "a")
    env.ledger.log.integrate_all()
    mine, theirs = IndexSequencer(env.ledger.store), IndexSequencer(env.ledger.store)
    assert mine.head == theirs.head == EMPTY_HEAD
    theirs.advance(4)
    # ``mine`` still holds the empty index: storing its update from 0 must fail, not fork.
    update = index.update({}, {}, {b"\x01" * 32: [0]}, 0, 1)
    with pytest.raises(IndexDiverged, match="moved to size 4 while this process advanced it"):
        mine._store(EMPTY_HEAD, mine.head, update, update.nodes)
    assert mine.advance(6).size == 6  # it reloads, then goes on from 4
    with env.ledger.store.write() as connection:
        connection.execute(
            text("UPDATE index_tiles SET nodes = :nodes WHERE tile = :root AND version = 6"),
            {"nodes": b"\x00\x01" + b"\x00" * 32, "root": b"\x01"},
        )
    with pytest.raises(IndexDiverged, match="does not hash to the root of its head"):
        IndexSequencer(env.ledger.store).reload()


def test_a_failed_write_of_an_update_is_retried_without_a_reload(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint's tiles that could not be written (the database failed mid-write) leave
    the sequencer as before the update: the next advance computes it again, with no reload
    (which would rebuild every frontier from the events), and stores the right index."""
    _story(env, "a")
    env.ledger.log.integrate_all()
    sequencer = IndexSequencer(env.ledger.store)
    assert sequencer.advance(3).size == 3
    _story(env, "b")
    env.ledger.log.integrate_all()
    reloads: list[int] = []
    reload = sequencer.reload
    monkeypatch.setattr(sequencer, "reload", lambda: (reloads.append(1), reload())[1])
    store = sequencer._store

    def failing(*args: object) -> None:
        raise OSError("disk I/O error")

    monkeypatch.setattr(sequencer, "_store", failing)
    with pytest.raises(OSError, match="disk I/O error"):
        sequencer.advance(12)
    assert IndexStore(env.ledger.store).head().size == 3  # nothing stored
    monkeypatch.setattr(sequencer, "_store", store)
    assert sequencer.advance(12).size == 12
    assert reloads == []
    reference = MemoryIndex.build(_keys_of_log(env, 12))
    assert sequencer.head.root == reference.root()
    assert IndexSequencer(env.ledger.store).head.root == reference.root()


def test_a_reload_rebuilds_the_frontiers_and_refuses_a_log_the_index_does_not_list(
    env: Env,
) -> None:
    """Frontiers are not stored: a reload rebuilds them from the events, checks each against
    its key's leaf, and refuses a store whose events no longer give the index's lists."""
    _story(env, "a")
    size = _anchor(env)
    fresh = IndexSequencer(env.ledger.store)
    reference = MemoryIndex.build(_keys_of_log(env, size))
    assert fresh.head.root == reference.root()
    assert fresh._frontiers == dict(reference.frontiers)
    with env.ledger.store.write() as connection:  # one event moved to another record
        connection.execute(
            _EVENTS.update().where(_EVENTS.c.leaf_index == 1).values(record_ref=b"\x05" * 32)
        )
    with pytest.raises(IndexDiverged, match="does not hold the list of its events"):
        IndexSequencer(env.ledger.store).reload()
    with env.ledger.store.write() as connection:  # the event gone altogether
        connection.execute(_EVENTS.delete().where(_EVENTS.c.leaf_index == 1))
    missing = rf"holds {size - 1} of the events \[0, {size}\) its index covers"
    with pytest.raises(IndexDiverged, match=missing):
        IndexSequencer(env.ledger.store).reload()


def test_a_reload_refuses_events_that_lost_keys_the_index_lists(env: Env) -> None:
    """Every event's record taken away: each patient's list still matches its leaf, but the
    records' keys the index lists have no events left, and the reload says so."""
    _story(env, "a")
    size = _anchor(env)
    with env.ledger.store.write() as connection:
        connection.execute(_EVENTS.update().values(record_ref=None))
    with pytest.raises(
        IndexDiverged, match=rf"the events below {size} have 1 keys and the stored index 2"
    ):
        IndexSequencer(env.ledger.store).reload()


def test_tiles_hold_every_node_of_their_levels_and_refuse_other_bytes() -> None:
    built = MemoryIndex.build([(bytes([i]) * 32,) for i in range(40)])
    nodes = built.nodes()
    tiles = {tile_of(p) for p in nodes}
    decoded: dict[int, bytes] = {}
    for tile in tiles:
        decoded.update(decode_tile(tile, encode_tile(tile, nodes)))
    assert decoded == dict(nodes)
    written = built.extend([(bytes([200]) * 32,)]).nodes  # a delta: what one update wrote
    from_deltas: dict[int, bytes] = {}
    for tile, delta in tile_deltas(written).items():
        from_deltas.update(decode_tile(tile, delta))
    assert from_deltas == written
    assert {tile_of(p) for p in (1, 2, 255, 256, 511)} == {1}
    assert [tile_of(p) for p in (512, 513, 2**16 - 1, 2**16, 2**17)] == [256, 256, 511, 256, 2**16]
    root_tile = encode_tile(1, nodes)
    with pytest.raises(IndexDiverged, match="cut short"):
        decode_tile(1, root_tile[:-1])
    with pytest.raises(IndexDiverged, match="cut short"):
        decode_tile(1, root_tile + b"\x00")
    with pytest.raises(IndexDiverged, match="outside it"):
        decode_tile(2, root_tile)  # the root's own entry, in another tile


def test_pruning_keeps_every_lookup_from_the_pruned_size_on(env: Env) -> None:
    """The worker prunes below the second-newest confirmed checkpoint on its own; lookups at
    that checkpoint and later ones are unchanged, and pruning again does nothing."""
    sizes = []
    for tag in "abc":
        _story(env, tag)
        sizes.append(_anchor(env))
    stored = IndexStore(env.ledger.store)
    reference = MemoryIndex(history=True)
    written = 0
    previous = 0
    for size in sizes:
        nodes = reference.extend(_keys_of_log(env, size)[previous:]).nodes
        written += len({tile_of(p) for p in nodes})
        previous = size
    with env.ledger.store.read() as connection:
        kept = int(connection.execute(text("SELECT COUNT(*) FROM index_tiles")).scalar_one())
    assert env.ledger.store.get_meta("index_pruned_upto") == str(sizes[1])
    assert kept <= written  # a row per tile and version at most (deltas pruned: see below)
    assert stored.prune(sizes[1]) == 0  # idempotent
    assert stored.prune(sizes[0]) == 0  # and never goes back
    for size in sizes[1:]:
        version = stored.version(size)
        assert version is not None
        for key in reference:
            assert stored.lookup(key, version) == reference.lookup(key, size)[1]


def test_a_chain_checkpoint_with_another_index_root_stops_the_worker(env: Env) -> None:
    _story(env, "a")
    env.ledger.log.integrate_all()
    head = env.ledger.log.head()
    chain = env.ledger.chain
    signed = chain.sign_checkpoint(head.size, head.root, b"\x77" * 32, [])
    assert chain.wait_mined(chain.broadcast(signed)) is not None
    with pytest.raises(LogDivergedError, match="commits index root 7777"):
        env.ledger.anchor.step()


def test_list_heads_only_grow_between_checkpoints(env: Env) -> None:
    _story(env, "a")
    first = _anchor(env)
    key = index.patient_key(env.patient.address)
    old = index.list_head(_leaves(env, _EVENTS.c.patient == env.patient.address, first))
    _story(env, "b")
    second = _anchor(env)
    new_list = _leaves(env, _EVENTS.c.patient == env.patient.address, second)
    index.verify_list_extends(old, new_list)
    with pytest.raises(index.ProofError, match="shrank"):
        index.verify_list_extends(ListHead(old.size + 1, old.root), new_list[: old.size])
    assert key in MemoryIndex.build(_keys_of_log(env, second))


def _migrate(env: Env, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", "ledger:migrations")
    with env.ledger.store.engine.connect() as connection:
        config.attributes["connection"] = connection
        if revision == "head":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
        connection.commit()


def test_the_tile_migration_keeps_the_index_both_ways(env: Env) -> None:
    """Migration 0007 turns the node rows of 0006 into tiles and back: the trie at every
    retained version, and the frontiers the earlier layout stored, come out the same."""
    sizes = []
    for tag in "abc":
        _story(env, tag)
        sizes.append(_anchor(env))
    reference = MemoryIndex(history=True)
    previous = 0
    for size in sizes:
        reference.extend(_keys_of_log(env, size)[previous:])
        previous = size
    env.ledger.store.engine.dispose()
    _migrate(env, "0006")
    with env.ledger.store.read() as connection:
        frontiers = {
            bytes(k): bytes(f)
            for k, f in connection.execute(text('SELECT "key", frontier FROM index_frontiers'))
        }
        rows = connection.execute(
            text('SELECT "position", node FROM index_nodes ORDER BY "position", version')
        ).all()
    assert frontiers == dict(reference.frontiers)
    latest = {int.from_bytes(bytes(p), "big"): bytes(n) for p, n in rows}
    assert latest == dict(reference.nodes())
    _migrate(env, "head")
    stored = IndexStore(env.ledger.store)
    for size in sizes[1:]:  # the worker pruned below the second checkpoint
        version = stored.version(size)
        assert version is not None
        for key in reference:
            assert stored.lookup(key, version) == reference.lookup(key, size)[1]
    assert IndexSequencer(env.ledger.store).head.root == reference.root()


def test_tiles_stored_as_deltas_read_as_the_trie_at_every_version_and_after_pruning(
    env: Env,
) -> None:
    """One version per event, more than ``WHOLE_EVERY``: most rows are deltas; the trie
    read at each version is the reference's, and stays so from the pruned size on."""
    for tag in "abcde":
        _story(env, tag)
    env.ledger.log.integrate_all()
    last = 30
    assert last > WHOLE_EVERY + 8
    keys = _keys_of_log(env, last)
    sequencer = IndexSequencer(env.ledger.store)
    reference = MemoryIndex(history=True)
    for size in range(1, last + 1):
        sequencer.advance(size)
        reference.extend(keys[size - 1 : size])
    with env.ledger.store.read() as connection:
        kinds = {
            bool(whole): int(count)
            for whole, count in connection.execute(
                text("SELECT whole, COUNT(*) FROM index_tiles GROUP BY whole")
            )
        }
    assert kinds[False] > kinds[True] > 0
    stored = IndexStore(env.ledger.store)

    def same_from(first: int) -> None:
        for size in range(first, last + 1):
            version = stored.version(size)
            assert version is not None
            for key in reference:
                assert stored.lookup(key, version) == reference.lookup(key, size)[1], size

    same_from(1)
    assert stored.prune(WHOLE_EVERY + 4) > 0  # the root's tile is whole again by then
    same_from(WHOLE_EVERY + 4)
    assert IndexSequencer(env.ledger.store).head.root == reference.root()
