"""The HTTP benchmark's rounds (issue 15): medtrail, the floor and the A/B rows in turn, the
goal on the median round's ratio, each row against the floor's row of its own round."""

from __future__ import annotations

from dataclasses import replace

from benchmarks.bench_http import (
    AT_ONCE,
    FLOOR,
    MEDTRAIL,
    UNTUNED,
    Outcome,
    _variants,
    best_plans,
    floor_of,
)


def test_the_headline_plan_runs_in_rounds_each_starting_one_server_further() -> None:
    assert _variants(1000, 2, 3) == [
        (MEDTRAIL, 1),
        (FLOOR, 1),
        (UNTUNED, 1),
        (AT_ONCE, 1),
        (FLOOR, 2),
        (UNTUNED, 2),
        (AT_ONCE, 2),
        (MEDTRAIL, 2),
        (UNTUNED, 3),
        (AT_ONCE, 3),
        (MEDTRAIL, 3),
        (FLOOR, 3),
    ]


def test_other_plans_run_once() -> None:
    assert _variants(1000, 1, 3) == [(MEDTRAIL, 1), (FLOOR, 1)]
    assert _variants(100, 2, 3) == [(MEDTRAIL, 1), (FLOOR, 1)]
    assert _variants(1, 2, 3) == [(MEDTRAIL, 1)]
    assert _variants(1000, 2, 1) == [(MEDTRAIL, 1), (FLOOR, 1), (UNTUNED, 1), (AT_ONCE, 1)]


def _row(
    variant: str, round_: int, cpu_us: float, *, batch: int = 1000, seconds: float = 1.0
) -> Outcome:
    events = 1000
    return Outcome(
        variant=variant,
        store="SQLite",
        workers=2,
        batch=batch,
        round=round_,
        events=events,
        requests=1,
        seconds=seconds,
        latencies=[0.1],
        server_cpu=cpu_us * 1e-6 * events,
        loadgen_cpu=0.0,
        errors={},
        first_error="",
    )


def test_each_round_is_read_against_its_own_floor_and_the_goal_takes_the_median() -> None:
    rows = [
        _row(MEDTRAIL, 1, 90.0),
        _row(FLOOR, 1, 60.0),  # 1.50x
        _row(FLOOR, 2, 50.0),
        _row(MEDTRAIL, 2, 100.0),  # 2.00x
        _row(MEDTRAIL, 3, 80.0),
        _row(FLOOR, 3, 64.0),  # 1.25x
        _row(UNTUNED, 2, 200.0),
    ]
    assert floor_of(rows, rows[3]) is rows[2]
    assert floor_of(rows, rows[6]) is rows[2]  # an A/B row: its own round's floor
    plan = best_plans(rows)["SQLite"]
    assert sorted(plan.ratios) == [1.25, 1.5, 2.0]
    medtrail, floor = plan.median
    assert (medtrail.round, floor.round) == (1, 1)
    assert medtrail.cpu_per_event / floor.cpu_per_event == 1.5


def test_the_fastest_plan_by_its_median_round_is_the_stores_best() -> None:
    slow = [_row(MEDTRAIL, 1, 90.0, seconds=2.0), _row(FLOOR, 1, 60.0)]
    fast = [replace(r, batch=100, seconds=0.5) for r in slow]
    # One very fast round does not make a plan the fastest: its median round does.
    rounds = [
        _row(MEDTRAIL, 1, 90.0, seconds=0.1),
        _row(FLOOR, 1, 60.0),
        _row(MEDTRAIL, 2, 90.0, seconds=3.0),
        _row(FLOOR, 2, 60.0),
        _row(MEDTRAIL, 3, 90.0, seconds=3.0),
        _row(FLOOR, 3, 60.0),
    ]
    assert best_plans([*slow, *fast])["SQLite"].pairs[0][0].batch == 100
    best = best_plans([*[replace(r, batch=10) for r in rounds], *fast])["SQLite"]
    assert best.pairs[0][0].batch == 100
