"""Parameters for Python's ``sqlite3`` driver in the form it binds at C speed.

CPython's ``sqlite3`` binds an ``int``, ``float``, ``str`` or ``bytearray`` parameter as it
is, but sends any other value, ``bytes`` and ``memoryview`` included, through its adaptation
protocol first (``need_adapt`` in ``Modules/_sqlite/cursor.c``: a key tuple built, the
adapters' dict looked up, then ``__adapt__`` and ``__conform__`` looked up on the value and
their ``AttributeError`` raised and cleared) before binding it as a blob all the same.
Measured on this project's machines (issues 15 and 18): 1 to 2 µs per ``bytes`` parameter,
where copying 32 bytes into a ``bytearray`` costs 0.1 to 0.2 µs. A row of the events table
carries seven blobs, one of the monitor's mirror five.

So the hot statements bind blobs as ``bytearray``: the same value is stored (a BLOB, read
back as ``bytes``), compared and indexed. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["blob_rows", "blobs"]


def blobs(values: Iterable[Any]) -> list[Any]:
    """``values`` with each ``bytes`` value as a ``bytearray`` (others as they are)."""
    return [bytearray(v) if type(v) is bytes else v for v in values]


def blob_rows(
    rows: Iterable[Sequence[Any]], at: Sequence[int] | None = None
) -> list[tuple[Any, ...]]:
    """Rows of parameters (``executemany``) with each ``bytes`` value as a ``bytearray``;
    with ``at``, only the values at those positions are looked at (the blob columns: a wide
    row then costs a step per blob, not per value)."""
    if at is None:
        return [tuple(blobs(row)) for row in rows]
    converted: list[tuple[Any, ...]] = []
    for row in rows:
        values = list(row)
        for i in at:
            value = values[i]
            if type(value) is bytes:
                values[i] = bytearray(value)
        converted.append(tuple(values))  # SQLAlchemy's driver calls take tuples only
    return converted
