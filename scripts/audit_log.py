#!/usr/bin/env python3
"""Audit the whole medtrail log: mirror it, recompute its tree, check it against the chain.

Run from the repository root (medtrail installed in the virtualenv)::

    python scripts/audit_log.py --api https://ledger.example --rpc-url ... --deployment-file ...
"""

from __future__ import annotations

import bisect
import json
import math
import os
import random
import secrets
import sys
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal, TypeAlias

import click
from click.core import ParameterSource
from pydantic import ValidationError
from pydantic_core import from_json, to_json

from ledger import gc_tuning, index, jsonsafe, merkle
from ledger.audit import (
    Anchor,
    AuditCode,
    Auditor,
    anchoring_times,
    check_anchoring,
    check_checkpoints,
    check_leaf_sequence,
    needed_facts,
)
from ledger.chain.reader import ChainView
from ledger.completeness import index_root_findings
from ledger.eip712 import Domain, to_checksum_address
from ledger.errors import MalformedEventError
from ledger.events import (
    EventBase,
    SignedEvent,
    audit_log_domain,
    built_model,
    plain_hex,
    signed_event_from_json,
)
from ledger.logstate import Links, LogState, apply
from ledger.trail import deployment_findings
from ledger.verify import (
    Finding,
    FindingCode,
    TreeState,
    check_rollback,
    signature_findings,
    verify_consistency_chain,
)
from scripts._api import ApiClient, ApiError, RawLogEntryOut
from scripts._common import (
    EXIT_STATUS_HELP,
    ChainOptions,
    EventLine,
    OutputFormat,
    Report,
    ToolError,
    atomic_write,
    chain_options,
    chain_summary,
    collector_paused,
    emit,
    guarded,
    hex_,
    institution_names,
    max_backdate_option,
    max_merge_delay_option,
    output_options,
)
from scripts._consent import consent_facts, grants_option
from scripts._recompute import (
    MAX_JOBS,
    Recomputer,
    Result,
    chunked,
    default_jobs,
    item_of,
    recompute_events,
)

MIRROR_FORMAT = 1
STATE_FORMAT = 1
MAX_PAGE = 1000
#: Events per chunk recomputed by a worker process (a log of one chunk or less is
#: recomputed in process: starting workers would cost more than they save).
CHUNK_SIZE = 2000

#: Entries mirrored by earlier runs that a run fetches again by default and compares with the
#: mirror (``--recheck``): one request at the largest page size; a log of this many entries
#: or fewer is re-checked whole on every run.
DEFAULT_RECHECK = 1000

#: What to re-check of the mirror: ``"all"``, or a random sample of this many entries (0: none).
Recheck: TypeAlias = Literal["all"] | int

#: Findings that say the log itself (not one event) cannot be trusted: the state file keeps
#: the last verified tree only when none of these was found.
LOG_INTEGRITY = frozenset(
    {
        AuditCode.ENTRY_MISSING,
        AuditCode.ENTRY_OUT_OF_ORDER,
        AuditCode.HEAD_MISMATCH,
        AuditCode.CHECKPOINT_ROOT_MISMATCH,
        AuditCode.CHECKPOINT_BEYOND_LOG,
        AuditCode.DEPLOYMENT_MISMATCH,
        FindingCode.CHECKPOINT_INCONSISTENT,
        FindingCode.LOG_ROLLBACK,
        FindingCode.SPLIT_VIEW,
    }
)


# --------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class LogIdentity:
    """Which log a mirror or a state file belongs to: the AuditLog on its chain."""

    chain_id: int
    audit_log: str

    @property
    def domain(self) -> Domain:
        return audit_log_domain(self.chain_id, self.audit_log)

    def to_json(self) -> dict[str, Any]:
        return {"chainId": self.chain_id, "auditLog": self.audit_log}

    def check(self, data: dict[str, Any], what: str) -> None:
        try:
            theirs = LogIdentity(int(data["chainId"]), to_checksum_address(data["auditLog"]))
        except (KeyError, TypeError, ValueError, MalformedEventError) as exc:
            raise ToolError(f"{what} does not say which log it belongs to") from exc
        if theirs != self:
            raise ToolError(
                f"{what} belongs to the log of AuditLog {theirs.audit_log} on chain "
                f"{theirs.chain_id}, not to AuditLog {self.audit_log} on chain {self.chain_id}"
            )


# --------------------------------------------------------------------------- the mirror


class Mirror:
    """The local copy of the log's entries: JSON Lines, one header line then one entry per
    line as served. Appended page by page (flushed and synced), so an interrupted run
    resumes where it stopped; a torn last line is dropped."""

    def __init__(self, path: Path, identity: LogIdentity) -> None:
        self.path = path
        self.identity = identity
        self.entries: list[RawLogEntryOut] = []
        self._digests: dict[int, bytes] = {}
        self._by_leaf: dict[int, RawLogEntryOut] | None = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            header = {"medtrailMirror": MIRROR_FORMAT, **self.identity.to_json()}
            atomic_write(self.path, json.dumps(header) + "\n")
            return
        # Read line by line: the file's text is never held whole (issue 15: reading it whole,
        # then split, held twice the mirror's size until the last line was parsed).
        with self.path.open("rb") as handle:
            first = handle.readline()
            if not first.endswith(b"\n"):  # no newline: the header itself is torn (or absent)
                raise ToolError(f"the mirror {self.path} has no header line")
            try:
                header = jsonsafe.loads(first[:-1])
            except ValueError as exc:
                raise ToolError(f"the mirror {self.path} has a malformed header") from exc
            if not isinstance(header, dict) or header.get("medtrailMirror") != MIRROR_FORMAT:
                raise ToolError(f"{self.path} is not a medtrail mirror (format {MIRROR_FORMAT})")
            self.identity.check(header, f"the mirror {self.path}")
            complete = len(first)  # bytes up to the end of the last whole line
            torn = False
            for number, line in enumerate(handle, start=2):
                if not line.endswith(b"\n"):  # the part after the last newline
                    torn = True
                    break
                try:
                    entry = entry_of_line(line[:-1])
                except ValidationError as exc:
                    raise ToolError(
                        f"line {number} of the mirror {self.path} is malformed: {exc}"
                    ) from exc
                self._add(entry)
                complete += len(line)
        if torn:  # a torn write: drop it, it is fetched again
            with self.path.open("r+b") as handle:
                handle.truncate(complete)

    def _add(self, entry: RawLogEntryOut) -> None:
        self.entries.append(entry)
        self._digests.setdefault(entry.leafIndex, entry.eventDigest)
        self._by_leaf = None

    def entry(self, leaf_index: int) -> RawLogEntryOut | None:
        """The entry mirrored at ``leaf_index`` (the first one, were it mirrored twice)."""
        entries = self.entries
        if 0 <= leaf_index < len(entries) and entries[leaf_index].leafIndex == leaf_index:
            return entries[leaf_index]  # the usual case: no hole before it
        if self._by_leaf is None:
            self._by_leaf = {}
            for entry in entries:
                self._by_leaf.setdefault(entry.leafIndex, entry)
        return self._by_leaf.get(leaf_index)

    @property
    def next_start(self) -> int:
        """Where to resume fetching: after the highest leaf mirrored."""
        return max(self._digests, default=-1) + 1

    def append(self, page: Sequence[Served]) -> tuple[int, list[Finding]]:
        """Add a page's new entries; entries served again (the API's paging may repeat one)
        are dropped when identical and reported when not. Returns (added, findings)."""
        fresh: list[RawLogEntryOut] = []
        lines: list[str] = []
        findings: list[Finding] = []
        for entry, text in page:
            known = self._digests.get(entry.leafIndex)
            if known is None:
                fresh.append(entry)
                lines.append(text)
                self._digests[entry.leafIndex] = entry.eventDigest
            elif known != entry.eventDigest:
                findings.append(
                    Finding(
                        FindingCode.SPLIT_VIEW,
                        "error",
                        f"leaf {entry.leafIndex} is served with another event digest than "
                        "when it was mirrored",
                        None,
                        {
                            "leafIndex": entry.leafIndex,
                            "mirrored": hex_(known),
                            "served": hex_(entry.eventDigest),
                        },
                    )
                )
        if fresh:
            text = "".join(line + "\n" for line in lines)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            self.entries.extend(fresh)
            self._by_leaf = None
        return len(fresh), findings


#: The fields of a mirrored entry (:class:`RawLogEntryOut`), as the mirror writes them.
_ENTRY_FIELDS = frozenset(RawLogEntryOut.model_fields)
_UINT64_MAX = 2**64 - 1


def entry_of_line(line: bytes) -> RawLogEntryOut:
    """``RawLogEntryOut.model_validate_json(line)``: the same entry, or the same
    ``ValidationError``. A line in the form the mirror writes it (the entry's fields and no
    other, a well-formed event) is built directly from its parsed JSON
    (:func:`ledger.events.signed_event_from_json`); any other is validated by pydantic.
    Issue 15: pydantic's validation was a quarter of the offline audit's CPU."""
    try:
        data = from_json(line)
    except ValueError:
        data = None
    entry = _plain_entry(data) if type(data) is dict else None
    return RawLogEntryOut.model_validate_json(line) if entry is None else entry


def _plain_entry(data: dict[str, Any]) -> RawLogEntryOut | None:
    if data.keys() != _ENTRY_FIELDS:
        return None
    leaf, received, consent = data["leafIndex"], data["receivedAt"], data["consent"]
    if (
        type(leaf) is not int
        or type(received) is not int
        or not 0 <= leaf <= _UINT64_MAX
        or not 0 <= received <= _UINT64_MAX
        or type(consent) is not str
    ):
        return None
    digest_bytes = plain_hex(data["eventDigest"], 32)
    signed = signed_event_from_json(data["event"])
    if digest_bytes is None or signed is None:
        return None
    return built_model(
        RawLogEntryOut,
        {
            "leafIndex": leaf,
            "eventDigest": digest_bytes,
            "receivedAt": received,
            "consent": consent,
            "event": signed,
        },
    )


# --------------------------------------------------------------------------- the state


class StateFile:
    """The last verified ``(treeSize, rootHash)`` of a log, written atomically."""

    def __init__(self, path: Path, identity: LogIdentity) -> None:
        self.path = path
        self.identity = identity

    def load(self) -> TreeState | None:
        if not self.path.exists():
            return None
        try:
            data = jsonsafe.loads(self.path.read_text(encoding="utf-8"))
            if data.get("medtrailAuditState") != STATE_FORMAT:
                raise ValueError("not a medtrail audit state file")
            self.identity.check(data, f"the state file {self.path}")
            size = int(data["treeSize"])
            root = bytes.fromhex(str(data["rootHash"]).removeprefix("0x"))
        except ToolError:
            raise
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ToolError(f"the state file {self.path} is unreadable: {exc}") from exc
        if size < 0 or len(root) != merkle.HASH_SIZE:
            raise ToolError(f"the state file {self.path} holds an invalid tree state")
        return size, root

    def save(self, state: TreeState, when: int) -> None:
        size, root = state
        data = {
            "medtrailAuditState": STATE_FORMAT,
            **self.identity.to_json(),
            "treeSize": size,
            "rootHash": hex_(root),
            "verifiedAt": when,
        }
        atomic_write(self.path, json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------- mirroring


@contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Any]:
    if not enabled or total <= 0:

        class _Quiet:
            def update(self, _n: int) -> None:
                return None

        yield _Quiet()
        return
    with click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True) as bar:
        yield bar


def sync_mirror(
    api: ApiClient, mirror: Mirror, *, page_size: int, progress: bool
) -> tuple[int, list[Finding]]:
    """Fetch the entries the mirror lacks, page by page; (pages fetched, findings)."""
    start = mirror.next_start
    first = api.entries(start, page_size)
    findings: list[Finding] = []
    pages = 1
    total = max(first.treeSize - start, 0)
    with _progress(progress, total, "mirroring the log") as bar:
        page = first
        while True:
            added, found = mirror.append([served_entry(item) for item in page.entries])
            findings += found
            bar.update(added)
            if page.next is None:
                break
            following = max(page.next, mirror.next_start)
            if following <= page.start and added == 0:
                raise ApiError(f"the API's paging does not progress (start {page.start})")
            page = api.entries(following, page_size)
            pages += 1
    return pages, findings


#: An entry of a page the API served, and the line the mirror keeps of it.
Served: TypeAlias = tuple[RawLogEntryOut, str]


def served_entry(item: Any) -> Served:
    """An entry of a page the API served, validated, and the line a mirror keeps of it.

    An entry the fields' own checks take (:func:`_plain_entry`: the entry's fields and no
    other, each value one its field accepts, as medtrail serves them; a lowercase address or
    uppercase hex too, which the model then holds in its canonical form) is built directly and
    kept as served: the item as compact JSON, written by pydantic-core (a third of the standard
    library's time). Any other (an extra field, a float, …) is validated by pydantic (the same
    model, or the same error) and kept as that model's JSON. Either line reads back as the same
    entry. Issue 18: pydantic's validation and serialisation of each entry were a fifth of the
    monitor's CPU per event."""
    entry = _plain_entry(item) if type(item) is dict else None
    if entry is not None:
        return entry, to_json(item).decode()
    entry = _raw(item)
    return entry, entry.model_dump_json()


def _raw(item: dict[str, Any]) -> RawLogEntryOut:
    try:
        return RawLogEntryOut.model_validate(item)
    except ValidationError as exc:
        raise ApiError(f"the API served a malformed log entry: {exc}") from exc


# --------------------------------------------------------------------------- re-checking


def recheck_mirror(
    api: ApiClient,
    mirror: Mirror,
    *,
    upto: int,
    recheck: Recheck,
    page_size: int = MAX_PAGE,
    rng: random.Random | None = None,
) -> tuple[dict[str, Any], list[Finding]]:
    """Fetch again entries that earlier runs mirrored (leaves below ``upto``) and compare each
    with its mirrored copy: an entry served differently now, or no longer at all, is an
    ``entry-changed`` error naming what changed (the mirror keeps what was first served).

    ``recheck`` is ``"all"``, or how many entries to sample at random (0: none): runs of
    consecutive leaves, at most ``page_size`` each (one request per run), drawn with the
    system's random source so that the operator cannot tell which entries a run will look at.

    Returns the report's statistics (``recheck``, a sentence saying what was re-checked;
    ``recheckedEntries``; ``recheckDiffered``) and the findings.
    """
    if recheck == 0:
        return _recheck_stats("nothing re-checked (--recheck 0)", 0, 0), []
    if upto <= 0:
        return _recheck_stats("nothing re-checked: no entry was mirrored before this run", 0, 0), []
    ranges = recheck_ranges(upto, recheck, page_size, rng or secrets.SystemRandom())
    findings: list[Finding] = []
    checked = 0
    for start, end in ranges:
        served = _served_range(api, start, end, page_size)
        for leaf in range(start, end):
            mirrored = mirror.entry(leaf)
            if mirrored is None:
                continue  # a hole in the mirror: already an entry-missing finding
            checked += 1
            finding = _entry_changed(mirrored, served.get(leaf))
            if finding is not None:
                findings.append(finding)
    whole = ranges == [(0, upto)]
    what = (
        f"all {checked} entries mirrored before this run"
        if whole
        else f"a random sample of {checked} of the {upto} entries mirrored before this run"
    )
    leaves = ", ".join(f"{a}" if b - a == 1 else f"{a}-{b - 1}" for a, b in ranges)
    differed = f"{len(findings)} differed" if findings else "none differed"
    sentence = f"{what} fetched again and compared (leaves {leaves}): {differed}"
    return _recheck_stats(sentence, checked, len(findings)), findings


def _recheck_stats(sentence: str, checked: int, differed: int) -> dict[str, Any]:
    return {"recheck": sentence, "recheckedEntries": checked, "recheckDiffered": differed}


def recheck_ranges(
    upto: int, recheck: Recheck, page_size: int, rng: random.Random
) -> list[tuple[int, int]]:
    """The leaves to re-check, as sorted, disjoint ``[start, end)`` ranges below ``upto``:
    all of them, or about ``recheck`` entries in random runs of at most ``page_size``."""
    if recheck == "all" or recheck >= upto:
        return [(0, upto)]
    block = max(1, min(page_size, recheck))
    blocks = math.ceil(upto / block)
    chosen = sorted(rng.sample(range(blocks), min(blocks, math.ceil(recheck / block))))
    ranges: list[tuple[int, int]] = []
    for number in chosen:
        start, end = number * block, min((number + 1) * block, upto)
        if ranges and ranges[-1][1] == start:
            start = ranges.pop()[0]
        ranges.append((start, end))
    return ranges


def _served_range(
    api: ApiClient, start: int, end: int, page_size: int
) -> dict[int, RawLogEntryOut]:
    """The entries the API serves now for leaves ``start`` … ``end - 1``, by leaf."""
    served: dict[int, RawLogEntryOut] = {}
    at = start
    while at < end:
        page = api.entries(at, min(page_size, end - at))
        for item in page.entries:
            entry = _raw(item)
            if start <= entry.leafIndex < end:
                served.setdefault(entry.leafIndex, entry)
        if page.next is None or page.next >= end:
            break
        if page.next <= at:
            raise ApiError(f"the API's paging does not progress (start {at})")
        at = page.next
    return served


def _entry_changed(mirrored: RawLogEntryOut, served: RawLogEntryOut | None) -> Finding | None:
    """The ``entry-changed`` finding when ``served`` is not the entry mirrored (or is none)."""
    leaf = mirrored.leafIndex
    event_id = _raw_event_id(mirrored.raw_event())
    if served is None:
        return Finding(
            AuditCode.ENTRY_CHANGED,
            "error",
            f"leaf {leaf} was mirrored by an earlier run but is no longer served: deleted "
            "after it was first served",
            event_id,
            {"leafIndex": leaf, "served": None},
        )
    changed: dict[str, dict[str, Any]] = {}
    for name in ("eventDigest", "receivedAt", "consent"):
        before, now = getattr(mirrored, name), getattr(served, name)
        if before != now:
            changed[name] = {"mirrored": _plain(before), "served": _plain(now)}
    _changes("event", mirrored.raw_event(), served.raw_event(), changed)
    if not changed:
        return None
    return Finding(
        AuditCode.ENTRY_CHANGED,
        "error",
        f"leaf {leaf} is served now with another {', '.join(changed)} than when an earlier "
        "run mirrored it: changed after it was first served",
        event_id,
        {"leafIndex": leaf, "changed": changed},
    )


def _changes(path: str, before: Any, now: Any, into: dict[str, dict[str, Any]]) -> None:
    """Record in ``into`` every field under ``path`` that differs (nested objects by field)."""
    if isinstance(before, dict) and isinstance(now, dict):
        for key in [*before, *(k for k in now if k not in before)]:
            _changes(f"{path}.{key}", before.get(key), now.get(key), into)
    elif before != now:
        into[path] = {"mirrored": _plain(before), "served": _plain(now)}


def _plain(value: Any) -> Any:
    return hex_(value) if isinstance(value, bytes) else value


# --------------------------------------------------------------------------- the audit


@dataclass(slots=True)
class _Leaf:
    entry: RawLogEntryOut
    signed: SignedEvent | None
    digest: bytes
    findings: list[Finding] = field(default_factory=list)


def audit(
    mirror: Mirror,
    *,
    api: ApiClient | None,
    chain: ChainView | None,
    state: StateFile | None,
    now: int,
    max_merge_delay: int = 3600,
    max_backdate: int = 86_400,
    page_size: int = MAX_PAGE,
    progress: bool = False,
    jobs: int = 1,
    chunk_size: int = CHUNK_SIZE,
    recheck: Recheck = 0,
    recheck_rng: random.Random | None = None,
    grants: Path | None = None,
) -> Report:
    """Mirror (when ``api`` is given), recompute, check against the chain (when ``chain`` is
    given) and against the state last verified; return the report.

    Consent version 2's grants are judged as ingest judged them
    (:func:`scripts._consent.consent_facts`): the signed grants of the file ``grants``, else
    fetched from ``api``.

    ``jobs`` worker processes recompute the digests and signatures (1: in this process);
    the report is the same whatever their number. ``recheck`` says how much of what earlier
    runs mirrored to fetch again and compare (:func:`recheck_mirror`)."""
    started = time.perf_counter()
    identity = mirror.identity
    domain = identity.domain
    log_findings: list[Finding] = []
    stats: dict[str, Any] = {}
    served_head: TreeState | None = None
    if api is not None:
        if chain is not None:
            log_findings += deployment_findings(chain.trusted, api.deployment().trusted())
        mirrored_before = mirror.next_start
        pages, found = sync_mirror(api, mirror, page_size=page_size, progress=progress)
        log_findings += found
        head = api.head()
        served_head = (head.treeSize, head.rootHash)
        stats["pagesFetched"] = pages
        recheck_stats, changed = recheck_mirror(
            api, mirror, upto=mirrored_before, recheck=recheck, page_size=page_size, rng=recheck_rng
        )
        stats.update(recheck_stats)
    else:
        stats.update(_recheck_stats("nothing re-checked: the API was not read (--offline)", 0, 0))
        changed = []
    fetched = time.perf_counter()

    # Recompute every leaf from the event itself (never from the served digest).
    tree = merkle.MemoryTree()
    log_findings += check_leaf_sequence([e.leafIndex for e in mirror.entries])
    leaves, used_jobs = recompute_leaves(mirror.entries, domain, jobs=jobs, chunk_size=chunk_size)
    for leaf in leaves:
        tree.append(merkle.leaf_hash(leaf.digest))
    recomputed = time.perf_counter()
    _attach(changed, leaves, log_findings)
    stats["treeSize"] = tree.size
    stats["rootHash"] = hex_(tree.root())

    # The served head against the served entries; the log against what was seen before.
    if served_head is None:
        served_head = (tree.size, tree.root())
    else:
        log_findings += _head_findings(served_head, tree)
    seen = state.load() if state is not None else None
    log_findings += _rollback_findings(seen, served_head, tree, api)

    # The chain: checkpoints, anchoring, institutions and grants.
    anchors: list[Anchor] = []
    if chain is not None:
        anchors = [
            Anchor(c.tree_size, c.root_hash, c.timestamp, c.block_number)
            for c, _tx in chain.checkpoint_events()
        ]
        log_findings += check_checkpoints(tree, anchors)
        log_findings += _consistency_findings(anchors, tree, api)
        index_at = len(log_findings)  # the index's findings go here, once the rules have run
        anchoring = check_anchoring(
            [leaf.entry.receivedAt for leaf in leaves],
            anchors,
            now=now,
            max_merge_delay=max_merge_delay,
            event_ids=[leaf.signed.event_id if leaf.signed else None for leaf in leaves],
        )
        _attach(anchoring, leaves, log_findings)
    else:
        log_findings.append(
            Finding(
                AuditCode.CHAIN_NOT_CONSULTED,
                "warning",
                "the chain was not consulted (--no-chain): checkpoints, anchoring, signers' "
                "registrations and consent grants were not checked",
                None,
                {},
            )
        )
    events: list[EventBase] = [leaf.signed.event for leaf in leaves if leaf.signed is not None]
    logged_by = anchoring_times([leaf.entry.leafIndex for leaf in leaves], anchors)
    facts = None if chain is None else consent_facts(chain, grants=grants, api=api)
    if facts is not None:
        facts.prefetch(
            needed_facts(
                events,
                {
                    leaf.signed.event_id: at
                    for leaf, at in zip(leaves, logged_by, strict=True)
                    if leaf.signed is not None and at is not None
                },
            )
        )
    auditor = Auditor(facts, max_backdate=max_backdate, max_merge_delay=max_merge_delay)
    links: list[Links | None] = []
    for leaf, at in zip(leaves, logged_by, strict=True):
        if leaf.signed is not None:
            leaf.findings += auditor.check(
                leaf.signed,
                consent_label=leaf.entry.consent,
                logged_by=at,
                content=hash(leaf.digest),  # the same content, the same digest (cheaper)
                received_at=leaf.entry.receivedAt,
            )
            links.append(auditor.last_links)
        else:
            links.append(None)
    if chain is not None:
        indexed = time.perf_counter()
        log_findings[index_at:index_at] = _index_findings(leaves, chain, links)
        stats["secondsIndex"] = round(time.perf_counter() - indexed, 3)
    finished = time.perf_counter()

    lines = [
        EventLine(
            event=leaf.signed.event,
            leaf_index=leaf.entry.leafIndex,
            digest=leaf.digest,
            signature=leaf.signed.signature,
            record_ref=getattr(leaf.signed.event, "recordRef", None),
            consent=leaf.entry.consent,
            anchored_in=_anchored_in(leaf.entry.leafIndex, anchors),
            findings=leaf.findings,
        )
        for leaf in leaves
        if leaf.findings and leaf.signed is not None
    ]
    orphans = [f for leaf in leaves if leaf.signed is None for f in leaf.findings]
    findings = log_findings + orphans + [f for line in lines for f in line.findings]
    integrity = [f for f in findings if f.code in LOG_INTEGRITY and f.severity == "error"]
    if state is not None and not integrity:
        state.save(served_head, now)
        stats["stateSaved"] = served_head[0]
    elif state is not None:
        stats["stateSaved"] = None
    stats.update(
        {
            "events": len(leaves),
            "checkpointsOnChain": len(anchors),
            "chainRoundTrips": None if chain is None else chain.round_trips,
            "apiRequests": None if api is None else api.requests,
            "secondsFetching": round(fetched - started, 3),
            "secondsRecomputing": round(recomputed - fetched, 3),
            "recomputeJobs": used_jobs,
            "secondsTotal": round(finished - started, 3),
        }
    )
    if leaves and recomputed > fetched:
        stats["recomputedPerSecond"] = int(len(leaves) / (recomputed - fetched))
    subject: dict[str, Any] = {
        "log": f"AuditLog {identity.audit_log} on chain {identity.chain_id}",
        "mirror": str(mirror.path),
        "servedTree": f"size {served_head[0]}, root {hex_(served_head[1])}",
    }
    if seen is not None:
        subject["previouslyVerified"] = f"size {seen[0]}, root {hex_(seen[1])}"
    chain_info = None
    if chain is not None:
        chain_info = chain_summary(chain)
        if anchors:
            last = anchors[-1]
            chain_info["latestCheckpoint"] = {
                "treeSize": last.tree_size,
                "rootHash": hex_(last.root_hash),
                "block": last.block_number,
            }
    return Report(
        tool="audit_log",
        subject=subject,
        chain=chain_info,
        events=lines,
        findings=findings,
        stats=stats,
        names=institution_names(chain, {e.institution for e in events}),
        checked_at=now,
        all_events=_every_line(leaves, anchors),
    )


def _index_findings(
    leaves: Sequence[_Leaf], chain: ChainView, links: Sequence[Links | None]
) -> list[Finding]:
    """Rebuild the verifiable index from the mirror and compare every on-chain index root
    (``index-root-mismatch``): each event's keys are its record's (as the rules' replay
    inherits it, :func:`ledger.logstate.apply`) and its patient's (docs/index.md §1). The
    index cannot be rebuilt past a malformed entry (reported already): checkpoints beyond it
    are not compared.

    ``links``: per leaf, what the rules' replay (:attr:`Auditor.last_links`) got from
    :func:`~ledger.logstate.apply` for it, so as not to replay the log a second time. Until
    the first malformed entry, the replay applied exactly these events in this order (it
    skips only malformed ones, and repeated eventIds: a None here), so its links are the ones
    a replay of its own would get; at the first None the index replays the log itself."""
    known: dict[tuple[str, bytes | None], tuple[bytes, ...]] = {}

    def keys_of(event: EventBase, record_ref: bytes | None) -> tuple[bytes, ...]:
        # index.event_keys depends on the patient and the record alone, which recur: once each
        pair = (event.patient, record_ref)
        found = known.get(pair)
        if found is None:
            found = known[pair] = index.event_keys(event, record_ref)
        return found

    keys: list[tuple[bytes, ...]] = []
    shared = True
    for leaf, link in zip(leaves, links, strict=True):
        if leaf.signed is None:
            break
        if link is None:
            shared = False
            break
        keys.append(keys_of(leaf.signed.event, link.record_ref))
    if not shared:
        state = LogState()
        keys = []
        for leaf in leaves:
            if leaf.signed is None:
                break
            event = leaf.signed.event
            _violations, own = apply(state, event)
            keys.append(keys_of(event, own.record_ref))
    checkpoints = [c for c, _tx in chain.checkpoint_events()]
    findings, _rebuilt = index_root_findings(keys, checkpoints)
    skipped = sorted(c.tree_size for c in checkpoints if len(keys) < c.tree_size <= len(leaves))
    if skipped:  # said, so that a report is never read as "the index was audited"
        findings.append(
            Finding(
                AuditCode.INDEX_ROOTS_UNCHECKED,
                "warning",
                f"{len(skipped)} on-chain index root(s) not compared (checkpoints {skipped[0]}"
                f"..{skipped[-1]}): the index cannot be rebuilt past the malformed entry at leaf "
                f"{len(keys)}",
                None,
                {"malformedLeaf": len(keys), "checkpoints": skipped[:20], "count": len(skipped)},
            )
        )
    return findings


def recompute_leaves(
    entries: Sequence[RawLogEntryOut],
    domain: Domain,
    *,
    jobs: int = 1,
    chunk_size: int = CHUNK_SIZE,
    recomputer: Recomputer | None = None,
) -> tuple[list[_Leaf], int]:
    """Each entry's leaf, recomputed from its event: parsed and validated here (a malformed
    event is a finding, its served digest standing in for the leaf), then digests and
    signatures in chunks of ``chunk_size``, by ``jobs`` worker processes when the log holds
    more than one chunk. Returns the leaves, in order, and the number of processes used.

    ``recomputer``: one already started, used as it is (the monitor keeps its workers from
    page to page) instead of one started for this call with ``jobs``."""
    if recomputer is not None:
        return list(iter_leaves(entries, domain, recomputer, chunk_size)), recomputer.jobs
    if len(entries) <= chunk_size:
        jobs = 1
    parsed = [(entry, _parse(entry)) for entry in entries]
    valid = [signed for _, signed in parsed if isinstance(signed, SignedEvent)]
    # A pool of its own: forked workers read the events from the parent's memory.
    results = recompute_events(valid, domain.separator, jobs=jobs, chunk_size=chunk_size)
    return list(_leaves_of(parsed, results)), jobs


def iter_leaves(
    entries: Sequence[RawLogEntryOut],
    domain: Domain,
    recomputer: Recomputer,
    chunk_size: int = CHUNK_SIZE,
) -> Iterator[_Leaf]:
    """:func:`recompute_leaves`' leaves with a pool already started, one at a time as their
    chunks are answered: a caller working on each leaf (the monitor's rules) overlaps with the
    workers recomputing the next chunks."""
    parsed = [(entry, _parse(entry)) for entry in entries]
    valid = [signed for _, signed in parsed if isinstance(signed, SignedEvent)]
    results = recomputer.map(
        domain.separator, ([item_of(e) for e in part] for part in chunked(valid, chunk_size))
    )
    yield from _leaves_of(parsed, results)


def _leaves_of(
    parsed: Sequence[tuple[RawLogEntryOut, SignedEvent | Finding]],
    results: Generator[list[Result], None, None],
) -> Iterator[_Leaf]:
    """The leaves of the parsed entries, given the digests and signatures of the valid ones."""
    with closing(results):
        answers = (answer for chunk in results for answer in chunk)
        for entry, signed in parsed:
            if isinstance(signed, SignedEvent):
                yield _leaf(entry, signed, *next(answers))
            else:
                yield _Leaf(entry, None, entry.eventDigest, [signed])


def _parse(entry: RawLogEntryOut) -> SignedEvent | Finding:
    """The entry's event, or the ``entry-malformed`` finding that says why it is none."""
    try:
        return entry.signed_event()
    except ValidationError as exc:
        return Finding(
            AuditCode.ENTRY_MALFORMED,
            "error",
            f"leaf {entry.leafIndex} holds a malformed event: "
            f"{exc.error_count()} error(s), first: {exc.errors()[0]['msg']}",
            _raw_event_id(entry.raw_event()),
            {"leafIndex": entry.leafIndex},
        )


def _leaf(entry: RawLogEntryOut, signed: SignedEvent, digest: bytes, by_institution: bool) -> _Leaf:
    """The leaf of a well-formed event, given its recomputed digest and whether its
    institution signed it (:func:`_recompute.recompute_chunk`)."""
    findings: list[Finding] = []
    if digest != entry.eventDigest:
        findings.append(
            Finding(
                FindingCode.DIGEST_MISMATCH,
                "error",
                f"leaf {entry.leafIndex}: the served eventDigest is not the digest of the "
                "served event (the event was changed after it was logged)",
                signed.event_id,
                {
                    "leafIndex": entry.leafIndex,
                    "eventDigest": hex_(entry.eventDigest),
                    "computed": hex_(digest),
                },
            )
        )
    if not by_institution:
        findings += signature_findings(signed, digest)  # says why (recovers once more)
    return _Leaf(entry, signed, digest, findings)


def _raw_event_id(event: dict[str, Any]) -> bytes | None:
    inner = event.get("event")
    value = inner.get("eventId") if isinstance(inner, dict) else None
    try:
        return bytes.fromhex(value[2:]) if isinstance(value, str) and len(value) == 66 else None
    except ValueError:
        return None


def _head_findings(served: TreeState, tree: merkle.MemoryTree) -> list[Finding]:
    size, root = served
    if size > tree.size:
        detail = (
            f"the log's head says {size} events but it serves {tree.size}: "
            f"{size - tree.size} event(s) are withheld or deleted"
        )
    elif tree.root(size) != root:
        detail = f"the log's head root for size {size} is not the root of the events it serves"
    else:
        return []
    return [
        Finding(
            AuditCode.HEAD_MISMATCH,
            "error",
            detail,
            None,
            {"treeSize": size, "rootHash": hex_(root), "servedEntries": tree.size},
        )
    ]


def _rollback_findings(
    seen: TreeState | None, served: TreeState, tree: merkle.MemoryTree, api: ApiClient | None
) -> list[Finding]:
    findings: list[Finding] = []
    if seen is not None:
        proof: list[bytes] | None = None
        if served[0] > seen[0]:
            if api is not None:
                try:
                    proof = api.consistency(seen[0], served[0])
                except ApiError:
                    proof = None
            elif served[0] <= tree.size:
                proof = tree.consistency_proof(seen[0], served[0])
        finding = check_rollback(seen, served, proof)
        if finding is not None:
            return [finding]
        if seen[0] <= tree.size and tree.root(seen[0]) != seen[1]:
            findings.append(
                Finding(
                    FindingCode.SPLIT_VIEW,
                    "error",
                    f"the events served for the first {seen[0]} leaves are not the ones "
                    "verified before",
                    None,
                    {"seenSize": seen[0], "seenRoot": hex_(seen[1])},
                )
            )
    if not findings and served[0] < tree.size:
        finding = check_rollback((tree.size, tree.root()), served, None)
        if finding is not None:
            finding = Finding(
                finding.code,
                finding.severity,
                finding.detail + " (the local mirror holds more)",
                None,
                dict(finding.context),
            )
            findings.append(finding)
    return findings


def _consistency_findings(
    anchors: list[Anchor], tree: merkle.MemoryTree, api: ApiClient | None
) -> list[Finding]:
    """Each on-chain checkpoint extends the previous one (the contract checks it on commit;
    the regulator checks it again, with the API's proofs or the recomputed tree's)."""
    states: list[TreeState] = [(a.tree_size, bytes(a.root_hash)) for a in anchors]
    findings: list[Finding] = []
    for old, new in pairwise(states):
        proof: list[bytes] | None = None
        if api is not None:
            try:
                proof = api.consistency(old[0], new[0])
            except ApiError:
                proof = None
        if proof is None and new[0] <= tree.size:
            proof = tree.consistency_proof(old[0], new[0])
        if proof is None:
            continue  # beyond the served log: already a checkpoint-beyond-log finding
        findings += verify_consistency_chain([old, new], [proof])
    return findings


def _every_line(leaves: list[_Leaf], anchors: list[Anchor]) -> Callable[[], Iterator[EventLine]]:
    """Every well-formed event of the log as a report line, in log order, each made when it
    is asked for (the exports of a whole log write them one at a time)."""
    sizes = sorted(a.tree_size for a in anchors)

    def lines() -> Iterator[EventLine]:
        for leaf in leaves:
            if leaf.signed is None:
                continue  # its entry-malformed finding is the log's
            first = bisect.bisect_right(sizes, leaf.entry.leafIndex)
            yield EventLine(
                event=leaf.signed.event,
                leaf_index=leaf.entry.leafIndex,
                digest=leaf.digest,
                signature=leaf.signed.signature,
                record_ref=getattr(leaf.signed.event, "recordRef", None),
                consent=leaf.entry.consent,
                anchored_in=sizes[first] if first < len(sizes) else None,
                findings=leaf.findings,
            )

    return lines


def _anchored_in(leaf_index: int, anchors: list[Anchor]) -> int | None:
    sizes = [a.tree_size for a in anchors if a.tree_size > leaf_index]
    return min(sizes) if sizes else None


def _attach(findings: list[Finding], leaves: list[_Leaf], log_findings: list[Finding]) -> None:
    if not findings:
        return  # (the usual case: no need to index the whole log by eventId)
    by_id = {leaf.signed.event_id: leaf for leaf in leaves if leaf.signed is not None}
    for finding in findings:
        leaf = by_id.get(finding.event_id) if finding.event_id is not None else None
        if leaf is not None:
            leaf.findings.append(finding)
        else:
            log_findings.append(finding)


# --------------------------------------------------------------------------- the command


def _identity_without_chain(
    chain: ChainOptions, api: ApiClient | None
) -> tuple[LogIdentity, list[Finding]]:
    """Which log to audit when the chain is not read: the deployment file, or --chain-id and
    --audit-log, or (said so in the report) what the API claims."""
    chain_id, audit_log = chain.chain_id, chain.audit_log
    if chain.deployment_file is not None:
        spec = replace(chain, consent_registry_v2=None).spec()  # the file's log, its chain
        assert spec.chain_id is not None
        return LogIdentity(spec.chain_id, to_checksum_address(spec.audit_log)), []
    if chain_id is not None and audit_log:
        try:
            return LogIdentity(chain_id, to_checksum_address(audit_log)), []
        except MalformedEventError as exc:
            raise ToolError(f"--audit-log: {exc.detail}") from exc
    if api is None:
        raise ToolError(
            "say which log the mirror is of: --deployment-file, or --chain-id and --audit-log"
        )
    served = api.deployment()
    warning = Finding(
        AuditCode.DEPLOYMENT_FROM_API,
        "warning",
        f"the log's identity (AuditLog {served.audit_log} on chain {served.chain_id}) was taken "
        "from the API, not from your own configuration",
        None,
        {"chainId": served.chain_id, "auditLog": served.audit_log},
    )
    return LogIdentity(served.chain_id, served.audit_log), [warning]


class _RecheckType(click.ParamType[Recheck]):
    """``all``, or a number of entries (``none`` is 0)."""

    name = "all|N"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Recheck:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        text = str(value).strip().lower()
        if text == "all":
            return "all"
        if text == "none":
            return 0
        if text.isdigit():
            return int(text)
        self.fail(f"{value!r} is not 'all' nor a number of entries (0 or more)", param, ctx)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_STATUS_HELP
    + "MEDTRAIL_AUDIT_MIRROR,\n"
    + "MEDTRAIL_AUDIT_STATE, MEDTRAIL_MAX_MERGE_DELAY, MEDTRAIL_MAX_BACKDATE,\n"
    + "MEDTRAIL_AUDIT_JOBS, MEDTRAIL_AUDIT_RECHECK, MEDTRAIL_GRANTS_FILE.",
)
@click.option(
    "--api",
    "api_url",
    envvar="MEDTRAIL_API_URL",
    metavar="URL",
    help="The ledger API to mirror [env MEDTRAIL_API_URL].",
)
@click.option(
    "--api-key",
    envvar="MEDTRAIL_API_KEY",
    metavar="KEY",
    help="Regulator's API key (bearer token) [env MEDTRAIL_API_KEY].",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Do not fetch anything: audit the local mirror as it is.",
)
@click.option(
    "--mirror",
    "mirror_path",
    envvar="MEDTRAIL_AUDIT_MIRROR",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".medtrail/audit/mirror.jsonl"),
    show_default=True,
    help="Local mirror of the log (JSON Lines); resumed where it stopped.",
)
@click.option(
    "--state",
    "state_path",
    envvar="MEDTRAIL_AUDIT_STATE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".medtrail/audit/state.json"),
    show_default=True,
    help="Last verified (treeSize, rootHash), to catch a rollback or a split view.",
)
@click.option(
    "--page-size",
    type=click.IntRange(1, MAX_PAGE),
    default=MAX_PAGE,
    show_default=True,
    help="Entries per request.",
)
@click.option(
    "--no-chain",
    is_flag=True,
    help="Do not read the chain: only the mirror, the tree, the signatures, the rules that "
    "need no chain data, and rollback against the state file.",
)
@chain_options
@max_merge_delay_option
@max_backdate_option
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Show a progress bar while mirroring [default: when stderr is a terminal].",
)
@click.option(
    "--jobs",
    "-j",
    envvar="MEDTRAIL_AUDIT_JOBS",
    type=click.IntRange(1, MAX_JOBS),
    default=None,
    metavar="N",
    help="Processes recomputing digests and signatures; 1: no worker process "
    "[default: the number of CPUs] [env MEDTRAIL_AUDIT_JOBS].",
)
@click.option(
    "--recheck",
    envvar="MEDTRAIL_AUDIT_RECHECK",
    type=_RecheckType(),
    default=str(DEFAULT_RECHECK),
    show_default=True,
    help="Fetch again entries that earlier runs mirrored and compare them with the mirror (one "
    "edited or deleted since is entry-changed): 'all', or a random sample of N entries per "
    "run; 0: none [env MEDTRAIL_AUDIT_RECHECK].",
)
@grants_option
@output_options
@click.pass_context
@guarded
def main(
    ctx: click.Context,
    api_url: str | None,
    api_key: str | None,
    offline: bool,
    mirror_path: Path,
    state_path: Path,
    page_size: int,
    no_chain: bool,
    chain: ChainOptions,
    max_merge_delay: int,
    max_backdate: int,
    progress: bool | None,
    jobs: int | None,
    recheck: Recheck,
    grants_file: Path | None,
    output: OutputFormat,
) -> None:
    """Audit the whole log, trusting only the chain.

    \b
    1. Mirror every entry from the API (GET /v1/log/entries, paged), into a local file that
       later runs resume from (--offline audits the mirror alone); fetch again entries
       mirrored by earlier runs (all, or a random sample: --recheck) and report any that
       changed since.
    2. Recompute every event's EIP-712 digest, recover every signature, and rebuild the
       RFC 9162 tree from the events themselves (never from the served digests).
    3. Check every checkpoint the AuditLog holds on YOUR chain (--rpc-url) against the
       recomputed root at its size, and against the previous checkpoint; flag events not
       anchored within the merge delay.
    4. Replay every rule over every event: signer registered with the right kind at
       occurredAt, consent on chain at occurredAt (consent version 2: each signed grant from
       --grants, or else fetched from the API, judged by the ConsentRegistryV2 you trust),
       emergency accesses for review, the prescription → dispense → claim → payment chain.
    5. Compare the served tree with the last one verified (--state): a smaller tree is a
       rollback, another root for a size seen before a split view — with or without the
       chain (--no-chain).

    Reports per-finding counts and every offending event (--table, --json); exports every
    event of the log with its findings (--fhir, --csv).
    """
    if offline and api_url and ctx.get_parameter_source("api_url") == ParameterSource.COMMANDLINE:
        raise click.UsageError("--offline takes no --api")
    if offline and ctx.get_parameter_source("recheck") == ParameterSource.COMMANDLINE:
        raise click.UsageError("--offline takes no --recheck: re-checking reads the API")
    if not offline and not api_url:
        raise click.UsageError("give --api URL (or MEDTRAIL_API_URL), or --offline")
    if no_chain and grants_file is not None:
        raise click.UsageError("--no-chain takes no --grants: grants are judged on chain")
    show_progress = sys.stderr.isatty() if progress is None else progress
    gc_tuning.tune()  # the whole log is held: the collector must not walk it again and again
    with ExitStack() as stack:
        stack.enter_context(collector_paused())
        api = None
        if api_url and not offline:
            api = stack.enter_context(ApiClient(api_url, api_key))
        view: ChainView | None = None
        notes: list[Finding] = []
        if no_chain:
            identity, notes = _identity_without_chain(chain, api)
        else:
            view = stack.enter_context(chain.connect())
            identity = LogIdentity(view.chain_id, view.trusted.audit_log)
        report = audit(
            Mirror(mirror_path, identity),
            api=api,
            chain=view,
            state=StateFile(state_path, identity),
            now=int(time.time()),
            max_merge_delay=max_merge_delay,
            max_backdate=max_backdate,
            page_size=page_size,
            progress=show_progress,
            jobs=default_jobs() if jobs is None else jobs,
            recheck=recheck,
            grants=grants_file,
        )
        report.findings[:0] = notes
    emit(report, output)
    ctx.exit(report.exit_status)


if __name__ == "__main__":  # pragma: no cover - the command line
    main()
