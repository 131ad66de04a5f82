"""JSON with bounded nesting: a depth scan that runs before any parser, and :func:`loads`.

CPython's C JSON parser recurses once per nesting level and guards itself only with the
interpreter's recursion limit. Libraries the embedded chain imports raise that limit to
100,000 (:mod:`ledger.recursion` brings it back down), and at such a limit a document of a
few tens of thousands of ``[`` overflows the native stack and kills the process. So every
document from outside — a request body, a bundle, a mirror, a keystore, a state or
deployment file — has its depth measured here first, without recursion, and is refused if
it nests deeper than a bound.

Pure: no I/O. The scan costs a few passes of C-speed byte operations over the document (a
translation keeps the quotes and brackets, a regular expression removes the strings from what
is left, then at most ``max_depth + 1`` passes each remove the innermost pairs), never one
Python step per byte.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from ledger.errors import LedgerError

__all__ = ["DEFAULT_MAX_DEPTH", "JsonTooDeep", "check_depth", "loads", "nesting_depth"]

#: Deepest nesting accepted by default (the deepest document medtrail writes nests 6 deep).
DEFAULT_MAX_DEPTH: Final = 64


class JsonTooDeep(LedgerError, ValueError):
    code = "json-too-deep"


#: An escape (a backslash and the byte after it): removed first, so that an escaped quote
#: neither opens nor closes a string.
_ESCAPE: Final = re.compile(rb"\\.", re.DOTALL)
#: Every byte that is neither a quote nor a bracket, to delete; and braces written as brackets.
_NOT_QUOTES_OR_BRACKETS: Final = bytes(b for b in range(256) if b not in b'"[]{}')
_AS_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")
#: A string, once only quotes and brackets are left of the document.
_STRING: Final = re.compile(rb'"[^"]*"')


def _utf8(data: bytes | bytearray | memoryview | str) -> bytes:
    """The document as UTF-8 bytes, decoded the way :func:`json.loads` decodes bytes.

    In UTF-8 no byte of a multi-byte character is ASCII, so quotes, backslashes and brackets
    can be found byte by byte; UTF-16 and UTF-32 documents (which :func:`json.loads` accepts)
    are re-encoded first. A document that does not decode is returned empty: the parser will
    refuse it before parsing anything."""
    if isinstance(data, str):
        return data.encode("utf-8", "surrogatepass")
    raw = bytes(data)
    encoding = json.detect_encoding(raw)
    if encoding == "utf-8":
        return raw
    try:
        return raw.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    except UnicodeError:
        return b""


def nesting_depth(data: bytes | bytearray | memoryview | str, limit: int | None = None) -> int:
    """How deep ``data`` nests arrays and objects: exact for well-formed JSON, and never less
    than the depth a parser reaches before it fails on malformed JSON (brackets it opens and
    never closes count in full). Brackets inside strings do not count.

    With ``limit``, the scan stops as soon as the depth is known to exceed it and returns a
    value greater than ``limit`` (not necessarily the exact depth).
    """
    text = _utf8(data)
    if b"\\" in text:
        text = _ESCAPE.sub(b"", text)
    # Strings are found in what is left of quotes and brackets (a batch of events is mostly
    # hex in strings: a few percent of the bytes are left), not in the whole document. When
    # every quote has its pair, two quotes side by side go first, in one pass in C: an empty
    # string, or the end of one string and the start of the next, joined with nothing between
    # them; either way no bracket changes sides. A batch's strings hold no brackets: the
    # regular expression then has almost nothing left (1.15 -> 0.12 µs per event of a batch).
    # (A quote never closed would take a bracket of the string before it out of that string.)
    quotes = text.translate(_AS_BRACKETS, _NOT_QUOTES_OR_BRACKETS)
    if quotes.count(b'"') % 2 == 0:
        quotes = quotes.replace(b'""', b"")
    kept = _STRING.sub(b"", quotes)
    brackets = kept.replace(b'"', b"")  # a quote never closed: what follows it still counts
    # Each pass removes every innermost pair; a well-formed document is gone after exactly
    # `depth` passes. What stays is unmatched: stray closers, then openers never closed.
    passes = 0
    while b"[]" in brackets:
        passes += 1
        if limit is not None and passes > limit:
            return passes
        brackets = brackets.replace(b"[]", b"")
    return passes + brackets.count(b"[")


def check_depth(
    data: bytes | bytearray | memoryview | str, max_depth: int = DEFAULT_MAX_DEPTH
) -> None:
    """:class:`JsonTooDeep` if ``data`` nests deeper than ``max_depth``."""
    if nesting_depth(data, max_depth) > max_depth:
        raise JsonTooDeep(
            f"the JSON document nests deeper than {max_depth} levels (or leaves arrays or "
            "objects open)",
            limit=max_depth,
        )


def loads(data: bytes | bytearray | str, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """:func:`json.loads` after :func:`check_depth`: raises :class:`JsonTooDeep` for a
    document nested deeper than ``max_depth``, and :class:`json.JSONDecodeError` (or
    :class:`UnicodeDecodeError`) as :func:`json.loads` does for one that is not JSON. All
    three are value errors, so a caller that refuses malformed JSON refuses both."""
    check_depth(data, max_depth)
    return json.loads(data)
