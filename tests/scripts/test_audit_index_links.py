"""The whole-log audit rebuilds the verifiable index from the links its rules' replay found
(issue 15: the log is replayed once, not twice), and that gives the index a replay of its own
would give: also when an eventId repeats, where the rules' replay skips the repeat and the
index's own replay does not."""

from __future__ import annotations

from dataclasses import dataclass

from ledger import index
from ledger.audit import Auditor
from ledger.events import InstitutionKind, SignedEvent, audit_log_domain
from ledger.logstate import Links, LogState, apply
from scripts.audit_log import _index_findings, _Leaf
from tests.support.actors import Institution

DOMAIN = audit_log_domain(31337, "0x" + "11" * 20)
PATIENT = "0x" + "22" * 20


@dataclass(frozen=True)
class _Checkpoint:
    tree_size: int
    root_hash: bytes
    index_root: bytes


class _Chain:
    def __init__(self, checkpoints: list[_Checkpoint]) -> None:
        self._checkpoints = checkpoints

    def checkpoint_events(self) -> list[tuple[_Checkpoint, None]]:
        return [(c, None) for c in self._checkpoints]


def _leaves(events: list[SignedEvent]) -> list[_Leaf]:
    return [_Leaf(entry=None, signed=e, digest=e.digest(DOMAIN)) for e in events]  # type: ignore[arg-type]


def _own_replay_root(events: list[SignedEvent]) -> bytes:
    """The index root as the audit rebuilt it before issue 15: a replay of its own."""
    state = LogState()
    keys = []
    for signed in events:
        _violations, links = apply(state, signed.event)
        keys.append(index.event_keys(signed.event, links.record_ref))
    return index.MemoryIndex.build(keys).root()


def _rules_links(events: list[SignedEvent]) -> list[Links | None]:
    auditor = Auditor(None)
    links: list[Links | None] = []
    for signed in events:
        auditor.check(signed, content=hash(signed.digest(DOMAIN)))
        links.append(auditor.last_links)
    return links


def _findings(events: list[SignedEvent], links: list[Links | None]) -> list[str]:
    checkpoint = _Checkpoint(len(events), bytes(32), _own_replay_root(events))
    return [str(f.code) for f in _index_findings(_leaves(events), _Chain([checkpoint]), links)]


def _trail() -> tuple[Institution, Institution, list[SignedEvent]]:
    hospital = Institution("General", InstitutionKind.HOSPITAL, DOMAIN)
    pharmacy = Institution("Corner", InstitutionKind.PHARMACY, DOMAIN)
    rx = hospital.prescription(hospital.record("mrn-1"), PATIENT)
    events = [
        hospital.sign(hospital.access(hospital.record("mrn-1"), PATIENT)),
        hospital.sign(rx),
        pharmacy.sign(pharmacy.dispense(rx)),
    ]
    return hospital, pharmacy, events


def test_the_rules_links_give_the_index_its_own_replay_gives() -> None:
    _hospital, _pharmacy, events = _trail()
    links = _rules_links(events)
    assert all(link is not None for link in links)
    assert _findings(events, links) == []
    # (no link at all: the index replays the log itself, to the same root)
    assert _findings(events, [None] * len(events)) == []


def test_a_repeated_event_id_makes_the_index_replay_the_log_itself() -> None:
    hospital, pharmacy, events = _trail()
    # The operator serves another prescription under the first access's eventId, then a
    # dispense of it: the index's own replay files the dispense under the second record; the
    # rules' replay skipped the repeat (an event-id-duplicate finding) and knows no such
    # prescription.
    first = events[0].event
    other = hospital.prescription(hospital.record("mrn-2"), PATIENT, eventId=first.eventId)
    events += [hospital.sign(other), pharmacy.sign(pharmacy.dispense(other))]
    links = _rules_links(events)
    assert links[3] is None  # the repeat: not applied by the rules
    own = LogState()
    records = [apply(own, e.event)[1].record_ref for e in events]
    assert links[4] is not None
    assert records[4] == hospital.record("mrn-2") != links[4].record_ref  # the replays differ
    assert _findings(events, links) == []  # the index is the one its own replay builds
