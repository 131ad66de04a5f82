"""The service's memory of verified bundles stays bounded, forgetting the oldest first."""

from __future__ import annotations

from ledger.service import BoundedSet


def test_holds_at_most_its_size_and_forgets_the_oldest() -> None:
    keys = BoundedSet(2)
    for key in (b"a", b"b", b"c"):
        keys.add(key)
    assert (b"a" in keys, b"b" in keys, b"c" in keys) == (False, True, True)
    assert len(keys) == 2
    keys.add(b"b")  # adding again is no growth
    assert len(keys) == 2
