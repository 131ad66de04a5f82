"""Recomputing the log's leaves: each event's EIP-712 digest, and whether its institution
signed it, in chunks, in this process or in a pool of worker processes.

The audit parses and validates every event itself (a malformed one is a finding), builds the
tree and replays the rules; what it hands out is the pure per-event arithmetic, which is
most of the work (secp256k1 recovery above all). A chunk is a list of
``(event type, struct values in field order, signature)`` taken from validated events, and
:func:`recompute_chunk` answers, per event, ``(digest, signed by its institution)``, exactly
as ``SignedEvent.digest`` and ``ledger.verify.signature_findings`` compute them: the same
struct types and digest, and the one signature check (``ledger.eip712.check_signature``), on the
same values. The same function runs in
process (``jobs == 1``) and in the workers, so both give the same answers.

Where workers are forked (Linux), :func:`recompute_events` hands them no events at all: the
parent's validated events are set aside before the pool forks (:func:`inherited`), each
worker reads them from its copy of the parent's memory, and only ``(start, stop)`` ranges and
the answers cross between processes (pickling the struct values cost ~6 µs per event of the
audit's CPU, issue 15). Elsewhere the chunks carry the struct values as above.

The pool (:class:`Recomputer`) keeps a few chunks in flight, answers in order, is shut down
(pending chunks cancelled) on any error or interrupt, and reports a worker that died as a
:class:`WorkerFailed` rather than a traceback. Workers ignore SIGINT: an interrupt is the
parent's to handle.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any, TypeVar

from ledger.eip712 import check_signature, digest
from ledger.errors import LedgerError, SignatureError
from ledger.events import EVENT_STRUCTS, SignedEvent

__all__ = [
    "MAX_JOBS",
    "Chunk",
    "Item",
    "Recomputer",
    "Result",
    "WorkerFailed",
    "chunked",
    "default_jobs",
    "item_of",
    "recompute_chunk",
    "recompute_events",
    "recompute_range",
]

#: One event to recompute: its type's name, its struct values in field order, its signature.
Item = tuple[str, tuple[Any, ...], bytes]
Chunk = list[Item]
#: Per event: its EIP-712 digest, and whether the signature recovers to its institution.
Result = tuple[bytes, bool]
#: What a pool's worker is given: a chunk of items, or a range of the inherited events.
ChunkFunction = Callable[[bytes, Any], list[Result]]

_T = TypeVar("_T")

#: The most worker processes ``--jobs`` accepts.
MAX_JOBS = 64
#: The default number of worker processes never exceeds this (more cores than this: say so).
_DEFAULT_JOBS_CAP = 16

#: Per event type: its struct type and the index of its ``institution`` field.
_STRUCTS = {
    kind.value: (struct, struct.field_names.index("institution"))
    for kind, struct in EVENT_STRUCTS.items()
}


class WorkerFailed(LedgerError):
    """A worker process of the audit died (killed, out of memory): nothing was verified."""

    code = "cannot-verify"
    status = 2


def default_jobs() -> int:
    """The CPUs this process may run on (bounded): the default of ``--jobs``."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        count = os.cpu_count() or 1
    return max(1, min(count, _DEFAULT_JOBS_CAP))


def recompute_chunk(separator: bytes, chunk: Chunk) -> list[Result]:
    """The digest of each event under the domain of ``separator``, and whether the event's
    signature recovers to the institution it names (``signature_findings`` is then empty)."""
    results: list[Result] = []
    for kind, values, signature in chunk:
        struct, institution = _STRUCTS[kind]
        event_digest = digest(separator, struct.hash_struct(values))
        try:
            signed = check_signature(event_digest, signature, values[institution]) is None
        except SignatureError:
            signed = False
        results.append((event_digest, signed))
    return results


def item_of(signed: SignedEvent) -> Item:
    """The chunk item of a validated event."""
    return (signed.type.value, signed.event.struct_values(), signed.signature)


#: The events a forked pool's workers recompute by range (set only around such a pool).
_INHERITED: Sequence[SignedEvent] = ()


@contextmanager
def inherited(events: Sequence[SignedEvent]) -> Iterator[None]:
    """Set ``events`` aside for the workers a pool forks inside this block."""
    global _INHERITED
    _INHERITED = events
    try:
        yield
    finally:
        _INHERITED = ()


def recompute_range(separator: bytes, bounds: tuple[int, int]) -> list[Result]:
    """:func:`recompute_chunk` of the inherited events ``start .. stop - 1`` (in a worker)."""
    start, stop = bounds
    return recompute_chunk(separator, [item_of(signed) for signed in _INHERITED[start:stop]])


def forks() -> bool:
    """Whether pools fork their workers here (they then share the parent's memory)."""
    return bool(_context().get_start_method() == "fork")


def recompute_events(
    events: Sequence[SignedEvent], separator: bytes, *, jobs: int, chunk_size: int
) -> Generator[list[Result], None, None]:
    """The results of ``events``, chunk by chunk, in order, by ``jobs`` processes (a pool
    started for this call, shut down when the iterator ends or is closed)."""
    size = len(events)
    ranges = [(a, min(a + chunk_size, size)) for a in range(0, size, chunk_size)]
    if jobs > 1 and forks():
        with inherited(events), Recomputer(jobs, function=recompute_range) as pool:
            yield from pool.map(separator, ranges)
        return
    with Recomputer(jobs) as pool:
        yield from pool.map(separator, ([item_of(e) for e in events[a:b]] for a, b in ranges))


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _context() -> Any:
    """``fork`` where it is the platform's way (Linux: the workers start at once, with the
    modules already imported); the platform's default elsewhere."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


class Recomputer:
    """Recompute chunks in process (``jobs == 1``) or in ``jobs`` worker processes.

    Use as a context manager: leaving it shuts the pool down, cancelling the chunks not
    started (on an error or an interrupt, the parent does not wait for the whole log).
    """

    def __init__(self, jobs: int, *, function: ChunkFunction | None = None) -> None:
        if not 1 <= jobs <= MAX_JOBS:
            raise ValueError(f"jobs must be in [1, {MAX_JOBS}], got {jobs}")
        self.jobs = jobs
        #: What a chunk is given to (a module-level function: workers get it by name).
        self._function = function or recompute_chunk
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Recomputer:
        if self.jobs > 1:
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs, mp_context=_context(), initializer=_ignore_interrupts
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def map(self, separator: bytes, chunks: Iterable[Any]) -> Generator[list[Result], None, None]:
        """The results of each chunk, in order. ``chunks`` is consumed lazily: a few chunks
        ahead of the one answered, so that preparing chunks overlaps with recomputing."""
        if self._pool is None:
            for chunk in chunks:
                yield self._function(separator, chunk)
            return
        ahead = 2 * self.jobs
        pending: deque[Future[list[Result]]] = deque()
        for chunk in chunks:
            pending.append(self._submit(separator, chunk))
            if len(pending) > ahead:
                yield self._result(pending.popleft())
        while pending:
            yield self._result(pending.popleft())

    def call(self, function: Callable[..., _T], *args: Any) -> _T:
        """``function(*args)`` (a module-level pure function) in a worker process, or in this
        one when ``jobs == 1``: a computation handed out whole (the monitor's index update)."""
        if self._pool is None:
            return function(*args)
        try:
            return self._pool.submit(function, *args).result()
        except BrokenProcessPool as exc:
            raise self._failed(exc) from exc

    def _submit(self, separator: bytes, chunk: Any) -> Future[list[Result]]:
        assert self._pool is not None
        try:
            return self._pool.submit(self._function, separator, chunk)
        except BrokenProcessPool as exc:
            raise self._failed(exc) from exc

    def _result(self, future: Future[list[Result]]) -> list[Result]:
        try:
            return future.result()
        except BrokenProcessPool as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> WorkerFailed:
        return WorkerFailed(
            f"a worker process of the audit died ({exc}): nothing was verified; run the "
            "audit again, or in a single process with --jobs 1",
            jobs=self.jobs,
        )


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
