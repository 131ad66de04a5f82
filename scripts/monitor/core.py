"""The monitor's loop: follow the chain's checkpoints and the operator's log, verify what is
new, keep the findings, queue their alerts.

One :meth:`Monitor.step` reads the chain (new ``CheckpointCommitted`` logs), then the log's
head and the entries the monitor lacks, page by page, then verifies each checkpoint the
entries now reach. Each run of pages and each checkpoint is verified and kept in one
transaction of the :class:`~scripts.monitor.store.Store`: the mirror rows, the rules' state,
the findings and their alerts, the cursors. A run is one page when the monitor is caught up,
and pages up to ``step_events`` events or ``step_seconds`` seconds when it is behind (the
commit, its sync and the rules' state written back once per run, not per page). The
verification is the audit's own code, run incrementally:

* each entry: :func:`scripts.audit_log.iter_leaves` (digest from the event itself,
  signature; with ``--jobs`` 2 or more, recomputed by worker processes a few chunks ahead
  of the rules), :func:`ledger.audit.check_leaf_sequence`, :class:`ledger.audit.Auditor` over
  the :class:`~ledger.logstate.LogState` kept on disk (signer's registration and kind,
  consent at ``occurredAt``, the prescription → dispense → claim → payment rules), then the
  supervision rules (:mod:`ledger.supervision`);
* the head: the recomputed root at its size (``head-mismatch``), a smaller tree than the one
  verified (``log-rollback``), a head that does not extend the last one verified
  (``split-view``);
* each checkpoint: consistency with the previous one (the API's proof), its root against
  the recomputed tree (``checkpoint-root-mismatch``, or ``checkpoint-beyond-log`` when the
  log does not serve that many events), its index root (``index-root-mismatch``), then what
  depends on when the events it covers were anchored (:meth:`ledger.audit.Auditor.check_anchored`)
  and the supervision rules' checkpoint hooks;
* mirrored entries fetched again (a random run each step) and compared (``entry-changed``);
  events not anchored past their deadline (``not-anchored-in-time``); the institutions'
  receipts given to it, each at its promised leaf by its promised time (``receipt-replaced``,
  ``receipt-dropped``: :mod:`scripts.monitor.receipts`).

The cost of a step is that of what is new: the tree is two frontiers (``CompactRange``: the
served log's and the anchored one's), the rules' state is on disk behind a bounded cache, and
so is the verifiable index the monitor rebuilds (:class:`~scripts.monitor.store.StoredIndex`:
its trie and list frontiers, updated once per checkpoint in the checkpoint's transaction).
Memory stays flat in the log's size.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, overload

import httpx

from ledger import index, merkle
from ledger.audit import (
    Anchor,
    AuditCode,
    Auditor,
    backdated_finding,
    check_checkpoints,
    check_leaf_sequence,
    grant_query,
    needed_facts,
)
from ledger.chain.consent import CommittedConsentFacts
from ledger.chain.model import CheckpointRoots
from ledger.chain.reader import ChainReader, ChainView
from ledger.completeness import index_root_findings
from ledger.errors import LedgerError
from ledger.events import (
    EventBase,
    EventType,
    PrescriptionIssued,
    RecordAccess,
    SignedEvent,
    signed_event_from_json,
)
from ledger.supervision import (
    AnchoredLeaf,
    ObservedCheckpoint,
    ObservedEvent,
    PromisedLeaf,
    RuleSet,
)
from ledger.verify import Finding, FindingCode, check_rollback, verify_consistency_chain
from scripts._api import ApiClient, ApiError, RawLogEntryOut
from scripts._consent import consent_facts
from scripts._recompute import Recomputer
from scripts.audit_log import Served, _entry_changed, entry_of_line, iter_leaves, served_entry
from scripts.monitor import memory
from scripts.monitor.receipts import watch
from scripts.monitor.store import Store

__all__ = ["Monitor", "MonitorSettings", "StepReport"]

#: Errors that mean a source stopped answering (not a finding about the log).
SOURCE_ERRORS: tuple[type[BaseException], ...] = (LedgerError, httpx.HTTPError, OSError)

KEY_SIZE = 32
#: Events per update when the index of an older state is rebuilt into the store.
REBUILD_CHUNK = 10_000
#: (patient, record) pairs whose index keys are remembered (~250 bytes each).
KEYS_CACHE = 8192
#: Events per chunk given to a worker process (``--jobs`` 2 or more). Each chunk costs the
#: monitor a hand-over to the pool's threads (pipe writes, a wake-up, the GIL passed back and
#: forth); 250 rather than 100 took 7 % off its CPU per event (issue 18, A/B), and a page of
#: 1,000 still keeps two workers busy while the first chunk's leaves are judged.
PIPELINE_CHUNK = 250


@dataclass(frozen=True)
class MonitorSettings:
    """How the monitor judges and how much it reads per step."""

    max_merge_delay: int = 3600
    max_backdate: int = 86_400
    page_size: int = 1000
    #: Mirrored entries fetched again per step and compared with the mirror (0: none).
    recheck: int = 100
    #: Processes recomputing digests and signatures; 1: this one.
    jobs: int = 1
    #: Entries whose needs at their checkpoint are kept in memory until it is verified.
    pending: int = 20_000
    #: A monitor behind the log verifies pages in one transaction until this many events…
    step_events: int = 5_000
    #: …or this many seconds (then commits: its alerts go out).
    step_seconds: float = 1.0
    #: A checkpoint's entries are verified this many at a time (its peak of memory).
    checkpoint_chunk: int = 10_000


@dataclass
class StepReport:
    """What one step did."""

    verified: int = 0
    checkpoints: int = 0
    alerts: int = 0
    down: list[str] = field(default_factory=list)


class _Frontier:
    """A :class:`merkle.CompactRange` as :func:`ledger.audit.check_checkpoints` reads a tree
    (its root at its own size only)."""

    def __init__(self, frontier: merkle.CompactRange) -> None:
        self.frontier = frontier

    @property
    def size(self) -> int:
        return self.frontier.size

    def root(self, size: int | None = None) -> bytes:
        assert size is None or size == self.frontier.size
        return self.frontier.root()


class _StoredKeys(Sequence[Sequence[bytes]]):
    """The index keys of the mirrored events, by position, read from the store on demand
    (what :func:`ledger.completeness.index_root_findings` slices)."""

    def __init__(self, store: Store, size: int) -> None:
        self._store = store
        self._size = size

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, item: int) -> Sequence[bytes]: ...

    @overload
    def __getitem__(self, item: slice) -> Sequence[Sequence[bytes]]: ...

    def __getitem__(self, item: int | slice) -> Sequence[bytes] | Sequence[Sequence[bytes]]:
        if isinstance(item, int):
            return self[item : item + 1][0]
        start, stop, _ = item.indices(self._size)
        rows = self._store.db.execute(
            "SELECT keys FROM entries WHERE pos >= ? AND pos < ? ORDER BY pos", (start, stop)
        ).fetchall()
        return [_split_keys(blob) for (blob,) in rows]


def _split_keys(blob: bytes) -> tuple[bytes, ...]:
    return tuple(blob[i : i + KEY_SIZE] for i in range(0, len(blob), KEY_SIZE))


def _fingerprint(digest: bytes) -> int:
    """A content fingerprint stable across processes (the Auditor's duplicate check)."""
    return int.from_bytes(digest[:8], "big", signed=True)


class Monitor:
    """Follows one log and its chain; :meth:`step` does one round (see the module)."""

    def __init__(
        self,
        store: Store,
        api: ApiClient,
        reader: ChainReader,
        rules: RuleSet,
        settings: MonitorSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        receipts: Sequence[PromisedLeaf] = (),
    ) -> None:
        self.store = store
        #: The institutions' receipts it watches (``--receipts``), with the log.
        self.receipts = tuple(receipts)
        self.api = api
        self.reader = reader
        self.rules = rules
        self.settings = settings or MonitorSettings()
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        #: Digests and signatures recomputed by ``jobs`` worker processes, kept from page to
        #: page (:meth:`close` stops them).
        self._recomputer = Recomputer(self.settings.jobs).__enter__()
        #: What the checkpoint covering a mirrored entry will need of its event, by position,
        #: for at most ``settings.pending`` entries: the validated event for an access under a
        #: grant (its consent is judged again once anchored), None for any other (its eventId
        #: and occurredAt, in the mirror's columns, are enough). An entry not here (a restart,
        #: or more pending than that) has its event parsed again from the mirror.
        self._pending: dict[int, SignedEvent | None] = {}
        #: Index keys of the (patient, record) pairs seen lately (:data:`KEYS_CACHE` at most).
        self._keys: dict[tuple[str, bytes | None], tuple[bytes, ...]] = {}
        self._load()

    def close(self) -> None:
        """Stop the worker processes (the store and the clients are the caller's)."""
        self._recomputer.__exit__(None, None, None)

    # -- the cursors ----------------------------------------------------------------------

    def _load(self) -> None:
        """The in-memory part, from what the store committed."""
        get = self.store.get
        identity = {"chainId": self.reader.chain_id, "auditLog": self.reader.trusted.audit_log}
        known = get("identity")
        if known is None:
            with self.store.step():
                self.store.put("identity", identity)
        elif known != identity:
            raise LedgerError(
                f"the monitor's state {self.store.path} belongs to AuditLog {known['auditLog']} "
                f"on chain {known['chainId']}, not to {identity['auditLog']} on chain "
                f"{identity['chainId']}"
            )
        self.served = _frontier(get("served", [0, []]))
        self.anchored = _frontier(get("anchored", [0, []]))
        self.next_leaf: int = get("nextLeaf", 0)
        # The index's update is pure (nodes in, nodes out): a worker's, with ``--jobs`` 2 or
        # more, while the store's reads and writes stay here.
        self.index = self.store.index(partial(self._recomputer.call, index.update))
        if self.index.size < self.anchored.size:  # a state kept before the index was
            with self.store.step():
                keys = _StoredKeys(self.store, self.anchored.size)
                for start in range(self.index.size, self.anchored.size, REBUILD_CHUNK):
                    self.index.extend(keys[start : min(start + REBUILD_CHUNK, len(keys))])

    def _save_cursors(self) -> None:
        self.store.put("served", [self.served.size, [h.hex() for h in self.served.hashes]])
        self.store.put("anchored", [self.anchored.size, [h.hex() for h in self.anchored.hashes]])
        self.store.put("nextLeaf", self.next_leaf)

    @property
    def domain_separator(self) -> bytes:
        return self.reader.domain.separator

    # -- a step ---------------------------------------------------------------------------

    def step(self) -> StepReport:
        """One round: the chain, then the log, then the checkpoints the log now reaches. A
        source that does not answer is reported (``source-down``, once) and the step goes on
        with the other; what was verified before the failure is kept."""
        report = StepReport()
        before = self._last_alert()
        chain_ok = self._guard("chain", report, self._poll_chain)
        api_ok = self._guard("api", report, lambda: self._poll_log(report))
        if chain_ok and api_ok:
            self._guard("api", report, lambda: self._verify_checkpoints(report))
            self._guard("api", report, self._recheck)
            self._guard("api", report, self._watch_receipts)
            self._overdue()  # only with the chain read: else anchored events would look late
        report.alerts = self._last_alert() - before
        return report

    def _last_alert(self) -> int:
        (last,) = self.store.db.execute("SELECT COALESCE(MAX(id), 0) FROM alerts").fetchone()
        return int(last)

    def _guard(self, source: str, report: StepReport, body: Callable[[], None]) -> bool:
        try:
            body()
        except SOURCE_ERRORS as exc:
            self._load()  # what the failed transaction may have left in memory
            report.down.append(source)
            self._source(source, exc)
            return False
        self._source(source, None)
        return True

    def _source(self, source: str, error: BaseException | None) -> None:
        """Report a source going down or coming back (once per change)."""
        key = f"down:{source}"
        now = int(self.clock())
        since = self.store.get(key)
        if error is None and since is None:
            return
        if error is not None and since is not None:
            return
        with self.store.step():
            if error is not None:
                self.store.put(key, now)
                detail = getattr(error, "detail", None) or str(error) or type(error).__name__
                body = {
                    "kind": "status",
                    "code": "source-down",
                    "source": source,
                    "error": detail,
                    "behind": self.lag(),
                    "at": now,
                }
            else:
                self.store.db.execute("DELETE FROM meta WHERE key = ?", (key,))
                body = {
                    "kind": "status",
                    "code": "source-up",
                    "source": source,
                    "downSeconds": now - int(since),
                    "at": now,
                }
            self.store.add_alert(body, now)

    def lag(self) -> dict[str, Any]:
        """How far behind the monitor is: entries of the served head not verified yet,
        checkpoints on chain not verified yet, and the latest checkpoint's age."""
        head = self.store.get("head")
        latest = self.store.db.execute(
            "SELECT size, timestamp FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        pending = self.store.db.execute(
            "SELECT COUNT(*) FROM checkpoints WHERE verified = 0"
        ).fetchone()[0]
        now = int(self.clock())
        return {
            "entries": max(0, (head[0] if head else 0) - self.served.size),
            "checkpoints": int(pending),
            "checkpointAge": None if latest is None else max(0, now - int(latest[1])),
        }

    # -- the chain ------------------------------------------------------------------------

    def _poll_chain(self) -> None:
        """New ``CheckpointCommitted`` logs since the last block scanned."""
        start = self.store.get("scannedBlock")
        start = self.reader.trusted.block_number if start is None else int(start) + 1
        latest = self.reader.block_number()
        now_chain = self.reader.latest_timestamp()
        if latest < start:
            return
        commits = self.reader.checkpoint_events(start, latest)
        with self.store.step():
            for checkpoint, _tx in commits:
                self.store.db.execute(
                    "INSERT OR IGNORE INTO checkpoints (size, root, index_root, block, timestamp) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (
                        checkpoint.tree_size,
                        bytes(checkpoint.root_hash),
                        bytes(checkpoint.index_root),
                        checkpoint.block_number,
                        checkpoint.timestamp,
                    ),
                )
            self.store.put("scannedBlock", latest)
            self.store.put("chainTime", now_chain)

    # -- the log --------------------------------------------------------------------------

    def _poll_log(self, report: StepReport) -> None:
        head = self.api.head()
        served = (head.treeSize, bytes(head.rootHash))
        now = int(self.clock())
        if served[0] < self.served.size:
            finding = check_rollback((self.served.size, self.served.root()), served, None)
            with self.store.step():
                self.store.put("head", [served[0], served[1].hex()])
                if finding is not None:
                    self.store.add_finding(finding, now)
            return
        while self.next_leaf < served[0] and self._verify_pages(served[0], now, report):
            pass
        with self.store.step():
            for finding in self._head_findings(served):
                self.store.add_finding(finding, now)
            self.store.put("head", [served[0], served[1].hex()])

    def _head_findings(self, served: tuple[int, bytes]) -> list[Finding]:
        size, root = served
        findings: list[Finding] = []
        if self.served.size < size:
            findings.append(
                Finding(
                    AuditCode.HEAD_MISMATCH,
                    "error",
                    f"the log's head says {size} events but it serves {self.served.size}: "
                    f"{size - self.served.size} event(s) are withheld or deleted",
                    None,
                    {"treeSize": size, "rootHash": _hex(root), "servedEntries": self.served.size},
                )
            )
        elif self.served.root() != root:
            findings.append(
                Finding(
                    AuditCode.HEAD_MISMATCH,
                    "error",
                    f"the log's head root for size {size} is not the root of the events it serves",
                    None,
                    {"treeSize": size, "rootHash": _hex(root), "servedEntries": self.served.size},
                )
            )
        verified = self.store.get("verifiedHead")
        if verified is not None:
            # The head against the last one verified: the same size with another root, or a
            # larger tree that the operator cannot prove extends it, is a split view.
            seen = (int(verified[0]), bytes.fromhex(verified[1]))
            proof: list[bytes] | None = None
            if seen[0] < size:
                try:
                    proof = self.api.consistency(seen[0], size)
                except ApiError:
                    proof = None
            finding = check_rollback(seen, served, proof)
            if finding is not None:
                findings.append(finding)
        if not findings:
            self.store.put("verifiedHead", [size, root.hex()])
        return findings

    def _verify_pages(self, size: int, now: int, report: StepReport) -> bool:
        """Fetch and verify pages of new entries up to leaf ``size``, and keep them, in one
        transaction: as many pages as fit in ``settings.step_events`` events or
        ``settings.step_seconds`` seconds (one page when the monitor is caught up; a run of
        them when it is behind, so that the commit, its sync and the rules' state written back
        are paid once per run). A page that cannot be fetched ends the run: the pages before
        it are kept, then the error is raised. Whether the log may serve more."""
        store = self.store
        settings = self.settings
        started = time.monotonic()
        pending: dict[int, SignedEvent | None] = {}
        error: BaseException | None = None
        more = True
        count = 0
        with store.step():
            while self.next_leaf < size:
                limit = min(settings.page_size, size - self.next_leaf)
                try:
                    page = self.api.entries(self.next_leaf, limit)
                    entries = [e for e in _entries(page.entries) if e[0].leafIndex < size]
                except SOURCE_ERRORS as exc:
                    error = exc
                    break
                if not entries:
                    more = False
                    break
                before = self.next_leaf
                count += self._verify_page(entries, now, pending)
                if page.next is None or self.next_leaf == before:
                    more = False
                    break
                if count >= settings.step_events or time.monotonic() - started >= (
                    settings.step_seconds
                ):
                    break
            if count:
                store.put("verified", int(store.get("verified", 0)) + count)
                self._save_cursors()
        self._pending.update(pending)
        report.verified += count
        if error is not None:
            raise error
        return more

    def _verify_page(
        self, entries: list[Served], now: int, pending: dict[int, SignedEvent | None]
    ) -> int:
        """Verify a page of new entries, in the open transaction (:meth:`_verify_pages`);
        what the checkpoint will need of them goes to ``pending``."""
        store = self.store
        findings: list[Finding] = []
        fresh: list[RawLogEntryOut] = []
        lines: list[str] = []
        for entry, line in entries:
            if entry.leafIndex < self.next_leaf:
                findings += self._served_again(entry)
            else:
                fresh.append(entry)
                lines.append(line)
        findings += check_leaf_sequence([e.leafIndex for e in fresh], self.next_leaf)
        view = self._facts()  # this page's answers only: memory stays flat
        view.prefetch(needed_facts([e.event for e in fresh if isinstance(e.event, SignedEvent)]))
        # Worker processes recompute small chunks ahead while this one judges the leaves
        # already answered (one chunk when the monitor recomputes them itself).
        chunk = len(fresh) if self._recomputer.jobs == 1 else PIPELINE_CHUNK
        leaves = iter_leaves(fresh, self.reader.domain, self._recomputer, max(1, chunk))
        room = self.settings.pending - len(self._pending)
        state = store.log_state()
        events = [e.event.event for e in fresh if isinstance(e.event, SignedEvent)]
        store.prefetch_events(
            [event.eventId for event in events],
            [
                event.recordRef
                for event in events
                if isinstance(event, RecordAccess | PrescriptionIssued)
            ],
        )
        for code, wanted in self.rules.memory_reads(events).items():
            store.memory(code).prefetch(wanted)
        auditor = Auditor(
            view,
            max_backdate=self.settings.max_backdate,
            max_merge_delay=self.settings.max_merge_delay,
            state=state,
            seen=store.seen(),
        )
        rows: list[tuple[Any, ...]] = []
        placed: list[tuple[Finding, int]] = []  # each about the entry at its position
        for leaf, line in zip(leaves, lines, strict=True):
            entry = leaf.entry
            found = list(leaf.findings)
            record_ref: bytes | None = None
            keys: tuple[bytes, ...] = ()
            event = leaf.signed.event if leaf.signed is not None else None
            if leaf.signed is not None and event is not None:
                found += auditor.check(
                    leaf.signed,
                    consent_label=entry.consent,
                    content=_fingerprint(leaf.digest),
                    received_at=entry.receivedAt,
                )
                facts = state.events.get(event.eventId)
                record_ref = facts.record_ref if facts is not None else None
                keys = self._event_keys(event, record_ref)
                found += self.rules.on_event(
                    ObservedEvent(
                        entry.leafIndex, event, record_ref, entry.receivedAt, tuple(found)
                    ),
                    store.memory,
                )
            if leaf.signed is not None and len(pending) < room:
                pending[self.served.size] = (
                    None if _judged_by_time_alone(leaf.signed) else leaf.signed
                )
            leaf_hash = merkle.leaf_hash(leaf.digest)
            # Blobs as bytearray: bound at C speed (ledger.sqlparams).
            rows.append(
                (
                    self.served.size,
                    entry.leafIndex,
                    None if event is None else bytearray(event.eventId),
                    None if event is None else event.event_type.value,
                    None if event is None else event.institution,
                    None if event is None else event.patient,
                    None if record_ref is None else bytearray(record_ref),
                    None if event is None else event.occurredAt,
                    entry.receivedAt,
                    bytearray(leaf.digest),
                    bytearray(leaf_hash),
                    bytearray().join(keys),
                    line,
                )
            )
            placed += [(finding, self.served.size) for finding in found]
            self.served.append(leaf_hash)
            self.next_leaf = max(self.next_leaf, entry.leafIndex + 1)
        store.db.executemany(
            "INSERT INTO entries (pos, leaf, event_id, event_type, institution, patient, "
            "record_ref, occurred_at, received_at, digest, leaf_hash, keys, raw) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for finding in findings:
            store.add_finding(finding, now)
        for finding, pos in placed:
            store.add_finding(finding, now, pos)
        return len(rows)

    def _event_keys(self, event: EventBase, record_ref: bytes | None) -> tuple[bytes, ...]:
        """``index.event_keys``, remembered for the pairs of patient and record seen lately: a
        record's events come in runs (a visit, a prescription and its dispenses), and a key
        costs an EIP-55 check and two SHA-256 (issue 18: 7 % of the monitor's CPU per event)."""
        pair = (event.patient, record_ref)
        remembered = self._keys
        keys = remembered.pop(pair, None)
        if keys is None:
            keys = index.event_keys(event, record_ref)
            if len(remembered) >= KEYS_CACHE:
                del remembered[next(iter(remembered))]  # the least lately used
        remembered[pair] = keys  # to the end: used lately
        return keys

    def _served_again(self, entry: RawLogEntryOut) -> list[Finding]:
        row = self.store.db.execute(
            "SELECT raw FROM entries WHERE leaf = ? ORDER BY pos LIMIT 1", (entry.leafIndex,)
        ).fetchone()
        if row is None:
            return []
        mirrored = entry_of_line(row[0].encode())
        if mirrored.eventDigest == entry.eventDigest:
            return []
        return [
            Finding(
                FindingCode.SPLIT_VIEW,
                "error",
                f"leaf {entry.leafIndex} is served with another event digest than when it was "
                "mirrored",
                None,
                {
                    "leafIndex": entry.leafIndex,
                    "mirrored": _hex(mirrored.eventDigest),
                    "served": _hex(entry.eventDigest),
                },
            )
        ]

    # -- checkpoints ----------------------------------------------------------------------

    def _verify_checkpoints(self, report: StepReport) -> None:
        rows = self.store.db.execute(
            "SELECT size, root, index_root, block, timestamp FROM checkpoints WHERE verified = 0 "
            "ORDER BY size"
        ).fetchall()
        head = self.store.get("head")
        for size, root, index_root, block, timestamp in rows:
            checkpoint = (int(size), bytes(root), bytes(index_root), int(block), int(timestamp))
            if checkpoint[0] > self.served.size:
                if head is not None and checkpoint[0] > head[0]:
                    self._beyond(checkpoint, int(head[0]))
                return  # the entries it covers are not all mirrored yet
            self._verify_checkpoint(checkpoint)
            report.checkpoints += 1

    def _beyond(self, checkpoint: tuple[int, bytes, bytes, int, int], served: int) -> None:
        size, root, _index_root, block, _timestamp = checkpoint
        finding = Finding(
            AuditCode.CHECKPOINT_BEYOND_LOG,
            "error",
            f"the chain holds a checkpoint of {size} events but the log serves only {served}: "
            "anchored events are withheld or the log was rolled back",
            None,
            {"treeSize": size, "rootHash": _hex(root), "blockNumber": block, "servedSize": served},
        )
        with self.store.step():
            self.store.add_finding(finding, int(self.clock()))

    def _verify_checkpoint(self, checkpoint: tuple[int, bytes, bytes, int, int]) -> None:
        size, root, index_root, block, timestamp = checkpoint
        store = self.store
        now = int(self.clock())
        findings: list[Finding] = []
        previous = store.db.execute(
            "SELECT size, root FROM checkpoints WHERE verified = 1 AND size < ? "
            "ORDER BY size DESC LIMIT 1",
            (size,),
        ).fetchone()
        if previous is not None:
            try:
                proof = self.api.consistency(int(previous[0]), size)
            except ApiError:
                proof = None
            if proof is not None:
                findings += verify_consistency_chain(
                    [(int(previous[0]), bytes(previous[1])), (size, root)], [proof]
                )
        start = self.anchored.size
        pending = self._pending
        view = self._facts()
        with store.step():
            auditor = Auditor(
                view,
                max_backdate=self.settings.max_backdate,
                max_merge_delay=self.settings.max_merge_delay,
                state=store.log_state(),
                seen=store.seen(),
            )
            # A chunk of the entries it covers at a time, so that the checkpoint's peak of
            # memory is a chunk's, whatever the anchoring interval (all in one transaction).
            chunk = self.settings.checkpoint_chunk
            placed: list[tuple[Finding, int]] = []
            for low in range(start, size, chunk):
                high = min(low + chunk, size)
                placed += self._verify_covered(auditor, view, low, high, timestamp)
            findings += check_checkpoints(
                _Frontier(self.anchored), [Anchor(size, root, timestamp, block)]
            )
            findings += index_root_findings(
                _StoredKeys(store, size), [CheckpointRoots(size, root, index_root)], self.index
            )[0]

            def covered() -> Iterator[AnchoredLeaf]:
                for low in range(start, size, chunk):
                    rows = store.db.execute(
                        "SELECT leaf, event_id, institution, occurred_at, received_at "
                        "FROM entries WHERE pos >= ? AND pos < ? ORDER BY pos",
                        (low, min(low + chunk, size)),
                    ).fetchall()
                    for leaf, event_id, institution, occurred, received in rows:
                        yield AnchoredLeaf(leaf, event_id, institution, occurred, received)

            findings += self.rules.on_checkpoint(
                ObservedCheckpoint(size, start, timestamp, block, covered), store.memory
            )
            for finding in findings:
                store.add_finding(finding, now)
            for finding, pos in placed:
                store.add_finding(finding, now, pos)
            store.db.execute("UPDATE checkpoints SET verified = 1 WHERE size = ?", (size,))
            self._save_cursors()
        for pos in range(start, size):
            pending.pop(pos, None)
        memory.release()  # the checkpoint's peak, freed: not kept until the next one

    def _verify_covered(
        self,
        auditor: Auditor,
        view: ChainView | CommittedConsentFacts,
        low: int,
        high: int,
        timestamp: int,
    ) -> list[tuple[Finding, int]]:
        """Entries ``low`` … ``high - 1`` of a checkpoint anchored at ``timestamp``: their
        leaves onto the anchored tree, their keys into the index, and each judged at its
        anchoring (an access under a grant on its whole event, the others on their eventId
        and occurredAt alone). The findings, each with its entry's position, in position
        order."""
        db = self.store.db
        rows = db.execute(
            "SELECT pos, event_id, event_type, occurred_at, leaf_hash FROM entries "
            "WHERE pos >= ? AND pos < ? ORDER BY pos",
            (low, high),
        ).fetchall()
        pending = self._pending
        events: list[tuple[SignedEvent, int]] = []
        timed: list[tuple[bytes, int, int]] = []
        unknown: dict[int, tuple[bytes, int]] = {}  # accesses no longer in memory
        for pos, event_id, event_type, occurred, leaf_hash in rows:
            self.anchored.append(bytes(leaf_hash))
            if event_id is None:
                continue
            kept = pending.get(pos, _UNKNOWN)
            if kept is _UNKNOWN and event_type == EventType.RECORD_ACCESS.value:
                unknown[pos] = (bytes(event_id), int(occurred))
            elif kept is None or kept is _UNKNOWN:  # the other types: their time alone
                timed.append((bytes(event_id), int(occurred), pos))
            else:
                events.append((kept, pos))
        if unknown:
            # Parsed again from the mirror (a restart, or more pending than it keeps), in one
            # streamed query, each kept only if a grant concerns it: a chunk's peak of memory
            # is then its grant accesses', not every event's.
            for pos, raw in db.execute(
                "SELECT pos, raw FROM entries WHERE pos >= ? AND pos < ? AND event_type = ? "
                "ORDER BY pos",
                (low, high, EventType.RECORD_ACCESS.value),
            ):
                if pos not in unknown:
                    continue
                signed = _parsed_event(raw)
                if _judged_by_time_alone(signed):
                    timed.append((*unknown[pos], pos))
                else:
                    events.append((signed, pos))
        if self.index.size == low:  # else index_root_findings says how it stands
            self.index.extend(_StoredKeys(self.store, high)[low:high])
        view.prefetch(
            needed_facts([s for s, _ in events], {s.event_id: timestamp for s, _ in events})
        )
        findings: list[tuple[Finding, int]] = []
        for signed, pos in events:
            findings += [(f, pos) for f in auditor.check_anchored(signed, timestamp)]
        settings = self.settings
        for event_id, occurred, pos in timed:
            late = backdated_finding(
                event_id,
                occurred,
                timestamp,
                max_backdate=settings.max_backdate,
                max_merge_delay=settings.max_merge_delay,
            )
            if late is not None:
                findings.append((late, pos))
        # In the entries' order (an event's own in the order its checks found them), whether
        # each was judged from memory or read again: alerts are numbered as they are stored.
        findings.sort(key=lambda item: item[1])
        return findings

    def _facts(self) -> ChainView | CommittedConsentFacts:
        """What the rules judge a page or a checkpoint by, as the audit does: the chain, and
        consent version 2's signed grants fetched from the API (:mod:`scripts._consent`)."""
        return consent_facts(ChainView(self.reader), api=self.api)

    # -- re-checking and deadlines --------------------------------------------------------

    def _recheck(self) -> None:
        """Fetch again a random run of mirrored entries and compare (``entry-changed``)."""
        count = min(self.settings.recheck, self.served.size)
        if count <= 0:
            return
        start = self.rng.randrange(0, max(0, self.next_leaf - count) + 1)
        page = self.api.entries(start, count)
        served = {e.leafIndex: e for e, _line in _entries(page.entries)}
        rows = self.store.db.execute(
            "SELECT leaf, raw FROM entries WHERE leaf >= ? AND leaf < ? ORDER BY pos",
            (start, start + count),
        ).fetchall()
        findings: list[Finding] = []
        seen: set[int] = set()
        for leaf, raw in rows:
            if leaf in seen:
                continue
            seen.add(leaf)
            finding = _entry_changed(entry_of_line(raw.encode()), served.get(leaf))
            if finding is not None:
                findings.append(finding)
        if findings:
            now = int(self.clock())
            with self.store.step():
                for finding in findings:
                    self.store.add_finding(finding, now)

    def _watch_receipts(self) -> None:
        """The institutions' receipts (:func:`scripts.monitor.receipts.watch`: each at its
        promised leaf, anchored by its promised time), those not yet proven kept: a receipt
        proven in a checkpoint is not fetched again (the log only grows, which the monitor
        checks checkpoint after checkpoint). What is broken is a finding, alerted once."""
        if not self.receipts:
            return
        kept = self.store.receipts_kept()
        waiting = [r for r in self.receipts if _receipt_key(r) not in kept]
        if not waiting:
            return
        (covered,) = self.store.db.execute(
            "SELECT COALESCE(MAX(size), 0) FROM checkpoints"
        ).fetchone()
        now = int(self.clock())
        findings = watch(waiting, self.api, self.reader, now)
        broken = {f.context.get("leafIndex") for f in findings}
        with self.store.step():
            kept = self.store.receipts_kept()
            for receipt in waiting:
                if receipt.leaf_index < int(covered) and receipt.leaf_index not in broken:
                    kept.add(_receipt_key(receipt))
            for finding in findings:
                self.store.add_finding(finding, now)

    def _overdue(self) -> None:
        """``not-anchored-in-time`` for mirrored events past their deadline that no verified
        checkpoint covers (once each)."""
        now = int(self.clock())
        deadline = now - self.settings.max_merge_delay
        rows = self.store.db.execute(
            "SELECT leaf, event_id, received_at, pos FROM entries "
            "WHERE pos >= ? AND received_at < ? ORDER BY pos LIMIT 1000",
            (self.anchored.size, deadline),
        ).fetchall()
        if not rows:
            return
        with self.store.step():
            for leaf, event_id, received, pos in rows:
                anchor_by = int(received) + self.settings.max_merge_delay
                self.store.add_finding(
                    Finding(
                        FindingCode.NOT_ANCHORED_IN_TIME,
                        "error",
                        f"leaf {leaf} is not anchored after its deadline {anchor_by}",
                        event_id,
                        {"leafIndex": int(leaf), "anchorBy": anchor_by},
                    ),
                    now,
                    int(pos),
                )


#: An entry of which nothing is kept in memory (:attr:`Monitor._pending`).
_UNKNOWN: Any = object()


def _parsed_event(raw: str) -> SignedEvent:
    """The event of a mirrored entry, parsed again from the line the mirror keeps."""
    data = json.loads(raw)["event"]
    return signed_event_from_json(data) or SignedEvent.model_validate(data)


def _judged_by_time_alone(signed: SignedEvent) -> bool:
    """Whether :meth:`ledger.audit.Auditor.check_anchored` needs of this event no more than
    its eventId and occurredAt (:func:`ledger.audit.backdated_finding`): every event but an
    access whose consent is a grant."""
    event = signed.event
    return not (isinstance(event, RecordAccess) and grant_query(event) is not None)


def _receipt_key(receipt: PromisedLeaf) -> bytes:
    return receipt.leaf_index.to_bytes(8, "big") + receipt.event_digest


def _frontier(saved: list[Any]) -> merkle.CompactRange:
    size, hashes = saved
    return merkle.CompactRange(int(size), [bytes.fromhex(h) for h in hashes])


def _entries(items: list[Any]) -> list[Served]:
    """The entries of a page, each validated and with the line the mirror keeps of it
    (:func:`scripts.audit_log.served_entry`)."""
    return [served_entry(item) for item in items]


def _hex(value: bytes) -> str:
    return "0x" + value.hex()
