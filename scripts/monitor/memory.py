"""Handing the memory a checkpoint's verification freed back to the system.

A checkpoint's verification works over every entry it covers at once (their mirror rows,
the index's paths and rows): a peak of some hundreds of MiB for 80,000 entries, nearly all
of it freed when the checkpoint's transaction commits. glibc's allocator keeps what it
freed in its heap (it returns only the heap's free top, and a block still in use near the
top pins everything below it), so the monitor's resident size stayed at that peak between
checkpoints. :func:`release` asks the allocator to return its free pages (``malloc_trim``);
where the C library has no such call (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

__all__ = ["release"]


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process
    except OSError:  # pragma: no cover - a platform without dlopen(NULL)
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:  # pragma: no cover - not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _malloc_trim()


def release() -> bool:
    """Return the C heap's free pages to the system; False where the C library cannot."""
    if _TRIM is None:  # pragma: no cover - not glibc
        return False
    _TRIM(0)
    return True
