"""``Function.encode_calls``: calls that differ in one static argument, encoded from another's
calldata, are byte for byte what ``eth_abi`` encodes of each (issue 15: ``grantStatusAt`` asked
for a batch's accesses under a few grants)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.chain.abi import function
from ledger.chain.consent import CONTRACT

STATUS_AT = function(CONTRACT, "grantStatusAt")

addresses = st.binary(min_size=20, max_size=20).map(lambda raw: "0x" + raw.hex())
words = st.binary(min_size=32, max_size=32)
uint = st.integers(min_value=0, max_value=2**256 - 1)
uint64 = st.integers(min_value=0, max_value=2**64 - 1)
grants = st.tuples(addresses, addresses, words, uint, uint64, uint64, uint, words, words)
accesses = st.tuples(addresses, addresses, words, st.integers(0, 255), uint64)
calls = st.tuples(uint, grants, st.binary(max_size=200), accesses)


@settings(max_examples=60, deadline=None)
@given(
    shared=st.lists(st.tuples(uint, grants, st.binary(max_size=200)), min_size=1, max_size=3),
    asked=st.lists(st.tuples(st.integers(0, 2), accesses), min_size=1, max_size=12),
)
def test_every_call_is_encoded_as_eth_abi_encodes_it(
    shared: list[tuple[Any, ...]], asked: list[tuple[int, tuple[Any, ...]]]
) -> None:
    """Calls under a few grants (some repeated), each with its own access."""
    batch = [(*shared[pick % len(shared)], access) for pick, access in asked]
    assert STATUS_AT.encode_calls(batch, 3) == [STATUS_AT.encode(*call) for call in batch]


@settings(max_examples=30, deadline=None)
@given(batch=st.lists(calls, min_size=1, max_size=6))
def test_calls_with_nothing_in_common_are_encoded_whole(batch: list[tuple[Any, ...]]) -> None:
    assert STATUS_AT.encode_calls(batch, 3) == [STATUS_AT.encode(*call) for call in batch]


def test_only_a_static_argument_may_vary() -> None:
    with pytest.raises(ValueError, match="dynamic type"):
        STATUS_AT.encode_calls([], 2)  # the grant's signature: bytes


def test_an_argument_that_cannot_be_a_key_is_encoded_whole() -> None:
    grant = ["0x" + "11" * 20, "0x" + "22" * 20, bytes(32), 1, 2, 3, 4, bytes(32), bytes(32)]
    access = ("0x" + "33" * 20, "0x" + "44" * 20, bytes(32), 0, 5)
    call = (7, grant, b"\x01" * 65, access)  # a list: unhashable
    assert STATUS_AT.encode_calls([call, call], 3) == [STATUS_AT.encode(*call)] * 2


VERSION_1 = function("ConsentRegistry", "grantStatusAt")


@settings(max_examples=40, deadline=None)
@given(
    question=st.tuples(uint, addresses, addresses, words, st.integers(0, 255)),
    times=st.lists(uint64, min_size=1, max_size=8),
    others=st.lists(st.tuples(uint, addresses, addresses, words, st.integers(0, 255), uint64)),
)
def test_version_1_questions_differing_in_their_time(
    question: tuple[Any, ...], times: list[int], others: list[tuple[Any, ...]]
) -> None:
    """A trail's questions about one grant, each at its own second, among others."""
    batch = [(*question, at) for at in times] + others
    assert VERSION_1.encode_calls(batch, 5) == [VERSION_1.encode(*call) for call in batch]
