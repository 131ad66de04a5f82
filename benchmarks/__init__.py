"""medtrail's benchmarks (DESIGN §9): ``make bench`` / ``python -m benchmarks``.

They measure and report; they assert nothing (the tests do that). See ``benchmarks/run.py``.
"""
