"""ledger.supervision: each built-in rule's findings, its memory, and the rule set's guards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.audit import Auditor
from ledger.codes import CODES
from ledger.events import EventBase
from ledger.supervision import (
    AnchoredLeaf,
    Memory,
    ObservedCheckpoint,
    ObservedEvent,
    Rule,
    RuleSet,
    SupervisionCode,
    SupervisionSettings,
    builtin_rules,
    checkpoint_late,
    emergency_access_rate,
    prescription_without_access,
)
from ledger.verify import Finding
from tests.unit.ledger.test_audit import Facts
from tests.unit.ledger.test_rules import (
    CUSTODIAN,
    HOSPITAL,
    NOW,
    PHARMACY,
    access,
    claim,
    dispense,
    h,
    prescription,
)

OTHER = HOSPITAL  # a hospital that is not the record's custodian


class Judge:
    """Events judged as the monitor does: the ledger's rules, then the supervision rules,
    each rule's memory a JSON round trip away (as the monitor keeps it on disk)."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.auditor = Auditor(Facts())
        self.memories: dict[str, dict[str, str]] = {}
        self.leaf = 0

    def memory_of(self, code: str) -> Memory:
        return JsonMemory(self.memories.setdefault(code, {}))

    def event(self, event: EventBase, received_at: int | None = None) -> list[Finding]:
        ledger = self.auditor.check(event)
        observed = ObservedEvent(
            self.leaf,
            event,
            getattr(event, "recordRef", None),
            event.occurredAt if received_at is None else received_at,
            tuple(ledger),
        )
        self.leaf += 1
        return self.rules.on_event(observed, self.memory_of)


class JsonMemory(dict[str, Any]):
    """A memory whose values are stored as JSON text (what goes in is what a disk gives back)."""

    def __init__(self, backing: dict[str, str]) -> None:
        super().__init__({k: json.loads(v) for k, v in backing.items()})
        self.backing = backing

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.backing[key] = json.dumps(value)


def codes(findings: list[Finding]) -> list[str]:
    return [str(f.code) for f in findings]


def emergency(n: int, at: int, institution: str = OTHER) -> EventBase:
    return access(
        eventId=h(f"glass {n} {institution}"),
        institution=institution,
        grantId=0,
        reasonHash=h("unconscious"),
        occurredAt=at,
    )


# --------------------------------------------------------------------------- the codes


def test_the_built_in_rules_are_described_by_the_code_table() -> None:
    rules = builtin_rules()
    assert {r.code for r in rules} == set(SupervisionCode)
    for rule in rules:
        entry = CODES[rule.code]
        assert (entry.severity, entry.description) == (rule.severity, rule.description)
        assert entry.found_by == frozenset({"monitor"})
        assert rule.entry() == entry
        rule.check()


# --------------------------------------------------------------------------- prescriptions


def test_a_prescription_after_an_access_by_its_institution_is_not_reported() -> None:
    judge = Judge(RuleSet([prescription_without_access()]))
    assert judge.event(access(institution=CUSTODIAN, grantId=0, occurredAt=NOW - 60)) == []
    assert judge.event(prescription(institution=CUSTODIAN)) == []


def test_a_prescription_without_any_access_is_for_review() -> None:
    judge = Judge(RuleSet([prescription_without_access()]))
    findings = judge.event(prescription(institution=CUSTODIAN))
    assert codes(findings) == [SupervisionCode.PRESCRIPTION_WITHOUT_ACCESS]
    assert findings[0].severity == "review"
    assert findings[0].event_id == h("prescription")
    assert findings[0].context["firstAccess"] is None
    assert findings[0].context["recordRef"] == "0x" + h("record").hex()


def test_an_access_by_another_institution_or_to_another_record_does_not_count() -> None:
    judge = Judge(RuleSet([prescription_without_access()]))
    assert judge.event(access(institution=CUSTODIAN, grantId=0, recordRef=h("other"))) == []
    assert judge.event(access(eventId=h("by-other"), occurredAt=NOW - 5)) == []  # HOSPITAL
    findings = judge.event(prescription(institution=CUSTODIAN, occurredAt=NOW + 1))
    assert codes(findings) == [SupervisionCode.PRESCRIPTION_WITHOUT_ACCESS]


def test_an_access_dated_after_the_prescription_does_not_count() -> None:
    judge = Judge(RuleSet([prescription_without_access()]))
    assert judge.event(access(institution=CUSTODIAN, grantId=0, occurredAt=NOW + 60)) == []
    findings = judge.event(prescription(institution=CUSTODIAN, occurredAt=NOW))
    assert findings[0].context["firstAccess"] == NOW + 60
    # An earlier-dated access logged later makes the next prescription lawful.
    assert judge.event(access(eventId=h("a2"), institution=CUSTODIAN, grantId=0)) == []
    assert judge.event(prescription(eventId=h("rx2"), institution=CUSTODIAN)) == []


def test_other_events_are_not_judged_by_the_prescription_rule() -> None:
    judge = Judge(RuleSet([prescription_without_access()]))
    judge.auditor.state_only(prescription(institution=CUSTODIAN))
    assert judge.event(dispense(institution=PHARMACY)) == []
    assert judge.event(claim()) == []


# --------------------------------------------------------------------------- emergency rate


def test_emergency_accesses_above_the_threshold_within_the_window_are_reported_once() -> None:
    settings = SupervisionSettings(emergency_window=3600, emergency_threshold=3)
    judge = Judge(RuleSet([emergency_access_rate(settings)]))
    found = [judge.event(emergency(n, NOW + n * 60)) for n in range(6)]
    assert [codes(f) for f in found] == [
        [],
        [],
        [],
        [SupervisionCode.EMERGENCY_ACCESS_RATE],
        [],
        [],
    ]
    finding = found[3][0]
    assert finding.severity == "review"
    assert finding.context["count"] == 4
    assert finding.context["since"] == NOW
    assert finding.context["institution"] == OTHER
    # A window later, at that rate again: reported again once the window ending at an access
    # holds more than the threshold (the first three of these share theirs with at most two
    # of the earlier burst).
    later = [judge.event(emergency(10 + n, NOW + 3600 + 180 + n * 60)) for n in range(4)]
    assert [codes(f) for f in later] == [[], [], [], [SupervisionCode.EMERGENCY_ACCESS_RATE]]
    assert later[3][0].context["since"] == NOW + 3600 + 180


def test_emergency_accesses_spread_wider_than_the_window_are_not_reported() -> None:
    settings = SupervisionSettings(emergency_window=3600, emergency_threshold=2)
    judge = Judge(RuleSet([emergency_access_rate(settings)]))
    assert [judge.event(emergency(n, NOW + n * 1801)) for n in range(10)] == [[]] * 10


def test_the_emergency_rate_is_per_institution_and_counts_emergencies_only() -> None:
    settings = SupervisionSettings(emergency_window=3600, emergency_threshold=1)
    judge = Judge(RuleSet([emergency_access_rate(settings)]))
    assert judge.event(emergency(1, NOW, OTHER)) == []
    assert judge.event(emergency(2, NOW + 1, PHARMACY)) == []
    assert judge.event(access(eventId=h("granted"), occurredAt=NOW + 2)) == []  # under a grant
    assert judge.event(access(eventId=h("own"), institution=CUSTODIAN, grantId=0)) == []
    found = judge.event(emergency(3, NOW + 3, PHARMACY))
    assert [f.context["institution"] for f in found] == [PHARMACY]


def test_the_emergency_rate_memory_stays_bounded() -> None:
    settings = SupervisionSettings(emergency_window=10**6, emergency_threshold=5)
    judge = Judge(RuleSet([emergency_access_rate(settings)]))
    for n in range(200):
        judge.event(emergency(n, NOW + n))
    stored = json.loads(judge.memories[SupervisionCode.EMERGENCY_ACCESS_RATE][OTHER])
    assert len(stored["times"]) == 6


def test_the_emergency_rate_needs_a_usable_window() -> None:
    with pytest.raises(ValueError, match="window"):
        emergency_access_rate(SupervisionSettings(emergency_window=0))


@settings(deadline=None)  # each example signs nothing, but a loaded machine is slow
@given(st.lists(st.integers(0, 20_000), min_size=1, max_size=60), st.integers(1, 6))
def test_the_emergency_rate_reports_exactly_when_a_window_holds_too_many(
    offsets: list[int], threshold: int
) -> None:
    """Against a brute-force count: a finding is made only when the window ending at an
    access holds more than the threshold, and never twice within a window. Accesses come in
    log order, which is ``occurredAt`` order: the rule remembers only the latest
    ``threshold + 1`` times (bounded memory), so an access logged after later-dated ones is
    counted against those."""
    offsets = sorted(offsets)
    window = 3600
    settings = SupervisionSettings(emergency_window=window, emergency_threshold=threshold)
    judge = Judge(RuleSet([emergency_access_rate(settings)]))
    seen: list[int] = []
    reported: list[int] = []
    for n, offset in enumerate(offsets):
        at = NOW + offset
        seen.append(at)
        found = judge.event(emergency(n, at))
        in_window = sum(1 for t in seen if at - window < t <= at)
        due = in_window > threshold and (not reported or at - reported[-1] >= window)
        assert bool(found) == due
        if found:
            reported.append(at)


# --------------------------------------------------------------------------- checkpoints


def leaves(received: list[int], start: int = 0) -> Any:
    def make() -> Iterator[AnchoredLeaf]:
        for i, at in enumerate(received):
            yield AnchoredLeaf(start + i, h(f"e{i}"), HOSPITAL, at - 1, at)

    return make


def test_a_checkpoint_within_every_promise_is_not_reported() -> None:
    rules = RuleSet([checkpoint_late(SupervisionSettings(max_merge_delay=60))])
    checkpoint = ObservedCheckpoint(3, 0, NOW + 60, 7, leaves([NOW, NOW + 1, NOW + 30]))
    assert rules.on_checkpoint(checkpoint, lambda code: {}) == []


def test_a_checkpoint_later_than_promised_is_reported_once_for_its_late_events() -> None:
    rules = RuleSet([checkpoint_late(SupervisionSettings(max_merge_delay=60))])
    checkpoint = ObservedCheckpoint(
        13, 10, NOW + 100, 7, leaves([NOW, NOW + 20, NOW + 50], start=10)
    )
    findings = rules.on_checkpoint(checkpoint, lambda code: {})
    assert codes(findings) == [SupervisionCode.CHECKPOINT_LATE]
    context = findings[0].context
    assert (context["lateEvents"], context["firstLateLeaf"], context["maxLateness"]) == (2, 10, 40)
    assert findings[0].severity == "review"
    assert findings[0].event_id is None


# --------------------------------------------------------------------------- plug-ins


def night_prescriptions(settings: SupervisionSettings) -> Rule:
    """A province's own rule: prescriptions dated between 00:00 and 05:00 UTC."""

    def on_event(observed: ObservedEvent, memory: Memory) -> list[Finding]:
        event = observed.event
        if event.event_type.value != "PrescriptionIssued" or event.occurredAt % 86400 >= 18000:
            return []
        memory["count"] = memory.get("count", 0) + 1
        return [Finding("night-prescription", "review", "prescribed at night", event.eventId)]

    return Rule("night-prescription", "review", "A prescription dated at night.", on_event)


def test_a_provinces_rule_runs_with_the_built_in_ones_over_its_own_memory() -> None:
    rules = RuleSet([*builtin_rules(), night_prescriptions(SupervisionSettings())])
    judge = Judge(rules)
    night = NOW - NOW % 86400 + 3600
    findings = judge.event(prescription(institution=CUSTODIAN, occurredAt=night))
    assert sorted(codes(findings)) == ["night-prescription", "prescription-without-access"]
    assert judge.memories["night-prescription"] == {"count": "1"}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (Rule("Bad Code", "review", "x", on_event=lambda o, m: []), "kebab-case"),
        (Rule("x-y", "info", "x", on_event=lambda o, m: []), "severity"),  # type: ignore[arg-type]
        (Rule("x-y", "review", " ", on_event=lambda o, m: []), "description"),
        (Rule("x-y", "review", "x"), "runs on events"),
        (Rule("split-view", "review", "x", on_event=lambda o, m: [], origin="p:f"), "own codes"),
        (
            Rule("prescription-without-access", "review", "mine", on_event=lambda o, m: []),
            "own codes",
        ),
    ],
)
def test_unusable_rules_are_refused(rule: Rule, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RuleSet([rule])


def test_two_rules_with_one_code_are_refused() -> None:
    rule = night_prescriptions(SupervisionSettings())
    with pytest.raises(ValueError, match="two supervision rules"):
        RuleSet([rule, rule])


def test_a_rule_making_a_finding_of_another_code_is_refused() -> None:
    def on_event(observed: ObservedEvent, memory: Memory) -> list[Finding]:
        return [Finding("split-view", "error", "not mine")]

    rules = RuleSet([Rule("sneaky-rule", "review", "A rule.", on_event)])
    with pytest.raises(ValueError, match="carry its own code"):
        Judge(rules).event(prescription())


# --------------------------------------------------------------------------- memory reads


class ReadLog(dict[str, Any]):
    """A memory that notes the keys read from it."""

    def __init__(self) -> None:
        super().__init__()
        self.read: list[str] = []

    def get(self, key: str, default: Any = None) -> Any:
        self.read.append(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.read.append(key)
        return super().__getitem__(key)


def test_the_keys_a_rule_says_it_reads_are_the_keys_it_reads() -> None:
    events = [
        access(institution=CUSTODIAN, grantId=0, occurredAt=NOW - 60),
        access(eventId=h("a2"), institution=CUSTODIAN, grantId=0, recordRef=h("other")),
        prescription(institution=CUSTODIAN),
        prescription(eventId=h("rx2"), institution=CUSTODIAN, recordRef=h("third")),
        claim(),
    ]
    rules = RuleSet(builtin_rules())
    said = rules.memory_reads(events)
    # Only the rules that say: the emergency rate does not (it reads an institution's entry).
    assert set(said) == {SupervisionCode.PRESCRIPTION_WITHOUT_ACCESS}
    memory = ReadLog()
    rule = next(r for r in rules if r.code == SupervisionCode.PRESCRIPTION_WITHOUT_ACCESS)
    assert rule.on_event is not None
    for n, event in enumerate(events):
        rule.on_event(ObservedEvent(n, event, None, NOW), memory)
    assert said[SupervisionCode.PRESCRIPTION_WITHOUT_ACCESS] == list(dict.fromkeys(memory.read))
    assert len(said[SupervisionCode.PRESCRIPTION_WITHOUT_ACCESS]) == 3  # each key once
