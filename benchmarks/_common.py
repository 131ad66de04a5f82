"""What every benchmark shares: results as markdown sections, goals, timing, the machine."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
_STARTED = time.monotonic()


def python_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the Python processes a benchmark starts (servers, tools).

    Bytecode caching is on, into a directory of its own outside the source tree (a developer's
    Python writes ``__pycache__``; an environment with ``PYTHONDONTWRITEBYTECODE`` would
    otherwise make every command compile medtrail's modules again at each start)."""
    result = dict(os.environ if env is None else env)
    result.pop("PYTHONDONTWRITEBYTECODE", None)
    result["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "medtrail-bench-pycache")
    return result


def log(message: str) -> None:
    """Progress on stderr (stdout carries the tables)."""
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    """How big the run is: ``quick`` exercises every benchmark at small sizes."""

    quick: bool
    postgres_url: str | None
    workdir: Path

    def pick(self, full: T, quick: T) -> T:
        return quick if self.quick else full


# --------------------------------------------------------------------------- results

#: Figures one benchmark leaves for a later one to compare with (same run).
SHARED: dict[str, float] = {}


@dataclass
class Table:
    headers: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    #: One of "l" / "r" per column (default: first left, the others right).
    align: str = ""

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        align = self.align or "l" + "r" * (len(self.headers) - 1)
        rule = ["---:" if a == "r" else "---" for a in align]
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join(rule) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Goal:
    """One DESIGN §9 figure: its target, what was measured, met or not, and why."""

    figure: str
    target: str
    measured: str
    met: bool | None  # None: reported, no target
    note: str = ""

    def cells(self) -> list[str]:
        status = {True: "met", False: "**missed**", None: "—"}[self.met]
        return [self.figure, self.target, self.measured, status, self.note]


@dataclass
class Section:
    """One benchmark's report: prose and tables in markdown, and the goals it measured."""

    title: str
    parts: list[str] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    seconds: float = 0.0

    def text(self, paragraph: str) -> None:
        self.parts.append(" ".join(paragraph.split()))

    def table(self, table: Table, caption: str | None = None) -> None:
        if caption:
            self.text(caption)
        self.parts.append(table.markdown())

    def markdown(self) -> str:
        body = "\n\n".join(self.parts)
        return f"## {self.title}\n\n{body}\n"


# --------------------------------------------------------------------------- numbers


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}"


def count(value: float) -> str:
    return f"{value:,.0f}"


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    """Read-only git queries (the benchmarks never write to the repository)."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def commit() -> str:
    head = _git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def machine() -> dict[str, str]:
    memory = _memory_gib()
    return {
        "CPU": _cpu_model(),
        "Cores": f"{usable_cores()} usable ({os.cpu_count()} online)",
        "Memory": f"{memory:.1f} GiB" if memory else "unknown",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Commit": commit(),
    }


def load_average() -> float:
    return os.getloadavg()[0]
