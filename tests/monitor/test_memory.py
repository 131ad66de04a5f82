"""The allocator's free pages handed back (glibc's ``malloc_trim``)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from scripts.monitor import memory

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")


def _anon_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@glibc
def test_release_returns_the_freed_heap_to_the_system() -> None:
    # 64 MiB in blocks above pymalloc's (so from malloc's heap), the last one kept: it pins
    # the heap's top, so that freeing the others leaves the pages resident, as a
    # checkpoint's peak did in the monitor.
    blocks = [bytes(range(256)) * 4 + bytes(n % 251 for n in range(8)) for _ in range(64 * 1024)]
    kept = bytes(2000)
    del blocks
    before = _anon_kib()
    assert memory.release() is True
    after = _anon_kib()
    assert before - after > 32 * 1024, (before, after)
    assert kept == bytes(2000)


@glibc
def test_release_with_nothing_to_hand_back_is_harmless() -> None:
    assert memory.release() is True
    assert memory.release() is True
