"""Migration 0007 keeps its own copy of the index's tile format (a later change of the live
codec must come with a migration of its own): while the two are the same format, they must
write and read the same bytes. If this fails after a change of ``ledger.index_store``'s
codec, the stored tiles need a new migration — do not edit 0007's copy."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest

from ledger import index, index_store
from ledger.index import MemoryIndex

_MIGRATION = (
    Path(__file__).resolve().parents[3]
    / "ledger/migrations/versions/0007_index_tiles_and_trail_indexes.py"
)


@pytest.fixture(scope="module")
def frozen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("migration_0007", _MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trie(events: int, seed: int) -> dict[int, bytes]:
    rnd = random.Random(seed)
    keys = [index.keys_of("0x" + rnd.randbytes(20).hex(), rnd.randbytes(32)) for _ in range(events)]
    return dict(MemoryIndex.build(keys).nodes())


@pytest.mark.parametrize(("events", "seed"), [(1, 1), (40, 2), (3_000, 3)])
def test_the_frozen_tile_codec_writes_and_reads_what_the_live_one_does(
    frozen: ModuleType, events: int, seed: int
) -> None:
    nodes = _trie(events, seed)
    written = list(nodes)
    rows = frozen.tile_rows(nodes, written)
    assert rows == index_store.tile_rows(nodes, written)
    assert len(rows) > 0
    for tile, data in rows:
        assert frozen.decode_tile(tile, data) == index_store.decode_tile(tile, data)
        assert frozen.decode_position(frozen.encode_position(tile)) == tile
        assert frozen.encode_position(tile) == index_store.encode_position(tile)
    rebuilt = {p: n for tile, data in rows for p, n in frozen.decode_tile(tile, data).items()}
    assert rebuilt == nodes


def test_the_frozen_decoder_refuses_a_cut_tile(frozen: ModuleType) -> None:
    nodes = _trie(40, 4)
    tile, data = frozen.tile_rows(nodes, list(nodes))[0]
    with pytest.raises(ValueError, match="cut short"):
        frozen.decode_tile(tile, data[:-1])
