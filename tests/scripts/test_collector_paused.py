"""The whole-log audit runs with the cyclic collector off, then freezes what it built and puts
the collector back as it was (issue 15)."""

from __future__ import annotations

import gc

import pytest

from scripts._common import collector_paused


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_off_inside_and_as_it_was_after(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        with collector_paused():
            assert not gc.isenabled()
            kept = [[n] for n in range(100)]  # objects built while paused
        assert gc.isenabled() is enabled
        assert gc.get_freeze_count() >= len(kept)  # frozen: no later pass walks them
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()


def test_the_collector_comes_back_after_an_error() -> None:
    was = gc.isenabled()
    gc.enable()
    try:
        with pytest.raises(RuntimeError), collector_paused():
            raise RuntimeError("the audit failed")
        assert gc.isenabled()
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()
