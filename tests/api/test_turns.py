"""Submitted batches take turns computing, one at a time per process, and give the turn on
before their commit (api.turns, issue 15)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import anyio
import httpx
import pytest
from fastapi.concurrency import run_in_threadpool

from api.problems import ServerBusy
from api.turns import Turns
from ledger.events import SignedEvent
from tests.api.world import World, bearer, event_json

# ---------------------------------------------------------------------------- Turns alone

Task = Callable[[], Awaitable[None]]


def together(*tasks: Task, stagger: float = 0.0) -> None:
    """Run ``tasks`` at once on one event loop, each started ``stagger`` seconds after the one
    before; a turn never given on fails the test after 10 s rather than hanging it."""

    async def main() -> None:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for task in tasks:
                    group.start_soon(task)
                    await anyio.sleep(stagger)

    anyio.run(main)


def holding(turns: Turns, work: Callable[[Callable[[], None]], None]) -> Task:
    """A task that takes the turn and runs ``work(give_on)`` in a worker thread, as
    ``POST /v1/events`` does."""

    async def task() -> None:
        async with turns.turn() as give_on:
            await run_in_threadpool(work, give_on)

    return task


def test_turns_are_given_one_at_a_time_in_the_order_asked() -> None:
    turns = Turns()
    log: list[str] = []

    async def task(name: str) -> None:
        async with turns.turn():
            log.append(f"{name} in")
            await anyio.sleep(0.02)
            log.append(f"{name} out")

    together(*(partial(task, name) for name in "abcd"), stagger=0.005)  # asked in this order
    assert log == [f"{n} {w}" for n in "abcd" for w in ("in", "out")]


def test_a_worker_thread_gives_the_turn_on_before_its_task_ends() -> None:
    turns = Turns()
    events: list[str] = []
    given = threading.Event()

    def work(give_on: Callable[[], None]) -> None:
        events.append("first computes")
        give_on()
        given.set()
        time.sleep(0.2)  # its "commit": the next one computes meanwhile
        events.append("first ends")

    async def second() -> None:
        await anyio.to_thread.run_sync(given.wait, 5)
        async with turns.turn():
            events.append("second computes")

    together(holding(turns, work), second)
    assert events == ["first computes", "second computes", "first ends"]


def test_a_turn_given_on_twice_lets_only_one_more_task_in() -> None:
    turns = Turns()
    inside = 0
    most = 0

    def work(give_on: Callable[[], None]) -> None:
        give_on()
        give_on()  # once only: a second call gives nothing (nor does the block's end)

    async def waiter() -> None:
        nonlocal inside, most
        async with turns.turn():
            inside += 1
            most = max(most, inside)
            await anyio.sleep(0.05)
            inside -= 1

    together(holding(turns, work), waiter, waiter, waiter, stagger=0.01)
    assert most == 1


def test_a_failing_task_gives_its_turn_on() -> None:
    turns = Turns()

    async def main() -> str:
        with pytest.raises(RuntimeError):
            async with turns.turn():
                raise RuntimeError("refused")
        with anyio.fail_after(5):
            async with turns.turn():
                return "next"

    assert anyio.run(main) == "next"


def test_a_turn_that_cannot_be_given_early_is_given_when_the_block_ends() -> None:
    """give_on never fails the batch: when the event loop cannot take the hand-over (it is
    closing) it gives nothing and raises nothing, and the block's end gives the turn on."""
    turns = Turns()
    raised: list[BaseException] = []
    real: Any = None

    def closing(callback: Any, *args: Any, **kwargs: Any) -> Any:
        if callback == turns._semaphore.release:  # the hand-over alone: anyio's own go on
            raise RuntimeError("Event loop is closed")
        return real(callback, *args, **kwargs)

    def work(give_on: Callable[[], None]) -> None:
        try:
            give_on()
        except BaseException as exc:  # pragma: no cover - the failure this test looks for
            raised.append(exc)

    async def main() -> str:
        nonlocal real
        with anyio.fail_after(10):
            loop = asyncio.get_running_loop()
            real = loop.call_soon_threadsafe
            async with turns.turn() as give_on:
                loop.call_soon_threadsafe = closing  # type: ignore[method-assign]
                try:
                    await anyio.to_thread.run_sync(work, give_on)
                finally:
                    del loop.call_soon_threadsafe  # type: ignore[attr-defined]
            async with turns.turn():
                return "next"

    assert anyio.run(main) == "next"
    assert raised == []


def test_a_turn_is_given_on_without_waiting_for_the_event_loop() -> None:
    """The hand-over runs inside the batch's write transaction: it returns at once, even
    while the event loop is busy (here: blocked for 0.5 s by its own task)."""
    turns = Turns()
    took: list[float] = []
    handed = threading.Event()

    def work(give_on: Callable[[], None]) -> None:
        handed.wait(5)
        started = time.monotonic()
        give_on()
        took.append(time.monotonic() - started)

    async def busy() -> None:
        await anyio.sleep(0.05)
        handed.set()
        time.sleep(0.5)  # blocks the loop: a give_on that waited for it would wait this long

    together(holding(turns, work), busy)
    assert len(took) == 1
    assert took[0] < 0.25


def test_a_batch_that_waits_too_long_for_its_turn_is_told_the_server_is_busy() -> None:
    turns = Turns(max_wait=0.1)
    outcome: list[str] = []

    async def holder(release: anyio.Event) -> None:
        async with turns.turn():
            await release.wait()

    async def late() -> None:
        with pytest.raises(ServerBusy) as refused:
            async with turns.turn():
                outcome.append("turn")
        outcome.append(f"{refused.value.code}, retry after {refused.value.context['retryAfter']}")

    async def main() -> str:
        with anyio.fail_after(10):
            release = anyio.Event()
            async with anyio.create_task_group() as group:
                group.start_soon(holder, release)
                await anyio.sleep(0.01)
                await late()  # gives up after 0.1 s, holding nothing
                release.set()
            async with turns.turn():  # the turn was not lost
                return "next"

    assert anyio.run(main) == "next"
    assert outcome == ["server-busy, retry after 1"]


# ---------------------------------------------------------------------------- over the API


def _batch(world: World, n: int, tag: str) -> dict[str, Any]:
    a = world.a
    at = world.ledger.chain.latest_timestamp()
    record = a.record(f"mrn-turns-{tag}")
    events = [a.sign(a.access(record, world.p.address, occurredAt=at)) for _ in range(n)]
    return {"events": [event_json(e) for e in events]}


async def _post_all(world: World, bodies: Sequence[dict[str, Any]]) -> list[httpx.Response]:
    answers: list[httpx.Response] = [None] * len(bodies)  # type: ignore[list-item]
    transport = httpx.ASGITransport(app=world.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://medtrail") as client:

        async def one(i: int) -> None:
            answers[i] = await client.post(
                "/v1/events", json=bodies[i], headers=bearer(world.keys["institution_a"])
            )

        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                for i in range(len(bodies)):
                    group.start_soon(one, i)
    return answers


def test_batches_never_compute_at_once_and_the_next_computes_during_a_commit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three batches sent at once: each one's checks run alone (no two between entering the
    ledger and reaching the commit at once), and the next one's run while the one before
    commits (it is not held until the one before has answered)."""
    ingestor = world.ledger.ingestor
    real_submit = ingestor.submit
    spans: dict[int, dict[str, float]] = {}
    numbers = itertools.count()
    lock = threading.Lock()

    def submit(batch: Sequence[SignedEvent], *, before_commit: Any = None) -> Any:
        key = next(numbers)  # one per call (a thread and a list's address may recur)
        with lock:
            spans[key] = {"in": time.monotonic()}
        time.sleep(0.15)  # computing: two batches would overlap here without turns

        def committing() -> None:
            spans[key]["commit"] = time.monotonic()
            assert before_commit is not None
            before_commit()
            time.sleep(0.3)  # a slow disk: the next batch computes meanwhile

        receipts = real_submit(batch, before_commit=committing)
        spans[key]["out"] = time.monotonic()
        return receipts

    monkeypatch.setattr(ingestor, "submit", submit)
    answers = anyio.run(_post_all, world, [_batch(world, 2, f"t{i}") for i in range(3)])
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
    ordered = sorted(spans.values(), key=lambda s: s["in"])
    assert len(ordered) == 3
    for before, after in itertools.pairwise(ordered):
        assert after["in"] >= before["commit"]  # never computing at once
        assert after["in"] < before["out"]  # computing while the one before commits


def test_a_refused_batch_gives_the_turn_on(world: World) -> None:
    bad = {"events": [{"type": "RecordAccess", "event": {}, "signature": "0x00"}]}
    answers = anyio.run(_post_all, world, [bad, _batch(world, 1, "after-bad"), bad])
    assert [a.status_code for a in answers] == [422, 200, 422]
    assert answers[0].headers["content-type"].startswith("application/problem+json")


def test_a_batch_kept_waiting_is_answered_503_with_retry_after(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over the API: a problem+json 503 ``server-busy`` with ``Retry-After``, nothing stored."""
    ctx = world.app.state.medtrail
    monkeypatch.setattr(ctx.ingest_turns, "max_wait", 0.2)
    ingestor = world.ledger.ingestor
    real_submit = ingestor.submit

    def slow(batch: Sequence[SignedEvent], *, before_commit: Any = None) -> Any:
        time.sleep(0.6)  # the first batch computes for longer than the second may wait
        return real_submit(batch, before_commit=before_commit)

    monkeypatch.setattr(ingestor, "submit", slow)
    first, second = _batch(world, 1, "busy-1"), _batch(world, 1, "busy-2")
    answers = anyio.run(_post_all, world, [first, second])
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 503]
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.headers["content-type"].startswith("application/problem+json")
    assert busy.json()["code"] == "server-busy"
    assert busy.headers["retry-after"] == "1"
    bodies = dict(zip((a.status_code for a in answers), (first, second), strict=True))
    stored, refused = (bodies[s]["events"][0]["event"]["eventId"] for s in (200, 503))
    headers = world.headers("institution_a")
    assert world.client.get(f"/v1/events/{stored}", headers=headers).status_code == 200
    assert world.client.get(f"/v1/events/{refused}", headers=headers).status_code == 404


def test_a_caller_who_may_not_submit_is_refused_without_waiting_for_a_turn(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regulator's (malformed) batch is 403 at once, while an institution's batch holds
    the turn: neither parsed nor queued."""
    ingestor = world.ledger.ingestor
    real_submit = ingestor.submit

    def slow(batch: Sequence[SignedEvent], *, before_commit: Any = None) -> Any:
        time.sleep(0.5)
        return real_submit(batch, before_commit=before_commit)

    monkeypatch.setattr(ingestor, "submit", slow)
    answered: dict[str, tuple[float, httpx.Response]] = {}

    async def run() -> None:
        transport = httpx.ASGITransport(app=world.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://medtrail") as client:

            async def post(role: str, body: dict[str, Any]) -> None:
                answer = await client.post(
                    "/v1/events", json=body, headers=bearer(world.keys[role])
                )
                answered[role] = (time.monotonic(), answer)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as group:
                    group.start_soon(post, "institution_a", _batch(world, 1, "held-turn"))
                    await anyio.sleep(0.1)  # the institution's batch holds the turn
                    group.start_soon(post, "regulator", {"events": [0]})

    anyio.run(run)
    (refused_at, refused), (stored_at, stored) = answered["regulator"], answered["institution_a"]
    assert stored.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert refused_at < stored_at  # answered while the batch still held the turn
