"""How the wallet writes a time for the patient (no heavy imports: the CLI uses it)."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["when"]


def when(ts: int) -> str:
    """``2026-01-31 12:00 UTC``; a time no calendar date holds (a service's, or a grant's
    expiry thousands of years away) as its unix seconds, never a traceback."""
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return f"{ts} (unix seconds)"
