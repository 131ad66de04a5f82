"""The rules' state keyed by eventId, kept as sorted runs with a filter in front (state format
3): the same answers as the ``kv`` table it replaces (and as a plain dict), across merges,
failed steps, reopening and a ``kill -9``; a format-2 file upgraded in place."""

from __future__ import annotations

import marshal
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ledger.events import EventType
from ledger.logstate import EventFacts, RecordFacts
from scripts.monitor.store import KeyFilter, Store, decode, encode

ROOT = Path(__file__).resolve().parents[2]
RECORD = RecordFacts("0x" + "11" * 20, "0x" + "22" * 20)


def _facts(n: int) -> EventFacts:
    return EventFacts(EventType.RECORD_ACCESS, "0x" + "11" * 20, "0x" + "22" * 20, None, n)


def test_the_filter_holds_every_key_added_and_few_others() -> None:
    keys = [random.Random(n).randbytes(32) for n in range(5_000)]
    others = [random.Random(n).randbytes(33) for n in range(5_000)]
    bloom = KeyFilter(16)
    for key in keys:
        bloom.add(key)
    assert all(key in bloom for key in keys)
    # 5,000 keys in 65,536 bits, three probes: about 1 % of other keys answered "maybe".
    assert sum(key in bloom for key in others) < 250


@pytest.mark.parametrize("bits", [2, 41])
def test_a_filter_of_an_unusable_size_is_refused(bits: int) -> None:
    with pytest.raises(ValueError, match=f"not 2\\*\\*{bits}"):
        KeyFilter(bits)


@pytest.mark.parametrize(("fan_in", "base"), [(1, 4), (4, 0)])
def test_runs_that_would_never_merge_are_refused(tmp_path: Path, fan_in: int, base: int) -> None:
    with pytest.raises(ValueError, match="2 or more at a time"):
        Store(tmp_path / "m.db", runs={"fan_in": fan_in, "base": base})


def _run_tables(store: Store) -> list[str]:
    rows = store.db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'kv_run_%'"
    ).fetchall()
    return sorted((name for (name,) in rows), key=lambda name: int(name.rpartition("_")[2]))


def _stored(store: Store) -> int:
    """The rows of every run's table."""
    return sum(
        store.db.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
        for name in _run_tables(store)
    )


def _model_run(
    store: Store, model: dict[bytes, Any], rng: random.Random, keys: list[bytes]
) -> None:
    """One step of random writes, rewrites and deletions, on the store's ``seen`` space (sorted
    runs), its ``kv`` twin (a rule's memory: the structure of format 2) and ``model``."""
    seen, twin = store.seen(), store.memory("twin")
    for _ in range(rng.randrange(1, 40)):
        roll = rng.random()
        if roll < 0.6 or not model:
            key = rng.randbytes(32)
            keys.append(key)
        else:
            key = rng.choice(keys)
        if roll < 0.85:
            value = rng.randrange(-(2**63), 2**63)
            seen[key] = model[key] = value
            twin[key.hex()] = value
        elif key in model:
            del seen[key], model[key], twin[key.hex()]


def _failing_step(
    store: Store, model: dict[bytes, Any], rng: random.Random, keys: list[bytes]
) -> None:
    with store.step():
        _model_run(store, model, rng, keys)
        raise RuntimeError("crash")


def _answers(store: Store, keys: list[bytes]) -> tuple[list[Any], list[Any], set[bytes]]:
    seen, twin = store.seen(), store.memory("twin")
    return [seen.get(k) for k in keys], [twin.get(k.hex()) for k in keys], set(seen)


def test_runs_answer_as_the_kv_table_and_a_dict_across_merges_failures_and_reopening(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    settings = {"fan_in": 3, "base": 8}
    store = Store(path, cache=5, runs=settings)  # a small cache: most answers from the file
    rng = random.Random(18)
    model: dict[bytes, Any] = {}
    keys: list[bytes] = []
    for step in range(300):
        if step % 37 == 5:  # a step that fails: none of it kept
            before = dict(model)
            with pytest.raises(RuntimeError, match="crash"):
                _failing_step(store, model, rng, keys)
            model = before
        else:
            with store.step():
                _model_run(store, model, rng, keys)
        if step % 50 == 49:  # reopened: the runs' list read back, the filter rebuilt
            store.close()
            store = Store(path, cache=5, runs=settings)
        if step % 10 == 0:
            with store.step():
                mine, twin, listed = _answers(store, keys)
            assert mine == twin == [model.get(k) for k in keys]
            assert listed == set(model)
    runs = store._runs.runs
    # Merged as they accumulate: a few runs, not one per step.
    assert len(runs) <= 12, runs
    assert _stored(store) == sum(n for _run, n in runs)
    assert len(store.seen()) == len(model)


def test_a_merge_of_every_run_drops_the_deletions(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db", runs={"fan_in": 2, "base": 100})  # one size class
    with store.step():
        store.seen()[b"a"] = 1
        store.seen()[b"b"] = 2
    with store.step():
        del store.seen()[b"a"]  # a run of one deletion: the two merged, "a" gone
    rows = store.db.execute("SELECT key, value FROM kv_run_3").fetchall()
    assert [(k, marshal.loads(v)) for k, v in rows] == [(b"b", (encode(2), None))]
    assert store._runs.runs == [[3, 1]]
    with store.step():
        del store.seen()[b"b"]  # merged again: nothing left, no run
    assert _stored(store) == 0
    assert _run_tables(store) == []  # the merged tables dropped
    assert store._runs.runs == []
    assert b"b" not in Store(tmp_path / "m.db").seen()


def test_a_key_the_filter_does_not_hold_is_answered_without_a_query(tmp_path: Path) -> None:
    store = Store(tmp_path / "m.db", cache=0)
    with store.step():
        store.seen()[b"kept"] = 7
    queries: list[str] = []
    store.db.set_trace_callback(queries.append)
    with store.step():
        seen = store.seen()
        store.prefetch_events([b"new-%d" % n for n in range(1_000)])
        assert seen[b"kept"] == 7
    assert len([q for q in queries if "kv_run_" in q]) == 1  # b"kept"'s, in its one run


def test_opening_the_file_reads_no_run_until_the_rules_state_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console opens the file for each request and never asks the rules' state: opening
    it must not read every eventId of the runs into the filter."""
    store = Store(tmp_path / "m.db", cache=0)
    with store.step():
        seen = store.seen()
        for n in range(50):
            seen[b"id-%d" % n] = n
    store.close()
    added: list[bytes] = []
    add = KeyFilter.add

    def counted(self: KeyFilter, key: bytes) -> None:
        added.append(key)
        add(self, key)

    monkeypatch.setattr(KeyFilter, "add", counted)
    reopened = Store(tmp_path / "m.db", cache=0)
    reopened.findings()  # what a console request reads
    assert added == []
    with reopened.step():  # the first lookup builds the filter, which then answers as before
        assert reopened.seen()[b"id-7"] == 7
        assert b"id-999" not in reopened.seen()
    assert len(added) == 50
    reopened.close()


def test_a_state_file_of_format_2_is_upgraded_in_place(tmp_path: Path) -> None:
    """Format 2 kept the eventId-keyed state in ``kv``: opened, its rows are one sorted run, the
    other key spaces are left where they were, and every answer is the same."""
    path = tmp_path / "m.db"
    rng = random.Random(2)
    ids = [rng.randbytes(32) for _ in range(500)]
    store = Store(path)
    with store.step():  # the file as format 2 left it
        store.db.executemany(
            "INSERT INTO kv (space, key, value) VALUES (?, ?, ?)",
            [("seen", i, encode(n)) for n, i in enumerate(ids)]
            + [("events", i, encode(_facts(n))) for n, i in enumerate(ids)]
            + [("records", b"r", encode(RECORD)), ("rule:x", b"k", encode({"a": 1}))],
        )
        store.db.execute("DELETE FROM meta WHERE key = 'runs'")
        store.put("schema", 2)
    store.close()
    upgraded = Store(path)
    assert upgraded.get("schema") == 3
    assert upgraded._runs.runs == [[1, 500]]  # a row per eventId, both values in it
    assert _run_tables(upgraded) == ["kv_run_1"]
    moved = upgraded.db.execute("SELECT key FROM kv_run_1").fetchall()
    assert [k for (k,) in moved] == sorted(ids)
    left = upgraded.db.execute("SELECT space FROM kv ORDER BY space").fetchall()
    assert left == [("records",), ("rule:x",)]
    with upgraded.step():
        seen, events = upgraded.seen(), upgraded.log_state().events
        assert [seen[i] for i in ids] == list(range(500))
        assert [events[i] for i in ids] == [_facts(n) for n in range(500)]
        assert upgraded.log_state().records[b"r"] == RECORD
        assert upgraded.memory("x")["k"] == {"a": 1}
        assert rng.randbytes(32) not in seen
    upgraded.close()
    assert Store(path).get("schema") == 3  # opened again: nothing more to do


_WRITER = """
import sys
from pathlib import Path
from ledger.events import EventType
from ledger.logstate import EventFacts, RecordFacts
from scripts.monitor.store import Store

store = Store(Path(sys.argv[1]), cache=50, runs={"fan_in": 2, "base": 4})
step = int(store.get("steps", 0))
while True:
    with store.step():
        seen = store.seen()
        for n in range(1 + step % 7):
            seen[b"%d-%d" % (step, n)] = step
        if step % 5 == 0 and step:
            del seen[b"%d-0" % (step - 5)]
        store.put("steps", step + 1)
    step += 1
"""


def _expected(steps: int) -> dict[bytes, int]:
    model: dict[bytes, int] = {}
    for step in range(steps):
        for n in range(1 + step % 7):
            model[b"%d-%d" % (step, n)] = step
        if step % 5 == 0 and step:
            del model[b"%d-0" % (step - 5)]
    return model


def _steps_done(path: Path) -> int:
    db = sqlite3.connect(path, timeout=30)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'steps'").fetchone()
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()
    return 0 if row is None else int(row[0])


def test_a_kill_9_while_runs_are_written_and_merged_loses_only_the_open_step(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for target in (150, 400):  # killed twice, each time resumed where it was
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], env=env, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while _steps_done(path) < target:
                assert writer.poll() is None, "the writer stopped"
                assert time.monotonic() < deadline, "the writer is too slow"
                time.sleep(0.02)
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait()
        store = Store(path, runs={"fan_in": 2, "base": 4})
        steps = int(store.get("steps"))
        assert steps >= target
        model = _expected(steps)
        with store.step():
            seen = store.seen()
            assert {k: seen[k] for k in model} == model
            assert set(seen) == set(model)  # nothing of the killed step, nothing lost
            assert b"%d-0" % steps not in seen
        assert _run_tables(store) == [store._runs.table(r) for r, _n in store._runs.runs]
        rows = [
            row
            for run, _n in store._runs.runs
            for row in store.db.execute(f"SELECT value FROM {store._runs.table(run)}")
        ]
        assert sum(n for _run, n in store._runs.runs) == len(rows)
        pairs = [marshal.loads(v) for (v,) in rows if v]
        assert all(isinstance(decode(a), int) and b is None for a, b in pairs)
        store.close()


def test_a_step_that_writes_one_of_an_events_two_values_keeps_the_other(tmp_path: Path) -> None:
    """A run's row holds both values of an eventId (``seen``, ``events``): a step that writes
    one of them, the other read neither before nor in it, keeps the other as it was."""
    path = tmp_path / "m.db"
    store = Store(path, cache=0)
    with store.step():
        store.seen()[b"k"] = 1
        store.log_state().events[b"k"] = _facts(1)
    store.close()
    store = Store(path, cache=0)  # nothing cached: the other value is only in the runs
    with store.step():
        store.seen()[b"k"] = 2
    with store.step():
        del store.log_state().events[b"k"]
        store.seen()[b"j"] = 3
    store.close()
    store = Store(path, cache=0)
    with store.step():
        assert store.seen()[b"k"] == 2
        assert b"k" not in store.log_state().events
        assert set(store.seen()) == {b"k", b"j"}
        assert set(store.log_state().events) == set()
