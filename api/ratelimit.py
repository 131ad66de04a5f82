"""Token buckets per client address: how often a client may ask for sign-in nonces and fail to
authenticate.

Each client address has a bucket of ``burst`` tokens that refills at ``rate`` tokens a second;
an action takes one token, and a client with an empty bucket waits (``Retry-After``) for the
next. Buckets live in this process's memory: with several API processes (``medtrail serve
--workers N``, or several hosts) each keeps its own, so a client gets up to N times the
budget — the limit slows brute force and floods down, it does not count exactly. At most
``max_clients`` addresses are remembered (the least recently seen are forgotten first).

Pure: the clock is passed in.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_CLIENTS", "TokenBuckets", "retry_after"]

#: Client addresses remembered at most (about 100 bytes each).
DEFAULT_MAX_CLIENTS = 65_536


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """One token bucket per key (a client address).

    :param rate: tokens added per second.
    :param burst: the bucket's size (and a new client's tokens).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1 or max_clients < 1:
            raise ValueError("rate must be > 0, burst and max_clients >= 1")
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def _bucket(self, key: str) -> _Bucket:
        """``key``'s bucket, refilled to now (the caller holds the lock)."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.tokens = min(
                float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate
            )
            bucket.updated = now
        return bucket

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0 if there was one, else the seconds until there is
        (nothing is taken then)."""
        with self._lock:
            bucket = self._bucket(key)
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate

    def charge(self, key: str) -> None:
        """Take a token for ``key`` whether or not there is one (the bucket may go below
        zero: a client that keeps failing waits longer)."""
        with self._lock:
            bucket = self._bucket(key)
            bucket.tokens = max(bucket.tokens - 1, -float(self.burst))

    def wait(self, key: str) -> float:
        """Seconds until ``key`` has a token (0: it has one now); nothing is taken."""
        with self._lock:
            bucket = self._bucket(key)
            return 0.0 if bucket.tokens >= 1 else (1 - bucket.tokens) / self.rate


def retry_after(seconds: float) -> int:
    """The ``Retry-After`` value (whole seconds, at least 1) for a wait of ``seconds``."""
    return max(1, math.ceil(seconds))
