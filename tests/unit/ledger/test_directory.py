"""ledger.directory: the institutions' cache of the ingest hot path, and how it behaves while
the chain does not answer."""

from __future__ import annotations

import pytest

from ledger.chain.model import ChainError, InstitutionInfo, InstitutionKind
from ledger.directory import InstitutionDirectory

ADDRESS = "0x" + "ab" * 20


class Source:
    """A chain that answers until told not to, counting the questions."""

    def __init__(self) -> None:
        self.down = False
        self.asked = 0

    def institution(self, address: str) -> InstitutionInfo:
        self.asked += 1
        if self.down:
            raise ChainError("the node does not answer")
        return InstitutionInfo(address, InstitutionKind.HOSPITAL, True, 100, "H")

    def institution_history(self, address: str) -> list[tuple[int, bool]]:
        return [(100, True)]


def test_entries_live_ttl_seconds() -> None:
    source, now = Source(), [0.0]
    directory = InstitutionDirectory(source, ttl=5.0, clock=lambda: now[0])
    assert directory.institution(ADDRESS).kind is InstitutionKind.HOSPITAL
    now[0] = 4.9
    directory.institution(ADDRESS)
    assert source.asked == 1
    now[0] = 5.0
    directory.institution(ADDRESS)
    assert source.asked == 2


def test_while_the_chain_is_down_a_stale_entry_is_served_and_asked_again_after_ttl() -> None:
    """Not at every batch: each question to a node that does not answer costs its timeout."""
    source, now = Source(), [0.0]
    directory = InstitutionDirectory(source, ttl=5.0, clock=lambda: now[0])
    directory.institution(ADDRESS)
    source.down = True
    now[0] = 6.0
    assert directory.institution_at(ADDRESS, 200).active  # stale, served
    assert source.asked == 2
    now[0] = 10.9  # within ttl of the failed question: not asked again
    directory.institution(ADDRESS)
    assert source.asked == 2
    now[0] = 11.0
    directory.institution(ADDRESS)
    assert source.asked == 3
    source.down = False  # back: the next question after ttl refreshes the entry
    now[0] = 16.0
    directory.institution(ADDRESS)
    assert source.asked == 4


def test_an_address_never_seen_is_refused_with_the_chain_error_every_time() -> None:
    source = Source()
    source.down = True
    directory = InstitutionDirectory(source, ttl=5.0, clock=lambda: 0.0)
    for _ in range(2):
        with pytest.raises(ChainError):
            directory.institution(ADDRESS)
    assert source.asked == 2
