"""Keep the interpreter's recursion limit within what the native stacks can hold.

py_ecc (imported by eth-account) raises ``sys.setrecursionlimit`` to 100,000 when it is
imported, and py-evm (the embedded chain) to at least 12,288, so that a 1024-deep EVM call
chain fits. The limit is CPython's only guard for C code that recurses — the JSON parser,
``repr``, ``copy.deepcopy``, a Python function re-entered through a C call — and at 100,000
those overflow an 8 MiB stack long before the limit: measured with CPython 3.11 on x86-64,
8 MiB hold about 65,000 levels of ``json.loads``, 58,000 of ``repr`` of nested lists, and
only 13,400 of a Python function called back through ``map`` (about 630 bytes a level). A
request body or a file nested that deep killed the process (SIGSEGV) instead of raising
:class:`RecursionError`.

medtrail's contracts nest calls two deep: the embedded chain ran every flow at a limit of
100. So, after those imports, :func:`cap_recursion_limit` sets the limit to what the stack
holds with a margin of three: :data:`BYTES_PER_LEVEL` bytes a level, at most
:data:`MAX_RECURSION_LIMIT` and never below CPython's default of 1,000.
"""

from __future__ import annotations

import contextlib
import importlib
import resource
import sys
import threading
from collections.abc import Iterable
from typing import Final

__all__ = [
    "BYTES_PER_LEVEL",
    "LIMIT_RAISERS",
    "MAX_RECURSION_LIMIT",
    "cap_recursion_limit",
    "safe_recursion_limit",
]

#: Native stack one level may take: the deepest measured (~630 bytes), times three.
BYTES_PER_LEVEL: Final = 2048
#: The highest limit set, whatever the stack (8 MiB / 2 KiB = 4,096 levels).
MAX_RECURSION_LIMIT: Final = 4000
#: CPython's own default, the lowest limit set.
MIN_RECURSION_LIMIT: Final = 1000
#: Modules that raise the limit when imported: imported first, so that they cannot raise it
#: again after the cap.
LIMIT_RAISERS: Final = ("py_ecc", "eth")
#: Stack assumed when the system sets none (``ulimit -s unlimited``): glibc's thread default.
_DEFAULT_STACK: Final = 8 * 1024 * 1024


def _stack_bytes() -> int:
    """The smaller of the threads' and the main thread's stack sizes."""
    threads = threading.stack_size()  # 0: the platform's default, i.e. RLIMIT_STACK
    soft, _hard = resource.getrlimit(resource.RLIMIT_STACK)
    main = soft if soft != resource.RLIM_INFINITY and soft > 0 else _DEFAULT_STACK
    return min(threads, main) if threads else main


def safe_recursion_limit(stack_bytes: int | None = None) -> int:
    """The recursion limit a stack of ``stack_bytes`` (default: this process's) holds."""
    stack = _stack_bytes() if stack_bytes is None else stack_bytes
    return max(MIN_RECURSION_LIMIT, min(MAX_RECURSION_LIMIT, stack // BYTES_PER_LEVEL))


def cap_recursion_limit(preload: Iterable[str] = LIMIT_RAISERS) -> int:
    """Import the installed modules of ``preload`` (each raises the limit once, when first
    imported), then lower the recursion limit to :func:`safe_recursion_limit` if it is
    higher. Returns the limit in force. Call it at start, after the imports."""
    for name in preload:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    limit = min(sys.getrecursionlimit(), safe_recursion_limit())
    sys.setrecursionlimit(limit)
    return limit
