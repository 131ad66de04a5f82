"""The load generator: one process sending pre-signed batches, one connection per institution.

    python -m benchmarks._loadgen WORK.pickle --url http://127.0.0.1:8123 --start-at T \
        --duration 6 --out RESULT.json

``WORK.pickle`` holds ``[(api_key, [request body, ...]), ...]``: one thread per entry, each
with its own keep-alive connection, posting its bodies to ``POST /v1/events`` one after the
other from the wall-clock time ``T`` until ``--duration`` seconds have passed (the request in
flight then is waited for and counted) or its bodies run out. Signing happened before: this
process only sends bytes and counts receipts. ``--part I/N`` sends every N-th body from the
I-th only, so that the rows of one run each send events never sent before.
"""

from __future__ import annotations

import argparse
import json
import pickle
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx


class Connection(threading.Thread):
    def __init__(
        self, url: str, key: str, bodies: list[bytes], start_at: float, duration: float
    ) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.bodies = url, key, bodies
        self.start_at, self.duration = start_at, duration
        self.events = 0
        self.requests = 0
        self.errors: Counter[int] = Counter()
        self.first_error = ""
        self.latencies: list[float] = []
        self.ended = 0.0

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=300) as client:
            client.get("/healthz")  # open the connection before the clock starts
            time.sleep(max(0.0, self.start_at - time.time()))
            deadline = time.perf_counter() + self.duration
            for body in self.bodies:
                if time.perf_counter() >= deadline:
                    break
                sent = time.perf_counter()
                response = client.post("/v1/events", content=body)
                self.latencies.append(time.perf_counter() - sent)
                self.requests += 1
                if response.status_code == 200:
                    # Count receipts without parsing them all (this process must stay light).
                    self.events += response.content.count(b'"leafIndex"')
                else:
                    self.errors[response.status_code] += 1
                    self.first_error = self.first_error or response.text[:300]
            self.ended = time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--url", required=True)
    parser.add_argument("--start-at", type=float, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--part",
        default="0/1",
        help="I/N: send only every N-th body from the I-th (rows of one run send other events)",
    )
    args = parser.parse_args()
    part, parts = (int(x) for x in args.part.split("/"))
    work: list[tuple[str, list[bytes]]] = pickle.loads(args.work.read_bytes())
    connections = [
        Connection(args.url, key, bodies[part::parts], args.start_at, args.duration)
        for key, bodies in work
    ]
    for connection in connections:
        connection.start()
    time.sleep(max(0.0, args.start_at - time.time()))
    cpu_at_start = time.process_time()  # the window's CPU only (not imports and loading)
    for connection in connections:
        connection.join()
    cpu = time.process_time() - cpu_at_start
    errors: Counter[int] = Counter()
    for connection in connections:
        errors.update(connection.errors)
    result: dict[str, Any] = {
        "events": sum(c.events for c in connections),
        "requests": sum(c.requests for c in connections),
        "errors": {str(k): v for k, v in errors.items()},
        "first_error": next((c.first_error for c in connections if c.first_error), ""),
        "started": args.start_at,
        "ended": max(c.ended for c in connections),
        "latencies": [x for c in connections for x in c.latencies],
        "cpu": cpu,
    }
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
