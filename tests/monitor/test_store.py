"""The monitor's store: the rules' state behind a bounded cache kept between steps, in a
compact encoding, and the verifiable index kept on disk (against the in-memory reference)."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import pytest

from ledger import index
from ledger.errors import ProofError
from ledger.events import EventType
from ledger.logstate import EventFacts, RecordFacts
from scripts.monitor.store import Store, decode, encode

FACTS = EventFacts(
    EventType.INSURANCE_CLAIM,
    "0x" + "11" * 20,
    "0x" + "22" * 20,
    "0x" + "33" * 20,
    1_700_000_000,
    bytes(range(32)),
    fills=0,
    validUntil=0,
    insurer="0x" + "33" * 20,
    amount=12_345,
)


@pytest.mark.parametrize(
    "value",
    [
        FACTS,
        EventFacts(EventType.RECORD_ACCESS, "0x" + "11" * 20, "0x" + "22" * 20, None, 5),
        RecordFacts("0x" + "11" * 20, "0x" + "22" * 20),
        (1, 2, 3),
        -(2**63),
        True,
        {"times": [1, 2], "reported": None},
        EventType.RECORD_ACCESS,  # not a plain value: pickled
    ],
)
def test_values_read_back_as_written(value: Any) -> None:
    back = decode(encode(value))
    assert back == value
    assert type(back) is type(value)


def test_the_rules_facts_are_encoded_as_their_fields_not_pickled() -> None:
    data = encode(FACTS)
    assert data[:1] == b"E"
    assert b"ledger" not in data  # no module or class names, no code to run when read
    assert len(data) < len(pickle.dumps(FACTS, protocol=pickle.HIGHEST_PROTOCOL))


def test_values_pickled_by_an_earlier_monitor_are_still_read(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db")
    store.db.executemany(
        "INSERT INTO kv (space, key, value) VALUES (?, ?, ?)",
        [
            (space, b"e1", pickle.dumps(FACTS, protocol=pickle.HIGHEST_PROTOCOL))
            for space in ("events", "rule:x")
        ],
    )
    assert store.memory("x")["e1"] == FACTS  # (a key space of kv, read as before)
    store.put("schema", 2)  # an earlier file: its events in kv, moved to a run when opened
    store.close()
    assert Store(tmp_path / "m.db").log_state().events[b"e1"] == FACTS


def test_the_cache_holds_at_most_its_size_per_key_space_and_the_rest_is_read_from_disk(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "m.db", cache=10)
    for step in range(10):
        with store.step():
            seen = store.seen()
            for i in range(10):
                seen[b"%d" % (step * 10 + i)] = step * 10 + i
    assert len(store._cache["seen"]) == 10
    with store.step():
        seen = store.seen()
        assert [seen[b"%d" % n] for n in range(100)] == list(range(100))
        assert b"100" not in seen
    assert len(store._cache["seen"]) == 10


def test_the_cache_drops_the_value_used_least_lately_not_the_first_cached(
    tmp_path: Path,
) -> None:
    """A value read at every step stays cached however long ago it was first read."""
    store = Store(tmp_path / "m.db", cache=3)
    with store.step():
        seen = store.seen()
        for key in (b"hot", b"a", b"b"):
            seen[key] = 1
    reads: list[str] = []
    store.db.set_trace_callback(reads.append)
    for step in range(5):
        with store.step():
            seen = store.seen()
            assert seen[b"hot"] == 1
            seen[b"new%d" % step] = step
    assert b"hot" in store._cache["seen"]
    assert not [r for r in reads if r.startswith("SELECT value FROM kv")]


def test_a_step_that_fails_leaves_none_of_its_writes_in_the_cache(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db")
    with store.step():
        store.seen()[b"kept"] = 1

    def crash() -> None:
        with store.step():
            seen = store.seen()
            seen[b"kept"] = 2
            seen[b"lost"] = 3
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        crash()
    with store.step():
        seen = store.seen()
        assert seen[b"kept"] == 1
        assert b"lost" not in seen
    assert dict.fromkeys(store.seen()) == {b"kept": None}


def test_a_rules_memory_kept_between_steps_forgets_a_step_that_failed(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db")
    memory = store.memory("rule")
    assert store.memory("rule") is memory
    with store.step():
        memory["kept"] = 1

    def crash() -> None:
        with store.step():
            memory["kept"] = 2
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        crash()
    with store.step():
        assert store.memory("rule")["kept"] == 1


def test_prefetched_events_read_as_they_are_on_disk_and_leave_the_steps_writes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    store = Store(path)
    with store.step():
        for n in range(700):  # more than one query's worth
            store.seen()[n.to_bytes(32, "big")] = n
    store.close()
    store = Store(path)
    ids = [n.to_bytes(32, "big") for n in range(0, 1400, 2)]
    with store.step():
        store.seen()[ids[1]] = -1  # written in this step before the prefetch: it stays
        store.prefetch_events(ids)
        seen, events = store.seen(), store.log_state().events
        assert [seen.get(i) for i in ids] == [
            -1 if i == ids[1] else n * 2 if n * 2 < 700 else None for n, i in enumerate(ids)
        ]
        assert not any(i in events for i in ids)
    assert Store(path).seen()[ids[1]] == -1


def test_values_written_in_a_step_are_on_disk_once_it_commits(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = Store(path)
    with store.step():
        store.log_state().records[b"r"] = RecordFacts("0x" + "11" * 20, "0x" + "22" * 20)
    store.close()
    assert Store(path).log_state().records[b"r"].custodian == "0x" + "22" * 20


def test_a_negative_cache_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 0"):
        Store(tmp_path / "m.db", cache=-1)


def _events(rng: random.Random, count: int, keys: list[bytes]) -> list[tuple[bytes, ...]]:
    """Events of two keys each, many of them keys seen before (lists that grow)."""
    events = []
    for _ in range(count):
        if keys and rng.random() < 0.6:
            record = rng.choice(keys)
        else:
            record = rng.randbytes(32)
            keys.append(record)
        events.append((record, index.patient_key(rng.randbytes(20))))
    return events


def test_the_stored_index_has_the_in_memory_indexs_root_batch_after_batch(
    tmp_path: Path,
) -> None:
    rng = random.Random(18)
    path = tmp_path / "m.db"
    reference = index.MemoryIndex()
    keys: list[bytes] = []
    for batch in (1, 7, 300, 1, 900, 64):
        events = _events(rng, batch, keys)
        store = Store(path)  # reopened each time: the index is on disk, not in memory
        stored = store.index()
        with store.step():
            update = stored.extend(events)
        expected = reference.extend(events)
        assert (update.size, update.root) == (expected.size, expected.root)
        assert (stored.size, stored.root()) == (reference.size, reference.root())
        store.close()
    assert Store(path).index().root(reference.size) == reference.root()


def test_the_stored_index_answers_its_own_size_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db")
    assert (store.index().size, store.index().root()) == (0, index.EMPTY_HASH)
    with pytest.raises(ProofError, match="at log size 0, not 3"):
        store.index().root(3)


def test_an_index_update_that_fails_is_rolled_back_with_its_step(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db")

    def crash() -> None:
        with store.step():
            store.index().extend([(bytes(32), bytes([1]) * 32)])
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        crash()
    assert store.index().size == 0
    assert store.db.execute("SELECT COUNT(*) FROM index_nodes").fetchone() == (0,)


def _entry_row(pos: int, event_id: bytes) -> tuple[Any, ...]:
    return (
        pos,
        pos,
        event_id,
        "RecordAccess",
        "0x" + "11" * 20,
        "0x" + "22" * 20,
        b"r" * 32,
        1_700_000_000,
        1_700_000_000,
        b"d" * 32,
        b"h" * 32,
        b"",
        "{}",
    )


def test_a_state_file_of_format_1_is_upgraded_in_place(tmp_path: Path) -> None:
    """Format 1 kept indexes on the mirror's eventIds and patients (random keys: the cost per
    event grew with the log) and findings without their entry's position: opened, each finding
    about a mirrored event gets its position, and the two indexes are gone."""
    path = tmp_path / "m.db"
    store = Store(path)
    with store.step():  # the file as format 1 left it
        db = store.db
        db.execute("ALTER TABLE findings DROP COLUMN pos")
        db.execute("CREATE INDEX entries_event ON entries (event_id)")
        db.execute("CREATE INDEX entries_patient ON entries (patient)")
        db.executemany(
            "INSERT INTO entries (pos, leaf, event_id, event_type, institution, patient, "
            "record_ref, occurred_at, received_at, digest, leaf_hash, keys, raw) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [_entry_row(0, b"a" * 32), _entry_row(1, b"b" * 32)],
        )
        db.executemany(
            "INSERT INTO findings (key, code, severity, detail, event_id, context, found_at) "
            "VALUES (?, 'emergency-access', 'review', '', ?, '{}', 0)",
            [("k1", b"b" * 32), ("k2", None), ("k3", b"z" * 32)],
        )
        store.put("schema", 1)
    store.close()
    upgraded = Store(path)
    assert upgraded.get("schema") == 3
    found = upgraded.db.execute("SELECT key, pos FROM findings ORDER BY key").fetchall()
    assert found == [("k1", 1), ("k2", None), ("k3", None)]
    indexes = {
        name
        for (name,) in upgraded.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
    }
    assert not {"entries_event", "entries_patient", "entries_record"} & indexes
    upgraded.close()
    assert Store(path).get("schema") == 3  # opened again: nothing more to do


def test_a_state_file_of_an_unknown_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = Store(path)
    store.put("schema", 99)
    store.close()
    with pytest.raises(ValueError, match="format 99, not 3"):
        Store(path)


def test_get_answers_a_miss_with_the_default_and_a_hit_with_its_value(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db")
    with store.step():
        records = store.log_state().records
        facts = RecordFacts("0x" + "11" * 20, "0x" + "22" * 20)
        records[b"known"] = facts
        assert records.get(b"known") == facts
        assert records.get(b"unknown") is None
        assert records.get(b"unknown", facts) == facts
        del records[b"known"]
        assert records.get(b"known", 0) == 0


def test_a_pages_records_are_read_in_one_query(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = Store(path)
    refs = [n.to_bytes(32, "big") for n in range(300)]
    with store.step():
        for ref in refs[::2]:
            store.log_state().records[ref] = RecordFacts("0x" + "11" * 20, "0x" + "22" * 20)
    store.close()
    store = Store(path)
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    with store.step():
        store.prefetch_events([], refs)
        asked = len(statements)
        records = store.log_state().records
        found = [records.get(ref) is not None for ref in refs]
        assert len(statements) == asked  # every answer came from the prefetch
    assert found == [n % 2 == 0 for n in range(300)]
    assert sum("FROM kv" in s for s in statements[:asked]) == 1
