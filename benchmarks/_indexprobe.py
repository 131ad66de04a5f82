"""A process that loads the anchor worker's index from a store, as the worker does when it
starts (``IndexSequencer.reload``: the trie from its tiles, the key frontiers rebuilt from the
events table); reports the load's wall and CPU time and the process's peak RSS.

    python -m benchmarks._indexprobe sqlite:////path/to/store.db

Prints JSON: the load's seconds (wall, and the process's CPU), the size loaded, its keys and
trie nodes, and the peak resident set size (``VmHWM``, :mod:`benchmarks._memprobe`) after the
imports, after the load, and the resident size after it (what the worker keeps).
"""

from __future__ import annotations

import argparse
import json
import time

from benchmarks._memprobe import peak_mib, status_mib


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    args = parser.parse_args()

    from ledger.index_store import IndexSequencer
    from ledger.store import Store

    store = Store(args.url)
    sequencer = IndexSequencer(store)
    stages = {"imports": peak_mib()}
    started, started_cpu = time.perf_counter(), time.process_time()
    sequencer.reload()
    wall, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    stages["load"] = peak_mib()
    stages["after"] = status_mib("VmRSS")
    store.dispose()
    print(
        json.dumps(
            {
                "size": sequencer.head.size,
                "keys": len(sequencer._frontiers),
                "nodes": len(sequencer._nodes),
                "wall": wall,
                "cpu": cpu,
                "stages": stages,
            }
        )
    )


if __name__ == "__main__":
    main()
