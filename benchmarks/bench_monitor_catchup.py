"""One catch-up of the monitor, in a process of its own (run by :mod:`benchmarks.bench_monitor`).

    python -m benchmarks.bench_monitor_catchup '{"state": ..., "api": ..., ...}'

The monitor's code is whatever ``scripts.monitor`` and ``ledger`` resolve to: the working
tree's, or a baseline revision's put first on ``PYTHONPATH`` (the same driver measures both,
side by side). Prints one JSON object: entries verified, CPU seconds of the page verification
and commit in this process and in its worker processes, of the whole catch-up (and of its
workers in it), wall seconds of each, and the RSS after each checkpoint is verified (after a full
collection, so that it shows what the monitor keeps).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._serve import children, cpu_seconds
from ledger.chain.reader import ChainReader, DeploymentSpec
from ledger.supervision import RuleSet, builtin_rules
from scripts._api import ApiClient
from scripts.monitor import core
from scripts.monitor.core import Monitor, MonitorSettings
from scripts.monitor.store import Store


def _rss_mib(field: str = "VmRSS") -> float:
    """This process's resident memory (``VmHWM``: its peak), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def catch_up(args: dict[str, Any]) -> dict[str, Any]:
    if args["tune_gc"]:  # as medtrail-monitor does before its loop
        from ledger import gc_tuning

        gc_tuning.tune()
    store = Store(Path(args["state"]), **({"cache": args["cache"]} if args["cache"] else {}))
    reader = ChainReader.connect(args["rpc"], DeploymentSpec.read(Path(args["deployment"])))
    api = ApiClient(args["api"], args["key"])
    monitor = Monitor(
        store,
        api,
        reader,
        RuleSet(builtin_rules()),
        MonitorSettings(recheck=0, jobs=args["jobs"]),
    )
    me = os.getpid()

    def workers() -> float:  # busy while a page is verified, and at checkpoints
        return cpu_seconds([pid for pid in children(me) if pid != me])

    def cpu() -> float:
        return time.process_time() + workers()

    rss: dict[str, float] = {}
    spent = {"wall": 0.0, "main": 0.0, "workers": 0.0, "events": 0}
    inside = [False]

    def clocks() -> tuple[float, float, float]:
        return time.perf_counter(), time.process_time(), workers()

    def charge(before: tuple[float, float, float], sign: float) -> None:
        after = clocks()
        for key, start, end in zip(("wall", "main", "workers"), before, after, strict=True):
            spent[key] += sign * (end - start)

    def timed(body: Any) -> Any:
        """The page's verification and commit: ``body`` timed, the fetching of pages it does
        (a run of pages in one transaction) left out."""

        def run(*args: Any) -> Any:
            started = clocks()
            inside[0] = True
            try:
                return body(*args)
            finally:
                inside[0] = False
                charge(started, 1.0)

        return run

    def fetching(body: Any) -> Any:
        def run(*args: Any) -> Any:
            started = clocks()
            try:
                return body(*args)
            finally:
                if inside[0]:
                    charge(started, -1.0)

        return run

    verify_page = monitor._verify_page

    def counted(*args: Any) -> int:
        done = int(verify_page(*args))
        spent["events"] += done
        return done

    # This tree verifies a run of pages in one transaction (``_verify_pages``, fetching them
    # too); a baseline one page per transaction (``_verify_page``, fetched before it).
    monitor._verify_page = counted  # type: ignore[method-assign,assignment]
    if hasattr(monitor, "_verify_pages"):
        monitor._verify_pages = timed(monitor._verify_pages)  # type: ignore[method-assign]
    else:
        monitor._verify_page = timed(counted)  # type: ignore[method-assign]
    monitor.api.entries = fetching(monitor.api.entries)  # type: ignore[method-assign]
    core._entries = fetching(core._entries)
    verify_checkpoint = monitor._verify_checkpoint

    def measured(checkpoint: Any) -> None:
        verify_checkpoint(checkpoint)
        # What is kept, not what the allocators hold on to from the step just done (a full
        # collection also hands free arenas and free lists back).
        gc.collect()
        rss[f"checkpoint {int(checkpoint[0])}"] = _rss_mib()

    monitor._verify_checkpoint = measured  # type: ignore[method-assign]
    started, started_cpu, started_workers = time.perf_counter(), cpu(), workers()
    report = monitor.step()
    while report.verified or report.checkpoints:
        report = monitor.step()
    seconds, used = time.perf_counter() - started, cpu() - started_cpu
    by_workers = workers() - started_workers
    findings = {f"{code}": n for (code, _severity), n in store.finding_counts().items()}
    monitor.close()
    api.close()
    reader.close()
    store.close()
    return {
        "verified": spent["events"],
        "pageWall": spent["wall"],
        "pageCpuMain": spent["main"],
        "pageCpuWorkers": spent["workers"],
        "workersCpu": by_workers,
        "wall": seconds,
        "cpu": used,
        "rss": rss,
        "peak": _rss_mib("VmHWM"),
        "findings": findings,
    }


if __name__ == "__main__":
    print(json.dumps(catch_up(json.loads(sys.argv[1]))))
