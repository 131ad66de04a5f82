"""A process that holds a Ledger over a large log and serves proofs; reports its peak RSS.

    MEDTRAIL_*=... python -m benchmarks._memprobe --proofs 10000

Prints JSON: the peak resident set size after the imports, after opening the ledger, and
after serving the proofs. It is read from ``VmHWM`` in /proc/self/status, which starts afresh
at ``exec``; ``getrusage``'s ``ru_maxrss`` would carry over the parent's peak (Linux keeps it
across ``execve``), here the benchmark runner's.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path


def status_mib(field: str = "VmHWM") -> float:
    """A size of this process from /proc/self/status (``VmHWM``: the peak RSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_mib() -> float:
    return status_mib("VmHWM")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proofs", type=int, default=10_000)
    args = parser.parse_args()
    stages: dict[str, float] = {"python": peak_mib()}

    from api.app import create_app
    from ledger.service import Ledger

    stages["imports"] = peak_mib()
    ledger = Ledger.open()
    create_app(ledger)
    size = ledger.log.head().size
    stages["open"] = peak_mib()
    rng = random.Random(1)
    started = time.perf_counter()
    for _ in range(args.proofs):
        ledger.log.inclusion_proof(rng.randrange(size), size)
        ledger.log.consistency_proof(rng.randrange(1, size), size)
    seconds = time.perf_counter() - started
    stages["proofs"] = peak_mib()
    ledger.close()
    print(json.dumps({"size": size, "stages": stages, "seconds": seconds}))


if __name__ == "__main__":
    main()
