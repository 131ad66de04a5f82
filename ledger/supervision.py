"""Supervision rules: what a supervision office reviews beyond the ledger's own rules (pure).

The ledger's rules (:mod:`ledger.rules`, replayed by :class:`ledger.audit.Auditor`) say what
is *wrong*. A supervision office also watches what is lawful but worth a look, under the
policy it enforces — e.g. that physicians prescribe online only once their institution holds
the patient's records. The regulator's monitor runs such rules over the log as it grows, and
reports what they find as findings (usually of severity ``review``), alerts included.

A rule (:class:`Rule`) is a code, a severity, a description, and one or both of two pure
functions:

* ``on_event(event, memory)``: called for each new event of the log, in log order, once the
  ledger's own rules have judged it (:class:`ObservedEvent` holds the event, the record it
  belongs to, when the operator received it, and the ledger's findings about it);
* ``on_checkpoint(checkpoint, memory)``: called for each new on-chain checkpoint, once the
  monitor has verified the events it covers (:class:`ObservedCheckpoint`: its size, block
  time, and the events it newly covers).

Each returns the findings it makes, every one with the rule's code and severity. What a
rule must remember of the log is kept in its ``memory`` (:data:`Memory`: a mapping from text
keys to JSON values, its own, which the monitor keeps on disk in the same transaction as the
rest of its state, so that a rule survives restarts and never grows the monitor's memory with
the log). A rule is deterministic: the same events and memory give the same findings and the
same memory.

The built-in rules (:func:`builtin_rules`) are ``prescription-without-access``,
``emergency-access-rate`` and ``checkpoint-late``; their codes are in :mod:`ledger.codes`.
A province adds its own without forking: a module exposing a factory
``(settings: SupervisionSettings) -> Rule | Iterable[Rule]``, named with
``medtrail-monitor --rules module:function`` or registered as an entry point of the group
:data:`ENTRY_POINT_GROUP` in the package that ships it (the monitor loads them:
:mod:`scripts.monitor.rules`). A plug-in rule's code must not be one of :mod:`ledger.codes`'
(which describe medtrail's own findings); its description is shown by ``medtrail-monitor
rules`` next to the built-in ones (docs/regulator.md, "Running a supervision office").

A rule that cannot be used (:meth:`Rule.check`, :class:`RuleSet`) or that makes a finding of
another code or severity than its own is a :class:`ValueError`; whatever a rule raises is
the caller's to report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from ledger import merkle
from ledger.codes import CODES, Code, Severity
from ledger.errors import LedgerError
from ledger.events import EventBase, PrescriptionIssued, RecordAccess
from ledger.verify import Finding

__all__ = [
    "DEFAULT_EMERGENCY_THRESHOLD",
    "DEFAULT_EMERGENCY_WINDOW",
    "ENTRY_POINT_GROUP",
    "AnchoredLeaf",
    "Memory",
    "ObservedCheckpoint",
    "ObservedEvent",
    "PromisedLeaf",
    "ReceiptCode",
    "Rule",
    "RuleSet",
    "SupervisionCode",
    "SupervisionSettings",
    "builtin_rules",
    "checkpoint_late",
    "emergency_access_rate",
    "prescription_without_access",
    "receipt_findings",
]

#: The entry-point group a package registers its supervision rules' factories under.
ENTRY_POINT_GROUP: Final = "medtrail.supervision_rules"
#: Break-glass accesses an institution may make within the window before it is reported.
DEFAULT_EMERGENCY_THRESHOLD: Final = 20
#: The window of the emergency-access rate, in seconds (a day).
DEFAULT_EMERGENCY_WINDOW: Final = 86_400

#: A rule's own memory: text keys, JSON values (kept on disk by the monitor).
Memory = MutableMapping[str, Any]

_KEBAB: Final = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")
_SEVERITIES: Final = ("error", "review", "warning")


class SupervisionCode(StrEnum):
    """The codes of the built-in supervision rules (described in :mod:`ledger.codes`)."""

    #: A prescription by an institution with no earlier access to the record.
    PRESCRIPTION_WITHOUT_ACCESS = "prescription-without-access"
    #: More break-glass accesses by one institution than the threshold within the window.
    EMERGENCY_ACCESS_RATE = "emergency-access-rate"
    #: A checkpoint that landed later than promised for some of the events it covers.
    CHECKPOINT_LATE = "checkpoint-late"


# --------------------------------------------------------------------------- what rules see


@dataclass(frozen=True)
class ObservedEvent:
    """A new event of the log, as the supervision rules see it."""

    leaf_index: int
    event: EventBase
    #: The record it belongs to: its own ``recordRef``, or inherited through the event it
    #: refers to (:attr:`ledger.logstate.Links.record_ref`); None when it has none.
    record_ref: bytes | None
    #: When the operator says it received the event (its receipt's ``receivedAt``).
    received_at: int
    #: What the ledger's own rules found of it (``emergency-access``, …).
    findings: tuple[Finding, ...] = ()

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(str(f.code) for f in self.findings)

    @property
    def emergency(self) -> bool:
        """A break-glass access (the ledger's rules listed it as ``emergency-access``)."""
        return "emergency-access" in self.codes


@dataclass(frozen=True)
class AnchoredLeaf:
    """An event a checkpoint newly covers."""

    leaf_index: int
    event_id: bytes | None
    institution: str | None
    occurred_at: int | None
    received_at: int


@dataclass(frozen=True)
class ObservedCheckpoint:
    """A new on-chain checkpoint, as the supervision rules see it (once the monitor has
    verified the events it covers)."""

    tree_size: int
    #: The size of the checkpoint before it (0 for the first).
    previous_size: int
    #: Its block's time: when the events it newly covers were anchored.
    timestamp: int
    block_number: int
    #: The events it newly covers (leaves ``previous_size`` … ``tree_size - 1``), in order:
    #: each call gives a fresh iterator (read from the monitor's store, never all in memory).
    leaves: Callable[[], Iterator[AnchoredLeaf]] = field(repr=False, default=lambda: iter(()))


# --------------------------------------------------------------------------- rules


EventHook = Callable[[ObservedEvent, Memory], Iterable[Finding]]
CheckpointHook = Callable[[ObservedCheckpoint, Memory], Iterable[Finding]]
MemoryReads = Callable[[EventBase], Iterable[str]]


@dataclass(frozen=True)
class Rule:
    """One supervision rule: its code, severity and description, and what it runs on."""

    code: str
    severity: Severity
    #: What its findings mean (Markdown, one paragraph), as :mod:`ledger.codes` describes codes.
    description: str
    on_event: EventHook | None = field(default=None, repr=False)
    on_checkpoint: CheckpointHook | None = field(default=None, repr=False)
    #: Where it comes from (``builtin``, or the plug-in's ``module:function``).
    origin: str = "builtin"
    #: Optional: the keys of its memory ``on_event`` may read for an event. The monitor then
    #: reads those of a whole page in a few queries, not one per event (a key it leaves out
    #: is still read when asked: this only saves time). Last, so that a rule built with
    #: positional arguments before it existed means what it meant.
    reads: MemoryReads | None = field(default=None, repr=False)

    def entry(self) -> Code:
        """The rule's code as :mod:`ledger.codes` would describe it."""
        return Code(
            self.code, self.description, severity=self.severity, found_by=frozenset({"monitor"})
        )

    def check(self) -> None:
        """:class:`ValueError` unless the rule is usable: a kebab-case code that is not one of
        medtrail's own (unless it is the built-in rule of that code), a severity, a
        description, at least one hook."""
        where = f"the supervision rule {self.code!r} ({self.origin})"
        if not isinstance(self.code, str) or not _KEBAB.fullmatch(self.code):
            raise ValueError(f"{where}: a rule's code is kebab-case (e.g. 'night-prescription')")
        if self.severity not in _SEVERITIES:
            raise ValueError(f"{where}: severity {self.severity!r} is not one of {_SEVERITIES}")
        if not isinstance(self.description, str) or not self.description.strip():
            raise ValueError(f"{where}: a rule needs a description of what its findings mean")
        if self.on_event is None and self.on_checkpoint is None:
            raise ValueError(f"{where}: a rule runs on events, on checkpoints, or both")
        known = CODES.get(self.code)
        own = (known.severity, known.description) if known is not None else None
        if own is not None and (
            self.origin != "builtin" or own != (self.severity, self.description)
        ):
            raise ValueError(
                f"{where}: {self.code!r} is one of medtrail's own codes; give the rule a code "
                "of its own"
            )

    def checked(self, findings: Iterable[Finding]) -> list[Finding]:
        """``findings`` as a list; :class:`ValueError` if one is not of the rule's code and
        severity."""
        made = list(findings)
        for finding in made:
            if str(finding.code) != self.code or finding.severity != self.severity:
                raise ValueError(
                    f"the supervision rule {self.code!r} ({self.origin}) made a finding "
                    f"{finding.code!r} of severity {finding.severity!r}: a rule's findings "
                    "carry its own code and severity"
                )
        return made


@dataclass(frozen=True)
class SupervisionSettings:
    """What the built-in rules (and plug-ins' factories) are configured with."""

    #: Seconds within which the operator promises to anchor each event.
    max_merge_delay: int = 3600
    emergency_window: int = DEFAULT_EMERGENCY_WINDOW
    emergency_threshold: int = DEFAULT_EMERGENCY_THRESHOLD


class RuleSet:
    """Rules run together, each over its own memory (``memory_of(code)``)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        codes: set[str] = set()
        for rule in rules:
            rule.check()
            if rule.code in codes:
                raise ValueError(f"two supervision rules have the code {rule.code!r}")
            codes.add(rule.code)
        self.rules = tuple(rules)

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(rule.code for rule in self.rules)

    def on_event(self, event: ObservedEvent, memory_of: Callable[[str], Memory]) -> list[Finding]:
        """Every rule's findings about a new event (``memory_of(code)``: each rule's memory).
        What a rule raises is raised, as is :class:`ValueError` for a finding of another code
        or severity than its rule's."""
        findings: list[Finding] = []
        for rule in self.rules:
            if rule.on_event is not None:
                findings += rule.checked(rule.on_event(event, memory_of(rule.code)))
        return findings

    def memory_reads(self, events: Iterable[EventBase]) -> dict[str, list[str]]:
        """Per rule that says (:attr:`Rule.reads`), the keys of its memory its ``on_event``
        may read for ``events``, each once."""
        events = list(events)
        return {
            rule.code: list(dict.fromkeys(key for event in events for key in rule.reads(event)))
            for rule in self.rules
            if rule.reads is not None and rule.on_event is not None
        }

    def on_checkpoint(
        self, checkpoint: ObservedCheckpoint, memory_of: Callable[[str], Memory]
    ) -> list[Finding]:
        """Every rule's findings about a new checkpoint (as :meth:`on_event`)."""
        findings: list[Finding] = []
        for rule in self.rules:
            if rule.on_checkpoint is not None:
                findings += rule.checked(rule.on_checkpoint(checkpoint, memory_of(rule.code)))
        return findings


# --------------------------------------------------------------------------- built-in rules


def _description(code: SupervisionCode) -> str:
    return CODES[code].description


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def prescription_without_access(settings: SupervisionSettings | None = None) -> Rule:
    """``prescription-without-access``: a prescription whose institution had no access to the
    record before it (remembers, per record and institution, its earliest access)."""
    code = SupervisionCode.PRESCRIPTION_WITHOUT_ACCESS

    def key(event: RecordAccess | PrescriptionIssued) -> str:
        return f"{event.recordRef.hex()}:{event.institution}"

    def reads(event: EventBase) -> list[str]:
        return [key(event)] if isinstance(event, RecordAccess | PrescriptionIssued) else []

    def on_event(observed: ObservedEvent, memory: Memory) -> list[Finding]:
        event = observed.event
        if isinstance(event, RecordAccess):
            first = memory.get(key(event))
            if first is None or event.occurredAt < int(first):
                memory[key(event)] = event.occurredAt
            return []
        if not isinstance(event, PrescriptionIssued):
            return []
        first = memory.get(key(event))
        if first is not None and int(first) <= event.occurredAt:
            return []
        why = (
            "no access by it to that record earlier in the log"
            if first is None
            else f"its first access to that record is dated {int(first)}, after the prescription"
        )
        return [
            Finding(
                SupervisionCode.PRESCRIPTION_WITHOUT_ACCESS,
                "review",
                f"prescription by {event.institution} for record {_hex(event.recordRef)} dated "
                f"{event.occurredAt}: {why}",
                event.eventId,
                {
                    "institution": event.institution,
                    "recordRef": _hex(event.recordRef),
                    "occurredAt": event.occurredAt,
                    "firstAccess": None if first is None else int(first),
                    "leafIndex": observed.leaf_index,
                },
            )
        ]

    return Rule(code, "review", _description(code), on_event=on_event, reads=reads)


def emergency_access_rate(settings: SupervisionSettings | None = None) -> Rule:
    """``emergency-access-rate``: more than ``emergency_threshold`` break-glass accesses by one
    institution within ``emergency_window`` seconds (by ``occurredAt``); reported at most once
    per window per institution. Remembers, per institution, the times of its latest
    ``threshold + 1`` emergency accesses and when it was last reported."""
    settings = settings or SupervisionSettings()
    window, threshold = settings.emergency_window, settings.emergency_threshold
    if window < 1 or threshold < 0:
        raise ValueError("the emergency-access window is at least 1 s and the threshold at least 0")
    code = SupervisionCode.EMERGENCY_ACCESS_RATE

    def on_event(observed: ObservedEvent, memory: Memory) -> list[Finding]:
        if not observed.emergency:
            return []
        event = observed.event
        at = event.occurredAt
        known = memory.get(event.institution) or {}
        times = sorted([*(int(t) for t in known.get("times", [])), at])
        recent = [t for t in times if at - window < t <= at][-(threshold + 1) :]
        reported = known.get("reported")
        findings: list[Finding] = []
        if len(recent) > threshold and (reported is None or at - int(reported) >= window):
            reported = at
            findings.append(
                Finding(
                    SupervisionCode.EMERGENCY_ACCESS_RATE,
                    "review",
                    f"{event.institution} made more than {threshold} emergency (break-glass) "
                    f"accesses within {window} s (the latest dated {at})",
                    event.eventId,
                    {
                        "institution": event.institution,
                        "count": len(recent),
                        "threshold": threshold,
                        "window": window,
                        "since": recent[0],
                        "occurredAt": at,
                        "leafIndex": observed.leaf_index,
                    },
                )
            )
        memory[event.institution] = {"times": recent, "reported": reported}
        return findings

    return Rule(code, "review", _description(code), on_event=on_event)


def checkpoint_late(settings: SupervisionSettings | None = None) -> Rule:
    """``checkpoint-late``: a checkpoint that landed later than ``receivedAt`` +
    ``max_merge_delay`` for some of the events it newly covers (one finding per checkpoint)."""
    delay = (settings or SupervisionSettings()).max_merge_delay
    code = SupervisionCode.CHECKPOINT_LATE

    def on_checkpoint(checkpoint: ObservedCheckpoint, memory: Memory) -> list[Finding]:
        late = 0
        first: int | None = None
        worst = 0
        for leaf in checkpoint.leaves():
            lateness = checkpoint.timestamp - (leaf.received_at + delay)
            if lateness > 0:
                late += 1
                first = leaf.leaf_index if first is None else first
                worst = max(worst, lateness)
        if not late:
            return []
        return [
            Finding(
                SupervisionCode.CHECKPOINT_LATE,
                "review",
                f"checkpoint {checkpoint.tree_size} landed at {checkpoint.timestamp}, later than "
                f"promised for {late} of the {checkpoint.tree_size - checkpoint.previous_size} "
                f"event(s) it newly covers (up to {worst} s late)",
                None,
                {
                    "treeSize": checkpoint.tree_size,
                    "previousSize": checkpoint.previous_size,
                    "anchoredAt": checkpoint.timestamp,
                    "blockNumber": checkpoint.block_number,
                    "lateEvents": late,
                    "firstLateLeaf": first,
                    "maxLateness": worst,
                    "maxMergeDelay": delay,
                },
            )
        ]

    return Rule(code, "review", _description(code), on_checkpoint=on_checkpoint)


#: The built-in rules' factories, by code.
BUILTIN: Final[dict[str, Callable[[SupervisionSettings | None], Rule]]] = {
    SupervisionCode.PRESCRIPTION_WITHOUT_ACCESS: prescription_without_access,
    SupervisionCode.EMERGENCY_ACCESS_RATE: emergency_access_rate,
    SupervisionCode.CHECKPOINT_LATE: checkpoint_late,
}


def builtin_rules(settings: SupervisionSettings | None = None) -> list[Rule]:
    """The built-in supervision rules, configured with ``settings``."""
    return [factory(settings) for factory in BUILTIN.values()]


# --------------------------------------------------------------------------- receipts


class ReceiptCode(StrEnum):
    """What the institutions' receipts watch finds (described in :mod:`ledger.codes`)."""

    #: The chain's checkpoint covers the promised leaf, but the event is not provably there.
    RECEIPT_REPLACED = "receipt-replaced"
    #: The promised anchoring time passed with no checkpoint reaching the leaf.
    RECEIPT_DROPPED = "receipt-dropped"


@dataclass(frozen=True)
class PromisedLeaf:
    """What an institution's receipt promises: its event's digest at a leaf, anchored by a
    time (the operator's signature over it is the institution's to check on receipt)."""

    event_id: bytes
    event_digest: bytes
    leaf_index: int
    anchor_by: int


def receipt_findings(
    receipt: PromisedLeaf,
    checkpoint: tuple[int, bytes] | None,
    proof: Sequence[bytes] | None,
    now: int,
) -> list[Finding]:
    """Judge one receipt against the chain's latest checkpoint ``(treeSize, rootHash)`` (None
    before the first) and the operator's inclusion proof of its leaf in that tree (None when
    the operator gave none): ``receipt-replaced`` when the checkpoint covers the leaf but the
    event's digest is not proved there, ``receipt-dropped`` when ``now`` is past
    ``anchorBy`` and no checkpoint reaches the leaf; nothing while the promise may still be
    kept, or once it is."""
    context: dict[str, Any] = {
        "leafIndex": receipt.leaf_index,
        "eventDigest": _hex(receipt.event_digest),
        "anchorBy": receipt.anchor_by,
    }
    if checkpoint is not None and checkpoint[0] > receipt.leaf_index:
        size, root = checkpoint
        why = "the operator gave no inclusion proof of it"
        if proof is not None:
            try:
                merkle.verify_inclusion(
                    merkle.leaf_hash(receipt.event_digest), receipt.leaf_index, size, proof, root
                )
                return []
            except LedgerError as exc:
                why = f"its inclusion proof does not verify: {exc.detail}"
        return [
            Finding(
                ReceiptCode.RECEIPT_REPLACED,
                "error",
                f"the receipt promises this event at leaf {receipt.leaf_index}, which the "
                f"on-chain checkpoint of size {size} covers, but {why}",
                receipt.event_id,
                {**context, "treeSize": size, "rootHash": _hex(root)},
            )
        ]
    if now > receipt.anchor_by:
        return [
            Finding(
                ReceiptCode.RECEIPT_DROPPED,
                "error",
                f"the receipt promised this event anchored by {receipt.anchor_by}; at {now} no "
                f"on-chain checkpoint reaches its leaf {receipt.leaf_index}",
                receipt.event_id,
                {**context, "checkpointSize": None if checkpoint is None else checkpoint[0]},
            )
        ]
    return []
